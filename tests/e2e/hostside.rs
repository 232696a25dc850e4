//! What `berth apply` checks and prepares on the host itself, with real runc
//! containers: bind sources resolved through symlinks and judged again by the policy,
//! and the files and namespaces of every network mode.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::live::LiveNode;

/// A restricted-compliant container: `NAME`, its mounts and command appended.
fn container(name: &str, command: &str, extra: &str) -> String {
    format!(
        "[container.{name}]\nimage = \"IMAGE\"\ncommand = [\"sh\", \"-c\", {command:?}]\n\
         user = \"10001:10001\"\ncap_drop = [\"ALL\"]\nrestart = \"no\"\n{extra}\n\
         [container.{name}.resources]\nmemory = \"32MiB\"\npids = 32\n"
    )
}

fn bind(name: &str, source: &Path, target: &str, read_only: bool) -> String {
    format!(
        "[[container.{name}.mounts]]\nbind = {:?}\ntarget = {target:?}\nread_only = {read_only}\n",
        source.display().to_string()
    )
}

/// Waits until `check` holds, for at most 20 s.
fn wait_for(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_bind_through_a_planted_symlink_is_refused_and_a_plain_bind_works() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().canonicalize().unwrap().join("allowed");
    let shared = allowed.join("shared");
    let plain = allowed.join("plain");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("hello"), "plain bind\n").unwrap();
    // The writer runs as 10001 and may write into the shared directory.
    std::os::unix::fs::chown(&shared, Some(10001), Some(10001)).unwrap();
    std::fs::set_permissions(&allowed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "extends = \"restricted\"\n[rules]\nallowed-host-paths = {{ severity = \"error\", allow = [{:?}] }}\n",
            allowed.display().to_string()
        ),
    )
    .unwrap();
    let Some(node) = LiveNode::start(
        &format!(
            "[policy]\nprofile = {:?}\nmode = \"enforce\"\n",
            policy.display().to_string()
        ),
        "",
    ) else {
        return;
    };
    let state = node.state();

    // Step 1: a container with write access to the allowed directory plants links.
    let plant = format!(
        "ln -sfn / /shared/hostroot && ln -sfn /etc /shared/etc && ln -sfn {} /shared/state && \
         ln -sfn hostroot /shared/chain && sleep 3600",
        state.display()
    );
    node.write_spec(
        "writer.toml",
        &(container("writer", &plant, "") + &bind("writer", &shared, "/shared", false)),
    );
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    wait_for("the planted links", || {
        ["hostroot", "etc", "state", "chain"]
            .iter()
            .all(|l| shared.join(l).symlink_metadata().is_ok())
    });

    // `berth audit` offline cannot see the host: every bind is lexically inside the
    // allowed directory.
    let audit = node.berth(&[
        "audit",
        "--policy",
        &policy.to_string_lossy(),
        &node.spec.to_string_lossy(),
    ]);
    assert_eq!(audit.code, 0, "{}\n{}", audit.stdout, audit.stderr);

    // Step 2: readers bind the links; a plain bind sits next to them.
    let readers = [
        ("reader", "hostroot", "/"),
        ("readetc", "etc", "/etc"),
        ("readstate", "state", &*state.to_string_lossy().into_owned()),
        ("readchain", "chain", "/"),
    ]
    .map(|(n, l, to)| (n, l, to.to_string()));
    for (name, link, _) in &readers {
        node.write_spec(
            &format!("{name}.toml"),
            &(container(name, "sleep 3600", "") + &bind(name, &shared.join(link), "/host", true)),
        );
    }
    node.write_spec(
        "plain.toml",
        &(container("plain", "sleep 3600", "") + &bind("plain", &plain, "/data", true)),
    );
    // `berth plan` already says so: it resolves the sources on this host too.
    let plan = node.berth(&["plan", &node.spec.to_string_lossy()]);
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    for (name, _, _) in &readers {
        assert!(
            plan.stdout
                .lines()
                .any(|l| l.contains(&format!("report          {name}  blocked"))
                    && l.contains("allowed-host-paths")),
            "{name}: {}",
            plan.stdout
        );
    }
    let r = node.apply();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for (name, link, to) in &readers {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", r.stdout));
        assert!(line.contains("blocked by policy"), "{line}");
        assert!(line.contains("allowed-host-paths"), "{line}");
        let spec_path = shared.join(link).display().to_string();
        assert!(
            line.contains(&format!("`{spec_path}` resolves to `{to}`")),
            "{line}"
        );
        // Not running, and nothing of the host mounted for it.
        let running = node
            .instance(name)
            .is_some_and(|_| node.exec(name, &["true"]).0 == 0);
        assert!(!running, "{name} runs");
    }
    let mounts = node.mounts();
    let bind_mounts: Vec<&String> = mounts.iter().filter(|m| m.contains("/binds/")).collect();
    assert_eq!(
        bind_mounts.len(),
        2,
        "only writer's and plain's binds: {mounts:?}"
    );

    // The plain bind works, and is read-only.
    let (code, out, err) = node.exec("plain", &["cat", "/data/hello"]);
    assert_eq!((code, out.as_str()), (0, "plain bind\n"), "{err}");
    let (code, _, _) = node.exec("plain", &["touch", "/data/new"]);
    assert_ne!(code, 0, "a read-only bind was writable");

    // A staged bind that is gone (a reboot unmounts it) is never started over empty:
    // `berth start` refuses (a pass checks and mounts it again).
    let r = node.berth(&["stop", "plain"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let point = node
        .mounts()
        .into_iter()
        .find(|m| m.contains("/instances/plain-") && m.contains("/binds/"))
        .expect("plain's staged bind");
    let out = std::process::Command::new("umount")
        .arg(&point)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = node.berth(&["start", "plain"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("bind mount is no longer mounted"),
        "{}",
        r.stderr
    );

    // Teardown unmounts every bind and leaves the host's data alone.
    drop(node);
    assert!(
        berth_e2e::live::mounts_under(dir.path()).is_empty(),
        "mounts left: {:?}",
        berth_e2e::live::mounts_under(dir.path())
    );
    assert_eq!(
        std::fs::read_to_string(plain.join("hello")).unwrap(),
        "plain bind\n",
        "teardown touched the bind's data"
    );
}

/// The names under `/sys/class/net` on the host.
fn host_interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_network_mode_comes_up_and_goes_without_leftovers() {
    let Some(node) = LiveNode::start(
        "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n",
        "default_subnet = \"10.252.0.0/16\"\n",
    ) else {
        return;
    };
    let spec = [
        container("none", "sleep 3600", "network_mode = \"none\""),
        container("hostnet", "sleep 3600", "network_mode = \"host\""),
        container("ondefault", "sleep 3600", ""),
        container("onfront", "sleep 3600", "networks = [\"front\"]"),
        "[network.front]\nsubnet = \"10.253.7.0/24\"\n".to_string(),
    ]
    .join("\n");
    node.write_spec("modes.toml", &spec);
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let interfaces = |name: &str| -> BTreeSet<String> {
        let (code, out, err) = node.exec(name, &["ls", "/sys/class/net"]);
        assert_eq!(code, 0, "{err}");
        out.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(interfaces("none"), BTreeSet::from(["lo".to_string()]));
    for name in ["ondefault", "onfront"] {
        assert_eq!(
            interfaces(name),
            BTreeSet::from(["eth0".to_string(), "lo".to_string()]),
            "{name}"
        );
    }
    // The host's own interfaces (not the veths and bridges other tests come and go with).
    let stable: BTreeSet<String> = host_interfaces()
        .into_iter()
        .filter(|i| !i.starts_with("veth") && !i.starts_with("berth") && !i.starts_with("cni"))
        .collect();
    let seen = interfaces("hostnet");
    assert!(
        seen.is_superset(&stable),
        "{seen:?} lacks some of {stable:?}"
    );
    assert!(seen.len() > 1, "{seen:?}");

    for name in ["none", "hostnet", "ondefault", "onfront"] {
        let (code, hosts, err) = node.exec(name, &["cat", "/etc/hosts"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            hosts
                .lines()
                .any(|l| !l.starts_with('#') && l.split_whitespace().skip(1).any(|n| n == name)),
            "{name}'s /etc/hosts lacks its name:\n{hosts}"
        );
        let (code, _, err) = node.exec(name, &["cat", "/etc/resolv.conf"]);
        assert_eq!(code, 0, "{err}");
        let (code, hostname, _) = node.exec(name, &["hostname"]);
        assert_eq!((code, hostname.trim()), (0, name));
    }

    // A second apply changes nothing.
    let before: Vec<Option<String>> = ["none", "hostnet", "ondefault", "onfront"]
        .iter()
        .map(|n| node.instance(n))
        .collect();
    let plan = node.berth(&["plan", &node.spec.to_string_lossy()]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        !plan.stdout.contains("create") && !plan.stdout.contains("start"),
        "{}",
        plan.stdout
    );
    let again = node.apply();
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let after: Vec<Option<String>> = ["none", "hostnet", "ondefault", "onfront"]
        .iter()
        .map(|n| node.instance(n))
        .collect();
    assert_eq!(before, after);

    // Removing the specs leaves nothing behind.
    std::fs::remove_file(node.spec.join("modes.toml")).unwrap();
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(node.mounts().is_empty(), "{:?}", node.mounts());
    let left: Vec<_> = std::fs::read_dir(node.state().join("instances"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "instances left: {left:?}");
    let netns: Vec<_> = std::fs::read_dir(node.run_dir().join("netns"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(netns.is_empty(), "namespaces left: {netns:?}");
}

/// A file reference the validator reads lexically (`x/../zero` is the tree's `zero`)
/// is read the same way: never through a committed link (`x` → `/dev/shm`, which would
/// make it `/dev/zero`, read until memory runs out).
#[test]
fn a_file_reference_through_a_committed_link_reads_the_tree_file() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    std::os::unix::fs::symlink("/dev/shm", node.spec.join("x")).unwrap();
    std::fs::write(
        node.spec.join("zero"),
        "{\"defaultAction\": \"SCMP_ACT_ALLOW\"}\n",
    )
    .unwrap();
    node.write_spec(
        "c.toml",
        &container("prof", "sleep 3600", "seccomp = \"x/../zero\""),
    );
    let start = Instant::now();
    let plan = node.berth(&["plan", "--offline", &node.spec.to_string_lossy()]);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "plan took {:?}",
        start.elapsed()
    );
    assert!(
        matches!(plan.code, 0 | 1),
        "{}\n{}",
        plan.stdout,
        plan.stderr
    );
    let r = node.apply();
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "apply took {:?}",
        start.elapsed()
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("prof: created"), "{}", r.stdout);
}
