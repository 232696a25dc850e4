//! The planner: `plan(desired, actual, policy, history, now) -> Plan`. Pure: no I/O, no
//! clock, no async; the same inputs always give the same plan.
//!
//! Each container's fate is decided first ([`super::fate`]); the steps are then emitted in
//! phases, each step naming the earlier steps it needs:
//! 1. pulls, all of them, so a bad image is found before anything running is touched;
//! 2. networks and volumes that do not exist yet;
//! 3. stops, dependents before their dependencies: containers no longer desired,
//!    orphans, the old instances of `stop-first` updates (these need the pull), operator
//!    stops, policy stops;
//! 4. removals: instances, records of containers no longer desired, networks nobody
//!    uses, volumes with `prune_volumes`, networks whose subnet changed (removed, then
//!    created again);
//! 5. per container in dependency order: create, wait for the dependencies' health,
//!    start; for `start-first` updates, then wait for the new instance's health, stop
//!    and remove the old one;
//! 6. reports: blocked, held and not-evaluated containers, audit findings.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_spec::Container;

use crate::runtime::instance::StopParams;

use super::facts::{health_timeout, networks_of, orphan_instance, orphan_name, sorted, volumes_of};
use super::fate::{self, Apply, Fate, Fates};
use super::model::{
    Action, Actual, Desired, History, ObservedInstance, Plan, PolicyDecisions, ReportKind, Step,
    Timestamp,
};

/// Computes what to do to bring `actual` to `desired`.
pub fn plan(
    desired: &Desired,
    actual: &Actual,
    policy: &PolicyDecisions,
    history: &History,
    now: Timestamp,
) -> Plan {
    let Fates {
        order,
        depth,
        fates,
    } = fate::decide(desired, actual, policy, history, now);
    let mut e = Emitter {
        desired,
        actual,
        order: &order,
        depth: &depth,
        fates: &fates,
        steps: Vec::new(),
        pulls: BTreeMap::new(),
        created: BTreeMap::new(),
        stops: BTreeMap::new(),
        removes: BTreeMap::new(),
        started: BTreeMap::new(),
        waited: BTreeMap::new(),
        objects: super::objects::plan(desired, actual, &fates),
        stage: 0,
    };
    e.pulls();
    e.prepare();
    e.stops();
    e.removals();
    e.starts();
    e.reports();
    Plan {
        revision: desired.revision.clone(),
        actual_generation: actual.generation,
        now,
        steps: e.steps,
    }
}

/// The stages of [`Step::stage`], one per phase; stops take one stage per level of
/// `depends_on`, from `STAGE_STOPS` up.
const STAGE_PULLS: u32 = 1;
const STAGE_PREPARE: u32 = 2;
const STAGE_STOPS: u32 = 3;
const STAGE_REMOVALS: u32 = 1 << 20;
const STAGE_STARTS: u32 = STAGE_REMOVALS + 1;
const STAGE_REPORTS: u32 = STAGE_REMOVALS + 2;

/// Builds the step list, remembering each step's id by what it acts on.
struct Emitter<'p, 'a> {
    desired: &'a Desired,
    actual: &'a Actual,
    order: &'p [String],
    depth: &'p BTreeMap<String, u32>,
    fates: &'p BTreeMap<String, Fate<'a>>,
    steps: Vec<Step>,
    /// Pull step by container name.
    pulls: BTreeMap<String, usize>,
    /// Create step by network or volume, keyed `network/<name>` or `volume/<name>`.
    created: BTreeMap<String, usize>,
    /// Stop and remove steps by instance id.
    stops: BTreeMap<String, usize>,
    removes: BTreeMap<String, usize>,
    /// Start and wait-healthy steps by container name.
    started: BTreeMap<String, usize>,
    waited: BTreeMap<String, usize>,
    objects: super::objects::Objects,
    /// The stage of the steps pushed now (see [`Step::stage`]).
    stage: u32,
}

impl<'p, 'a> Emitter<'p, 'a> {
    fn push(
        &mut self,
        action: Action,
        reason: impl Into<String>,
        needs: impl IntoIterator<Item = Option<usize>>,
        not_before: Option<Timestamp>,
    ) -> usize {
        let id = self.steps.len() + 1;
        let needs: BTreeSet<usize> = needs.into_iter().flatten().collect();
        self.steps.push(Step {
            id,
            action,
            reason: reason.into(),
            needs: needs.into_iter().collect(),
            not_before,
            stage: self.stage,
        });
        id
    }

    fn applied(&self) -> impl Iterator<Item = &'p Apply<'a>> + 'p {
        let fates = self.fates;
        self.order.iter().filter_map(move |n| match fates.get(n) {
            Some(Fate::Apply(a)) => Some(a),
            _ => None,
        })
    }

    /// Phase 1: one pull per image and digest that a new instance needs.
    fn pulls(&mut self) {
        self.stage = STAGE_PULLS;
        let mut wanted: Vec<((String, String), Vec<&str>)> = Vec::new();
        for a in self.applied() {
            if a.create.is_none() || a.want.image_ready {
                continue;
            }
            let key = (a.want.image.clone(), a.want.digest.clone());
            match wanted.iter_mut().find(|(k, _)| *k == key) {
                Some((_, names)) => names.push(&a.name),
                None => wanted.push((key, vec![&a.name])),
            }
        }
        for ((image, digest), names) in wanted {
            let reason = format!("image not in the store, for {}", names.join(", "));
            let id = self.push(Action::Pull { image, digest }, reason, [], None);
            for n in names {
                self.pulls.insert(n.to_string(), id);
            }
        }
    }

    /// Phase 2: networks and volumes that an applied container uses and that do not
    /// exist yet.
    fn prepare(&mut self) {
        self.stage = STAGE_PREPARE;
        for (name, users) in self.objects.create_networks.clone() {
            let reason = format!("not on the host, for {}", users.join(", "));
            let id = self.push(
                Action::CreateNetwork { name: name.clone() },
                reason,
                [],
                None,
            );
            self.created.insert(format!("network/{name}"), id);
        }
        for (name, users) in self.objects.create_volumes.clone() {
            let reason = format!("not on the host, for {}", users.join(", "));
            let id = self.push(
                Action::CreateVolume { name: name.clone() },
                reason,
                [],
                None,
            );
            self.created.insert(format!("volume/{name}"), id);
        }
    }

    /// What a new instance of `a` needs before anything of the old one is touched.
    fn prerequisites(&self, a: &Apply<'_>) -> Vec<Option<usize>> {
        let mut needs = vec![self.pulls.get(&a.name).copied()];
        for n in networks_of(&a.want.spec) {
            needs.push(self.created.get(&format!("network/{n}")).copied());
        }
        for v in volumes_of(&a.want.spec) {
            needs.push(self.created.get(&format!("volume/{v}")).copied());
        }
        needs
    }

    /// The instance an update of `a` replaces, kept until the new one is verified so
    /// that a failed update is rolled back to it ([`Apply::replaced`]) — unless one of
    /// its networks is removed or recreated by this plan, which needs it gone first.
    fn replaced(&self, a: &Apply<'a>) -> Option<&'a ObservedInstance> {
        let old = a.replaced()?;
        let o = &self.objects;
        let busy =
            |n: &String| o.recreate_networks.contains_key(n) || o.remove_networks.contains_key(n);
        if old.networks.iter().any(busy) || networks_of(&a.want.spec).iter().any(busy) {
            return None;
        }
        Some(old)
    }

    /// Whether `a` replaces its old instance only after the new one runs.
    fn start_first(&self, a: &Apply<'_>) -> bool {
        a.start_first
            && !networks_of(&a.want.spec)
                .iter()
                .any(|n| self.objects.recreate_networks.contains_key(n))
    }

    fn stop(
        &mut self,
        name: &str,
        i: &ObservedInstance,
        spec: Option<&Container>,
        reason: String,
        needs: Vec<Option<usize>>,
    ) {
        if !i.state.may_run() || self.stops.contains_key(&i.id) {
            return;
        }
        // The instance's own stored spec wins over the desired one: it is what runs.
        let stop = StopParams::of(i.spec.as_ref(), spec);
        let action = Action::Stop {
            name: name.to_string(),
            instance: i.id.clone(),
            signal: stop.signal.name,
            timeout: stop.timeout,
        };
        let id = self.push(action, reason, needs, None);
        self.stops.insert(i.id.clone(), id);
    }

    fn remove(
        &mut self,
        name: &str,
        i: &ObservedInstance,
        reason: String,
        mut needs: Vec<Option<usize>>,
    ) {
        needs.push(self.stops.get(&i.id).copied());
        let action = Action::Remove {
            name: name.to_string(),
            instance: i.id.clone(),
        };
        let id = self.push(action, reason, needs, None);
        self.removes.insert(i.id.clone(), id);
    }

    /// Phase 3: every stop that comes before the new instances, dependents first.
    fn stops(&mut self) {
        let deepest = self.depth.values().copied().max().unwrap_or(0);
        self.stage = STAGE_STOPS + deepest;
        let orphans: Vec<ObservedInstance> =
            self.actual.orphans.iter().map(orphan_instance).collect();
        for i in &orphans {
            let reason = "orphan instance: no container record accounts for it".to_string();
            self.stop(&orphan_name(&i.id), i, None, reason, vec![]);
        }
        for name in self.order.iter().rev() {
            // The deepest dependents first; each level once the one above has stopped.
            let depth = self.depth.get(name).copied().unwrap_or(0);
            self.stage = STAGE_STOPS + deepest - depth;
            match self.fates.get(name) {
                Some(Fate::Prune(p)) => {
                    for i in sorted(&p.instances) {
                        self.stop(name, i, None, p.reason.clone(), vec![]);
                    }
                }
                Some(Fate::Keep(k)) => {
                    for (i, reason) in &k.stop {
                        self.stop(name, i, None, reason.clone(), vec![]);
                    }
                }
                Some(Fate::Apply(a)) => {
                    let spec = Some(&a.want.spec);
                    if let (Some(c), Some(reason)) = (a.current, &a.stop_current) {
                        self.stop(name, c, spec, reason.clone(), vec![]);
                    }
                    match (&a.create, a.current) {
                        (Some(why), _) if !self.start_first(a) => {
                            let needs = self.prerequisites(a);
                            for i in sorted(&a.stale) {
                                let reason = format!("replaced by {}: {why}", a.want.instance);
                                self.stop(name, i, spec, reason, needs.clone());
                            }
                        }
                        (None, Some(c)) => {
                            for i in sorted(&a.stale) {
                                let reason = format!("superseded by {}", c.id);
                                self.stop(name, i, spec, reason, vec![]);
                            }
                        }
                        _ => {}
                    }
                }
                None => {}
            }
        }
    }

    /// Phase 4: removals, then networks and volumes no longer used.
    fn removals(&mut self) {
        self.stage = STAGE_REMOVALS;
        let orphans: Vec<ObservedInstance> =
            self.actual.orphans.iter().map(orphan_instance).collect();
        for i in &orphans {
            let reason = "orphan instance: no container record accounts for it".to_string();
            self.remove(&orphan_name(&i.id), i, reason, vec![]);
        }
        for name in self.order.iter().rev() {
            match self.fates.get(name) {
                Some(Fate::Keep(k)) => {
                    for (i, reason) in &k.remove {
                        self.remove(name, i, reason.clone(), vec![]);
                    }
                }
                Some(Fate::Prune(p)) => {
                    for i in sorted(&p.instances) {
                        self.remove(name, i, p.reason.clone(), vec![]);
                    }
                    let needs = p.instances.iter().map(|i| self.removes.get(&i.id).copied());
                    let needs: Vec<Option<usize>> = needs.collect();
                    let action = Action::Forget { name: name.clone() };
                    self.push(action, p.reason.clone(), needs, None);
                }
                Some(Fate::Apply(a)) => match (&a.create, a.current) {
                    (Some(_), _) if !self.start_first(a) => {
                        let needs = self.prerequisites(a);
                        // The instance an update replaces stays until the new one is
                        // verified: a failed update is rolled back to it.
                        let kept = self.replaced(a).map(|i| i.id.as_str());
                        for i in sorted(&a.stale) {
                            if Some(i.id.as_str()) == kept {
                                continue;
                            }
                            let reason = format!("replaced by {}", a.want.instance);
                            self.remove(name, i, reason, needs.clone());
                        }
                    }
                    (None, Some(c)) => {
                        for i in sorted(&a.stale) {
                            self.remove(name, i, format!("superseded by {}", c.id), vec![]);
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        let users = |ids: &[String], removes: &BTreeMap<String, usize>| -> Vec<Option<usize>> {
            ids.iter().map(|id| removes.get(id).copied()).collect()
        };
        for (name, (ids, reason)) in self.objects.remove_networks.clone() {
            let needs = users(&ids, &self.removes);
            self.push(Action::RemoveNetwork { name }, reason, needs, None);
        }
        for (name, (ids, reason)) in self.objects.remove_volumes.clone() {
            let needs = users(&ids, &self.removes);
            self.push(Action::RemoveVolume { name }, reason, needs, None);
        }
        for (name, (ids, reason)) in self.objects.recreate_networks.clone() {
            let needs = users(&ids, &self.removes);
            let removed = self.push(
                Action::RemoveNetwork { name: name.clone() },
                reason.clone(),
                needs,
                None,
            );
            let action = Action::CreateNetwork { name: name.clone() };
            let id = self.push(action, reason, [Some(removed)], None);
            self.created.insert(format!("network/{name}"), id);
        }
    }

    /// Phase 5: creates and starts in dependency order, and `start-first` handovers.
    fn starts(&mut self) {
        self.stage = STAGE_STARTS;
        for name in self.order {
            match self.fates.get(name) {
                Some(Fate::Apply(a)) => self.bring_up(a),
                Some(Fate::Keep(k)) => {
                    if let Some((i, start)) = &k.restart {
                        let mut needs = self.dependencies(name);
                        needs.push(self.stops.get(&i.id).copied());
                        // Rolling back: the failed instance is gone first (its ports).
                        for (r, _) in &k.remove {
                            needs.push(self.removes.get(&r.id).copied());
                        }
                        let action = Action::Start {
                            name: name.clone(),
                            instance: i.id.clone(),
                        };
                        let id = self.push(action, start.reason.clone(), needs, start.not_before);
                        self.started.insert(name.clone(), id);
                    }
                }
                _ => {}
            }
        }
    }

    fn bring_up(&mut self, a: &Apply<'a>) {
        let name = a.name.clone();
        let instance = a.want.instance.clone();
        let start_first = self.start_first(a);
        let mut created = None;
        if let Some(why) = &a.create {
            let mut needs = self.prerequisites(a);
            if !start_first {
                needs.extend(a.stale.iter().map(|i| self.stops.get(&i.id).copied()));
            }
            // An orphan left under the same instance id (a pass killed mid-create) must be
            // gone before the runtime is asked to create that id again.
            needs.push(self.removes.get(&instance).copied());
            let action = Action::Create {
                name: name.clone(),
                instance: instance.clone(),
            };
            created = Some(self.push(action, why.clone(), needs, None));
        }
        let Some(start) = &a.start else { return };
        let mut needs = self.dependencies(&name);
        needs.push(created);
        needs.extend(a.current.map(|c| self.stops.get(&c.id).copied()));
        let action = Action::Start {
            name: name.clone(),
            instance: instance.clone(),
        };
        let started = self.push(action, start.reason.clone(), needs, start.not_before);
        self.started.insert(name.clone(), started);
        let replaced = self.replaced(a);
        if !start_first && replaced.is_none() {
            return;
        }
        let mut handover = vec![Some(started)];
        let checked = a.want.spec.health.is_some();
        if let Some(old) = replaced {
            let action = Action::Verify {
                name: name.clone(),
                instance: instance.clone(),
                timeout: a.want.spec.update_timeout,
            };
            let reason = format!(
                "update: running{} within update_timeout, or rolled back to {}",
                if checked { " and healthy" } else { "" },
                old.id
            );
            let verified = self.push(action, reason, [Some(started)], None);
            if checked {
                self.waited.insert(name.clone(), verified);
            }
            handover.push(Some(verified));
        } else if let Some(timeout) = health_timeout(&a.want.spec).filter(|_| start_first) {
            let action = Action::WaitHealthy {
                name: name.clone(),
                instance: instance.clone(),
                timeout,
            };
            let reason = "start-first: the new instance must be healthy before the old one stops";
            let waited = self.push(action, reason, [Some(started)], None);
            self.waited.insert(name.clone(), waited);
            handover.push(Some(waited));
        }
        let spec = Some(&a.want.spec);
        for i in sorted(&a.stale) {
            if start_first {
                let reason = format!("start-first: replaced by {instance}");
                self.stop(&name, i, spec, reason.clone(), handover.clone());
                self.remove(&name, i, reason, handover.clone());
            } else if replaced.is_some_and(|r| r.id == i.id) {
                let reason = format!("replaced by {instance}, verified");
                self.remove(&name, i, reason, handover.clone());
            }
        }
    }

    /// The steps a container's start needs from its dependencies: their starts in this
    /// plan, and a wait for the health of each that has a health check.
    fn dependencies(&mut self, name: &str) -> Vec<Option<usize>> {
        let Some(want) = self.desired.containers.get(name) else {
            return vec![];
        };
        let mut needs = Vec::new();
        for d in &want.spec.depends_on {
            let started = self.started.get(d).copied();
            needs.push(started);
            if let Some(id) = self.waited.get(d) {
                needs.push(Some(*id));
                continue;
            }
            let Some((instance, health, timeout)) = self.running_instance(d) else {
                continue;
            };
            if started.is_none() && health == super::model::HealthState::Healthy {
                continue;
            }
            let action = Action::WaitHealthy {
                name: d.clone(),
                instance,
                timeout,
            };
            let reason = format!("{name} depends on {d}, which has a health check");
            let id = self.push(action, reason, [started], None);
            self.waited.insert(d.clone(), id);
            needs.push(Some(id));
        }
        needs
    }

    /// The instance of `name` that runs once the plan has run, if it has a health check:
    /// its id, current health and how long to wait for it.
    fn running_instance(
        &self,
        name: &str,
    ) -> Option<(String, super::model::HealthState, Duration)> {
        let health = |i: Option<&ObservedInstance>| i.map(|i| i.health).unwrap_or_default();
        match self.fates.get(name)? {
            Fate::Apply(a) => {
                let timeout = health_timeout(&a.want.spec)?;
                Some((a.want.instance.clone(), health(a.current), timeout))
            }
            Fate::Keep(k) => {
                let i = k.restart.as_ref().map(|(i, _)| *i).or_else(|| {
                    k.instances
                        .iter()
                        .copied()
                        .find(|i| matches!(i.state, super::model::InstanceState::Running { .. }))
                })?;
                let timeout = health_timeout(i.spec.as_ref()?)?;
                Some((i.id.clone(), i.health, timeout))
            }
            Fate::Prune(_) => None,
        }
    }

    /// Phase 6: what was not applied, and why; audit findings of what was.
    fn reports(&mut self) {
        self.stage = STAGE_REPORTS;
        for name in self.order {
            let (kind, reason) = match self.fates.get(name) {
                Some(Fate::Keep(k)) => (k.kind, k.message.clone()),
                Some(Fate::Apply(a)) if a.create.is_some() => match &a.audit {
                    Some(findings) => (ReportKind::Audit, findings.clone()),
                    None => continue,
                },
                _ => continue,
            };
            let action = Action::Report {
                name: name.clone(),
                kind,
            };
            self.push(action, reason, [], None);
        }
        for (name, reason) in self.objects.deferred.clone() {
            let action = Action::Report {
                name,
                kind: ReportKind::Deferred,
            };
            self.push(action, reason, [], None);
        }
    }
}
