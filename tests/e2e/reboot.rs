//! A reboot, simulated, as root: an agent follows a local repository with three
//! containers, one of which the operator stopped (`berth stop`). The agent is stopped;
//! then what a reboot leaves is made: every shim and container process of the state
//! directory killed, its overlays, secret tmpfs and network namespaces unmounted, its
//! run directory emptied (`/run` is a tmpfs). The repository is moved away (the Git
//! server is unreachable at boot). The agent started again brings back every container
//! that ran, on the revision it had applied (the same instances, so the same specs),
//! leaves the operator-stopped one stopped, and nothing of the old boot is left: the
//! runtime knows only the new containers, and the mounts, namespaces, veths and IP
//! allocations are theirs alone. Subnet 10.251.41.0/24.
//!
//! A fresh install (no `[source]`) idles, saying so once, in its log and its status,
//! and `--once` still exits 3; a node whose configuration lost its source still brings
//! back, after a reboot, what its last applied revision runs. Subnet 10.251.42.0/24.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_e2e::agentd::{Leftovers, poll};
use berth_e2e::live::mounts_under;

use crate::agent_daemon::{CONVERGE, Host};
use crate::outlive::alive;

/// Kills `pid` with SIGKILL.
fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// The pid in `<instance dir>/<file>`, if any.
fn pid_in(dir: &Path, file: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What a reboot leaves of a node: no process of its containers, none of its mounts,
/// an empty run directory.
fn reboot(h: &Host, subnet_prefix: &str) {
    let instances = h.node.state().join("instances");
    let mut pids = Vec::new();
    for e in std::fs::read_dir(&instances).unwrap().flatten() {
        pids.extend(pid_in(&e.path(), "pid"));
        pids.extend(pid_in(&e.path(), "shim.pid"));
    }
    for p in &pids {
        kill(*p);
    }
    poll(
        "the containers and shims to die",
        Duration::from_secs(20),
        || pids.iter().all(|p| !alive(*p)).then_some(()),
        || format!("{pids:?}"),
    );
    // Deepest first: a mount below another goes before it.
    let mut mounts = mounts_under(h.node.dir.path());
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &mounts {
        let st = Command::new("umount").arg(m).status().unwrap();
        assert!(st.success(), "umount {m}");
    }
    assert_eq!(mounts_under(h.node.dir.path()), Vec::<String>::new());
    flush_rules(&Leftovers::bridges(&h.node), subnet_prefix);
    for e in std::fs::read_dir(h.node.run_dir()).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
}

/// What a reboot does to the firewall, for one node: the rules CNI added for its
/// bridges (`nat`, commented with the bridge's name) and subnet (`filter`'s
/// `CNI-FORWARD`) deleted, and their per-container chains.
fn flush_rules(bridges: &[String], subnet_prefix: &str) {
    for table in ["nat", "filter"] {
        let out = Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut chains = Vec::new();
        for line in text.lines().filter(|l| l.starts_with("-A ")) {
            let ours = bridges
                .iter()
                .any(|b| line.contains(&format!("\\\"{b}\\\"")))
                || (line.starts_with("-A CNI-FORWARD ") && line.contains(subnet_prefix));
            if !ours {
                continue;
            }
            let chain = line.split(' ').nth(1).unwrap_or_default().to_string();
            if chain.starts_with("CNI-") && chain != "CNI-FORWARD" && !chains.contains(&chain) {
                chains.push(chain);
            }
            let rule = &line[3..];
            let st = Command::new("sh")
                .arg("-c")
                .arg(format!("iptables -t {table} -D {rule}"))
                .status()
                .unwrap();
            assert!(st.success(), "iptables -t {table} -D {rule}");
        }
        for c in chains {
            let _ = Command::new("iptables")
                .args(["-t", table, "-X", &c])
                .status();
        }
    }
}

#[test]
fn after_a_reboot_with_the_source_unreachable_what_ran_comes_back_and_nothing_old_is_left() {
    let Some(mut h) = Host::on("10.251.41", "") else {
        return;
    };
    h.sleeper("web", 4150);
    h.sleeper("db", 4151);
    h.sleeper("held", 4152);
    let commit = h.push("three containers");
    h.follow(&h.repo.file_url());
    h.start();
    h.wait_converged(&commit);
    let r = h.node.berth(&["stop", "held"]);
    assert_eq!(r.code, 0, "berth stop held: {}{}", r.stdout, r.stderr);
    poll(
        "held to stop",
        CONVERGE,
        || (h.ps()["held"]["state"] != "running").then_some(()),
        || h.context(),
    );
    let ran = h.node.instances();
    let before = h.processes();
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["db", "web"],
        "{}",
        h.context()
    );
    let status = h.agent.as_mut().unwrap().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());

    reboot(&h, "10.251.41.");
    // The Git server is unreachable at boot.
    let bare = h.repo.bare();
    let away = bare.with_extension("away");
    std::fs::rename(&bare, &away).unwrap();

    let pid = h.start();
    let back = poll(
        "web and db to run again",
        CONVERGE,
        || {
            let p = h.processes();
            (p.len() == 2 && p.keys().all(|n| before.contains_key(n))).then_some(p)
        },
        || h.context(),
    );
    h.finished_pass_of(pid);
    for (name, (shim, init)) in &back {
        assert_ne!(before[name], (*shim, *init), "{name}: the old processes?");
    }
    // The same instances: the same specs, from the revision applied before.
    let now = h.node.instances();
    assert_eq!(now, ran, "{}", h.context());
    assert_eq!(h.applied().as_deref(), Some(commit.as_str()));
    let held = &h.ps()["held"];
    assert_ne!(held["state"], "running", "{}", h.context());
    assert_eq!(held["operator_stopped"], true, "{held}");
    let state = h.agent_state();
    assert!(
        state["last_fetch"]["error"].is_string(),
        "the fetch did not fail: {state:#}"
    );

    // Nothing of the old boot: the runtime, the mounts, the namespaces, the veths and
    // the IP allocations are those of the two containers that run now.
    let running: BTreeSet<&str> = ["web", "db"].iter().map(|n| now[*n].as_str()).collect();
    let left = Leftovers::new(&h.node, "10.251.41.").list();
    eprintln!("reboot: after the restart: {left:#?}");
    let runc: BTreeSet<String> = h.node.runc_ids().into_iter().collect();
    assert_eq!(
        runc,
        running.iter().map(|s| s.to_string()).collect(),
        "{}",
        h.context()
    );
    // Every IP allocation is one of a current instance's, one each.
    let mut owners = Vec::new();
    for net in std::fs::read_dir(h.node.state().join("cni/ipam"))
        .unwrap()
        .flatten()
    {
        for f in std::fs::read_dir(net.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().starts_with("10.251.41.") {
                let text = std::fs::read_to_string(f.path()).unwrap();
                owners.push(text.lines().next().unwrap_or_default().trim().to_string());
            }
        }
    }
    owners.sort();
    let distinct: BTreeSet<&String> = owners.iter().collect();
    assert_eq!(distinct.len(), owners.len(), "{owners:?}");
    for o in &owners {
        assert!(
            now.values().any(|id| id == o),
            "an allocation of no instance: {o}\n{left:#?}"
        );
    }
    for id in &running {
        assert!(
            owners.iter().any(|o| o == id),
            "{id} has no allocation: {owners:?}"
        );
    }
    for kind in ["veth ", "run/netns/"] {
        let n = left.iter().filter(|l| l.starts_with(kind)).count();
        assert_eq!(n, 2, "{kind}: {left:#?}");
    }
    for m in h.node.mounts() {
        assert!(
            running.iter().any(|id| m.contains(id)),
            "a mount of no running container: {m}\n{left:#?}"
        );
    }
    std::fs::rename(&away, &bare).unwrap();
    let status = h.agent.as_mut().unwrap().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());
}

/// The agent's log lines that say it idles for want of a source.
fn idle_lines(h: &Host) -> usize {
    std::fs::read_to_string(h.node.dir.path().join("agent.log"))
        .unwrap_or_default()
        .matches("no source configured: idling until the node configuration has a [source]")
        .count()
}

/// `berth status --format json`'s condition `kind`.
fn condition(h: &Host, kind: &str) -> serde_json::Value {
    let r = h.node.berth(&["status", "--format", "json"]);
    assert_eq!(r.code, 0, "berth status: {}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_else(|| panic!("no condition {kind} in {v:#}"))
}

#[test]
fn without_a_source_the_agent_idles_saying_so_and_still_restores_what_it_applied() {
    let Some(mut h) = Host::on("10.251.42", "") else {
        return;
    };
    // A fresh install: no `[source]`. `--once` has nothing to do.
    let r = h.node.berth(&["agent", "--once"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("no source configured"), "{}", r.stderr);
    let pid = h.start();
    poll(
        "the agent to say it idles",
        CONVERGE,
        || (idle_lines(&h) == 1 && h.agent_state()["pid"] == pid).then_some(()),
        || h.context(),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(h.agent.as_mut().unwrap().running(), "{}", h.context());
    assert_eq!(idle_lines(&h), 1, "{}", h.context());
    assert!(h.agent_state()["last_pass"].is_null(), "{}", h.context());
    for kind in ["Ready", "Progressing", "SourceUnavailable"] {
        let c = condition(&h, kind);
        assert_eq!(c["reason"], "NoSource", "{c}");
        assert_eq!(c["status"], false, "{c}");
    }
    let text = h.node.berth(&["status"]);
    assert!(
        text.stdout.contains("no source configured"),
        "{}{}",
        text.stdout,
        text.stderr
    );
    let status = h.agent.as_mut().unwrap().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());

    // The operator sets a source; the agent applies it.
    h.sleeper("web", 4250);
    let commit = h.push("web");
    h.follow(&h.repo.file_url());
    h.start();
    h.wait_converged(&commit);
    let ran = h.node.instances();
    let status = h.agent.as_mut().unwrap().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());

    // The source is taken out of the configuration, and the host reboots: what the
    // revision applied before runs comes back, on that revision.
    let text = std::fs::read_to_string(&h.node.config).unwrap();
    let base = text.split("\n[source]\n").next().unwrap().to_string();
    std::fs::write(&h.node.config, base).unwrap();
    reboot(&h, "10.251.42.");
    let pid = h.start();
    poll(
        "web to run again",
        CONVERGE,
        || h.processes().contains_key("web").then_some(()),
        || h.context(),
    );
    let pass = h.finished_pass_of(pid);
    assert_eq!(pass["result"], "converged", "{}", h.context());
    assert_eq!(pass["revision"], commit.as_str(), "{}", h.context());
    assert_eq!(h.node.instances(), ran, "{}", h.context());
    assert_eq!(idle_lines(&h), 2, "{}", h.context());
    assert_eq!(condition(&h, "SourceUnavailable")["reason"], "NoSource");
    let status = h.agent.as_mut().unwrap().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());

    // The operator converges the node from an empty directory: the revision applied
    // from the source is forgotten, and the agent started again brings nothing back.
    let empty = h.node.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = h.node.berth(&["apply", &empty.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("forgotten"), "{}", r.stderr);
    assert!(h.applied().is_none(), "{}", h.context());
    let pid = h.start();
    poll(
        "the agent to say it idles again",
        CONVERGE,
        || (idle_lines(&h) == 3 && h.agent_state()["pid"] == pid).then_some(()),
        || h.context(),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(h.node.instances().is_empty(), "{}", h.context());
    let status = h.agent.as_mut().unwrap().terminate();
    assert!(status.success(), "{status:?}\n{}", h.context());
}
