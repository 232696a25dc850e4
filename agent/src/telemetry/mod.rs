//! Logging through `tracing`: human-readable on a terminal, JSON with `--log-format json`.
//!
//! Logs go to stderr; stdout is reserved for results (DESIGN.md §6). The agent's
//! Prometheus metrics are [`metrics`], served on `telemetry.metrics_listen` by
//! [`metrics_http`] (and on the API socket by `api`). Its traces go to
//! `telemetry.otlp_endpoint` through [`otlp`]; `docs/telemetry.md` lists the spans and
//! the log fields.

pub mod metrics;
pub mod metrics_http;
pub mod otlp;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The log output format chosen with `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG`/`BERTH_LOG` override the default `info` level.
pub fn init(format: LogFormat) {
    let filter = std::env::var("BERTH_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .compact()
            .try_init(),
    };
}

/// The trace of the pass this process runs (the agent's pass process runs one):
/// 32 hex digits, carried by its step log lines and reported with its result, so that
/// the agent's spans of the pass are in this trace.
static PASS_TRACE: OnceLock<String> = OnceLock::new();

/// Starts the pass's trace (once per process) and returns its id.
pub fn start_pass_trace() -> &'static str {
    PASS_TRACE.get_or_init(|| hex::encode(otlp::random_id::<16>()))
}

/// The trace of the pass this process runs, once started.
pub fn pass_trace() -> Option<&'static str> {
    PASS_TRACE.get().map(String::as_str)
}
