//! `berth apply` end to end, as root: a loopback registry with fixture images, the
//! webapp example (image references rewritten to the pushed digest, its port to a free
//! one), real runc containers, CNI networks, a volume and an age secret.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::registry::{TestRegistry, free_port};
use berth_e2e::{Run, berth, have_tools, is_root, workspace_root};

/// A node with its own state, run dir, registry, spec tree and subnet; tears every
/// container down on drop by applying an empty tree.
struct Node {
    _reg: TestRegistry,
    dir: tempfile::TempDir,
    config: PathBuf,
    spec: PathBuf,
    port: u16,
}

impl Node {
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    fn berth(&self, args: &[&str]) -> Run {
        let out = berth()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("BERTH_SHIM_BIN", berth_e2e::shim_bin())
            .output()
            .unwrap();
        Run::from(out)
    }
    fn apply(&self) -> Run {
        self.berth(&["apply", &self.spec.to_string_lossy()])
    }
    /// The running containers as `berth ps --format json` lists them.
    fn ps(&self) -> serde_json::Value {
        let r = self.berth(&["ps", "-a", "--format", "json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }
    /// `ps` without what changes by the clock alone (the uptime text).
    fn ps_stable(&self) -> serde_json::Value {
        let mut ps = self.ps();
        for c in ps.as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("uptime");
        }
        ps
    }
    fn instance(&self, name: &str) -> String {
        let ps = self.ps();
        ps.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["instance"].as_str())
            .unwrap_or_else(|| panic!("no container {name} in {ps}"))
            .to_string()
    }
    /// Runs a command in a container with runc directly (the test's own view).
    fn exec(&self, name: &str, cmd: &[&str]) -> String {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.run_dir().join("runc"))
            .arg("exec")
            .arg(self.instance(name))
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} in {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let empty = self.dir.path().join("empty");
        let _ = std::fs::create_dir_all(&empty);
        let r = self.berth(&["apply", &empty.to_string_lossy()]);
        if r.code != 0 {
            eprintln!("teardown apply failed: {}{}", r.stdout, r.stderr);
        }
    }
}

fn setup(subnet: &str) -> Option<Node> {
    if !is_root() || !have_tools(&["runc", "docker-registry"]) || !fixture::have_busybox() {
        return None;
    }
    let reg = TestRegistry::start()?;
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "berth/demo", "v1", &image);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("webapp");
    std::fs::create_dir_all(spec.join("secrets")).unwrap();
    let root = workspace_root();
    let port = free_port();
    let text = std::fs::read_to_string(root.join("examples/webapp/webapp.toml")).unwrap();
    let text = rewrite_images(&text, &format!("{}/berth/demo@{digest}", reg.host()))
        .replace("127.0.0.1:8080:8080", &format!("127.0.0.1:{port}:8080"))
        .replace("10.89.7.0/24", subnet);
    std::fs::write(spec.join("webapp.toml"), text).unwrap();
    std::fs::copy(
        root.join("examples/webapp/secrets/db-password.age"),
        spec.join("secrets/db-password.age"),
    )
    .unwrap();
    let config = dir.path().join("node.toml");
    let identity = root.join("examples/keys/demo-node.age.key");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"edge-test\"\n[policy]\nprofile = \"restricted\"\nmode = \"enforce\"\n\
             [runtime]\noci_runtime = \"runc\"\nstate_dir = {:?}\nrun_dir = {:?}\n\
             [registries.\"{}\"]\ninsecure = true\n[secrets]\nidentity = {:?}\n",
            dir.path().join("state"),
            dir.path().join("run"),
            reg.host(),
            identity
        ),
    )
    .unwrap();
    Some(Node {
        _reg: reg,
        dir,
        config,
        spec,
        port,
    })
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
    let Some(node) = setup("10.251.7.0/24") else {
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
    assert_eq!(node.exec("web", &["id", "-u"]).trim(), "10001");
    assert_eq!(node.exec("web", &["id", "-g"]).trim(), "10001");
    let status = node.exec("web", &["cat", "/proc/self/status"]);
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
    let stat = node.exec(
        "store",
        &["stat", "-c", "%a %u %g", "/run/secrets/db-password"],
    );
    assert_eq!(stat.trim(), "400 10001 10001");
    assert_eq!(
        node.exec("store", &["cat", "/run/secrets/db-password"]),
        "correct-horse-battery-staple"
    );

    // A peer answers by name over the bridge network; the published port on loopback.
    let page = node.exec("worker", &["wget", "-q", "-O-", "http://web:8080/"]);
    assert_eq!(page, "hello from berth\n");
    let mut body = String::new();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
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
    assert!(cgroup.ends_with(&node.instance("web")), "{cgroup}");
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(cgroup)
        .join("memory.limit_in_bytes");
    let v2 = Path::new("/sys/fs/cgroup").join(cgroup).join("memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // A second apply changes nothing: same instances, same pids.
    let before = node.ps_stable();
    let r = node.apply();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains("create"),
        "second apply planned work:\n{}",
        r.stdout
    );
    assert_eq!(node.ps_stable(), before);
}

impl Node {
    fn edit(&self, f: impl FnOnce(String) -> String) {
        let path = self.spec.join("webapp.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, f(text)).unwrap();
    }
    fn instances(&self) -> std::collections::BTreeMap<String, String> {
        self.ps()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["instance"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

#[test]
fn apply_updates_exactly_what_changed_and_keeps_data() {
    let Some(node) = setup("10.251.8.0/24") else {
        return;
    };
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    node.exec("store", &["sh", "-c", "echo kept > /data/keep"]);
    let first = node.instances();

    // One env value of web: only web is recreated.
    node.edit(|t| t.replace("LOG_LEVEL = \"info\"", "LOG_LEVEL = \"warn\""));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("env LOG_LEVEL changed"), "{}", r.stdout);
    let second = node.instances();
    assert_ne!(second["web"], first["web"]);
    assert_eq!(second["store"], first["store"]);
    assert_eq!(second["worker"], first["worker"]);
    assert_eq!(
        node.exec("web", &["sh", "-c", "echo $LOG_LEVEL"]).trim(),
        "warn"
    );

    // The store is recreated; its named volume keeps the data.
    node.edit(|t| t.replace("stop_timeout = \"5s\"", "stop_timeout = \"6s\""));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_ne!(node.instances()["store"], second["store"]);
    assert_eq!(node.exec("store", &["cat", "/data/keep"]).trim(), "kept");
    assert!(node.state().join("volumes/store-data/keep").is_file());

    // Enforce mode: a change the policy forbids is not applied; the old web runs on.
    let running = node.instances()["web"].clone();
    node.edit(|t| {
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
    assert_eq!(node.exec("web", &["id", "-u"]).trim(), "10001");

    // Removing a spec removes its container.
    node.edit(|t| {
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
    let Some(node) = setup("10.251.9.0/24") else {
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
    let ps = node.ps();
    let worker = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "worker")
        .unwrap()
        .clone();
    assert!(
        worker["state"].as_str().unwrap().contains("stopped"),
        "{worker}"
    );
    assert_eq!(node.berth(&["start", "worker"]).code, 0);
    let ps = node.ps();
    let worker = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "worker")
        .unwrap()
        .clone();
    assert_eq!(worker["state"], "running", "{worker}");

    // rm removes it; the next apply creates it again.
    assert_eq!(node.berth(&["rm", "worker"]).code, 0);
    assert!(!node.instances().contains_key("worker"));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(node.instances().contains_key("worker"));
}
