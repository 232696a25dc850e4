//! Test prerequisites of the agent's tests: root, a program, a file, a kernel feature.
//!
//! They follow the workspace's one test-skip rule (`tests/src/skip.rs`, compiled here
//! with `#[path]`, since this binary crate cannot depend on the test harness): under
//! `CI=true` a missing prerequisite fails the test; elsewhere it prints
//! `skipping <test>: <why>` and the test returns. Every check returns `true` when the
//! prerequisite is there, so a test reads `if !testing::have_root() { return; }`.

use std::path::{Path, PathBuf};

use crate::runtime::oci::detect::find_in_path;

#[path = "../../tests/src/skip.rs"]
mod skip;

pub(crate) use skip::missing;

/// `ok`, or [`missing`]`(why)`: for a prerequisite the caller probed itself.
#[track_caller]
pub(crate) fn require(ok: bool, why: &str) -> bool {
    ok || missing(why)
}

/// Whether the effective user is root, without reporting anything.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Root, or [`missing`].
#[track_caller]
pub(crate) fn have_root() -> bool {
    require(is_root(), "root privileges")
}

/// The program `name` where berth itself would find it (`PATH`, then the system
/// directories), or [`missing`] and `None`.
#[track_caller]
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let found = find_in_path(name);
    if found.is_none() {
        missing(&format!("`{name}` on PATH"));
    }
    found
}

/// The file `path` exists, or [`missing`] naming `what` provides it.
#[track_caller]
pub(crate) fn have_file(path: &Path, what: &str) -> bool {
    require(path.is_file(), &format!("{} ({what})", path.display()))
}

/// `/bin/busybox`, the static busybox the runtime tests put in their root filesystems.
pub(crate) const BUSYBOX: &str = "/bin/busybox";

/// [`BUSYBOX`], or [`missing`].
#[track_caller]
pub(crate) fn have_busybox() -> bool {
    have_file(Path::new(BUSYBOX), "Debian package busybox-static")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_cannot_exist_is_not_found() {
        assert!(find_in_path("berth-no-such-tool").is_none());
        assert!(find_in_path("sh").is_some());
    }

    #[test]
    fn a_present_prerequisite_passes() {
        assert!(require(true, "never reported"));
        assert!(have_file(Path::new("/proc/self/status"), "procfs"));
    }

    #[test]
    #[should_panic(expected = "missing prerequisite under CI=true: `berth-no-such-tool` on PATH")]
    fn under_ci_a_missing_program_fails_the_test() {
        // The decision with CI on, without setting `CI` for the other tests.
        let tool = "berth-no-such-tool";
        if find_in_path(tool).is_none() {
            skip::report(true, &format!("`{tool}` on PATH"));
        }
    }
}
