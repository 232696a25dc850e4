//! Whether an instance still runs, read from `/proc`: what keeps an instance no record
//! names from being collected.

use std::path::{Path, PathBuf};

use crate::runtime::state::{self, InstanceDirs};
use crate::runtime::{render, status};

/// The proc filesystem the liveness checks read: `/proc`, or in tests a directory laid
/// out like it.
#[derive(Debug, Clone)]
pub(super) struct Procs {
    pub(super) root: PathBuf,
}

impl Procs {
    pub(super) fn host() -> Self {
        Procs {
            root: PathBuf::from("/proc"),
        }
    }

    /// What still runs of instance `id`, if anything: its container init (alive and in
    /// the instance's cgroup, so a recycled pid does not count), or its shim (alive, with
    /// the instance's `--id` on its command line).
    pub(super) fn runs(&self, state_dir: &Path, id: &str) -> Option<&'static str> {
        let dirs = InstanceDirs::new(state_dir, id);
        let exited = dirs.exit_file().exists();
        if !exited
            && let Some(pid) = dirs.pid()
            && self.alive(pid)
            && self.read(pid, "cgroup").is_some_and(|t| {
                status::in_cgroup(
                    &String::from_utf8_lossy(&t),
                    &render::cgroups_path(state_dir, id),
                )
            })
        {
            return Some("its container init runs");
        }
        let shim = state::read_small(&dirs.shim_pid_file(), 32)
            .ok()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<i32>().ok());
        if let Some(pid) = shim
            && self.alive(pid)
            && self.read(pid, "cmdline").is_some_and(|argv| {
                let want = format!("\0--id\0{id}\0");
                [&b"\0"[..], &argv]
                    .concat()
                    .windows(want.len())
                    .any(|w| w == want.as_bytes())
            })
        {
            return Some("its shim runs");
        }
        None
    }

    /// Whether `pid` exists and is not a zombie.
    fn alive(&self, pid: i32) -> bool {
        pid > 0
            && self
                .read(pid, "stat")
                .and_then(|t| status::parse_stat(&String::from_utf8_lossy(&t)))
                .is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x'))
    }

    fn read(&self, pid: i32, file: &str) -> Option<Vec<u8>> {
        state::read_small(&self.root.join(pid.to_string()).join(file), 64 * 1024).ok()
    }
}
