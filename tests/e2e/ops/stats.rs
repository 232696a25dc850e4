//! `berth stats` against real cgroups built around a `sleep`, as root: v1 directories
//! (memory, cpuacct, pids) on a v1 or hybrid host, one v2 directory on a unified host;
//! removed even when the test fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_e2e::is_root;
use serde_json::{Value, json};

use super::{Node, Reap, sleeper};

/// Real cgroup v1 directories, removed on drop (after the process in them is gone).
struct Cgroups {
    dirs: Vec<PathBuf>,
    sleep: Option<Reap>,
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        drop(self.sleep.take());
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Mount points of the v1 controllers, from mountinfo.
fn v1_mount(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split(' ');
        (post.next()? == "cgroup" && post.nth(1)?.split(',').any(|o| o == controller))
            .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
    })
}

/// A unique cgroup name for this test run.
fn cgroup_name() -> String {
    format!(
        "berth-test-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// v1: one directory per controller hierarchy, with a 64 MiB and 10-pid limit.
fn v1_cgroups(name: &str) -> Option<Cgroups> {
    let (Some(memory), Some(cpuacct), Some(pids)) =
        (v1_mount("memory"), v1_mount("cpuacct"), v1_mount("pids"))
    else {
        berth_e2e::missing("cgroup v1 memory, cpuacct and pids hierarchies");
        return None;
    };
    let mut cg = Cgroups {
        dirs: Vec::new(),
        sleep: None,
    };
    for root in [&memory, &cpuacct, &pids] {
        let d = root.join(name);
        std::fs::create_dir(&d).unwrap();
        cg.dirs.push(d);
    }
    std::fs::write(cg.dirs[0].join("memory.limit_in_bytes"), "67108864").unwrap();
    std::fs::write(cg.dirs[2].join("pids.max"), "10").unwrap();
    Some(cg)
}

/// v2: one directory under the unified root, memory and pids enabled for it.
fn v2_cgroups(name: &str) -> Option<Cgroups> {
    let root = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap();
    if !controllers.split_whitespace().any(|c| c == "memory")
        || !controllers.split_whitespace().any(|c| c == "pids")
    {
        berth_e2e::missing("the memory and pids controllers on the cgroup v2 root");
        return None;
    }
    std::fs::write(root.join("cgroup.subtree_control"), "+memory +pids").unwrap();
    let d = root.join(name);
    std::fs::create_dir(&d).unwrap();
    let cg = Cgroups {
        dirs: vec![d],
        sleep: None,
    };
    std::fs::write(cg.dirs[0].join("memory.max"), "67108864").unwrap();
    std::fs::write(cg.dirs[0].join("pids.max"), "10").unwrap();
    Some(cg)
}

#[test]
fn stats_reads_a_real_cgroup() {
    if !is_root() {
        return;
    }
    let name = cgroup_name();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let Some(mut cg) = (if unified {
        v2_cgroups(&name)
    } else {
        v1_cgroups(&name)
    }) else {
        return;
    };
    let sleep = sleeper();
    let pid = sleep.0.id();
    cg.sleep = Some(sleep);
    for d in &cg.dirs {
        std::fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    let node = Node::new();
    // The cgroup, not the start time, identifies it: started_at is long before.
    node.record("web", |r| r["cgroup_path"] = json!(format!("/{name}")));
    node.pid("web", pid);
    node.record("db", |_| {});
    node.exit("db", 0, 5);

    let run = node.berth(&["stats", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "only running containers: {v}");
    assert_eq!(rows[0]["name"], "web");
    assert_eq!(rows[0]["memory"]["limit_bytes"], 67_108_864);
    assert!(rows[0]["memory"]["usage_bytes"].as_u64().unwrap() < 67_108_864);
    assert_eq!(rows[0]["pids"]["current"], 1);
    assert_eq!(rows[0]["pids"]["limit"], 10);
    assert!(rows[0]["cpu_percent"].as_f64().unwrap() >= 0.0);

    let run = node.berth(&["stats", "--no-stream", "web"]);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run.stdout.lines().nth(1).unwrap();
    assert!(
        line.starts_with("web ") && line.contains("/ 64MiB") && line.ends_with("1 / 10"),
        "{line}"
    );

    let run = node.berth(&["stats", "nope"]);
    assert_eq!(run.code, 1, "{run:?}");
}
