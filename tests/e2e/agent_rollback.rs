//! Rollback under the agent (issue #14): a pushed commit whose update of `web` fails
//! (its process exits at once) is rolled back to the instance it replaced while the
//! commit's other container is updated; the agent does not try the failed revision
//! again on its own, however often it passes (resync every 2 s here); `berth status`
//! and a `RolledBack` event say so with the revision and the reason; `berth reconcile`
//! tries again; a new commit that fixes it is applied. Real git, registry, runc.

use std::time::Duration;

use berth_e2e::agentd::{Agent, poll, sleeping};
use berth_e2e::git::GitRepo;
use berth_e2e::live::LiveNode;

const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
const FIRST: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_secs(30);
/// Numbers no other test's `sleep` runs, to find the processes in `/proc`.
const WEB: u32 = 2_530_000;
const OTHER: u32 = 2_540_000;

fn write(repo: &GitRepo, node: &LiveNode, web: &str, other: u32) {
    repo.write(
        "fleet/app.toml",
        &format!(
            "[container.web]\nimage = \"{image}\"\nuser = \"10001:10001\"\nnetwork_mode = \"none\"\n\
             command = {web}\nupdate_timeout = \"5s\"\nstop_signal = \"SIGKILL\"\n\
             [container.other]\nimage = \"{image}\"\nuser = \"10001:10001\"\nnetwork_mode = \"none\"\n\
             command = [\"sleep\", \"{other}\"]\nstop_signal = \"SIGKILL\"\n",
            image = node.image
        ),
    );
}

fn sleep_cmd(secs: u32) -> String {
    format!("[\"sleep\", \"{secs}\"]")
}

fn rolled_back_events(node: &LiveNode) -> Vec<serde_json::Value> {
    let r = node.berth(&["events", "--format", "json"]);
    assert_eq!(r.code, 0, "berth events: {}{}", r.stdout, r.stderr);
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .flat_map(|v| match v {
            serde_json::Value::Array(a) => a,
            v => vec![v],
        })
        .filter(|e| e["reason"] == "RolledBack")
        .collect()
}

#[test]
fn a_failed_update_is_rolled_back_not_retried_in_a_loop_and_a_fix_is_applied() {
    let Some(node) = LiveNode::start(POLICY, "resync = \"2s\"\n") else {
        return;
    };
    let Some(repo) = GitRepo::new() else {
        return;
    };
    write(&repo, &node, &sleep_cmd(WEB), OTHER);
    repo.commit("web and other");
    repo.push();
    let mut text = std::fs::read_to_string(&node.config).unwrap();
    text.push_str(&format!(
        "\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"fleet\"\ninterval = \"5m\"\n\
         retry_backoff = \"1s\"\n",
        repo.file_url()
    ));
    std::fs::write(&node.config, text).unwrap();
    let agent = Agent::start(&node, None);
    let context = || agent.log();
    poll(
        "web and other to run",
        FIRST,
        || (sleeping(WEB) && sleeping(OTHER)).then_some(()),
        context,
    );
    let good = node.instance("web").unwrap();

    // The broken update, with a good one of other.
    write(&repo, &node, "[\"sh\", \"-c\", \"exit 3\"]", OTHER + 1);
    let bad_commit = repo.commit("web: broken");
    repo.push();
    poll(
        "the rollback",
        SOON,
        || (!rolled_back_events(&node).is_empty()).then_some(()),
        context,
    );
    let events = rolled_back_events(&node);
    let e = &events[0];
    assert_eq!(e["container"], "web", "{e}");
    assert_eq!(e["revision"].as_str(), Some(bad_commit.as_str()), "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("exited with 3") && msg.contains(&format!("rolled back to {good}")),
        "{e}"
    );
    poll(
        "the good web and the new other to run",
        SOON,
        || (sleeping(WEB) && sleeping(OTHER + 1)).then_some(()),
        context,
    );
    assert_eq!(node.instance("web").unwrap(), good);
    let status = node.berth(&["status"]);
    assert!(
        status.stdout.contains("rolled back") && status.stdout.contains("exited with 3"),
        "{}{}",
        status.stdout,
        status.stderr
    );

    // Passes go on (every 2 s), the failed revision is not tried again.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(rolled_back_events(&node).len(), 1, "{}", agent.log());
    assert_eq!(node.instance("web").unwrap(), good);
    assert!(sleeping(WEB));

    // `berth reconcile` tries it again (and it fails again).
    let r = node.berth(&["reconcile"]);
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    poll(
        "a second rollback",
        SOON,
        || (rolled_back_events(&node).len() == 2).then_some(()),
        context,
    );
    assert_eq!(node.instance("web").unwrap(), good);

    // A fix is applied.
    write(&repo, &node, &sleep_cmd(WEB + 1), OTHER + 1);
    repo.commit("web: fixed");
    repo.push();
    poll(
        "the fixed web to run",
        SOON,
        || sleeping(WEB + 1).then_some(()),
        context,
    );
    assert_ne!(node.instance("web").unwrap(), good);
    poll(
        "the mark to go",
        SOON,
        || (!node.state().join("containers/web/rollback.json").exists()).then_some(()),
        context,
    );
}
