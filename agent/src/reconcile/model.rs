//! The planner's inputs and output, as plain data.
//!
//! Everything the planner knows arrives here, gathered beforehand by code that may do
//! I/O: [`Desired`] (the spec tree filtered to this node, hashed, with its images
//! resolved), [`Actual`] (a scan of the state directory and the runtime),
//! [`PolicyDecisions`] (the policy engine's verdicts, mode already applied) and
//! [`History`] (recent exits, and the node's crash-loop backoff settings). The output is
//! a [`Plan`]: ordered [`Step`]s, each an [`Action`] with a human reason and the steps
//! it needs, so the executor makes no choices of its own (omicron's plan–execute split).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use berth_spec::Container;

use super::backoff::RestartBackoff;
use crate::runtime::spec_hash::SpecHash;

/// Seconds since the Unix epoch. The planner never reads the clock: `now` is an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This instant plus a duration (whole seconds, saturating).
    pub fn after(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_secs()))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_secs(self.0.saturating_sub(earlier.0))
    }
}

/// What the desired state was computed from, passed through to the plan so the executor
/// can refuse a plan computed from a revision other than the one it is applying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Revision {
    /// The Git commit id, or for `berth apply DIR` a digest of the spec tree.
    pub id: String,
    /// Where it came from (`https://git.example.com/fleet/config.git#main`, a path).
    pub source: String,
}

// ---------------------------------------------------------------------------------
// Desired

/// What this node should run, already filtered to this node and hashed.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub revision: Revision,
    /// The containers targeting this node that could be evaluated, by name.
    pub containers: BTreeMap<String, DesiredContainer>,
    /// Containers targeting this node that could not be evaluated (an image tag that
    /// could not be resolved, a secret that could not be decrypted, …), with the reason.
    /// Their running instances are kept, as for a blocked container.
    pub not_evaluated: BTreeMap<String, String>,
    /// Those of [`Desired::not_evaluated`] that `berth plan` cannot evaluate because a
    /// fact deciding their outcome cannot be known (`--offline`, a registry that does
    /// not answer, layers not pulled): reported as [`ReportKind::Unknown`].
    pub unknown: BTreeSet<String>,
    /// Containers of the repository that do not target this node: only used to word
    /// reasons ("no longer targets this node", "dependency db does not target this node").
    pub other_nodes: BTreeSet<String>,
    /// Networks referenced by the containers targeting this node (evaluated or not),
    /// including `default` when a bridge-mode container lists none.
    pub networks: BTreeMap<String, DesiredNetwork>,
    /// Named volumes referenced by the containers targeting this node (evaluated or not).
    pub volumes: BTreeSet<String>,
    /// Remove berth's volumes that no container references (`berth apply --prune-volumes`).
    /// Without it volumes are kept: data is never deleted implicitly.
    pub prune_volumes: bool,
}

/// One container this node should run.
#[derive(Debug, Clone)]
pub struct DesiredContainer {
    /// The validated spec (defaults applied).
    pub spec: Container,
    /// Its spec hash (`runtime::spec_hash`), and the instance id derived from it.
    pub hash: SpecHash,
    pub instance: String,
    /// The image name without tag or digest (`127.0.0.1:5000/shop/web`).
    pub image: String,
    /// The manifest digest to run (`sha256:<hex>`), resolved from a tag if need be.
    pub digest: String,
    /// Whether the image is in the store, unpacked, with its signature checked as the
    /// policy requires: when false, a new instance needs a [`Action::Pull`] first.
    pub image_ready: bool,
}

/// A network as the spec wants it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredNetwork {
    /// The subnet; `None` lets the node pick one (and is never compared).
    pub subnet: Option<String>,
}

// ---------------------------------------------------------------------------------
// Actual

/// What a scan of the state directory and the runtime found.
#[derive(Debug, Clone, Default)]
pub struct Actual {
    /// A counter the state directory bumps on every change; the plan carries it so the
    /// executor can tell that the host moved since the scan.
    pub generation: u64,
    /// Container records (`containers/<name>/`), by name.
    pub containers: BTreeMap<String, ActualContainer>,
    /// Networks berth created, by name.
    pub networks: BTreeMap<String, ActualNetwork>,
    /// Named volumes under berth's state directory.
    pub volumes: BTreeSet<String>,
    /// Instances under `instances/` that no container record accounts for.
    pub orphans: Vec<Orphan>,
}

/// One container record and its instances.
#[derive(Debug, Clone, Default)]
pub struct ActualContainer {
    /// Usually one; two during a `start-first` update or after a crash in the middle of
    /// one.
    pub instances: Vec<ObservedInstance>,
    /// How many times berth restarted it after an exit.
    pub restarts: u32,
    /// The operator's mark (`berth stop`).
    pub mark: Option<OperatorMark>,
    /// An update that failed and was (or is to be) rolled back.
    pub failed_update: Option<FailedUpdate>,
}

/// An update whose new instance was not running (and healthy, with a health check)
/// within the container's `update_timeout` (`runtime::rollback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedUpdate {
    /// The instance that failed.
    pub instance: String,
    /// The revision that asked for it.
    pub revision: String,
    pub reason: String,
    /// The last good instance was started again since (the rollback is done).
    pub restored: bool,
}

/// An operator's mark on a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorMark {
    /// `berth stop NAME`: left stopped until `berth start NAME`.
    Stopped,
}

/// One instance of a container.
#[derive(Debug, Clone)]
pub struct ObservedInstance {
    /// `<name>-<8 hex>`.
    pub id: String,
    /// The image digest it runs.
    pub digest: Option<String>,
    pub state: InstanceState,
    pub health: HealthState,
    /// The container spec it was created from, as stored in its record (`None` for an
    /// orphan): lets a reason name the field that changed, and tells the stop signal,
    /// restart policy and health check of an instance whose spec is gone from the
    /// repository or changed since.
    pub spec: Option<Container>,
    /// The networks it is attached to, and the named volumes it mounts.
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// The runtime state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "status")]
pub enum InstanceState {
    /// Created in the runtime, never started.
    Created,
    Running {
        pid: u32,
        started_at: Timestamp,
    },
    Exited {
        code: i32,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
    /// The runtime could not say (no shim, no runc state): it may still be running.
    Unknown,
}

impl InstanceState {
    /// Whether a process may still be there, so removal needs a stop first.
    pub fn may_run(self) -> bool {
        !matches!(self, InstanceState::Exited { .. })
    }
}

/// The health check's verdict (Docker's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// No check, or not run yet.
    #[default]
    Unknown,
    Starting,
    Healthy,
    Unhealthy,
}

/// A network berth created.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActualNetwork {
    pub subnet: Option<String>,
}

/// An instance directory that no container record accounts for.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub id: String,
    pub state: InstanceState,
}

// ---------------------------------------------------------------------------------
// Policy and history

/// The policy engine's verdicts, with the node's mode already applied.
#[derive(Debug, Clone, Default)]
pub struct PolicyDecisions {
    /// By container name. A desired container without a decision is treated as blocked:
    /// the planner fails closed.
    pub containers: BTreeMap<String, Decision>,
    /// `policy.on_running_violation = "stop"`: stop a running instance whose (unchanged)
    /// spec the policy now blocks, instead of keeping it running and reporting it.
    pub stop_on_violation: bool,
}

/// One container's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Applied, and the findings reported: warnings in either mode, or errors in audit
    /// mode.
    Reported {
        findings: Vec<String>,
    },
    /// Enforce mode, error-level violations: neither created nor updated.
    Blocked {
        reasons: Vec<String>,
    },
}

/// Recent exits per container, and the crash-loop backoff they are replayed with.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub containers: BTreeMap<String, Vec<Exit>>,
    /// `runtime.restart_backoff` and `runtime.restart_backoff_max`.
    pub backoff: RestartBackoff,
}

/// One exit of a container's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub code: i32,
}

// ---------------------------------------------------------------------------------
// Plan

/// What to do, in order, computed from one revision and one scan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub revision: Revision,
    /// [`Actual::generation`] of the scan the plan was computed from.
    pub actual_generation: u64,
    #[serde(serialize_with = "time_text")]
    pub now: Timestamp,
    pub steps: Vec<Step>,
}

impl Plan {
    /// Nothing to do: the host matches the desired state.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The earliest instant a step waits for (crash-loop backoff): when the daemon
    /// should plan again.
    pub fn requeue_at(&self) -> Option<Timestamp> {
        self.steps.iter().filter_map(|s| s.not_before).min()
    }

    /// Containers the plan reports as not applied (blocked, held, not evaluated).
    #[cfg(test)]
    pub fn not_applied(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Report {
                    name,
                    kind:
                        ReportKind::Blocked
                        | ReportKind::Held
                        | ReportKind::NotEvaluated
                        | ReportKind::Unknown,
                } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// One step: an action, why, and which earlier steps it needs.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// 1-based position in the plan.
    pub id: usize,
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
    /// Ids of earlier steps that must have succeeded. When one failed or was skipped,
    /// this step is skipped too (a failed pull never takes down the running version).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<usize>,
    /// Crash-loop backoff: the daemon runs the step no earlier than this; the one-shot
    /// `berth apply` runs it at once and only reports the backoff.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_time_text"
    )]
    pub not_before: Option<Timestamp>,
    /// Steps run stage by stage, in ascending order; within a stage the executor may run
    /// steps side by side as their `needs` allow. Stages keep what the plan's phases
    /// promise without a `needs` edge: every pull before any stop, every removal before
    /// any create (a freed port or address), dependents stopped before what they depend
    /// on.
    #[serde(skip)]
    pub stage: u32,
}

/// What the executor does. See each variant for its contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Fetch the manifest, config and layers of `image@digest`, verify the digest and
    /// (as the policy requires) the signature, and unpack the layers into snapshots.
    Pull { image: String, digest: String },
    /// Create the bridge network (CNI config; the bridge itself appears on first use).
    CreateNetwork { name: String },
    /// Create the named volume's directory.
    CreateVolume { name: String },
    /// Materialise an instance: bundle (config.json), rootfs and upper dir, network
    /// attachment, secrets, and the runtime container in the `created` state under its
    /// shim; record it as the container's current instance. Does not run the process.
    Create { name: String, instance: String },
    /// Run the instance's process. If the instance has exited (a restart), first delete
    /// it from the runtime and create it again from the same bundle — the writable layer
    /// is kept, as `docker restart` keeps it — and count a restart.
    Start { name: String, instance: String },
    /// Send `signal`, wait up to `timeout`, then SIGKILL; tolerate an instance that is
    /// already gone. The instance stays on disk.
    Stop {
        name: String,
        instance: String,
        signal: String,
        #[serde(serialize_with = "duration_text")]
        timeout: Duration,
    },
    /// Delete the instance from the runtime, detach its networks, and delete its
    /// directory (bundle, upper dir, log, secrets). Tolerate parts already gone.
    Remove { name: String, instance: String },
    /// Delete the container's record (`containers/<name>/`, operator marks included):
    /// it is no longer desired and its instances are removed.
    Forget { name: String },
    /// Wait until the instance's health check passes; fail after `timeout`.
    WaitHealthy {
        name: String,
        instance: String,
        #[serde(serialize_with = "duration_text")]
        timeout: Duration,
    },
    /// The new instance of an update must be running — and healthy, with a health
    /// check; without one, still running a moment after its start — within `timeout`
    /// (`update_timeout`). Failing, the update is rolled back: the instance it replaced
    /// runs again and the revision is marked failed for the container.
    Verify {
        name: String,
        instance: String,
        #[serde(serialize_with = "duration_text")]
        timeout: Duration,
    },
    /// Delete the network (CNI config, bridge, IPAM data).
    RemoveNetwork { name: String },
    /// Delete the named volume and its data.
    RemoveVolume { name: String },
    /// Do nothing to the host; record the reason as an event and in the audit report.
    /// `Blocked`, `Held`, `NotEvaluated` and `Unknown` make `berth apply` (and
    /// `berth plan`) exit with 1.
    Report { name: String, kind: ReportKind },
}

/// Why a container is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// The policy blocks it (enforce mode).
    Blocked,
    /// A dependency cannot run, so it is not started.
    Held,
    /// It could not be evaluated.
    NotEvaluated,
    /// `berth plan` only: a fact that decides its outcome cannot be known (`--offline`,
    /// a registry that does not answer, an image whose layers are not pulled), so the
    /// plan shows neither a create nor a start for it.
    Unknown,
    /// Applied with policy findings: warnings in either mode, or errors in audit mode.
    /// Printed and serialised as `findings`.
    #[serde(rename = "findings")]
    Audit,
    /// A network that must be recreated is still in use by kept instances.
    Deferred,
    /// Its update failed at this revision and was rolled back to the last known good
    /// instance; the revision is not tried again by itself.
    RolledBack,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Blocked => "blocked",
            ReportKind::Held => "held",
            ReportKind::NotEvaluated => "not-evaluated",
            ReportKind::Unknown => "unknown",
            ReportKind::Audit => "findings",
            ReportKind::Deferred => "deferred",
            ReportKind::RolledBack => "rolled-back",
        }
    }
}

fn duration_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&berth_spec::types::format_duration(*d))
}

/// A timestamp as RFC 3339 (`2025-01-31T12:00:00Z`), as every report spells times.
pub(crate) fn time_text<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::util::rfc3339::format(t.0))
}

pub(crate) fn optional_time_text<S: serde::Serializer>(
    t: &Option<Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time_text(t, s),
        None => s.serialize_none(),
    }
}
