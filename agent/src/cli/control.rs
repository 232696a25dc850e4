//! `berth reconcile | suspend | resume [--format text|json]`: the operator's controls
//! of the running agent, as `flux reconcile`, `suspend` and `resume` are (DESIGN.md
//! §6), through its API socket.
//!
//! - `reconcile` fetches now and waits for the pass: exit 0 when the newest revision
//!   was applied and every container converged, 1 when something was not.
//! - `suspend` stops passes (after the one in flight) until `resume`; it outlives a
//!   restart of the agent. `resume` fetches and reconciles at once.
//!
//! Each needs the agent: with none answering on `<run_dir>/api.sock`, or when the
//! agent will not (suspended, stopping), it exits 3 with one sentence saying so.
//! Also what `status` and `events` share to reach the agent.

use std::process::ExitCode;

use berth_spec::diag::printable;
use clap::Args;

use super::config::{self, Loaded};
use super::ps::show;
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format, async_runtime};
use crate::api::client::{Client, ClientError};
use crate::api::wire::{OutcomeDoc, SuspendedDoc};
use crate::util::error_chain;

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Which control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reconcile,
    Suspend,
    Resume,
}

impl Control {
    fn command(self) -> &'static str {
        match self {
            Control::Reconcile => "berth reconcile",
            Control::Suspend => "berth suspend",
            Control::Resume => "berth resume",
        }
    }
}

/// The node's configuration, a client of its agent and the async runtime.
pub struct Agent {
    pub loaded: Loaded,
    pub client: Client,
    pub rt: &'static tokio::runtime::Runtime,
}

/// Reaches for the agent of the node's run directory (nothing is sent yet).
pub fn agent(cli: &Cli) -> Result<Agent, ExitCode> {
    let loaded = config::load_or_report(cli)?;
    let rt = async_runtime().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(EXIT_FAILED)
    })?;
    let client = Client::new(&crate::api::socket_path(&loaded.config.runtime.run_dir));
    Ok(Agent { loaded, client, rt })
}

/// Prints why `command` could not be done through the agent; exit 3.
pub fn unreachable(e: &ClientError, command: &str) -> ExitCode {
    if e.no_agent() {
        eprintln!(
            "error: `{command}` needs a running agent (`berth agent`), and {}",
            error_chain(e)
        );
    } else {
        eprintln!("error: {}", error_chain(e));
        if let ClientError::Refused { doc, .. } = e {
            for line in &doc.errors {
                eprintln!("{line}");
            }
        }
    }
    ExitCode::from(EXIT_FAILED)
}

pub fn run(cli: &Cli, which: Control, args: &ControlArgs) -> ExitCode {
    let a = match agent(cli) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match which {
        Control::Reconcile => match a.rt.block_on(a.client.reconcile()) {
            Ok(o) => {
                let code = if o.converged {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_FINDINGS)
                };
                show(&o, args.format, outcome_text, code)
            }
            Err(e) => unreachable(&e, which.command()),
        },
        Control::Suspend | Control::Resume => {
            let sent = if which == Control::Suspend {
                a.rt.block_on(a.client.suspend())
            } else {
                a.rt.block_on(a.client.resume())
            };
            match sent {
                Ok(d) => show(&d, args.format, suspended_text, ExitCode::SUCCESS),
                Err(e) => unreachable(&e, which.command()),
            }
        }
    }
}

/// `converged: revision 0123456789ab "subject"`, or `not-converged: why`. Pure.
pub fn outcome_text(o: &OutcomeDoc) -> String {
    let revision = o
        .report
        .as_ref()
        .and_then(|r| r.get("revision"))
        .map(|r| {
            let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let commit = text("commit");
            format!(
                " revision {} \"{}\"",
                commit.get(..12).unwrap_or(commit),
                text("subject")
            )
        })
        .unwrap_or_default();
    let mut out = format!("{}:{}\n", o.result, printable(&revision));
    if let Some(m) = &o.message {
        out.push_str(&format!("  {}\n", printable(m)));
    }
    out
}

fn suspended_text(d: &SuspendedDoc) -> String {
    if d.suspended {
        "suspended: no pass runs until `berth resume`\n".to_string()
    } else {
        "resumed: the agent fetches and reconciles now\n".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_the_revision_and_why_it_did_not_converge() {
        let o = OutcomeDoc {
            converged: false,
            result: "not-converged".into(),
            message: Some("not applied: web".into()),
            report: Some(serde_json::json!({
                "revision": {"commit": "0123456789abcdef0123", "subject": "web 2"}
            })),
        };
        assert_eq!(
            outcome_text(&o),
            "not-converged: revision 0123456789ab \"web 2\"\n  not applied: web\n"
        );
        let done = OutcomeDoc {
            converged: true,
            result: "converged".into(),
            message: None,
            report: None,
        };
        assert_eq!(outcome_text(&done), "converged:\n");
    }
}
