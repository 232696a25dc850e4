//! `berth inspect NAME [--format json|text]`: everything berth knows about one
//! container, from the state directory. JSON by default, as `docker inspect`; one
//! object (not Docker's one-element array), since it names one container.
//! `--format text` prints a readable block. An unknown name exits 1.

use std::path::Path;
use std::process::ExitCode;

use berth_spec::{Container, MountSource};
use clap::Args;
use serde::Serialize;

use super::ps::{fail, state_dir, status_or_warn, unix_now};
use super::{Cli, EXIT_FAILED, Format};
use crate::runtime::health_file::HealthRecord;
use crate::runtime::record::{ContainerRecord, ImageRef};
use crate::runtime::state::InstanceDirs;
use crate::runtime::status::{self, Status};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The container's name
    pub name: String,
    /// Output format
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

pub fn run(cli: &Cli, args: &InspectArgs) -> ExitCode {
    let state_dir = match state_dir(cli) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let record = match status::load_record(&state_dir, &args.name) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let status = status_or_warn(&state_dir, &record);
    let details = Details::new(&state_dir, &record, &status, unix_now());
    let text = match args.format {
        Format::Json => match serde_json::to_string_pretty(&details) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("error: {}", crate::util::error_chain(&e));
                return ExitCode::from(EXIT_FAILED);
            }
        },
        Format::Text => details.text(),
    };
    // A reader that stops early (`| head`) is not an error.
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// The `inspect` document.
#[derive(Debug, Clone, Serialize)]
pub struct Details {
    pub kind: &'static str,
    pub name: String,
    pub instance: String,
    pub state: StateDetails,
    pub restarts: u32,
    pub created_at: String,
    pub image: ImageRef,
    pub spec_hash: String,
    pub runtime: String,
    pub runtime_root: String,
    pub cgroup_path: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub addresses: std::collections::BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub mounts: Vec<MountInfo>,
    pub log_path: String,
    /// What vouched for what it runs (`trust`).
    pub trust_chain: crate::trust::Chain,
    /// The container spec the instance was created from.
    pub spec: Container,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateDetails {
    /// `running`, `exited`, `created`, `stopped`, `unknown`.
    pub status: &'static str,
    pub running: bool,
    /// The container init's pid while it runs.
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Set by `berth stop`: apply leaves the container stopped until `berth start`.
    pub operator_stopped: bool,
    /// `Up 5 minutes`, `Exited (1) 2 minutes ago`.
    pub uptime: String,
    /// The health check's latest result while it runs: status, failing streak, last
    /// probe time and output. None without a health check.
    pub health: Option<HealthRecord>,
}

/// One mount as the container sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountInfo {
    /// `volume`, `bind`, `tmpfs`, `secret`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Volume or secret name, or host path; none for a tmpfs.
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// tmpfs size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Mounts and secrets of the spec: secrets land in `/run/secrets/<target>`, read-only.
pub fn mounts_of(spec: &Container) -> Vec<MountInfo> {
    let mounts = spec.mounts.iter().map(|m| {
        let (kind, source, size) = match &m.source {
            MountSource::Volume { name } => ("volume", Some(name.clone()), None),
            MountSource::Bind { path } => ("bind", Some(path.clone()), None),
            MountSource::Tmpfs { size } => ("tmpfs", None, *size),
        };
        MountInfo {
            kind: kind.to_string(),
            source,
            target: m.target.clone(),
            read_only: m.read_only,
            size,
        }
    });
    let secrets = spec.secrets.iter().map(|s| MountInfo {
        kind: "secret".to_string(),
        source: Some(s.name.clone()),
        target: format!("/run/secrets/{}", s.target),
        read_only: true,
        size: None,
    });
    mounts.chain(secrets).collect()
}

impl Details {
    pub fn new(state_dir: &Path, r: &ContainerRecord, s: &Status, now: i64) -> Self {
        let exit = s.exit.as_ref();
        Details {
            kind: "container",
            name: r.name.clone(),
            instance: r.instance.clone(),
            state: StateDetails {
                status: s.state.as_str(),
                running: s.is_running(),
                pid: s.pid,
                exit_code: exit.map(|e| e.exit_code),
                signal: exit.and_then(|e| e.signal),
                started_at: r.started_at.clone(),
                finished_at: exit.map(|e| e.finished_at.clone()),
                operator_stopped: r.operator_stopped,
                uptime: status::uptime(r, s, now),
                health: s.health.clone(),
            },
            restarts: r.restarts,
            created_at: r.created_at.clone(),
            image: r.image.clone(),
            spec_hash: r.spec_hash.clone(),
            runtime: r.runtime.clone(),
            runtime_root: r.runtime_root.display().to_string(),
            cgroup_path: r.cgroup_path.clone(),
            uid: r.uid,
            gid: r.gid,
            addresses: r.addresses.clone(),
            ports: r.ports.clone(),
            mounts: mounts_of(&r.spec),
            log_path: InstanceDirs::new(state_dir, &r.instance)
                .log()
                .display()
                .to_string(),
            trust_chain: crate::trust::of_container(state_dir, r),
            spec: r.spec.clone(),
        }
    }

    /// The readable block of `--format text`. Pure.
    pub fn text(&self) -> String {
        let st = &self.state;
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
        let mut state = match (st.status, st.exit_code, st.pid) {
            ("running", _, Some(pid)) => format!("running (pid {pid})"),
            ("exited", Some(c), _) => format!("exited ({c})"),
            ("exited", None, _) => "exited (unknown)".to_string(),
            ("stopped", Some(c), _) => format!("stopped by operator, exited ({c})"),
            ("stopped", None, _) => "stopped by operator".to_string(),
            (other, _, _) => other.to_string(),
        };
        if let Some(sig) = st.signal {
            state.push_str(&format!(", signal {sig}"));
        }
        let user = match (self.uid, self.gid) {
            (Some(u), Some(g)) => format!("{u}:{g}"),
            (Some(u), None) => u.to_string(),
            _ => "-".to_string(),
        };
        let join = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("Name", self.name.clone()),
            ("Instance", self.instance.clone()),
            ("State", state),
            ("Uptime", st.uptime.clone()),
            ("Health", health_text(st.health.as_ref())),
            ("Created", self.created_at.clone()),
            ("Started", dash(st.started_at.clone())),
            ("Finished", dash(st.finished_at.clone())),
            ("Restarts", self.restarts.to_string()),
            (
                "Operator",
                if st.operator_stopped {
                    "stopped (berth stop)"
                } else {
                    "-"
                }
                .to_string(),
            ),
            ("Image", self.image.reference.clone()),
            ("Digest", self.image.digest.clone()),
            ("Spec hash", self.spec_hash.clone()),
            (
                "Runtime",
                format!("{} (root {})", self.runtime, self.runtime_root),
            ),
            ("Cgroup", self.cgroup_path.clone()),
            ("User", user),
            (
                "Addresses",
                join(
                    self.addresses
                        .iter()
                        .map(|(n, a)| format!("{a} ({n})"))
                        .collect(),
                ),
            ),
            ("Ports", join(self.ports.clone())),
            ("Log", self.log_path.clone()),
        ];
        let mounts: Vec<String> = self.mounts.iter().map(mount_text).collect();
        rows.push((
            "Mounts",
            if mounts.is_empty() {
                "-".to_string()
            } else {
                String::new()
            },
        ));
        let mut out = String::new();
        for (k, v) in rows {
            let line = format!("{:<11}{v}", format!("{k}:"));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for m in mounts {
            out.push_str(&format!("  {m}\n"));
        }
        out.push_str("Trust chain:\n");
        out.push_str(&crate::trust::links_text(&self.trust_chain, "  "));
        out
    }
}

/// `healthy`, or `unhealthy (2 failing; last probe 2026-11-22T10:05:00Z: output)`.
fn health_text(h: Option<&HealthRecord>) -> String {
    let Some(h) = h else {
        return "-".to_string();
    };
    let mut details = Vec::new();
    if h.failing_streak > 0 {
        details.push(format!("{} failing", h.failing_streak));
    }
    if let Some(t) = &h.last_probe {
        let mut probe = format!("last probe {t}");
        if !h.output.is_empty() {
            probe.push_str(&format!(": {}", berth_spec::diag::printable(&h.output)));
        }
        details.push(probe);
    } else {
        details.push("not probed yet".to_string());
    }
    format!("{} ({})", h.status.as_str(), details.join("; "))
}

fn mount_text(m: &MountInfo) -> String {
    let mut s = match &m.source {
        Some(src) => format!("{} {src} -> {}", m.kind, m.target),
        None => format!("{} -> {}", m.kind, m.target),
    };
    if let Some(size) = m.size {
        s.push_str(&format!(" (size {size})"));
    }
    if m.read_only {
        s.push_str(" (ro)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::status::State;

    /// A spec with a volume, a bind, a tmpfs and a secret.
    fn spec() -> Container {
        let mut spec = crate::runtime::record::sample("web").spec;
        spec.mounts = serde_json::from_value(serde_json::json!([
            {"source": {"type": "volume", "name": "web-data"}, "target": "/data", "read_only": false},
            {"source": {"type": "bind", "path": "/srv/media"}, "target": "/media", "read_only": true},
            {"source": {"type": "tmpfs", "size": 16777216}, "target": "/tmp", "read_only": false}
        ]))
        .unwrap();
        spec
    }

    #[test]
    fn mounts_come_from_the_spec() {
        let m = mounts_of(&spec());
        let text: Vec<String> = m.iter().map(mount_text).collect();
        assert_eq!(
            text,
            [
                "volume web-data -> /data",
                "bind /srv/media -> /media (ro)",
                "tmpfs -> /tmp (size 16777216)",
                "secret db-password -> /run/secrets/db-password (ro)",
            ]
        );
        let mut none = spec();
        (none.mounts, none.secrets) = (vec![], vec![]);
        assert!(mounts_of(&none).is_empty());
    }

    #[test]
    fn text_block() {
        let r = ContainerRecord {
            spec: spec(),
            image: ImageRef {
                reference: "registry.example.com/shop/web:1.0".into(),
                digest: "sha256:ab".into(),
                chain_ids: vec![],
            },
            ports: vec!["8080:8080/tcp".into()],
            ..crate::runtime::record::sample("web")
        };
        let s = Status {
            state: State::Running,
            pid: Some(4242),
            exit: None,
            health: Some(HealthRecord {
                status: crate::runtime::health_file::HealthStatus::Unhealthy,
                last_probe: Some("2026-11-22T10:05:00Z".into()),
                failing_streak: 2,
                output: "`false` exited with 1\n\u{1b}[31m".into(),
            }),
        };
        let now = crate::util::rfc3339::parse("2026-11-22T10:05:01Z")
            .unwrap()
            .0;
        let d = Details::new(Path::new("/var/lib/berth"), &r, &s, now);
        let want = "\
Name:      web
Instance:  web-0123abcd
State:     running (pid 4242)
Uptime:    Up 5 minutes
Health:    unhealthy (2 failing; last probe 2026-11-22T10:05:00Z: `false` exited with 1\\u{a}\\u{1b}[31m)
Created:   2026-11-22T10:00:00Z
Started:   2026-11-22T10:00:01Z
Finished:  -
Restarts:  2
Operator:  -
Image:     registry.example.com/shop/web:1.0
Digest:    sha256:ab
Spec hash: 0123abcd
Runtime:   /usr/bin/runc (root /run/berth/runc)
Cgroup:    /berth/web-0123abcd
User:      10001:10001
Addresses: 10.89.1.2 (front)
Ports:     8080:8080/tcp
Log:       /var/lib/berth/instances/web-0123abcd/ctr.log
Mounts:
  volume web-data -> /data
  bind /srv/media -> /media (ro)
  tmpfs -> /tmp (size 16777216)
  secret db-password -> /run/secrets/db-password (ro)
Trust chain:
  commit:       none (applied from a directory)
  signer:       none (applied from a directory)
  image:        sha256:ab
  image signer: not recorded (`berth audit --live --verify` checks it)
  checked:      never
";
        assert_eq!(d.text(), want);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["state"]["pid"], 4242);
        assert_eq!(v["state"]["health"]["status"], "unhealthy");
        assert_eq!(v["state"]["health"]["failing_streak"], 2);
        assert_eq!(v["state"]["health"]["last_probe"], "2026-11-22T10:05:00Z");
        assert_eq!(health_text(None), "-");
        assert_eq!(v["mounts"][2]["size"], 16777216);
        assert_eq!(v["mounts"][0]["type"], "volume");
    }
}
