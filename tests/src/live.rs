//! A live node for end-to-end tests that run real containers: its own state and run
//! directories, a loopback registry holding the busybox demo image, a spec directory
//! and a node config. Dropping it applies an empty tree, so every container, network
//! and mount it made is torn down even when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixture::{self, ImageSpec};
use crate::registry::TestRegistry;
use crate::{Run, berth, have_tools, is_root};

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
    /// A node whose config has `extra` appended after `[runtime]`'s paths (policy
    /// sections, more runtime keys). `None` when a prerequisite is missing outside CI.
    pub fn start(policy: &str, extra_runtime: &str) -> Option<LiveNode> {
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
            "[node]\nname = \"edge-test\"\n{policy}\n[runtime]\noci_runtime = \"runc\"\n\
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

    /// Runs `berth --config <node config> ARGS`.
    pub fn berth(&self, args: &[&str]) -> Run {
        let out = berth()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("BERTH_SHIM_BIN", crate::shim_bin())
            .output()
            .unwrap_or_else(|e| panic!("run berth: {e}"));
        Run::from(out)
    }

    /// `berth apply` of the spec directory.
    pub fn apply(&self) -> Run {
        self.berth(&["apply", &self.spec.to_string_lossy()])
    }

    /// The instance id of a container, from `berth ps -a --format json`.
    pub fn instance(&self, name: &str) -> Option<String> {
        let r = self.berth(&["ps", "-a", "--format", "json"]);
        let ps: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
        ps.as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["instance"].as_str())
            .map(str::to_string)
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
