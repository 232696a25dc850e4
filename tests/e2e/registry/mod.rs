//! `berth image` against a real `docker-registry` on loopback. [`pull`]: pulls by tag
//! and digest, platform selection, images made by umoci and copied by skopeo,
//! signatures, rm and prune. [`failures`]: Basic and Bearer auth, integrity failures,
//! resumed downloads, retries, mirrors, not-found errors.

#![allow(clippy::unwrap_used)]

mod failures;
mod hostile;
mod images;
mod pull;

use std::path::Path;

use berth_e2e::fixture;
use berth_e2e::registry::TestRegistry;
use berth_e2e::{Run, berth};
use serde_json::Value;

/// Runs `berth --state-dir STATE ARGS` with `DOCKER_CONFIG` pointing at `docker_config`
/// (or at an empty directory, so the host's own credentials never leak in).
pub fn berth_in(state: &Path, docker_config: Option<&Path>, args: &[&str]) -> Run {
    let empty = state.join("no-docker-config");
    // An explicit, empty node configuration: all defaults, whatever the machine has
    // in /etc/berth.
    let node = state.join("node.toml");
    if !node.exists() {
        std::fs::write(&node, "").unwrap();
    }
    let mut cmd = berth();
    if !args.contains(&"--config") {
        cmd.arg("--config").arg(&node);
    }
    let out = cmd
        .current_dir(state)
        .env("DOCKER_CONFIG", docker_config.unwrap_or(&empty))
        .env_remove("HOME")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run berth: {e}"));
    Run::from(out)
}

pub fn json(run: &Run) -> Value {
    assert_eq!(run.code, 0, "berth failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("bad json ({e}): {}", run.stdout))
}

pub fn pull_json(state: &Path, reference: &str, extra: &[&str]) -> Value {
    let mut args = vec!["image", "pull", reference, "--format", "json"];
    args.extend_from_slice(extra);
    json(&berth_in(state, None, &args))["image"].clone()
}

pub fn blob_in_store(state: &Path, digest: &str) -> bool {
    state
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file()
}

pub fn setup() -> Option<(TestRegistry, tempfile::TempDir)> {
    if !fixture::have_busybox() {
        return None;
    }
    let reg = TestRegistry::start()?;
    Some((reg, tempfile::tempdir().unwrap()))
}
