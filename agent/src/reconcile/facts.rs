//! What the planner reads out of specs and instances: the networks and volumes a
//! container uses, how to stop an instance, how long to wait for its health.
//!
//! An instance's own stored spec wins over the desired one: it is what runs.

use std::time::Duration;

use berth_spec::types::{NetworkMode, parse_duration};
use berth_spec::{Container, MountSource};
use serde_json::Value;

use super::model::{Instance, Orphan};

/// The stop signal and timeout when neither the instance nor the spec says (DESIGN §3).
const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The networks a container joins (bridge mode only).
pub(crate) fn networks_of(spec: &Container) -> Vec<String> {
    match spec.network_mode {
        NetworkMode::Bridge => spec.networks.clone(),
        _ => vec![],
    }
}

/// The named volumes a container mounts.
pub(crate) fn volumes_of(spec: &Container) -> Vec<String> {
    let mut v: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::Volume { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

pub(super) fn sorted<'i>(instances: &[&'i Instance]) -> Vec<&'i Instance> {
    let mut v = instances.to_vec();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// An orphan seen as an instance with nothing else known.
pub(super) fn orphan_instance(o: &Orphan) -> Instance {
    Instance {
        id: o.id.clone(),
        hash: None,
        digest: None,
        state: o.state,
        health: Default::default(),
        spec: None,
        networks: vec![],
        volumes: vec![],
    }
}

/// The container name in an instance id (`<name>-<8 hex>`), or the id itself.
pub(super) fn orphan_name(id: &str) -> String {
    match id.rsplit_once('-') {
        Some((name, hex)) if hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => id.to_string(),
    }
}

/// The stop signal and timeout an instance was created with (its stored spec), else
/// the desired spec's, else the defaults.
pub(super) fn stop_params(i: &Instance, spec: Option<&Container>) -> (String, Duration) {
    let stored = i.spec.as_ref();
    let signal = stored
        .and_then(|s| {
            s.get("stop_signal")?
                .get("name")?
                .as_str()
                .map(String::from)
        })
        .or_else(|| spec.map(|c| c.stop_signal.name.clone()))
        .unwrap_or_else(|| DEFAULT_STOP_SIGNAL.into());
    let timeout = stored
        .and_then(|s| parse_duration(s.get("stop_timeout")?.as_str()?).ok())
        .or_else(|| spec.map(|c| c.stop_timeout))
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    (signal, timeout)
}

/// How long to wait for a container to become healthy: the start period, then as many
/// intervals (each with its timeout) as the check may fail before it is declared
/// unhealthy, plus one. `None` without a health check.
pub(super) fn health_timeout(spec: &Container) -> Option<Duration> {
    let h = spec.health.as_ref()?;
    Some(
        h.start_period.saturating_add(
            h.interval
                .saturating_add(h.timeout)
                .saturating_mul(h.retries.saturating_add(1)),
        ),
    )
}

/// [`health_timeout`] from an instance's stored spec.
pub(super) fn stored_health_timeout(i: &Instance) -> Option<Duration> {
    let h = i.spec.as_ref()?.get("health")?;
    let d = |k: &str| {
        h.get(k)
            .and_then(Value::as_str)
            .and_then(|s| parse_duration(s).ok())
    };
    let retries =
        u32::try_from(h.get("retries").and_then(Value::as_u64).unwrap_or(3)).unwrap_or(u32::MAX);
    Some(
        d("start_period")?.saturating_add(
            d("interval")?
                .saturating_add(d("timeout")?)
                .saturating_mul(retries.saturating_add(1)),
        ),
    )
}
