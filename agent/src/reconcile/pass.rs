//! One reconcile pass, as a library: what `berth apply` runs once, what `berth plan`
//! runs without executing, and what the agent will run on every trigger.
//!
//! A pass reads the spec tree, checks it for this node, learns what the images are
//! (`apply` pulls, verifies and unpacks them; `plan` asks only the store and, unless
//! offline, the registry's manifests, configs and signatures), judges each container
//! against the node's policy, scans what runs, plans, and — for `apply` — takes the
//! state lock and executes the plan. It returns a typed [`Report`] that the CLI renders
//! and the agent's API will serialise as is.
//!
//! Both callers gather their facts through the same functions, so `plan` says what
//! `apply` would do: an image whose signature does not verify under enforce is blocked
//! in both, with the same reason. What `plan` cannot know is listed per container
//! ([`PlanReport::unknown`]) instead of guessed; a container whose outcome depends on
//! such a fact gets a `report … unknown` step instead of a create or a start.
//!
//! Both reports share one shape where they overlap: `revision` (`{"id", "source"}`),
//! `containers` (the typed outcome per container: what `apply` did, or what it would
//! do), `steps` (each step's fields, as the plan has them; `apply` adds `result` and
//! `duration_ms`), `findings`, and `next_pass`. Every time is RFC 3339.
//!
//! The process's async runtime is passed in ([`Env::rt`]); the pass blocks on it, so
//! an async caller runs it on a blocking thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_policy::Evaluator;
use berth_policy::finding::Finding;
use berth_policy::policy::Severity;
use berth_policy::rule::Rule;
use berth_spec::node::{Caller, OnRunningViolation, PolicyMode, Unenforced};
use berth_spec::{Container, NodeIdentity, check, loader};
use serde::Serialize;

use super::backoff::RestartBackoff;
use super::executor::{self, FailureKind, StepHost, StepResult};
use super::gather::{self, ImageFacts};
use super::host::{ContainerHost, LinuxFs};
use super::images::{self, ReadyImage, SignaturePolicy};
use super::model::{Action, Revision, Step, optional_time_text};
use super::outcome::{ContainerOutcome, ContainerReport, Outcome};
use super::{Desired, Plan, PolicyDecisions, Timestamp};
use crate::image::registry::Client;
use crate::image::signature::Trust;
use crate::image::snapshot::SnapshotStore;
use crate::image::store::Store;
use crate::node::{self, ConfigError, Loaded, NodePolicy};
use crate::runtime::instance::{OciInstances, find_shim};
use crate::runtime::lock::{self, LockError};
use crate::runtime::oci::detect;
use crate::storage::secrets::AgeIdentity;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a pass could not be done (exit 3), or found the tree wanting (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node configuration sets security keys this build cannot enforce: the pass
    /// refuses to run rather than not enforce them (exit 1). Each renders as a located
    /// diagnostic (`Unenforced::diagnostic`).
    #[error(
        "the node configuration sets {} security key(s) this build cannot enforce",
        refused.len()
    )]
    Unenforced { refused: Vec<Unenforced> },
    #[error("cannot read the spec tree {}", path.display())]
    Tree {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    /// The tree has errors: nothing was planned. Each is one diagnostic, printed as
    /// `berth validate` prints it.
    #[error("the spec tree has {} errors", errors.len())]
    Invalid { errors: Vec<String> },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot scan {}", state_dir.display())]
    Scan {
        state_dir: PathBuf,
        #[source]
        source: gather::ScanError,
    },
    /// Every plan of the pass was made from an older generation of the state directory
    /// than the one it would be executed on: a writer changed it without the state
    /// lock.
    #[error(
        "the state directory {} changed under each of {plans} plans (last made from generation {planned}, now {current}): a writer does not hold the state lock",
        state_dir.display()
    )]
    Stale {
        state_dir: PathBuf,
        plans: usize,
        planned: u64,
        current: u64,
    },
    #[error("cannot bump the generation of {}", state_dir.display())]
    Generation {
        state_dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pass's tools could not be set up: a store, the registry client, a trusted
    /// key, the OCI runtime, the shim, the host description, the node's age identity.
    #[error("{what}")]
    Setup {
        what: &'static str,
        #[source]
        source: BoxError,
    },
}

fn setup<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> PassError {
    move |e| PassError::Setup {
        what,
        source: Box::new(e),
    }
}

/// What every pass of this process shares.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    pub loaded: &'a Loaded,
    /// The process's async runtime (registry calls).
    pub rt: &'a tokio::runtime::Handle,
    /// Where the image pulls are recorded for the agent's metrics (a pass in the
    /// agent's process, `reconcile::worker`); none elsewhere.
    pub pulls: Option<&'a crate::telemetry::metrics::PullLog>,
}

/// What one pass is asked to do.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The spec tree: a directory, or one file.
    pub path: &'a Path,
    /// `--node` and `--label`, over the node configuration's identity.
    pub node: Option<NodeIdentity>,
    pub prune_volumes: bool,
    /// The revision the tree is (a commit the agent checked out); none for a directory,
    /// whose revision is the digest of its spec sources.
    pub revision: Option<Revision>,
    /// Try updates again that failed at this revision and were rolled back
    /// (`runtime::rollback`): `berth apply` does; the agent's passes do not (`berth
    /// reconcile` clears the marks for them).
    pub retry_failed: bool,
}

/// How an `apply` pass takes the state lock.
pub struct LockWait<'a> {
    /// The command named as the lock's holder (`berth apply`).
    pub command: &'a str,
    pub timeout: Duration,
    /// Told once who holds the lock, when another writer does.
    pub waiting: &'a mut dyn FnMut(&str),
}

/// One step of an executed plan: the step as the plan has it (`id`, `action`, its
/// parameters, `reason`, `needs`, `not_before`), and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    #[serde(flatten)]
    pub step: Step,
    #[serde(flatten)]
    pub result: StepResult,
    /// How long it ran, in milliseconds; none for a step skipped or only reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When it started (the agent's trace span of the step); not in the report.
    #[serde(skip)]
    pub started: Option<std::time::SystemTime>,
}

/// A network change the pass deferred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkReport {
    /// Always `deferred` for now.
    pub outcome: &'static str,
    pub reason: String,
}

/// What one `apply` pass did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The revision applied (the digest of the spec tree's sources, or a commit) and
    /// where it came from (the tree's path).
    pub revision: Revision,
    /// Per container: what happened to it, and the policy findings reported with it.
    pub containers: BTreeMap<String, ContainerReport>,
    /// Every step of the plan, in plan order, with its result and duration.
    pub steps: Vec<StepReport>,
    /// Networks whose change waits for instances that still use them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkReport>,
    /// Every policy finding of every container desired here, by container.
    pub findings: BTreeMap<String, Vec<Finding>>,
    /// Every container is as desired (none deferred) and no step failed.
    pub converged: bool,
    /// When the pass should run again (the earliest step deferred by crash-loop
    /// backoff); none when nothing waits. RFC 3339.
    #[serde(serialize_with = "optional_time_text")]
    pub next_pass: Option<Timestamp>,
    /// Per container desired here (evaluated): the spec hash of the instance the pass
    /// wanted, so that the follower records a trust chain only for an instance it
    /// made or kept (`trust::record`), never for one another writer put in its place.
    #[serde(skip)]
    pub desired: BTreeMap<String, String>,
}

impl Report {
    /// Whether every container was applied and no step failed: `berth apply`'s exit
    /// code 0. A restart deferred by crash-loop backoff counts as applied (it is not a
    /// failure), though the pass is not [`Report::converged`].
    pub fn applied(&self) -> bool {
        self.failed_steps() == 0 && self.containers.values().all(|c| c.outcome.applied())
    }

    /// How many steps failed.
    pub fn failed_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.result, StepResult::Failed(_)))
            .count()
    }
}

/// What a `plan` pass found.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    #[serde(flatten)]
    pub plan: Plan,
    /// Per container: what `apply` would do to it (the outcome it would report if
    /// every step succeeded), or `unknown` with the fact that cannot be known.
    pub containers: BTreeMap<String, ContainerReport>,
    /// Per container, each fact the plan could not know, in words.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub findings: BTreeMap<String, Vec<Finding>>,
    #[serde(serialize_with = "optional_time_text")]
    pub next_pass: Option<Timestamp>,
}

impl PlanReport {
    /// Whether `apply` would apply every container (exit code 0 of `berth plan`):
    /// none blocked, held, not evaluated or unknown.
    pub fn applied(&self) -> bool {
        self.containers.values().all(|c| c.outcome.applied())
    }
}

/// Where the registry may be asked (`plan`'s `--offline` forbids it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    Online,
    Offline,
}

/// The spec tree's errors, as `berth validate` prints them; empty when it is valid
/// (or cannot be read: the pass itself then says why). The agent asks before a pass,
/// to keep the node on the revision it applied before when the newest has errors.
pub fn check_tree(env: &Env<'_>, input: &Input<'_>) -> Result<(), Vec<String>> {
    match Front::read(env, input) {
        Err(PassError::Invalid { errors }) => Err(errors),
        _ => Ok(()),
    }
}

/// The first half of every pass: the node, its policy, the checked tree.
struct Front {
    policy: NodePolicy,
    node: NodeIdentity,
    tree: berth_spec::Tree,
    checked: berth_spec::Checked,
    root: PathBuf,
}

impl Front {
    fn read(env: &Env<'_>, input: &Input<'_>) -> Result<Front, PassError> {
        node::refused(env.loaded, Caller::Apply)
            .map_err(|refused| PassError::Unenforced { refused })?;
        let policy = node::node_policy(env.loaded, None)?;
        let node = node::identity(env.loaded, input.node.clone());
        let tree = loader::load_tree(input.path).map_err(|e| PassError::Tree {
            path: input.path.to_path_buf(),
            source: Box::new(e),
        })?;
        let checked = check(&tree, Some(&node));
        if !checked.is_ok() {
            let errors = checked.errors.iter().map(ToString::to_string).collect();
            return Err(PassError::Invalid { errors });
        }
        Ok(Front {
            policy,
            node,
            tree,
            checked,
            root: gather::spec_root(input.path),
        })
    }

    fn targeting(&self) -> Vec<&Container> {
        self.checked
            .state
            .containers
            .values()
            .filter(|c| c.targets(&self.node))
            .collect()
    }

    fn signatures(&self, env: &Env<'_>) -> Result<SignaturePolicy, PassError> {
        let trust = Trust::from_policy(&env.loaded.config.policy)
            .map_err(setup("cannot load the trusted keys, root or identities"))?;
        Ok(SignaturePolicy {
            enforced: self.policy.policy.rule(Rule::ImageSignature).severity == Severity::Error
                && self.policy.mode == PolicyMode::Enforce,
            trust,
        })
    }

    /// The desired state, the policy's decisions and findings, and the plan against
    /// the state directory's scan.
    fn plan(
        &self,
        env: &Env<'_>,
        input: &Input<'_>,
        facts: &BTreeMap<String, ImageFacts>,
        undecided: &BTreeMap<String, String>,
        networks: &crate::network::Networks,
    ) -> Result<Planned, PassError> {
        let mut desired = gather::desired(
            &self.checked.state,
            &self.root,
            &self.node,
            facts,
            input
                .revision
                .clone()
                .unwrap_or_else(|| gather::tree_revision(&self.tree, input.path)),
            input.prune_volumes,
        );
        // A container whose outcome depends on a fact `plan` cannot know is not
        // planned as if the fact were favourable: it is reported unknown.
        for (name, why) in undecided {
            let known = desired.containers.remove(name).is_some()
                || desired.not_evaluated.contains_key(name);
            if known {
                desired.not_evaluated.insert(name.clone(), why.clone());
                desired.unknown.insert(name.clone());
            }
        }
        let ev = Evaluator::new(&self.policy.policy, &self.policy.host, node::today());
        let stop = env.loaded.config.policy.on_running_violation == OnRunningViolation::Stop;
        let (mut decisions, findings) =
            gather::decisions(&desired, &ev, self.policy.mode, facts, stop);
        let binds = super::bindcheck::PolicyBinds {
            evaluator: &ev,
            mode: self.policy.mode,
        };
        super::bindcheck::judge_binds(&desired, &binds, &mut decisions);
        let state_dir = &env.loaded.config.runtime.state_dir;
        let actual =
            gather::actual(state_dir, gather::actual_networks(networks)).map_err(|source| {
                PassError::Scan {
                    state_dir: state_dir.clone(),
                    source,
                }
            })?;
        let plan = super::plan(
            &desired,
            &actual,
            &decisions,
            &gather::history(
                state_dir,
                &desired,
                RestartBackoff::of(&env.loaded.config.runtime),
            ),
            gather::now(),
        );
        Ok(Planned {
            desired,
            decisions,
            findings,
            plan,
        })
    }
}

struct Planned {
    desired: Desired,
    decisions: PolicyDecisions,
    findings: BTreeMap<String, Vec<Finding>>,
    plan: Plan,
}

/// The outcome `apply` would report for each container if every step due now
/// succeeded: a restart not due yet is deferred, as the executor defers it.
fn planned_outcomes(
    planned: &Planned,
    kinds: &BTreeMap<String, FailureKind>,
) -> BTreeMap<String, ContainerReport> {
    let plan = &planned.plan;
    let results = plan
        .steps
        .iter()
        .map(|s| {
            let r = match (&s.action, s.not_before) {
                (_, Some(t)) if t > plan.now => StepResult::Deferred(t),
                (Action::Report { .. }, _) => StepResult::Reported,
                _ => StepResult::Done,
            };
            (s.id, r)
        })
        .collect();
    let mut outcome = super::outcome::summarise(plan, &results);
    outcome.complete(&planned.desired, &planned.decisions);
    with_kinds(outcome.containers, kinds)
}

/// The containers not evaluated for an image error, with that error's kind.
fn with_kinds(
    mut containers: BTreeMap<String, ContainerReport>,
    kinds: &BTreeMap<String, FailureKind>,
) -> BTreeMap<String, ContainerReport> {
    for (name, k) in kinds {
        if let Some(ContainerReport {
            outcome: ContainerOutcome::NotEvaluated { kind, .. },
            ..
        }) = containers.get_mut(name)
        {
            *kind = *k;
        }
    }
    containers
}

fn stores(state_dir: &Path) -> Result<(Store, SnapshotStore), PassError> {
    Ok((
        Store::open(state_dir).map_err(setup("cannot open the image store"))?,
        SnapshotStore::open(state_dir).map_err(setup("cannot open the snapshot store"))?,
    ))
}

fn client(env: &Env<'_>) -> Result<Client, PassError> {
    let cfg = &env.loaded.config;
    Client::with_timeouts(node::registries_of(cfg), node::pull_timeouts(cfg))
        .map_err(setup("cannot set up the registry client"))
}

/// What `apply` would do now, from the same facts, without executing anything: no
/// layer is pulled and nothing is written to the state directory.
pub fn plan(env: &Env<'_>, input: &Input<'_>, registry: Registry) -> Result<PlanReport, PassError> {
    let front = Front::read(env, input)?;
    // Read only: a store that does not exist yet is not created, and reads as empty.
    let state_dir = &env.loaded.config.runtime.state_dir;
    let (store, snapshots) = (
        Store::open_read_only(state_dir),
        SnapshotStore::open_read_only(state_dir),
    );
    let signatures = front.signatures(env)?;
    let client = match registry {
        Registry::Online => Some(client(env)?),
        Registry::Offline => None,
    };
    let inspection = images::inspect_all(
        &front.targeting(),
        &store,
        &snapshots,
        client.as_ref(),
        &signatures,
        env.rt,
    );
    let networks = node::open_networks(env.loaded);
    let planned = front.plan(
        env,
        input,
        &inspection.facts,
        &inspection.undecided,
        &networks,
    )?;
    Ok(PlanReport {
        next_pass: planned.plan.requeue_at(),
        containers: planned_outcomes(&planned, &inspection.kinds),
        plan: planned.plan,
        unknown: inspection.unknown,
        findings: planned.findings,
    })
}

/// Converges the host once: images first (everything pulled and checked before
/// anything is stopped), then the plan, under the state lock. `on_plan` sees the plan
/// before it runs.
pub fn apply(
    env: &Env<'_>,
    input: &Input<'_>,
    wait: LockWait<'_>,
    on_plan: &mut dyn FnMut(&Plan),
) -> Result<Report, PassError> {
    let front = Front::read(env, input)?;
    let cfg = &env.loaded.config;
    let state_dir = cfg.runtime.state_dir.clone();
    let lock = lock::lock(&state_dir, wait.command, wait.timeout, wait.waiting)?;

    let (store, snapshots) = stores(&state_dir)?;
    let client = client(env)?;
    let signatures = front.signatures(env)?;
    let mut prepared = images::prepare_all(
        &front.targeting(),
        &store,
        &snapshots,
        &client,
        &signatures,
        env.rt,
        env.pulls,
    );
    secrets_ready(env, &front, &mut prepared);
    // One pass rewrites the peers' hosts files once, at its end.
    let networks = node::open_networks(env.loaded).deferring_peers();
    if input.retry_failed {
        super::rollback::forget_all(&state_dir);
    }
    // Scanned and planned under the lock; a plan from an older generation is made
    // again rather than executed.
    let none = BTreeMap::new();
    // Plans from a fresh scan, runs it, and records that the state changed.
    let mut plan_and_run = || -> Result<Report, PassError> {
        let planned = current(&state_dir, || {
            front.plan(env, input, &prepared.facts, &none, &networks)
        })?;
        on_plan(&planned.plan);
        let executed = execute(env, &front, &planned, &prepared.ready, &networks);
        let bumped = lock
            .bump_generation()
            .map_err(|source| PassError::Generation {
                state_dir: state_dir.clone(),
                source,
            });
        let (mut outcome, durations) = executed?;
        bumped?;
        outcome.containers = with_kinds(outcome.containers, &prepared.kinds);
        Ok(report(&planned, outcome, &durations))
    };
    let first = plan_and_run()?;
    // Updates that did not run (and become healthy) in time are rolled back at once:
    // marked failed at this revision, then planned again, which brings the last
    // known good instances back.
    if !super::rollback::mark_failed(&state_dir, &first) {
        return Ok(first);
    }
    let again = plan_and_run()?;
    Ok(super::rollback::merged(first, again))
}

/// How many plans a pass makes before it gives up on a state directory that changes
/// under each of them.
const MAX_PLANS: usize = 3;

/// A plan from `make` made from the state directory's current generation: one made
/// from an older one (another writer changed the state since the scan) is made again,
/// at most [`MAX_PLANS`] times in all.
fn current(
    state_dir: &Path,
    mut make: impl FnMut() -> Result<Planned, PassError>,
) -> Result<Planned, PassError> {
    let mut last = (0, 0);
    for _ in 0..MAX_PLANS {
        let planned = make()?;
        let now = lock::generation(state_dir).map_err(|source| PassError::Scan {
            state_dir: state_dir.to_path_buf(),
            source: source.into(),
        })?;
        if planned.plan.actual_generation == now {
            return Ok(planned);
        }
        tracing::warn!(
            planned = planned.plan.actual_generation,
            now,
            "the state directory changed since the scan; planning again"
        );
        last = (planned.plan.actual_generation, now);
    }
    Err(PassError::Stale {
        state_dir: state_dir.to_path_buf(),
        plans: MAX_PLANS,
        planned: last.0,
        current: last.1,
    })
}

/// Runs the plan on this host.
fn execute(
    env: &Env<'_>,
    front: &Front,
    planned: &Planned,
    ready: &BTreeMap<String, ReadyImage>,
    networks: &crate::network::Networks,
) -> Result<(Outcome, BTreeMap<usize, executor::StepTime>), PassError> {
    let cfg = &env.loaded.config;
    let run_dir = cfg.runtime.run_dir.clone();
    let runtime =
        detect(&cfg.runtime.oci_runtime, &run_dir).map_err(setup("cannot use the OCI runtime"))?;
    let (runtime_binary, runtime_root) = (runtime.binary.clone(), runtime.root.clone());
    let needed = devices_created(&planned.plan, &planned.desired);
    let host_info =
        crate::runtime::host::cached(&needed).map_err(setup("cannot describe this host"))?;
    let shim =
        find_shim(cfg.runtime.shim_path.as_deref()).map_err(setup("cannot find the berth shim"))?;
    let instances = OciInstances::new(
        runtime,
        shim,
        cfg.runtime.log_max_size,
        cfg.runtime.log_max_files,
    );
    let age = match &cfg.secrets.identity {
        Some(p) if needs_secrets(&planned.desired) => {
            Some(AgeIdentity::load(p).map_err(setup("cannot load the node's age identity"))?)
        }
        _ => None,
    };
    let ev = Evaluator::new(&front.policy.policy, &front.policy.host, node::today());
    let bind_check = super::bindcheck::PolicyBinds {
        evaluator: &ev,
        mode: front.policy.mode,
    };
    let host = ContainerHost {
        state_dir: cfg.runtime.state_dir.clone(),
        run_dir,
        root: front.root.clone(),
        spec: &front.checked.state,
        desired: &planned.desired,
        images: ready,
        networks,
        runtime: &instances,
        runtime_binary,
        runtime_root,
        host: &host_info,
        identity: age.as_ref(),
        mounts: &LinuxFs,
        files: &LinuxFs,
        binds: &bind_check,
        touched: Default::default(),
        created: Default::default(),
        stopped: Default::default(),
        health: super::host::HealthProbes::new(cfg.runtime.parallel),
    };
    let (mut outcome, durations) =
        executor::execute_timed(&planned.plan, StepHost::of(&host), cfg.runtime.parallel);
    outcome.complete(&planned.desired, &planned.decisions);
    Ok((outcome, durations))
}

/// The host devices the containers this plan creates ask for: the host description
/// is gathered again when one of them is not in it (plugged in since).
fn devices_created<'d>(plan: &Plan, desired: &'d Desired) -> Vec<&'d str> {
    plan.steps
        .iter()
        .filter_map(|s| match &s.action {
            super::Action::Create { name, .. } => desired.containers.get(name),
            _ => None,
        })
        .flat_map(|c| c.spec.devices.iter().map(|d| d.host.as_str()))
        .collect()
}

/// Secrets are made ready as images are, before anything stops: a container with a
/// secret that cannot be decrypted now (a corrupt file, one not encrypted to this
/// node), or with a node identity that cannot be loaded, is not evaluated, so that its
/// running version stays rather than be stopped for a create that cannot succeed.
/// Nothing decrypted is kept. Without `secrets.identity` set, the pass says so when it
/// runs (as before).
fn secrets_ready(env: &Env<'_>, front: &Front, prepared: &mut images::Prepared) {
    let with: Vec<&Container> = front
        .targeting()
        .into_iter()
        .filter(|c| !c.secrets.is_empty())
        .collect();
    let Some(path) = env.loaded.config.secrets.identity.as_deref() else {
        return;
    };
    if with.is_empty() {
        return;
    }
    let identity = AgeIdentity::load(path);
    for c in with {
        let failed = match &identity {
            // No secret can be decrypted: none of these containers is touched.
            Err(e) => Some((
                format!(
                    "the node's age identity {} cannot be loaded: {}",
                    path.display(),
                    crate::util::error_chain(e)
                ),
                e.is_transient(),
            )),
            Ok(identity) => c.secrets.iter().find_map(|s| {
                let secret = front.checked.state.secrets.get(&s.name)?;
                crate::storage::secrets::decrypt_tree_file(identity, &front.root, &secret.file)
                    .err()
                    .map(|e| {
                        (
                            format!(
                                "secret `{}` cannot be decrypted: {}",
                                s.name,
                                crate::util::error_chain(&e)
                            ),
                            e.is_transient(),
                        )
                    })
            }),
        };
        if let Some((why, transient)) = failed {
            let facts = prepared.facts.entry(c.name.clone()).or_default();
            if facts.error.is_none() {
                facts.error = Some(why);
                prepared.kinds.insert(
                    c.name.clone(),
                    if transient {
                        FailureKind::Transient
                    } else {
                        FailureKind::Permanent
                    },
                );
            }
        }
    }
}

fn needs_secrets(desired: &Desired) -> bool {
    desired
        .containers
        .values()
        .any(|c| !c.spec.secrets.is_empty())
}

/// The report of an executed plan.
fn report(
    planned: &Planned,
    outcome: Outcome,
    durations: &BTreeMap<usize, executor::StepTime>,
) -> Report {
    let plan = &planned.plan;
    let steps = outcome
        .results
        .iter()
        .filter_map(|(id, result)| {
            Some(StepReport {
                step: plan.steps.iter().find(|s| s.id == *id)?.clone(),
                result: result.clone(),
                duration_ms: durations
                    .get(id)
                    .map(|d| u64::try_from(d.took.as_millis()).unwrap_or(u64::MAX)),
                started: durations.get(id).map(|d| d.started),
            })
        })
        .collect();
    Report {
        revision: plan.revision.clone(),
        converged: outcome.converged(),
        networks: outcome
            .deferred_networks
            .iter()
            .map(|(n, reason)| {
                let r = NetworkReport {
                    outcome: "deferred",
                    reason: reason.clone(),
                };
                (n.clone(), r)
            })
            .collect(),
        containers: outcome.containers,
        steps,
        findings: planned.findings.clone(),
        next_pass: plan.requeue_at(),
        desired: planned
            .desired
            .containers
            .iter()
            .map(|(name, d)| (name.clone(), d.hash.as_str().to_string()))
            .collect(),
    }
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod tests;

#[cfg(test)]
mod generation_tests {
    use super::*;
    use crate::reconcile::model::History;

    /// A plan of the state directory as it is now (nothing desired).
    fn scan_and_plan(state_dir: &Path) -> Result<Planned, PassError> {
        let actual =
            gather::actual(state_dir, BTreeMap::new()).map_err(|source| PassError::Scan {
                state_dir: state_dir.to_path_buf(),
                source,
            })?;
        let desired = Desired::default();
        let decisions = PolicyDecisions::default();
        let plan = super::super::plan(
            &desired,
            &actual,
            &decisions,
            &History::default(),
            Timestamp(0),
        );
        Ok(Planned {
            desired,
            decisions,
            findings: BTreeMap::new(),
            plan,
        })
    }

    #[test]
    fn a_plan_from_an_older_generation_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock::lock(dir.path(), "berth stop web", Duration::ZERO, &mut |_| {}).unwrap();
        held.bump_generation().unwrap();
        let mut plans = 0;
        let planned = current(dir.path(), || {
            plans += 1;
            let p = scan_and_plan(dir.path());
            if plans == 1 {
                // Another writer, between the first scan and its execution.
                held.bump_generation().unwrap();
            }
            p
        })
        .unwrap();
        assert_eq!(plans, 2);
        assert_eq!(planned.plan.actual_generation, 2);
    }

    #[test]
    fn a_state_that_changes_under_every_plan_fails_the_pass() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock::lock(dir.path(), "berth apply", Duration::ZERO, &mut |_| {}).unwrap();
        let mut plans = 0;
        let err = current(dir.path(), || {
            plans += 1;
            let p = scan_and_plan(dir.path());
            held.bump_generation().unwrap();
            p
        })
        .err()
        .unwrap();
        assert_eq!(plans, MAX_PLANS);
        match err {
            PassError::Stale {
                plans,
                planned,
                current,
                ..
            } => assert_eq!((plans, planned, current), (MAX_PLANS, 2, 3)),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn an_unchanged_state_is_planned_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut plans = 0;
        let planned = current(dir.path(), || {
            plans += 1;
            scan_and_plan(dir.path())
        })
        .unwrap();
        assert_eq!((plans, planned.plan.actual_generation), (1, 0));
    }
}
