//! What the planner reads out of specs and instances: the networks and volumes a
//! container uses, how long to wait for its health. (How an instance is stopped is
//! `runtime::instance::StopParams`: the operator commands stop the same way.)

use std::time::Duration;

use berth_spec::types::NetworkMode;
use berth_spec::{Container, MountSource};

use super::model::{ObservedInstance, Orphan};

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

pub(super) fn sorted<'i>(instances: &[&'i ObservedInstance]) -> Vec<&'i ObservedInstance> {
    let mut v = instances.to_vec();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// An orphan seen as an instance with nothing else known.
pub(super) fn orphan_instance(o: &Orphan) -> ObservedInstance {
    ObservedInstance {
        id: o.id.clone(),
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
