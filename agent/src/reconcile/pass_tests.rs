//! The report's shape: what the CLI prints in JSON and the agent's API will serve.

use super::*;
use crate::reconcile::executor::StepTime;
use crate::reconcile::model::{Action, ReportKind, Revision, Step};
use crate::reconcile::outcome::summarise;

fn step(id: usize, action: Action, not_before: Option<u64>) -> Step {
    Step {
        id,
        action,
        reason: "new container".into(),
        needs: Vec::new(),
        not_before: not_before.map(Timestamp),
        stage: 0,
    }
}

fn planned(steps: Vec<Step>) -> Planned {
    Planned {
        desired: Desired::default(),
        decisions: PolicyDecisions::default(),
        findings: BTreeMap::new(),
        plan: Plan {
            revision: Revision {
                id: "sha256:abc".into(),
                source: "/srv/spec".into(),
            },
            actual_generation: 0,
            now: Timestamp(1_000),
            steps,
        },
    }
}

#[test]
fn a_report_names_each_step_with_its_result_and_duration() {
    let p = planned(vec![
        step(
            1,
            Action::Create {
                name: "web".into(),
                instance: "web-1a2b3c4d".into(),
            },
            None,
        ),
        step(
            2,
            Action::Start {
                name: "web".into(),
                instance: "web-1a2b3c4d".into(),
            },
            None,
        ),
        step(
            3,
            Action::Report {
                name: "db".into(),
                kind: ReportKind::Blocked,
            },
            None,
        ),
    ]);
    let results = BTreeMap::from([
        (1, StepResult::Done),
        (2, StepResult::Failed("runc: exit 1".into())),
        (3, StepResult::Reported),
    ]);
    let outcome = summarise(&p.plan, &results);
    let durations = BTreeMap::from([
        (1, StepTime::took(Duration::from_millis(12))),
        (2, StepTime::took(Duration::from_millis(3))),
    ]);
    let r = report(&p, outcome, &durations);
    assert_eq!(r.failed_steps(), 1);
    assert!(!r.converged);
    assert_eq!(r.next_pass, None);
    assert!(!r.applied());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v["revision"],
        serde_json::json!({"id": "sha256:abc", "source": "/srv/spec"})
    );
    assert_eq!(
        v["steps"][0],
        serde_json::json!({"id": 1, "action": "create", "name": "web", "instance": "web-1a2b3c4d", "reason": "new container", "result": "done", "duration_ms": 12})
    );
    assert_eq!(
        v["steps"][1],
        serde_json::json!({"id": 2, "action": "start", "name": "web", "instance": "web-1a2b3c4d", "reason": "new container", "result": "failed", "detail": "runc: exit 1", "kind": "permanent", "duration_ms": 3})
    );
    // A report step ran nothing: no duration.
    assert_eq!(
        v["steps"][2],
        serde_json::json!({"id": 3, "action": "report", "name": "db", "kind": "blocked", "reason": "new container", "result": "reported"})
    );
    assert_eq!(v["containers"]["web"]["outcome"], "not_applied", "{v:#}");
    assert_eq!(v["containers"]["db"]["outcome"], "blocked", "{v:#}");
    assert_eq!(v["converged"], false);
    assert!(v["next_pass"].is_null());
    assert!(v.get("networks").is_none(), "{v:#}");
}

#[test]
fn the_next_pass_is_the_earliest_deferred_step() {
    let start = |id, at| {
        step(
            id,
            Action::Start {
                name: format!("c{id}"),
                instance: format!("c{id}-1"),
            },
            Some(at),
        )
    };
    let p = planned(vec![start(1, 1_040), start(2, 1_010), start(3, 1_020)]);
    let results = p
        .plan
        .steps
        .iter()
        .map(|s| (s.id, StepResult::Deferred(s.not_before.unwrap_or_default())))
        .collect();
    let outcome = summarise(&p.plan, &results);
    let r = report(&p, outcome, &BTreeMap::new());
    assert_eq!(r.next_pass, Some(Timestamp(1_010)));
    // Deferred restarts: applied (exit 0), but not converged.
    assert!(r.applied());
    assert!(!r.converged);
    let v = serde_json::to_value(&r).unwrap();
    // Every time in RFC 3339, the same in the step, the outcome and the next pass.
    assert_eq!(v["next_pass"], "1970-01-01T00:16:50Z");
    assert_eq!(v["steps"][1]["not_before"], "1970-01-01T00:16:50Z");
    assert_eq!(
        v["containers"]["c2"]["until"], "1970-01-01T00:16:50Z",
        "{v:#}"
    );
}

#[test]
fn a_plan_report_says_what_apply_would_do_per_container() {
    let mut p = planned(vec![
        step(
            1,
            Action::Create {
                name: "web".into(),
                instance: "web-1a2b3c4d".into(),
            },
            None,
        ),
        step(
            2,
            Action::Start {
                name: "web".into(),
                instance: "web-1a2b3c4d".into(),
            },
            None,
        ),
        step(
            3,
            Action::Report {
                name: "db".into(),
                kind: ReportKind::Unknown,
            },
            None,
        ),
        step(
            4,
            Action::Report {
                name: "cache".into(),
                kind: ReportKind::NotEvaluated,
            },
            None,
        ),
    ]);
    p.desired
        .not_evaluated
        .insert("db".into(), "offline".into());
    p.desired.unknown.insert("db".into());
    p.desired
        .not_evaluated
        .insert("cache".into(), "gone".into());
    let kinds = BTreeMap::from([("cache".to_string(), FailureKind::Transient)]);
    let containers = planned_outcomes(&p, &kinds);
    let r = PlanReport {
        next_pass: None,
        containers,
        plan: p.plan.clone(),
        unknown: BTreeMap::new(),
        findings: BTreeMap::new(),
    };
    assert!(!r.applied());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["containers"]["web"]["outcome"], "created", "{v:#}");
    assert_eq!(v["containers"]["db"]["outcome"], "unknown", "{v:#}");
    assert_eq!(
        v["containers"]["cache"]["outcome"], "not_evaluated",
        "{v:#}"
    );
    assert_eq!(v["containers"]["cache"]["kind"], "transient", "{v:#}");
    assert_eq!(v["containers"]["cache"]["reason"], "new container", "{v:#}");
    assert_eq!(
        v["revision"],
        serde_json::json!({"id": "sha256:abc", "source": "/srv/spec"})
    );
    assert_eq!(v["steps"][2]["kind"], "unknown");
    assert_eq!(v["now"], "1970-01-01T00:16:40Z");
}

#[test]
fn a_plan_report_keeps_the_plan_json_and_adds_what_is_unknown() {
    let p = planned(vec![step(
        1,
        Action::Report {
            name: "web".into(),
            kind: ReportKind::NotEvaluated,
        },
        None,
    )]);
    let r = PlanReport {
        next_pass: p.plan.requeue_at(),
        containers: BTreeMap::new(),
        plan: p.plan.clone(),
        unknown: BTreeMap::from([(
            "web".to_string(),
            vec!["the signature of image x: --offline".to_string()],
        )]),
        findings: BTreeMap::new(),
    };
    let v = serde_json::to_value(&r).unwrap();
    let plan = serde_json::to_value(&p.plan).unwrap();
    // Every key of the plan's own JSON, as `berth plan --format json` printed it.
    for (k, want) in plan.as_object().unwrap() {
        assert_eq!(&v[k], want, "{k}");
    }
    assert_eq!(
        v["unknown"]["web"][0],
        "the signature of image x: --offline"
    );
}
