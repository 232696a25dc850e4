//! `berth status [--format text|json]`: the node as the agent sees it — the revision
//! applied (commit, author, time, subject, signer), the last fetch and the last pass
//! with their results and times, the conditions Ready / Progressing / Degraded /
//! Suspended / SourceUnavailable as Flux shows them, and each container's state,
//! health, restarts and crash-loop backoff.
//!
//! It asks the agent's API (`GET /v1/status`); with no agent answering it reads the
//! same from the state directory and says `agent: not running`. It exits 0 whenever it
//! could read the state, whatever the conditions say; 3 when it could not.

use std::process::ExitCode;

use berth_spec::diag::printable;
use clap::Args;

use super::control::{agent, unreachable};
use super::ps::{columns, fail, show};
use super::{Cli, Format};
use crate::api::wire::StatusDoc;
use crate::reconcile::rows::unix_now;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(cli: &Cli, args: &StatusArgs) -> ExitCode {
    let a = match agent(cli) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let doc = match a.rt.block_on(a.client.status()) {
        Ok(doc) => doc,
        Err(e) if e.no_agent() => {
            match StatusDoc::read(&a.loaded.config.runtime.state_dir, false, unix_now()) {
                Ok(doc) => doc,
                Err(e) => return fail(&e),
            }
        }
        Err(e) => return unreachable(&e, "berth status"),
    };
    show(&doc, args.format, render, ExitCode::SUCCESS)
}

/// The status as text. Pure.
pub fn render(doc: &StatusDoc) -> String {
    let mut out = Vec::new();
    let mut agent = match doc.pid {
        Some(pid) => format!("agent: {} (pid {pid})", doc.agent),
        None => format!("agent: {}", doc.agent),
    };
    if doc.suspended {
        agent.push_str(", suspended until `berth resume`");
    }
    out.push(agent);

    match &doc.revision {
        Some(r) => {
            out.push(format!(
                "revision: {} ({}) \"{}\"",
                r.short(),
                r.follows,
                r.subject
            ));
            out.push(format!("  commit:  {}", r.commit));
            out.push(format!("  author:  {}, {}", r.author, r.time));
            out.push(match &r.signer {
                Some(s) => format!(
                    "  signer:  {} ({}, {} signature)",
                    s.principal, s.key, s.object
                ),
                None => "  signer:  none (unsigned, or no signature is required)".to_string(),
            });
            let path = if r.path.is_empty() { "/" } else { &r.path };
            out.push(format!("  source:  {}, path {path}", r.url));
            if let Some(at) = &doc.applied_at {
                out.push(format!("  applied: {at}"));
            }
        }
        None => out.push("revision: none applied yet".to_string()),
    }

    out.push(match &doc.last_fetch {
        Some(f) => {
            let what = match (&f.error, &f.refused, &f.commit) {
                (Some(e), _, _) => format!("failed: {e}"),
                (None, Some(r), _) => format!("refused: {r}"),
                (None, None, Some(c)) => format!("commit {}", c.get(..12).unwrap_or(c)),
                (None, None, None) => "no commit".to_string(),
            };
            format!("last fetch: {}, {what}; next at {}", f.at, f.next_at)
        }
        None => "last fetch: none yet".to_string(),
    });
    match &doc.last_pass {
        Some(p) => {
            let mut line = format!(
                "last pass:  {} at {} (started {})",
                p.result, p.finished_at, p.started_at
            );
            if let Some(r) = &p.revision {
                line.push_str(&format!(", revision {}", r.get(..12).unwrap_or(r)));
            }
            if let Some(next) = &p.next_at {
                line.push_str(&format!("; next at {next}"));
            }
            out.push(line);
            if let Some(m) = &p.message {
                out.push(format!("  {m}"));
            }
        }
        None => out.push("last pass:  none yet".to_string()),
    }
    let mut text: String = out
        .iter()
        .map(|l| printable(l).into_owned() + "\n")
        .collect();

    text.push('\n');
    let conditions: Vec<Vec<String>> = doc
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.kind.clone(),
                if c.status { "True" } else { "False" }.to_string(),
                c.reason.clone(),
                printable(&c.message).into_owned(),
            ]
        })
        .collect();
    text.push_str(&columns(
        &["CONDITION", "STATUS", "REASON", "MESSAGE"],
        &conditions,
    ));

    text.push('\n');
    if doc.containers.is_empty() {
        text.push_str("containers: none\n");
        return text;
    }
    let rows: Vec<Vec<String>> = doc
        .containers
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.status.clone(),
                r.restarts.to_string(),
                r.backoff.as_ref().map_or_else(
                    || "-".to_string(),
                    |b| format!("{} until {}", b.delay, b.until),
                ),
                r.uptime.clone(),
                printable(&r.image).into_owned(),
            ]
        })
        .collect();
    text.push_str(&columns(
        &[
            "CONTAINER",
            "STATUS",
            "RESTARTS",
            "BACKOFF",
            "UPTIME",
            "IMAGE",
        ],
        &rows,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::ConditionDoc;
    use crate::reconcile::agent_state::{FetchState, PassState};
    use crate::reconcile::rows::{Row, RowBackoff};
    use crate::source::applied::{RevisionInfo, Signer};

    fn condition(kind: &str, status: bool, reason: &str, message: &str) -> ConditionDoc {
        ConditionDoc {
            kind: kind.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn row(name: &str, status: &str, restarts: u32, backoff: Option<RowBackoff>) -> Row {
        Row {
            kind: "container".into(),
            name: name.into(),
            instance: format!("{name}-0123abcd"),
            state: status.split(' ').next().unwrap_or_default().into(),
            status: status.into(),
            health: None,
            exit_code: None,
            pid: None,
            image: "registry.example.com/shop/web:1.0".into(),
            created_at: "2026-12-04T10:00:00Z".into(),
            started_at: None,
            finished_at: None,
            uptime: "Up 5 minutes".into(),
            restarts,
            backoff,
            ports: vec![],
            operator_stopped: false,
        }
    }

    #[test]
    fn golden_with_a_crash_loop_and_the_source_unavailable() {
        let doc = StatusDoc {
            agent: "running".into(),
            pid: Some(4242),
            suspended: false,
            revision: Some(RevisionInfo {
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                url: "https://git.example.com/fleet.git".into(),
                follows: "branch main".into(),
                path: "edge".into(),
                author: "Ops <ops@example.com>".into(),
                time: "2026-12-04T09:59:00Z".into(),
                subject: "web 2\u{1b}[31m".into(),
                signer: Some(Signer {
                    principal: "ops@example.com".into(),
                    key: "SHA256:abc".into(),
                    object: "commit".into(),
                }),
                tag_object: None,
            }),
            applied_at: Some("2026-12-04T10:00:05Z".into()),
            last_fetch: Some(FetchState {
                at: "2026-12-04T10:05:00Z".into(),
                commit: None,
                error: Some("cannot reach https://git.example.com/fleet.git".into()),
                refused: None,
                next_at: "2026-12-04T10:05:10Z".into(),
            }),
            last_pass: Some(PassState {
                started_at: "2026-12-04T10:05:00Z".into(),
                finished_at: "2026-12-04T10:05:01Z".into(),
                result: "not-converged".into(),
                message: Some("waiting for a crash-loop backoff".into()),
                revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
                next_at: Some("2026-12-04T10:05:41Z".into()),
            }),
            conditions: vec![
                condition("Ready", false, "SourceUnavailable", "cannot reach it"),
                condition("Suspended", false, "Active", ""),
            ],
            containers: vec![
                row(
                    "db",
                    "exited (1), backoff 40s",
                    3,
                    Some(RowBackoff {
                        delay: "40s".into(),
                        delay_seconds: 40,
                        until: "2026-12-04T10:05:41Z".into(),
                    }),
                ),
                row("web", "running (healthy)", 0, None),
            ],
        };
        let want = "\
agent: running (pid 4242)
revision: 0123456789ab (branch main) \"web 2\\u{1b}[31m\"
  commit:  0123456789abcdef0123456789abcdef01234567
  author:  Ops <ops@example.com>, 2026-12-04T09:59:00Z
  signer:  ops@example.com (SHA256:abc, commit signature)
  source:  https://git.example.com/fleet.git, path edge
  applied: 2026-12-04T10:00:05Z
last fetch: 2026-12-04T10:05:00Z, failed: cannot reach https://git.example.com/fleet.git; next at 2026-12-04T10:05:10Z
last pass:  not-converged at 2026-12-04T10:05:01Z (started 2026-12-04T10:05:00Z), revision 0123456789ab; next at 2026-12-04T10:05:41Z
  waiting for a crash-loop backoff

CONDITION   STATUS   REASON              MESSAGE
Ready       False    SourceUnavailable   cannot reach it
Suspended   False    Active

CONTAINER   STATUS                    RESTARTS   BACKOFF                          UPTIME         IMAGE
db          exited (1), backoff 40s   3          40s until 2026-12-04T10:05:41Z   Up 5 minutes   registry.example.com/shop/web:1.0
web         running (healthy)         0          -                                Up 5 minutes   registry.example.com/shop/web:1.0
";
        assert_eq!(render(&doc), want);
    }

    #[test]
    fn without_an_agent_or_a_revision() {
        let doc = StatusDoc {
            agent: "not running".into(),
            pid: None,
            suspended: true,
            revision: None,
            applied_at: None,
            last_fetch: None,
            last_pass: None,
            conditions: vec![],
            containers: vec![],
        };
        assert_eq!(
            render(&doc),
            "agent: not running, suspended until `berth resume`\nrevision: none applied yet\nlast fetch: none yet\nlast pass:  none yet\n\nCONDITION   STATUS   REASON   MESSAGE\n\ncontainers: none\n"
        );
    }
}
