//! Containers outlive the agent, as root: the agent runs in a cgroup of its own in
//! every mounted hierarchy (each v1 controller, `name=systemd`, the unified one), as
//! systemd places a service. Its shims leave those cgroups for `/berth/shims` before
//! the runtime's create; then every process of the agent's cgroups is killed, as
//! `KillMode=control-group` does on `systemctl restart` or after a crash. Every shim
//! and container survives, and the agent started again in the same cgroups adopts them
//! without a restart.
//!
//! The helpers here (a node following a local repository, an agent started through a
//! wrapper, the waits) serve `reboot.rs` too. Subnets 10.251.40.0/24–10.251.43.0/24.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use berth_e2e::agentd::{Agent, poll, shim_pid};
use berth_e2e::git::GitRepo;
use berth_e2e::live::LiveNode;

/// Audit mode: the tests are about the agent's processes, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
/// Where the specs live in the test repositories (`source.path`).
pub const SPECS: &str = "fleet";
/// How long a pass may take to converge on a loaded CI machine.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// A node, its repository, and the agent following it (when started).
pub struct Host {
    pub agent: Option<Agent>,
    pub repo: GitRepo,
    pub node: LiveNode,
}

impl Host {
    /// A node on `10.251.<net>.0/24` with an empty repository; `None` when a
    /// prerequisite is missing outside CI.
    pub fn new(net: u8) -> Option<Host> {
        let node = LiveNode::start(
            POLICY,
            &format!("resync = \"2s\"\ndefault_subnet = \"10.251.{net}.0/24\"\n"),
        )?;
        let repo = GitRepo::new()?;
        Some(Host {
            agent: None,
            repo,
            node,
        })
    }

    /// Follows branch `main` of `url`, checked every second.
    pub fn follow(&self, url: &str) {
        let mut text = std::fs::read_to_string(&self.node.config).unwrap();
        text.push_str(&format!(
            "\n[source]\nurl = {url:?}\nbranch = \"main\"\npath = \"{SPECS}\"\ninterval = \"1s\"\n"
        ));
        std::fs::write(&self.node.config, text).unwrap();
    }

    /// `fleet/NAME.toml`: a container running `sleep SECS`, on the node's network.
    pub fn sleeper(&self, name: &str, secs: u32) {
        self.repo.write(
            &format!("{SPECS}/{name}.toml"),
            &format!(
                "[container.{name}]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
                 command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n",
                self.node.image
            ),
        );
    }

    /// Commits and pushes; the commit.
    pub fn push(&self, message: &str) -> String {
        let c = self.repo.commit(message);
        self.repo.push();
        c
    }

    /// Starts `berth agent`, inside the cgroups whose `cgroup.procs` are given (none:
    /// where the test runs); its pid.
    pub fn start(&mut self, cgroups: &[PathBuf]) -> u32 {
        assert!(
            self.agent.as_mut().is_none_or(|a| !a.running()),
            "an agent still runs"
        );
        let agent = if cgroups.is_empty() {
            Agent::start(&self.node, None)
        } else {
            Agent::start_in_cgroups(&self.node, cgroups)
        };
        let pid = agent.pid();
        self.agent = Some(agent);
        pid
    }

    /// `berth ps -a --format json`, by name.
    pub fn ps(&self) -> BTreeMap<String, serde_json::Value> {
        self.node
            .ps()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    }

    /// Each container's (shim pid, init pid), when it runs.
    pub fn processes(&self) -> BTreeMap<String, (u32, u32)> {
        self.ps()
            .into_iter()
            .filter(|(_, c)| c["state"] == "running")
            .filter_map(|(name, c)| {
                let shim = shim_pid(&self.node, c["instance"].as_str()?)?;
                Some((name, (shim, c["pid"].as_u64()? as u32)))
            })
            .collect()
    }

    /// `<state>/state/agent.json`.
    pub fn agent_state(&self) -> serde_json::Value {
        std::fs::read_to_string(self.node.state().join("state/agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn agent_state_mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(self.node.state().join("state/agent.json"))
            .and_then(|m| m.modified())
            .ok()
    }

    /// The commit of `state/applied.json`.
    pub fn applied(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.node.state().join("state/applied.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["revision"]["commit"].as_str().map(str::to_string)
    }

    /// Waits until the agent's last pass converged on `commit`, recorded as applied.
    #[track_caller]
    pub fn wait_converged(&self, commit: &str) {
        poll(
            &format!("a converged pass on {commit}"),
            CONVERGE,
            || {
                let pass = &self.agent_state()["last_pass"];
                (pass["result"] == "converged"
                    && pass["revision"] == commit
                    && self.applied().as_deref() == Some(commit))
                .then_some(())
            },
            || self.context(),
        );
    }

    /// Waits until agent `pid` finished a pass that began after it started, and
    /// returns that pass's record.
    #[track_caller]
    pub fn wait_pass_of(&self, pid: u32) -> serde_json::Value {
        let mine = || self.agent_state()["pid"] == pid;
        let started = poll(
            &format!("agent {pid} to record its start"),
            CONVERGE,
            || mine().then(|| self.agent_state_mtime()).flatten(),
            || self.context(),
        );
        poll(
            &format!("a finished pass of agent {pid}"),
            CONVERGE,
            || {
                let s = self.agent_state();
                (mine()
                    && self.agent_state_mtime().is_some_and(|m| m > started)
                    && s["pass_since"].is_null()
                    && s["last_pass"]["finished_at"].is_string())
                .then(|| s["last_pass"].clone())
            },
            || self.context(),
        )
    }

    /// The reasons of the events recorded (`state/events.jsonl`), in order.
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.node.state().join("state/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    /// What a failure message shows: the agents' output, the containers, the state.
    pub fn context(&self) -> String {
        let log =
            std::fs::read_to_string(self.node.dir.path().join("agent.log")).unwrap_or_default();
        let chars: Vec<char> = log.chars().collect();
        let tail: String = chars[chars.len().saturating_sub(12_000)..].iter().collect();
        let ps = self.node.berth(&["ps", "-a"]);
        format!(
            "--- agent output (tail)\n{tail}\n--- berth ps -a\n{}{}\n--- agent.json\n{:#}",
            ps.stdout,
            ps.stderr,
            self.agent_state()
        )
    }
}

/// One cgroup per mounted hierarchy, made for a test below the test's own cgroup there
/// (as a service's cgroup sits below its slice); each removed on drop once its
/// processes are gone.
pub struct Cgroups {
    pub dirs: Vec<PathBuf>,
    pub name: String,
}

impl Cgroups {
    /// `berth-e2e-agent-<random>` in every cgroup hierarchy mounted here.
    pub fn new() -> Cgroups {
        let name = format!("berth-e2e-agent-{}", random());
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut devices = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let (fstype, _, opts) = (
                post.next().unwrap_or(""),
                post.next().unwrap_or(""),
                post.next().unwrap_or(""),
            );
            if !matches!(fstype, "cgroup" | "cgroup2") || devices.contains(&pre[2]) {
                continue;
            }
            devices.push(pre[2]);
            let opts: Vec<&str> = opts.split(',').collect();
            // This process's cgroup in that hierarchy (`ID:CONTROLLERS:PATH`).
            let path = own
                .lines()
                .filter_map(|l| {
                    let mut it = l.splitn(3, ':');
                    Some((it.next()?, it.next()?, it.next()?))
                })
                .find(|(_, controllers, _)| match fstype {
                    "cgroup2" => controllers.is_empty(),
                    _ => {
                        !controllers.is_empty() && controllers.split(',').all(|c| opts.contains(&c))
                    }
                })
                .map_or("/", |(_, _, p)| p);
            let parent = Path::new(pre[4]).join(path.trim_start_matches('/'));
            let dir = parent.join(&name);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            // A new v1 cpuset has no CPUs: no process could join it.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if std::fs::read_to_string(dir.join(f)).is_ok_and(|v| v.trim().is_empty()) {
                    let v = std::fs::read_to_string(parent.join(f)).unwrap();
                    std::fs::write(dir.join(f), v.trim()).unwrap();
                }
            }
            dirs.push(dir);
        }
        Cgroups { dirs, name }
    }

    /// Each cgroup's `cgroup.procs`.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Every pid in any of the cgroups.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .procs_files()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process of the cgroups until none is left, as
    /// `KillMode=control-group` does; the pids killed.
    pub fn kill_all(&self) -> Vec<u32> {
        let mut killed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return killed;
            }
            assert!(
                Instant::now() < deadline,
                "processes left in the agent's cgroups: {pids:?}"
            );
            for p in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
                if !killed.contains(&p) {
                    killed.push(p);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `pid`'s `/proc/<pid>/cgroup` names one of these cgroups.
    pub fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .contains(&self.name)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = self.kill_all_quietly();
        for d in &self.dirs {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Cgroups {
    /// [`Cgroups::kill_all`] without asserting (a guard's cleanup).
    fn kill_all_quietly(&self) -> usize {
        let mut n = 0;
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }
}

/// A number unlikely to repeat between test runs.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % 1_000_000_000
}

/// Whether `pid` runs (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn shims_leave_the_agents_cgroups_and_outlive_a_kill_of_all_of_them_and_are_adopted() {
    let Some(mut h) = Host::new(40) else {
        return;
    };
    let cgroups = Cgroups::new();
    assert!(
        cgroups.dirs.len() >= 2,
        "the hierarchies found: {:?}",
        cgroups.dirs
    );
    h.sleeper("web", 4040);
    h.sleeper("db", 4041);
    let commit = h.push("two containers");
    h.follow(&h.repo.file_url());
    let first = h.start(&cgroups.procs_files());
    h.wait_converged(&commit);

    // The agent runs in each of its cgroups; each shim, and each container, in none.
    let placed = std::fs::read_to_string(format!("/proc/{first}/cgroup")).unwrap();
    assert_eq!(
        placed.matches(&cgroups.name).count(),
        cgroups.dirs.len(),
        "the agent is not in its cgroups:\n{placed}"
    );
    let before = h.processes();
    assert_eq!(before.len(), 2, "{}", h.context());
    for (name, (shim, init)) in &before {
        let shim_cgroups = std::fs::read_to_string(format!("/proc/{shim}/cgroup")).unwrap();
        assert!(
            !cgroups.holds(*shim) && !cgroups.holds(*init),
            "{name}: its shim or its container is in the agent's cgroups:\n{shim_cgroups}"
        );
        assert!(
            shim_cgroups.lines().all(|l| l.ends_with("/berth/shims")),
            "{name}: the shim is not in /berth/shims in every hierarchy:\n{shim_cgroups}"
        );
    }

    // KillMode=control-group: every process of the agent's cgroups, until none is left.
    let killed = cgroups.kill_all();
    assert!(killed.contains(&first), "{killed:?}");
    assert!(
        h.agent
            .as_mut()
            .unwrap()
            .wait(Duration::from_secs(10))
            .is_some()
    );
    std::thread::sleep(Duration::from_millis(500));
    for (name, (shim, init)) in &before {
        assert!(
            alive(*shim) && alive(*init),
            "{name}: shim {shim} or container {init} did not survive"
        );
    }
    assert_eq!(h.processes(), before, "{}", h.context());

    // The agent again, in the same cgroups: it adopts them, restarting nothing.
    let applied_events = h.events().iter().filter(|r| *r == "Applied").count();
    let second = h.start(&cgroups.procs_files());
    let pass = h.wait_pass_of(second);
    assert_eq!(pass["result"], "converged", "{}", h.context());
    assert_eq!(h.processes(), before, "restarted\n{}", h.context());
    for (name, c) in h.ps() {
        assert_eq!(c["restarts"], 0, "{name}: {c}");
    }
    // A pass that changed something (a create, a start) records `Applied`.
    assert_eq!(
        h.events().iter().filter(|r| *r == "Applied").count(),
        applied_events,
        "the adopting pass changed something\n{}",
        h.context()
    );
    let status = h.agent.as_mut().unwrap().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());
}
