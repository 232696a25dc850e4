//! Benchmark: load and validate a generated tree of 1,000 containers in 200 files.
//!
//! `cargo bench -p berth-spec --bench load` prints the median and min/max of the read,
//! parse+validate and total times over several runs. Target: total under 100 ms.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

const FILES: usize = 200;
const PER_FILE: usize = 5;
const RUNS: usize = 15;

fn container(i: usize) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"
[container.app-{i}]
image = "registry.example.com/fleet/app-{m}@sha256:{d:064x}"
user = "{uid}:{uid}"
command = ["/bin/httpd", "-f", "-p", "8080"]
env = {{ LOG_LEVEL = "info", INDEX = "{i}" }}
networks = ["net-{n}"]
ports = ["127.0.0.1:{port}:8080/tcp"]
depends_on = [{dep}]
read_only = true
cap_drop = ["ALL"]
cap_add = ["NET_BIND_SERVICE"]
labels = {{ team = "t{m}" }}
nodes = {{ names = ["edge-*"], labels = {{ site = "s{site}" }} }}

[container.app-{i}.resources]
memory = "64MiB"
cpus = 0.25
pids = 64

[container.app-{i}.health]
http = "http://127.0.0.1:8080/health"
interval = "10s"

[[container.app-{i}.mounts]]
volume = "data-{n}"
target = "/data"

[[container.app-{i}.mounts]]
tmpfs = "/tmp"
size = "16MiB"
"#,
        m = i % 17,
        d = i + 1,
        uid = 10000 + i,
        n = i % 20,
        port = 10000 + i,
        dep = if i % PER_FILE == 0 { String::new() } else { format!("\"app-{}\"", i - 1) },
        site = i % 7,
    );
    s
}

fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut net = String::new();
    for n in 0..20 {
        let _ = writeln!(net, "[network.net-{n}]\nsubnet = \"10.{}.{n}.0/24\"\n[volume.data-{n}]\n", 90);
    }
    for f in 0..FILES - 1 {
        let sub = dir.path().join(format!("team-{}", f % 10));
        std::fs::create_dir_all(&sub).unwrap_or_else(|e| panic!("{e}"));
        let text: String = (0..PER_FILE).map(|k| container(f * PER_FILE + k)).collect();
        std::fs::write(sub.join(format!("apps-{f}.toml")), text).unwrap_or_else(|e| panic!("{e}"));
    }
    // The last file holds the remaining containers so the total is exactly 1,000.
    // It also defines the shared networks and volumes.
    let rest: String = ((FILES - 1) * PER_FILE..FILES * PER_FILE).map(container).collect();
    let rest = format!("{net}{rest}");
    std::fs::write(dir.path().join("last.toml"), rest).unwrap_or_else(|e| panic!("{e}"));

    let mut reads = Vec::new();
    let mut checks = Vec::new();
    let mut totals = Vec::new();
    let mut summary = String::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let tree = berth_spec::loader::load_tree(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let t1 = Instant::now();
        let checked = berth_spec::check(&tree, None);
        let t2 = Instant::now();
        assert!(checked.errors.is_empty(), "generated tree must be valid: {:?}", &checked.errors[..checked.errors.len().min(3)]);
        summary = format!(
            "{} containers, {} networks, {} volumes in {} files",
            checked.state.containers.len(),
            checked.state.networks.len(),
            checked.state.volumes.len(),
            checked.state.files.len()
        );
        reads.push(t1 - t0);
        checks.push(t2 - t1);
        totals.push(t2 - t0);
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        format!(
            "median {:7.2} ms  (min {:.2}, max {:.2})",
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[0].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3
        )
    };
    println!("berth-spec load benchmark: {summary}, {RUNS} runs");
    println!("  read tree        {}", stats(&mut reads));
    println!("  parse + validate {}", stats(&mut checks));
    println!("  total            {}", stats(&mut totals));
}
