//! `berth agent`, the long-running agent, end to end as root: a real git repository
//! (`file://`, or smart HTTP through `git http-backend` on loopback), the busybox image
//! from a loopback registry, runc and CNI. Each test runs `berth agent --config
//! node.toml` as a child process on short delays (`source.interval = "1s"`,
//! `runtime.resync = "2s"`), waits with polling deadlines, and on drop SIGTERMs the
//! agent and applies an empty tree, so nothing outlives it:
//! - continuous: a pushed commit runs soon after (the time is printed); a change
//!   recreates only the changed container; a deleted spec is removed;
//! - crashes: SIGKILLed at random points of its passes (the seed is printed;
//!   `BERTH_CRASH_SEED` repeats a run) and stopped at named failpoints, while commits
//!   change containers, the agent converges with no duplicate, no needless restart
//!   (shim pids compared) and nothing leaked;
//! - drift: a container killed by hand, and one deleted from the runtime by hand, come
//!   back; a crash-looping one backs off and `berth status` shows it; an operator stop
//!   is respected;
//! - adoption: an agent restarted after SIGTERM and after SIGKILL restarts nothing;
//!   a second agent for the same run directory is refused;
//! - outage: with the Git server stopped, the containers keep running and the status
//!   says the source is unavailable, with the next try; the agent recovers by itself;
//! - the API and the CLI: `status`, `events -f`, `reconcile`, `suspend` (a push is not
//!   applied) and `resume` (it then is), through `berth` and through `curl` on the
//!   socket, whose mode and group are as `agent/API.md` documents; without an agent,
//!   `status` says so and exits 0, and the controls exit 3;
//! - the delays the agent acts on (`source.interval`, `runtime.resync`) are not
//!   called inert in its warnings; a pass that cannot run after a good fetch is not
//!   called a source outage.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use berth_e2e::agentd::{Agent, Leftovers, poll, shim_pid};
use berth_e2e::git::{GitHttpServer, GitRepo, HttpOptions};
use berth_e2e::live::LiveNode;
use berth_e2e::{Run, have_tools};

/// Audit mode: the tests are about the agent, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
/// Where the specs live in the test repositories (`source.path`).
pub(crate) const SPECS: &str = "fleet";
/// How long a pushed commit may take to be applied: a fetch every second, passes of a
/// few containers; generous for a loaded CI machine.
pub(crate) const CONVERGE: Duration = Duration::from_secs(60);
/// The crash-loop backoff's first delay (10 s) and the time to notice and act.
const BACK_AFTER_BACKOFF: Duration = Duration::from_secs(40);

/// A node, its repository, and the agent following it (also the harness of
/// `outlive.rs` and `reboot.rs`). Fields drop in order: the agent is stopped first
/// (SIGTERM), then the server, then the node applies an empty tree.
pub(crate) struct Host {
    pub(crate) agent: Option<Agent>,
    pub(crate) server: Option<GitHttpServer>,
    pub(crate) repo: GitRepo,
    pub(crate) node: LiveNode,
    /// `10.254.N.`: the node's `default` network, its own so its leftovers are its own.
    pub(crate) subnet_prefix: String,
}

impl Host {
    /// A node on subnet `10.254.<net>.0/24` with an empty repository; `None` when a
    /// prerequisite is missing outside CI.
    fn new(net: u8) -> Option<Host> {
        Host::with_runtime(net, "")
    }

    /// [`Host::new`] with more `[runtime]` keys.
    fn with_runtime(net: u8, keys: &str) -> Option<Host> {
        Host::on(&format!("10.254.{net}"), keys)
    }

    /// A node whose `default` network is `<prefix>.0/24` (`10.251.40`), with more
    /// `[runtime]` keys.
    pub(crate) fn on(prefix: &str, keys: &str) -> Option<Host> {
        let node = LiveNode::start(
            POLICY,
            &format!("resync = \"2s\"\ndefault_subnet = \"{prefix}.0/24\"\n{keys}"),
        )?;
        let repo = GitRepo::new()?;
        Some(Host {
            agent: None,
            server: None,
            repo,
            node,
            subnet_prefix: format!("{prefix}."),
        })
    }

    /// [`Host::new`] with `sleepers` (name, seconds) pushed and an agent converged on
    /// them from the `file://` URL: the host and the commit.
    fn converged(net: u8, sleepers: &[(&str, u32)]) -> Option<(Host, String)> {
        let mut h = Host::new(net)?;
        for (name, secs) in sleepers {
            h.sleeper(name, *secs);
        }
        let commit = h.push("the first containers");
        h.follow(&h.repo.file_url());
        h.start();
        h.wait_converged(&commit);
        Some((h, commit))
    }

    /// Follows branch `main` of `url`, checked every second.
    pub(crate) fn follow(&self, url: &str) {
        let mut text = std::fs::read_to_string(&self.node.config).unwrap();
        text.push_str(&format!(
            "\n[source]\nurl = {url:?}\nbranch = \"main\"\npath = \"{SPECS}\"\ninterval = \"1s\"\n"
        ));
        std::fs::write(&self.node.config, text).unwrap();
    }

    /// `fleet/NAME.toml`: a container running `sleep SECS` (a new `secs` is a changed
    /// spec, and shows in the process's command line). `sleep` as PID 1 ignores
    /// SIGTERM: SIGKILL stops it at once.
    pub(crate) fn sleeper(&self, name: &str, secs: u32) {
        self.spec(name, &format!("command = [\"sleep\", \"{secs}\"]\n"));
    }

    /// `fleet/NAME.toml` with `keys` after the image and the user.
    fn spec(&self, name: &str, keys: &str) {
        self.repo.write(
            &format!("{SPECS}/{name}.toml"),
            &format!(
                "[container.{name}]\nimage = \"{}\"\nuser = \"10001:10001\"\n{keys}\
                 stop_signal = \"SIGKILL\"\n",
                self.node.image
            ),
        );
    }

    fn unspec(&self, name: &str) {
        self.repo.remove(&format!("{SPECS}/{name}.toml"));
    }

    /// Commits and pushes; the commit.
    pub(crate) fn push(&self, message: &str) -> String {
        let c = self.repo.commit(message);
        self.repo.push();
        c
    }

    /// Starts an agent (the previous one must have ended).
    pub(crate) fn start(&mut self) -> u32 {
        self.start_at(None)
    }

    fn start_at(&mut self, failpoint: Option<&str>) -> u32 {
        self.start_with(|node| Agent::start(node, failpoint))
    }

    /// Starts an agent inside the cgroups whose `cgroup.procs` files are given.
    pub(crate) fn start_in(&mut self, cgroups: &[PathBuf]) -> u32 {
        self.start_with(|node| Agent::start_in_cgroups(node, cgroups))
    }

    fn start_with(&mut self, start: impl FnOnce(&LiveNode) -> Agent) -> u32 {
        assert!(
            self.agent.as_mut().is_none_or(|a| !a.running()),
            "an agent still runs"
        );
        let agent = start(&self.node);
        let pid = agent.pid();
        self.agent = Some(agent);
        pid
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("no agent started")
    }

    /// Runs `berth --config <node> ARGS`.
    fn berth(&self, args: &[&str]) -> Run {
        self.node.berth(args)
    }

    /// `berth ps -a --format json`, by name.
    pub(crate) fn ps(&self) -> BTreeMap<String, serde_json::Value> {
        self.node
            .ps()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    }

    /// The container's main pid, when it runs.
    fn pid(&self, name: &str) -> Option<u32> {
        let c = self.ps().remove(name)?;
        (c["state"] == "running")
            .then(|| c["pid"].as_u64())
            .flatten()
            .map(|p| p as u32)
    }

    /// The `N` of the `sleep N` the container runs now, when it runs.
    fn sleeps(&self, name: &str) -> Option<u32> {
        let pid = self.pid(name)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.first().map(String::as_str) == Some("sleep"))
            .then(|| args.get(1)?.parse().ok())
            .flatten()
    }

    /// Every container's shim pid, by name.
    fn shims(&self) -> BTreeMap<String, u32> {
        self.ps()
            .into_iter()
            .filter_map(|(name, c)| {
                let pid = shim_pid(&self.node, c["instance"].as_str()?)?;
                Some((name, pid))
            })
            .collect()
    }

    /// `<state>/state/agent.json`.
    pub(crate) fn agent_state(&self) -> serde_json::Value {
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
    pub(crate) fn applied(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.node.state().join("state/applied.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["revision"]["commit"].as_str().map(str::to_string)
    }

    /// Waits until the agent's last pass converged on `commit`, and it is recorded as
    /// applied.
    #[track_caller]
    pub(crate) fn wait_converged(&self, commit: &str) {
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

    /// Waits until agent `pid` finished a converged pass that began after it started.
    #[track_caller]
    fn wait_pass_of(&self, pid: u32) {
        let mine = || self.agent_state()["pid"] == pid;
        let started = self.start_recorded(pid);
        poll(
            &format!("a converged pass of agent {pid}"),
            CONVERGE,
            || {
                (mine()
                    && self.agent_state_mtime().is_some_and(|m| m > started)
                    && self.agent_state()["last_pass"]["result"] == "converged")
                    .then_some(())
            },
            || self.context(),
        );
    }

    /// Waits until agent `pid` recorded its start; when it did.
    #[track_caller]
    fn start_recorded(&self, pid: u32) -> SystemTime {
        poll(
            &format!("agent {pid} to record its start"),
            CONVERGE,
            || {
                (self.agent_state()["pid"] == pid)
                    .then(|| self.agent_state_mtime())
                    .flatten()
            },
            || self.context(),
        )
    }

    /// Waits until agent `pid` finished a pass that began after it started, whatever
    /// its result, and returns that pass's record.
    #[track_caller]
    pub(crate) fn finished_pass_of(&self, pid: u32) -> serde_json::Value {
        let mine = || self.agent_state()["pid"] == pid;
        let started = self.start_recorded(pid);
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

    /// Each running container's (shim pid, init pid).
    pub(crate) fn processes(&self) -> BTreeMap<String, (u32, u32)> {
        self.ps()
            .into_iter()
            .filter(|(_, c)| c["state"] == "running")
            .filter_map(|(name, c)| {
                let shim = shim_pid(&self.node, c["instance"].as_str()?)?;
                Some((name, (shim, c["pid"].as_u64()? as u32)))
            })
            .collect()
    }

    /// The reasons of the events recorded (`state/events.jsonl`), in order.
    pub(crate) fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.node.state().join("state/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    /// What a failure message shows: the agents' output, the containers, the state.
    pub(crate) fn context(&self) -> String {
        let log = self
            .agent
            .as_ref()
            .map(Agent::log)
            .or_else(|| std::fs::read_to_string(self.node.dir.path().join("agent.log")).ok())
            .unwrap_or_default();
        let tail: String = {
            let chars: Vec<char> = log.chars().collect();
            chars[chars.len().saturating_sub(12_000)..].iter().collect()
        };
        let ps = self.berth(&["ps", "-a"]);
        format!(
            "--- agent output (tail)\n{tail}\n--- berth ps -a\n{}{}\n--- agent.json\n{:#}",
            ps.stdout,
            ps.stderr,
            self.agent_state()
        )
    }

    /// `berth status --format json`, which must exit 0.
    fn status(&self) -> serde_json::Value {
        let r = self.berth(&["status", "--format", "json"]);
        assert_eq!(r.code, 0, "berth status:\n{}", show(&r));
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("berth status --format json: {e}:\n{}", r.stdout))
    }

    fn socket(&self) -> PathBuf {
        self.node.run_dir().join("api.sock")
    }

    /// `curl --unix-socket <run>/api.sock http://localhost/v1/PATH`: (HTTP status,
    /// body).
    fn curl(&self, method: &str, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "120",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
            ])
            .arg("--unix-socket")
            .arg(self.socket())
            .arg(format!("http://localhost{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            code.trim().parse().unwrap_or(0),
            body.to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// Commits and pushes `NAME` running `sleep SECS`, and waits until that process
    /// runs: the commit, and the time from the push.
    fn push_until_it_sleeps(&self, name: &str, secs: u32) -> (String, Duration) {
        self.sleeper(name, secs);
        let commit = self.push(&format!("{name}: sleep {secs}"));
        let pushed = Instant::now();
        poll(
            &format!("{name} to run sleep {secs}"),
            CONVERGE,
            || (self.sleeps(name) == Some(secs)).then_some(()),
            || self.context(),
        );
        (commit, pushed.elapsed())
    }

    /// Asserts that for `how_long` the applied revision stays `commit` (a suspended
    /// agent's fetch timer fires twice in that time).
    #[track_caller]
    fn stays_at(&self, commit: &str, how_long: Duration) {
        let end = Instant::now() + how_long;
        while Instant::now() < end {
            assert_eq!(
                self.applied().as_deref(),
                Some(commit),
                "applied while suspended\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn show(r: &Run) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// The condition `kind` of a status.
fn condition(status: &serde_json::Value, kind: &str) -> serde_json::Value {
    status["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no condition {kind} in {status:#}"))
}

#[test]
fn a_pushed_commit_runs_soon_after_only_the_changed_container_is_recreated_and_a_deleted_spec_goes()
{
    let Some((h, _)) = Host::converged(1, &[("web", 1000), ("db", 2000)]) else {
        return;
    };
    // A new container, then a changed one: from the push to the process running;
    // only the changed container is recreated.
    let (c2, new_container) = h.push_until_it_sleeps("api", 3000);
    h.wait_converged(&c2);
    let before = h.shims();
    let (c3, changed) = h.push_until_it_sleeps("web", 1001);
    h.wait_converged(&c3);
    let after = h.shims();
    eprintln!(
        "agent_daemon: push to running: a new container {new_container:?}, a changed one {changed:?} (source.interval 1s)"
    );
    for name in ["db", "api"] {
        assert_eq!(after[name], before[name], "{name} was restarted");
    }
    assert_ne!(after["web"], before["web"], "web was not recreated");
    assert!(
        new_container < Duration::from_secs(10) && changed < Duration::from_secs(10),
        "slow: {new_container:?}, {changed:?}\n{}",
        h.context()
    );

    // A deleted spec: removed.
    h.unspec("db");
    let c4 = h.push("db: gone");
    h.wait_converged(&c4);
    assert_eq!(
        h.ps().keys().collect::<Vec<_>>(),
        ["api", "web"],
        "{}",
        h.context()
    );
    assert_eq!(h.node.runc_ids().len(), 2, "{:?}", h.node.runc_ids());
    let last = h.shims();
    assert_eq!(last["api"], before["api"]);
    assert_eq!(last["web"], after["web"]);
}

/// A small deterministic generator (splitmix64) for the kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `BERTH_CRASH_SEED`, else one from the clock.
fn crash_seed() -> u64 {
    std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// The pids of the pass processes (`agent --pass-worker=PID`) of agent `agent`.
fn pass_processes(agent: u32) -> Vec<u32> {
    let flag = format!("--pass-worker={agent}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == flag.as_bytes()))
        })
        .collect()
}

/// How many times the agent is SIGKILLed at a random point.
const KILLS: u32 = 24;
/// The failpoints the agent is stopped at, each on a commit that replaces `churn`
/// (removal of the old instance, then the new one's bundle, network, create, start).
const FAILPOINTS: [&str; 5] = [
    "mid-removal",
    "after-bundle",
    "after-cni-add",
    "after-create",
    "after-start",
];

#[test]
fn an_agent_killed_at_random_points_and_at_failpoints_converges_with_no_duplicate_restart_or_leak()
{
    // `keep1` and `keep2` never change: their shims must survive everything. `churn`
    // changes with most commits; `extra` comes and goes.
    let sleepers = [("keep1", 100_001), ("keep2", 100_002), ("churn", 5000)];
    let Some((mut h, mut last)) = Host::converged(2, &sleepers) else {
        return;
    };
    let kept = h.shims();

    let seed = crash_seed();
    eprintln!("agent_daemon crash test: seed {seed} (BERTH_CRASH_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let mut generation = 5000;
    let mut extra = false;
    let mut change = |h: &Host, extra_too: bool| {
        generation += 1;
        h.sleeper("churn", generation);
        if extra_too {
            extra = !extra;
            if extra {
                h.sleeper("extra", 7000);
            } else {
                h.unspec("extra");
            }
        }
        (
            h.push(&format!("churn {generation}, extra {extra}")),
            generation,
            extra,
        )
    };
    let mut points = Vec::new();
    h.agent().kill();
    let mut want = (5000, false);
    for round in 0..KILLS {
        if round % 2 == 0 {
            let (c, g, e) = change(&h, round % 6 == 0);
            last = c;
            want = (g, e);
        }
        h.start();
        // A new commit's pass starts with the agent and lasts a few hundred ms: most
        // of its kills land in it; the others anywhere in two seconds of passes.
        let at = Duration::from_millis(rng.below(if round % 2 == 0 { 800 } else { 2000 }));
        std::thread::sleep(at);
        assert!(
            h.agent().running(),
            "the agent ended by itself\n{}",
            h.context()
        );
        let pid = h.agent().pid();
        h.agent().kill();
        // The pass in flight (a process of its own) died with the agent.
        poll(
            "no pass process left of the killed agent",
            Duration::from_secs(10),
            || pass_processes(pid).is_empty().then_some(()),
            || format!("{:?}", pass_processes(pid)),
        );
        // Whether the kill came before the pass recorded the newest commit applied.
        let early = h.applied().as_deref() != Some(last.as_str());
        points.push(format!(
            "{}{}",
            at.as_millis(),
            if early { "*" } else { "" }
        ));
    }
    eprintln!(
        "agent_daemon crash test: SIGKILL after (ms; * before the newest commit was recorded applied) {}",
        points.join(" ")
    );
    for fp in FAILPOINTS {
        let (c, g, e) = change(&h, false);
        last = c;
        want = (g, e);
        // The pass runs in a process of its own: the failpoint ends that process
        // there, the agent records the pass as failed, and is then killed too.
        h.start_at(Some(fp));
        poll(
            &format!(
                "the pass's process to stop at failpoint {fp} (is berth built with --features failpoints?)"
            ),
            CONVERGE,
            || {
                let pass = &h.agent_state()["last_pass"];
                (h.agent
                    .as_ref()
                    .is_some_and(|a| a.log().contains(&format!("failpoint {fp}: exiting")))
                    && pass["result"] == "failed"
                    && pass["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("exited with 137")))
                .then_some(())
            },
            || h.context(),
        );
        h.agent().kill();
    }

    h.start();
    h.wait_converged(&last);
    let (generation, extra) = want;
    let mut names = vec!["churn", "keep1", "keep2"];
    if extra {
        names.insert(1, "extra");
    }
    let ps = h.ps();
    assert_eq!(ps.keys().collect::<Vec<_>>(), names, "{}", h.context());
    assert_eq!(h.sleeps("churn"), Some(generation), "{}", h.context());
    let now = h.shims();
    for name in ["keep1", "keep2"] {
        assert_eq!(
            now[name],
            kept[name],
            "{name} was restarted\n{}",
            h.context()
        );
        assert_eq!(ps[name]["restarts"], 0, "{}", h.context());
        assert_eq!(ps[name]["state"], "running", "{}", h.context());
    }
    // Once each: in the runtime, and on disk.
    let mut ids = h.node.runc_ids();
    ids.sort();
    assert_eq!(ids.len(), names.len(), "duplicates in the runtime: {ids:?}");
    let dirs = std::fs::read_dir(h.node.state().join("instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, names.len(), "instance directories for {ids:?}");

    // Everything removed: nothing left behind.
    h.agent().terminate();
    let leftovers = Leftovers::new(&h.node, &h.subnet_prefix);
    // What is counted is seen while the containers run.
    let running = leftovers.list();
    for kind in [
        "runc container",
        "mount",
        "run/netns",
        "bridge",
        "veth",
        "ip allocation",
    ] {
        assert!(
            running.iter().any(|l| l.starts_with(kind)),
            "no {kind} seen in {running:?}"
        );
    }
    let empty = h.node.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = h.berth(&["apply", &empty.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", show(&r));
    assert_eq!(leftovers.list(), Vec::<String>::new());
}

#[test]
fn drift_is_corrected_a_crash_loop_backs_off_in_the_status_and_an_operator_stop_is_respected() {
    let Some(mut h) = Host::new(3) else {
        return;
    };
    h.sleeper("web", 1000);
    h.sleeper("gone", 1000);
    h.sleeper("held", 1000);
    h.spec(
        "flaky",
        "command = [\"sh\", \"-c\", \"exit 1\"]\nrestart = \"always\"\n",
    );
    let c1 = h.push("web, gone, held, flaky");
    h.follow(&h.repo.file_url());
    h.start();
    let up = |h: &Host| {
        let ps = h.ps();
        ["web", "gone", "held"]
            .iter()
            .all(|n| ps.get(*n).is_some_and(|c| c["state"] == "running"))
            && ps.get("flaky").is_some_and(|c| c["exit_code"] == 1)
    };
    poll(
        "web, gone, held running and flaky exited",
        CONVERGE,
        || up(&h).then_some(()),
        || h.context(),
    );
    // The containers run before the pass that started them ends and records c1.
    poll(
        "c1 recorded as applied",
        CONVERGE,
        || (h.applied().as_deref() == Some(c1.as_str())).then_some(()),
        || h.context(),
    );

    // By hand: web's process killed, gone deleted from the runtime, held stopped.
    let web = h.pid("web").unwrap();
    let gone = h.ps()["gone"]["instance"].as_str().unwrap().to_string();
    let gone_pid = h.pid("gone").unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &web.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new("runc")
        .arg("--root")
        .arg(h.node.run_dir().join("runc"))
        .args(["delete", "-f", &gone])
        .output()
        .unwrap();
    assert!(out.status.success(), "runc delete: {out:?}");
    let r = h.berth(&["stop", "held"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    let by_hand = Instant::now();

    let back = |name: &str, old: u32| h.pid(name).is_some_and(|p| p != old);
    poll(
        "web and gone back",
        BACK_AFTER_BACKOFF,
        || (back("web", web) && back("gone", gone_pid)).then_some(()),
        || h.context(),
    );
    eprintln!(
        "agent_daemon drift: killed and deleted containers back after {:?} (crash-loop backoff 10s)",
        by_hand.elapsed()
    );
    let ps = h.ps();
    assert_eq!(ps["web"]["restarts"], 1, "{}", h.context());
    assert_eq!(ps["gone"]["instance"], gone.as_str(), "{}", h.context());

    // The crash loop: restarted after its backoff, then backing off longer; the
    // status shows it.
    poll(
        "flaky restarted after its backoff",
        BACK_AFTER_BACKOFF,
        || (h.ps()["flaky"]["restarts"].as_u64() >= Some(1)).then_some(()),
        || h.context(),
    );
    let status = poll(
        "berth status and ps to show flaky's backoff",
        CONVERGE,
        || {
            let text = h.berth(&["status"]);
            let ps = h.berth(&["ps", "-a"]);
            let shown = |r: &Run| {
                r.stdout
                    .lines()
                    .any(|l| l.contains("flaky") && l.contains("backoff"))
            };
            let json = h.status();
            let row = json["containers"]
                .as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == "flaky"))
                .cloned()
                .unwrap_or_default();
            (shown(&text) && shown(&ps) && row["backoff"].is_object()).then_some(row)
        },
        || {
            format!(
                "{}\n{}",
                show(&h.berth(&["status"])),
                show(&h.berth(&["ps", "-a"]))
            )
        },
    );
    eprintln!("agent_daemon drift: flaky in status: {status}");
    // Each container's policy findings (audit mode: the specs drop no capability).
    let json = h.status();
    let web = json["findings"]["web"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        web.iter()
            .any(|f| f["rule"] == "drop-all-capabilities" && f["file"] == "web.toml"),
        "{json}"
    );
    let text = h.berth(&["status"]);
    assert!(
        text.stdout.contains("FINDINGS")
            && text
                .stdout
                .lines()
                .any(|l| l.contains("web: error drop-all-capabilities")),
        "{}",
        show(&text)
    );

    // Held stays stopped through many passes.
    assert!(by_hand.elapsed() > Duration::from_secs(6));
    let held = &h.ps()["held"];
    assert_ne!(held["state"], "running", "{}", h.context());
    assert_eq!(held["operator_stopped"], true, "{held}");
}

#[test]
fn an_agent_restarted_after_sigterm_or_sigkill_adopts_the_containers_without_restarting_any() {
    let Some((mut h, _)) = Host::converged(4, &[("web", 1000), ("db", 2000)]) else {
        return;
    };
    let first = h.agent().pid();
    let shims = h.shims();
    let pids = (h.pid("web"), h.pid("db"));
    assert_eq!(shims.len(), 2, "{}", h.context());
    // `berth agent` became berth-agentd (exec: the same pid), and no pass process is
    // left once it idles.
    let exe = std::fs::read_link(format!("/proc/{first}/exe")).unwrap();
    assert!(
        exe.ends_with("berth-agentd"),
        "the agent runs {}",
        exe.display()
    );
    poll(
        "no pass process while the agent idles",
        CONVERGE,
        || pass_processes(first).is_empty().then_some(()),
        || format!("{:?}", pass_processes(first)),
    );

    // One agent per run directory.
    let mut second = Agent::start(&h.node, None);
    let status = second.wait(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second agent ran beside the first\n{}",
        second.log()
    );
    assert!(
        second.log().contains(&format!("(pid {first})")),
        "the refusal does not name the running agent:\n{}",
        second.log()
    );

    // SIGTERM: ends cleanly, the containers keep running.
    let status = h.agent().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());
    assert!(h.agent_state()["stopped_at"].is_string(), "{}", h.context());
    assert_eq!((h.pid("web"), h.pid("db")), pids);
    let pid = h.start();
    h.wait_pass_of(pid);
    assert_eq!(h.shims(), shims, "restarted after SIGTERM\n{}", h.context());

    // SIGKILL: the same.
    h.agent().kill();
    assert_eq!((h.pid("web"), h.pid("db")), pids);
    let pid = h.start();
    h.wait_pass_of(pid);
    assert_eq!(h.shims(), shims, "restarted after SIGKILL\n{}", h.context());
    assert_eq!((h.pid("web"), h.pid("db")), pids);
    for (name, c) in h.ps() {
        assert_eq!(c["restarts"], 0, "{name}: {c}");
    }
}

#[test]
fn with_the_git_server_down_containers_run_the_status_says_so_and_the_agent_recovers_by_itself() {
    let Some(mut h) = Host::new(5) else {
        return;
    };
    let Some(server) = GitHttpServer::start(h.repo.root(), &HttpOptions::default()) else {
        return;
    };
    h.sleeper("web", 1000);
    let c1 = h.push("web");
    h.follow(&server.url("repo.git"));
    let port = server.port();
    h.server = Some(server);
    h.start();
    h.wait_converged(&c1);
    let web = h.pid("web");

    h.server.as_mut().unwrap().stop();
    let down = poll(
        "the status to say the source is unavailable",
        CONVERGE,
        || {
            let s = h.status();
            (condition(&s, "SourceUnavailable")["status"] == true).then_some(s)
        },
        || h.context(),
    );
    let c = condition(&down, "SourceUnavailable");
    assert!(
        c["message"].as_str().unwrap().contains("next try at"),
        "{down:#}"
    );
    assert!(down["last_fetch"]["error"].is_string(), "{down:#}");
    assert!(down["last_fetch"]["next_at"].is_string(), "{down:#}");
    let text = h.berth(&["status"]);
    assert_eq!(text.code, 0, "{}", show(&text));
    assert!(
        text.stdout.contains("SourceUnavailable")
            || text.stdout.to_lowercase().contains("source unavailable"),
        "{}",
        show(&text)
    );
    assert_eq!(h.pid("web"), web, "web was restarted\n{}", h.context());

    // A commit pushed meanwhile; then the server comes back on its port.
    h.sleeper("web", 1001);
    let c2 = h.push("web: sleep longer");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(h.applied().as_deref(), Some(c1.as_str()));
    let opts = HttpOptions {
        port,
        ..HttpOptions::default()
    };
    h.server = GitHttpServer::start(h.repo.root(), &opts);
    h.wait_converged(&c2);
    assert_eq!(h.sleeps("web"), Some(1001), "{}", h.context());
    let s = h.status();
    assert_eq!(condition(&s, "SourceUnavailable")["status"], false, "{s:#}");
    assert_eq!(condition(&s, "Ready")["status"], true, "{s:#}");
    // The outage and the recovery, each reported once.
    let events = std::fs::read_to_string(h.node.state().join("state/events.jsonl")).unwrap();
    for reason in ["\"SourceUnavailable\"", "\"SourceAvailable\""] {
        assert_eq!(events.matches(reason).count(), 1, "{reason}:\n{events}");
    }
}

/// A child process whose stdout lines are gathered as they come.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(mut cmd: Command) -> Follower {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Follower { child, lines }
    }

    /// Waits until a line after the first `skip` contains `what`.
    #[track_caller]
    fn wait_for(&self, what: &str, skip: usize) {
        poll(
            &format!("a line with {what}"),
            Duration::from_secs(20),
            || {
                let lines = self.lines.lock().unwrap();
                lines[skip.min(lines.len())..]
                    .iter()
                    .any(|l| l.contains(what))
                    .then_some(())
            },
            || self.lines.lock().unwrap().join("\n"),
        );
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn status_events_reconcile_suspend_and_resume_work_through_the_cli_and_the_socket() {
    if !have_tools(&["curl", "getent"]) {
        return;
    }
    let Some((mut h, c1)) = Host::converged(6, &[("web", 1000)]) else {
        return;
    };
    poll(
        "the API socket",
        CONVERGE,
        || h.socket().exists().then_some(()),
        || h.context(),
    );

    // The socket: 0660 root:berth when the group exists, else 0600 root:root.
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(h.socket()).unwrap();
        let group = Command::new("getent")
            .args(["group", "berth"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&group.stdout).into_owned();
        let gid: Option<u32> = line.split(':').nth(2).and_then(|g| g.trim().parse().ok());
        assert_eq!(m.uid(), 0);
        match gid {
            Some(gid) => {
                assert_eq!(m.permissions().mode() & 0o777, 0o660);
                assert_eq!(m.gid(), gid);
            }
            None => assert_eq!(m.permissions().mode() & 0o777, 0o600),
        }
    }

    // status: the revision, the conditions, the container.
    let r = h.berth(&["status"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    assert!(r.stdout.contains(&c1[..12]), "{}", show(&r));
    assert!(r.stdout.contains("web"), "{}", show(&r));
    let s = h.status();
    assert_eq!(s["agent"], "running", "{s:#}");
    assert_eq!(s["revision"]["commit"], c1.as_str(), "{s:#}");
    assert_eq!(condition(&s, "Ready")["status"], true, "{s:#}");
    assert_eq!(s["suspended"], false, "{s:#}");
    let (code, body) = h.curl("GET", "/v1/status");
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["revision"]["commit"], c1.as_str(), "{api:#}");
    let (code, body) = h.curl("GET", "/v1/containers");
    assert!(code == 200 && body.contains("\"web\""), "{code} {body}");
    let (code, body) = h.curl("GET", "/v1/containers/web");
    assert!(code == 200 && body.contains("\"web\""), "{code} {body}");
    let (code, body) = h.curl("GET", "/v1/containers/nosuch");
    assert_eq!(code, 404, "{body}");
    let (code, body) = h.curl("GET", "/v1/plan");
    assert_eq!(code, 200, "{body}");

    // Events: followed by the CLI and by curl, each sees what happens next.
    let mut cli = h.node.command();
    cli.args(["events", "-f"]);
    let events = Follower::start(cli);
    let mut raw = Command::new("curl");
    raw.args(["-sSN", "--unix-socket"])
        .arg(h.socket())
        .arg("http://localhost/v1/events?follow=true");
    let stream = Follower::start(raw);
    // Both are subscribed once the history (the agent's start at least) came.
    events.wait_for("Started", 0);
    stream.wait_for("Started", 0);
    let seen = (events.count(), stream.count());

    // reconcile: waits for the pass; converged.
    let r = h.berth(&["reconcile"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    let (code, body) = h.curl("POST", "/v1/reconcile");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["converged"], true, "{v:#}");

    // suspend (CLI): a push is not applied; resume: it is.
    let r = h.berth(&["suspend"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    events.wait_for("Suspended", seen.0);
    let s = h.status();
    assert_eq!(s["suspended"], true, "{s:#}");
    assert_eq!(condition(&s, "Suspended")["status"], true, "{s:#}");
    let r = h.berth(&["reconcile"]);
    assert_eq!(r.code, 3, "reconcile while suspended: {}", show(&r));
    assert!(r.stderr.contains("suspended"), "{}", show(&r));
    h.sleeper("web", 1001);
    let c2 = h.push("web 1001");
    h.stays_at(&c1, Duration::from_secs(3));
    let r = h.berth(&["resume"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    h.wait_converged(&c2);
    events.wait_for("Resumed", seen.0);

    // The same through the socket.
    let (code, body) = h.curl("POST", "/v1/suspend");
    assert!((200..300).contains(&code), "{code} {body}");
    stream.wait_for("Suspended", seen.1);
    let (_, body) = h.curl("GET", "/v1/status");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["suspended"], true, "{api:#}");
    h.sleeper("web", 1002);
    let c3 = h.push("web 1002");
    h.stays_at(&c2, Duration::from_secs(3));
    let (code, body) = h.curl("POST", "/v1/resume");
    assert!((200..300).contains(&code), "{code} {body}");
    h.wait_converged(&c3);
    assert_eq!(h.sleeps("web"), Some(1002), "{}", h.context());
    stream.wait_for("Resumed", seen.1);

    // --format json everywhere.
    for args in [
        &["reconcile", "--format", "json"][..],
        &["events", "--format", "json"],
        &["events", "--since", "1h", "--format", "json"],
    ] {
        let r = h.berth(args);
        assert_eq!(r.code, 0, "{args:?}: {}", show(&r));
        let first = r.stdout.trim_start().chars().next();
        assert!(matches!(first, Some('{' | '[')), "{args:?}: {}", show(&r));
    }

    // The agent stops: `berth events -f` ends with it, exit 0.
    h.agent().terminate();
    let mut events = events;
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        if let Some(status) = events.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "berth events -f outlived the agent:\n{}",
            events.lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(done.success(), "berth events -f: {done:?}");
}

#[test]
fn with_no_agent_status_says_not_running_and_the_controls_exit_3() {
    let Some(h) = Host::new(7) else {
        return;
    };
    h.follow(&h.repo.file_url());
    let r = h.berth(&["status"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    assert!(r.stdout.contains("agent: not running"), "{}", show(&r));
    assert_eq!(h.status()["agent"], "not running");
    for control in ["reconcile", "suspend", "resume"] {
        let r = h.berth(&[control]);
        assert_eq!(r.code, 3, "{control}: {}", show(&r));
        assert!(
            r.stderr.contains("agent"),
            "{control} does not say why:\n{}",
            show(&r)
        );
    }
}

#[test]
fn the_agent_does_not_call_the_delays_it_acts_on_inert() {
    let Some(mut h) = Host::new(8) else {
        return;
    };
    h.follow(&h.repo.file_url());
    let pid = h.start();
    poll(
        "the agent to record its start",
        CONVERGE,
        || (h.agent_state()["pid"] == pid).then_some(()),
        || h.context(),
    );
    let log = h.agent().log();
    for key in ["source.interval", "runtime.resync"] {
        assert!(
            !log.lines()
                .any(|l| l.contains(&format!("`{key}` has no effect"))),
            "the agent says {key} has no effect:\n{log}"
        );
    }
}

/// A pass that cannot run (here: no shim where `runtime.shim_path` says) after a good
/// fetch is a degraded node, not a source outage.
#[test]
fn a_pass_that_cannot_run_after_a_good_fetch_is_not_called_a_source_outage() {
    let Some(mut h) = Host::with_runtime(9, "shim_path = \"/nonexistent/berth-shim\"\n") else {
        return;
    };
    h.sleeper("web", 1000);
    h.push("web");
    h.follow(&h.repo.file_url());
    h.start();
    let s = poll(
        "a failed pass",
        CONVERGE,
        || {
            let s = h.status();
            (s["last_pass"]["result"] == "failed").then_some(s)
        },
        || h.context(),
    );
    assert_eq!(condition(&s, "Degraded")["status"], true, "{s:#}");
    assert_eq!(condition(&s, "SourceUnavailable")["status"], false, "{s:#}");
    assert!(s["last_fetch"]["error"].is_null(), "{s:#}");
    let events = std::fs::read_to_string(h.node.state().join("state/events.jsonl")).unwrap();
    assert!(!events.contains("\"SourceUnavailable\""), "{events}");
}

#[test]
fn the_configured_crash_loop_backoff_is_the_one_applied_and_shown() {
    // 3 s doubling to 12 s (the default is 10 s doubling to 5 min).
    let Some(mut h) = Host::with_runtime(
        10,
        "restart_backoff = \"3s\"\nrestart_backoff_max = \"12s\"\n",
    ) else {
        return;
    };
    h.spec(
        "flaky",
        "command = [\"sh\", \"-c\", \"exit 1\"]\nrestart = \"always\"\n",
    );
    h.push("flaky");
    h.follow(&h.repo.file_url());
    h.start();
    // Restarted twice within what the default's first delay alone would take.
    let started = Instant::now();
    poll(
        "flaky restarted twice",
        CONVERGE,
        || {
            let ps = h.ps();
            (ps.get("flaky")?["restarts"].as_u64() >= Some(2)).then_some(())
        },
        || h.context(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "two restarts took {:?}\n{}",
        started.elapsed(),
        h.context()
    );
    // ps, status and the API show the configured delays.
    let seen = poll(
        "a backoff shown by berth ps --format json",
        CONVERGE,
        || {
            let out = h.berth(&["ps", "-a", "--format", "json"]);
            let rows: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            rows.as_array()?
                .iter()
                .find(|r| r["name"] == "flaky")
                .and_then(|r| r["backoff"]["delay_seconds"].as_u64())
        },
        || h.context(),
    );
    assert!([3, 6, 12].contains(&seen), "ps backoff {seen}s");
    let api = poll(
        "a backoff in GET /v1/containers/flaky",
        CONVERGE,
        || h.status()["containers"][0]["backoff"]["delay_seconds"].as_u64(),
        || h.context(),
    );
    assert!([3, 6, 12].contains(&api), "API backoff {api}s");
}

#[test]
fn a_node_configuration_changed_under_a_running_agent_is_refused_by_its_passes_with_why() {
    let Some((mut h, _)) = Host::converged(11, &[("web", 1000)]) else {
        return;
    };
    let web = h.pid("web");
    // Passes keep to the configuration the agent checked: a change (here a harmless
    // one) is refused, with why and what to do, and nothing running is touched.
    let mut text = std::fs::read_to_string(&h.node.config).unwrap();
    text.push_str("# edited while the agent runs\n");
    std::fs::write(&h.node.config, text).unwrap();
    let r = h.berth(&["reconcile"]);
    assert_eq!(r.code, 3, "{}", show(&r));
    assert!(
        r.stderr.contains("changed since the agent started")
            && r.stderr.contains("restart the agent"),
        "{}",
        show(&r)
    );
    let status = h.status();
    assert_eq!(status["last_pass"]["result"], "failed", "{status}");
    assert_eq!(h.pid("web"), web, "{}", h.context());
    // A restarted agent takes the new configuration.
    h.agent().terminate();
    h.start();
    let r = poll(
        "a converged reconcile after the restart",
        CONVERGE,
        || {
            let r = h.berth(&["reconcile"]);
            (r.code == 0).then_some(r)
        },
        || h.context(),
    );
    assert!(r.stdout.starts_with("converged"), "{}", show(&r));
}
