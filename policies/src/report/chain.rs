//! The trust chains of a live audit (`berth audit --live`): for each running container,
//! what vouched for it — as the agent recorded it (kept as JSON, the agent's own
//! format), its links in words, and with `--verify` each link checked again now and
//! its flags: what no longer vouches (an error: it fails the audit), what was never
//! vouched for (a warning), and what could not be checked (the audit cannot tell:
//! `berth audit` exits 3). Every renderer carries them: the text report a block per
//! container, JSON `trust_chains`, SARIF the run's `properties.trustChains` and a
//! `trust-chain` result per flag, JUnit a suite with a test case per container.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The id flags carry as a rule (SARIF `ruleId`, JUnit failure type).
pub const RULE: &str = "trust-chain";

/// One running container's chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrustChain {
    pub container: String,
    /// Where reports locate it: `containers/<name>/state.json`.
    pub file: String,
    /// The chain as recorded (an object: commit, signer, digest, image signature…).
    pub record: Value,
    /// The links in words, in order (`commit`, `signer`, `image`, …).
    pub links: Vec<(String, String)>,
    /// With `--verify`: each link checked again now, in words.
    pub now: Option<Vec<(String, String)>>,
    /// With `--verify`: what no longer (or never) vouches, or could not be checked.
    pub flags: Vec<ChainFlag>,
}

/// How much a flag weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagLevel {
    /// A link that held no longer does: the audit fails.
    Error,
    /// A link that never held (the node did not require it, or its policy ran it in
    /// audit mode).
    Warning,
    /// The link could not be checked (a key file, the clone, the image store): the
    /// audit cannot say.
    CannotCheck,
}

impl FlagLevel {
    /// As text and SARIF name it.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagLevel::Error => "error",
            FlagLevel::Warning => "warning",
            FlagLevel::CannotCheck => "cannot check",
        }
    }
}

/// A link that does not hold, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainFlag {
    pub level: FlagLevel,
    /// `commit signer` or `image signature`.
    pub link: String,
    /// Who no longer vouches (a key, an identity, a principal).
    pub gone: Vec<String>,
    pub message: String,
}

impl TrustChain {
    /// The chain as reports' JSON carries it: the record with `container` and, after
    /// `--verify`, `verify: {links…, flags}`.
    pub fn json(&self) -> Value {
        let mut v = match &self.record {
            Value::Object(m) => m.clone(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("record".into(), other.clone());
                m
            }
        };
        v.insert("container".into(), Value::String(self.container.clone()));
        if let Some(now) = &self.now {
            let mut verify: serde_json::Map<String, Value> = now
                .iter()
                .map(|(k, w)| (k.replace(' ', "_"), Value::String(w.clone())))
                .collect();
            verify.insert(
                "flags".into(),
                serde_json::to_value(&self.flags).unwrap_or(Value::Null),
            );
            v.insert("verify".into(), Value::Object(verify));
        }
        Value::Object(v)
    }

    /// The links (and, after `--verify`, each link now and each flag) as text lines.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .links
            .iter()
            .map(|(k, w)| format!("{:<21}{w}", format!("{k}:")))
            .collect();
        if let Some(now) = &self.now {
            for (k, w) in now {
                out.push(format!("{:<21}{w}", format!("{k} now:")));
            }
        }
        out
    }
}
