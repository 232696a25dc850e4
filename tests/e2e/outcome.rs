//! What `berth apply` says it did, per container: one apply of a healthy container next
//! to one whose create fails in the runtime (`command = ["/nonexistent"]`). The failed
//! one is "not applied" with the runtime's error, in text and in JSON, the healthy one is
//! "created", the exit code is 1, and nothing of the failed one stays mounted.

use berth_e2e::Run;
use berth_e2e::live::LiveNode;

const SPEC: &str = r#"
[network.outcome]
subnet = "10.251.93.0/24"

[container.ok]
image = "IMAGE"
user = "10001:10001"
command = ["/bin/sleep", "3600"]
networks = ["outcome"]
read_only = true
cap_drop = ["ALL"]
stop_timeout = "1s"

[container.ok.resources]
memory = "32MiB"
pids = 32

[container.bad]
image = "IMAGE"
user = "10001:10001"
command = ["/nonexistent"]
networks = ["outcome"]
read_only = true
cap_drop = ["ALL"]
stop_timeout = "1s"

[container.bad.resources]
memory = "32MiB"
pids = 32
"#;

/// A live node in enforce mode with the two containers.
fn setup() -> Option<LiveNode> {
    let node = LiveNode::start("[policy]\nmode = \"enforce\"\n", "")?;
    node.write_spec("outcome.toml", SPEC);
    Some(node)
}

fn apply(node: &LiveNode, format: &str) -> Run {
    node.berth(&["apply", "--format", format, &node.spec.to_string_lossy()])
}

/// Applies an empty tree: removes everything the node started.
fn teardown(node: &LiveNode) -> Run {
    let empty = node.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    node.berth(&["apply", &empty.to_string_lossy()])
}

/// Mounts of the failed container: its instance directory (`bad-<hash>`) under the
/// state dir, its network namespace under the run dir.
fn mounts_of_bad(node: &LiveNode) -> Vec<String> {
    node.mounts()
        .into_iter()
        .filter(|mp| mp.contains("/bad-") || mp.contains("/bad/"))
        .collect()
}

#[test]
fn a_failed_create_is_not_applied_next_to_a_created_container() {
    let Some(node) = setup() else {
        return;
    };

    // JSON first.
    let r = apply(&node, "json");
    assert_eq!(
        r.code, 1,
        "one container was not applied:\n{}{}",
        r.stdout, r.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("apply --format json: {e}:\n{}", r.stdout));
    let bad = &v["containers"]["bad"];
    assert_eq!(bad["outcome"], "not_applied", "{v:#}");
    assert_eq!(bad["step"], "create", "{v:#}");
    let error = bad["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("/nonexistent"),
        "the runtime's error is not in the outcome: {v:#}"
    );
    let ok = &v["containers"]["ok"];
    assert_eq!(ok["outcome"], "created", "{v:#}");
    assert!(
        ok["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("ok-")),
        "{v:#}"
    );
    assert_eq!(v["converged"], false, "{v:#}");
    assert!(v["revision"]["id"].is_string(), "{v:#}");
    assert!(v["revision"]["source"].is_string(), "{v:#}");
    assert!(v["steps"].is_array(), "{v:#}");
    // Each step as the plan has it, with its result.
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["action"] == "create" && s["name"] == "bad" && s["result"] == "failed"),
        "{v:#}"
    );
    assert_eq!(
        mounts_of_bad(&node),
        Vec::<String>::new(),
        "the failed create left mounts behind"
    );

    let r = teardown(&node);
    assert_eq!(r.code, 0, "teardown:\n{}{}", r.stdout, r.stderr);
    assert_eq!(
        node.mounts(),
        Vec::<String>::new(),
        "mounts left after teardown"
    );
    assert_eq!(node.runc_ids(), Vec::<String>::new());

    // Then text, from the same clean state.
    let r = apply(&node, "text");
    assert_eq!(
        r.code, 1,
        "one container was not applied:\n{}{}",
        r.stdout, r.stderr
    );
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", r.stdout))
            .to_string()
    };
    let bad = line("bad");
    assert!(
        bad.starts_with("bad: not applied: create failed: ") && bad.contains("/nonexistent"),
        "{}",
        r.stdout
    );
    assert!(!bad.contains("applied with"), "{}", r.stdout);
    assert!(line("ok").starts_with("ok: created"), "{}", r.stdout);
    assert_eq!(
        mounts_of_bad(&node),
        Vec::<String>::new(),
        "the failed create left mounts behind"
    );

    // A second pass does not create ok again, and still reports bad.
    let r = apply(&node, "text");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ok: unchanged"), "{}", r.stdout);
    assert!(
        r.stdout.contains("bad: not applied: create failed: "),
        "{}",
        r.stdout
    );

    let r = teardown(&node);
    assert_eq!(r.code, 0, "teardown:\n{}{}", r.stdout, r.stderr);
    assert_eq!(
        node.mounts(),
        Vec::<String>::new(),
        "mounts left after teardown"
    );
    assert_eq!(node.runc_ids(), Vec::<String>::new());
}
