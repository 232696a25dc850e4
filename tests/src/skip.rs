//! The one test-skip rule of the workspace: when a test's prerequisite (root, a
//! program, a fixture, a kernel feature) is missing, under `CI=true` the test fails,
//! panicking with what is missing (a CI machine that lacks a tool must not pass by
//! skipping); anywhere else it prints `skipping <test>: <why>` on stderr and returns.
//!
//! Three crates apply it: this one (the end-to-end harness), the agent's unit tests
//! (`agent/src/testing.rs`) and the shim's tests (`agent/shim/tests`). Neither of the
//! other two can depend on this crate, so they compile this same file with `#[path]`:
//! it uses `std` alone.
//!
//! [`judge`] is the decision itself, a pure function of whether CI is on, so it is
//! tested without touching the process environment, which parallel tests share.

/// What a test does about a missing prerequisite.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Under `CI=true`: fail, with this message.
    Fail(String),
    /// Elsewhere: print this line and return.
    Skip(String),
}

/// The rule: a missing prerequisite fails under CI and skips elsewhere.
pub fn judge(in_ci: bool, test: &str, why: &str) -> Verdict {
    if in_ci {
        Verdict::Fail(format!("{test}: missing prerequisite under CI=true: {why}"))
    } else {
        Verdict::Skip(format!("skipping {test}: {why}"))
    }
}

/// True when running under CI (`CI=true`), where a missing prerequisite must fail.
pub fn in_ci() -> bool {
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
/// [`missing`] with the environment's answer; tests of a check pass `true`.
#[track_caller]
pub fn report(in_ci: bool, why: &str) -> bool {
    match judge(in_ci, &current_test(), why) {
        Verdict::Fail(msg) => panic!("{msg}"),
        Verdict::Skip(line) => eprintln!("{line}"),
    }
    false
}

/// Reports the missing prerequisite `why`: panics under `CI=true`, else prints
/// `skipping <test>: <why>`. Returns `false`, so a check reads
/// `ok || missing("…")` and a test `if !check() { return; }`.
#[track_caller]
pub fn missing(why: &str) -> bool {
    report(in_ci(), why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A program that cannot exist.
    const NO_SUCH_TOOL: &str = "berth-no-such-tool";

    fn on_path(name: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    }

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
        assert!(!on_path(NO_SUCH_TOOL));
        report(true, &format!("`{NO_SUCH_TOOL}` on PATH"));
    }

    #[test]
    fn outside_ci_a_tool_that_cannot_exist_skips_naming_the_test() {
        assert!(!on_path(NO_SUCH_TOOL));
        assert!(!report(false, &format!("`{NO_SUCH_TOOL}` on PATH")));
        let Verdict::Skip(line) = judge(false, &current_test(), "x") else {
            panic!("not a skip");
        };
        assert!(line.contains("skips_naming_the_test"), "{line}");
    }
}
