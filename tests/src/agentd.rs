//! The long-running `berth agent` as a child process of a test, and what a test reads
//! of the host around it.
//!
//! [`Agent`] runs `berth --config <node config> agent` with its output appended to
//! `<node dir>/agent.log` (every start of the node's agent in one file, each under a
//! header line, so a failure message can show the whole story). It is ended by
//! SIGTERM or SIGKILL (`kill`, the program: the suite links no libc), and on drop by
//! SIGTERM, then SIGKILL if it does not end in time: no agent outlives its test.
//!
//! [`poll`] waits for a condition with a deadline, never a fixed sleep. [`Leftovers`]
//! lists what berth left on the host for a node (runtime containers, mounts,
//! namespaces, instance directories, its bridges and their veths, IP allocations and
//! iptables lines of its subnet): empty once everything is removed.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::live::LiveNode;

/// How long a SIGTERMed agent may take to end: the pass in flight finishes first.
pub const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A running `berth agent`; see the module docs.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Agent {
    /// Starts `berth agent` for `node`, stopped at `failpoint` when given (the
    /// `failpoints` feature: the agent exits 137 there).
    pub fn start(node: &LiveNode, failpoint: Option<&str>) -> Agent {
        let mut cmd = node.command();
        if let Some(f) = failpoint {
            cmd.env("BERTH_FAILPOINT", f);
        }
        cmd.arg("agent");
        let note = failpoint.map_or(String::new(), |f| format!(", failpoint {f}"));
        Agent::spawn(node, cmd, &note)
    }

    /// Starts `berth FLAGS… agent` for `node`: global flags (`--log-format json`).
    pub fn start_with_flags(node: &LiveNode, flags: &[&str]) -> Agent {
        let mut cmd = node.command();
        cmd.args(flags).arg("agent");
        Agent::spawn(node, cmd, &format!(", {}", flags.join(" ")))
    }

    /// Starts `berth agent` for `node` inside the cgroups whose `cgroup.procs` files
    /// are given, as a service manager starts a service in its own: `sh` writes its pid
    /// into each, then execs the agent (the same pid).
    pub fn start_in_cgroups(node: &LiveNode, procs: &[PathBuf]) -> Agent {
        let script = "berth=$1; config=$2; shift 2\n\
                      for f in \"$@\"; do echo $$ > \"$f\" || exit 97; done\n\
                      exec \"$berth\" --config \"$config\" agent";
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(crate::berth_bin())
            .arg(&node.config)
            .args(procs)
            .env("BERTH_SHIM_BIN", crate::shim_bin())
            .env_remove("BERTH_FAILPOINT");
        Agent::spawn(node, cmd, ", in cgroups of its own")
    }

    /// Runs `cmd` (the agent) with its output appended to the node's `agent.log`.
    fn spawn(node: &LiveNode, mut cmd: Command, note: &str) -> Agent {
        let log = node.dir.path().join("agent.log");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = file
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap_or_else(|e| panic!("dup log: {e}")))
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start berth agent: {e}"));
        let pid = child.id();
        let _ = writeln!(file, "=== berth agent, pid {pid}{note}");
        Agent {
            child: Some(child),
            pid,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every agent's output so far for this node.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `KILL`, …) to the agent.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status();
    }

    /// Waits up to `within` for the agent to end; its status, or `None` if it still
    /// runs.
    pub fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the agent still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, and the exit status once it ended (within [`STOP_WITHIN`]).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(STOP_WITHIN).unwrap_or_else(|| {
            panic!(
                "the agent did not end within {STOP_WITHIN:?} of SIGTERM:\n{}",
                self.log()
            )
        })
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        self.signal("KILL");
        if self.wait(Duration::from_secs(10)).is_none() {
            panic!("the agent outlived SIGKILL");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("TERM");
        if self.wait(STOP_WITHIN).is_none() {
            self.signal("KILL");
            let _ = self.wait(Duration::from_secs(10));
        }
    }
}

/// Calls `check` every 50 ms until it gives a value or `within` has passed; then
/// panics, saying `what` was awaited and what `context` says of the situation.
#[track_caller]
pub fn poll<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of an instance's shim (`<state>/instances/<id>/shim.pid`).
pub fn shim_pid(node: &LiveNode, instance: &str) -> Option<u32> {
    let path = node
        .state()
        .join("instances")
        .join(instance)
        .join("shim.pid");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What berth left on the host for one node; see the module docs.
#[derive(Debug)]
pub struct Leftovers<'a> {
    node: &'a LiveNode,
    /// The first octets of the node's subnets (`10.254.1.`).
    subnet_prefix: String,
    /// The node's bridges, known while its networks exist ([`Leftovers::bridges`]).
    bridges: Vec<String>,
}

impl<'a> Leftovers<'a> {
    /// Takes note of the node's bridges now (its networks' configurations are gone
    /// once the last container left them).
    pub fn new(node: &'a LiveNode, subnet_prefix: &str) -> Leftovers<'a> {
        Leftovers {
            node,
            subnet_prefix: subnet_prefix.to_string(),
            bridges: Leftovers::bridges(node),
        }
    }

    /// The bridge of every CNI configuration under `<state>/cni`.
    pub fn bridges(node: &LiveNode) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(node.state().join("cni")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
                v["plugins"]
                    .as_array()?
                    .iter()
                    .find_map(|p| p["bridge"].as_str().map(str::to_string))
            })
            .collect()
    }

    /// Everything found; empty when nothing is left.
    pub fn list(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .node
            .runc_ids()
            .into_iter()
            .map(|id| format!("runc container {id}"))
            .collect();
        found.extend(self.node.mounts().into_iter().map(|m| format!("mount {m}")));
        for sub in ["run/netns", "state/instances"] {
            let entries = std::fs::read_dir(self.node.dir.path().join(sub));
            for e in entries.into_iter().flatten().flatten() {
                found.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
        found.extend(self.veths());
        found.extend(self.allocations());
        found.extend(
            command_lines("iptables-save", &[])
                .into_iter()
                .filter(|l| l.contains(&self.subnet_prefix))
                .map(|l| format!("iptables {l}")),
        );
        found
    }

    /// The node's bridges, and the interfaces whose master is one of them.
    fn veths(&self) -> Vec<String> {
        let mut found = Vec::new();
        for l in command_lines("ip", &["-o", "link", "show"]) {
            let name = l.split(':').nth(1).unwrap_or("").trim().to_string();
            if self.bridges.contains(&name) {
                found.push(format!("bridge {name}"));
            } else if self
                .bridges
                .iter()
                .any(|b| l.contains(&format!(" master {b} ")))
            {
                found.push(format!("veth {name}"));
            }
        }
        found
    }

    /// host-local IPAM files of the node's subnet.
    fn allocations(&self) -> Vec<String> {
        let ipam = self.node.state().join("cni/ipam");
        let mut out = Vec::new();
        for net in std::fs::read_dir(ipam).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.subnet_prefix) {
                    out.push(format!("ip allocation {name}"));
                }
            }
        }
        out
    }
}

/// The lines a program prints (none when it cannot run).
fn command_lines(program: &str, args: &[&str]) -> Vec<String> {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process runs `sleep SECS`, found in `/proc`: tests give each container a
/// number no other test's `sleep` runs, to tell its process apart.
pub fn sleeping(secs: u32) -> bool {
    let want = format!("sleep\0{secs}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
}
