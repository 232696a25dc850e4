//! The agent's traces (`docs/telemetry.md`), end to end as root: `berth agent`
//! following a `file://` repository (busybox from a loopback registry, runc and CNI)
//! with `telemetry.otlp_endpoint` on a loopback port.
//!
//! - A collector: a small Python HTTP server that decodes each request with the
//!   upstream OpenTelemetry definitions (the `opentelemetry-proto` package's
//!   `ExportTraceServiceRequest`). It receives one span per pass, with the revision and
//!   the trigger, and the pass's steps as its children, with the container, the action
//!   and the result; the agent's JSON log line of a step carries the revision, the
//!   container and the trace of that span (subnet 10.251.90.0/24).
//! - A dead collector: a listener that accepts connections and never answers. The
//!   passes still complete, and the spans of the exports that timed out are counted as
//!   dropped (a functional check, not a timing one; subnet 10.251.91.0/24).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_e2e::agentd::{Agent, poll};
use berth_e2e::{api_get, have_tools, missing};
use serde_json::Value;

use crate::agent_daemon::Host;

/// How long spans may take to reach the collector, and a drop to be counted (an
/// export times out after 10 s).
const WITHIN: Duration = Duration::from_secs(90);

/// The collector: prints its port, then one JSON line per span it received.
const COLLECTOR: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    print(json.dumps({
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "resource": resource,
                        "scope": ss.scope.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "name": s.name,
                        "start": s.start_time_unix_nano,
                        "end": s.end_time_unix_nano,
                        "attributes": {a.key: value(a.value) for a in s.attributes},
                        "status": s.status.code,
                    }), flush=True)
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The Python collector, killed on drop; its spans are read on a thread.
struct Collector {
    child: Child,
    port: u16,
    spans: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Collector {
    /// None (after [`missing`]) without the Python package.
    fn start() -> Option<Collector> {
        let probe = Command::new("python3")
            .args([
                "-c",
                "import opentelemetry.proto.collector.trace.v1.trace_service_pb2",
            ])
            .output()
            .unwrap();
        if !probe.status.success() {
            missing(&format!(
                "the python package opentelemetry-proto: {}",
                String::from_utf8_lossy(&probe.stderr)
            ));
            return None;
        }
        let mut child = Command::new("python3")
            .args(["-c", COLLECTOR])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines
            .next()
            .and_then(|l| l.ok())
            .and_then(|l| l.trim().parse().ok())
            .expect("the collector's port");
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect("a span as JSON");
                sink.lock().unwrap().push(v);
            }
        });
        Some(Collector { child, port, spans })
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `telemetry.otlp_endpoint = "http://127.0.0.1:PORT"` in the node's configuration;
/// the configuration check does not call it inert.
fn export_to(h: &Host, port: u16) {
    let mut config = std::fs::read_to_string(&h.node.config).unwrap();
    config.push_str(&format!(
        "\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\notlp_queue = 64\n"
    ));
    std::fs::write(&h.node.config, config).unwrap();
    let check = h.node.berth(&["agent", "--check"]);
    assert!(
        !check.stderr.contains("otlp"),
        "{}{}",
        check.stdout,
        check.stderr
    );
}

/// The agent's metrics from its API socket: sample (name and labels as written) →
/// value.
fn metrics(socket: &Path) -> BTreeMap<String, f64> {
    api_get(socket, "/metrics")
        .1
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

#[test]
fn each_pass_is_a_trace_of_its_steps_decoded_by_the_upstream_definitions() {
    if !have_tools(&["python3", "curl", "git"]) {
        return;
    }
    let Some(collector) = Collector::start() else {
        return;
    };
    let Some(mut h) = Host::on("10.251.90", "") else {
        return;
    };
    h.sleeper("web", 2190);
    let commit = h.push("web");
    h.follow(&h.repo.file_url());
    export_to(&h, collector.port);
    h.agent = Some(Agent::start_with_flags(&h.node, &["--log-format", "json"]));
    h.wait_converged(&commit);

    // The pass that started `web`: a span of its own, with its steps as children.
    let log = || h.agent.as_ref().map(Agent::log).unwrap_or_default();
    let (pass, steps) = poll(
        "the pass that started web, as spans",
        WITHIN,
        || {
            let spans = collector.spans();
            let pass = spans.iter().find(|s| {
                s["name"] == "reconcile pass"
                    && attr(s, "berth.revision") == commit.as_str()
                    && spans
                        .iter()
                        .any(|c| c["parent"] == s["span_id"] && attr(c, "berth.action") == "start")
            })?;
            let steps: Vec<Value> = spans
                .iter()
                .filter(|c| c["parent"] == pass["span_id"])
                .cloned()
                .collect();
            Some((pass.clone(), steps))
        },
        || format!("spans: {:#?}\n{}", collector.spans(), log()),
    );
    assert_eq!(pass["path"], "/v1/traces");
    assert_eq!(pass["content_type"], "application/x-protobuf");
    assert_eq!(pass["resource"]["service.name"], "berth");
    assert_eq!(pass["scope"], "berth");
    assert_eq!(pass["parent"], "", "a pass's span is a root");
    assert_eq!(pass["trace_id"].as_str().unwrap().len(), 32);
    // Usually the agent's first pass, converged; a loaded machine may need a retry.
    let trigger = attr(&pass, "berth.trigger").as_str().unwrap_or("");
    assert!(
        ["start", "retry", "interval", "resync"].contains(&trigger),
        "{pass}"
    );
    let result = attr(&pass, "berth.result").as_str().unwrap_or("");
    assert!(["converged", "not_converged"].contains(&result), "{pass}");
    assert!(pass["end"].as_u64() >= pass["start"].as_u64());
    // create and start (and the network), each a child in the pass's trace, within
    // the pass's time.
    let actions: Vec<&str> = steps
        .iter()
        .filter_map(|s| attr(s, "berth.action").as_str())
        .collect();
    for want in ["create", "start"] {
        assert!(actions.contains(&want), "{want} in {actions:?}: {steps:#?}");
    }
    assert_eq!(
        attr(&pass, "berth.steps").as_u64(),
        Some(steps.len() as u64),
        "{pass}"
    );
    for s in &steps {
        assert_eq!(s["trace_id"], pass["trace_id"], "{s}");
        assert_eq!(
            s["name"],
            format!("step {}", attr(s, "berth.action").as_str().unwrap())
        );
        let result = attr(s, "berth.result").as_str().unwrap_or("");
        assert!(["done", "reported"].contains(&result), "{s}");
        assert!(s["start"].as_u64() >= pass["start"].as_u64(), "{s}\n{pass}");
        assert!(s["end"].as_u64() <= pass["end"].as_u64(), "{s}\n{pass}");
        let action = attr(s, "berth.action").as_str().unwrap();
        if ["create", "start"].contains(&action) {
            assert_eq!(attr(s, "berth.container"), "web", "{s}");
        }
    }
    // One span per pass: each trace has one pass span, and every other span is a step
    // of one.
    let spans = collector.spans();
    let passes: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "reconcile pass")
        .collect();
    assert!(
        passes.iter().any(|p| attr(p, "berth.trigger") == "start"),
        "the agent's first pass: {passes:#?}"
    );
    let traces: std::collections::BTreeSet<&str> = passes
        .iter()
        .filter_map(|s| s["trace_id"].as_str())
        .collect();
    assert_eq!(traces.len(), passes.len(), "a trace per pass");
    for s in spans.iter().filter(|s| s["name"] != "reconcile pass") {
        assert!(
            passes
                .iter()
                .any(|p| p["span_id"] == s["parent"] && p["trace_id"] == s["trace_id"]),
            "a step span whose pass is not there: {s}"
        );
    }

    // The JSON log line of the step that started `web`: its revision, container,
    // action, and the trace of its span.
    let text = log();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["action"] == "start" && l["container"] == "web")
        .unwrap_or_else(|| panic!("no JSON line of the start step:\n{text}"));
    assert_eq!(line["revision"], commit.as_str(), "{line}");
    assert_eq!(line["trace_id"], pass["trace_id"], "{line}");
    assert_eq!(line["result"], "done", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");

    // Counted as exported, none dropped.
    let m = metrics(&h.node.run_dir().join("api.sock"));
    assert!(
        m["berth_otlp_spans_exported_total"] >= (steps.len() + 1) as f64,
        "{m:?}"
    );
    for reason in ["queue_full", "export_failed", "timeout"] {
        assert_eq!(
            m[&format!("berth_otlp_spans_dropped_total{{reason=\"{reason}\"}}")],
            0.0,
            "{m:?}"
        );
    }
}

#[test]
fn a_collector_that_never_answers_neither_stops_the_passes_nor_keeps_their_spans() {
    if !have_tools(&["curl", "git"]) {
        return;
    }
    // Accepts every connection and never answers (the connections are held open).
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    std::thread::spawn(move || {
        for c in dead.incoming().map_while(Result::ok) {
            holder.lock().unwrap().push(c);
        }
    });
    let Some(mut h) = Host::on("10.251.91", "") else {
        return;
    };
    h.sleeper("web", 2191);
    let commit = h.push("web");
    h.follow(&h.repo.file_url());
    export_to(&h, port);
    h.start();
    h.wait_converged(&commit);
    let socket = h.node.run_dir().join("api.sock");
    // The passes go on (resync every 2 s) while exports hang, and the spans of an
    // export that timed out are dropped and counted.
    let seen = poll(
        "passes going on and spans dropped",
        WITHIN,
        || {
            let m = metrics(&socket);
            let passes: f64 = m
                .iter()
                .filter(|(k, _)| k.starts_with("berth_reconcile_passes_total"))
                .map(|(_, v)| v)
                .sum();
            let dropped = m["berth_otlp_spans_dropped_total{reason=\"timeout\"}"];
            (passes >= 3.0 && dropped > 0.0).then_some(m)
        },
        || {
            format!(
                "{:?}\n{}",
                metrics(&socket),
                h.agent.as_ref().map(Agent::log).unwrap_or_default()
            )
        },
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the agent connected to the collector: {seen:?}"
    );
    assert_eq!(
        seen["berth_otlp_spans_exported_total"], 0.0,
        "nothing was exported: {seen:?}"
    );
    // The agent said so, once.
    let log = h.agent.as_ref().map(Agent::log).unwrap_or_default();
    assert_eq!(log.matches("trace export failed").count(), 1, "{log}");
}
