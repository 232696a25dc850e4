//! `berth events [-f] [--since DURATION] [--format text|json]`: what the agent did —
//! fetches, refused revisions, passes and their results, container exits, suspends —
//! oldest first, from the agent's API; `-f` then follows new ones as they happen,
//! until the agent stops (exit 0) or SIGINT.
//!
//! With no agent answering, the events recorded in the state directory
//! (`state/events.jsonl` and its rotation) are shown; `-f` then exits 3, since only a
//! running agent has new events to follow.
//!
//! Text is one line an event: `TIME TYPE REASON [container NAME:] MESSAGE`; JSON is
//! one object a line, as the API sends them.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_spec::diag::printable;
use clap::Args;

use super::control::{agent, unreachable};
use super::{Cli, EXIT_FAILED, Format};
use crate::api::client::ClientError;
use crate::reconcile::events::{self, Event, EventKind, EventLog};
use crate::util::{error_chain, rfc3339};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Follow new events as the agent records them
    #[arg(short, long)]
    pub follow: bool,
    /// Only events of the last DURATION (`90s`, `10m`, `2h`)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Where the output stopped.
enum Stop {
    /// Stdout is closed (`berth events | head`): not a failure.
    Closed,
    Client(ClientError),
}

pub fn run(cli: &Cli, args: &EventsArgs) -> ExitCode {
    let a = match agent(cli) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let since = args.since.map(|d| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        rfc3339::format_millis(now.saturating_sub(d))
    });
    let format = args.format;
    let streamed = a.rt.block_on(async {
        let mut stream = a
            .client
            .events(since.as_deref(), args.follow)
            .await
            .map_err(Stop::Client)?;
        while let Some(e) = stream.next().await.map_err(Stop::Client)? {
            emit(&e, format)?;
        }
        Ok(())
    });
    match streamed {
        Ok(()) | Err(Stop::Closed) => ExitCode::SUCCESS,
        Err(Stop::Client(e)) if e.no_agent() && !args.follow => {
            let log = EventLog::new(&a.loaded.config.runtime.state_dir);
            for e in events::read_file(log.path(), since.as_deref()) {
                if emit(&e, format).is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Err(Stop::Client(e)) if e.no_agent() => {
            eprintln!(
                "error: `berth events -f` follows a running agent, and {}; `berth events` without -f shows the events recorded",
                error_chain(&e)
            );
            ExitCode::from(EXIT_FAILED)
        }
        Err(Stop::Client(e)) => unreachable(&e, "berth events"),
    }
}

/// Writes one event and flushes, so a follower sees it at once.
fn emit(e: &Event, format: Format) -> Result<(), Stop> {
    let line = match format {
        Format::Text => text(e),
        Format::Json => serde_json::to_string(e).unwrap_or_default(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|_| Stop::Closed)
}

/// `2026-12-04T10:00:00.000Z  Warning  NotApplied         container web: …`. Pure.
pub fn text(e: &Event) -> String {
    let kind = match e.kind {
        EventKind::Normal => "Normal",
        EventKind::Warning => "Warning",
    };
    let object = e
        .container
        .as_ref()
        .map(|c| format!("container {c}: "))
        .unwrap_or_default();
    let line = format!(
        "{}  {kind:<7}  {:<17}  {object}{}",
        e.time, e.reason, e.message
    );
    printable(&line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_an_event_with_its_container() {
        let mut e =
            Event::new(EventKind::Warning, "NotApplied", "exited with 1\nforged").container("web");
        e.time = "2026-12-04T10:00:00.000Z".into();
        assert_eq!(
            text(&e),
            "2026-12-04T10:00:00.000Z  Warning  NotApplied         container web: exited with 1\\u{a}forged"
        );
        let mut f = Event::new(EventKind::Normal, "Fetched", "commit abc").revision("abc");
        f.time = "2026-12-04T10:00:01.000Z".into();
        assert_eq!(
            text(&f),
            "2026-12-04T10:00:01.000Z  Normal   Fetched            commit abc"
        );
    }
}
