//! The agent's CLI clients (`status`, `suspend`, `events`) against an agent that does
//! not answer: a socket that accepts connections (the kernel's backlog) and never
//! answers, as a wedged agent's does. No root, no runtime: the built `berth` and a
//! node configuration with its own state and run directories.
//! - `status` gives up within seconds and shows the state directory, exit 0, saying
//!   `agent: not answering (why)`;
//! - `suspend` gives up too and exits 3 with a sentence naming the socket;
//! - `events --since` takes an RFC 3339 time as well as a duration.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_e2e::{Run, berth};

/// A node configuration in `dir`, with its state and run directories.
fn node(dir: &Path) -> (PathBuf, PathBuf) {
    let (state, run) = (dir.join("state"), dir.join("run"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"edge-test\"\n[runtime]\nstate_dir = {state:?}\nrun_dir = {run:?}\n"
        ),
    )
    .unwrap();
    (config, run.join("api.sock"))
}

/// `berth --config CONFIG ARGS`, and how long it took.
fn run(config: &Path, args: &[&str]) -> (Run, Duration) {
    let began = Instant::now();
    let out = berth()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (Run::from(out), began.elapsed())
}

#[test]
fn a_wedged_agent_neither_hangs_status_nor_the_controls() {
    let dir = tempfile::tempdir().unwrap();
    let (config, socket) = node(dir.path());
    let _wedged = UnixListener::bind(&socket).unwrap();

    let (r, took) = run(&config, &["status"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(took < Duration::from_secs(15), "status took {took:?}");
    let want = format!(
        "agent: not answering (the agent on {} did not answer GET /v1/status within 5s)",
        socket.display()
    );
    assert_eq!(r.stdout.lines().next(), Some(want.as_str()), "{r:?}");

    let (r, _) = run(&config, &["status", "--format", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["agent"], "not answering", "{r:?}");
    assert!(r.stderr.contains("did not answer"), "{r:?}");

    let (r, took) = run(&config, &["suspend"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(took < Duration::from_secs(20), "suspend took {took:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "error: the agent on {} did not answer POST /v1/suspend within 10s",
            socket.display()
        )),
        "{r:?}"
    );
}

#[test]
fn events_since_takes_a_time_or_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _socket) = node(dir.path());
    // No agent: the events recorded in the state directory, after the time given.
    let log = dir.path().join("state/state/events.jsonl");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(
        &log,
        "{\"time\":\"2026-12-04T09:00:00.000Z\",\"type\":\"Normal\",\"reason\":\"Fetched\",\"message\":\"old\"}\n\
         {\"time\":\"2026-12-04T11:00:00.000Z\",\"type\":\"Normal\",\"reason\":\"Applied\",\"message\":\"new\"}\n",
    )
    .unwrap();
    for (since, want) in [
        ("2026-12-04T10:00:00Z", vec!["new"]),
        ("2026-12-04T12:00:00+02:00", vec!["new"]),
        ("2026-12-04T08:00:00Z", vec!["old", "new"]),
    ] {
        let (r, _) = run(&config, &["events", "--since", since, "--format", "json"]);
        assert_eq!(r.code, 0, "{since}: {r:?}");
        let got: Vec<String> = r
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].to_string())
            .collect();
        let want: Vec<String> = want.iter().map(|m| format!("{m:?}")).collect();
        assert_eq!(got, want, "{since}: {r:?}");
    }
    let (r, _) = run(&config, &["events", "--since", "10m"]);
    assert_eq!(r.code, 0, "{r:?}");
    let (r, _) = run(&config, &["events", "--since", "soon"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("nor an RFC 3339 time"), "{r:?}");
}
