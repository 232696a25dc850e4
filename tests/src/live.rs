//! A live node for end-to-end tests that run real containers: its own state and run
//! directories, a loopback registry holding the busybox demo image, a spec directory
//! and a node config. Dropping it applies an empty tree, so every container, network
//! and mount it made is torn down even when the test fails. The one harness of the
//! suite's live tests: a test adds what is its own (a spec, a secret, a failpoint)
//! through it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixture::{self, ImageSpec};
use crate::registry::TestRegistry;
use crate::{Run, berth, have_tools, is_root, workspace_root};

/// See the module docs.
#[derive(Debug)]
pub struct LiveNode {
    _reg: TestRegistry,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub spec: PathBuf,
    /// The demo image, pinned by digest in the loopback registry.
    pub image: String,
}

impl LiveNode {
    /// A node whose config has `sections` before `[runtime]` (`[policy]`,
    /// [`demo_secrets`]) and `extra_runtime` after `[runtime]`'s paths (more runtime
    /// keys, or further sections). `None` when a prerequisite is missing outside CI.
    pub fn start(sections: &str, extra_runtime: &str) -> Option<LiveNode> {
        if !is_root() || !have_tools(&["runc", "docker-registry"]) || !fixture::have_busybox() {
            return None;
        }
        let reg = TestRegistry::start()?;
        let image = fixture::busybox(&ImageSpec::default());
        let digest = fixture::push(&reg, "berth/demo", "v1", &image);
        let dir = tempfile::tempdir().ok()?;
        let spec = dir.path().join("spec");
        std::fs::create_dir_all(&spec).ok()?;
        let config = dir.path().join("node.toml");
        let text = format!(
            "[node]\nname = \"edge-test\"\n{sections}\n[runtime]\noci_runtime = \"runc\"\n\
             state_dir = {:?}\nrun_dir = {:?}\n{extra_runtime}\n\
             [registries.\"{}\"]\ninsecure = true\n",
            dir.path().join("state"),
            dir.path().join("run"),
            reg.host(),
        );
        std::fs::write(&config, text).ok()?;
        Some(LiveNode {
            image: format!("{}/berth/demo@{digest}", reg.host()),
            _reg: reg,
            dir,
            config,
            spec,
        })
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Writes `spec/NAME` (replacing `IMAGE` with the demo image's reference).
    pub fn write_spec(&self, name: &str, text: &str) {
        let text = text.replace("IMAGE", &self.image);
        std::fs::write(self.spec.join(name), text)
            .unwrap_or_else(|e| panic!("write the spec: {e}"));
    }

    /// Copies the webapp example's secret into the spec tree as
    /// `secrets/db-password.age`; [`demo_secrets`] decrypts it.
    pub fn add_demo_secret(&self) {
        let dir = self.spec.join("secrets");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {dir:?}: {e}"));
        let from = workspace_root().join("examples/webapp/secrets/db-password.age");
        std::fs::copy(&from, dir.join("db-password.age"))
            .unwrap_or_else(|e| panic!("copy {from:?}: {e}"));
    }

    /// Rewrites `spec/NAME` with `edit`.
    pub fn edit_spec(&self, name: &str, edit: impl FnOnce(String) -> String) {
        let path = self.spec.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        std::fs::write(&path, edit(text)).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    }

    /// `berth --config <node config>` with the shim under test and no failpoint,
    /// for a caller that adds arguments or environment.
    pub fn command(&self) -> Command {
        let mut cmd = berth();
        cmd.arg("--config")
            .arg(&self.config)
            .env("BERTH_SHIM_BIN", crate::shim_bin())
            .env_remove("BERTH_FAILPOINT");
        cmd
    }

    /// Runs `berth --config <node config> ARGS`.
    pub fn berth(&self, args: &[&str]) -> Run {
        let out = self
            .command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run berth: {e}"));
        Run::from(out)
    }

    /// `berth apply` of the spec directory.
    pub fn apply(&self) -> Run {
        self.berth(&["apply", &self.spec.to_string_lossy()])
    }

    /// `berth ps -a --format json`, which must succeed.
    pub fn ps(&self) -> serde_json::Value {
        let r = self.berth(&["ps", "-a", "--format", "json"]);
        assert_eq!(r.code, 0, "berth ps: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("berth ps: {e}: {}", r.stdout))
    }

    /// Every container's instance id, by name, from [`LiveNode::ps`].
    pub fn instances(&self) -> BTreeMap<String, String> {
        let ps = self.ps();
        ps.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["name"].as_str()?.into(), c["instance"].as_str()?.into())))
            .collect()
    }

    /// The instance id of a container, from `berth ps -a --format json`.
    pub fn instance(&self, name: &str) -> Option<String> {
        self.instances().remove(name)
    }

    /// The containers runc knows under this node's run dir (`runc list -q`).
    pub fn runc_ids(&self) -> Vec<String> {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.run_dir().join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap_or_else(|e| panic!("run runc list: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// Runs a command in a container with runc directly: (exit code, stdout, stderr).
    pub fn exec(&self, name: &str, cmd: &[&str]) -> (i32, String, String) {
        let id = self
            .instance(name)
            .unwrap_or_else(|| panic!("no container {name}"));
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.run_dir().join("runc"))
            .arg("exec")
            .arg(id)
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("run runc exec: {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`LiveNode::exec`], which must succeed: its stdout.
    pub fn exec_ok(&self, name: &str, cmd: &[&str]) -> String {
        let (code, stdout, stderr) = self.exec(name, cmd);
        assert_eq!(code, 0, "{cmd:?} in {name}: {stderr}");
        stdout
    }

    /// Mount points under this node's directories, per `/proc/self/mountinfo`.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(self.dir.path())
    }
}

/// Mount points at or below `dir` (canonicalised), per `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// `[secrets]` naming the demo node's age identity (`examples/keys`), which decrypts
/// the webapp example's secret ([`LiveNode::add_demo_secret`]).
pub fn demo_secrets() -> String {
    let key = workspace_root().join("examples/keys/demo-node.age.key");
    format!("[secrets]\nidentity = {key:?}\n")
}

impl Drop for LiveNode {
    fn drop(&mut self) {
        let empty = self.dir.path().join("empty");
        let _ = std::fs::create_dir_all(&empty);
        let r = self.berth(&["apply", "--prune-volumes", &empty.to_string_lossy()]);
        if r.code != 0 {
            eprintln!("teardown apply failed: {}{}", r.stdout, r.stderr);
        }
    }
}
