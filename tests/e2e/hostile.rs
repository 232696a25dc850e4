//! Hostile spec trees (issue 9, items 5, 6 and the non-UTF-8 byte): a 40,000-deep
//! `depends_on` chain, a 60,000-long cycle, one container with 200,000 env keys,
//! 60,000 containers publishing ports, and the longest chain and cycle the limits allow.
//! `validate`, `audit` and `plan` each end with a located error (exit 1) or finish
//! (exit 0) — never a crash, an abort or a hang (each run has a hang limit).
//! `bench/hostile-trees.sh` times the same trees with the release build.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_e2e::Run;

/// Generous: a debug build on a loaded two-core machine.
const HANG_LIMIT: Duration = Duration::from_secs(60);

const IMG: &str = "registry.example.com/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Writes containers `c0`…`c{n-1}`, 1,000 to a file (so no file reaches the file size
/// limit), each with the extra lines `body(i)`.
fn containers(dir: &Path, n: usize, body: impl Fn(usize) -> String) {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("[container.c{i}]\nimage = \"{IMG}\"\n{}", body(i)));
        if (i + 1) % 1000 == 0 || i + 1 == n {
            std::fs::write(dir.join(format!("f{:03}.toml", i / 1000)), &text).unwrap();
            text.clear();
        }
    }
}

/// One node for `audit` and `plan`, its state and run directories in `tmp`.
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("node.toml"), "[node]\nname = \"edge-1\"\n").unwrap();
        Node { tmp }
    }

    /// `berth --config … --state-dir … --run-dir … ARGS`, killed at the hang limit.
    fn run(&self, args: &[&str]) -> Run {
        let p = |name: &str| self.tmp.path().join(name).display().to_string();
        let mut child = berth_e2e::berth()
            .args(["--config", &p("node.toml")])
            .args(["--state-dir", &p("state"), "--run-dir", &p("run")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Drain both pipes while waiting: a big report must not block the child.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            out.read_to_end(&mut s).ok();
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            err.read_to_end(&mut s).ok();
            s
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > HANG_LIMIT {
                child.kill().ok();
                child.wait().ok();
                panic!("berth {args:?} still running after {HANG_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = reader.join().unwrap();
        let stderr = err_reader.join().unwrap();
        Run {
            // A signal (an abort, a stack overflow) has no code: -1 fails every check.
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// `validate`, `audit` and `plan` of `dir` each exit 1 with `expected` (a located
/// error, as `FILE:LINE:COL: error: MESSAGE` or its end) on stdout.
fn all_report(dir: &Path, expected: &str) {
    let node = Node::new();
    let d = dir.display().to_string();
    for args in [
        vec!["validate", &d],
        vec!["audit", &d, "--policy", "restricted"],
        vec!["plan", "--offline", &d],
    ] {
        let r = node.run(&args);
        assert!(
            !r.stderr.contains("overflowed its stack") && !r.stderr.contains("panicked"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stdout.lines().any(|l| l.contains(expected)),
            "{args:?}: no `{expected}` in:\n{}",
            r.stdout.chars().take(4000).collect::<String>()
        );
    }
}

#[test]
fn a_40000_deep_chain_is_over_the_container_limit() {
    let dir = tempfile::tempdir().unwrap();
    containers(dir.path(), 40_000, |i| match i {
        0 => String::new(),
        i => format!("depends_on = [\"c{}\"]\n", i - 1),
    });
    all_report(
        dir.path(),
        "f010.toml:1:12: error: the tree defines 40000 containers, over the limit of 10000; containers from here on are not read",
    );
}

#[test]
fn a_60000_cycle_is_over_the_container_limit() {
    let dir = tempfile::tempdir().unwrap();
    containers(dir.path(), 60_000, |i| {
        format!("depends_on = [\"c{}\"]\n", (i + 1) % 60_000)
    });
    all_report(
        dir.path(),
        "f010.toml:1:12: error: the tree defines 60000 containers, over the limit of 10000",
    );
}

#[test]
fn the_longest_chain_and_cycle_the_limits_allow() {
    let dir = tempfile::tempdir().unwrap();
    containers(dir.path(), 10_000, |i| match i {
        0 => String::new(),
        i => format!("depends_on = [\"c{}\"]\n", i - 1),
    });
    all_report(
        dir.path(),
        "f000.toml:197:1: error: container `c65`: its `depends_on` chain is 65 links deep, over the limit of 64: c65 -> c64",
    );
    let dir = tempfile::tempdir().unwrap();
    containers(dir.path(), 10_000, |i| {
        format!("depends_on = [\"c{}\"]\n", (i + 1) % 10_000)
    });
    all_report(
        dir.path(),
        "f000.toml:3:1: error: container `c0`: dependency cycle of 10000 containers: c0 -> c1 -> c2",
    );
}

#[test]
fn two_hundred_thousand_env_keys_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<String> = (0..200_000).map(|i| format!("K{i} = \"v\"")).collect();
    std::fs::write(
        dir.path().join("env.toml"),
        format!(
            "[container.big]\nimage = \"{IMG}\"\nenv = {{ {} }}\n",
            env.join(", ")
        ),
    )
    .unwrap();
    all_report(
        dir.path(),
        "env.toml:3:7: error: `container.big.env` has 200000 keys, over the limit of 1024 keys per table",
    );
}

#[test]
fn sixty_thousand_containers_publishing_ports() {
    let dir = tempfile::tempdir().unwrap();
    containers(dir.path(), 60_000, |i| {
        format!("ports = [\"{}:80\"]\n", 1 + i % 60_000)
    });
    all_report(
        dir.path(),
        "f010.toml:1:12: error: the tree defines 60000 containers, over the limit of 10000",
    );
    // As many as the limit allows, all on one port: one clash each, naming the first.
    let dir = tempfile::tempdir().unwrap();
    containers(dir.path(), 10_000, |_| "ports = [\"8080:80\"]\n".into());
    all_report(
        dir.path(),
        "f009.toml:3000:10: error: container `c9999`: host port 8080/tcp is already published by container `c0` (8080:80/tcp, f000.toml:3)",
    );
}

#[test]
fn a_byte_that_is_not_utf8_is_a_located_error_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        b"[container.app]\nimage = \"x\"\n# caf\xc3\xa9 \xff\n".as_slice(),
    )
    .unwrap();
    let d = dir.path().display().to_string();
    let located = "app.toml:3:8: error: byte 0xff is not UTF-8";
    all_report(dir.path(), located);
    let node = Node::new();

    let r = node.run(&["validate", &d, "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(
        (
            &v["errors"][0]["file"],
            &v["errors"][0]["line"],
            &v["errors"][0]["column"]
        ),
        (
            &serde_json::json!("app.toml"),
            &serde_json::json!(3),
            &serde_json::json!(8)
        )
    );

    let audit = |format: &str| {
        let r = node.run(&["audit", &d, "--policy", "restricted", "--format", format]);
        assert_eq!(r.code, 1, "{format}: {}", r.stderr);
        r.stdout
    };
    let v: serde_json::Value = serde_json::from_str(&audit("json")).unwrap();
    assert_eq!(v["errors"][0]["line"], 3, "{v}");
    assert_eq!(v["errors"][0]["column"], 8, "{v}");
    let sarif: serde_json::Value = serde_json::from_str(&audit("sarif")).unwrap();
    let text = sarif.to_string();
    assert!(text.contains("not UTF-8"), "{text}");
    assert!(text.contains("\"startLine\":3"), "{text}");
    let junit = audit("junit");
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(junit.contains("not UTF-8"), "{junit}");
}
