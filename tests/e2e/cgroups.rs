//! Two state directories applying the same container spec side by side: the instance
//! id derives from the spec alone, so both get the same id; the state directory's hash
//! in the cgroup path keeps their cgroups apart. Both run, each in its own cgroup, and
//! tearing one node down removes its own cgroup and container only.

use std::path::PathBuf;

use berth_e2e::live::LiveNode;

const WEB: &str = r#"
[container.web]
image = "IMAGE"
command = ["/bin/sleep", "3600"]
user = "10001:10001"
read_only = true
cap_drop = ["ALL"]
resources = { memory = "16MiB", pids = 16 }
stop_signal = "SIGKILL"
"#;

/// `inspect web`'s JSON.
fn inspect(node: &LiveNode) -> serde_json::Value {
    let r = node.berth(&["inspect", "web", "--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).expect("inspect json")
}

/// The directories of `cgroup_path` that exist: the unified hierarchy's on v2, each
/// controller's on v1 (and the hybrid `unified` one).
fn cgroup_dirs(cgroup_path: &str) -> Vec<PathBuf> {
    let root = PathBuf::from("/sys/fs/cgroup");
    let rel = cgroup_path.trim_start_matches('/');
    let mut out = vec![root.join(rel)];
    if let Ok(entries) = std::fs::read_dir(&root) {
        out.extend(entries.flatten().map(|e| e.path().join(rel)));
    }
    out.retain(|d| d.join("cgroup.procs").is_file());
    out
}

/// Whether `pid`'s `/proc/<pid>/cgroup` places it in `cgroup_path` (any hierarchy).
fn pid_in(pid: i64, cgroup_path: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.ends_with(cgroup_path))
}

#[test]
fn two_state_directories_with_the_same_spec_have_their_own_cgroups() {
    let Some(a) = LiveNode::start("", "") else {
        return;
    };
    // The same image reference in both specs (the spec hash covers it): `b` pulls from
    // `a`'s registry too.
    let host_a = a.image.split('/').next().expect("registry host");
    let Some(b) = LiveNode::start("", &format!("[registries.\"{host_a}\"]\ninsecure = true\n"))
    else {
        return;
    };
    let web = WEB.replace("IMAGE", &a.image);
    for node in [&a, &b] {
        node.write_spec("web.toml", &web);
        let r = node.apply();
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    }
    let (ia, ib) = (inspect(&a), inspect(&b));
    // The same spec: the same instance id in both.
    assert_eq!(ia["instance"], ib["instance"], "{ia}\n{ib}");
    let id = ia["instance"].as_str().expect("instance").to_string();
    let (ca, cb) = (
        ia["cgroup_path"].as_str().expect("cgroup_path").to_string(),
        ib["cgroup_path"].as_str().expect("cgroup_path").to_string(),
    );
    assert_ne!(ca, cb, "one cgroup for two state directories");
    for c in [&ca, &cb] {
        assert!(
            c.starts_with("/berth/") && c.ends_with(&format!("/{id}")),
            "{c}"
        );
    }

    // Both run, each in its own cgroup, which exists.
    let (da, db) = (cgroup_dirs(&ca), cgroup_dirs(&cb));
    assert!(!da.is_empty(), "no cgroup directory for {ca}");
    assert!(!db.is_empty(), "no cgroup directory for {cb}");
    for (v, c) in [(&ia, &ca), (&ib, &cb)] {
        assert_eq!(v["state"]["status"], "running", "{v}");
        let pid = v["state"]["pid"].as_i64().expect("pid");
        assert!(pid_in(pid, c), "pid {pid} is not in {c}");
    }
    for node in [&a, &b] {
        let (code, out, err) = node.exec("web", &["/bin/true"]);
        assert_eq!(code, 0, "{out}{err}");
    }

    // Tearing `a` down removes its cgroup and container only.
    drop(a);
    for d in &da {
        assert!(!d.exists(), "cgroup left: {}", d.display());
        // Its state directory's `/berth/<hash>` parent goes with its last instance.
        let parent = d.parent().expect("a parent");
        assert!(!parent.exists(), "cgroup parent left: {}", parent.display());
    }
    for d in &db {
        assert!(d.exists(), "the other node's cgroup went: {}", d.display());
    }
    let ib = inspect(&b);
    assert_eq!(ib["state"]["status"], "running", "{ib}");
    let pid = ib["state"]["pid"].as_i64().expect("pid");
    assert!(pid_in(pid, &cb), "pid {pid} is not in {cb}");
    let r = b.berth(&["stats", "--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&cb),
        "stats does not read {cb}: {}",
        r.stdout
    );
}
