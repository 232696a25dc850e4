//! The local watch end to end, as root (issue #14): `berth agent` follows a `file://`
//! repository while it polls only every 5 minutes (`source.interval = "5m"`, and
//! `runtime.resync` too), and a commit pushed to the repository runs within seconds:
//! fetched because the watch saw the ref move (the agent's log says `local watch:
//! refs/heads/main moved: fetching now`), never because of a poll. Real git, the
//! busybox image from a loopback registry, runc and CNI (subnet 10.252.20.0/24).

use std::time::{Duration, Instant};

use berth_e2e::agentd::{Agent, poll, sleeping};
use berth_e2e::git::GitRepo;
use berth_e2e::live::LiveNode;

/// Audit mode: the test is about the source, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
/// The first convergence: the agent's start, the image pull, the first pass.
const FIRST: Duration = Duration::from_secs(60);
/// How long a pushed commit may take to run: the target is under a second; this is
/// generous for a loaded CI machine and still far below the 5-minute poll.
const SOON: Duration = Duration::from_secs(10);
/// What `sleep` the container runs: a number no other test's container runs, so that
/// the process is told apart in `/proc`.
const SECS: u32 = 2_520_000;

/// `fleet/web.toml`: `sleep SECS` (a new number is a changed spec).
fn web(repo: &GitRepo, node: &LiveNode, secs: u32) {
    repo.write(
        "fleet/web.toml",
        &format!(
            "[container.web]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n",
            node.image
        ),
    );
}

/// Whether the agent's last pass converged on `commit` (`<state>/state/agent.json`).
fn converged_on(node: &LiveNode, commit: &str) -> bool {
    std::fs::read_to_string(node.state().join("state/agent.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|s| {
            s["last_pass"]["result"] == "converged" && s["last_pass"]["revision"] == commit
        })
}

/// A node (resync every 5 minutes) and a repository; none without root or the tools.
fn node_and_repo() -> Option<(LiveNode, GitRepo)> {
    let node = LiveNode::start(
        POLICY,
        "resync = \"5m\"\ndefault_subnet = \"10.252.20.0/24\"\n",
    )?;
    Some((node, GitRepo::new()?))
}

/// The node follows `repo`'s main (its `fleet/`), polling every 5 minutes.
fn follow(node: &LiveNode, repo: &GitRepo) {
    let mut text = std::fs::read_to_string(&node.config).unwrap();
    text.push_str(&format!(
        "\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"fleet\"\ninterval = \"5m\"\n",
        repo.file_url()
    ));
    std::fs::write(&node.config, text).unwrap();
}

#[test]
fn a_commit_to_a_local_repository_runs_within_seconds_with_a_five_minute_poll() {
    let Some((node, repo)) = node_and_repo() else {
        return;
    };
    web(&repo, &node, SECS);
    let mut commit = repo.commit("web");
    repo.push();
    follow(&node, &repo);
    // Declared last, dropped first: SIGTERM before the node's teardown.
    let agent = Agent::start(&node, None);
    let context = || agent.log();
    poll(
        "the first pass",
        FIRST,
        || converged_on(&node, &commit).then_some(()),
        context,
    );
    poll(
        "the agent to watch the repository",
        FIRST,
        || {
            agent
                .log()
                .contains("watching the local repository")
                .then_some(())
        },
        context,
    );

    // Each push runs soon: nothing but the watch can have fetched it (the next poll
    // is minutes away). Each is pushed once the pass of the one before has ended (a
    // pass verifies an update for a while after its start, and a push meanwhile
    // waits for it).
    let mut latencies = Vec::new();
    for n in 1..=3 {
        assert!(sleeping(SECS + n - 1), "{}", agent.log());
        web(&repo, &node, SECS + n);
        commit = repo.commit(&format!("web: sleep {}", SECS + n));
        let pushed = Instant::now();
        repo.push();
        let deadline = pushed + SOON;
        while !sleeping(SECS + n) {
            assert!(
                Instant::now() < deadline,
                "push {n} did not run within {SOON:?} (source.interval 5m):\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        latencies.push(pushed.elapsed());
        poll(
            &format!("a converged pass on push {n}"),
            FIRST,
            || converged_on(&node, &commit).then_some(()),
            context,
        );
    }
    eprintln!(
        "agent_watch: push to running through the local watch: {latencies:?} (source.interval 5m)"
    );
    let log = agent.log();
    let seen = log
        .matches("local watch: refs/heads/main moved: fetching now")
        .count();
    assert!(seen >= 3, "{seen} fetches on the watch's word:\n{log}");
}

/// A repository of another user's (`nobody`) is not watched: the agent runs as root,
/// and what such a user keeps there (a `packed-refs` linked to `/dev/zero`, a FIFO:
/// the unit tests) is not read. The agent says so once, and stops on SIGTERM.
#[test]
fn a_repository_of_another_user_is_not_watched_and_the_agent_stops() {
    let Some((node, repo)) = node_and_repo() else {
        return;
    };
    web(&repo, &node, SECS + 100);
    repo.commit("web");
    repo.push();
    let bare = repo.bare();
    let chowned = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&bare)
        .status()
        .unwrap();
    assert!(chowned.success());
    follow(&node, &repo);
    let mut agent = Agent::start(&node, None);
    let context = || agent.log();
    poll(
        "the agent to refuse to watch the repository",
        FIRST,
        || agent.log().contains("owned by uid 65534").then_some(()),
        context,
    );
    let log = agent.log();
    assert!(!log.contains("watching the local repository"), "{log}");
    assert_eq!(
        log.matches("owned by uid 65534, neither root").count(),
        1,
        "{log}"
    );
    let stopping = Instant::now();
    agent.terminate();
    eprintln!(
        "agent_watch: stopped {:?} after SIGTERM",
        stopping.elapsed()
    );
}
