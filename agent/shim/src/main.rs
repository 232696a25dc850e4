//! `berth-shim`: the per-container parent process once the OCI runtime exits, as
//! containerd's shim and podman's conmon are. It keeps the container's stdout/stderr
//! flowing into a CRI-format log and records the exit status, so a container outlives
//! an agent restart, upgrade or crash ("daemonless containers").
//!
//! It is deliberately small: std and `libc` only, one thread, no tokio, no OpenSSL;
//! the only `unsafe` code is in [`sys`].
//!
//! # Protocol (how the agent uses it)
//!
//! 1. The agent writes the bundle, then runs, and waits for, the *foreground* shim:
//!    `berth-shim --id ID --bundle DIR --log FILE --exit-file FILE --pid-file FILE
//!    [--runtime /usr/bin/runc] [--runtime-root DIR] [--runtime-arg ARG]…
//!    [--log-max-size BYTES] [--log-max-files N] [--shim-pid-file FILE]
//!    [--cgroup-procs FILE]…`.
//! 2. The shim forks, `setsid`s and forks again; the grandchild (the *daemon*) first
//!    writes its pid into each `--cgroup-procs` file (the agent passes the
//!    `cgroup.procs` of `/berth/shims` in every mounted hierarchy: out of the agent's
//!    cgroups, see [`cgroup`]), then becomes a child subreaper, points its own stdio at `/dev/null`, ignores SIGHUP/SIGINT (and
//!    SIGPIPE), and runs `RUNTIME [--root DIR] [ARG…] create --bundle DIR --pid-file FILE ID`
//!    with stdin `/dev/null` and stdout/stderr on two pipes, which the container's
//!    process inherits (no terminal). When `create` exits, the container's init is
//!    re-parented to the daemon.
//! 3. The foreground process waits for the daemon's readiness and exits:
//!    - **0**, printing `{"shim_pid":N,"pid":M}` on stdout: the container is *created*
//!      (runtime state `created`), `pid` is its init (also in `--pid-file`, written by
//!      the runtime) and `shim_pid` the daemon (also in `--shim-pid-file`, if given);
//!      with `"warnings":["…"]` when a cgroup could not be joined (never fatal);
//!    - **1**, printing ``berth-shim: runtime `runc` create failed (exit status: 1): …``
//!      on stderr with the runtime's own error text; nothing was created;
//!    - **2** on a usage error.
//! 4. The agent runs `RUNTIME start ID` itself (or `RUNTIME delete -f ID` to abandon).
//! 5. The daemon writes each line of output to `--log` as
//!    `<RFC 3339 nano UTC> <stdout|stderr> <F|P> <text>`, rotating by size
//!    (`--log-max-size`, `--log-max-files`; see [`log`]).
//! 6. When the init exits, the daemon drains the pipes (at most 2 s), flushes the log
//!    and only then writes `--exit-file` atomically:
//!    `{"exit_code": N, "signal": S|null, "finished_at": "RFC 3339"}` (exit_code is
//!    128+S for a signal). The file's presence means "exited, and the log is complete";
//!    the daemon then exits. The agent detects exits from this file (or by polling
//!    it), never with `kill(pid, 0)`: a dead shim can linger as a zombie.
//!
//! The daemon survives the agent: its own session, no controlling terminal, no
//! descriptor shared with the agent, and (with `--cgroup-procs`) none of its cgroups, so
//! a service manager that kills the agent's whole cgroup (systemd's default
//! `KillMode=control-group`) leaves it alone. To find a shim after an agent restart,
//! read `--shim-pid-file` and check `/proc/PID` is not a zombie. An absent exit file with a dead shim means the
//! shim itself died (OOM-killed, SIGKILL): the agent then asks the runtime for the state.

mod args;
mod cgroup;
mod exit;
mod log;
mod supervise;
mod sys;
mod timefmt;

use std::io::{PipeReader, Read};
use std::process::ExitCode;

use args::Parsed;

fn main() -> ExitCode {
    let opts = match args::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(opts)) => opts,
        Ok(Parsed::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("berth-shim {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("berth-shim: {e}");
            return ExitCode::from(2);
        }
    };
    // Keep no descriptor inherited from the caller beyond stdio.
    sys::close_fds_from(3);
    let (ready_r, ready_w) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return fail(&format!("pipe: {e}")),
    };
    match sys::fork() {
        Err(e) => return fail(&format!("fork: {e}")),
        Ok(sys::Fork::Parent { child }) => {
            drop(ready_w);
            return foreground(ready_r, child);
        }
        Ok(sys::Fork::Child) => drop(ready_r),
    }
    // The intermediate child: a new session, then fork again so the daemon is not a
    // session leader and can never acquire a controlling terminal.
    if sys::setsid().is_err() {
        sys::exit_now(1);
    }
    match sys::fork() {
        Ok(sys::Fork::Child) => {}
        _ => sys::exit_now(0),
    }
    sys::exit_now(supervise::run(&opts, ready_w))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("berth-shim: {message}");
    ExitCode::from(1)
}

/// Waits for the daemon's readiness message and turns it into this process's output.
fn foreground(mut ready: PipeReader, child: i32) -> ExitCode {
    let mut message = String::new();
    let read = ready.read_to_string(&mut message);
    // The intermediate child exits right after its fork.
    let _ = sys::wait_for(child);
    if let Err(e) = read {
        return fail(&format!("reading the shim's readiness: {e}"));
    }
    if let Some(answer) = message.strip_prefix("ok ").and_then(answer) {
        println!("{answer}");
        return ExitCode::SUCCESS;
    }
    if let Some(text) = message.strip_prefix("error ") {
        return fail(text);
    }
    fail("the shim exited before reporting whether the container was created")
}

/// The foreground's JSON answer from the daemon's `ok SHIM_PID PID` line and the
/// `warn TEXT` lines after it; `None` when the first line is not two numbers.
fn answer(rest: &str) -> Option<String> {
    let mut lines = rest.lines();
    let mut it = lines.next()?.split_whitespace();
    let shim: u32 = it.next()?.parse().ok()?;
    let pid: u32 = it.next()?.parse().ok()?;
    let warnings: Vec<String> = lines
        .filter_map(|l| l.strip_prefix("warn "))
        .map(json_string)
        .collect();
    if warnings.is_empty() {
        return Some(format!("{{\"shim_pid\":{shim},\"pid\":{pid}}}"));
    }
    Some(format!(
        "{{\"shim_pid\":{shim},\"pid\":{pid},\"warnings\":[{}]}}",
        warnings.join(",")
    ))
}

/// `text` as a JSON string (no serde in the shim).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_carries_the_warnings_as_json_strings() {
        assert_eq!(
            answer("12 34\n").as_deref(),
            Some(r#"{"shim_pid":12,"pid":34}"#)
        );
        let text = answer("12 34\nwarn cannot join \"a\\b\"\u{1}\nwarn two\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["shim_pid"], 12);
        assert_eq!(v["pid"], 34);
        assert_eq!(
            v["warnings"],
            serde_json::json!(["cannot join \"a\\b\"\u{1}", "two"])
        );
        assert_eq!(answer("x 34\n"), None);
        assert_eq!(answer("12\n"), None);
    }
}
