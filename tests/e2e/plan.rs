//! `berth plan`: the planner's output for a spec tree against an empty node.

use berth_e2e::{run_berth, workspace_root};

fn plan(dir: &str, extra: &[&str]) -> berth_e2e::Run {
    let state = tempfile::tempdir().unwrap();
    let node = state.path().join("node.toml");
    std::fs::write(&node, "[node]\nname = \"edge-1\"\n").unwrap();
    let (n, s, r) = (
        node.display().to_string(),
        state.path().join("state").display().to_string(),
        state.path().join("run").display().to_string(),
    );
    let mut args = vec![
        "--config",
        &n,
        "--state-dir",
        &s,
        "--run-dir",
        &r,
        "plan",
        dir,
    ];
    args.extend_from_slice(extra);
    run_berth(&workspace_root(), &args)
}

#[test]
fn plan_of_the_webapp_on_an_empty_node() {
    let run = plan("examples/webapp", &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let steps: Vec<&str> = run.stdout.lines().skip(1).collect();
    let actions: Vec<String> = steps
        .iter()
        .map(|l| {
            l.split_whitespace()
                .take(3)
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let name = |a: &str| a.split('-').next().unwrap_or("").to_string();
    assert_eq!(actions.len(), 13, "{}", run.stdout);
    assert!(
        actions[..3].iter().all(|a| a.starts_with("pull ")),
        "{actions:?}"
    );
    assert_eq!(actions[3], "create-network app");
    assert_eq!(actions[4], "create-volume store-data");
    // store starts (and is waited for: web depends on it and it has a health check)
    // before web, and web before worker.
    let pos = |prefix: &str| actions.iter().position(|a| a.starts_with(prefix)).unwrap();
    assert!(
        pos("start store") < pos("wait-healthy store")
            && pos("wait-healthy store") < pos("start web")
    );
    assert!(pos("start web") < pos("start worker"));
    assert_eq!(
        name(actions[pos("start worker")].trim_start_matches("start ")),
        "worker"
    );

    let json = plan("examples/webapp", &["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 13);
    assert_eq!(v["steps"][0]["action"], "pull");
}

#[test]
fn plan_reports_what_the_policy_blocks() {
    // Offline: its images name public registries, and tests talk only to loopback.
    let run = plan("examples/insecure/repo", &["--offline"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("node-metrics  blocked"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("no-privileged"), "{}", run.stdout);
}
