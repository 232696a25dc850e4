//! Containers outlive the agent, as root: the agent runs in a cgroup of its own in
//! every mounted hierarchy (each v1 controller, `name=systemd`, the unified one), as
//! systemd places a service. Its shims leave those cgroups for `/berth/shims` before
//! the runtime's create; then every process of the agent's cgroups is killed, as
//! `KillMode=control-group` does on `systemctl restart` or after a crash. Every shim
//! and container survives, and the agent started again in the same cgroups adopts them
//! without a restart.
//!
//! The node, its repository and the agent are `agent_daemon.rs`'s [`Host`]; the
//! cgroups here serve `reboot.rs` too. Subnets 10.251.40.0/24–10.251.43.0/24.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::agent_daemon::Host;

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
    let Some(mut h) = Host::on("10.251.40", "") else {
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
    let first = h.start_in(&cgroups.procs_files());
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
    let second = h.start_in(&cgroups.procs_files());
    let pass = h.finished_pass_of(second);
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
