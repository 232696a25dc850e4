//! Golden tests: a scenario directory in, the printed plan out.
//!
//! `testdata/<scenario>/` holds `desired/*.toml` (the spec tree of this revision, parsed
//! with `berth_spec::check` and hashed with `spec_hash`), optionally `previous/*.toml`
//! (the tree the existing instances were created from), `scenario.toml` (the node, the
//! actual state, policy decisions, history, `now`; see [`Scenario`]) and `plan.txt`, the
//! expected plan. `UPDATE_GOLDEN=1` rewrites `plan.txt` (and `plan.json` where the
//! scenario asks for it); review the diff.
//!
//! Every scenario is also run to convergence against a fake host ([`execute`]): after
//! its plan is carried out, planning again must give nothing but reports, which is the
//! "second apply with no change yields zero steps" rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::{Container, DesiredState, NodeIdentity, SourceFile, Tree};
use serde::Deserialize;

use super::backoff::RestartBackoff;
use super::facts::{networks_of, volumes_of};
use super::model::*;
use crate::runtime::spec_hash::{HashInput, SecretInput, spec_hash};

/// `scenario.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Scenario {
    now: u64,
    revision: String,
    node: Node,
    prune_volumes: bool,
    stop_on_violation: bool,
    /// Desired containers whose image is in the store (images of existing instances
    /// always are).
    images_present: Vec<String>,
    /// Containers of the tree that could not be evaluated, with the reason.
    not_evaluated: BTreeMap<String, String>,
    /// Existing berth networks and their subnets (`""`: unknown).
    networks: BTreeMap<String, String>,
    volumes: Vec<String>,
    orphans: Vec<ScenarioOrphan>,
    instance: Vec<ScenarioInstance>,
    record: BTreeMap<String, ScenarioRecord>,
    policy: BTreeMap<String, ScenarioPolicy>,
    history: BTreeMap<String, Vec<ScenarioExit>>,
    /// Also compare `plan.json`.
    golden_json: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Node {
    name: String,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioOrphan {
    id: String,
    state: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioInstance {
    container: String,
    /// `desired` or `previous`: the tree it was created from.
    from: String,
    state: String,
    #[serde(default)]
    code: i32,
    started_at: Option<u64>,
    finished_at: Option<u64>,
    #[serde(default)]
    health: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ScenarioRecord {
    restarts: u32,
    mark: Option<String>,
    /// The update to the desired tree's instance failed at this revision, for this
    /// reason (`runtime::rollback`).
    failed: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ScenarioPolicy {
    blocked: Vec<String>,
    findings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioExit {
    started_at: Option<u64>,
    finished_at: u64,
    code: i32,
}

fn read_tree(dir: &Path) -> DesiredState {
    let mut sources = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            sources.push(SourceFile {
                path: name,
                text: std::fs::read_to_string(&path).unwrap(),
            });
        }
    }
    let mut tree = Tree::from_sources(sources);
    tree.files.extend(["secrets/pw.age".to_string()]);
    let checked = berth_spec::check(&tree, None);
    assert!(checked.is_ok(), "{}: {:?}", dir.display(), checked.errors);
    checked.state
}

/// A container of a tree, hashed as the agent would hash it.
fn hashed(state: &DesiredState, c: &Container, present: bool) -> DesiredContainer {
    let reference = c.image_ref.as_ref().expect("valid image reference");
    let digest = reference.digest.clone().expect("testdata pins digests");
    let networks: Vec<_> = networks_of(c)
        .iter()
        .filter_map(|n| state.networks.get(n))
        .collect();
    let volumes: Vec<_> = volumes_of(c)
        .iter()
        .filter_map(|v| state.volumes.get(v))
        .collect();
    let secrets: Vec<SecretInput<'_>> = c
        .secrets
        .iter()
        .map(|s| SecretInput {
            secret: &state.secrets[&s.name],
            ciphertext: b"age-ciphertext",
        })
        .collect();
    let hash = spec_hash(&HashInput {
        container: c,
        image_digest: &digest,
        networks: &networks,
        volumes: &volumes,
        secrets: &secrets,
        seccomp_profile: None,
    })
    .unwrap();
    DesiredContainer {
        spec: c.clone(),
        instance: hash.instance_id(&c.name),
        hash,
        image: reference.name(),
        digest,
        image_ready: present,
    }
}

fn state_of(s: &str, code: i32, started: u64, finished: u64) -> InstanceState {
    match s {
        "created" => InstanceState::Created,
        "running" => InstanceState::Running {
            pid: 4242,
            started_at: Timestamp(started),
        },
        "exited" => InstanceState::Exited {
            code,
            started_at: Some(Timestamp(started)),
            finished_at: Timestamp(finished),
        },
        "unknown" => InstanceState::Unknown,
        other => panic!("unknown instance state {other}"),
    }
}

/// All four planner inputs and `now`, built from a scenario directory.
struct Inputs {
    desired: Desired,
    actual: Actual,
    policy: PolicyDecisions,
    history: History,
    now: Timestamp,
    golden_json: bool,
}

fn load(dir: &Path) -> Inputs {
    let text = std::fs::read_to_string(dir.join("scenario.toml")).unwrap_or_default();
    let sc: Scenario = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let now = if sc.now == 0 { 1_800_000_000 } else { sc.now };
    let node = NodeIdentity {
        name: Some(if sc.node.name.is_empty() {
            "edge-1".into()
        } else {
            sc.node.name.clone()
        }),
        labels: sc.node.labels.clone(),
    };
    let trees = BTreeMap::from([
        ("desired", read_tree(&dir.join("desired"))),
        ("previous", read_tree(&dir.join("previous"))),
    ]);

    // Actual: instances hashed from the tree they were created from.
    let mut actual = Actual {
        generation: 7,
        ..Actual::default()
    };
    for (name, subnet) in &sc.networks {
        let subnet = (!subnet.is_empty()).then(|| subnet.clone());
        actual
            .networks
            .insert(name.clone(), ActualNetwork { subnet });
    }
    actual.volumes.extend(sc.volumes.iter().cloned());
    for o in &sc.orphans {
        actual.orphans.push(Orphan {
            id: o.id.clone(),
            state: state_of(&o.state, 0, now - 3600, now - 60),
        });
    }
    let mut in_store = Vec::new();
    for i in &sc.instance {
        let tree = &trees[i.from.as_str()];
        let c = &tree.containers[&i.container];
        let h = hashed(tree, c, true);
        in_store.push(h.digest.clone());
        let record = actual.containers.entry(i.container.clone()).or_default();
        record.instances.push(ObservedInstance {
            id: h.instance,
            digest: Some(h.digest),
            state: state_of(
                &i.state,
                i.code,
                i.started_at.unwrap_or(now - 3600),
                i.finished_at.unwrap_or(now - 60),
            ),
            health: match i.health.as_deref() {
                None => HealthState::Unknown,
                Some("starting") => HealthState::Starting,
                Some("healthy") => HealthState::Healthy,
                Some("unhealthy") => HealthState::Unhealthy,
                Some(other) => panic!("unknown health {other}"),
            },
            spec: Some(c.clone()),
            networks: networks_of(c),
            volumes: volumes_of(c),
        });
    }
    for (name, r) in &sc.record {
        let record = actual.containers.entry(name.clone()).or_default();
        record.restarts = r.restarts;
        record.mark = r.mark.as_deref().map(|m| {
            assert_eq!(m, "stopped");
            OperatorMark::Stopped
        });
        record.failed_update = r.failed.as_ref().map(|reason| {
            let tree = &trees["desired"];
            FailedUpdate {
                instance: hashed(tree, &tree.containers[name], true).instance,
                revision: if sc.revision.is_empty() {
                    "c0ffee1".into()
                } else {
                    sc.revision.clone()
                },
                reason: reason.clone(),
                restored: false,
            }
        });
    }

    // Desired: the tree filtered to the node.
    let state = &trees["desired"];
    let mut desired = Desired {
        revision: Revision {
            id: if sc.revision.is_empty() {
                "c0ffee1".into()
            } else {
                sc.revision.clone()
            },
            source: dir.file_name().unwrap().to_string_lossy().into(),
        },
        prune_volumes: sc.prune_volumes,
        ..Desired::default()
    };
    for c in state.containers.values() {
        if !c.targets(&node) {
            desired.other_nodes.insert(c.name.clone());
            continue;
        }
        for n in networks_of(c) {
            let subnet = state
                .networks
                .get(&n)
                .and_then(|n| n.subnet)
                .map(|s| s.to_string());
            desired.networks.insert(n, DesiredNetwork { subnet });
        }
        desired.volumes.extend(volumes_of(c));
        if let Some(reason) = sc.not_evaluated.get(&c.name) {
            desired.not_evaluated.insert(c.name.clone(), reason.clone());
            continue;
        }
        let mut h = hashed(state, c, sc.images_present.contains(&c.name));
        h.image_ready |= in_store.contains(&h.digest);
        desired.containers.insert(c.name.clone(), h);
    }

    let mut policy = PolicyDecisions {
        stop_on_violation: sc.stop_on_violation,
        ..PolicyDecisions::default()
    };
    for name in desired.containers.keys() {
        let decision = match sc.policy.get(name) {
            Some(p) if !p.blocked.is_empty() => Decision::Blocked {
                reasons: p.blocked.clone(),
            },
            Some(p) => Decision::Reported {
                findings: p.findings.clone(),
            },
            None => Decision::Allowed,
        };
        policy.containers.insert(name.clone(), decision);
    }
    let history = History {
        containers: sc
            .history
            .iter()
            .map(|(name, exits)| {
                let exits = exits
                    .iter()
                    .map(|e| Exit {
                        started_at: e.started_at.map(Timestamp),
                        finished_at: Timestamp(e.finished_at),
                        code: e.code,
                    })
                    .collect();
                (name.clone(), exits)
            })
            .collect(),
        ..History::default()
    };
    Inputs {
        desired,
        actual,
        policy,
        history,
        now: Timestamp(now),
        golden_json: sc.golden_json,
    }
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/reconcile/testdata")
}

fn compare(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs (run with UPDATE_GOLDEN=1 and review the diff)\n--- expected\n{expected}\n+++ actual\n{actual}",
        path.display()
    );
}

fn golden(scenario: &str) {
    let dir = testdata().join(scenario);
    let i = load(&dir);
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &i.history, i.now);
    compare(&dir.join("plan.txt"), &plan.to_string());
    if i.golden_json {
        compare(
            &dir.join("plan.json"),
            &(serde_json::to_string_pretty(&plan).unwrap() + "\n"),
        );
    }
    invariants(scenario, &plan);
    // Purity: the same inputs give the same plan.
    let again = super::plan(&i.desired, &i.actual, &i.policy, &i.history, i.now);
    assert_eq!(plan.to_string(), again.to_string());
    converges(scenario, i, plan);
}

/// Rules every plan keeps, whatever the scenario.
fn invariants(scenario: &str, plan: &Plan) {
    let mut pulls_done = false;
    let mut stopped = std::collections::BTreeSet::new();
    for (n, s) in plan.steps.iter().enumerate() {
        assert_eq!(s.id, n + 1, "{scenario}: ids are positions");
        assert!(
            s.needs.iter().all(|d| *d < s.id),
            "{scenario}: step {} needs a later step",
            s.id
        );
        match &s.action {
            Action::Pull { .. } => assert!(!pulls_done, "{scenario}: pulls come first"),
            _ => pulls_done = true,
        }
        if let Action::Stop { instance, .. } = &s.action {
            assert!(
                stopped.insert(instance.clone()),
                "{scenario}: {instance} stopped twice"
            );
        }
        // The executor runs stages in order: a need is never in a later stage.
        for d in &s.needs {
            let need = &plan.steps[d - 1];
            assert!(
                need.stage <= s.stage,
                "{scenario}: step {} needs step {d} of a later stage",
                s.id
            );
        }
    }
    // What the phases promise without a `needs` edge holds across stages.
    let stages = |f: fn(&Action) -> bool| -> Vec<u32> {
        plan.steps
            .iter()
            .filter(|s| f(&s.action))
            .map(|s| s.stage)
            .collect()
    };
    let pulls = stages(|a| matches!(a, Action::Pull { .. }));
    let others = stages(|a| !matches!(a, Action::Pull { .. }));
    for p in &pulls {
        assert!(
            others.iter().all(|o| o > p),
            "{scenario}: a step shares a stage with a pull"
        );
    }
    let creates = stages(|a| matches!(a, Action::Create { .. }));
    let removals = stages(|a| {
        matches!(
            a,
            Action::Forget { .. } | Action::RemoveNetwork { .. } | Action::RemoveVolume { .. }
        )
    });
    for r in &removals {
        assert!(
            creates.iter().all(|c| c > r),
            "{scenario}: a create may run alongside a removal"
        );
    }
}

/// Carries the plan out on a fake host and plans again: only reports may remain.
fn converges(scenario: &str, mut i: Inputs, plan: Plan) {
    let later = Timestamp(i.now.0 + 5);
    super::fake_host::execute(&plan, &mut i.desired, &mut i.actual, later);
    let next = super::plan(&i.desired, &i.actual, &i.policy, &i.history, later);
    let left: Vec<&Step> = next
        .steps
        .iter()
        .filter(|s| !matches!(s.action, Action::Report { .. }))
        .collect();
    assert!(
        left.is_empty(),
        "{scenario}: not converged after one plan; planning again gives:\n{next}"
    );
}

macro_rules! scenarios {
    ($($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                golden(stringify!($name));
            }
        )+

        /// Every scenario directory is run by a test above.
        #[test]
        fn every_scenario_is_listed() {
            let listed = [$(stringify!($name)),+];
            for e in std::fs::read_dir(testdata()).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().to_string();
                assert!(listed.contains(&name.as_str()), "testdata/{name} is not listed in scenarios!");
            }
        }
    };
}

scenarios!(
    fresh_install,
    no_change,
    env_changed,
    image_digest_changed,
    removed_from_repo,
    no_longer_targeting_node,
    exited_restart_policies,
    crash_loop_backoff,
    operator_stopped,
    operator_stopped_update,
    blocked_new,
    blocked_update_keeps_running,
    blocked_update_restarts_last_good,
    blocked_running_stop_on_violation,
    audit_findings,
    start_first_update,
    dependency_not_on_node,
    not_evaluated,
    unreferenced_network_removed,
    volume_kept,
    volume_pruned,
    orphan_instance,
    orphan_same_id,
    unhealthy_restarted,
    update_rolled_back,
    update_rolled_back_kept,
    unknown_state,
    network_subnet_changed,
    network_modes,
);

/// Removing everything: each container's stop comes a stage before the stops of what it
/// depends on (web → api → db), so steps run side by side never stop a dependency first.
#[test]
fn dependents_stop_a_stage_before_what_they_depend_on() {
    let mut i = load(&testdata().join("fresh_install"));
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &i.history, i.now);
    let later = Timestamp(i.now.0 + 5);
    super::fake_host::execute(&plan, &mut i.desired, &mut i.actual, later);
    let deps: Vec<(String, Vec<String>)> = i
        .desired
        .containers
        .iter()
        .map(|(n, c)| (n.clone(), c.spec.depends_on.clone()))
        .collect();
    i.desired.containers.clear();
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &i.history, later);
    let stop_stage = |name: &str| {
        plan.steps
            .iter()
            .find(|s| matches!(&s.action, Action::Stop { name: n, .. } if n == name))
            .map(|s| s.stage)
            .unwrap_or_else(|| panic!("no stop of {name}:\n{plan}"))
    };
    let mut pairs = 0;
    for (name, ds) in deps {
        for d in ds {
            assert!(
                stop_stage(&name) < stop_stage(&d),
                "{name} depends on {d} but does not stop first:\n{plan}"
            );
            pairs += 1;
        }
    }
    assert_eq!(pairs, 2, "web → api → db");
}

#[test]
fn requeue_at_the_end_of_the_backoff() {
    let i = load(&testdata().join("crash_loop_backoff"));
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &i.history, i.now);
    assert_eq!(plan.requeue_at(), Some(Timestamp(1_800_000_038)));
    assert!(plan.not_applied().is_empty());
}

#[test]
fn reports_what_was_not_applied() {
    let i = load(&testdata().join("dependency_not_on_node"));
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &i.history, i.now);
    assert_eq!(plan.not_applied(), ["api", "web"]);
    assert_eq!(plan.requeue_at(), None);
}

/// A desired container without a policy decision is blocked, never applied.
#[test]
fn fails_closed_without_a_decision() {
    let mut i = load(&testdata().join("fresh_install"));
    i.policy.containers.remove("web");
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &i.history, i.now);
    assert_eq!(plan.not_applied(), ["web"]);
    assert!(
        plan.to_string()
            .contains("no policy decision (failing closed)")
    );
}

/// The plan carries what it was computed from, so a stale plan can be detected.
#[test]
fn carries_revision_and_generation() {
    let i = load(&testdata().join("no_change"));
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &i.history, i.now);
    assert!(plan.is_empty());
    assert_eq!(plan.revision.id, "c0ffee1");
    assert_eq!(plan.actual_generation, 7);
    assert_eq!(plan.now, i.now);
}

/// Puts every instance of the scenario in `state`.
fn set_states(i: &mut Inputs, state: InstanceState) {
    for c in i.actual.containers.values_mut() {
        for inst in &mut c.instances {
            inst.state = state;
        }
    }
}

/// The pass's crash-loop backoff over a real state directory and a controlled clock:
/// each crash's exit is recorded in the restart history as the restart replaces it (as
/// `host::start` does), the planner reads the history back (`gather::history`), and
/// the delays double: 10 s, 20 s, 40 s, 80 s, 160 s. A restart planned before its delay
/// is deferred; at the delay it is due. The history outlives the process: a fresh read
/// of the state directory gives the same plan.
#[test]
fn backoff_doubles_over_the_recorded_history() {
    use crate::runtime::history::{self, ExitEntry};
    let mut i = load(&testdata().join("crash_loop_backoff"));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let mut crashed = 1_900_000_000u64;
    let mut delays = Vec::new();
    for _ in 0..5 {
        // The instance just crashed, one second after it started.
        let exited = InstanceState::Exited {
            code: 2,
            started_at: Some(Timestamp(crashed - 1)),
            finished_at: Timestamp(crashed),
        };
        set_states(&mut i, exited);
        let history = super::gather::history(state, &i.desired, RestartBackoff::default());
        let at = |now: u64| super::plan(&i.desired, &i.actual, &i.policy, &history, Timestamp(now));

        // Right after the crash: the restart waits, and the executor defers it.
        let early = at(crashed + 1);
        let due = early.requeue_at().expect("a deferred restart");
        let delay = due.0 - crashed;
        delays.push(delay);
        let shown = berth_spec::types::format_duration(std::time::Duration::from_secs(delay));
        assert!(
            early.to_string().contains(&format!("backoff {shown}")),
            "{early}"
        );
        // At its time: due, nothing deferred.
        let late = at(due.0);
        assert_eq!(late.requeue_at(), None, "{late}");
        assert!(late.to_string().contains("start"), "{late}");

        // The restart records the exit, and the next crash comes two seconds later.
        history::record(
            state,
            "flaky",
            ExitEntry {
                instance: None,
                started_at: Some(crashed - 1),
                finished_at: crashed,
                code: 2,
            },
        )
        .unwrap();
        crashed = due.0 + 2;
    }
    assert_eq!(delays, vec![10, 20, 40, 80, 160]);
    // A run of ten minutes resets it.
    let long = InstanceState::Exited {
        code: 2,
        started_at: Some(Timestamp(crashed - 700)),
        finished_at: Timestamp(crashed),
    };
    set_states(&mut i, long);
    let history = super::gather::history(state, &i.desired, RestartBackoff::default());
    let plan = super::plan(
        &i.desired,
        &i.actual,
        &i.policy,
        &history,
        Timestamp(crashed + 1),
    );
    assert_eq!(plan.requeue_at(), Some(Timestamp(crashed + 10)), "{plan}");
}

/// An exit stamped years ahead (a clock that stepped back) holds the restart for the
/// longest backoff at most, never until that time.
#[test]
fn an_exit_from_the_future_holds_the_restart_five_minutes_at_most() {
    let mut i = load(&testdata().join("crash_loop_backoff"));
    let now = 1_800_000_000u64;
    let future = now + 5 * 365 * 24 * 3600;
    set_states(
        &mut i,
        InstanceState::Exited {
            code: 2,
            started_at: Some(Timestamp(future - 1)),
            finished_at: Timestamp(future),
        },
    );
    let plan = super::plan(
        &i.desired,
        &i.actual,
        &i.policy,
        &History::default(),
        Timestamp(now),
    );
    assert_eq!(plan.requeue_at(), Some(Timestamp(now + 300)), "{plan}");
}

/// Exits of an older spec's instance do not count against the new one: a changed spec
/// starts a fresh backoff.
#[test]
fn a_new_instance_starts_a_fresh_backoff() {
    use crate::runtime::history::{self, ExitEntry};
    let i = load(&testdata().join("crash_loop_backoff"));
    let dir = tempfile::tempdir().unwrap();
    let current = i.desired.containers["flaky"].hash.instance_id("flaky");
    for (n, instance) in [
        (1, "flaky-00000000"),
        (2, "flaky-00000000"),
        (3, current.as_str()),
    ] {
        let entry = ExitEntry {
            instance: Some(instance.to_string()),
            started_at: Some(1_799_999_000 + n),
            finished_at: 1_799_999_001 + n,
            code: 2,
        };
        history::record(dir.path(), "flaky", entry).unwrap();
    }
    let fast = RestartBackoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(8),
    };
    let h = super::gather::history(dir.path(), &i.desired, fast);
    assert_eq!(h.backoff, fast);
    assert_eq!(h.containers["flaky"].len(), 1, "{h:?}");
}

/// The node's `runtime.restart_backoff` and `runtime.restart_backoff_max` reach the
/// planner through its history input: a configured first delay moves the deferred
/// restart, and a configured cap bounds it.
#[test]
fn a_configured_backoff_changes_the_deferred_restart() {
    let mut i = load(&testdata().join("crash_loop_backoff"));
    let crashed = 1_900_000_000u64;
    set_states(
        &mut i,
        InstanceState::Exited {
            code: 2,
            started_at: Some(Timestamp(crashed - 1)),
            finished_at: Timestamp(crashed),
        },
    );
    let at = |backoff: RestartBackoff| {
        let history = History {
            backoff,
            ..History::default()
        };
        super::plan(
            &i.desired,
            &i.actual,
            &i.policy,
            &history,
            Timestamp(crashed + 1),
        )
    };
    let default = at(RestartBackoff::default());
    assert_eq!(
        default.requeue_at(),
        Some(Timestamp(crashed + 10)),
        "{default}"
    );
    let fast = at(RestartBackoff {
        initial: Duration::from_secs(3),
        max: Duration::from_secs(60),
    });
    assert_eq!(fast.requeue_at(), Some(Timestamp(crashed + 3)), "{fast}");
    assert!(fast.to_string().contains("backoff 3s"), "{fast}");
    // The same inputs give the same plan.
    let again = at(RestartBackoff {
        initial: Duration::from_secs(3),
        max: Duration::from_secs(60),
    });
    assert_eq!(again.to_string(), fast.to_string());

    // An exit stamped in the future is held for the configured cap, not the default.
    let now = 1_800_000_000u64;
    set_states(
        &mut i,
        InstanceState::Exited {
            code: 2,
            started_at: Some(Timestamp(now + 99_999)),
            finished_at: Timestamp(now + 100_000),
        },
    );
    let history = History {
        backoff: RestartBackoff {
            initial: Duration::from_secs(3),
            max: Duration::from_secs(45),
        },
        ..History::default()
    };
    let plan = super::plan(&i.desired, &i.actual, &i.policy, &history, Timestamp(now));
    assert_eq!(plan.requeue_at(), Some(Timestamp(now + 45)), "{plan}");
}
