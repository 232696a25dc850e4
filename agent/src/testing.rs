//! Test prerequisites: the one rule for every test of this crate that needs root, a
//! program, a file or a kernel feature.
//!
//! When a prerequisite is missing: under `CI=true` the test fails, panicking with what
//! is missing (a CI machine that lacks a tool must not pass by skipping); anywhere else
//! it prints `skipping <test>: <why>` on stderr and the caller returns. Every check
//! returns `true` when the prerequisite is there, so a test reads
//! `if !testing::have_root() { return; }`.
//!
//! [`judge`] is the decision itself, a pure function of whether CI is on, so it is
//! tested without touching the process environment (which parallel tests share).
//!
//! The end-to-end crate (`tests/src/lib.rs`) and the shim's tests (`agent/shim/tests`)
//! apply the same rule with their own copies: neither can depend on this binary crate.

use std::path::{Path, PathBuf};

use crate::runtime::oci::detect::find_in_path;

/// What a test does about a missing prerequisite.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Under `CI=true`: fail, with this message.
    Fail(String),
    /// Elsewhere: print this line and return.
    Skip(String),
}

/// The rule: a missing prerequisite fails under CI and skips elsewhere.
pub(crate) fn judge(in_ci: bool, test: &str, why: &str) -> Verdict {
    if in_ci {
        Verdict::Fail(format!("{test}: missing prerequisite under CI=true: {why}"))
    } else {
        Verdict::Skip(format!("skipping {test}: {why}"))
    }
}

/// Whether the tests run under CI (`CI=true`).
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The running test's name: the test harness names each test's thread after it.
fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("this test")
        .to_string()
}

/// Applies [`judge`] with `in_ci` given: panics or prints, and returns `false`.
#[track_caller]
fn report(in_ci: bool, why: &str) -> bool {
    match judge(in_ci, &current_test(), why) {
        Verdict::Fail(msg) => panic!("{msg}"),
        Verdict::Skip(line) => eprintln!("{line}"),
    }
    false
}

/// Reports the missing prerequisite `why`: fails under `CI=true`, else prints
/// `skipping <test>: <why>`. Always returns `false`.
#[track_caller]
pub(crate) fn missing(why: &str) -> bool {
    report(in_ci(), why)
}

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

    const NO_SUCH_TOOL: &str = "berth-no-such-tool";

    #[test]
    fn under_ci_a_missing_prerequisite_fails_and_elsewhere_it_skips() {
        let why = format!("`{NO_SUCH_TOOL}` on PATH");
        assert_eq!(
            judge(true, "t", &why),
            Verdict::Fail(
                "t: missing prerequisite under CI=true: `berth-no-such-tool` on PATH".into()
            )
        );
        assert_eq!(
            judge(false, "t", &why),
            Verdict::Skip("skipping t: `berth-no-such-tool` on PATH".into())
        );
    }

    #[test]
    #[should_panic(expected = "missing prerequisite under CI=true: `berth-no-such-tool` on PATH")]
    fn under_ci_a_tool_that_cannot_exist_fails_the_test() {
        assert!(find_in_path(NO_SUCH_TOOL).is_none());
        report(true, &format!("`{NO_SUCH_TOOL}` on PATH"));
    }

    #[test]
    fn outside_ci_a_tool_that_cannot_exist_skips() {
        assert!(!report(false, &format!("`{NO_SUCH_TOOL}` on PATH")));
    }

    #[test]
    fn the_message_names_the_test() {
        let Verdict::Skip(line) = judge(false, &current_test(), "x") else {
            panic!("not a skip");
        };
        assert!(line.contains("the_message_names_the_test"), "{line}");
    }

    #[test]
    fn a_present_prerequisite_passes() {
        assert!(require(true, "never reported"));
        assert!(have_file(Path::new("/proc/self/status"), "procfs"));
    }
}
