//! Trace export: OTLP over HTTP with protobuf bodies (`POST <otlp_endpoint>/v1/traces`),
//! in the background, through a bounded queue (`telemetry.otlp_queue` spans).
//!
//! The pass runs in a process of its own and reports its steps with their times
//! (`PassSamples`); the agent makes the spans from that report, one span per pass with
//! a child span per step ([`pass_spans`]), in the trace whose id the pass's step log
//! lines carry. One exporter and one queue per agent ([`Exporter`]):
//! [`Exporter::send`] never waits — a span that does not fit in the queue is dropped
//! and counted — and a task on the agent's runtime sends batches to the collector. A
//! batch the collector refuses, cannot take or does not answer within
//! [`EXPORT_TIMEOUT`] is dropped and counted (`berth_otlp_spans_dropped_total`): a
//! slow or dead collector never slows or stops a pass.
//!
//! The body is an `ExportTraceServiceRequest` of the OpenTelemetry protocol, encoded
//! here (the few messages a span needs) rather than with the OpenTelemetry SDK: the
//! SDK's batch processor neither counts its drops nor runs on the agent's runtime
//! (docs/decisions.md). `docs/telemetry.md` lists the spans and their attributes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::metrics::{Metrics, PassEnd, PassSamples, PassTrigger, SpanDrop};
use crate::reconcile::worker::{PassFailure, WorkerResult};

/// How long one export may take, connection included, before its spans are dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a collector's answer read (its body is not used).
const ANSWER_PREFIX: usize = 4 * 1024;
/// How long that part of the answer may take once its status came.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// The most spans in one request.
const MAX_BATCH: usize = 512;
/// The instrumentation scope of every span.
const SCOPE: &str = "berth";

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    /// Unix nanoseconds.
    pub start: u64,
    pub end: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// The span ended in an error, with this message.
    pub error: Option<String>,
}

/// `n` random bytes from the kernel; a clock-and-hash mix if it cannot give them (an id
/// must only be unlikely to repeat).
pub fn random_id<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut out = [0u8; N];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .is_ok()
        && out.iter().any(|b| *b != 0)
    {
        return out;
    }
    use std::hash::{BuildHasher, Hasher};
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(unix_nanos(SystemTime::now()).into());
        h.write_u32(std::process::id());
        let bytes = h.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    out
}

/// `t` in nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The 16 bytes of a trace id written as 32 hex digits; none when it is not one.
fn trace_id_of(hex_id: &str) -> Option<[u8; 16]> {
    let bytes = hex::decode(hex_id).ok()?;
    let id: [u8; 16] = bytes.try_into().ok()?;
    (id != [0; 16]).then_some(id)
}

/// What the agent knows of a pass when it ends.
#[derive(Debug, Clone, Copy)]
pub struct PassEnded<'a> {
    pub trigger: PassTrigger,
    pub end: PassEnd,
    /// The revision it ran on.
    pub revision: Option<&'a str>,
    /// Why it did not converge or failed.
    pub message: Option<&'a str>,
    pub started: SystemTime,
    pub took: Duration,
    pub samples: &'a PassSamples,
}

static NO_SAMPLES: PassSamples = PassSamples {
    steps: Vec::new(),
    pulls: Vec::new(),
    trace_id: None,
};

impl<'a> PassEnded<'a> {
    /// A pass as its process reported it (or failed to).
    pub fn of(
        trigger: PassTrigger,
        result: &'a WorkerResult,
        started: SystemTime,
        took: Duration,
    ) -> PassEnded<'a> {
        match result {
            Ok(run) => PassEnded {
                trigger,
                end: PassEnd::of(&run.result),
                revision: run.revision.as_deref(),
                message: run.message.as_deref(),
                started,
                took,
                samples: &run.samples,
            },
            Err(failure) => PassEnded {
                trigger,
                end: PassEnd::Failed,
                revision: None,
                message: Some(match failure {
                    PassFailure::Fetch { message }
                    | PassFailure::Failed { message }
                    | PassFailure::Crashed { message } => message,
                }),
                started,
                took,
                samples: &NO_SAMPLES,
            },
        }
    }
}

/// The spans of one pass: the pass's span, then one per step that ran or was decided
/// (each a child of the pass's). Pure.
pub fn pass_spans(pass: &PassEnded<'_>) -> Vec<Span> {
    let trace_id = pass
        .samples
        .trace_id
        .as_deref()
        .and_then(trace_id_of)
        .unwrap_or_else(random_id::<16>);
    let pass_id = random_id::<8>();
    let start = unix_nanos(pass.started);
    let end = start.saturating_add(u64::try_from(pass.took.as_nanos()).unwrap_or(u64::MAX));
    let mut attributes = vec![
        ("berth.trigger", text(pass.trigger.as_str())),
        ("berth.result", text(pass.end.as_str())),
        ("berth.steps", Value::Int(pass.samples.steps.len() as i64)),
    ];
    if let Some(r) = pass.revision {
        attributes.insert(0, ("berth.revision", text(r)));
    }
    let failed = matches!(pass.end, PassEnd::Failed);
    // A failed pass's message is its status's, once.
    if let Some(m) = pass.message
        && matches!(pass.end, PassEnd::NotConverged)
    {
        attributes.push(("berth.message", text(m)));
    }
    let mut spans = vec![Span {
        trace_id,
        span_id: pass_id,
        parent: None,
        name: "reconcile pass".into(),
        start,
        end,
        attributes,
        error: failed.then(|| capped(pass.message.unwrap_or("the pass failed"), MESSAGE_MAX)),
    }];
    for step in &pass.samples.steps {
        // A step that did not run (skipped, deferred, a report) is a point at the
        // pass's end.
        let s_start = step.started_ns.unwrap_or(end);
        let s_end = s_start.saturating_add(step.took_ns.unwrap_or(0));
        let action = capped(&step.action, MESSAGE_MAX);
        let mut attributes = vec![
            ("berth.action", Value::Str(action.clone())),
            ("berth.result", text(&step.result)),
        ];
        if let Some(c) = &step.container {
            attributes.push(("berth.container", text(c)));
        }
        // The error of a failed or refused step is its status's message, once (as
        // OpenTelemetry has it); another step's (a report's reason) is an attribute.
        let is_error = step.result == "failed" || step.result == "refused";
        if let Some(e) = step.error.as_deref().filter(|_| !is_error) {
            attributes.push(("berth.error", text(e)));
        }
        spans.push(Span {
            trace_id,
            span_id: random_id::<8>(),
            parent: Some(pass_id),
            name: format!("step {action}"),
            start: s_start,
            end: s_end,
            attributes,
            error: is_error
                .then(|| capped(step.error.as_deref().unwrap_or(&step.result), MESSAGE_MAX)),
        });
    }
    spans
}

// ---------------------------------------------------------------------------------
// Protobuf encoding (opentelemetry/proto/collector/trace/v1/trace_service.proto and
// the messages it uses). Field numbers are the upstream ones; the e2e test decodes
// the bodies with the upstream definitions.

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    bytes_field(out, field, &inner);
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1;
/// bool_value = 2; int_value = 3 }`.
fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(out, field, |kv| {
        bytes_field(kv, 1, key.as_bytes());
        message(kv, 2, |any| match value {
            Value::Str(s) => bytes_field(any, 1, s.as_bytes()),
            Value::Bool(b) => {
                tag(any, 2, VARINT);
                varint(any, u64::from(*b));
            }
            Value::Int(i) => {
                tag(any, 3, VARINT);
                varint(any, *i as u64);
            }
        });
    });
}

/// `Span` (trace.proto): trace_id = 1, span_id = 2, parent_span_id = 4, name = 5,
/// kind = 6 (INTERNAL = 1), start = 7, end = 8 (fixed64), attributes = 9,
/// status = 15 (`Status { message = 2; code = 3 }`, ERROR = 2).
fn span(out: &mut Vec<u8>, s: &Span) {
    message(out, 2, |m| {
        bytes_field(m, 1, &s.trace_id);
        bytes_field(m, 2, &s.span_id);
        if let Some(p) = &s.parent {
            bytes_field(m, 4, p);
        }
        bytes_field(m, 5, s.name.as_bytes());
        tag(m, 6, VARINT);
        varint(m, 1);
        tag(m, 7, FIXED64);
        m.extend_from_slice(&s.start.to_le_bytes());
        tag(m, 8, FIXED64);
        m.extend_from_slice(&s.end.to_le_bytes());
        for (k, v) in &s.attributes {
            key_value(m, 9, k, v);
        }
        if let Some(e) = &s.error {
            message(m, 15, |st| {
                bytes_field(st, 2, e.as_bytes());
                tag(st, 3, VARINT);
                varint(st, 2);
            });
        }
    });
}

/// The request body: `ExportTraceServiceRequest { resource_spans = 1 }`,
/// `ResourceSpans { resource = 1; scope_spans = 2 }`, `Resource { attributes = 1 }`,
/// `ScopeSpans { scope = 1; spans = 2 }`, `InstrumentationScope { name = 1; version = 2 }`.
pub fn encode(resource: &[(&'static str, Value)], spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::new();
    message(&mut out, 1, |rs| {
        message(rs, 1, |r| {
            for (k, v) in resource {
                key_value(r, 1, k, v);
            }
        });
        message(rs, 2, |ss| {
            message(ss, 1, |scope| {
                bytes_field(scope, 1, SCOPE.as_bytes());
                bytes_field(scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
            });
            for s in spans {
                span(ss, s);
            }
        });
    });
    out
}

// ---------------------------------------------------------------------------------
// The exporter.

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot build the OTLP client")]
    Client(#[source] reqwest::Error),
    #[error("invalid OTLP endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: url::ParseError,
    },
}

/// The agent's trace exporter: a bounded queue and the task that empties it.
#[derive(Debug, Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Span>,
    metrics: Arc<Metrics>,
}

/// `<endpoint>/v1/traces`, as OTLP/HTTP appends the signal's path to a base endpoint;
/// an endpoint whose path already ends in `/v1/traces` is the traces URL itself.
pub fn traces_url(endpoint: &str) -> Result<url::Url, OtlpError> {
    let base = url::Url::parse(endpoint).map_err(|source| OtlpError::Endpoint {
        endpoint: berth_spec::node::without_userinfo(endpoint),
        source,
    })?;
    if base.path().trim_end_matches('/').ends_with("/v1/traces") {
        return Ok(base);
    }
    let full = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    url::Url::parse(&full).map_err(|source| OtlpError::Endpoint {
        endpoint: shown(&base).to_string(),
        source,
    })
}

/// The longest string of a span (an attribute, its status's message), in bytes; a
/// longer one is cut (`…` marks the cut), so that a span holds at most about 6 KiB
/// however long a step's error (a registry's answer, say) was.
pub const MESSAGE_MAX: usize = 1024;

/// A string attribute, cut to [`MESSAGE_MAX`].
fn text(s: &str) -> Value {
    Value::Str(capped(s, MESSAGE_MAX))
}

/// `s` cut to at most `max` bytes at a character boundary, `…` marking a cut.
fn capped(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Exporter {
    /// Starts the export task on `rt`: spans go to `endpoint` (`telemetry.otlp_endpoint`),
    /// at most `queue` of them wait (`telemetry.otlp_queue`), `node` names the host.
    pub fn start(
        rt: &tokio::runtime::Handle,
        endpoint: &str,
        queue: usize,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Exporter, OtlpError> {
        let url = traces_url(endpoint)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(EXPORT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(OtlpError::Client)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let resource = vec![
            ("service.name", Value::Str("berth".into())),
            (
                "service.version",
                Value::Str(env!("CARGO_PKG_VERSION").into()),
            ),
            ("host.name", Value::Str(node.to_string())),
        ];
        let task = Task {
            client,
            url,
            resource,
            metrics: metrics.clone(),
            failing: false,
        };
        rt.spawn(task.run(rx, tx.clone()));
        metrics.span_queue(0);
        Ok(Exporter { queue: tx, metrics })
    }

    /// Queues `spans` for export without waiting; those that do not fit are dropped
    /// and counted.
    pub fn send(&self, spans: Vec<Span>) {
        let mut full = 0u64;
        for s in spans {
            if self.queue.try_send(s).is_err() {
                full += 1;
            }
        }
        if full > 0 {
            self.metrics.spans_dropped(SpanDrop::QueueFull, full);
        }
        self.metrics.span_queue(waiting(&self.queue));
    }

    /// Queues the spans of a pass that ended.
    pub fn pass(&self, pass: &PassEnded<'_>) {
        self.send(pass_spans(pass));
    }
}

/// `url` without its user name and password, to log.
fn shown(url: &url::Url) -> url::Url {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u
}

/// Spans in the queue.
fn waiting(tx: &mpsc::Sender<Span>) -> usize {
    tx.max_capacity().saturating_sub(tx.capacity())
}

struct Task {
    client: reqwest::Client,
    url: url::Url,
    resource: Vec<(&'static str, Value)>,
    metrics: Arc<Metrics>,
    /// The last export failed (a failure is logged once, until one succeeds).
    failing: bool,
}

impl Task {
    /// Sends batches until every sender but the task's own is gone... which, in the
    /// agent, is never: the task lives as long as the runtime.
    async fn run(mut self, mut rx: mpsc::Receiver<Span>, own: mpsc::Sender<Span>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            self.metrics.span_queue(waiting(&own));
            self.export(batch).await;
        }
    }

    async fn export(&mut self, batch: Vec<Span>) {
        let n = batch.len() as u64;
        let body = encode(&self.resource, &batch);
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send();
        let outcome = match tokio::time::timeout(EXPORT_TIMEOUT, sent).await {
            Err(_) => Err((
                SpanDrop::Timeout,
                "the collector did not answer in time".to_string(),
            )),
            Ok(Err(e)) if e.is_timeout() => Err((
                SpanDrop::Timeout,
                "the collector did not answer in time".to_string(),
            )),
            // Without the URL, which may hold credentials.
            Ok(Err(e)) => Err((
                SpanDrop::ExportFailed,
                crate::util::error_chain(&e.without_url()),
            )),
            Ok(Ok(resp)) if resp.status().is_success() => {
                // Taken, by its status. The body (a partial success, if any) is read
                // up to ANSWER_PREFIX bytes and not kept: dropping the response closes
                // a connection whose body goes on, so a collector cannot fill memory.
                crate::util::read_prefix(resp, ANSWER_PREFIX, ANSWER_WITHIN).await;
                Ok(())
            }
            Ok(Ok(resp)) => Err((
                SpanDrop::ExportFailed,
                format!("the collector answered {}", resp.status()),
            )),
        };
        match outcome {
            Ok(()) => {
                self.metrics.spans_exported(n);
                if self.failing {
                    tracing::info!(target: "agent", "trace export: the collector takes spans again");
                }
                self.failing = false;
            }
            Err((reason, why)) => {
                self.metrics.spans_dropped(reason, n);
                if !self.failing {
                    tracing::warn!(target: "agent", endpoint = %shown(&self.url), error = %why, dropped = n, "trace export failed; its spans are dropped (said once until an export succeeds)");
                }
                self.failing = true;
            }
        }
    }
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
