//! Logging through `tracing`: human-readable on a terminal, JSON with `--log-format json`.
//!
//! Logs go to stderr; stdout is reserved for results (DESIGN.md §6). The agent's
//! Prometheus metrics are [`metrics`], served on `telemetry.metrics_listen` by
//! [`metrics_http`] (and on the API socket by `api`).

pub mod metrics;
pub mod metrics_http;

use std::io::IsTerminal;

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
