//! `berth audit` end to end: the shipped examples under the shipped profiles, the
//! report formats read back by third-party parsers (PyPI `sarif-tools`, `junitparser`),
//! `--since` against a real Git repository, and the exit codes.
//!
//! The text and JSON reports of `examples/insecure` are golden files in
//! `examples/insecure/expected/`; `BERTH_BLESS=1` rewrites them.

// Test code through and through: a panic is how a helper reports a failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::{have_tools, missing, run_berth, workspace_root};
use serde_json::{Value, json};

const INSECURE: &[&str] = &[
    "audit",
    "examples/insecure/repo",
    "--config",
    "examples/insecure/node.toml",
];

fn insecure(extra: &[&str]) -> berth_e2e::Run {
    let args: Vec<&str> = INSECURE.iter().chain(extra).copied().collect();
    run_berth(&workspace_root(), &args)
}

fn golden(name: &str, actual: &str) {
    let path = workspace_root()
        .join("examples/insecure/expected")
        .join(name);
    if std::env::var("BERTH_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with BERTH_BLESS=1)", path.display()));
    assert_eq!(
        actual,
        want,
        "{} differs (BERTH_BLESS=1 rewrites it)",
        path.display()
    );
}

/// Runs `audit_reports.py KIND FILE` (third-party parsers) and returns its JSON.
fn parse_with_python(kind: &str, file: &Path) -> Option<Value> {
    if !have_tools(&["python3"]) {
        return None;
    }
    let script = workspace_root().join("tests/e2e/audit_reports.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(kind)
        .arg(file)
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("ModuleNotFoundError") {
            missing(&format!(
                "python packages sarif-tools and junitparser: {err}"
            ));
            return None;
        }
        panic!("audit_reports.py {kind} failed: {err}");
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn webapp_is_clean_under_restricted() {
    let r = run_berth(
        &workspace_root(),
        &["audit", "examples/webapp", "--policy", "restricted"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(
        "policy restricted (enforce): 3 containers, 3 compliant; 0 violations, 0 warnings, 0 waived, 3 not checked"
    ), "{}", r.stdout);
    let r = run_berth(
        &workspace_root(),
        &[
            "audit",
            "examples/webapp",
            "--policy",
            "restricted",
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let statuses: Vec<(&str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["rule"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, vec![("image-signature", "not-checked"); 3]);
}

#[test]
fn insecure_text_and_json_reports() {
    let r = insecure(&[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    golden("audit.txt", &r.stdout);
    let r = insecure(&["--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    golden("audit.json", &r.stdout);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["policy"], "examples/insecure/policy.toml",
        "as read, beside node.toml"
    );
    assert_eq!(v["mode"], "audit", "the node's mode");
    assert_eq!(
        v["summary"],
        json!({"containers": 4, "compliant": 1, "violations": 17, "warnings": 3, "waived": 2,
               "not_checked": 7, "by_rule": {"run-as-non-root": 1, "non-root-group": 1,
               "drop-all-capabilities": 1, "allowed-capabilities": 1, "image-digest-pinned": 1,
               "allowed-registries": 1, "no-privileged": 1, "allowed-host-paths": 2,
               "allowed-devices": 1, "safe-sysctls": 1, "no-new-privileges": 1,
               "resource-limits": 4, "seccomp-confined": 1, "no-secrets-in-env": 1,
               "read-only-rootfs": 1, "host-ports-bound": 1}})
    );
    assert_eq!(
        v["expired_waivers"],
        json!([{"rule": "resource-limits", "objects": ["sensor-*"], "expires": "2025-12-31",
                "reason": "limits being measured on the bench",
                "file": "examples/insecure/node.toml", "line": 16}])
    );
    let waived: Vec<(&str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "waived")
        .map(|f| (f["name"].as_str().unwrap(), f["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        waived,
        vec![
            ("node-metrics", "no-host-network"),
            ("sensor-bridge", "read-only-rootfs")
        ],
        "one waiver from node.toml, one from policy.toml"
    );
    assert!(
        !r.stdout.contains("hunter2"),
        "secret values never reach a report"
    );
}

#[test]
fn insecure_junit_read_by_junitparser() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.xml");
    let r = insecure(&["--format", "junit", "--output", file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "--output writes the file only");
    golden("audit.junit.xml", &std::fs::read_to_string(&file).unwrap());
    let Some(v) = parse_with_python("junit", &file) else {
        return;
    };
    assert_eq!(
        v["totals"],
        json!({"tests": 72, "failures": 14, "errors": 0, "skipped": 9})
    );
    let case = |suite: &str, name: &str| -> (String, String) {
        let c = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == format!("container {suite}") && c[1] == name)
            .unwrap_or_else(|| panic!("no case {suite}/{name}"));
        (c[2].as_str().unwrap().into(), c[3].as_str().unwrap().into())
    };
    assert_eq!(case("api", "run-as-non-root").0, "passed");
    assert_eq!(case("legacy-web", "no-secrets-in-env").0, "failure");
    assert_eq!(
        case("legacy-web", "host-ports-bound").0,
        "passed-with-output"
    );
    assert_eq!(
        case("node-metrics", "no-host-network"),
        (
            "skipped".into(),
            "waived: reads host interface counters".into()
        )
    );
    assert_eq!(case("sensor-bridge", "run-as-non-root").0, "skipped");
    assert_eq!(
        case("sensor-bridge", "resource-limits").0,
        "failure",
        "its waiver expired"
    );
}

fn expected_sarif(prefix: &str) -> Value {
    let w = format!("{prefix}web.toml");
    let h = format!("{prefix}host.toml");
    json!([
        ["run-as-non-root", "error", w, 2],
        ["drop-all-capabilities", "error", w, 2],
        ["resource-limits", "error", w, 2],
        ["resource-limits", "error", w, 2],
        ["read-only-rootfs", "warning", w, 2],
        ["image-digest-pinned", "error", w, 3],
        ["allowed-registries", "error", w, 3],
        ["allowed-capabilities", "error", w, 4],
        ["host-ports-bound", "warning", w, 5],
        ["no-secrets-in-env", "error", w, 6],
        ["allowed-host-paths", "error", w, 9],
        ["allowed-host-paths", "error", w, 13],
        ["non-root-group", "warning", h, 4],
        ["no-privileged", "error", h, 6],
        ["seccomp-confined", "error", h, 7],
        ["no-new-privileges", "error", h, 8],
        ["safe-sysctls", "error", h, 11],
        ["resource-limits", "error", h, 14],
        ["resource-limits", "error", h, 14],
        ["allowed-devices", "error", h, 18]
    ])
}

/// Copies `examples/insecure` to `dest` (its `repo/`, `node.toml`, `policy.toml`).
fn copy_example(dest: &Path) -> PathBuf {
    let src = workspace_root().join("examples/insecure");
    std::fs::create_dir_all(dest.join("repo")).unwrap();
    for f in [
        "repo/web.toml",
        "repo/host.toml",
        "node.toml",
        "policy.toml",
    ] {
        std::fs::copy(src.join(f), dest.join(f)).unwrap();
    }
    dest.to_path_buf()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=berth",
            "-c",
            "user.email=berth@example.invalid",
        ])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn insecure_sarif_read_by_sarif_tools() {
    if !have_tools(&["git"]) {
        return;
    }
    // Inside a Git repository: URIs relative to its root, so code scanning finds them.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet-config");
    copy_example(&root.join("ops/lab"));
    git(&root, &["init", "-q"]);
    let out = tmp.path().join("audit.sarif");
    let r = run_berth(
        &root.join("ops"),
        &[
            "audit",
            "lab/repo",
            "--config",
            "lab/node.toml",
            "--format",
            "sarif",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let sarif: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["rules"].as_array().unwrap().len(), 18);
    let base = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
        .as_str()
        .unwrap();
    assert!(
        base.starts_with("file:///") && base.ends_with("/fleet-config/"),
        "{base}"
    );
    if let Some(records) = parse_with_python("sarif", &out) {
        assert_eq!(records, expected_sarif("ops/lab/repo/"));
    }
    // Outside any repository: relative to the audited path.
    let plain = tempfile::tempdir().unwrap();
    copy_example(plain.path());
    let out = plain.path().join("audit.sarif");
    let r = run_berth(
        plain.path(),
        &[
            "audit",
            "repo",
            "--config",
            "node.toml",
            "--format",
            "sarif",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    if let Some(records) = parse_with_python("sarif", &out) {
        assert_eq!(records, expected_sarif(""));
    }
}

fn findings_by_change(v: &Value) -> Vec<(String, String, String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] != "not-checked")
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
            (s("change"), s("name"), s("rule"), s("key"))
        })
        .collect()
}

#[test]
fn since_gates_only_new_violations() {
    if !have_tools(&["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = copy_example(tmp.path());
    git(&root, &["init", "-q"]);
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "base"]);
    let audit = |extra: &[&str]| {
        let mut args = vec!["audit", "repo", "--config", "node.toml", "--since", "HEAD"];
        args.extend_from_slice(extra);
        run_berth(&root, &args)
    };
    // Unchanged: every violation exists already, so the merge-request gate passes.
    let r = audit(&["--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(findings_by_change(&v).iter().all(|f| f.0 == "existing"));
    // Lines added above every finding, `privileged` fixed, a new bind of /proc added.
    let host = root.join("repo/host.toml");
    let text = std::fs::read_to_string(&host).unwrap();
    let text = text.replace("privileged = true\n", "");
    let text = format!("# Reviewed 2026-11.\n# Owner: platform team.\n{text}");
    let text = text.replace(
        "# read_only is waived",
        "[[container.sensor-bridge.mounts]]\nbind = \"/proc\"\ntarget = \"/host/proc\"\n# read_only is waived",
    );
    std::fs::write(&host, text).unwrap();
    let r = audit(&["--format", "json"]);
    assert_eq!(r.code, 1, "a new error-level violation fails: {}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let got = findings_by_change(&v);
    let has = |change: &str, name: &str, rule: &str, key: &str| {
        got.contains(&(change.into(), name.into(), rule.into(), key.into()))
    };
    assert!(
        has(
            "new",
            "sensor-bridge",
            "allowed-host-paths",
            "mounts[0].bind"
        ),
        "{got:?}"
    );
    assert!(
        has("fixed", "node-metrics", "no-privileged", "privileged"),
        "{got:?}"
    );
    assert!(
        has(
            "existing",
            "node-metrics",
            "safe-sysctls",
            "sysctls.kernel.msgmax"
        ),
        "moved lines stay existing"
    );
    assert_eq!(got.iter().filter(|f| f.0 == "new").count(), 1, "{got:?}");
    let fixed = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["change"] == "fixed")
        .unwrap();
    assert_eq!(
        (fixed["file"].as_str(), fixed["line"].as_u64()),
        (Some("host.toml"), Some(6)),
        "the base revision's location"
    );
    let r = audit(&[]);
    assert!(r.stdout.contains("host.toml:21: allowed-host-paths: error [new]: bind source `/proc` is on the host-path deny list (`/proc`)"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("fixed since HEAD\nhost.toml:6: no-privileged: fixed:"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("since HEAD: 1 new error-level violation, 1 fixed"),
        "{}",
        r.stdout
    );
    // An unknown revision is a usage error.
    let r = run_berth(
        &root,
        &[
            "audit",
            "repo",
            "--config",
            "node.toml",
            "--since",
            "no-such-rev",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot resolve `no-such-rev`"),
        "{}",
        r.stderr
    );
}

#[test]
fn exit_codes_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // usage
    let r = run_berth(dir, &["audit", "--format", "yaml"]);
    assert_eq!(r.code, 2);
    // unreadable path, missing policy file
    let r = run_berth(dir, &["audit", "no-such-dir", "--policy", "restricted"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let r = run_berth(dir, &["audit", ".", "--policy", "no-such-policy.toml"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    // a tree with errors: printed as `berth validate` prints them, and in `errors`
    std::fs::write(dir.join("bad.toml"), "[container.x]\nimgae = \"busybox\"\n").unwrap();
    let r = run_berth(dir, &["audit", ".", "--policy", "baseline"]);
    assert_eq!(r.code, 1);
    let v = run_berth(dir, &["validate", "."]);
    assert!(
        r.stdout.starts_with(&v.stdout),
        "{}\n---\n{}",
        r.stdout,
        v.stdout
    );
    let r = run_berth(
        dir,
        &["audit", ".", "--policy", "baseline", "--format", "json"],
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(
        v["summary"]["containers"], 0,
        "a container with errors is not audited"
    );
    // a policy file with an error: located
    std::fs::remove_file(dir.join("bad.toml")).unwrap();
    std::fs::write(dir.join("p.pol"), "[rules]\nno-privilegd = \"error\"\n").unwrap();
    let r = run_berth(dir, &["audit", ".", "--policy", "p.pol"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stdout.trim(),
        "p.pol:2:1: error: unknown rule `rules.no-privilegd`, did you mean `no-privileged`?"
    );
    // --node keeps only the containers targeting the node
    let r = run_berth(
        &workspace_root(),
        &[
            "audit",
            "examples/fleet",
            "--policy",
            "restricted",
            "--node",
            "edge-1",
            "--label",
            "site=paris",
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["summary"]["containers"], 2,
        "collector-paris and heartbeat"
    );
}
