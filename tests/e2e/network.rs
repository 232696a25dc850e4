//! Networks end to end, as root, with the real CNI plugins: the hidden `berth network
//! create|attach|detach|rm` commands drive the same API as the executor. Two instances
//! on one network reach each other by address, a published `127.0.0.1` port reaches a
//! listener, and after detach + rm nothing is left: no bridge or veth on it, no
//! host-local allocation, no iptables chain or rule of the instances or the subnet, no
//! netns mount or file, no record. A 50-cycle attach/detach loop checks the same.
//!
//! Listeners are busybox `httpd` processes started in the namespaces with
//! `nsenter --net=<path>`; clients are `busybox wget` (without `-T`, which crashes in
//! busybox 1.35; `timeout` bounds them). All traffic stays on loopback or inside the
//! namespaces and bridges these tests create; each test has its own state/run dirs,
//! subnet (10.250.10x.0/24) and instance ids, so they run side by side.
//!
//! Debian packages: containernetworking-plugins, iptables, iproute2, util-linux
//! (nsenter), busybox-static, coreutils (timeout, sha512sum).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::{berth, have_tools, is_root, missing};
use serde_json::Value;

const PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "firewall", "loopback"];

fn cni_path() -> String {
    std::env::var("BERTH_CNI_PATH").unwrap_or_else(|_| "/usr/lib/cni:/opt/cni/bin".into())
}

fn prerequisites() -> bool {
    if !is_root()
        || !have_tools(&[
            "nsenter",
            "busybox",
            "iptables-save",
            "timeout",
            "sha512sum",
        ])
    {
        return false;
    }
    for p in PLUGINS {
        let found = cni_path()
            .split(':')
            .any(|d| Path::new(d).join(p).is_file());
        if !found {
            return missing(&format!("CNI plugin `{p}` in {}", cni_path()));
        }
    }
    true
}

/// A state/run dir pair, one network, and cleanup on drop (also on failure).
struct Env {
    dir: tempfile::TempDir,
    network: String,
    ids: Vec<String>,
    listeners: Vec<Child>,
}

impl Env {
    fn new(network: &str, subnet: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-net-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("berth.toml"), "").unwrap();
        let env = Env {
            dir,
            network: network.into(),
            ids: Vec::new(),
            listeners: Vec::new(),
        };
        env.ok(&["create", network, "--subnet", subnet]);
        env
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn berth(&self, args: &[&str]) -> (i32, String, String) {
        let d = self.dir.path();
        let out = berth()
            .arg("--config")
            .arg(d.join("berth.toml"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(["network", "--cni-path", &cni_path()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.berth(args);
        assert_eq!(code, 0, "berth network {args:?}: {out}{err}");
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Attaches `id` (container `name`) to the network; returns its netns and address.
    fn attach(&mut self, id: &str, name: &str, extra: &[&str]) -> (PathBuf, String) {
        self.ids.push(id.into());
        let net = self.network.clone();
        let mut args = vec!["attach", id, "--container", name, "--network", &net];
        args.extend(extra);
        let v = self.json(&args);
        (
            PathBuf::from(v["netns_path"].as_str().unwrap()),
            v["addresses"][&net].as_str().unwrap().to_string(),
        )
    }

    /// A busybox httpd serving `text` on port 8080 inside `netns`.
    fn listen(&mut self, netns: &Path, text: &str) {
        let www = self
            .dir
            .path()
            .join(format!("www-{}", self.listeners.len()));
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), text).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["busybox", "httpd", "-f", "-p", "8080", "-h"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.listeners.push(child);
    }

    fn stop_listeners(&mut self) {
        for mut c in self.listeners.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_listeners();
        for id in self.ids.clone() {
            let _ = self.berth(&["detach", &id]);
        }
        let _ = self.berth(&["rm", &self.network.clone()]);
    }
}

/// GETs `url` (from inside `netns` if given), retrying while the listener starts.
fn fetch(netns: Option<&Path>, url: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut cmd = Command::new("timeout");
        cmd.arg("5");
        if let Some(ns) = netns {
            cmd.arg("nsenter").arg(format!("--net={}", ns.display()));
        }
        let out = cmd
            .args(["busybox", "wget", "-q", "-O-", url])
            .output()
            .unwrap();
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The chain names the bridge (ipMasq) and portmap plugins derive from (CNI network
/// name, container id): `CNI-` + 24 and `CNI-DN-` + 21 hex digits of SHA-512.
fn plugin_chains(cni_name: &str, id: &str) -> [String; 2] {
    let out = Command::new("sh")
        .args([
            "-c",
            "printf '%s' \"$1\" | sha512sum",
            "sh",
            &format!("{cni_name}{id}"),
        ])
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout).to_string();
    [
        format!("CNI-{}", &hex[..24]),
        format!("CNI-DN-{}", &hex[..21]),
    ]
}

/// Everything the network left behind: empty means no leak.
fn leftovers(env: &Env, bridge: &str, cni_name: &str, subnet_prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let (code, out, err) = env.berth(&["audit"]);
    if code != 0 {
        found.push(format!("berth network audit: {out}{err}"));
    }
    let sys = Path::new("/sys/class/net").join(bridge);
    if sys.exists() {
        let members = std::fs::read_dir(sys.join("brif"))
            .map(|d| d.count())
            .unwrap_or(0);
        found.push(format!("bridge {bridge} with {members} veth(s)"));
    }
    let ipam = env.state().join("cni/ipam");
    for entry in walk(&ipam) {
        found.push(format!("host-local file {}", entry.display()));
    }
    let rules = Command::new("iptables-save").output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    for line in rules.lines() {
        let by_id = env.ids.iter().any(|id| {
            line.contains(&format!("id: \"{id}\""))
                || plugin_chains(cni_name, id)
                    .iter()
                    .any(|c| line.contains(c.as_str()))
        });
        if by_id || line.contains(subnet_prefix) || line.contains(cni_name) {
            found.push(format!("iptables: {line}"));
        }
    }
    let run = env.run_dir().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mounts.lines().filter(|l| l.contains(&run)) {
        found.push(format!("mount: {line}"));
    }
    for f in walk(&env.run_dir().join("netns")) {
        found.push(format!("netns file {}", f.display()));
    }
    for f in walk(&env.state().join("cni/attachments")) {
        found.push(format!("attachment record {}", f.display()));
    }
    found
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn peers_reach_each_other_and_a_published_port_then_nothing_leaks() {
    if !prerequisites() {
        return;
    }
    let pid = std::process::id();
    let mut env = Env::new("e2e", "10.250.101.0/24");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let (a_id, b_id) = (format!("pa-{pid}"), format!("pb-{pid}"));
    let (ns_a, ip_a) = env.attach(&a_id, "alpha", &["--publish", &publish]);
    let (ns_b, ip_b) = env.attach(&b_id, "beta", &["--hostname", "beta-host"]);
    assert!(ip_a.starts_with("10.250.101.") && ip_b.starts_with("10.250.101."));
    assert_eq!(ns_a, env.run_dir().join("netns").join(&a_id));

    let info = env.json(&["inspect", "e2e"]);
    assert_eq!(info["kind"], "network");
    assert_eq!(info["bridge_up"], true, "{info}");
    assert_eq!(info["containers"].as_array().unwrap().len(), 2, "{info}");
    let bridge = info["bridge"].as_str().unwrap().to_string();
    let cni_name = info["cni_name"].as_str().unwrap().to_string();
    assert_eq!(bridge.len(), 15);

    // Each hosts file names the peer (the first one was rewritten when beta came).
    let hosts_a =
        std::fs::read_to_string(env.state().join("instances").join(&a_id).join("hosts")).unwrap();
    assert!(
        hosts_a.contains(&format!("{ip_b}\tbeta-host beta\n")),
        "{hosts_a}"
    );
    let hosts_b =
        std::fs::read_to_string(env.state().join("instances").join(&b_id).join("hosts")).unwrap();
    assert!(hosts_b.contains(&format!("{ip_a}\talpha\n")), "{hosts_b}");
    assert!(
        env.state()
            .join("instances")
            .join(&a_id)
            .join("resolv.conf")
            .is_file()
    );

    env.listen(&ns_a, "from alpha");
    env.listen(&ns_b, "from beta");
    let got = fetch(Some(&ns_a), &format!("http://{ip_b}:8080/"));
    assert_eq!(
        got.as_deref(),
        Some("from beta"),
        "alpha reaches beta by address"
    );
    let got = fetch(None, &format!("http://127.0.0.1:{port}/"));
    assert_eq!(
        got.as_deref(),
        Some("from alpha"),
        "the published port reaches alpha"
    );
    // The loopback plugin brought `lo` up in the namespace.
    let got = fetch(Some(&ns_b), "http://127.0.0.1:8080/");
    assert_eq!(got.as_deref(), Some("from beta"));

    env.stop_listeners();
    env.ok(&["detach", &a_id]);
    let hosts_b =
        std::fs::read_to_string(env.state().join("instances").join(&b_id).join("hosts")).unwrap();
    assert!(
        !hosts_b.contains("alpha"),
        "peers forget a detached instance: {hosts_b}"
    );
    env.ok(&["detach", &b_id]);
    env.ok(&["detach", &b_id]);
    env.ok(&["rm", "e2e"]);
    let left = leftovers(&env, &bridge, &cni_name, "10.250.101.");
    assert!(left.is_empty(), "leftovers:\n{}", left.join("\n"));
}

#[test]
fn fifty_attach_detach_cycles_leave_nothing() {
    if !prerequisites() {
        return;
    }
    let pid = std::process::id();
    let mut env = Env::new("cycle", "10.250.102.0/24");
    let publish = format!("127.0.0.1:{}:8080", free_port());
    // Half the cycles publish a port (bridge + portmap + firewall), half do not.
    let mut times: [(Vec<Duration>, Vec<Duration>); 2] = Default::default();
    for i in 0..50 {
        let id = format!("cy{i}-{pid}");
        let ports: &[&str] = if i < 25 {
            &["--publish", &publish]
        } else {
            &[]
        };
        let t = Instant::now();
        env.attach(&id, "cycler", ports);
        times[usize::from(i >= 25)].0.push(t.elapsed());
        let t = Instant::now();
        env.ok(&["detach", &id]);
        times[usize::from(i >= 25)].1.push(t.elapsed());
    }
    let info = env.json(&["inspect", "cycle"]);
    let bridge = info["bridge"].as_str().unwrap().to_string();
    let cni_name = info["cni_name"].as_str().unwrap().to_string();
    let members = std::fs::read_dir(Path::new("/sys/class/net").join(&bridge).join("brif"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(members, 0, "veths left on the bridge after 50 cycles");
    // host-local keeps only its lock and last-reserved marker once every IP is released.
    let allocations: Vec<PathBuf> = walk(&env.state().join("cni/ipam").join(&cni_name))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "lock" && !name.starts_with("last_reserved_ip")
        })
        .collect();
    assert!(
        allocations.is_empty(),
        "IPs still allocated: {allocations:?}"
    );
    // A `berth` run that does no network work: the process and config overhead.
    let t = Instant::now();
    env.ok(&["ls"]);
    let overhead = t.elapsed();
    env.ok(&["rm", "cycle"]);
    let left = leftovers(&env, &bridge, &cni_name, "10.250.102.");
    assert!(left.is_empty(), "leftovers:\n{}", left.join("\n"));
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let [(pa, pd), (na, nd)] = &mut times;
    eprintln!(
        "network cycle, one berth process per step (medians of 25): with a published port attach {:?} / detach {:?}; without ports attach {:?} / detach {:?}; process overhead (`berth network ls`) {:?}",
        median(pa),
        median(pd),
        median(na),
        median(nd),
        overhead
    );
}

#[test]
fn attach_and_detach_are_idempotent() {
    if !prerequisites() {
        return;
    }
    let pid = std::process::id();
    let mut env = Env::new("idem", "10.250.103.0/24");
    let id = format!("id-{pid}");
    let (ns, ip) = env.attach(&id, "same", &[]);
    let (ns2, ip2) = env.attach(&id, "same", &[]);
    assert_eq!((ns, ip), (ns2, ip2), "a second attach returns the first");
    let (code, _, err) = env.berth(&["rm", "idem"]);
    assert_eq!(code, 1, "a network in use is not removed: {err}");
    assert!(err.contains("is in use by"), "{err}");
    let info = env.json(&["inspect", "idem"]);
    let (bridge, cni_name) = (
        info["bridge"].as_str().unwrap().to_string(),
        info["cni_name"].as_str().unwrap().to_string(),
    );
    env.ok(&["detach", &id]);
    env.ok(&["detach", &id]);
    env.ok(&["detach", "never-attached"]);
    env.ok(&["rm", "idem"]);
    env.ok(&["rm", "idem"]);
    let left = leftovers(&env, &bridge, &cni_name, "10.250.103.");
    assert!(left.is_empty(), "leftovers:\n{}", left.join("\n"));
}
