//! The agent's Prometheus metrics (`docs/metrics.md`), end to end as root: `berth
//! agent` following a `file://` repository (busybox from a loopback registry, runc and
//! CNI on 10.251.80.0/24) with `telemetry.metrics_listen` on a free loopback port, and
//! a real `prometheus` server (the Debian package) on another, scraping it every
//! second. Through Prometheus' HTTP API the test checks that the target is up, that
//! `berth_reconcile_passes_total` is above 0 and the running container is counted,
//! that the metadata API gives each metric the type and unit docs/metrics.md documents
//! (the table is parsed here, so the document and the test cannot diverge), and that a
//! container killed by hand shows as a restart and a pass woken by its exit.
//!
//! With the address taken by another process, the agent does not start, and says
//! which address. The exposition itself, from the metrics address and from the API
//! socket, is parsed strictly by the upstream Python parser of its content type
//! (`prometheus_client.openmetrics.parser`); every documented metric is in it with its
//! documented type and unit, and nothing undocumented is.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_e2e::agentd::{Agent, poll};
use berth_e2e::{api_get, have_tools, missing, workspace_root};
use serde_json::Value;

use crate::agent_daemon::Host;

/// The media type the agent serves.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How long Prometheus may take to start, scrape, and answer with what it scraped.
const SCRAPED_WITHIN: Duration = Duration::from_secs(60);

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// docs/metrics.md's table: name → (type, unit).
fn documented() -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(workspace_root().join("docs/metrics.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `berth_")) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        assert!(cells.len() >= 5, "a row of five cells: {line}");
        out.insert(cells[0].clone(), (cells[1].clone(), cells[3].clone()));
    }
    assert!(
        out.len() >= 10,
        "docs/metrics.md lists the metrics: {out:?}"
    );
    out
}

/// A metric's family, as `# TYPE` and the metadata API name it: a counter's name
/// without `_total`.
fn family<'a>(name: &'a str, kind: &str) -> &'a str {
    match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// `GET path` on `addr` over plain HTTP/1.0: (status, content type, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    get_with(addr, path, "")
}

/// [`get`] with `headers` (each line ending in CRLF) added to the request.
fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let mut c = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The exposition parsed by `prometheus_client.openmetrics.parser`: family →
/// `{type, unit, samples: [[name, labels, value]]}`; none (after [`missing`]) without
/// the Python package.
fn parse_openmetrics(text: &str) -> Option<BTreeMap<String, Value>> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "unit": f.unit,
                   "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("ModuleNotFoundError") {
            missing(&format!("the python package prometheus-client: {err}"));
            return None;
        }
        panic!("the OpenMetrics parser refused the exposition: {err}\n{text}");
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The sum of the samples `name` with `labels` (a subset of their labels); none when
/// there is no such sample.
fn value(parsed: &BTreeMap<String, Value>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = parsed
        .values()
        .filter_map(|f| f["samples"].as_array())
        .flatten()
        .filter(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .filter_map(|s| s[2].as_f64())
        .collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

/// A `prometheus` server on a loopback port of its own, its data in a temporary
/// directory, scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: berth\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}"));
        Prometheus { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/PATH`'s `data`, when the server answers with success.
    fn api(&self, path: &str) -> Option<Value> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-G"])
            .arg(format!("http://{}/api/v1/{path}", self.addr))
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    /// An instant query's value, summed over its series; none before it has samples.
    fn query(&self, promql: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-G", "--data-urlencode"])
            .arg(format!("query=sum({promql})"))
            .arg(format!("http://{}/api/v1/query", self.addr))
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_agent_and_its_metrics_are_as_documented() {
    if !have_tools(&["prometheus", "python3", "curl", "git"]) {
        return;
    }
    // A container killed by hand is restarted after a second.
    let Some(mut h) = Host::on("10.251.80", "restart_backoff = \"1s\"\n") else {
        return;
    };
    h.sleeper("web", 2180);
    let commit = h.push("web");
    h.follow(&h.repo.file_url());
    let listen = free_port();
    let mut config = std::fs::read_to_string(&h.node.config).unwrap();
    config.push_str(&format!("\n[telemetry]\nmetrics_listen = \"{listen}\"\n"));
    std::fs::write(&h.node.config, config).unwrap();
    // Not called inert by the configuration check.
    let check = h.node.berth(&["agent", "--check"]);
    assert!(
        !check.stderr.contains("metrics_listen"),
        "{}{}",
        check.stdout,
        check.stderr
    );
    // The address taken: the agent does not start, and says which address.
    let taken = TcpListener::bind(listen).unwrap();
    let mut refused = Agent::start(&h.node, None);
    let status = refused.wait(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "the agent ran with its metrics address taken:\n{}",
            refused.log()
        )
    });
    assert!(!status.success(), "{}", refused.log());
    assert!(
        refused.log().contains(&format!(
            "cannot listen for metrics scrapes on {listen} (`telemetry.metrics_listen`)"
        )),
        "{}",
        refused.log()
    );
    drop(refused);
    drop(taken);

    h.start();
    h.wait_converged(&commit);

    // The exposition, on the metrics address and on the API socket.
    let (status, content_type, text) = get(listen, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, OPENMETRICS);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(get(listen, "/v1/status").0, 404);
    // A client that asks for the classic text format only gets it.
    let (status, content_type, classic) =
        get_with(listen, "/metrics", "Accept: text/plain;version=0.0.4\r\n");
    assert_eq!(status, 200, "{classic}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        classic.contains("# TYPE berth_reconcile_passes_total counter\n")
            && !classic.contains("# EOF"),
        "{classic}"
    );
    let (content_type, on_socket) = api_get(&h.node.run_dir().join("api.sock"), "/metrics");
    assert_eq!(content_type, OPENMETRICS);
    let docs = documented();
    for (text, whence) in [(&text, "metrics_listen"), (&on_socket, "the API socket")] {
        let Some(parsed) = parse_openmetrics(text) else {
            return;
        };
        let exposed: BTreeMap<&str, (&str, &str)> = parsed
            .iter()
            .map(|(n, f)| {
                (
                    n.as_str(),
                    (
                        f["type"].as_str().unwrap_or(""),
                        f["unit"].as_str().unwrap_or(""),
                    ),
                )
            })
            .collect();
        let want: BTreeMap<&str, (&str, &str)> = docs
            .iter()
            .map(|(n, (t, u))| (family(n, t), (t.as_str(), u.as_str())))
            .collect();
        assert_eq!(
            exposed, want,
            "{whence}: the exposition and docs/metrics.md"
        );
        // One pass was the agent's first; it pulled the image and started `web`.
        let passes = value(
            &parsed,
            "berth_reconcile_passes_total",
            &[("trigger", "start")],
        );
        assert_eq!(passes, Some(1.0), "{whence}:\n{text}");
        assert_eq!(
            value(&parsed, "berth_image_pulls_total", &[("result", "pulled")]),
            Some(1.0),
            "{whence}:\n{text}"
        );
        assert!(
            value(&parsed, "berth_image_pull_bytes_total", &[]).is_some_and(|b| b > 1000.0),
            "{whence}:\n{text}"
        );
        assert_eq!(
            value(
                &parsed,
                "berth_reconcile_steps_total",
                &[("action", "start"), ("result", "done")]
            ),
            Some(1.0),
            "{whence}:\n{text}"
        );
        assert!(
            value(
                &parsed,
                "berth_source_fetches_total",
                &[("result", "fetched")]
            )
            .is_some_and(|n| n >= 1.0),
            "{whence}:\n{text}"
        );
        assert_eq!(
            value(
                &parsed,
                "berth_containers",
                &[("state", "running"), ("health", "none")]
            ),
            Some(1.0),
            "{whence}:\n{text}"
        );
    }

    // A real Prometheus scrapes it.
    let prom = Prometheus::start(listen);
    let context = || format!("prometheus:\n{}\n{}", prom.log(), h.context());
    let target = poll(
        "Prometheus' target up",
        SCRAPED_WITHIN,
        || {
            let targets = prom.api("targets")?;
            let t = targets["activeTargets"].as_array()?.first()?.clone();
            (t["health"] == "up").then_some(t)
        },
        context,
    );
    assert_eq!(
        target["scrapeUrl"],
        format!("http://{listen}/metrics"),
        "{target}"
    );
    let passes = poll(
        "berth_reconcile_passes_total in Prometheus",
        SCRAPED_WITHIN,
        || prom.query("berth_reconcile_passes_total"),
        context,
    );
    assert!(passes > 0.0, "{passes}");
    let running = poll(
        "berth_containers in Prometheus",
        SCRAPED_WITHIN,
        || prom.query("berth_containers{state=\"running\"}"),
        context,
    );
    assert_eq!(running, 1.0);
    // The metadata API, by family: each metric with samples has its documented type
    // and unit.
    let with_samples: Vec<(&str, &str, &str)> = docs
        .iter()
        .map(|(n, (t, u))| (n.as_str(), t.as_str(), u.as_str()))
        .filter(|(n, t, _)| {
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(family(n, t)))
        })
        .collect();
    assert!(with_samples.len() >= 8, "{with_samples:?}");
    let metadata = poll(
        "the metadata of every metric with samples",
        SCRAPED_WITHIN,
        || {
            let m = prom.api("metadata")?;
            with_samples
                .iter()
                .all(|(n, t, _)| !m[family(n, t)].is_null())
                .then_some(m)
        },
        context,
    );
    for (name, kind, unit) in &with_samples {
        let entry = &metadata[family(name, kind)];
        assert_eq!(
            entry[0]["type"], *kind,
            "{name} in Prometheus' metadata: {entry}"
        );
        assert_eq!(
            entry[0]["unit"], *unit,
            "{name} in Prometheus' metadata: {entry}"
        );
    }

    // web's process killed by hand: the exit wakes a pass, which restarts it; both
    // are counted.
    let pid = h.ps()["web"]["pid"].as_u64().expect("web's pid");
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let restarts = poll(
        "berth_container_restarts_total above 0 in Prometheus",
        SCRAPED_WITHIN,
        || {
            prom.query("berth_container_restarts_total")
                .filter(|n| *n > 0.0)
        },
        context,
    );
    assert_eq!(restarts, 1.0, "{}", context());
    assert_eq!(h.ps()["web"]["restarts"], 1, "{}", context());
    let exits = prom.query("berth_reconcile_passes_total{trigger=\"exit\"}");
    assert!(exits.is_some_and(|n| n >= 1.0), "{exits:?}\n{}", context());
}
