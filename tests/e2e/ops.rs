//! The read-only operator commands (`ps`, `inspect`, `logs`, `stats`) against a state
//! directory written by hand, as the executor and the shim lay it out (DESIGN.md §7):
//! records, instance directories, CRI logs with rotations, `exit.json`, `pid`.
//!
//! A "running" container is a `sleep` child whose pid is recorded with a start time
//! after it; killing it without reaping leaves a zombie, which must not count as
//! running (PID 1 reaps lazily on some hosts). `stats` needs root: it builds real
//! cgroup v1 directories (memory, cpuacct, pids) around a `sleep` and removes them
//! even when the test fails.

#![allow(clippy::unwrap_used)]

mod logs;
mod stats;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_e2e::run_berth;
use serde_json::{Value, json};

/// RFC 3339 UTC (seconds) of a Unix time.
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A throw-away node: an empty config and a state directory.
pub(crate) struct Node {
    pub(crate) dir: tempfile::TempDir,
}

impl Node {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("berth.toml"), "").unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        Node { dir }
    }

    pub(crate) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(crate) fn instance(&self, name: &str) -> PathBuf {
        self.state()
            .join("instances")
            .join(format!("{name}-0123abcd"))
    }

    /// Writes `containers/<name>/state.json` (a record as berth writes it, without a
    /// schema version: version 1) and creates the instance directory.
    pub(crate) fn record(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut r = json!({
            "name": name,
            "instance": format!("{name}-0123abcd"),
            "spec_hash": "0123abcd",
            "spec": stored_spec(name),
            "image": {
                "reference": "registry.example.com/shop/web:1.0",
                "digest": format!("sha256:{}", "ab".repeat(32)),
                "chain_ids": []
            },
            "runtime": "/usr/bin/runc",
            "runtime_root": "/run/berth/runc",
            "created_at": rfc3339(now() - 600),
            "started_at": rfc3339(now() - 590),
            "restarts": 0,
            "operator_stopped": false,
            "addresses": {"front": "10.89.1.2"},
            "ports": ["8080:8080/tcp"],
            "cgroup_path": format!("/berth/{name}-0123abcd"),
            "uid": 10001,
            "gid": 10001
        });
        edit(&mut r);
        let dir = self.state().join("containers").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("state.json"),
            serde_json::to_vec_pretty(&r).unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(self.instance(name)).unwrap();
    }

    pub(crate) fn exit(&self, name: &str, code: i32, ago: u64) {
        let text = format!(
            "{{\"exit_code\": {code}, \"signal\": null, \"finished_at\": \"{}\"}}\n",
            rfc3339(now() - ago)
        );
        std::fs::write(self.instance(name).join("exit.json"), text).unwrap();
    }

    pub(crate) fn pid(&self, name: &str, pid: u32) {
        std::fs::write(self.instance(name).join("pid"), pid.to_string()).unwrap();
    }

    pub(crate) fn berth(&self, args: &[&str]) -> berth_e2e::Run {
        let config = self.dir.path().join("berth.toml");
        let state = self.state();
        let mut all = vec![
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run_berth(self.dir.path(), &all)
    }
}

/// The spec a record of container `name` keeps, as berth stores it (every key, defaults
/// applied): a volume, a tmpfs and a secret.
pub(crate) fn stored_spec(name: &str) -> Value {
    json!({
        "name": name,
        "image": "registry.example.com/shop/web:1.0",
        "user": null, "entrypoint": null, "command": ["/bin/httpd", "-f"], "workdir": null,
        "env": {}, "hostname": name, "restart": "always", "read_only": true,
        "cap_drop": ["ALL"], "cap_add": [], "no_new_privileges": true, "privileged": false,
        "seccomp": {"type": "default"}, "network_mode": "bridge", "networks": ["front"],
        "ports": [], "depends_on": [],
        "stop_signal": {"name": "SIGTERM", "number": 15}, "stop_timeout": "10s",
        "labels": {}, "nodes": null, "update": "stop-first", "devices": [], "ulimits": {},
        "sysctls": {}, "extra_hosts": [],
        "resources": {"memory": null, "cpus": null, "pids": null}, "health": null,
        "mounts": [
            {"source": {"type": "volume", "name": "web-data"}, "target": "/data", "read_only": false},
            {"source": {"type": "tmpfs", "size": 16777216}, "target": "/tmp", "read_only": false}
        ],
        "secrets": [{"name": "db-password", "target": "db-password"}]
    })
}

/// Kills (and reaps) a child when dropped.
pub(crate) struct Reap(pub(crate) Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn sleeper() -> Reap {
    Reap(Command::new("sleep").arg("300").spawn().unwrap())
}

/// web (running), db (exited 1), cache (stopped by operator), new (created).
fn four_containers(node: &Node) -> Reap {
    let sleep = sleeper();
    node.record("web", |r| r["started_at"] = json!(rfc3339(now())));
    node.pid("web", sleep.0.id());
    node.record("db", |r| r["restarts"] = json!(3));
    node.exit("db", 1, 120);
    node.record("cache", |r| r["operator_stopped"] = json!(true));
    node.exit("cache", 143, 60);
    node.record("new", |r| r["started_at"] = Value::Null);
    sleep
}

#[test]
fn ps_lists_running_containers_and_all_with_a() {
    let node = Node::new();
    let mut sleep = four_containers(&node);

    let run = node.berth(&["ps"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("RESTARTS"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("web ") && lines[1].contains("running"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("Up ") && lines[1].contains("8080:8080/tcp"),
        "{}",
        lines[1]
    );

    let run = node.berth(&["ps", "-a"]);
    assert_eq!(run.code, 0, "{run:?}");
    let row = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{}", run.stdout))
            .to_string()
    };
    assert!(row("db").contains("exited (1)") && row("db").contains("Exited (1) 2 minutes ago"));
    assert!(
        row("cache").contains("stopped by operator"),
        "{}",
        row("cache")
    );
    assert!(row("new").contains("created"), "{}", row("new"));
    assert_eq!(run.stdout.lines().count(), 5);

    let run = node.berth(&["ps", "-a", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let states: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("cache", "stopped"),
            ("db", "exited"),
            ("new", "created"),
            ("web", "running")
        ]
    );
    assert_eq!(v[1]["exit_code"], 1);
    assert_eq!(v[1]["restarts"], 3);
    assert_eq!(v[3]["pid"], sleep.0.id());
    assert!(v[1]["finished_at"].as_str().unwrap().ends_with('Z'));

    // Killed but not reaped: a zombie is not a running container.
    sleep.0.kill().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let run = node.berth(&["ps", "-a", "--format", "json"]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[3]["state"], "exited", "{}", run.stdout);
    assert_eq!(v[3]["status"], "exited (unknown)");
    assert_eq!(node.berth(&["ps"]).stdout.lines().count(), 1);
}

#[test]
fn inspect_prints_json_by_default_and_a_text_block() {
    let node = Node::new();
    let sleep = four_containers(&node);

    let run = node.berth(&["inspect", "web"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["kind"], "container");
    assert_eq!(v["state"]["status"], "running");
    assert_eq!(v["state"]["pid"], sleep.0.id());
    assert_eq!(v["runtime"], "/usr/bin/runc");
    assert_eq!(v["image"]["digest"], format!("sha256:{}", "ab".repeat(32)));
    assert_eq!(v["spec_hash"], "0123abcd");
    assert_eq!(v["addresses"]["front"], "10.89.1.2");
    assert_eq!(v["cgroup_path"], "/berth/web-0123abcd");
    let targets: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["/data", "/tmp", "/run/secrets/db-password"]);

    let run = node.berth(&["inspect", "db", "--format", "json"]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["state"]["exit_code"], 1);
    assert_eq!(v["restarts"], 3);
    assert!(v["state"]["finished_at"].is_string());

    let run = node.berth(&["inspect", "cache", "--format", "text"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("State:     stopped by operator, exited (143)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Operator:  stopped (berth stop)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("  secret db-password -> /run/secrets/db-password (ro)")
    );
    let run = node.berth(&["inspect", "web", "--format", "text"]);
    assert!(
        run.stdout
            .contains(&format!("State:     running (pid {})", sleep.0.id())),
        "{}",
        run.stdout
    );

    let run = node.berth(&["inspect", "nope"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("no container nope in state directory"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(node.state().to_str().unwrap()),
        "{run:?}"
    );
}

#[test]
fn an_unreadable_state_dir_exits_3() {
    let node = Node::new();
    std::fs::write(node.state().join("containers"), "not a directory").unwrap();
    for args in [
        &["ps"][..],
        &["inspect", "web"],
        &["logs", "web"],
        &["stats"],
    ] {
        let run = node.berth(args);
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("cannot read state directory"),
            "{run:?}"
        );
    }
}
