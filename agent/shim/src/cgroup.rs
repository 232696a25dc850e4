//! Leaving the caller's cgroups: the daemon writes its pid into each `--cgroup-procs`
//! file before it does anything else, so that the runtime's `create`, and with it the
//! container, never run in the agent's cgroups. A service manager that stops the agent
//! by killing every process of its cgroups (systemd's `KillMode=control-group` or
//! `mixed`, on a restart or a crash) then leaves the shims and the containers alone.
//!
//! A cgroup the shim cannot join (no write access, a hierarchy gone) is a warning for
//! the agent, never an error: a host where cgroups cannot be written still runs
//! containers, only without that protection.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

/// Writes this process's pid into each file; why each one that failed did, one line
/// each.
pub fn join(procs: &[PathBuf]) -> Vec<String> {
    let pid = std::process::id().to_string();
    procs
        .iter()
        .filter_map(|f| {
            // No `create`: a path that is not there is not made a regular file.
            OpenOptions::new()
                .write(true)
                .open(f)
                .and_then(|mut w| w.write_all(pid.as_bytes()))
                .err()
                .map(|e| {
                    let text = format!("cannot join the cgroup of {}: {e}", f.display());
                    text.replace(['\n', '\r'], " ")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_gets_the_pid_and_one_that_cannot_be_written_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.procs"), dir.path().join("b.procs"));
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let missing = dir.path().join("gone/cgroup.procs");
        let warnings = join(&[a.clone(), missing.clone(), b.clone()]);
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), pid);
        assert_eq!(std::fs::read_to_string(&b).unwrap(), pid);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains(&missing.display().to_string()),
            "{warnings:?}"
        );
        assert!(!missing.exists());
        assert!(join(&[]).is_empty());
    }
}
