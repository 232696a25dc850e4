//! `berth status [--format text|json]`: the node as the agent sees it — the revision
//! applied (commit, author, time, subject, signer), the last fetch and the last pass
//! with their results and times, the conditions Ready / Progressing / Degraded /
//! Suspended / SourceUnavailable as Flux shows them, and each container's state,
//! health, restarts and crash-loop backoff.
//!
//! It asks the agent's API (`GET /v1/status`, for a few seconds at most); with no
//! answer it reads the same from the state directory and says `agent: not running`
//! (no agent listens) or `agent: not answering (why)` (one accepted and then reset,
//! closed, answered with an error or said nothing in time). It exits 0 whenever it
//! could read the state, whatever the conditions say and whether an agent answered; 3
//! when it could not.

use std::process::ExitCode;

use berth_spec::diag::printable;
use clap::Args;

use super::control::agent;
use super::ps::{columns, show};
use super::{Cli, EXIT_FAILED, Format};
use crate::api::client::ClientError;
use crate::api::wire::StatusDoc;
use crate::reconcile::agent_state::FindingNote;
use crate::reconcile::backoff::RestartBackoff;
use crate::reconcile::rows::unix_now;
use crate::runtime::status::StatusError;
use crate::util::error_chain;

/// `agent` of a status read from the state directory while a socket is there but no
/// agent answers on it.
pub const NOT_ANSWERING: &str = "not answering";

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
    let state_dir = &a.loaded.config.runtime.state_dir;
    let answer = a.rt.block_on(a.client.status());
    let backoff = RestartBackoff::of(&a.loaded.config.runtime);
    let shown = match shown(answer, || {
        StatusDoc::read(state_dir, false, unix_now(), backoff)
    }) {
        Ok(s) => s,
        Err(both) => {
            let (agent, state) = *both;
            eprintln!("error: {}", error_chain(&state));
            eprintln!("  and no agent answers: {}", error_chain(&agent));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if let (Format::Json, Some(why)) = (args.format, &shown.why) {
        eprintln!("warning: the status is the state directory's: {why}");
    }
    show(
        &shown.doc,
        args.format,
        |d| render(d, shown.why.as_deref()),
        ExitCode::SUCCESS,
    )
}

/// What `berth status` shows.
#[derive(Debug)]
pub struct Shown {
    pub doc: StatusDoc,
    /// Why the agent did not answer, when a socket is there and it did not: the doc
    /// is then the state directory's, its `agent` [`NOT_ANSWERING`].
    pub why: Option<String>,
}

/// The agent's answer, or the state directory's status (`read`) when no answer came:
/// no agent, one that does not answer, or one that answered with an error. Both
/// errors when the state directory cannot be read either.
pub fn shown(
    answer: Result<StatusDoc, ClientError>,
    read: impl FnOnce() -> Result<StatusDoc, StatusError>,
) -> Result<Shown, Box<(ClientError, StatusError)>> {
    let e = match answer {
        Ok(doc) => return Ok(Shown { doc, why: None }),
        Err(e) => e,
    };
    let mut doc = match read() {
        Ok(doc) => doc,
        Err(state) => return Err(Box::new((e, state))),
    };
    if e.no_agent() {
        return Ok(Shown { doc, why: None });
    }
    doc.agent = NOT_ANSWERING.to_string();
    doc.pid = None;
    Ok(Shown {
        doc,
        why: Some(error_chain(&e)),
    })
}

/// The status as text, with why the agent did not answer (when it did not) on its
/// first line. Pure.
pub fn render(doc: &StatusDoc, why: Option<&str>) -> String {
    let mut out = Vec::new();
    let mut agent = match (doc.pid, why) {
        (_, Some(why)) => format!("agent: {} ({why})", doc.agent),
        (Some(pid), None) => format!("agent: {} (pid {pid})", doc.agent),
        (None, None) => format!("agent: {}", doc.agent),
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
                    s.principal,
                    match (&s.primary_key, s.kind == "openpgp") {
                        (Some(primary), _) => format!("OpenPGP subkey {} of key {primary}", s.key),
                        (None, true) => format!("OpenPGP key {}", s.key),
                        (None, false) => s.key.clone(),
                    },
                    s.object
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
    if let Some(n) = &doc.notify {
        let mut line = match n.state.as_str() {
            state @ ("connected" | "connecting") => format!(
                "notify: {state} to {}, topic {}, since {}",
                n.broker, n.topic, n.since
            ),
            state => format!(
                "notify: {state} from {}, topic {}, since {}",
                n.broker, n.topic, n.since
            ),
        };
        if let Some(e) = &n.last_error {
            line.push_str(&format!("; last error: {e}"));
        }
        line.push_str(&format!("; {} message(s)", n.messages));
        if let Some(c) = &n.last_commit {
            line.push_str(&format!(", last announced {}", c.get(..12).unwrap_or(c)));
        }
        out.push(line);
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
                findings_cell(doc.findings.get(&r.name)),
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
            "FINDINGS",
            "IMAGE",
        ],
        &rows,
    ));
    // Each finding once, under the table: what is wrong and where.
    for (name, findings) in &doc.findings {
        for f in findings {
            text.push_str(&format!(
                "  {}: {} {} ({}) at {}:{} `{}`: {}\n",
                printable(name),
                f.severity,
                f.rule,
                f.status,
                printable(&f.file),
                f.line,
                printable(&f.key),
                printable(&f.message)
            ));
        }
    }
    text.push_str(&crate::trust::text(&doc.trust_chains));
    text
}

/// `-`, or how many findings a container has and their rules: `2: run-as-non-root,
/// drop-all-capabilities`.
fn findings_cell(findings: Option<&Vec<FindingNote>>) -> String {
    match findings {
        None => "-".to_string(),
        Some(fs) if fs.is_empty() => "-".to_string(),
        Some(fs) => format!(
            "{}: {}",
            fs.len(),
            fs.iter()
                .map(|f| f.rule.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::client::{Client, STATUS_TIMEOUT};
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
                    kind: "ssh".into(),
                    primary_key: None,
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
                planned: None,
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
            findings: [(
                "web".to_string(),
                vec![FindingNote {
                    rule: "run-as-non-root".into(),
                    severity: "warning".into(),
                    status: "violation".into(),
                    key: "user".into(),
                    file: "web.toml".into(),
                    line: 4,
                    message: "runs as root (uid 0)\u{1b}[2J".into(),
                }],
            )]
            .into(),
            trust_chains: vec![],
            notify: None,
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

CONTAINER   STATUS                    RESTARTS   BACKOFF                          UPTIME         FINDINGS             IMAGE
db          exited (1), backoff 40s   3          40s until 2026-12-04T10:05:41Z   Up 5 minutes   -                    registry.example.com/shop/web:1.0
web         running (healthy)         0          -                                Up 5 minutes   1: run-as-non-root   registry.example.com/shop/web:1.0
  web: warning run-as-non-root (violation) at web.toml:4 `user`: runs as root (uid 0)\\u{1b}[2J
";
        assert_eq!(render(&doc, None), want);
    }

    #[test]
    fn an_openpgp_subkey_signer_is_shown_with_its_primary_key() {
        let doc = StatusDoc {
            agent: "running".into(),
            pid: None,
            suspended: false,
            revision: Some(RevisionInfo {
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                url: "file:///fleet".into(),
                follows: "branch main".into(),
                path: String::new(),
                author: "Ops <ops@example.com>".into(),
                time: "2026-12-04T09:59:00Z".into(),
                subject: "web".into(),
                signer: Some(Signer {
                    principal: "Ops <ops@example.com>".into(),
                    key: "SUBKEY".into(),
                    object: "commit".into(),
                    kind: "openpgp".into(),
                    primary_key: Some("PRIMARY".into()),
                }),
                tag_object: None,
            }),
            applied_at: None,
            last_fetch: None,
            last_pass: None,
            conditions: vec![],
            containers: vec![],
            findings: Default::default(),
            trust_chains: vec![],
            notify: None,
        };
        let shown = render(&doc, None);
        assert!(
            shown.contains(
                "  signer:  Ops <ops@example.com> (OpenPGP subkey SUBKEY of key PRIMARY, commit signature)\n"
            ),
            "{shown}"
        );
    }

    #[test]
    fn the_mqtt_channel_is_one_line() {
        let mut doc = StatusDoc::new(
            crate::reconcile::agent_state::view(std::path::Path::new("/nonexistent"), true),
            vec![],
        );
        assert!(!render(&doc, None).contains("notify:"));
        doc.notify = Some(crate::source::mqtt::ChannelState {
            broker: "mqtts://127.0.0.1:8883".into(),
            topic: "fleet/main".into(),
            state: "disconnected".into(),
            since: "2026-12-05T03:00:00Z".into(),
            last_error: Some("mqtts://127.0.0.1:8883 refused the user name or password".into()),
            messages: 2,
            last_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        });
        let shown = render(&doc, None);
        assert!(
            shown.contains("notify: disconnected from mqtts://127.0.0.1:8883, topic fleet/main, since 2026-12-05T03:00:00Z; last error: mqtts://127.0.0.1:8883 refused the user name or password; 2 message(s), last announced 0123456789ab\n"),
            "{shown}"
        );
    }

    /// A socket that accepts (the kernel's backlog) and never answers: nothing
    /// accepts on it.
    fn wedged(dir: &std::path::Path) -> (std::os::unix::net::UnixListener, std::path::PathBuf) {
        let socket = dir.join("api.sock");
        let l = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        (l, socket)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn state_dir(dir: &std::path::Path) -> std::path::PathBuf {
        let state = dir.join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        state
    }

    #[test]
    fn a_wedged_agent_is_not_answering_within_seconds_and_the_state_is_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_dir(dir.path());
        let (_listener, socket) = wedged(dir.path());
        let began = std::time::Instant::now();
        let answer = runtime().block_on(Client::new(&socket).status());
        let took = began.elapsed();
        assert!(
            took < STATUS_TIMEOUT + std::time::Duration::from_secs(3),
            "status waited {took:?}"
        );
        assert!(
            matches!(answer, Err(ClientError::Timeout { .. })),
            "{answer:?}"
        );
        let s = shown(answer, || {
            StatusDoc::read(&state, false, unix_now(), RestartBackoff::default())
        })
        .expect("shown");
        assert_eq!(s.doc.agent, NOT_ANSWERING);
        let why = s.why.expect("why");
        assert_eq!(
            why,
            format!(
                "the agent on {} did not answer GET /v1/status within 5s",
                socket.display()
            )
        );
        let text = render(&s.doc, Some(&why));
        assert_eq!(
            text.lines().next(),
            Some(format!("agent: not answering ({why})").as_str()),
            "{text}"
        );
    }

    #[test]
    fn a_reset_connection_is_not_answering_and_no_socket_is_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_dir(dir.path());
        let (listener, socket) = wedged(dir.path());
        // Accepts each connection and closes it unanswered.
        std::thread::spawn(move || {
            for c in listener.incoming() {
                drop(c);
            }
        });
        let rt = runtime();
        let answer = rt.block_on(Client::new(&socket).status());
        assert!(
            matches!(answer, Err(ClientError::Http { .. })),
            "{answer:?}"
        );
        let s = shown(answer, || {
            StatusDoc::read(&state, false, unix_now(), RestartBackoff::default())
        })
        .expect("shown");
        assert_eq!(s.doc.agent, NOT_ANSWERING);
        let why = s.why.expect("why");
        assert!(
            why.starts_with(&format!("the agent on {} did not answer", socket.display())),
            "{why}"
        );

        let missing = dir.path().join("missing.sock");
        let answer = rt.block_on(Client::new(&missing).status());
        let s = shown(answer, || {
            StatusDoc::read(&state, false, unix_now(), RestartBackoff::default())
        })
        .expect("shown");
        assert_eq!((s.doc.agent.as_str(), s.why), ("not running", None));
    }

    #[test]
    fn an_unreadable_state_directory_is_both_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.sock");
        let answer = runtime().block_on(Client::new(&missing).status());
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").expect("file");
        let got = shown(answer, || {
            StatusDoc::read(&not_a_dir, false, unix_now(), RestartBackoff::default())
        });
        assert!(
            matches!(
                got.as_ref().map_err(|b| &b.0),
                Err(ClientError::NoAgent { .. })
            ),
            "{got:?}"
        );
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
            findings: Default::default(),
            trust_chains: vec![],
            notify: None,
        };
        assert_eq!(
            render(&doc, None),
            "agent: not running, suspended until `berth resume`\nrevision: none applied yet\nlast fetch: none yet\nlast pass:  none yet\n\nCONDITION   STATUS   REASON   MESSAGE\n\ncontainers: none\n"
        );
    }
}
