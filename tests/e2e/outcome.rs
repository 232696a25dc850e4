//! What `berth apply` says it did, per container: one apply of a healthy container next
//! to one whose create fails in the runtime (`command = ["/nonexistent"]`). The failed
//! one is "not applied" with the runtime's error, in text and in JSON, the healthy one is
//! "created", the exit code is 1, and nothing of the failed one stays mounted.

use std::path::PathBuf;

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::registry::TestRegistry;
use berth_e2e::{Run, berth, have_tools, is_root};

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

struct Node {
    _reg: TestRegistry,
    dir: tempfile::TempDir,
    config: PathBuf,
    spec: PathBuf,
}

impl Node {
    fn berth(&self, args: &[&str]) -> Run {
        let out = berth()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("BERTH_SHIM_BIN", berth_e2e::shim_bin())
            .env_remove("BERTH_FAILPOINT")
            .output()
            .unwrap();
        Run::from(out)
    }
    fn apply(&self, format: &str) -> Run {
        self.berth(&["apply", "--format", format, &self.spec.to_string_lossy()])
    }
    /// Applies an empty tree: removes everything this node started.
    fn teardown(&self) -> Run {
        let empty = self.dir.path().join("empty");
        let _ = std::fs::create_dir_all(&empty);
        self.berth(&["apply", &empty.to_string_lossy()])
    }
    /// Mount points under this node's directories (state and run dir), relative to it.
    fn mounts(&self) -> Vec<String> {
        let base = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter_map(|mp| mp.strip_prefix(&base))
            .map(String::from)
            .collect()
    }
    /// Containers the runtime still knows under this node's run dir.
    fn runtime_containers(&self) -> Vec<String> {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.dir.path().join("run/runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

impl Drop for Node {
    /// Removes everything the test started, even when it failed half-way.
    fn drop(&mut self) {
        let r = self.teardown();
        if r.code != 0 {
            eprintln!("teardown apply failed: {}{}", r.stdout, r.stderr);
        }
    }
}

fn setup() -> Option<Node> {
    if !is_root() || !have_tools(&["runc", "docker-registry"]) || !fixture::have_busybox() {
        return None;
    }
    let reg = TestRegistry::start()?;
    let digest = fixture::push(
        &reg,
        "berth/demo",
        "v1",
        &fixture::busybox(&ImageSpec::default()),
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec");
    std::fs::create_dir_all(&spec).unwrap();
    let image = format!("{}/berth/demo@{digest}", reg.host());
    std::fs::write(spec.join("outcome.toml"), SPEC.replace("IMAGE", &image)).unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"outcome\"\n[policy]\nmode = \"enforce\"\n\
             [runtime]\noci_runtime = \"runc\"\nstate_dir = {:?}\nrun_dir = {:?}\n\
             [registries.\"{}\"]\ninsecure = true\n",
            dir.path().join("state"),
            dir.path().join("run"),
            reg.host(),
        ),
    )
    .unwrap();
    Some(Node {
        _reg: reg,
        dir,
        config,
        spec,
    })
}

/// Mounts of the failed container: its instance directory (`bad-<hash>`) under the
/// state dir, its network namespace under the run dir.
fn mounts_of_bad(node: &Node) -> Vec<String> {
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
    let r = node.apply("json");
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

    let r = node.teardown();
    assert_eq!(r.code, 0, "teardown:\n{}{}", r.stdout, r.stderr);
    assert_eq!(
        node.mounts(),
        Vec::<String>::new(),
        "mounts left after teardown"
    );
    assert_eq!(node.runtime_containers(), Vec::<String>::new());

    // Then text, from the same clean state.
    let r = node.apply("text");
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
    let r = node.apply("text");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ok: unchanged"), "{}", r.stdout);
    assert!(
        r.stdout.contains("bad: not applied: create failed: "),
        "{}",
        r.stdout
    );

    let r = node.teardown();
    assert_eq!(r.code, 0, "teardown:\n{}{}", r.stdout, r.stderr);
    assert_eq!(
        node.mounts(),
        Vec::<String>::new(),
        "mounts left after teardown"
    );
    assert_eq!(node.runtime_containers(), Vec::<String>::new());
}
