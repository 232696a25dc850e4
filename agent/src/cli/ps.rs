//! `berth ps [-a] [--format text|json]`: the containers of this node, read from the
//! state directory (so it works while the agent is down). Without `-a` only running
//! ones, as `docker ps`.
//!
//! The rows themselves are `reconcile::rows` (the API's `GET /v1/containers` answers
//! the same); this file renders them.
//!
//! Also the helpers the other read-only operator commands (`inspect`, `logs`, `stats`,
//! `status`) share: finding the state directory, mapping a state error to an exit code
//! (1 for an unknown container, 3 when the state directory cannot be read), and the
//! padded columns of a table.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format};
use crate::reconcile::backoff::RestartBackoff;
use crate::reconcile::rows::{self, Row};
pub use crate::reconcile::rows::{status_or_warn, unix_now};
use crate::runtime::status::StatusError;
use crate::util::error_chain;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every container, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// The state directory in effect (`--state-dir`, else the node configuration's).
pub fn state_dir(cli: &Cli) -> Result<PathBuf, ExitCode> {
    super::config::load_or_report(cli).map(|l| l.config.runtime.state_dir)
}

/// Prints a state error; 1 for an unknown container, else 3.
pub fn fail(e: &StatusError) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    match e {
        StatusError::Unknown { .. } => ExitCode::from(EXIT_FINDINGS),
        _ => ExitCode::from(EXIT_FAILED),
    }
}

pub fn run(cli: &Cli, args: &PsArgs) -> ExitCode {
    let loaded = match super::config::load_or_report(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let state_dir = loaded.config.runtime.state_dir.clone();
    let backoff = RestartBackoff::of(&loaded.config.runtime);
    let rows: Vec<Row> = match rows::list(&state_dir, unix_now(), backoff) {
        Ok(rows) => rows
            .into_iter()
            .filter(|row| args.all || row.state == "running")
            .collect(),
        Err(e) => return fail(&e),
    };
    let text = |rows: &Vec<Row>| revision_line(&state_dir) + &render_table(rows);
    show(&rows, args.format, text, ExitCode::SUCCESS)
}

/// Prints `doc` as `text` renders it, or as JSON (pretty); `code` once printed, 3 when
/// it cannot be.
pub fn show<T: serde::Serialize>(
    doc: &T,
    format: Format,
    text: impl Fn(&T) -> String,
    code: ExitCode,
) -> ExitCode {
    let out = match format {
        Format::Text => text(doc),
        Format::Json => match serde_json::to_string_pretty(doc) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        },
    };
    print!("{out}");
    code
}

/// The revision applied from the node's source, as `ps` shows it above the table:
/// `revision 0123456789ab (branch main) "subject" by A <a@x>, 2026-12-04T10:00:00Z,
/// signed by ops; applied 2026-12-04T10:00:05Z`. Empty when none was applied (a node
/// converged with `berth apply` from a directory).
fn revision_line(state_dir: &std::path::Path) -> String {
    match crate::source::applied::Applied::load(state_dir) {
        Ok(Some(a)) => {
            let r = &a.revision;
            let signed = r
                .signer
                .as_ref()
                .map(|s| format!(", signed by {}", s.principal))
                .unwrap_or_default();
            let line = format!(
                "revision {} ({}) \"{}\" by {}, {}{signed}; applied {}{}",
                r.short(),
                r.follows,
                r.subject,
                r.author,
                r.time,
                a.applied_at,
                if a.applied {
                    ""
                } else {
                    " (not every container)"
                }
            );
            berth_spec::diag::printable(&line).into_owned() + "\n"
        }
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!("{}", error_chain(&e));
            String::new()
        }
    }
}

/// The table, columns padded to their widest cell. Pure.
pub fn render_table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.instance.clone(),
                r.status.clone(),
                r.image.clone(),
                r.uptime.clone(),
                r.restarts.to_string(),
                r.ports.join(", "),
            ]
        })
        .collect();
    columns(
        &[
            "NAME", "INSTANCE", "STATE", "IMAGE", "UPTIME", "RESTARTS", "PORTS",
        ],
        &cells,
    )
}

/// `header` and `rows` in columns padded to their widest cell (three spaces apart),
/// without trailing blanks. Pure.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        let cols: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cols);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::health_file::{HealthRecord, HealthStatus};
    use crate::runtime::record::ContainerRecord;
    use crate::runtime::record::ImageRef;
    use crate::runtime::state::ExitStatus;
    use crate::runtime::status::{State, Status};
    use crate::util::rfc3339;

    fn record(name: &str, image: &str, ports: &[&str], restarts: u32) -> ContainerRecord {
        ContainerRecord {
            schema_version: crate::runtime::record::SCHEMA_VERSION,
            name: name.into(),
            instance: format!("{name}-0123abcd"),
            spec_hash: "0123abcd".into(),
            spec: crate::runtime::record::sample(name).spec,
            image: ImageRef {
                reference: image.into(),
                digest: "sha256:00".into(),
                chain_ids: vec![],
            },
            runtime: "/usr/bin/runc".into(),
            runtime_root: "/run/berth/runc".into(),
            created_at: "2026-11-22T10:00:00Z".into(),
            started_at: Some("2026-11-22T10:00:01Z".into()),
            restarts,
            operator_stopped: false,
            addresses: Default::default(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
            cgroup_path: String::new(),
            uid: None,
            gid: None,
        }
    }

    fn status(state: State, exit: Option<i32>) -> Status {
        Status {
            state,
            pid: (state == State::Running).then_some(4242),
            exit: exit.map(|c| ExitStatus {
                exit_code: c,
                signal: None,
                finished_at: "2026-11-22T10:03:00.000000001Z".into(),
            }),
            health: None,
        }
    }

    fn with_health(mut s: Status, status: HealthStatus) -> Status {
        s.health = Some(HealthRecord {
            status,
            last_probe: Some("2026-11-22T10:05:00Z".into()),
            failing_streak: 0,
            output: String::new(),
        });
        s
    }

    #[test]
    fn health_shows_after_running() {
        let now = rfc3339::parse("2026-11-22T10:05:01Z").unwrap().0;
        let running = || status(State::Running, None);
        let rows = [
            Row::new(
                &record("web", "nginx", &[], 0),
                &with_health(running(), HealthStatus::Healthy),
                now,
            ),
            Row::new(
                &record("db", "postgres:16", &[], 0),
                &with_health(running(), HealthStatus::Unhealthy),
                now,
            ),
            Row::new(
                &record("new", "busybox", &[], 0),
                &with_health(running(), HealthStatus::Starting),
                now,
            ),
            Row::new(&record("plain", "busybox", &[], 0), &running(), now),
        ];
        let want = "\
NAME    INSTANCE         STATE                 IMAGE         UPTIME         RESTARTS   PORTS
web     web-0123abcd     running (healthy)     nginx         Up 5 minutes   0
db      db-0123abcd      running (unhealthy)   postgres:16   Up 5 minutes   0
new     new-0123abcd     running (starting)    busybox       Up 5 minutes   0
plain   plain-0123abcd   running               busybox       Up 5 minutes   0
";
        assert_eq!(render_table(&rows), want);
        let v = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["status"], "running (unhealthy)");
        assert_eq!(v["health"], "unhealthy");
        assert_eq!(
            serde_json::to_value(&rows[3]).unwrap()["health"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn table_golden() {
        let now = rfc3339::parse("2026-11-22T10:05:01Z").unwrap().0;
        let mut stopped = record("cache", "redis:7", &[], 0);
        stopped.operator_stopped = true;
        let rows = [
            Row::new(
                &record(
                    "web",
                    "registry.example.com/shop/web:1.0",
                    &["8080:8080/tcp", "127.0.0.1:9090:90/udp"],
                    0,
                ),
                &status(State::Running, None),
                now,
            ),
            Row::new(
                &record("db", "postgres:16", &[], 3),
                &status(State::Exited, Some(1)),
                now,
            ),
            Row::new(&stopped, &status(State::Stopped, Some(143)), now),
            Row::new(
                &record("new", "busybox", &[], 0),
                &status(State::Created, None),
                now,
            ),
        ];
        let want = "\
NAME    INSTANCE         STATE                 IMAGE                               UPTIME                       RESTARTS   PORTS
web     web-0123abcd     running               registry.example.com/shop/web:1.0   Up 5 minutes                 0          8080:8080/tcp, 127.0.0.1:9090:90/udp
db      db-0123abcd      exited (1)            postgres:16                         Exited (1) 2 minutes ago     3
cache   cache-0123abcd   stopped by operator   redis:7                             Exited (143) 2 minutes ago   0
new     new-0123abcd     created               busybox                             -                            0
";
        assert_eq!(render_table(&rows), want);
        assert_eq!(
            render_table(&[]),
            "NAME   INSTANCE   STATE   IMAGE   UPTIME   RESTARTS   PORTS\n"
        );
    }

    #[test]
    fn json_rows_carry_times_and_codes() {
        let now = rfc3339::parse("2026-11-22T10:05:01Z").unwrap().0;
        let row = Row::new(
            &record("db", "postgres:16", &[], 3),
            &status(State::Exited, Some(1)),
            now,
        );
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["kind"], "container");
        assert_eq!(v["state"], "exited");
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["started_at"], "2026-11-22T10:00:01Z");
        assert_eq!(v["finished_at"], "2026-11-22T10:03:00.000000001Z");
        assert_eq!(v["pid"], serde_json::Value::Null);
    }
}
