//! Health checks that act, under `berth agent` (the prober, `reconcile::prober`), end
//! to end as root: a real git repository (`file://`), the busybox image from a
//! loopback registry, runc and CNI. The agent fetches every 5 minutes and resyncs every
//! 10, and retries a pass that did not converge no sooner than that: what happens
//! within a test's minute is the prober's doing.
//! - a container whose exec check starts failing is seen unhealthy between passes
//!   within about `interval × retries`, an `Unhealthy` event says why, and it is
//!   restarted (its restart policy, `always`) and healthy again;
//! - `depends_on` a container with a health check: the dependent is held while the
//!   dependency is unhealthy, and started once the prober sees it healthy.
//!
//! Subnets 10.252.10.0/24 to 10.252.19.0/24 are this file's.

use std::time::{Duration, Instant};

use berth_e2e::agentd::{Agent, poll};
use berth_e2e::git::GitRepo;
use berth_e2e::live::LiveNode;

/// Audit mode: the tests are about health, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
/// Where the specs live in the test repository (`source.path`).
const SPECS: &str = "fleet";
/// How long the first pass may take (an image to pull and unpack, CNI).
const CONVERGE: Duration = Duration::from_secs(60);

/// A node, its repository and the agent following it; the agent stops first (drop
/// order), then the node applies an empty tree.
struct Followed {
    agent: Option<Agent>,
    /// Kept for the agent to follow.
    _repo: GitRepo,
    node: LiveNode,
}

impl Followed {
    /// A node on `10.252.<net>.0/24` whose agent follows a repository with `specs`
    /// (name, keys after the image and the user) and has converged on it; `None` when a
    /// prerequisite is missing outside CI.
    fn converged(net: u8, specs: &[(&str, &str)]) -> Option<Followed> {
        assert!((10..=19).contains(&net), "10.252.10–19 are this file's");
        let node = LiveNode::start(
            POLICY,
            &format!("resync = \"10m\"\ndefault_subnet = \"10.252.{net}.0/24\"\n"),
        )?;
        let repo = GitRepo::new()?;
        for (name, keys) in specs {
            repo.write(
                &format!("{SPECS}/{name}.toml"),
                &format!(
                    "[container.{name}]\nimage = \"{}\"\nuser = \"10001:10001\"\n{keys}\
                     stop_signal = \"SIGKILL\"\n",
                    node.image
                ),
            );
        }
        let commit = repo.commit("containers with health checks");
        repo.push();
        let mut text = std::fs::read_to_string(&node.config).unwrap();
        text.push_str(&format!(
            "\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"{SPECS}\"\n\
             interval = \"5m\"\nretry_backoff = \"1h\"\n",
            repo.file_url()
        ));
        std::fs::write(&node.config, text).unwrap();
        let mut f = Followed {
            agent: None,
            _repo: repo,
            node,
        };
        f.agent = Some(Agent::start(&f.node, None));
        poll(
            &format!("a pass on {commit}"),
            CONVERGE,
            || (f.agent_state()["last_pass"]["revision"] == commit.as_str()).then_some(()),
            || f.context(),
        );
        Some(f)
    }

    /// `<state>/state/agent.json`.
    fn agent_state(&self) -> serde_json::Value {
        std::fs::read_to_string(self.node.state().join("state/agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Container `name`'s row of `berth ps -a --format json`.
    fn row(&self, name: &str) -> Option<serde_json::Value> {
        let ps = self.node.ps();
        ps.as_array()?.iter().find(|c| c["name"] == name).cloned()
    }

    /// The recorded events of `reason` about container `name`.
    fn events(&self, reason: &str, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.node.state().join("state/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["reason"] == reason && e["container"] == name)
            .collect()
    }

    /// What a failure message shows: the agent's output, the containers, the events.
    fn context(&self) -> String {
        let log = self.agent.as_ref().map(Agent::log).unwrap_or_default();
        let tail: String = {
            let chars: Vec<char> = log.chars().collect();
            chars[chars.len().saturating_sub(12_000)..].iter().collect()
        };
        let ps = self.node.berth(&["ps", "-a"]);
        let events = std::fs::read_to_string(self.node.state().join("state/events.jsonl"))
            .unwrap_or_default();
        format!(
            "--- agent output (tail)\n{tail}\n--- berth ps -a\n{}{}\n--- events\n{events}\n--- agent.json\n{:#}",
            ps.stdout,
            ps.stderr,
            self.agent_state()
        )
    }
}

#[test]
fn a_check_that_starts_failing_is_seen_between_passes_and_the_container_restarted() {
    let Some(f) = Followed::converged(
        10,
        &[(
            "web",
            "command = [\"sh\", \"-c\", \"touch /tmp/ok && exec sleep 1000\"]\n\
             health = { exec = [\"cat\", \"/tmp/ok\"], interval = \"1s\", timeout = \"2s\", retries = 2 }\n",
        )],
    ) else {
        return;
    };
    let healthy = |f: &Followed| f.row("web").is_some_and(|w| w["health"] == "healthy");
    poll(
        "web healthy",
        Duration::from_secs(30),
        || healthy(&f).then_some(()),
        || f.context(),
    );
    let before = f.row("web").unwrap();

    // The check starts failing: the prober sees it within about interval × retries,
    // with no pass (the next fetch and resync are minutes away).
    let removed = Instant::now();
    let (code, _, err) = f.node.exec("web", &["rm", "/tmp/ok"]);
    assert_eq!(code, 0, "rm /tmp/ok: {err}");
    let event = poll(
        "an Unhealthy event for web",
        Duration::from_secs(20),
        || f.events("Unhealthy", "web").pop(),
        || f.context(),
    );
    let seen = removed.elapsed();
    eprintln!("web seen unhealthy {seen:?} after its check started failing");
    assert!(seen < Duration::from_secs(10), "{seen:?}\n{}", f.context());
    assert_eq!(event["type"], "Warning", "{event}");
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("web is unhealthy: `cat /tmp/ok` exited with 1"),
        "{event}"
    );

    // Restarted per its restart policy (`always`): a new process, counted, and healthy
    // again (its command makes the file anew).
    let old_pid = before["pid"].as_u64();
    poll(
        "web restarted and healthy again",
        Duration::from_secs(60),
        || {
            let w = f.row("web")?;
            (w["pid"].as_u64() != old_pid
                && w["state"] == "running"
                && w["restarts"].as_u64() > before["restarts"].as_u64()
                && w["health"] == "healthy")
                .then_some(())
        },
        || f.context(),
    );
    poll(
        "a Healthy event for web",
        Duration::from_secs(20),
        || f.events("Healthy", "web").pop(),
        || f.context(),
    );
}

#[test]
fn a_dependent_waits_for_its_dependency_to_be_healthy_and_starts_once_the_prober_sees_it() {
    // db's check fails for its first 8 seconds: the pass that starts it finds it
    // unhealthy (one failure counts, after its first interval) and holds app; its
    // restart policy is `no`, so nothing restarts it. No pass is due for minutes: app
    // starts because the prober saw db become healthy.
    let Some(f) = Followed::converged(
        11,
        &[
            (
                "db",
                "command = [\"sh\", \"-c\", \"sleep 8; touch /tmp/ready; exec sleep 1000\"]\n\
                 restart = \"no\"\n\
                 health = { exec = [\"cat\", \"/tmp/ready\"], interval = \"1s\", timeout = \"1s\", retries = 1 }\n",
            ),
            (
                "app",
                "command = [\"sleep\", \"1000\"]\ndepends_on = [\"db\"]\n",
            ),
        ],
    ) else {
        return;
    };
    // The first pass held app: db was not healthy.
    assert_ne!(
        f.row("app").map(|a| a["state"].clone()),
        Some(serde_json::Value::from("running")),
        "app ran before db was healthy\n{}",
        f.context()
    );
    let db = f.row("db").unwrap_or_default();
    assert_eq!(db["state"], "running", "{}", f.context());

    let app = poll(
        "app running",
        Duration::from_secs(45),
        || {
            let app = f.row("app")?;
            (app["state"] == "running").then_some(app)
        },
        || f.context(),
    );
    let db = f.row("db").unwrap();
    assert_eq!(db["health"], "healthy", "{}", f.context());
    // db was never restarted; app started after db was healthy (8 s after db's start).
    assert_eq!(db["restarts"], 0, "{}", f.context());
    let secs = |v: &serde_json::Value| {
        let t = v["started_at"].as_str().unwrap_or_default().to_string();
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &t, "+%s"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("started_at {t}"))
    };
    assert!(
        secs(&app) >= secs(&db) + 7,
        "app started at {}, db at {}\n{}",
        app["started_at"],
        db["started_at"],
        f.context()
    );
    // The prober said so, and woke the controller.
    assert!(
        !f.events("Healthy", "db").is_empty(),
        "no Healthy event for db\n{}",
        f.context()
    );
    let log = f.agent.as_ref().map(Agent::log).unwrap_or_default();
    assert!(log.contains("health: db is healthy"), "{}", f.context());
}
