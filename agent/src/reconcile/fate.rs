//! What becomes of each container, decided before any step is emitted: applied (its
//! desired instance created and run), kept as it is (blocked by policy, held by a
//! dependency, not evaluated), or pruned (no longer desired here).
//!
//! Containers are decided in dependency order, so a dependent sees whether each of its
//! dependencies will be running once the plan has run.

use std::collections::{BTreeMap, BTreeSet};

use berth_spec::Container;
use berth_spec::types::{Restart, Update, format_duration};
use serde_json::Value;

use super::backoff::RestartBackoff;
use super::diff;
use super::facts::networks_of;
use super::model::{
    Actual, ActualContainer, Decision, Desired, DesiredContainer, Exit, FailedUpdate, HealthState,
    History, InstanceState, ObservedInstance, OperatorMark, PolicyDecisions, ReportKind, Timestamp,
};
use super::order::topological;

/// Every container's fate, and the dependency order they were decided in.
#[derive(Debug)]
pub(super) struct Fates<'a> {
    /// Desired, not-evaluated and existing containers: dependencies first.
    pub order: Vec<String>,
    /// Per container, the length of its longest `depends_on` chain (0: depends on
    /// nothing here). Dependents are stopped before what they depend on.
    pub depth: BTreeMap<String, u32>,
    pub fates: BTreeMap<String, Fate<'a>>,
}

#[derive(Debug)]
pub(super) enum Fate<'a> {
    Apply(Apply<'a>),
    Keep(Keep<'a>),
    Prune(Prune<'a>),
}

/// A container whose desired instance is made to exist and (unless the operator stopped
/// it) to run.
#[derive(Debug)]
pub(super) struct Apply<'a> {
    pub name: String,
    pub want: &'a DesiredContainer,
    /// The instance with the desired id, if it exists.
    pub current: Option<&'a ObservedInstance>,
    /// Every other instance: stopped and removed.
    pub stale: Vec<&'a ObservedInstance>,
    /// Why the desired instance is created, when it does not exist yet.
    pub create: Option<String>,
    /// Create and start the new instance before stopping the old one.
    pub start_first: bool,
    /// Why the current instance is stopped (operator mark, unknown state).
    pub stop_current: Option<String>,
    pub start: Option<Start>,
    /// Policy findings (warnings, or errors in audit mode), reported when the instance
    /// is created.
    pub audit: Option<String>,
}

impl<'a> Apply<'a> {
    /// The instance an update replaces, kept until the new one is verified so that a
    /// failed update can be rolled back to it: the running one of the old instances,
    /// when a new instance is created and started.
    pub fn replaced(&self) -> Option<&'a ObservedInstance> {
        if self.create.is_none() || self.start.is_none() {
            return None;
        }
        self.stale
            .iter()
            .copied()
            .find(|i| matches!(i.state, InstanceState::Running { .. }))
    }
}

/// A start and why, possibly delayed by crash-loop backoff.
#[derive(Debug, Clone)]
pub(super) struct Start {
    pub reason: String,
    pub not_before: Option<Timestamp>,
}

/// A container left as it is, and reported.
#[derive(Debug)]
pub(super) struct Keep<'a> {
    pub kind: ReportKind,
    /// Why, without what happens to the instances (the kind says blocked, held or not
    /// evaluated): a dependent's reason quotes it.
    pub cause: String,
    pub message: String,
    /// Its instances, all kept unless listed in `stop`.
    pub instances: Vec<&'a ObservedInstance>,
    pub stop: Vec<(&'a ObservedInstance, String)>,
    /// Removed after their stop: the instance of a failed update, rolled back.
    pub remove: Vec<(&'a ObservedInstance, String)>,
    /// The last known good version restarted after an exit (or, rolling back, started
    /// again as the container's instance).
    pub restart: Option<(&'a ObservedInstance, Start)>,
}

/// A container no longer desired here: all its instances go, then its record.
#[derive(Debug)]
pub(super) struct Prune<'a> {
    pub instances: Vec<&'a ObservedInstance>,
    pub reason: String,
}

/// Decides every container's fate.
pub(super) fn decide<'a>(
    desired: &'a Desired,
    actual: &'a Actual,
    policy: &PolicyDecisions,
    history: &History,
    now: Timestamp,
) -> Fates<'a> {
    let (order, depth) = dependency_order(desired, actual);
    let mut fates = BTreeMap::new();
    // Whether each container decided so far runs once the plan has run, or why not.
    let mut runs: BTreeMap<String, Runs> = BTreeMap::new();
    for name in &order {
        let record = actual.containers.get(name);
        let instances: Vec<&ObservedInstance> = record
            .map(|r| r.instances.iter().collect())
            .unwrap_or_default();
        let ctx = Ctx {
            name,
            instances,
            marked: record.and_then(|r| r.mark) == Some(OperatorMark::Stopped),
            restarts: record.map_or(0, |r| r.restarts),
            history: history
                .containers
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or_default(),
            backoff: history.backoff,
            now,
        };
        let fate = if let Some(want) = desired.containers.get(name) {
            let decision =
                policy
                    .containers
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| Decision::Blocked {
                        reasons: vec!["no policy decision (failing closed)".into()],
                    });
            match decision {
                Decision::Blocked { reasons } => {
                    let same = |i: &ObservedInstance| i.id == want.instance;
                    let message = reasons.join("; ");
                    let stop = policy.stop_on_violation;
                    Fate::Keep(keep(&ctx, ReportKind::Blocked, message, stop, same, true))
                }
                // An update that failed at this revision is not tried again by itself.
                _ if let Some(f) = failed_here(record, want, desired) => {
                    Fate::Keep(rolled_back(&ctx, f))
                }
                decision => {
                    let changed = changed_networks(want, desired, actual);
                    let a = apply(&ctx, want, decision, &changed);
                    // A dependency matters only to what would be created or started.
                    let acts = a.create.is_some() || a.start.is_some();
                    match dependency_problem(want, desired, &runs).filter(|_| acts) {
                        Some(problem) => {
                            let k = keep(&ctx, ReportKind::Held, problem, false, |_| false, false);
                            Fate::Keep(k)
                        }
                        None => Fate::Apply(a),
                    }
                }
            }
        } else if let Some(reason) = desired.not_evaluated.get(name) {
            let message = reason.clone();
            let kind = if desired.unknown.contains(name) {
                ReportKind::Unknown
            } else {
                ReportKind::NotEvaluated
            };
            Fate::Keep(keep(&ctx, kind, message, false, |_| false, true))
        } else {
            let reason = if desired.other_nodes.contains(name) {
                "no longer targets this node"
            } else {
                "no longer in the repository"
            };
            Fate::Prune(Prune {
                instances: ctx.instances.clone(),
                reason: reason.into(),
            })
        };
        runs.insert(name.clone(), runs_after(&fate, &ctx));
        fates.insert(name.clone(), fate);
    }
    Fates {
        order,
        depth,
        fates,
    }
}

/// What decisions about one container read.
struct Ctx<'a, 'n> {
    name: &'n str,
    instances: Vec<&'a ObservedInstance>,
    marked: bool,
    restarts: u32,
    history: &'n [Exit],
    backoff: RestartBackoff,
    now: Timestamp,
}

/// Desired and existing containers, dependencies first. Existing containers no longer
/// desired keep the dependencies of the spec they were created from, so they are
/// stopped before what they depended on.
fn dependency_order(desired: &Desired, actual: &Actual) -> (Vec<String>, BTreeMap<String, u32>) {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, c) in &desired.containers {
        graph.insert(name.clone(), c.spec.depends_on.clone());
    }
    for name in desired.not_evaluated.keys() {
        graph.entry(name.clone()).or_default();
    }
    for (name, record) in &actual.containers {
        graph.entry(name.clone()).or_insert_with(|| {
            let deps: BTreeSet<String> = record
                .instances
                .iter()
                .filter_map(|i| i.spec.as_ref())
                .flat_map(|s| s.depends_on.iter().cloned())
                .collect();
            deps.into_iter().collect()
        });
    }
    let order = topological(&graph);
    let mut depth: BTreeMap<String, u32> = BTreeMap::new();
    for name in &order {
        // Dependencies come first in `order`; one not placed yet is part of a cycle.
        let d = graph[name]
            .iter()
            .filter_map(|d| depth.get(d).map(|n| n + 1))
            .max()
            .unwrap_or(0);
        depth.insert(name.clone(), d);
    }
    (order, depth)
}

/// Why a dependency of `want` will not be running, if one will not.
fn dependency_problem(
    want: &DesiredContainer,
    desired: &Desired,
    runs: &BTreeMap<String, Runs>,
) -> Option<String> {
    let mut seen = BTreeSet::new();
    for d in &want.spec.depends_on {
        if !seen.insert(d) {
            continue;
        }
        let problem = if desired.containers.contains_key(d) {
            match runs.get(d) {
                Some(Runs::No(why)) => why.clone(),
                // Running, or not decided yet (only around a cycle).
                _ => continue,
            }
        } else if let Some(reason) = desired.not_evaluated.get(d) {
            match runs.get(d) {
                Some(Runs::Yes) => continue,
                _ if desired.unknown.contains(d) => format!("is not known ({reason})"),
                _ => format!("could not be evaluated ({reason})"),
            }
        } else if desired.other_nodes.contains(d) {
            "does not target this node".into()
        } else {
            "is not in the repository".into()
        };
        return Some(format!("dependency {d} {problem}"));
    }
    None
}

/// The networks of `want` whose subnet differs on the host: the spec hash covers them,
/// the spec's own fields do not show them.
fn changed_networks(want: &DesiredContainer, desired: &Desired, actual: &Actual) -> Vec<String> {
    networks_of(&want.spec)
        .into_iter()
        .filter(|n| {
            let wanted = desired.networks.get(n).and_then(|w| w.subnet.as_ref());
            let have = actual.networks.get(n).map(|h| h.subnet.as_ref());
            wanted.is_some() && have.is_some_and(|h| h != wanted)
        })
        .map(|n| format!("network {n} subnet changed"))
        .collect()
}

fn apply<'a>(
    ctx: &Ctx<'a, '_>,
    want: &'a DesiredContainer,
    decision: Decision,
    changed: &[String],
) -> Apply<'a> {
    let current = ctx
        .instances
        .iter()
        .copied()
        .find(|i| i.id == want.instance);
    let stale: Vec<&ObservedInstance> = ctx
        .instances
        .iter()
        .copied()
        .filter(|i| i.id != want.instance)
        .collect();
    // Warnings in either mode, or errors in audit mode: the report step's kind says
    // they are findings, the reason lists them.
    let audit = match decision {
        Decision::Reported { findings } if !findings.is_empty() => Some(findings.join("; ")),
        _ => None,
    };
    let mut a = Apply {
        name: ctx.name.to_string(),
        want,
        current,
        stale,
        create: None,
        start_first: false,
        stop_current: None,
        start: None,
        audit,
    };
    let restart = want.spec.restart;
    match current.map(|c| c.state) {
        Some(InstanceState::Running { .. } | InstanceState::Unknown) if ctx.marked => {
            a.stop_current = Some("stopped by the operator (berth stop)".into());
        }
        Some(_) if ctx.marked => {}
        Some(InstanceState::Running { .. })
            if current.is_some_and(|c| c.health == HealthState::Unhealthy)
                && restart != Restart::No =>
        {
            if let Some(start) = restart_unhealthy(ctx, restart) {
                a.stop_current = Some(format!(
                    "unhealthy: stopped to be restarted (restart={restart})"
                ));
                a.start = Some(start);
            }
        }
        Some(InstanceState::Running { .. }) => {}
        Some(InstanceState::Created) => a.start = Some(now_start("created but never started")),
        Some(InstanceState::Exited {
            code,
            started_at,
            finished_at,
        }) => {
            let exit = Exit {
                started_at,
                finished_at,
                code,
            };
            a.start = restart_after(ctx, restart, exit);
        }
        Some(InstanceState::Unknown) => {
            a.stop_current = Some("state unknown: stopped so that one instance runs".into());
            a.start = Some(now_start("state unknown: started again after the stop"));
        }
        None => {
            let old = a
                .stale
                .iter()
                .copied()
                .find(|i| matches!(i.state, InstanceState::Running { .. }))
                .or_else(|| a.stale.last().copied());
            let mut why = match old {
                None => "new container".to_string(),
                Some(old) => {
                    let json = |c: &Container| serde_json::to_value(c).unwrap_or(Value::Null);
                    let (new, old_spec) = (json(&want.spec), old.spec.as_ref().map(json));
                    let old_digest = old.digest.as_deref();
                    diff::describe(old_spec.as_ref(), old_digest, &new, &want.digest, changed)
                }
            };
            if ctx.marked {
                why.push_str("; left stopped (berth stop; `berth start` runs it)");
            } else {
                a.start = Some(now_start(match old {
                    None => "new container".to_string(),
                    Some(old) => format!("replaces {}", old.id),
                }));
            }
            a.create = Some(why);
            a.start_first = want.spec.update == Update::StartFirst
                && want.spec.ports.is_empty()
                && !ctx.marked
                && a.stale
                    .iter()
                    .any(|i| matches!(i.state, InstanceState::Running { .. }));
        }
    }
    a
}

/// Keeps a container's instances as they are. `stop` with `same` stops the running
/// instances that are exactly the evaluated spec (`policy.on_running_violation = "stop"`);
/// `restart` lets the last known good version restart after an exit.
fn keep<'a>(
    ctx: &Ctx<'a, '_>,
    kind: ReportKind,
    mut message: String,
    stop: bool,
    same: impl Fn(&ObservedInstance) -> bool,
    restart: bool,
) -> Keep<'a> {
    let mut k = Keep {
        kind,
        cause: message.clone(),
        message: String::new(),
        instances: ctx.instances.clone(),
        stop: Vec::new(),
        remove: Vec::new(),
        restart: None,
    };
    if ctx.instances.is_empty() {
        message.push_str("; not created");
    } else if stop && ctx.instances.iter().any(|i| same(i)) {
        for i in ctx
            .instances
            .iter()
            .copied()
            .filter(|i| same(i) && i.state.may_run())
        {
            k.stop.push((
                i,
                format!("blocked by policy ({message}); policy.on_running_violation = \"stop\""),
            ));
        }
        message.push_str("; stopped (policy.on_running_violation = \"stop\")");
    } else if let Some(r) = ctx
        .instances
        .iter()
        .copied()
        .find(|i| matches!(i.state, InstanceState::Running { .. }))
    {
        message.push_str(&format!("; running version {} kept", r.id));
        // Kept, and restarted when unhealthy as an applied container is.
        let policy = r.spec.as_ref().map(|s| s.restart).unwrap_or_default();
        if r.health == HealthState::Unhealthy
            && !ctx.marked
            && let Some(start) = restart_unhealthy(ctx, policy)
        {
            let why = format!("unhealthy: stopped to be restarted (restart={policy})");
            k.stop.push((r, why));
            k.restart = Some((r, start));
            message.push_str(", restarted: unhealthy");
        }
    } else if let Some((i, start)) = restart_kept(ctx).filter(|_| restart) {
        message.push_str(&format!("; last version {} restarted", i.id));
        k.restart = Some((i, start));
    } else {
        message.push_str("; nothing running");
    }
    k.message = message;
    k
}

/// The failed update of `record` when it is the instance `want` asks for at this very
/// revision (a pass that tries failed updates again clears the marks first).
fn failed_here<'r>(
    record: Option<&'r ActualContainer>,
    want: &DesiredContainer,
    desired: &Desired,
) -> Option<&'r FailedUpdate> {
    record
        .and_then(|r| r.failed_update.as_ref())
        .filter(|f| f.instance == want.instance && f.revision == desired.revision.id)
}

/// A container whose update to `f.instance` failed at this revision: that instance is
/// stopped and removed and the last known good one runs again, as the container's
/// instance; once rolled back, the good one is kept as a blocked container's is.
fn rolled_back<'a>(ctx: &Ctx<'a, '_>, f: &FailedUpdate) -> Keep<'a> {
    let failed = ctx.instances.iter().copied().find(|i| i.id == f.instance);
    let good = ctx
        .instances
        .iter()
        .copied()
        .filter(|i| i.id != f.instance)
        .max_by_key(|i| matches!(i.state, InstanceState::Running { .. }));
    let cause = format!(
        "update to {} failed at revision {}: {}",
        f.instance,
        short(&f.revision),
        f.reason
    );
    let back = |good: &'a ObservedInstance, why: &str| {
        Some((good, now_start(format!("rolled back: {cause}{why}"))))
    };
    match (failed, good) {
        (Some(bad), Some(good)) => {
            let why = format!("{cause}; rolled back to {}", good.id);
            let mut k = Keep {
                kind: ReportKind::RolledBack,
                cause: cause.clone(),
                message: why.clone(),
                instances: ctx.instances.clone(),
                stop: Vec::new(),
                remove: vec![(bad, why.clone())],
                restart: back(good, ""),
            };
            if bad.state.may_run() {
                k.stop.push((bad, why));
            }
            k
        }
        // The failed instance was never made (its create failed): the last good one,
        // stopped for the update, runs again.
        (None, Some(good))
            if !f.restored
                && !ctx.marked
                && !matches!(good.state, InstanceState::Running { .. }) =>
        {
            Keep {
                kind: ReportKind::RolledBack,
                cause: cause.clone(),
                message: format!("{cause}; rolled back to {}", good.id),
                instances: ctx.instances.clone(),
                stop: Vec::new(),
                remove: Vec::new(),
                restart: back(good, ""),
            }
        }
        (None, _) => keep(ctx, ReportKind::RolledBack, cause, false, |_| false, true),
        (Some(_), None) => {
            let message = format!("{cause}; no earlier instance to roll back to");
            keep(ctx, ReportKind::RolledBack, message, false, |_| false, true)
        }
    }
}

/// The first 12 hex digits of a revision id (a commit, or `sha256:<hex>` for a tree),
/// as `git log --oneline` shows a commit.
fn short(revision: &str) -> &str {
    let hex = revision.strip_prefix("sha256:").unwrap_or(revision);
    hex.get(..12).unwrap_or(hex)
}

/// Restarts the newest exited instance of a kept container per the restart policy it
/// was created with: it is the last known good version.
fn restart_kept<'a>(ctx: &Ctx<'a, '_>) -> Option<(&'a ObservedInstance, Start)> {
    if ctx.marked || ctx.instances.iter().any(|i| i.state.may_run()) {
        return None;
    }
    let (i, exit) = ctx
        .instances
        .iter()
        .filter_map(|i| match i.state {
            InstanceState::Exited {
                code,
                started_at,
                finished_at,
            } => Some((
                *i,
                Exit {
                    started_at,
                    finished_at,
                    code,
                },
            )),
            _ => None,
        })
        .max_by_key(|(_, e)| e.finished_at)?;
    let restart = i.spec.as_ref().map(|s| s.restart).unwrap_or_default();
    restart_after(ctx, restart, exit).map(|s| (i, s))
}

fn now_start(reason: impl Into<String>) -> Start {
    Start {
        reason: reason.into(),
        not_before: None,
    }
}

/// Whether `restart` restarts after `exit`, with its reason and crash-loop backoff.
fn restart_after(ctx: &Ctx<'_, '_>, restart: Restart, exit: Exit) -> Option<Start> {
    let restarts = match restart {
        Restart::No => false,
        Restart::OnFailure => exit.code != 0,
        Restart::Always => true,
    };
    if !restarts {
        return None;
    }
    let mut exits = ctx.history.to_vec();
    if !exits.iter().any(|e| e.finished_at == exit.finished_at) {
        exits.push(exit);
    }
    let cause = format!("exited with {}, restart={restart}", exit.code);
    Some(restart_with(ctx, &exits, cause))
}

/// An unhealthy running instance stopped and started again (as a failing liveness
/// probe restarts a Kubernetes container) unless its policy is `no`: at once the first
/// time, then held by the crash-loop backoff its recorded exits (earlier unhealthy
/// stops among them) give, so that a flapping check does not restart it in a loop.
fn restart_unhealthy(ctx: &Ctx<'_, '_>, restart: Restart) -> Option<Start> {
    (restart != Restart::No)
        .then(|| restart_with(ctx, ctx.history, format!("unhealthy, restart={restart}")))
}

/// A restart after `exits`, reasoned `cause` plus the restarts so far and the
/// crash-loop backoff that holds it.
fn restart_with(ctx: &Ctx<'_, '_>, exits: &[Exit], cause: String) -> Start {
    let mut reason = cause;
    if ctx.restarts > 0 {
        reason.push_str(&format!(
            ", restarted {}",
            berth_spec::node::counted(ctx.restarts as usize, "time", "times")
        ));
    }
    let delay = ctx.backoff.delay(exits);
    if let Some(d) = delay {
        reason.push_str(&format!(", backoff {}", format_duration(d.delay)));
    }
    Start {
        reason,
        // Never further than the longest delay from now: an exit stamped in the future
        // (a clock that stepped back, an edge node without a real-time clock) must not
        // hold the restart for years.
        not_before: delay
            .map(|d| d.until.min(ctx.now.after(ctx.backoff.max)))
            .filter(|u| *u > ctx.now),
    }
}

/// Whether a container runs once the plan has run, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Runs {
    Yes,
    /// Why not, as a dependent's reason words it ("is blocked by policy").
    No(String),
}

/// Whether a container runs once the plan has run (or completed: exited 0 and not
/// restarted), or why not, as a dependent's reason words it.
fn runs_after(fate: &Fate<'_>, ctx: &Ctx<'_, '_>) -> Runs {
    let completed = |i: &ObservedInstance| matches!(i.state, InstanceState::Exited { code: 0, .. });
    match fate {
        Fate::Apply(_) if ctx.marked => Runs::No("is stopped by the operator (berth stop)".into()),
        Fate::Apply(a) if a.start.is_some() => Runs::Yes,
        Fate::Apply(a) => match a.current.map(|c| c.state) {
            Some(InstanceState::Running { .. }) => Runs::Yes,
            _ if a.current.is_some_and(completed) => Runs::Yes,
            Some(InstanceState::Exited { code, .. }) => Runs::No(format!(
                "exited with {code} and is not restarted (restart={})",
                a.want.spec.restart
            )),
            _ => Runs::No("is not running".into()),
        },
        Fate::Keep(k) => {
            let stopped: BTreeSet<&str> = k.stop.iter().map(|(i, _)| i.id.as_str()).collect();
            let up = k.restart.is_some()
                || k.instances.iter().any(|i| {
                    matches!(i.state, InstanceState::Running { .. })
                        && !stopped.contains(i.id.as_str())
                });
            if up {
                Runs::Yes
            } else {
                Runs::No(match k.kind {
                    ReportKind::Blocked => "is blocked by policy".into(),
                    ReportKind::NotEvaluated => "could not be evaluated".into(),
                    ReportKind::Unknown => "is not known".into(),
                    _ => format!("cannot start ({})", k.cause),
                })
            }
        }
        Fate::Prune(_) => Runs::No("is not desired here".into()),
    }
}
