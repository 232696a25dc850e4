//! The agent's Prometheus metrics (`docs/metrics.md` lists each one).
//!
//! One [`Metrics`] per agent, shared through the controller's handle (no global
//! registry): the controller records each pass, its steps, its image pulls and its
//! fetch as the pass's process reports them ([`PassSamples`]); what the host looks like
//! now (its containers, their restarts, the applied revision's age) is read from the
//! state directory when the metrics are scraped ([`Metrics::scrape`]). The exposition
//! is OpenMetrics text, served as [`CONTENT_TYPE`] on the API socket (`GET /metrics`)
//! and on `telemetry.metrics_listen` (`super::metrics_http`).
//!
//! Every label value comes from a short fixed set (a result, a trigger, a step's verb,
//! a container state, a policy rule): no container, image or revision names, so the
//! number of series stays bounded however many containers a node runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

/// The media type of the exposition: OpenMetrics text 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The media type of the classic Prometheus text format, for a client that asks for it.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The format of an exposition, as a scrape's `Accept` header asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text 1.0.0 ([`CONTENT_TYPE`]).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 ([`TEXT_CONTENT_TYPE`]).
    Text,
}

impl Format {
    /// OpenMetrics, unless `accept` names `text/plain` and not OpenMetrics (no
    /// `Accept`, or `*/*`, is OpenMetrics, as it always was).
    pub fn of(accept: Option<&str>) -> Format {
        let Some(a) = accept.map(str::to_ascii_lowercase) else {
            return Format::OpenMetrics;
        };
        if a.contains("text/plain") && !a.contains("application/openmetrics-text") {
            Format::Text
        } else {
            Format::OpenMetrics
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// Buckets of the pass duration (seconds): a pass with nothing to do takes a fraction
/// of a second; one that pulls images, minutes.
const PASS_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];
/// Buckets of an image pull's duration (seconds).
const PULL_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// The steps' verbs (as `berth plan` prints them), each counted from zero in
/// `berth_reconcile_steps_total` with `done` and `failed` (a report with `reported`).
pub const STEP_ACTIONS: [&str; 13] = [
    "pull",
    "create-network",
    "create-volume",
    "create",
    "start",
    "stop",
    "remove",
    "forget",
    "wait-healthy",
    "verify",
    "remove-network",
    "remove-volume",
    "report",
];

/// The `result`s of `berth_image_pulls_total`.
const PULL_RESULTS: [&str; 2] = ["pulled", "failed"];

/// The container states a gauge is kept for even when no container is in them, so
/// that `berth_containers{state="running"} == 0` can be alerted on.
const STATES: [&str; 5] = ["running", "created", "exited", "stopped", "unknown"];

/// What woke a pass: the `trigger` label of `berth_reconcile_passes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassTrigger {
    /// The agent's first pass after it started.
    Start,
    /// The fetch timer (`source.interval`).
    Interval,
    /// `berth reconcile` (`POST /v1/reconcile`).
    Api,
    /// A verified webhook or the watch of a local repository.
    Source,
    /// A container exited.
    Exit,
    /// A container's health changed (the prober).
    Health,
    /// A retry of a pass that did not converge, or the end of a crash-loop backoff.
    Retry,
    /// The resync timer (`runtime.resync`).
    Resync,
}

impl PassTrigger {
    pub const ALL: [PassTrigger; 8] = [
        PassTrigger::Start,
        PassTrigger::Interval,
        PassTrigger::Api,
        PassTrigger::Source,
        PassTrigger::Exit,
        PassTrigger::Health,
        PassTrigger::Retry,
        PassTrigger::Resync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PassTrigger::Start => "start",
            PassTrigger::Interval => "interval",
            PassTrigger::Api => "api",
            PassTrigger::Source => "source",
            PassTrigger::Exit => "exit",
            PassTrigger::Health => "health",
            PassTrigger::Retry => "retry",
            PassTrigger::Resync => "resync",
        }
    }
}

/// How one pass ended: the `result` label of `berth_reconcile_passes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassEnd {
    Converged,
    NotConverged,
    Observed,
    /// The pass could not run or came to no report.
    Failed,
}

impl PassEnd {
    pub const ALL: [PassEnd; 4] = [
        PassEnd::Converged,
        PassEnd::NotConverged,
        PassEnd::Observed,
        PassEnd::Failed,
    ];

    /// The end named by a pass's `result` (`converged`, `not-converged`, `observed`).
    pub fn of(result: &str) -> PassEnd {
        match result {
            "converged" => PassEnd::Converged,
            "observed" => PassEnd::Observed,
            "not-converged" => PassEnd::NotConverged,
            _ => PassEnd::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PassEnd::Converged => "converged",
            PassEnd::NotConverged => "not_converged",
            PassEnd::Observed => "observed",
            PassEnd::Failed => "failed",
        }
    }
}

/// How a fetch of the source ended: the `result` label of `berth_source_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchEnd {
    /// The fetch went through and the revision was accepted.
    Fetched,
    /// The fetch went through and the revision was refused (its signature, a tag moved).
    Refused,
    /// The server or the network failed for a while.
    Unavailable,
    /// The fetch failed for a reason that does not pass by itself.
    Failed,
}

impl FetchEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchEnd::Fetched => "fetched",
            FetchEnd::Refused => "refused",
            FetchEnd::Unavailable => "unavailable",
            FetchEnd::Failed => "failed",
        }
    }
}

/// Every `result` of `berth_webhook_requests_total`.
const WEBHOOK_RESULTS: [&str; 5] = [
    "accepted",
    "ignored",
    "unauthorized",
    "throttled",
    "refused",
];

/// Every `result` of `berth_mqtt_messages_total`.
const MQTT_RESULTS: [&str; 2] = ["fetch", "ignored"];

/// How a webhook request was answered: the `result` label of
/// `berth_webhook_requests_total`, from the response's status.
pub fn webhook_result(status: u16) -> &'static str {
    match status {
        202 => "accepted",
        200 => "ignored",
        401 | 403 => "unauthorized",
        429 => "throttled",
        _ => "refused",
    }
}

/// One step the pass ran: its verb (`pull`, `create`, `start`, …, as `berth plan`
/// prints it) and its result (`done`, `failed`, `refused`, `skipped`, `reported`,
/// `deferred`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSample {
    pub action: String,
    pub result: String,
    /// The container the step is about (none: an image, a network, a volume); for its
    /// trace span (`super::otlp`).
    #[serde(default)]
    pub container: Option<String>,
    /// A failed step's error, or why it was refused.
    #[serde(default)]
    pub error: Option<String>,
    /// When it started (unix nanoseconds) and how long it ran (nanoseconds); none for a
    /// step that did not run.
    #[serde(default)]
    pub started_ns: Option<u64>,
    #[serde(default)]
    pub took_ns: Option<u64>,
}

/// One image pull attempt (a digest already in the store is no attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullSample {
    /// Whether it ended with the image in the store.
    pub ok: bool,
    /// Blob bytes downloaded (configs, layers).
    pub bytes: u64,
    pub seconds: f64,
}

/// What a pass's process saw, for the agent to count: the pass runs in a process of
/// its own (`reconcile::worker`) and reports these with its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassSamples {
    #[serde(default)]
    pub steps: Vec<StepSample>,
    #[serde(default)]
    pub pulls: Vec<PullSample>,
    /// The pass's trace (32 hex digits), as its step log lines carry it.
    #[serde(default)]
    pub trace_id: Option<String>,
}

/// The image pulls of one pass, as they happen (the pull code records into it from
/// whichever thread pulls).
#[derive(Debug, Default)]
pub struct PullLog(Mutex<Vec<PullSample>>);

impl PullLog {
    pub fn record(&self, sample: PullSample) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(sample);
    }

    /// The pulls recorded so far, taken out.
    pub fn take(&self) -> Vec<PullSample> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PassLabels {
    result: &'static str,
    trigger: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    action: String,
    result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContainerLabels {
    state: String,
    health: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FindingLabels {
    rule: String,
    severity: String,
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why spans were dropped: the `reason` label of `berth_otlp_spans_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanDrop {
    /// The export queue (`telemetry.otlp_queue`) was full.
    QueueFull,
    /// The collector answered with an error, or could not be reached.
    ExportFailed,
    /// The collector did not answer in time.
    Timeout,
}

impl SpanDrop {
    pub const ALL: [SpanDrop; 3] = [
        SpanDrop::QueueFull,
        SpanDrop::ExportFailed,
        SpanDrop::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
            SpanDrop::Timeout => "timeout",
        }
    }
}

/// A policy finding, as the gauge counts it.
#[derive(Debug, Clone, Copy)]
pub struct FindingKey<'a> {
    pub rule: &'a str,
    pub severity: &'a str,
    pub status: &'a str,
}

/// A container as the gauge counts it.
#[derive(Debug, Clone)]
pub struct ContainerSample<'a> {
    pub name: &'a str,
    pub state: &'a str,
    pub health: Option<&'a str>,
    pub restarts: u32,
}

/// The agent's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    passes: Family<PassLabels, Counter>,
    pass_duration: Histogram,
    steps: Family<StepLabels, Counter>,
    containers: Family<ContainerLabels, Gauge>,
    restarts: Counter,
    findings: Family<FindingLabels, Gauge>,
    pulls: Family<ResultLabel, Counter>,
    pull_bytes: Counter,
    pull_duration: Histogram,
    fetches: Family<ResultLabel, Counter>,
    webhooks: Family<ResultLabel, Counter>,
    mqtt_connected: Gauge,
    mqtt_connections: Counter,
    mqtt_messages: Family<ResultLabel, Counter>,
    mqtt_status: Counter,
    revision_age: Gauge<f64, AtomicU64>,
    spans_dropped: Family<ReasonLabel, Counter>,
    spans_exported: Counter,
    span_queue: Gauge,
    /// Each container's restart count when last looked at; none before the first look
    /// (restarts made before the agent started are not counted).
    seen_restarts: Mutex<Option<BTreeMap<String, u32>>>,
    /// One scrape at a time (the socket's and the address's): a look clears the
    /// container gauge before it fills it again.
    scraping: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let passes = Family::<PassLabels, Counter>::default();
        registry.register(
            "berth_reconcile_passes",
            "Reconcile passes run, by how they ended and what woke them",
            passes.clone(),
        );
        let pass_duration = Histogram::new(PASS_BUCKETS);
        registry.register_with_unit(
            "berth_reconcile_pass_duration",
            "How long a reconcile pass took, its fetch included",
            Unit::Seconds,
            pass_duration.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "berth_reconcile_steps",
            "Plan steps run, by action and result",
            steps.clone(),
        );
        let containers = Family::<ContainerLabels, Gauge>::default();
        registry.register(
            "berth_containers",
            "Containers on this node, by state and health",
            containers.clone(),
        );
        let restarts = Counter::default();
        registry.register(
            "berth_container_restarts",
            "Container restarts (an exited instance started again) since the agent started",
            restarts.clone(),
        );
        let findings = Family::<FindingLabels, Gauge>::default();
        registry.register(
            "berth_policy_findings",
            "Policy findings of the last pass that judged the spec tree, by rule, severity and status",
            findings.clone(),
        );
        let pulls = Family::<ResultLabel, Counter>::default();
        registry.register(
            "berth_image_pulls",
            "Image pull attempts (a digest already in the store is none), by result",
            pulls.clone(),
        );
        let pull_bytes = Counter::default();
        registry.register_with_unit(
            "berth_image_pull",
            "Blob bytes downloaded by image pulls",
            Unit::Bytes,
            pull_bytes.clone(),
        );
        let pull_duration = Histogram::new(PULL_BUCKETS);
        registry.register_with_unit(
            "berth_image_pull_duration",
            "How long an image pull attempt took",
            Unit::Seconds,
            pull_duration.clone(),
        );
        let fetches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "berth_source_fetches",
            "Fetches of the node's Git source, by result",
            fetches.clone(),
        );
        let webhooks = Family::<ResultLabel, Counter>::default();
        registry.register(
            "berth_webhook_requests",
            "Requests to the source webhook receiver, by how they were answered",
            webhooks.clone(),
        );
        let mqtt_connected = Gauge::default();
        registry.register(
            "berth_mqtt_connected",
            "Whether the agent is connected to the MQTT broker of source.notify (1) or not (0)",
            mqtt_connected.clone(),
        );
        let mqtt_connections = Counter::default();
        registry.register(
            "berth_mqtt_connections",
            "Connections made to the MQTT broker of source.notify (the first and every reconnection)",
            mqtt_connections.clone(),
        );
        let mqtt_messages = Family::<ResultLabel, Counter>::default();
        registry.register(
            "berth_mqtt_messages",
            "Revision messages received over MQTT: fetch (about the followed ref) or ignored",
            mqtt_messages.clone(),
        );
        for result in MQTT_RESULTS {
            let _ = mqtt_messages.get_or_create(&ResultLabel { result });
        }
        let mqtt_status = Counter::default();
        registry.register(
            "berth_mqtt_status_published",
            "Node status messages handed to the MQTT broker",
            mqtt_status.clone(),
        );
        // Every result from zero, so that a rate over them is defined from the start
        // (so are those of the passes, the steps and the pulls).
        for end in PassEnd::ALL {
            for trigger in PassTrigger::ALL {
                let _ = passes.get_or_create(&PassLabels {
                    result: end.as_str(),
                    trigger: trigger.as_str(),
                });
            }
        }
        for action in STEP_ACTIONS {
            let results: &[&str] = if action == "report" {
                &["reported"]
            } else {
                &["done", "failed"]
            };
            for result in results {
                let _ = steps.get_or_create(&StepLabels {
                    action: action.to_string(),
                    result: result.to_string(),
                });
            }
        }
        for result in PULL_RESULTS {
            let _ = pulls.get_or_create(&ResultLabel { result });
        }
        for result in WEBHOOK_RESULTS {
            let _ = webhooks.get_or_create(&ResultLabel { result });
        }
        let revision_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "berth_applied_revision_age",
            "Time since the applied revision was first applied on this node",
            Unit::Seconds,
            revision_age.clone(),
        );
        let spans_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "berth_otlp_spans_dropped",
            "Trace spans dropped: the export queue was full, or their export failed or timed out",
            spans_dropped.clone(),
        );
        for reason in SpanDrop::ALL {
            let _ = spans_dropped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        let spans_exported = Counter::default();
        registry.register(
            "berth_otlp_spans_exported",
            "Trace spans the OTLP collector accepted",
            spans_exported.clone(),
        );
        let span_queue = Gauge::default();
        registry.register(
            "berth_otlp_queue_spans",
            "Trace spans waiting in the export queue",
            span_queue.clone(),
        );
        Metrics {
            registry,
            passes,
            pass_duration,
            steps,
            containers,
            restarts,
            findings,
            pulls,
            pull_bytes,
            pull_duration,
            fetches,
            webhooks,
            mqtt_connected,
            mqtt_connections,
            mqtt_messages,
            mqtt_status,
            revision_age,
            spans_dropped,
            spans_exported,
            span_queue,
            seen_restarts: Mutex::new(None),
            scraping: Mutex::new(()),
        }
    }

    /// Counts a pass: how it ended, what woke it, how long it took, and what its
    /// process saw.
    pub fn pass(&self, trigger: PassTrigger, end: PassEnd, took: Duration, samples: &PassSamples) {
        self.passes
            .get_or_create(&PassLabels {
                result: end.as_str(),
                trigger: trigger.as_str(),
            })
            .inc();
        self.pass_duration.observe(took.as_secs_f64());
        for s in &samples.steps {
            self.steps
                .get_or_create(&StepLabels {
                    action: s.action.clone(),
                    result: s.result.clone(),
                })
                .inc();
        }
        for p in &samples.pulls {
            let result = PULL_RESULTS[usize::from(!p.ok)];
            self.pulls.get_or_create(&ResultLabel { result }).inc();
            self.pull_bytes.inc_by(p.bytes);
            self.pull_duration.observe(p.seconds);
        }
    }

    /// Counts a fetch of the source.
    pub fn fetch(&self, end: FetchEnd) {
        self.fetches
            .get_or_create(&ResultLabel {
                result: end.as_str(),
            })
            .inc();
    }

    /// Counts a request to the webhook receiver by the status it was answered with.
    /// The MQTT channel connected (a new connection counted) or lost.
    pub fn mqtt_connected(&self, on: bool) {
        if on {
            self.mqtt_connections.inc();
        }
        self.mqtt_connected.set(i64::from(on));
    }

    /// A revision message received: `fetch` or `ignored`.
    pub fn mqtt_message(&self, fetch: bool) {
        let result = if fetch { "fetch" } else { "ignored" };
        self.mqtt_messages
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A node status message handed to the broker.
    pub fn mqtt_status_published(&self) {
        self.mqtt_status.inc();
    }

    pub fn webhook(&self, status: u16) {
        self.webhooks
            .get_or_create(&ResultLabel {
                result: webhook_result(status),
            })
            .inc();
    }

    /// Replaces the findings with those of a pass that judged the spec tree.
    pub fn findings<'a>(&self, findings: impl IntoIterator<Item = FindingKey<'a>>) {
        self.findings.clear();
        for f in findings {
            self.findings
                .get_or_create(&FindingLabels {
                    rule: f.rule.to_string(),
                    severity: f.severity.to_string(),
                    status: f.status.to_string(),
                })
                .inc();
        }
    }

    /// Sets the container gauge to `containers`, and counts the restarts made since
    /// they were last looked at.
    pub fn containers<'a>(&self, containers: impl IntoIterator<Item = ContainerSample<'a>>) {
        self.containers.clear();
        for state in STATES {
            self.containers
                .get_or_create(&ContainerLabels {
                    state: state.to_string(),
                    health: "none".to_string(),
                })
                .set(0);
        }
        let mut seen = self
            .seen_restarts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = seen.is_none();
        let before = seen.take().unwrap_or_default();
        let mut now = BTreeMap::new();
        for c in containers {
            self.containers
                .get_or_create(&ContainerLabels {
                    state: c.state.to_string(),
                    health: c.health.unwrap_or("none").to_string(),
                })
                .inc();
            // A container seen for the first time after the agent's start has
            // restarted this often since; a count that went down is a new instance.
            let was = before
                .get(c.name)
                .copied()
                .unwrap_or(if first { c.restarts } else { 0 });
            self.restarts
                .inc_by(u64::from(c.restarts.saturating_sub(was)));
            now.insert(c.name.to_string(), c.restarts);
        }
        *seen = Some(now);
    }

    /// Counts `n` spans dropped for `reason`.
    pub fn spans_dropped(&self, reason: SpanDrop, n: u64) {
        self.spans_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(n);
    }

    /// Counts `n` spans the collector accepted.
    pub fn spans_exported(&self, n: u64) {
        self.spans_exported.inc_by(n);
    }

    /// Sets how many spans wait in the export queue.
    pub fn span_queue(&self, n: usize) {
        self.span_queue.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the applied revision's age (none: nothing applied, the gauge says 0).
    pub fn revision_age(&self, age: Option<Duration>) {
        self.revision_age.set(age.map_or(0.0, |a| a.as_secs_f64()));
    }

    /// The exposition: OpenMetrics text, ended by `# EOF`.
    pub fn encode(&self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        out
    }

    /// Looks at the host (its containers, the applied revision) and encodes. Reads the
    /// state directory: call it from a blocking thread.
    pub fn scrape(
        &self,
        state_dir: &Path,
        backoff: crate::reconcile::backoff::RestartBackoff,
    ) -> String {
        self.scrape_as(state_dir, backoff, Format::OpenMetrics)
    }

    /// [`Metrics::scrape`] in `format`.
    pub fn scrape_as(
        &self,
        state_dir: &Path,
        backoff: crate::reconcile::backoff::RestartBackoff,
        format: Format,
    ) -> String {
        let _one = self
            .scraping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.look(state_dir, backoff);
        self.encode_as(format)
    }

    /// Updates what is read from the state directory; what cannot be read is warned
    /// about and left as it was.
    pub fn look(&self, state_dir: &Path, backoff: crate::reconcile::backoff::RestartBackoff) {
        let now = crate::reconcile::rows::unix_now();
        match crate::reconcile::rows::list(state_dir, now, backoff) {
            Ok(rows) => self.containers(rows.iter().map(|r| ContainerSample {
                name: &r.name,
                state: &r.state,
                health: r.health.as_deref(),
                restarts: r.restarts,
            })),
            Err(e) => {
                tracing::warn!(target: "agent", error = %crate::util::error_chain(&e), "metrics: cannot read the containers")
            }
        }
        match crate::source::applied::Applied::load(state_dir) {
            Ok(applied) => {
                let at = applied.and_then(|a| crate::util::rfc3339::parse_secs(&a.applied_at));
                let now = u64::try_from(now).unwrap_or(0);
                self.revision_age(at.map(|at| Duration::from_secs(now.saturating_sub(at))));
            }
            Err(e) => {
                tracing::warn!(target: "agent", error = %crate::util::error_chain(&e), "metrics: cannot read the applied revision")
            }
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
