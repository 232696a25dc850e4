//! Observe mode end to end, as root (issue #20): a node converged by `berth agent` on
//! real containers (runc, CNI on subnet 10.251.110.0/24, the busybox image from a
//! loopback registry, a `file://` repository), then a commit that changes one
//! container, removes one and adds one. `berth agent --observe` (the daemon), then
//! the daemon with `[agent] mode = "observe"` in its configuration, then `berth agent
//! --once --observe`, each run passes on it:
//! - each reports what `apply` would do, with the planner's reasons: `would recreate
//!   web: command changed`, `would remove db: …`, `would create api: new container`,
//!   in the last pass's message (`state/agent.json`, `berth status`, `GET /v1/status`),
//!   in the pass report (`POST /v1/reconcile`, `--once --format json`: `would`), in
//!   the agent's log and in `--once`'s text;
//! - nothing of this test's containers changes: their shim and init pids (with their
//!   start times), their mounts (`/proc/self/mountinfo` under the node's directory),
//!   their bridge and veths (`ip -o link`), their cgroups (each path and its
//!   processes), and the files under the state directory (path, type, size, mtime)
//!   outside the agent's own clone (`source/`) and reports (`state/agent.json`,
//!   `state/events.jsonl`, `state/audit.json`, the agent's lock), and under the run
//!   directory outside its socket and lock — compared before and after. A container
//!   with a health check shows that no probe writes its health file either. No layer
//!   is pulled, and nothing of the registry's answers is stored (the new container
//!   names its image by tag, which the plan resolves): the content store's files are
//!   among those compared.
//!
//! Other tests run in parallel: only what this node owns is compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use berth_e2e::agentd::{Leftovers, STOP_WITHIN, poll, shim_pid};
use berth_e2e::api_get;
use berth_e2e::live::mounts_under;

use crate::agent_daemon::{CONVERGE, Host, SPECS};

/// This test's subnet.
const PREFIX: &str = "10.251.110";
/// The `sleep` numbers of the containers: no other test runs them.
const WEB: u32 = 2_511_001;
const WEB_CHANGED: u32 = 2_511_002;
const DB: u32 = 2_511_003;
const KEEP: u32 = 2_511_004;
const API: u32 = 2_511_005;

/// `fleet/NAME.toml`: `sleep SECS` in the demo image (pinned), with `extra` keys.
fn container(h: &Host, name: &str, secs: u32, extra: &str) {
    container_of(h, name, &h.node.image, secs, extra);
}

/// `fleet/NAME.toml`: `sleep SECS` in `image`, with `extra` keys.
fn container_of(h: &Host, name: &str, image: &str, secs: u32, extra: &str) {
    h.repo.write(
        &format!("{SPECS}/{name}.toml"),
        &format!(
            "[container.{name}]\nimage = \"{image}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n{extra}"
        ),
    );
}

/// `berth agent --observe` (the daemon), its output appended to the node's
/// `agent.log`; SIGTERMed (then SIGKILLed) on drop.
struct Observer {
    child: Child,
}

impl Observer {
    fn start(h: &Host) -> Observer {
        let log = h.node.dir.path().join("agent.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = h
            .node
            .command()
            .args(["agent", "--observe"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start berth agent --observe: {e}"));
        Observer { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM; waits until it ended.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = std::time::Instant::now() + STOP_WITHIN;
        while std::time::Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("berth agent --observe did not end within {STOP_WITHIN:?} of SIGTERM");
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What this node's containers are on the host, as compared before and after.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// Per container: instance, shim pid and its start time, init pid and its.
    processes: BTreeMap<String, String>,
    /// `/proc/self/mountinfo` lines of mounts under the node's directory.
    mounts: Vec<String>,
    /// `ip -o link` lines of the node's bridges and their veths.
    links: Vec<String>,
    /// Per cgroup directory of a container's init: its processes; per shim: its
    /// cgroups (`/proc/PID/cgroup`).
    cgroups: BTreeMap<String, String>,
    /// Per file under the state and run directories (but the agent's own): its type,
    /// size and mtime.
    files: BTreeMap<String, String>,
}

/// A process's start time (`/proc/PID/stat`, field 22): a pid reused would differ.
fn started(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    after
        .split_whitespace()
        .nth(19)
        .unwrap_or("gone")
        .to_string()
}

/// The mount points of every cgroup hierarchy.
fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

/// Files and directories below `root` (relative, `/`-separated), but those `skip`
/// accepts (and what is below them): type, size, mtime. Mount points are not entered.
fn files(root: &Path, skip: &dyn Fn(&str) -> bool, out: &mut BTreeMap<String, String>) {
    fn walk(
        root: &Path,
        dir: &Path,
        dev: u64,
        skip: &dyn Fn(&str) -> bool,
        out: &mut BTreeMap<String, String>,
    ) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if skip(&rel) {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let kind = if m.is_dir() {
                "dir"
            } else if m.file_type().is_symlink() {
                "link"
            } else {
                "file"
            };
            let key = format!("{}/{rel}", root.file_name().unwrap().to_string_lossy());
            out.insert(
                key,
                format!("{kind} mode {:o} size {} mtime {mtime}", m.mode(), m.len()),
            );
            if m.is_dir() && m.dev() == dev {
                walk(root, &path, dev, skip, out);
            }
        }
    }
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(root).map_or(0, |m| m.dev());
    walk(root, root, dev, skip, out);
}

/// The agent's own files under the state directory: its clone, its reports, its lock.
fn agents_own_state(rel: &str) -> bool {
    rel == "source"
        || rel.starts_with("source/")
        || rel == "agent.lock"
        || rel == "state"
        || ["state/agent.json", "state/events.jsonl", "state/audit.json"]
            .iter()
            .any(|f| rel == *f || rel.starts_with(&format!("{f}.")))
}

/// The agent's own files under the run directory: its socket and lock.
fn agents_own_run(rel: &str) -> bool {
    ["api.sock", "agent.lock"].contains(&rel)
}

impl Snapshot {
    fn take(h: &Host) -> Snapshot {
        let mut processes = BTreeMap::new();
        let mut cgroups = BTreeMap::new();
        let hierarchies = cgroup_mounts();
        for (name, c) in h.ps() {
            let instance = c["instance"].as_str().unwrap_or("").to_string();
            let shim = shim_pid(&h.node, &instance).unwrap_or(0);
            let pid = c["pid"].as_u64().unwrap_or(0) as u32;
            processes.insert(
                name.clone(),
                format!(
                    "{instance} {} shim {shim} at {} init {pid} at {}",
                    c["state"],
                    started(shim),
                    started(pid)
                ),
            );
            let of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
            cgroups.insert(
                format!("shim of {name}"),
                of(shim).unwrap_or_else(|e| e.to_string()),
            );
            // The init's cgroups, in every hierarchy, with their processes.
            let mine = of(pid).unwrap_or_default();
            cgroups.insert(format!("init of {name}"), mine.clone());
            for line in mine.lines() {
                let Some(path) = line.splitn(3, ':').nth(2) else {
                    continue;
                };
                for m in &hierarchies {
                    let dir = m.join(path.trim_start_matches('/'));
                    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                        let mut procs: Vec<&str> = procs.lines().collect();
                        procs.sort_unstable();
                        cgroups.insert(dir.display().to_string(), procs.join(" "));
                    }
                }
            }
        }
        let mounts_here: Vec<String> = mounts_under(h.node.dir.path());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<String> = mountinfo
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|p| mounts_here.iter().any(|m| m == p))
            })
            .map(str::to_string)
            .collect();
        mounts.sort();
        let bridges = Leftovers::bridges(&h.node);
        let out = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap();
        let mut links: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                let name = l.split(':').nth(1).unwrap_or("").trim();
                let name = name.split('@').next().unwrap_or("");
                bridges
                    .iter()
                    .any(|b| name == b.as_str() || l.contains(&format!(" master {b} ")))
            })
            .map(str::to_string)
            .collect();
        links.sort();
        let mut all = BTreeMap::new();
        files(&h.node.state(), &agents_own_state, &mut all);
        files(&h.node.run_dir(), &agents_own_run, &mut all);
        Snapshot {
            processes,
            mounts,
            links,
            cgroups,
            files: all,
        }
    }

    /// A snapshot that a second one, taken a moment later, equals: what the ended
    /// agent's last processes (a probe round) were doing is done.
    fn settled(h: &Host) -> Snapshot {
        let mut last = Snapshot::take(h);
        poll(
            "the host to settle after the enforcing agent ended",
            CONVERGE,
            || {
                std::thread::sleep(Duration::from_millis(300));
                let now = Snapshot::take(h);
                let same = now == last;
                last = now;
                same.then_some(())
            },
            || h.context(),
        );
        last
    }

    /// Asserts that nothing changed since `self`, naming what did.
    #[track_caller]
    fn same_as(&self, now: &Snapshot, what: &str) {
        let diff = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            let mut d = Vec::new();
            for (k, v) in a {
                match b.get(k) {
                    None => d.push(format!("gone: {k} ({v})")),
                    Some(w) if w != v => d.push(format!("changed: {k}: {v} -> {w}")),
                    _ => {}
                }
            }
            for (k, w) in b {
                if !a.contains_key(k) {
                    d.push(format!("new: {k} ({w})"));
                }
            }
            d
        };
        let mut changes = Vec::new();
        changes.extend(diff(&self.processes, &now.processes));
        changes.extend(diff(&self.cgroups, &now.cgroups));
        changes.extend(diff(&self.files, &now.files));
        if self.mounts != now.mounts {
            changes.push(format!("mounts: {:#?} -> {:#?}", self.mounts, now.mounts));
        }
        if self.links != now.links {
            changes.push(format!("links: {:#?} -> {:#?}", self.links, now.links));
        }
        assert!(
            changes.is_empty(),
            "{what} changed the host:\n{}",
            changes.join("\n")
        );
    }
}

/// Waits for a pass of agent `pid` that ended `observed` on `commit`, after a pass
/// that finished at `after` (if any); that pass's record.
#[track_caller]
fn observed_pass(h: &Host, pid: u32, commit: &str, after: Option<&str>) -> serde_json::Value {
    poll(
        &format!("an observed pass of agent {pid} on {commit}"),
        CONVERGE,
        || {
            let s = h.agent_state();
            let p = &s["last_pass"];
            (s["pid"] == pid
                && s["pass_since"].is_null()
                && p["result"] == "observed"
                && p["revision"] == commit
                && after.is_none_or(|a| p["finished_at"] != a))
            .then(|| p.clone())
        },
        || h.context(),
    )
}

/// The words each report must hold: what `apply` would do, with the planner's reason.
const WOULD: [&str; 3] = [
    "would recreate web: command changed",
    "would remove db: no longer in the repository",
    "would create api: new container",
];

#[track_caller]
fn says_would(text: &str, what: &str) {
    for w in WOULD {
        assert!(text.contains(w), "{what} does not say `{w}`:\n{text}");
    }
    assert!(!text.contains("would recreate keep"), "{what}:\n{text}");
}

/// The `would` list of a pass report as `action target: reason` lines.
fn would_of(report: &serde_json::Value) -> String {
    report["would"]
        .as_array()
        .unwrap_or_else(|| panic!("no `would` in {report:#}"))
        .iter()
        .map(|w| {
            format!(
                "would {} {}: {}",
                w["action"].as_str().unwrap_or(""),
                w["target"].as_str().unwrap_or(""),
                w["reason"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_agent_in_observe_mode_reports_what_it_would_do_and_changes_nothing() {
    let Some(mut h) = Host::on(PREFIX, "") else {
        return;
    };
    container(&h, "web", WEB, "");
    container(&h, "db", DB, "");
    // A health check: an enforcing agent probes it every second; an observing one
    // must not (a probe runs in the container and writes its health file).
    container(
        &h,
        "keep",
        KEEP,
        "health = { exec = [\"true\"], interval = \"1s\" }\n",
    );
    let first = h.push("the first containers");
    h.follow(&h.repo.file_url());
    h.start();
    h.wait_converged(&first);
    // The enforcing agent ends; what it made is what must stay.
    h.agent.as_mut().unwrap().terminate();
    let before = Snapshot::settled(&h);
    assert_eq!(before.processes.len(), 3, "{:#?}", before.processes);
    assert!(
        !before.mounts.is_empty() && !before.links.is_empty(),
        "{before:#?}"
    );
    assert!(
        before.files.keys().any(|f| f.ends_with("/health.json")),
        "no health file: {:#?}",
        before.files
    );

    // One container changed, one removed, one added.
    container(&h, "web", WEB_CHANGED, "");
    h.repo.remove(&format!("{SPECS}/db.toml"));
    // By tag: the plan asks the registry what it points to (a read, kept in memory).
    let (name, _) = h.node.image.split_once('@').unwrap();
    container_of(&h, "api", &format!("{name}:v1"), API, "");
    let second = h.push("web changed, db gone, api new");

    // `berth agent --observe`: a pass, and the next (the fetch every second).
    let mut observer = Observer::start(&h);
    let pid = observer.pid();
    let pass = observed_pass(&h, pid, &second, None);
    let finished = pass["finished_at"].as_str().unwrap_or("").to_string();
    let pass = observed_pass(&h, pid, &second, Some(&finished));
    // A third: the observer has run longer than the health check's interval (1s).
    let finished = pass["finished_at"].as_str().unwrap_or("").to_string();
    let pass = observed_pass(&h, pid, &second, Some(&finished));
    says_would(
        pass["message"].as_str().unwrap_or(""),
        "the last pass's message",
    );

    // `berth status`: the pass's message, and the Ready condition says why.
    let status = h.node.berth(&["status", "--format", "json"]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let ready = v["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["reason"], "ObserveOnly", "{v:#}");
    says_would(
        ready["message"].as_str().unwrap_or(""),
        "the Ready condition",
    );
    let text = h.node.berth(&["status"]);
    says_would(&text.stdout, "berth status");

    // The API: the status, and the report of a pass it asks for.
    let socket = h.node.run_dir().join("api.sock");
    let (_, body) = api_get(&socket, "/v1/status");
    says_would(&body, "GET /v1/status");
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "120", "-X", "POST"])
        .arg("--unix-socket")
        .arg(&socket)
        .arg("http://localhost/v1/reconcile")
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "POST /v1/reconcile: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"], "observed", "{v:#}");
    let report = if v["report"]["pass"].is_object() {
        &v["report"]["pass"]
    } else {
        &v["pass"]
    };
    says_would(&would_of(report), "the pass report of POST /v1/reconcile");
    // The metrics count observed passes, and the steps planned, none run.
    let (_, metrics) = api_get(&socket, "/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("berth_reconcile_passes_total{result=\"observed\"")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    observer.stop();
    let log = std::fs::read_to_string(h.node.dir.path().join("agent.log")).unwrap();
    says_would(&log, "the agent's log");
    // No event says something was applied after the observer started.
    let events = h.events();
    let started = events
        .iter()
        .rposition(|e| e == "Started")
        .unwrap_or(events.len());
    let after_start = &events[started..];
    assert!(
        !after_start
            .iter()
            .any(|e| e == "Applied" || e == "NotApplied" || e == "RolledBack"),
        "{after_start:?}"
    );
    // What it would do is one event, told once for the passes that planned the same.
    assert_eq!(
        after_start.iter().filter(|e| *e == "Observed").count(),
        1,
        "{after_start:?}"
    );
    before.same_as(&Snapshot::take(&h), "berth agent --observe");

    // `[agent] mode = "observe"`: the same, from the configuration.
    let mut config = std::fs::read_to_string(&h.node.config).unwrap();
    config.push_str("\n[agent]\nmode = \"observe\"\n");
    std::fs::write(&h.node.config, &config).unwrap();
    let pid = h.start();
    let pass = observed_pass(&h, pid, &second, None);
    says_would(
        pass["message"].as_str().unwrap_or(""),
        "the last pass's message (agent.mode)",
    );
    h.agent.as_mut().unwrap().terminate();
    before.same_as(
        &Snapshot::take(&h),
        "berth agent with agent.mode = \"observe\"",
    );

    // `berth agent --once --observe`: its text, and its JSON report.
    let once = h.node.berth(&["agent", "--once", "--observe"]);
    assert_eq!(once.code, 0, "{}{}", once.stdout, once.stderr);
    says_would(&once.stdout, "berth agent --once --observe");
    assert!(
        once.stdout.contains("observe mode: nothing was executed"),
        "{}",
        once.stdout
    );
    let json = h
        .node
        .berth(&["agent", "--once", "--observe", "--format", "json"]);
    assert_eq!(json.code, 0, "{}{}", json.stdout, json.stderr);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    says_would(
        &would_of(&v["pass"]),
        "berth agent --once --observe --format json",
    );
    assert_eq!(
        v["pass"]["containers"]["web"]["outcome"], "recreated",
        "{v:#}"
    );
    before.same_as(&Snapshot::take(&h), "berth agent --once --observe");

    // `berth plan` of the same revision says the same steps (its text is unchanged by
    // observe mode's words).
    let plan = h.node.berth(&[
        "plan",
        "--format",
        "json",
        &h.repo.work().join(SPECS).to_string_lossy(),
    ]);
    let p: serde_json::Value = serde_json::from_str(&plan.stdout)
        .unwrap_or_else(|e| panic!("berth plan: {e}: {}{}", plan.stdout, plan.stderr));
    let steps = |v: &serde_json::Value| {
        v["steps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| format!("{} {}", s["action"], s["reason"]))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eq!(steps(&p), steps(&v["pass"]), "berth plan:\n{:#}", p);
}
