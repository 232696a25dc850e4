//! `berth events [-f] [--since DURATION|TIME] [--format text|json]`: what the agent did —
//! fetches, refused revisions, passes and their results, container exits, suspends —
//! oldest first, from the agent's API; `-f` then follows new ones as they happen,
//! until the agent stops (exit 0) or SIGINT.
//!
//! With no agent answering, the events recorded in the state directory
//! (`state/events.jsonl` and its rotation) are shown; `-f` then exits 3, since only a
//! running agent has new events to follow.
//!
//! `--since` takes a duration back from now (`10m`) or an RFC 3339 time
//! (`2026-12-04T10:00:00Z`, any offset), as `docker events --since` does.
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
    /// Only events since a time: a duration back from now (`90s`, `10m`, `2h`) or an
    /// RFC 3339 time (`2026-12-04T10:00:00Z`, `2026-12-04T12:00:00+02:00`)
    #[arg(long, value_name = "DURATION|TIME", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// `--since`: how far back, or from when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    /// An RFC 3339 time as the event log writes times (UTC, milliseconds).
    At(String),
}

impl Since {
    /// The time as the event log writes times, `now` being the time since the epoch.
    pub fn time(&self, now: Duration) -> String {
        match self {
            Since::Ago(d) => rfc3339::format_millis(now.saturating_sub(*d)),
            Since::At(t) => t.clone(),
        }
    }
}

/// A `--since` that is neither form.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is neither a duration (`90s`, `10m`, `2h`) nor an RFC 3339 time (`2026-12-04T10:00:00Z`)"
)]
pub struct BadSince(String);

/// A duration back from now, or an RFC 3339 time (normalised to UTC milliseconds).
pub fn parse_since(s: &str) -> Result<Since, BadSince> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Since::Ago(d));
    }
    let (secs, nanos) = rfc3339::parse(s).ok_or_else(|| BadSince(s.to_string()))?;
    let secs = u64::try_from(secs).unwrap_or(0);
    Ok(Since::At(rfc3339::format_millis(Duration::new(
        secs, nanos,
    ))))
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
    let since = args.since.as_ref().map(|s| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        s.time(now)
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
    fn since_is_a_duration_or_an_rfc3339_time() {
        let now = Duration::from_secs(1_796_378_400); // 2026-12-04T10:00:00Z
        let ago = parse_since("10m").expect("a duration");
        assert_eq!(ago, Since::Ago(Duration::from_secs(600)));
        assert_eq!(ago.time(now), "2026-12-04T09:50:00.000Z");
        let at = parse_since("2026-12-04T10:00:00Z").expect("a time");
        assert_eq!(at.time(now), "2026-12-04T10:00:00.000Z");
        let offset = parse_since("2026-12-04T12:00:00.5+02:00").expect("an offset");
        assert_eq!(offset, Since::At("2026-12-04T10:00:00.500Z".into()));
        let e = parse_since("yesterday").expect_err("neither");
        assert_eq!(
            e.to_string(),
            "`yesterday` is neither a duration (`90s`, `10m`, `2h`) nor an RFC 3339 time (`2026-12-04T10:00:00Z`)"
        );
    }

    #[test]
    fn the_command_line_takes_either_form() {
        use clap::Parser;
        for (arg, want) in [
            (
                "2026-12-04T10:00:00Z",
                Since::At("2026-12-04T10:00:00.000Z".into()),
            ),
            ("90s", Since::Ago(Duration::from_secs(90))),
        ] {
            let cli = Cli::try_parse_from(["berth", "events", "--since", arg]).expect(arg);
            match cli.command {
                super::super::Command::Events(a) => assert_eq!(a.since, Some(want)),
                other => panic!("{other:?}"),
            }
        }
        let e = Cli::try_parse_from(["berth", "events", "--since", "soon"]).expect_err("bad");
        assert!(e.to_string().contains("nor an RFC 3339 time"), "{e}");
    }

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
