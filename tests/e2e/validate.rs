//! `berth validate` and `berth agent --check` on the shipped examples: every example is
//! valid, a typo in any key of any example is a located error with a suggestion, and a
//! bad value names its key.

use std::path::Path;

use berth_e2e::{run_berth, workspace_root};

const EXAMPLES: &[&str] = &["hello", "webapp", "fleet"];

#[test]
fn every_example_validates() {
    let root = workspace_root();
    for ex in EXAMPLES {
        let r = run_berth(&root, &["validate", &format!("examples/{ex}")]);
        assert_eq!(r.code, 0, "examples/{ex}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.starts_with("ok: "), "{}", r.stdout);
    }
    let r = run_berth(&root, &["validate", "examples/webapp"]);
    assert_eq!(
        r.stdout.trim(),
        "ok: 3 containers, 1 network, 1 volume, 1 secret in 1 file"
    );
    let r = run_berth(
        &root,
        &["agent", "--config", "examples/node.toml", "--check"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn node_targeting_counts_only_the_nodes_containers() {
    let root = workspace_root();
    let r = run_berth(
        &root,
        &[
            "validate",
            "examples/fleet",
            "--node",
            "edge-7",
            "--label",
            "site=paris",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["containers"],
        serde_json::json!(["collector-paris", "heartbeat"])
    );
    let r = run_berth(
        &root,
        &[
            "validate",
            "examples/fleet",
            "--node",
            "lab-1",
            "--label",
            "arch=arm64",
        ],
    );
    assert_eq!(
        r.stdout,
        "ok: 2 containers, 1 network, 0 volumes, 0 secrets in 3 files\n  container gpio-exporter\n  container heartbeat\n"
    );
}

/// Swaps the first two letters of a key: a one-edit typo (`image` → `miage`).
fn typo(key: &str) -> Option<String> {
    let b = key.as_bytes();
    (b.len() >= 2 && b[0] != b[1]).then(|| {
        let mut t = b.to_vec();
        t.swap(0, 1);
        String::from_utf8_lossy(&t).into_owned()
    })
}

/// For each `key = …` line of `file`, writes a copy of `dir` with that key misspelt and
/// checks the exact location and the suggestion. Returns how many keys were tried.
fn typos_in(dir: &Path, rel: &str, args: &dyn Fn(&Path) -> Vec<String>) -> usize {
    let text = std::fs::read_to_string(dir.join(rel)).expect("read example");
    let mut tried = 0;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some((key, _)) = trimmed.split_once(" =") else {
            continue;
        };
        if trimmed.starts_with('#')
            || trimmed.starts_with('[')
            || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            continue;
        }
        let Some(bad) = typo(key) else { continue };
        let copy = tempfile::tempdir().expect("tempdir");
        copy_tree(dir, copy.path());
        let col = line.len() - trimmed.len() + 1;
        let mutated: String = text
            .lines()
            .enumerate()
            .map(|(i, l)| if i == n { l.replacen(key, &bad, 1) } else { l.to_string() } + "\n")
            .collect();
        std::fs::write(copy.path().join(rel), mutated).expect("write");
        let argv = args(copy.path());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let r = run_berth(copy.path(), &argv);
        assert_eq!(
            r.code,
            1,
            "typo `{bad}` in {rel}:{} not rejected: {}{}",
            n + 1,
            r.stdout,
            r.stderr
        );
        let located = format!("{rel}:{}:{col}: error: ", n + 1);
        let suggestion = "unknown key `";
        // The node configuration is named by the path given on the command line.
        let line_out = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&located) || l.contains(&format!("/{located}")))
            .unwrap_or_else(|| {
                panic!("no error at {located} for typo `{bad}`; got:\n{}", r.stdout)
            });
        assert!(
            line_out.contains(suggestion) && line_out.contains(&format!("did you mean `{key}`?")),
            "{line_out}"
        );
        tried += 1;
    }
    tried
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

#[test]
fn a_typo_in_any_example_key_is_located_with_a_suggestion() {
    let root = workspace_root();
    let mut tried = 0;
    for ex in EXAMPLES {
        let dir = root.join("examples").join(ex);
        for entry in std::fs::read_dir(&dir).expect("examples") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".toml") {
                tried += typos_in(&dir, &name, &|_| vec!["validate".into(), ".".into()]);
            }
        }
    }
    // The node configuration goes through `berth agent --check`.
    let node_dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        root.join("examples/node.toml"),
        node_dir.path().join("node.toml"),
    )
    .expect("copy");
    tried += typos_in(node_dir.path(), "node.toml", &|d| {
        vec![
            "agent".into(),
            "--config".into(),
            d.join("node.toml").display().to_string(),
            "--check".into(),
        ]
    });
    assert!(tried > 80, "only {tried} keys were tried");
}

#[test]
fn exit_codes() {
    let root = workspace_root();
    assert_eq!(
        run_berth(&root, &["validate", "/nonexistent/berth"]).code,
        3
    );
    assert_eq!(run_berth(&root, &["validate", "--format", "yaml"]).code, 2);
    assert_eq!(
        run_berth(
            &root,
            &["agent", "--config", "/nonexistent.toml", "--check"]
        )
        .code,
        3
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.toml"), "[container.web]\nimage = 5\n").expect("write");
    let r = run_berth(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(r.code, 1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(
        v["errors"][0],
        serde_json::json!({"file": "a.toml", "line": 2, "column": 9, "kind": "container", "name": "web", "key": "image", "message": "container `web`: `image` must be a string, found an integer"})
    );
    assert_eq!(v["ok"], false);
}

/// A bad duration, size and signal in one tree: `berth validate` reports each at its
/// value and names its key, in text and in JSON.
#[test]
fn value_errors_name_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img =
        "r.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(
        dir.path().join("main.toml"),
        format!(
            "[container.a]\nimage = \"{img}\"\nstop_timeout = \"10 parsecs\"\n\
             [container.b]\nimage = \"{img}\"\nresources = {{ memory = \"lots\" }}\n\
             [container.c]\nimage = \"{img}\"\nstop_signal = \"SIGFOO\"\n"
        ),
    )
    .expect("write");
    let r = run_berth(dir.path(), &["validate", "."]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains(": error: "))
        .collect();
    let want = [
        "main.toml:3:16: error: container `a`: stop_timeout: invalid duration `10 parsecs`: ",
        "main.toml:6:24: error: container `b`: resources.memory: invalid size `lots`: ",
        "main.toml:9:15: error: container `c`: stop_signal: invalid signal `SIGFOO`: ",
    ];
    assert_eq!(lines.len(), want.len(), "{}", r.stdout);
    for (line, want) in lines.iter().zip(want) {
        assert!(line.starts_with(want), "want {want}\n got {line}");
    }

    let r = run_berth(dir.path(), &["validate", ".", "--format", "json"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    let keys: Vec<&str> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["stop_timeout", "resources.memory", "stop_signal"]);
}
