//! `berth apply` end to end, as root: a loopback registry with fixture images, the
//! webapp example (image references rewritten to the pushed digest, its port to a free
//! one), real runc containers, CNI networks, a volume and an age secret.

use std::path::Path;

use berth_e2e::live::{LiveNode, demo_secrets};
use berth_e2e::registry::free_port;
use berth_e2e::workspace_root;

/// The webapp example on a live node (enforce mode, the demo secret) with `subnet`,
/// and the host port its `web` publishes.
fn setup(subnet: &str) -> Option<(LiveNode, u16)> {
    let policy = "[policy]\nprofile = \"restricted\"\nmode = \"enforce\"\n";
    let node = LiveNode::start(&format!("{policy}{}", demo_secrets()), "")?;
    let port = free_port();
    let text =
        std::fs::read_to_string(workspace_root().join("examples/webapp/webapp.toml")).unwrap();
    let text = rewrite_images(&text, &node.image)
        .replace("127.0.0.1:8080:8080", &format!("127.0.0.1:{port}:8080"))
        .replace("10.89.7.0/24", subnet);
    node.write_spec("webapp.toml", &text);
    node.add_demo_secret();
    Some((node, port))
}

/// `ps` without what changes by the clock alone (the uptime text).
fn ps_stable(node: &LiveNode) -> serde_json::Value {
    let mut ps = node.ps();
    for c in ps.as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("uptime");
    }
    ps
}

fn edit(node: &LiveNode, f: impl FnOnce(String) -> String) {
    node.edit_spec("webapp.toml", f);
}

/// Points every `127.0.0.1:5000/berth/demo@sha256:…` reference at `to`.
fn rewrite_images(text: &str, to: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("image = \"127.0.0.1:5000/berth/demo@") {
                format!("image = \"{to}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_default()
}

#[test]
fn apply_brings_up_the_webapp() {
    let Some((node, port)) = setup("10.251.7.0/24") else {
        return;
    };
    let r = node.apply();
    assert_eq!(r.code, 0, "apply failed:\n{}\n{}", r.stdout, r.stderr);
    for name in ["store", "web", "worker"] {
        assert!(
            r.stdout.contains(&format!("{name}: created")),
            "{}",
            r.stdout
        );
    }

    // Identity, capabilities, no_new_privs and seccomp from inside.
    assert_eq!(node.exec_ok("web", &["id", "-u"]).trim(), "10001");
    assert_eq!(node.exec_ok("web", &["id", "-g"]).trim(), "10001");
    let status = node.exec_ok("web", &["cat", "/proc/self/status"]);
    assert_eq!(
        status_field(&status, "CapEff:"),
        "0000000000000000",
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapBnd:"),
        "0000000000000000",
        "{status}"
    );
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&status, "Seccomp:"), "2");

    // The secret: mode 0400, owned by the container's user, the right content.
    let stat = node.exec_ok(
        "store",
        &["stat", "-c", "%a %u %g", "/run/secrets/db-password"],
    );
    assert_eq!(stat.trim(), "400 10001 10001");
    assert_eq!(
        node.exec_ok("store", &["cat", "/run/secrets/db-password"]),
        "correct-horse-battery-staple"
    );

    // A peer answers by name over the bridge network; the published port on loopback.
    let page = node.exec_ok("worker", &["wget", "-q", "-O-", "http://web:8080/"]);
    assert_eq!(page, "hello from berth\n");
    let mut body = String::new();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    s.read_to_string(&mut body).unwrap();
    assert!(body.ends_with("hello from berth\n"), "{body}");

    // The memory limit is in the container's cgroup (v1 here, v2 elsewhere).
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(node.state().join("containers/web/state.json")).unwrap(),
    )
    .unwrap();
    let cgroup = record["cgroup_path"]
        .as_str()
        .unwrap()
        .trim_start_matches('/');
    assert!(cgroup.ends_with(&node.instance("web").unwrap()), "{cgroup}");
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(cgroup)
        .join("memory.limit_in_bytes");
    let v2 = Path::new("/sys/fs/cgroup").join(cgroup).join("memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // A second apply changes nothing: same instances, same pids.
    let before = ps_stable(&node);
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains("create"),
        "second apply planned work:\n{}",
        r.stdout
    );
    assert_eq!(ps_stable(&node), before);
}

#[test]
fn apply_updates_exactly_what_changed_and_keeps_data() {
    let Some((node, _)) = setup("10.251.8.0/24") else {
        return;
    };
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    node.exec_ok("store", &["sh", "-c", "echo kept > /data/keep"]);
    let first = node.instances();

    // One env value of web: only web is recreated.
    edit(&node, |t| {
        t.replace("LOG_LEVEL = \"info\"", "LOG_LEVEL = \"warn\"")
    });
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("env LOG_LEVEL changed"), "{}", r.stdout);
    let second = node.instances();
    assert_ne!(second["web"], first["web"]);
    assert_eq!(second["store"], first["store"]);
    assert_eq!(second["worker"], first["worker"]);
    assert_eq!(
        node.exec_ok("web", &["sh", "-c", "echo $LOG_LEVEL"]).trim(),
        "warn"
    );

    // The store is recreated; its named volume keeps the data.
    edit(&node, |t| {
        t.replace("stop_timeout = \"5s\"", "stop_timeout = \"6s\"")
    });
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_ne!(node.instances()["store"], second["store"]);
    assert_eq!(node.exec_ok("store", &["cat", "/data/keep"]).trim(), "kept");
    assert!(node.state().join("volumes/store-data/keep").is_file());

    // Enforce mode: a change the policy forbids is not applied; the old web runs on.
    let running = node.instances()["web"].clone();
    edit(&node, |t| {
        t.replacen(
            "user = \"10001:10001\"\ncommand = [\"/bin/httpd\", \"-f\", \"-p\", \"8080\"",
            "user = \"0:0\"\ncommand = [\"/bin/httpd\", \"-f\", \"-p\", \"8080\"",
            1,
        )
    });
    let r = node.apply();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("web: blocked") && r.stdout.contains("run-as-non-root"),
        "{}",
        r.stdout
    );
    assert_eq!(node.instances()["web"], running);
    assert_eq!(node.exec_ok("web", &["id", "-u"]).trim(), "10001");

    // A secret that cannot be decrypted (a corrupt commit): its containers would be
    // recreated (the ciphertext is in their spec hash), but nothing is stopped for a
    // create that cannot succeed: store and worker run on, and the report says why.
    let before = node.instances();
    let secret = node.spec.join("secrets/db-password.age");
    let good = std::fs::read(&secret).unwrap();
    std::fs::write(&secret, b"age-encryption.org/v9\nnot a secret\n").unwrap();
    let r = node.apply();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("secret `db-password` cannot be decrypted"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let after = node.instances();
    for name in ["store", "worker"] {
        assert_eq!(after[name], before[name], "{name} was replaced");
    }
    assert_eq!(node.exec_ok("store", &["cat", "/data/keep"]).trim(), "kept");
    let mounted = node.exec_ok("store", &["cat", "/run/secrets/db-password"]);
    assert!(!mounted.is_empty());
    std::fs::write(&secret, good).unwrap();

    // Removing a spec removes its container.
    edit(&node, |t| {
        let cut = t.find("[container.worker]").unwrap();
        t[..cut].to_string()
    });
    let r = node.apply();
    assert!(
        r.stdout.contains("worker: removed"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(!node.instances().contains_key("worker"));
}

#[test]
fn operator_commands_exec_stop_start_rm_inspect() {
    let Some((node, _)) = setup("10.251.9.0/24") else {
        return;
    };
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let r = node.berth(&["exec", "web", "--", "id", "-u"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "10001"), "{}", r.stderr);
    assert_eq!(
        node.berth(&["exec", "web", "--", "sh", "-c", "exit 3"])
            .code,
        3
    );
    assert_eq!(
        node.berth(&["exec", "web", "--", "/no/such/command"]).code,
        127
    );
    assert_eq!(node.berth(&["exec", "nobody", "--", "true"]).code, 125);

    // The live audit: what runs is compliant; an instance nothing accounts for is not.
    let r = node.berth(&["audit", "--live", "--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["summary"]["containers"], 3, "{v}");
    assert_eq!(v["summary"]["compliant"], 3, "{v}");
    let ghost = node.state().join("instances/ghost-12345678");
    std::fs::create_dir_all(&ghost).unwrap();
    let r = node.berth(&["audit", "--live"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("instance `ghost-12345678`"),
        "{}",
        r.stdout
    );
    std::fs::remove_dir(&ghost).unwrap();

    let v: serde_json::Value =
        serde_json::from_str(&node.berth(&["inspect", "web"]).stdout).unwrap();
    assert!(v["runtime"].as_str().unwrap_or("").ends_with("runc"), "{v}");
    assert!(v["state"]["pid"].as_i64().unwrap_or(0) > 0, "{v}");

    // An operator stop holds across applies until `berth start`.
    assert_eq!(node.berth(&["stop", "worker"]).code, 0);
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let worker = || {
        let ps = node.ps();
        let found = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "worker");
        found.unwrap_or_else(|| panic!("no worker in {ps}")).clone()
    };
    let stopped = worker();
    assert!(
        stopped["state"].as_str().unwrap().contains("stopped"),
        "{stopped}"
    );
    assert_eq!(node.berth(&["start", "worker"]).code, 0);
    let started = worker();
    assert_eq!(started["state"], "running", "{started}");

    // rm removes it; the next apply creates it again.
    assert_eq!(node.berth(&["rm", "worker"]).code, 0);
    assert!(!node.instances().contains_key("worker"));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(node.instances().contains_key("worker"));
}
