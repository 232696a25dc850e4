//! The report's shape: what the CLI prints in JSON and the agent's API will serve.

use super::*;
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
        (1, Duration::from_millis(12)),
        (2, Duration::from_millis(3)),
    ]);
    let r = report(&p, outcome, &durations);
    assert_eq!(r.failed_steps(), 1);
    assert!(!r.converged);
    assert_eq!(r.next_pass, None);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["revision"], "sha256:abc");
    assert_eq!(v["source"], "/srv/spec");
    assert_eq!(
        v["steps"][0],
        serde_json::json!({"id": 1, "step": "create web-1a2b3c4d", "result": "done", "duration_ms": 12})
    );
    assert_eq!(
        v["steps"][1],
        serde_json::json!({"id": 2, "step": "start web-1a2b3c4d", "result": "failed", "detail": "runc: exit 1", "kind": "permanent", "duration_ms": 3})
    );
    // A report step ran nothing: no duration.
    assert_eq!(
        v["steps"][2],
        serde_json::json!({"id": 3, "step": "report db  blocked", "result": "reported"})
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
    let outcome = summarise(&p.plan, &BTreeMap::new());
    let r = report(&p, outcome, &BTreeMap::new());
    assert_eq!(r.next_pass, Some(Timestamp(1_010)));
    assert_eq!(serde_json::to_value(&r).unwrap()["next_pass"], 1_010);
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
