//! What the agent knows of itself, kept crash-safely in `<state_dir>/state/agent.json`
//! after every fetch and pass, and the status shown from it (`berth status`, the API's
//! `GET /v1/status`): the revision, the last fetch and pass, and Flux-style conditions.
//!
//! The status is read from the state directory, so `berth status` works with no agent
//! running; a running agent serves the same view.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::applied::{Applied, RevisionInfo};

/// The record's format.
pub const SCHEMA_VERSION: u32 = 1;

/// What the agent says, and its status shows, when the node configuration has no
/// `[source]` (a fresh install).
pub const NO_SOURCE: &str =
    "no source configured: idling until the node configuration has a [source]";

/// `state/agent.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub schema_version: u32,
    /// The agent's pid and when it started (RFC 3339).
    pub pid: u32,
    pub started_at: String,
    /// When the agent stopped cleanly; none while it runs (or after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<FetchState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<PassState>,
    /// When the pass running now started (RFC 3339); none between passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_since: Option<String>,
    /// The policy findings of the last pass that judged the containers, by container
    /// (violations and waived ones; a compliant container has none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub findings: BTreeMap<String, Vec<FindingNote>>,
    /// The node configuration has no `[source]`: the agent idles (converging only the
    /// revision applied before, if there is one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_source: bool,
}

/// One policy finding of a container, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingNote {
    /// The rule's id (`run-as-non-root`).
    pub rule: String,
    /// `error` or `warning`.
    pub severity: String,
    /// `violation`, `waived` or `not-checked`.
    pub status: String,
    /// Where: the key, and `file:line` in the revision's spec tree.
    pub key: String,
    pub file: String,
    pub line: usize,
    /// What is wrong (never a secret's value).
    pub message: String,
}

impl FindingNote {
    pub fn of(f: &berth_policy::finding::Finding) -> Self {
        FindingNote {
            rule: f.rule.id().to_string(),
            severity: f.severity.as_str().to_string(),
            status: f.status.as_str().to_string(),
            key: f.key.clone(),
            file: f.file.clone(),
            line: f.line,
            message: f.message.clone(),
        }
    }
}

/// The last fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchState {
    pub at: String,
    /// The commit fetched; none when the fetch failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Why the source is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the fetched revision was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// When the next fetch is due.
    pub next_at: String,
}

/// The last pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassState {
    pub started_at: String,
    pub finished_at: String,
    /// `converged`, `not-converged` (something was not applied or waits for a
    /// backoff), `failed` (the pass could not run), `observed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The revision it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When the next pass is due (a backoff ends, or the resync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
    /// An observed pass: how many changes `apply` would make (its `would` lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<u32>,
}

/// Why the record cannot be read or written.
pub type AgentStateError = crate::util::versioned::VersionedError;

impl AgentState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state").join("agent.json")
    }

    pub fn load(state_dir: &Path) -> Result<Option<Self>, AgentStateError> {
        crate::util::versioned::load(&Self::path(state_dir), SCHEMA_VERSION)
    }

    pub fn store(&self, state_dir: &Path) -> Result<(), AgentStateError> {
        crate::util::versioned::store(&Self::path(state_dir), self)
    }
}

/// Whether the agent is suspended: `state/suspended` exists (so a suspend outlives a
/// restart of the agent).
pub fn suspended(state_dir: &Path) -> bool {
    suspend_path(state_dir).exists()
}

pub fn suspend_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state").join("suspended")
}

/// One condition, as Flux shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// The status as `berth status` and the API show it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// `running` (an agent answers on the socket), or `not running`.
    pub agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub suspended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<FetchState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<PassState>,
    pub conditions: Vec<Condition>,
    /// The last pass's policy findings, by container.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub findings: BTreeMap<String, Vec<FindingNote>>,
}

/// The status of the state directory at `state_dir`; `running` says whether an agent
/// answers for it.
pub fn view(state_dir: &Path, running: bool) -> StatusView {
    let state = AgentState::load(state_dir).ok().flatten();
    let applied = Applied::load(state_dir).ok().flatten();
    let suspended = suspended(state_dir);
    let conditions = conditions(state.as_ref(), applied.as_ref(), suspended, running);
    StatusView {
        agent: if running { "running" } else { "not running" }.to_string(),
        pid: state.as_ref().filter(|_| running).map(|s| s.pid),
        suspended,
        revision: applied.as_ref().map(|a| a.revision.clone()),
        applied_at: applied.as_ref().map(|a| a.applied_at.clone()),
        last_fetch: state.as_ref().and_then(|s| s.last_fetch.clone()),
        last_pass: state.as_ref().and_then(|s| s.last_pass.clone()),
        conditions,
        findings: state.map(|s| s.findings).unwrap_or_default(),
    }
}

/// Ready / Progressing / Degraded / Suspended / SourceUnavailable.
fn conditions(
    state: Option<&AgentState>,
    applied: Option<&Applied>,
    suspended: bool,
    running: bool,
) -> Vec<Condition> {
    let fetch = state.and_then(|s| s.last_fetch.as_ref());
    let pass = state.and_then(|s| s.last_pass.as_ref());
    let unavailable = fetch.and_then(|f| f.error.clone());
    let refused = fetch.and_then(|f| f.refused.clone());
    let result = pass.map(|p| p.result.as_str());
    let no_source = state.is_some_and(|s| s.no_source);
    let c = |kind, status, reason: &str, message: String| Condition {
        kind,
        status,
        reason: reason.to_string(),
        message,
    };
    let ready = result == Some("converged") && unavailable.is_none() && refused.is_none();
    let ready_why = match (result, &unavailable, &refused) {
        (None, _, _) if no_source => ("NoSource", NO_SOURCE.to_string()),
        (None, _, _) => ("NoPass", "no pass has run yet".to_string()),
        (_, Some(e), _) => ("SourceUnavailable", e.clone()),
        (_, _, Some(r)) => ("RevisionRefused", r.clone()),
        (Some("converged"), _, _) => (
            "Converged",
            applied.map_or_else(String::new, |a| {
                format!("revision {} applied", a.revision.short())
            }),
        ),
        (Some("observed"), _, _) => (
            "ObserveOnly",
            match pass.and_then(|p| p.message.as_deref()) {
                Some(m) => format!("observe mode: the last pass planned, and applied nothing: {m}"),
                None => "observe mode: the last pass planned, and applied nothing".to_string(),
            },
        ),
        (Some(other), _, _) => (
            "NotConverged",
            pass.and_then(|p| p.message.clone())
                .unwrap_or_else(|| format!("the last pass ended {other}")),
        ),
    };
    let degraded = matches!(result, Some("failed" | "not-converged"));
    vec![
        c("Ready", ready, ready_why.0, ready_why.1),
        {
            // Flux's reading: progressing while the agent works towards the revision;
            // not when it waits for an operator (suspended), for a new commit (the
            // newest is refused: stalled), or only observes.
            let in_flight = state.and_then(|s| s.pass_since.as_deref());
            let (progressing, reason, message) = if !running {
                (false, "AgentNotRunning", "agent: not running".to_string())
            } else if let Some(since) = in_flight {
                (true, "PassRunning", format!("a pass runs since {since}"))
            } else if suspended {
                (false, "Suspended", "passes are suspended".to_string())
            } else if no_source {
                (false, "NoSource", NO_SOURCE.to_string())
            } else if ready {
                (false, "Idle", String::new())
            } else if let Some(r) = &refused {
                (
                    false,
                    "Stalled",
                    format!("waiting for a commit that can be applied: {r}"),
                )
            } else if result == Some("observed") {
                (
                    false,
                    "ObserveOnly",
                    "observe mode: nothing is applied".to_string(),
                )
            } else {
                (
                    true,
                    "Reconciling",
                    "the agent converges the node".to_string(),
                )
            };
            c("Progressing", progressing, reason, message)
        },
        c(
            "Degraded",
            degraded,
            if degraded {
                "PassNotConverged"
            } else {
                "AsExpected"
            },
            pass.and_then(|p| p.message.clone()).unwrap_or_default(),
        ),
        c(
            "Suspended",
            suspended,
            if suspended { "Suspended" } else { "Active" },
            if suspended {
                "`berth resume` to reconcile again".to_string()
            } else {
                String::new()
            },
        ),
        c(
            "SourceUnavailable",
            unavailable.is_some(),
            match (&unavailable, fetch) {
                _ if no_source => "NoSource",
                (Some(_), _) => "FetchFailed",
                (None, Some(_)) => "Fetched",
                (None, None) => "NotFetchedYet",
            },
            match (&unavailable, fetch) {
                _ if no_source => NO_SOURCE.to_string(),
                (Some(e), Some(f)) => format!("{e}; next try at {}", f.next_at),
                _ => String::new(),
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_refuses_newer_and_derives_conditions() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(AgentState::load(dir.path()).expect("load").is_none());
        let s = AgentState {
            schema_version: SCHEMA_VERSION,
            pid: 42,
            started_at: "2026-12-04T10:00:00Z".into(),
            stopped_at: None,
            last_fetch: Some(FetchState {
                at: "2026-12-04T10:00:01Z".into(),
                commit: None,
                error: Some("cannot reach https://h/r.git: refused".into()),
                refused: None,
                next_at: "2026-12-04T10:00:06Z".into(),
            }),
            last_pass: Some(PassState {
                started_at: "2026-12-04T10:00:01Z".into(),
                finished_at: "2026-12-04T10:00:02Z".into(),
                result: "converged".into(),
                message: None,
                revision: Some("abc".into()),
                next_at: None,
                planned: None,
            }),
            pass_since: None,
            findings: [(
                "web".to_string(),
                vec![FindingNote {
                    rule: "run-as-non-root".into(),
                    severity: "error".into(),
                    status: "waived".into(),
                    key: "user".into(),
                    file: "web.toml".into(),
                    line: 3,
                    message: "runs as root".into(),
                }],
            )]
            .into(),
            no_source: false,
        };
        s.store(dir.path()).expect("store");
        assert_eq!(AgentState::load(dir.path()).expect("load"), Some(s.clone()));
        let v = view(dir.path(), false);
        assert_eq!(v.agent, "not running");
        assert_eq!(v.findings, s.findings);
        // A pass in flight: Progressing, saying since when.
        let running = AgentState {
            pass_since: Some("2026-12-04T10:01:00Z".into()),
            ..s.clone()
        };
        running.store(dir.path()).expect("store");
        let p = view(dir.path(), true)
            .conditions
            .into_iter()
            .find(|c| c.kind == "Progressing")
            .expect("Progressing");
        assert!(p.status && p.reason == "PassRunning", "{p:?}");
        assert!(p.message.contains("2026-12-04T10:01:00Z"), "{p:?}");
        s.store(dir.path()).expect("store");
        let by = |k: &str| v.conditions.iter().find(|c| c.kind == k).cloned();
        assert_eq!(by("Ready").map(|c| c.status), Some(false));
        let unavailable = by("SourceUnavailable").expect("condition");
        assert!(unavailable.status);
        assert!(
            unavailable
                .message
                .contains("next try at 2026-12-04T10:00:06Z")
        );
        let mut newer = serde_json::to_value(&s).expect("json");
        newer["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        std::fs::write(AgentState::path(dir.path()), newer.to_string()).expect("write");
        assert!(matches!(
            AgentState::load(dir.path()),
            Err(AgentStateError::Newer { .. })
        ));
    }

    #[test]
    fn a_node_without_a_source_says_so_in_its_conditions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = AgentState {
            schema_version: SCHEMA_VERSION,
            pid: 42,
            no_source: true,
            ..AgentState::default()
        };
        s.store(dir.path()).expect("store");
        let v = view(dir.path(), true);
        for kind in ["Ready", "Progressing", "SourceUnavailable"] {
            let c = v.conditions.iter().find(|c| c.kind == kind).expect(kind);
            assert!(!c.status, "{c:?}");
            assert_eq!(
                (c.reason.as_str(), c.message.as_str()),
                ("NoSource", NO_SOURCE)
            );
        }
    }
}
