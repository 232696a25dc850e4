//! Shared harness for the end-to-end suite: finds the built binaries, runs them in
//! throw-away directories, and checks prerequisites.
//!
//! Prerequisites follow the workspace's one rule ([`skip`]): when `CI=true` a missing
//! tool or fixture is a test failure (a panic naming it); elsewhere the test prints
//! `skipping <test>: <why>` and returns early.

pub mod agentd;
pub mod fixture;
pub mod git;
pub mod live;
pub mod mosquitto;
pub mod registry;
pub mod skip;

pub use skip::{in_ci, missing};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn target_debug() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug")
}

/// The `berth` binary under test: `$BERTH_BIN`, else the workspace's `target/debug/berth`.
pub fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_debug().join("berth"))
}

/// The `berth-shim` binary under test: `$BERTH_SHIM_BIN`, else `target/debug/berth-shim`.
pub fn shim_bin() -> PathBuf {
    std::env::var_os("BERTH_SHIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_debug().join("berth-shim"))
}

/// Whether the program `name` is on `PATH`, without reporting anything.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Checks that each program is on PATH; see [`missing`].
#[track_caller]
pub fn have_tools(tools: &[&str]) -> bool {
    tools
        .iter()
        .all(|tool| on_path(tool) || missing(&format!("`{tool}` on PATH")))
}

/// Checks that the test runs as root; see [`missing`].
#[track_caller]
pub fn is_root() -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    uid.as_deref() == Some("0") || missing("root privileges")
}

/// The shared fixtures directory: `$BERTH_SHARED_FIXTURES`, else `../shared/fixtures`
/// beside the repository. `None` (after [`missing`]) when it does not exist.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"));
    if dir.is_dir() {
        Some(dir)
    } else {
        missing(&format!("shared fixtures at {}", dir.display()));
        None
    }
}

/// The result of one `berth` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A `berth` command with a clean environment for config discovery: `BERTH_CONFIG`
/// is removed so a config installed on the machine never changes results.
pub fn berth() -> Command {
    let mut cmd = Command::new(berth_bin());
    cmd.env_remove("BERTH_CONFIG");
    cmd
}

/// Runs `berth ARGS` in `cwd` and captures its output.
pub fn run_berth(cwd: &Path, args: &[&str]) -> Run {
    let out = berth()
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", berth_bin().display()));
    Run::from(out)
}

/// `GET PATH` on the agent's API socket (`curl --unix-socket`), which must succeed:
/// (content type, body).
pub fn api_get(socket: &Path, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "60", "-D", "/dev/stderr"])
        .arg("--unix-socket")
        .arg(socket)
        .arg(format!("http://localhost{path}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    let head = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "curl {path} on the socket: {head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (
        content_type,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
