//! Choosing the OCI runtime through the CLI (`runtime.oci_runtime`), as root: `berth
//! apply` of an empty tree picks the runtime and caches the probe in
//! `<run_dir>/runtime.json`. On a cgroup v1 *hybrid* host (this one) crun cannot create
//! containers, so `auto` falls back to runc and says why, and an explicit `crun` fails.
//! The lifecycle itself is covered by the `berth` crate's root tests
//! (`runtime::instance::lifecycle_tests`) and by `apply`.

use std::path::{Path, PathBuf};

use berth_e2e::{Run, berth, have_tools, is_root};

/// A config with its own state and run dirs, and an empty spec tree.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(oci_runtime: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        std::fs::write(
            dir.path().join("node.toml"),
            format!(
                "[node]\nname = \"rt-test\"\n[runtime]\noci_runtime = {oci_runtime:?}\n\
                 state_dir = {:?}\nrun_dir = {:?}\n",
                dir.path().join("state"),
                dir.path().join("run"),
            ),
        )
        .unwrap();
        Node { dir }
    }

    fn apply(&self) -> Run {
        let out = berth()
            .arg("--config")
            .arg(self.dir.path().join("node.toml"))
            .args(["apply"])
            .arg(self.dir.path().join("empty"))
            .env("BERTH_SHIM_BIN", berth_e2e::shim_bin())
            .env("BERTH_LOG", "info")
            .output()
            .unwrap();
        Run::from(out)
    }

    fn cache(&self) -> serde_json::Value {
        let path = self.dir.path().join("run/runtime.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

/// Whether crun refuses this host: cgroup v2 mounted below a v1 layout with
/// controllers left on it (crun 1.8's "hybrid mode" check).
fn hybrid_with_v2_controllers() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty())
}

fn probe_of<'a>(cache: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    cache["probes"].as_array()?.iter().find(|p| {
        p["binary"]
            .as_str()
            .and_then(|b| Path::new(b).file_name())
            .is_some_and(|f| f == name)
    })
}

#[test]
fn auto_falls_back_to_runc_where_crun_cannot_create() {
    if !is_root() || !have_tools(&["runc", "crun"]) {
        return;
    }
    let node = Node::new("auto");
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let cache = node.cache();
    let runc = probe_of(&cache, "runc");
    let crun = probe_of(&cache, "crun").expect("auto probes crun first");
    if hybrid_with_v2_controllers() {
        assert!(
            r.stderr.contains("crun is not usable here, using runc"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("cgroups in hybrid mode"), "{}", r.stderr);
        let why = crun["error"].as_str().unwrap();
        assert!(
            why.contains("cgroups in hybrid mode not supported"),
            "{why}"
        );
        assert!(runc.unwrap()["error"].is_null(), "{cache}");
    } else {
        assert!(crun["error"].is_null() || runc.is_some(), "{cache}");
    }

    // The next command reads the verdict: runtime.json is not rewritten.
    let path: PathBuf = node.dir.path().join("run/runtime.json");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let r = node.apply();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        before
    );
    assert!(!r.stderr.contains("oci runtime: probed"), "{}", r.stderr);
}

/// An explicit `crun` is used as it is: where this host's cgroup layout makes crun
/// fail (v1 hybrid with controllers on the v2 hierarchy), berth exits 3 with crun's own
/// reason instead of working around the host; elsewhere it is probed and chosen.
#[test]
fn an_explicit_crun_is_probed_and_used_or_refused_with_its_reason() {
    if !is_root() || !have_tools(&["crun"]) {
        return;
    }
    let node = Node::new("crun");
    let r = node.apply();
    if hybrid_with_v2_controllers() {
        assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
        assert!(
            r.stderr
                .contains("does not work on this host: cgroups in hybrid mode"),
            "{}",
            r.stderr
        );
    } else {
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let cache = node.cache();
        let crun = probe_of(&cache, "crun").expect("crun was probed");
        assert!(crun["error"].is_null(), "{cache}");
    }
}
