//! Crash safety of `berth apply` — stopped at each named failpoint (the `failpoints`
//! feature; DESIGN.md §8) and run again it converges, with no duplicate containers, and
//! removing everything afterwards leaves no leaks; once for one container, once with
//! six containers' steps in flight side by side — the restart policy, and the policy's
//! audit mode.

use std::path::Path;

use berth_e2e::live::{LiveNode, demo_secrets};
use berth_e2e::registry::free_port;
use berth_e2e::{Run, have_tools};

const SPEC: &str = r#"
[network.crash]
subnet = "SUBNET"

[volume.crash-data]

[secret.pw]
file = "secrets/db-password.age"

[container.app]
image = "IMAGE"
user = "10001:10001"
command = ["/bin/httpd", "-f", "-p", "8080", "-h", "/srv"]
env = { GENERATION = "1" }
networks = ["crash"]
ports = ["127.0.0.1:PORT:8080"]
read_only = true
cap_drop = ["ALL"]
stop_timeout = "2s"

[container.app.resources]
memory = "32MiB"
pids = 32

[[container.app.mounts]]
volume = "crash-data"
target = "/data"

[[container.app.secrets]]
name = "pw"
"#;

/// `berth ARGS` stopped at `failpoint`, when given.
fn berth_at(node: &LiveNode, failpoint: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = node.command();
    if let Some(f) = failpoint {
        cmd.env("BERTH_FAILPOINT", f);
    }
    Run::from(cmd.args(args).output().unwrap())
}

/// `berth apply` of the spec tree, stopped at `failpoint`.
fn apply_at(node: &LiveNode, failpoint: &str) -> Run {
    berth_at(
        node,
        Some(failpoint),
        &["apply", &node.spec.to_string_lossy()],
    )
}

/// Sets `GENERATION` in the app's env, which makes its next apply a replacement.
fn generation(node: &LiveNode, g: u32) {
    node.edit_spec("app.toml", |text| {
        let start = text.find("GENERATION = \"").unwrap() + 14;
        let end = start + text[start..].find('"').unwrap();
        format!("{}{g}{}", &text[..start], &text[end..])
    });
}

fn setup(subnet: &str) -> Option<LiveNode> {
    setup_with(subnet, "")
}

/// A live node with `sections` in its config and the app, its network on `subnet`.
fn setup_with(subnet: &str, sections: &str) -> Option<LiveNode> {
    let node = LiveNode::start(&format!("{sections}{}", demo_secrets()), "")?;
    node.add_demo_secret();
    let text = SPEC
        .replace("SUBNET", subnet)
        .replace("PORT", &free_port().to_string());
    node.write_spec("app.toml", &text);
    Some(node)
}

/// What berth left on the host for this node: runtime containers, mounts under its
/// directories, network namespaces, instance directories.
fn leaks(node: &LiveNode) -> Vec<String> {
    let mut out = Vec::new();
    for runtime in ["runc", "crun"] {
        let Ok(list) = std::process::Command::new(runtime)
            .arg("--root")
            .arg(node.run_dir().join(runtime))
            .args(["list", "-q"])
            .output()
        else {
            continue;
        };
        for id in String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            out.push(format!("{runtime} container {id}"));
        }
    }
    let base = node.dir.path().to_string_lossy().into_owned();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        if let Some(mp) = line.split_whitespace().nth(4)
            && mp.starts_with(&base)
        {
            out.push(format!("mount {mp}"));
        }
    }
    for sub in ["run/netns", "state/instances"] {
        if let Ok(entries) = std::fs::read_dir(node.dir.path().join(sub)) {
            for e in entries.flatten() {
                out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn instances(node: &LiveNode) -> Vec<String> {
    let r = node.berth(&["ps", "-a", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| format!("{} {}", c["instance"], c["state"]))
                .collect()
        })
        .unwrap_or_default()
}

fn crash_then_converge(node: &LiveNode, failpoint: &str) {
    let r = apply_at(node, failpoint);
    assert_eq!(
        r.code, 137,
        "failpoint {failpoint} was not reached (is berth built with --features failpoints?):\n{}{}",
        r.stdout, r.stderr
    );
    let r = node.apply();
    assert_eq!(r.code, 0, "after {failpoint}: {}\n{}", r.stdout, r.stderr);
    let again = node.apply();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        !again.stdout.contains("create"),
        "after {failpoint}, not converged:\n{}",
        again.stdout
    );
    let list = instances(node);
    assert_eq!(list.len(), 1, "after {failpoint}: {list:?}");
    assert!(list[0].contains("running"), "after {failpoint}: {list:?}");
    let dirs: Vec<_> = std::fs::read_dir(node.state().join("instances"))
        .unwrap()
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "after {failpoint}: duplicate instance directories"
    );
}

#[test]
fn apply_killed_at_each_failpoint_converges_without_leaks() {
    let Some(node) = setup("10.251.20.0/24") else {
        return;
    };
    // Creating: killed after the pull, the bundle, CNI ADD, runtime create, start.
    for (g, fp) in [
        "after-pull",
        "after-bundle",
        "after-cni-add",
        "after-create",
        "after-start",
    ]
    .iter()
    .enumerate()
    {
        generation(&node, g as u32 + 2);
        crash_then_converge(&node, fp);
    }
    // Replacing: killed in the middle of removing the old instance.
    generation(&node, 10);
    crash_then_converge(&node, "mid-removal");

    // Everything removed: nothing left behind.
    let empty = node.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = node.berth(&["apply", &empty.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(leaks(&node), Vec::<String>::new());
    assert!(!Path::new(&node.state().join("containers/app")).exists());
}

fn app_state(node: &LiveNode) -> serde_json::Value {
    let r = node.berth(&["inspect", "app"]);
    serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{}{}", r.stdout, r.stderr))
}

#[test]
fn an_exited_container_is_restarted_per_its_policy_on_the_next_apply() {
    let Some(node) = setup("10.251.21.0/24") else {
        return;
    };
    let spec = node.spec.join("app.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    // A process that exits with 3 at once, restart = "on-failure".
    std::fs::write(
        &spec,
        text.replace(
            "command = [\"/bin/httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/srv\"]",
            "command = [\"/bin/sh\", \"-c\", \"exit 3\"]\nrestart = \"on-failure\"",
        ),
    )
    .unwrap();
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(app_state(&node)["state"]["exit_code"], 3);
    // Right after the exit the restart waits out its crash-loop backoff (10 s)…
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("app: restart deferred until"),
        "{}",
        r.stdout
    );
    assert_eq!(app_state(&node)["restarts"], 0);
    // …then it restarts.
    std::thread::sleep(std::time::Duration::from_secs(10));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("app: started"), "{}", r.stdout);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let v = app_state(&node);
    assert_eq!(v["restarts"], 1, "{v}");
    // restart = "no": an exited container stays exited.
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(
        &spec,
        text.replace("restart = \"on-failure\"", "restart = \"no\""),
    )
    .unwrap();
    assert_eq!(node.apply().code, 0);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = node.apply();
    assert!(
        !r.stdout.contains("start "),
        "restart = no restarted it:\n{}",
        r.stdout
    );
}

#[test]
fn audit_mode_applies_and_reports_a_violation() {
    let Some(node) = setup_with("10.251.22.0/24", "[policy]\nmode = \"audit\"\n") else {
        return;
    };
    let spec = node.spec.join("app.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("cap_drop = [\"ALL\"]\n", "")).unwrap();
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("drop-all-capabilities"), "{}", r.stdout);
    assert_eq!(app_state(&node)["state"]["status"], "running");
}

/// crun refuses this machine's cgroup v1 hybrid layout except in a private mount
/// namespace with a tmpfs over `/sys/fs/cgroup/unified` (research/baseline.md). The whole
/// flow — apply, inspect, exec, rm, apply of an empty tree, leak count — runs inside one
/// such namespace, and `berth inspect` must report crun.
#[test]
fn apply_inspect_exec_rm_under_crun() {
    if !have_tools(&["crun", "unshare"]) {
        return;
    }
    let Some(node) = setup_with("10.251.23.0/24", "") else {
        return;
    };
    let cfg = std::fs::read_to_string(&node.config)
        .unwrap()
        .replace("oci_runtime = \"runc\"", "oci_runtime = \"crun\"");
    std::fs::write(&node.config, cfg).unwrap();
    let berth = berth_e2e::berth_bin();
    let empty = node.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let b = format!("{} --config {}", berth.display(), node.config.display());
    let script = format!(
        "set -e\n\
         if [ -d /sys/fs/cgroup/unified ]; then mount -t tmpfs none /sys/fs/cgroup/unified; fi\n\
         {b} apply {spec}\n\
         {b} inspect app > {dir}/inspect.json\n\
         {b} exec app -- id -u > {dir}/id.txt\n\
         {b} rm app\n\
         {b} apply {empty}\n\
         grep -c {dir} /proc/self/mountinfo > {dir}/mounts.txt || true\n",
        spec = node.spec.display(),
        dir = node.dir.path().display(),
        empty = empty.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("BERTH_SHIM_BIN", berth_e2e::shim_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(node.dir.path().join("inspect.json")).unwrap(),
    )
    .unwrap();
    assert!(
        inspect["runtime"].as_str().unwrap_or("").ends_with("crun"),
        "{inspect}"
    );
    assert_eq!(
        std::fs::read_to_string(node.dir.path().join("id.txt"))
            .unwrap()
            .trim(),
        "10001"
    );
    assert_eq!(
        std::fs::read_to_string(node.dir.path().join("mounts.txt"))
            .unwrap()
            .trim(),
        "0"
    );
    assert_eq!(leaks(&node), Vec::<String>::new());
}

/// Veths on berth's bridges, host-local allocations, and iptables lines naming this
/// node's subnet: what 50 create/remove cycles must not leave behind.
fn network_leaks(node: &LiveNode, subnet_prefix: &str) -> Vec<String> {
    let mut out = leaks(node);
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let bridges: Vec<String> = std::fs::read_dir(node.state().join("cni"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let text = std::fs::read_to_string(e.path()).ok()?;
                    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                    v["plugins"][0]["bridge"].as_str().map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        if bridges
            .iter()
            .any(|b| line.contains(&format!("master {b} ")))
        {
            out.push(format!(
                "veth {}",
                line.split(':').nth(1).unwrap_or("").trim()
            ));
        }
    }
    let save = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&save.stdout).lines() {
        if line.contains(subnet_prefix) {
            out.push(format!("iptables {line}"));
        }
    }
    let ipam = node.state().join("cni/ipam");
    if let Ok(dirs) = std::fs::read_dir(&ipam) {
        for d in dirs.flatten() {
            for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with(subnet_prefix) {
                    out.push(format!("ip allocation {name}"));
                }
            }
        }
    }
    out
}

#[test]
fn fifty_create_remove_cycles_leave_nothing_behind() {
    let Some(node) = setup("10.251.24.0/24") else {
        return;
    };
    let spec = node.spec.join("app.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    let text = text.replace("stop_timeout = \"2s\"", "stop_signal = \"SIGKILL\"");
    // The shared definitions stay in the tree; only `app` comes and goes.
    let at = text.find("[container.app]").unwrap();
    std::fs::write(node.spec.join("defs.toml"), &text[..at]).unwrap();
    std::fs::write(&spec, &text[at..]).unwrap();
    // A second container keeps the network (bridge, IPAM) alive across the cycles, so
    // every veth and allocation `app` leaves behind would show.
    let keeper = text
        .split("[container.app]")
        .nth(1)
        .unwrap()
        .replace("ports = [\"127.0.0.1:", "ports = [\"127.0.0.2:")
        .replace("[container.app.", "[container.keeper.")
        .replace("[[container.app.", "[[container.keeper.");
    let keeper = format!("[container.keeper]{keeper}")
        .replace("volume = \"crash-data\"", "volume = \"keeper-data\"");
    std::fs::write(
        node.spec.join("keeper.toml"),
        format!("[volume.keeper-data]\n{keeper}"),
    )
    .unwrap();
    let parked = node.dir.path().join("parked.toml");
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    std::fs::rename(&spec, &parked).unwrap();
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let baseline = network_leaks(&node, "10.251.24.");
    assert!(
        baseline.iter().any(|l| l.starts_with("veth")),
        "the keeper's veth is seen: {baseline:?}"
    );
    for cycle in 0..50 {
        std::fs::rename(&parked, &spec).unwrap();
        generation(&node, cycle + 100);
        let r = node.apply();
        assert_eq!(r.code, 0, "cycle {cycle}: {}{}", r.stdout, r.stderr);
        std::fs::rename(&spec, &parked).unwrap();
        let r = node.apply();
        assert_eq!(r.code, 0, "cycle {cycle}: {}{}", r.stdout, r.stderr);
        if cycle % 10 == 9 {
            assert_eq!(
                network_leaks(&node, "10.251.24."),
                baseline,
                "after cycle {cycle}"
            );
        }
    }
    assert_eq!(network_leaks(&node, "10.251.24."), baseline);
}

/// Steps of different containers run side by side (`runtime.parallel`): a pass killed
/// while several creates are in flight — some mid-CNI ADD, some in the runtime — is
/// finished by the next one, with every container once, and removing everything leaves
/// no veth, IP allocation, iptables rule, mount, namespace or runtime container.
#[test]
fn a_pass_killed_while_creates_run_side_by_side_converges_without_leaks() {
    let Some(node) = setup("10.251.26.0/24") else {
        return;
    };
    let app = std::fs::read_to_string(node.spec.join("app.toml")).unwrap();
    let image = app
        .lines()
        .find(|l| l.starts_with("image = "))
        .unwrap()
        .to_string();
    let net = &app[..app.find("[volume.").unwrap()];
    let mut text = net.to_string();
    for i in 1..=6 {
        text.push_str(&format!(
            "\n[container.par{i}]\n{image}\nuser = \"10001:10001\"\n\
             command = [\"/bin/httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/srv\"]\n\
             networks = [\"crash\"]\nread_only = true\ncap_drop = [\"ALL\"]\n\
             resources = {{ memory = \"16MiB\", pids = 16 }}\nstop_signal = \"SIGKILL\"\n"
        ));
    }
    let full = node.dir.path().join("full");
    let empty = node.dir.path().join("empty");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(full.join("apps.toml"), &text).unwrap();
    let apply =
        |dir: &Path, fp: Option<&str>| berth_at(&node, fp, &["apply", &dir.to_string_lossy()]);

    for fp in [
        "after-cni-add",
        "after-create",
        "after-start",
        "after-bundle",
    ] {
        let r = apply(&full, Some(fp));
        assert_eq!(r.code, 137, "{fp} not reached:\n{}{}", r.stdout, r.stderr);
        let r = apply(&full, None);
        assert_eq!(r.code, 0, "after {fp}: {}{}", r.stdout, r.stderr);
        let again = apply(&full, None);
        assert!(
            again.code == 0 && !again.stdout.contains("create"),
            "after {fp}, not converged:\n{}{}\nthe pass before:\n{}{}",
            again.stdout,
            again.stderr,
            r.stdout,
            r.stderr
        );
        let list = instances(&node);
        assert_eq!(list.len(), 6, "after {fp}: {list:?}");
        assert!(
            list.iter().all(|l| l.contains("running")),
            "after {fp}: {list:?}"
        );
        let dirs = std::fs::read_dir(node.state().join("instances"))
            .unwrap()
            .count();
        assert_eq!(dirs, 6, "after {fp}: duplicate instance directories");
        // Every peer knows every other by name once the pass is over.
        let hosts = std::fs::read_dir(node.state().join("instances"))
            .unwrap()
            .flatten()
            .map(|d| std::fs::read_to_string(d.path().join("hosts")).unwrap())
            .collect::<Vec<_>>();
        for h in &hosts {
            for i in 1..=6 {
                assert!(
                    h.contains(&format!("\tpar{i}\n")),
                    "after {fp}: par{i} missing:\n{h}"
                );
            }
        }
        let r = apply(&empty, None);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        assert_eq!(
            network_leaks(&node, "10.251.26."),
            Vec::<String>::new(),
            "after {fp}"
        );
    }
}

/// A pass killed while the shim runs the runtime's `create` leaves that shim working
/// after it: for a moment the instance has a directory and no runtime state. The next
/// pass waits for the shim before it removes the orphan, so the create cannot land
/// after the removal, under the id the new create uses ("container with given ID
/// already exists"). The runtime here takes a second over each create, so that the
/// next pass always meets the create in flight.
#[test]
fn a_create_still_in_flight_from_a_killed_pass_is_waited_for() {
    let Some(node) = setup("10.251.29.0/24") else {
        return;
    };
    let runc = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
        .expect("runc");
    let slow = node.dir.path().join("slow-runc");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = create ] && sleep 1 && break; done\n\
             exec {} \"$@\"\n",
            runc.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        config.replace(
            "oci_runtime = \"runc\"",
            &format!("oci_runtime = {:?}", slow.to_string_lossy()),
        ),
    )
    .unwrap();

    let r = apply_at(&node, "after-cni-add");
    assert_eq!(r.code, 137, "not reached:\n{}{}", r.stdout, r.stderr);
    let r = node.berth(&["apply", &node.spec.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let again = node.berth(&["apply", &node.spec.to_string_lossy()]);
    assert!(
        again.code == 0 && !again.stdout.contains("create"),
        "not converged:\n{}{}",
        again.stdout,
        again.stderr
    );
    let list = instances(&node);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].contains("running"), "{list:?}");
    let empty = node.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = node.berth(&["apply", &empty.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(network_leaks(&node, "10.251.29."), Vec::<String>::new());
}

/// A reboot takes what lives in memory: the container's processes and its shim (no
/// exit file is written), the runtime's state under the run directory, and every
/// mount — root filesystem, secrets tmpfs, network namespace. The next apply makes
/// the instance again on the writable layer it had, and starts it.
#[test]
fn a_reboot_that_took_the_mounts_is_made_good_by_the_next_apply() {
    let Some(node) = setup("10.251.25.0/24") else {
        return;
    };
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let id = app_state(&node)["instance"]
        .as_str()
        .expect("no instance")
        .to_string();
    let inst = node.state().join("instances").join(&id);
    // What the container left in its writable layer (its root is read-only: the
    // test writes it from the host).
    std::fs::write(inst.join("upper/kept"), "kept\n").unwrap();

    for file in ["shim.pid", "pid"] {
        if let Ok(pid) = std::fs::read_to_string(inst.join(file)) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = std::process::Command::new("runc")
        .arg("--root")
        .arg(node.run_dir().join("runc"))
        .args(["delete", "-f", &id])
        .output();
    let _ = std::fs::remove_file(inst.join("exit.json"));
    let base = node.dir.path().to_string_lossy().into_owned();
    let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|mp| mp.starts_with(&base))
        .map(String::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &points {
        let out = std::process::Command::new("umount")
            .args(["-l", p])
            .output()
            .unwrap();
        assert!(out.status.success(), "umount {p}: {out:?}");
    }
    assert!(!points.is_empty(), "nothing was mounted");

    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let v = app_state(&node);
    assert_eq!(v["state"]["status"], "running", "{v}");
    assert_eq!(v["instance"], id.as_str(), "not the same instance: {v}");
    assert_eq!(v["restarts"], 1, "{v}");
    let exec = |cmd: &[&str]| {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(node.run_dir().join("runc"))
            .arg("exec")
            .arg(&id)
            .args(cmd)
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        exec(&["cat", "/kept"]),
        "kept\n",
        "the writable layer was lost"
    );
    assert!(
        !exec(&["cat", "/run/secrets/pw"]).is_empty(),
        "the secret is not back"
    );
}
