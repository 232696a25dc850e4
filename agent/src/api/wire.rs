//! The documents the API exchanges: the server writes them and the client reads them
//! back, so both sides share one type (`agent/API.md` shows each).

use std::path::Path;

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::reconcile::agent_state::{self, FetchState, FindingNote, PassState, StatusView};
use crate::reconcile::backoff::RestartBackoff;
use crate::reconcile::rows::{self, Row};
use crate::runtime::status::StatusError;
use crate::source::applied::RevisionInfo;

/// `GET /v1/status`: the agent's state (`reconcile::agent_state::view`) and every
/// container's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDoc {
    /// `running` (an agent answers on the socket), or `not running`.
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub suspended: bool,
    /// The revision applied last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetch: Option<FetchState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<PassState>,
    /// Ready, Progressing, Degraded, Suspended, SourceUnavailable.
    pub conditions: Vec<ConditionDoc>,
    pub containers: Vec<Row>,
    /// The last pass's policy findings (violations, waived), by container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub findings: BTreeMap<String, Vec<FindingNote>>,
    /// What vouched for each container berth runs (`trust`), in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_chains: Vec<crate::trust::Shown>,
    /// The MQTT channel of `source.notify`, as the running agent sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::source::mqtt::ChannelState>,
}

/// One condition, as Flux shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionDoc {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl StatusDoc {
    /// What the state directory says, as of `now` (Unix seconds); `running` says
    /// whether an agent answers for it.
    pub fn read(
        state_dir: &Path,
        running: bool,
        now: i64,
        backoff: RestartBackoff,
    ) -> Result<Self, StatusError> {
        let containers = rows::list(state_dir, now, backoff)?;
        let mut doc = Self::new(agent_state::view(state_dir, running), containers);
        doc.trust_chains = crate::trust::shown(crate::trust::of_running(state_dir));
        Ok(doc)
    }

    pub fn new(view: StatusView, containers: Vec<Row>) -> Self {
        StatusDoc {
            agent: view.agent,
            pid: view.pid,
            suspended: view.suspended,
            revision: view.revision,
            applied_at: view.applied_at,
            last_fetch: view.last_fetch,
            last_pass: view.last_pass,
            conditions: view
                .conditions
                .into_iter()
                .map(|c| ConditionDoc {
                    kind: c.kind.to_string(),
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                })
                .collect(),
            containers,
            findings: view.findings,
            trust_chains: Vec::new(),
            notify: None,
        }
    }
}

/// `POST /v1/reconcile`: what the pass came to (the controller's `PassOutcome`), with
/// its report (`reconcile::follow::FollowReport`) kept as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomeDoc {
    /// The newest revision applied and every container converged.
    pub converged: bool,
    /// `converged`, `not-converged`, `failed`, `observed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

/// `POST /v1/suspend` and `/v1/resume`: whether passes are suspended now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspendedDoc {
    pub suspended: bool,
}

/// Every error: one sentence with its cause chain; for a plan of a tree with errors,
/// each diagnostic as `berth validate` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDoc {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}
