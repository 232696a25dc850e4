//! Gathering the planner's inputs (the side-effect half of plan–execute): the desired
//! state from a checked spec tree, the node and the image store; the policy decisions;
//! and the actual state from a scan of the state directory.
//!
//! Nothing here talks to a registry: an image whose digest is not pinned and not in
//! the store cannot be resolved, and its container is "not evaluated" (`berth apply`
//! pulls before it gathers, so only `berth plan` meets that).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth_policy::evaluate::{Evaluator, Facts};
use berth_policy::finding::Finding;
use berth_spec::node::PolicyMode;
use berth_spec::{Container, DesiredState, NodeIdentity, Seccomp};

use super::backoff::RestartBackoff;
use super::facts::{networks_of, volumes_of};
use super::model::*;
use crate::runtime::record::{self, ContainerRecord, RecordError};
use crate::runtime::spec_hash::{HashInput, SecretInput, SpecHash, spec_hash};
use crate::runtime::state::{self, InstanceDirs};
use crate::storage::treefile;
use crate::util::rfc3339;

/// The facts learned about one container's image after it was pulled.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    /// The digest to run, resolved from the store or the spec.
    pub digest: Option<String>,
    /// The image is pulled, verified as required, and unpacked.
    pub ready: bool,
    /// What the policy needs to know at run time (resolved user, signature).
    pub facts: Facts,
    /// Why the image could not be made ready, if it could not.
    pub error: Option<String>,
}

/// Builds the desired state for this node. `root` is the spec root (for secret and
/// seccomp files); `images` holds what is known of each container's image.
pub fn desired(
    state: &DesiredState,
    root: &Path,
    node: &NodeIdentity,
    images: &BTreeMap<String, ImageFacts>,
    revision: Revision,
    prune_volumes: bool,
) -> Desired {
    let mut d = Desired {
        revision,
        prune_volumes,
        ..Desired::default()
    };
    for c in state.containers.values() {
        if !c.targets(node) {
            d.other_nodes.insert(c.name.clone());
            continue;
        }
        for n in networks_of(c) {
            let subnet = state
                .networks
                .get(&n)
                .and_then(|net| net.subnet)
                .map(|s| s.to_string());
            d.networks.insert(n, DesiredNetwork { subnet });
        }
        d.volumes.extend(volumes_of(c));
        let facts = images.get(&c.name).cloned().unwrap_or_default();
        if let Some(e) = &facts.error {
            d.not_evaluated.insert(c.name.clone(), e.clone());
            continue;
        }
        let Some(digest) = facts.digest.clone() else {
            d.not_evaluated.insert(
                c.name.clone(),
                format!(
                    "image {} is not pinned by digest and not in the store: pull it (`berth image pull`)",
                    c.image
                ),
            );
            continue;
        };
        match hash(state, root, c, &digest) {
            Ok(hash) => {
                d.containers.insert(
                    c.name.clone(),
                    DesiredContainer {
                        spec: c.clone(),
                        instance: hash.instance_id(&c.name),
                        hash,
                        image: c.image_ref.as_ref().map(|r| r.name()).unwrap_or_default(),
                        digest,
                        image_ready: facts.ready,
                    },
                );
            }
            Err(e) => {
                // The report's reason is text: the error and its causes.
                let reason = crate::util::error_chain(&e);
                d.not_evaluated.insert(c.name.clone(), reason);
            }
        }
    }
    d
}

/// Why a container's spec hash could not be computed: it is not evaluated (permanent
/// until the tree changes).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("secret `{name}` is not defined")]
    NoSecret { name: String },
    #[error("secret file")]
    SecretFile(#[source] treefile::TreeFileError),
    #[error("seccomp profile")]
    SeccompProfile(#[source] treefile::TreeFileError),
    #[error("cannot hash the spec")]
    Hash(#[source] serde_json::Error),
}

/// The spec hash of a container (DESIGN.md §7): its spec, image digest, and the content
/// of the networks, volumes and secrets (ciphertext) it references.
pub fn hash(
    state: &DesiredState,
    root: &Path,
    c: &Container,
    digest: &str,
) -> Result<SpecHash, HashError> {
    let networks: Vec<_> = networks_of(c)
        .iter()
        .filter_map(|n| state.networks.get(n))
        .collect();
    let volumes: Vec<_> = volumes_of(c)
        .iter()
        .filter_map(|v| state.volumes.get(v))
        .collect();
    let mut ciphertexts = Vec::new();
    for s in &c.secrets {
        let secret = state
            .secrets
            .get(&s.name)
            .ok_or_else(|| HashError::NoSecret {
                name: s.name.clone(),
            })?;
        let bytes = treefile::read(root, &secret.file, treefile::MAX_SECRET_FILE)
            .map_err(HashError::SecretFile)?;
        ciphertexts.push((secret, bytes));
    }
    let secrets: Vec<SecretInput<'_>> = ciphertexts
        .iter()
        .map(|(secret, bytes)| SecretInput {
            secret,
            ciphertext: bytes,
        })
        .collect();
    let profile = match &c.seccomp {
        Seccomp::Profile(file) => Some(
            treefile::read(root, file, treefile::MAX_SECCOMP_PROFILE)
                .map_err(HashError::SeccompProfile)?,
        ),
        _ => None,
    };
    spec_hash(&HashInput {
        container: c,
        image_digest: digest,
        networks: &networks,
        volumes: &volumes,
        secrets: &secrets,
        seccomp_profile: profile.as_deref(),
    })
    .map_err(HashError::Hash)
}

/// The policy's verdict on each desired container, with the node's mode applied.
pub fn decisions(
    desired: &Desired,
    ev: &Evaluator<'_>,
    mode: PolicyMode,
    images: &BTreeMap<String, ImageFacts>,
    stop_on_violation: bool,
) -> (PolicyDecisions, BTreeMap<String, Vec<Finding>>) {
    let mut out = PolicyDecisions {
        stop_on_violation,
        ..PolicyDecisions::default()
    };
    let mut all = BTreeMap::new();
    for (name, dc) in &desired.containers {
        let facts = images
            .get(name)
            .map(|i| i.facts.clone())
            .unwrap_or_default();
        let findings = ev.evaluate(&dc.spec, &facts);
        let describe = |f: &Finding| format!("{} ({})", f.rule.id(), f.message);
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.is_error())
            .map(describe)
            .collect();
        let decision = if errors.is_empty() {
            let warnings: Vec<String> = findings
                .iter()
                .filter(|f| f.is_warning())
                .map(describe)
                .collect();
            if warnings.is_empty() {
                Decision::Allowed
            } else {
                Decision::Reported { findings: warnings }
            }
        } else if mode == PolicyMode::Audit {
            Decision::Reported { findings: errors }
        } else {
            Decision::Blocked { reasons: errors }
        };
        out.containers.insert(name.clone(), decision);
        all.insert(name.clone(), findings);
    }
    (out, all)
}

/// The recorded restart history of `names` (`runtime::history`), for the planner's
/// crash-loop backoff with `backoff` (the node's `runtime.restart_backoff*`). A history
/// that cannot be read counts as none, with a warning: it can only shorten a backoff.
pub fn history(state_dir: &Path, desired: &Desired, backoff: RestartBackoff) -> History {
    let mut out = History {
        backoff,
        ..History::default()
    };
    for (name, dc) in &desired.containers {
        // Exits of an older spec's instance do not count against a new one.
        let current = dc.hash.instance_id(name);
        match crate::runtime::history::load(state_dir, name) {
            Ok(exits) if !exits.is_empty() => {
                let exits = exits
                    .into_iter()
                    .filter(|e| e.instance.as_deref().is_none_or(|i| i == current))
                    .map(|e| Exit {
                        started_at: e.started_at.map(Timestamp),
                        finished_at: Timestamp(e.finished_at),
                        code: e.code,
                    })
                    .collect();
                out.containers.insert(name.clone(), exits);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(
                container = %name,
                "{}",
                crate::util::error_chain(&err)
            ),
        }
    }
    out
}

/// How an instance stands, from its exit file and whether its init still runs in the
/// instance's cgroup (never `kill(pid, 0)`: PID 1 may reap late).
pub fn instance_state(dirs: &InstanceDirs, record: Option<&ContainerRecord>) -> InstanceState {
    let started_at = record
        .and_then(|r| r.started_at.as_deref())
        .and_then(rfc3339::parse_secs)
        .map(Timestamp);
    if let Ok(Some(exit)) = dirs.exit_status() {
        return InstanceState::Exited {
            code: exit.exit_code,
            started_at,
            finished_at: rfc3339::parse_secs(&exit.finished_at)
                .map(Timestamp)
                .unwrap_or_default(),
        };
    }
    let id = dirs
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The record's cgroup when it is this instance's (older records have other paths),
    // else where this state directory puts it.
    let cgroup = record
        .filter(|r| r.instance == id && !r.cgroup_path.is_empty())
        .map(|r| r.cgroup_path.clone())
        .unwrap_or_else(|| {
            let state_dir = dirs
                .root
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("/"));
            crate::runtime::render::cgroups_path(state_dir, &id)
        });
    match dirs.pid() {
        Some(pid) if pid_in_instance(pid, &cgroup) => match started_at {
            Some(t) => InstanceState::Running {
                pid: pid as u32,
                started_at: t,
            },
            None => InstanceState::Created,
        },
        Some(_) => InstanceState::Unknown,
        None => InstanceState::Unknown,
    }
}

/// A running instance's health, from the file its prober writes
/// (`runtime::health_file`): `Starting` with a health check never probed in this run,
/// `Unknown` without a health check or when it does not run.
pub fn instance_health(
    dirs: &InstanceDirs,
    record: &ContainerRecord,
    state: InstanceState,
) -> HealthState {
    use crate::runtime::health_file::{self, HealthStatus};
    if !matches!(state, InstanceState::Running { .. }) {
        return HealthState::Unknown;
    }
    let started_at = record.started_at.as_deref();
    match health_file::current(&dirs.root, record.spec.health.is_some(), started_at)
        .map(|h| h.status)
    {
        None => HealthState::Unknown,
        Some(HealthStatus::Starting) => HealthState::Starting,
        Some(HealthStatus::Healthy) => HealthState::Healthy,
        Some(HealthStatus::Unhealthy) => HealthState::Unhealthy,
    }
}

/// Whether `pid` is a live process in the instance's cgroup `cgroup_path`.
fn pid_in_instance(pid: i32, cgroup_path: &str) -> bool {
    let Ok(cgroup) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X');
    alive && crate::runtime::status::in_cgroup(&cgroup, cgroup_path)
}

/// Why the state directory could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A container record that cannot be read, or is of a newer berth.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Scans the state directory: container records with their instances, berth's
/// networks and volumes, instances no record accounts for, and the directory's
/// generation (`runtime::lock::generation`).
pub fn actual(
    state_dir: &Path,
    networks: BTreeMap<String, ActualNetwork>,
) -> Result<Actual, ScanError> {
    // Read first: a scan racing a writer then claims the older generation.
    let generation = crate::runtime::lock::generation(state_dir)?;
    let records = record::read_records(state_dir)?;
    let mut out = Actual {
        networks,
        volumes: crate::storage::volumes::list(state_dir)?
            .into_iter()
            .collect(),
        generation,
        ..Actual::default()
    };
    let mut claimed = BTreeSet::new();
    let observe = |r: &ContainerRecord| {
        let dirs = InstanceDirs::new(state_dir, &r.instance);
        let state = instance_state(&dirs, Some(r));
        ObservedInstance {
            id: r.instance.clone(),
            digest: Some(r.image.digest.clone()),
            state,
            health: instance_health(&dirs, r, state),
            spec: Some(r.spec.clone()),
            networks: r.addresses.keys().cloned().collect(),
            volumes: volumes_of(&r.spec),
        }
    };
    for (name, r) in &records {
        claimed.insert(r.instance.clone());
        let mut instances = vec![observe(r)];
        // The instance an update replaced, kept until the new one is verified.
        if let Ok(Some(p)) = record::read_previous(state_dir, name)
            && p.instance != r.instance
            && InstanceDirs::new(state_dir, &p.instance).root.is_dir()
        {
            claimed.insert(p.instance.clone());
            instances.push(observe(&p));
        }
        let failed_update = crate::runtime::rollback::load(state_dir, name).map(|m| FailedUpdate {
            instance: m.failed,
            revision: m.revision,
            reason: m.reason,
            restored: m.restored.is_some(),
        });
        out.containers.insert(
            name.clone(),
            ActualContainer {
                instances,
                restarts: r.restarts,
                mark: r.operator_stopped.then_some(OperatorMark::Stopped),
                failed_update,
            },
        );
    }
    for id in state::instance_ids(state_dir)? {
        if !claimed.contains(&id) {
            let dirs = InstanceDirs::new(state_dir, &id);
            out.orphans.push(Orphan {
                state: instance_state(&dirs, None),
                id,
            });
        }
    }
    Ok(out)
}

/// Networks under this node's state, for the planner.
pub fn actual_networks(networks: &crate::network::Networks) -> BTreeMap<String, ActualNetwork> {
    networks
        .list()
        .map(|list| {
            list.into_iter()
                .map(|n| {
                    (
                        n.name,
                        ActualNetwork {
                            subnet: Some(n.subnet),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A revision id for a directory: the digest of its spec sources.
pub fn tree_revision(tree: &berth_spec::Tree, root: &Path) -> Revision {
    let mut all = Vec::new();
    for s in &tree.sources {
        all.extend_from_slice(s.path.as_bytes());
        all.push(0);
        all.extend_from_slice(s.text.as_bytes());
        all.push(0);
    }
    Revision {
        id: crate::image::digest::Digest::of(&all).as_str().to_string(),
        source: root.display().to_string(),
    }
}

/// The spec root of PATH: the directory itself, or a single file's directory.
pub fn spec_root(path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// Seconds since the epoch: the one clock read of a pass.
pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_read_from_the_file_of_a_running_instance() {
        use crate::runtime::health_file::{self, HealthRecord, HealthStatus};
        let dir = tempfile::tempdir().unwrap();
        let dirs = InstanceDirs::new(dir.path(), "web-0123abcd");
        // Started at 10:00:01, with a health check.
        let mut r = crate::runtime::record::sample("web");
        assert!(r.spec.health.is_some());
        let running = InstanceState::Running {
            pid: 1,
            started_at: Timestamp(0),
        };
        // A health check never probed: starting; not running: no health.
        assert_eq!(instance_health(&dirs, &r, running), HealthState::Starting);
        assert_eq!(
            instance_health(&dirs, &r, InstanceState::Unknown),
            HealthState::Unknown
        );
        let mut h = HealthRecord {
            status: HealthStatus::Unhealthy,
            last_probe: Some("2026-11-22T10:00:02Z".into()),
            failing_streak: 1,
            output: "`false` exited with 1".into(),
        };
        health_file::write(&dirs.root, &h).unwrap();
        assert_eq!(instance_health(&dirs, &r, running), HealthState::Unhealthy);
        h.status = HealthStatus::Healthy;
        health_file::write(&dirs.root, &h).unwrap();
        assert_eq!(instance_health(&dirs, &r, running), HealthState::Healthy);
        // Restarted after that probe: starting again.
        r.started_at = Some("2026-11-22T10:05:00Z".into());
        assert_eq!(instance_health(&dirs, &r, running), HealthState::Starting);
        // No health check: no health, whatever the file says.
        r.spec.health = None;
        assert_eq!(instance_health(&dirs, &r, running), HealthState::Unknown);
    }
}
