//! The audit report: every finding for the containers of a tree, the tree's errors and
//! the expired waivers, compared with a base revision when asked (`--since`), and
//! rendered as text, JSON, SARIF 2.1.0 or JUnit XML.
//!
//! Counting (the JSON `summary`): `violations` are findings with status `violation` at
//! `error`, `warnings` those at `warning`; `compliant` counts containers without an
//! error-level violation; `by_rule` counts violations and warnings.

use std::collections::BTreeMap;

use berth_spec::node::{PolicyMode, Waiver};
use berth_spec::{Checked, Diagnostic, Kind, NodeIdentity};
use serde::{Deserialize, Serialize};

use crate::evaluate::{Evaluator, Facts};
use crate::finding::{Change, Finding, Status};
use crate::policy::Severity;
use crate::rule::Rule;

mod chain;
mod json;
mod junit;
mod sarif;
mod text;

pub use chain::{ChainFlag, FlagLevel, TrustChain};
pub use json::{ChainWords, ParseError};
pub use sarif::SarifOptions;

/// A container that was audited, and where it is defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    pub name: String,
    pub file: String,
    pub line: usize,
}

/// The whole audit of one tree.
#[derive(Debug, Clone)]
pub struct Report {
    /// The policy's name (profile or file as given).
    pub policy: String,
    pub mode: PolicyMode,
    /// The rules evaluated (not `off`) and their severities, in report order.
    pub rules: Vec<(Rule, Severity)>,
    pub containers: Vec<Audited>,
    /// Findings of the current tree, by container, then position.
    pub findings: Vec<Finding>,
    /// With `--since`: findings of the base revision that are gone.
    pub fixed: Vec<Finding>,
    pub expired_waivers: Vec<Waiver>,
    /// Parse and validation errors of the tree (as `berth validate` prints them).
    pub errors: Vec<Diagnostic>,
    /// The base revision, with `--since`.
    pub since: Option<String>,
    /// A live audit's trust chains, one per running container (`chain`).
    pub chains: Vec<TrustChain>,
    /// A live audit's source: where the report comes from, and when it was made.
    pub live: Option<Live>,
}

/// Where a live report (`berth audit --live`) comes from. JSON: `live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Live {
    pub source: LiveSource,
    /// When the report was made, RFC 3339 (UTC).
    pub generated_at: String,
    /// The commit of the revision applied then, when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Who made a live report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiveSource {
    /// The agent, after its last pass (`<state_dir>/state/audit.json`, `GET /v1/audit`).
    Agent,
    /// `berth audit --live` itself, from the state directory: no agent answered, or
    /// `--verify` checked the chains again.
    StateDirectory,
}

impl LiveSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveSource::Agent => "agent",
            LiveSource::StateDirectory => "state-directory",
        }
    }
}

/// The counts of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub containers: usize,
    pub compliant: usize,
    pub violations: usize,
    pub warnings: usize,
    pub waived: usize,
    pub not_checked: usize,
    pub by_rule: BTreeMap<Rule, usize>,
}

/// Audits the containers of a checked tree (those targeting `node`, if given).
/// Containers with parse or validation errors are not audited: their errors are the
/// report's `errors`, and a half-read container would give misleading findings.
pub fn audit(
    checked: &Checked,
    node: Option<&NodeIdentity>,
    ev: &Evaluator<'_>,
    mode: PolicyMode,
) -> Report {
    let broken: std::collections::BTreeSet<&str> = checked
        .errors
        .iter()
        .filter(|e| e.kind == Some(Kind::Container))
        .filter_map(|e| e.name.as_deref())
        .collect();
    let mut containers = Vec::new();
    let mut findings = Vec::new();
    for c in checked.state.containers.values() {
        if node.is_some_and(|n| !c.targets(n)) || broken.contains(c.name.as_str()) {
            continue;
        }
        containers.push(Audited {
            name: c.name.clone(),
            file: c.origin.file.clone(),
            line: c.origin.line,
        });
        findings.extend(ev.evaluate(c, &Facts::default()));
    }
    findings.sort_by(|a, b| {
        (&a.name, &a.file, a.line, a.column, a.rule, &a.key)
            .cmp(&(&b.name, &b.file, b.line, b.column, b.rule, &b.key))
    });
    Report {
        policy: ev.policy.name.clone(),
        mode,
        rules: ev
            .policy
            .enabled()
            .into_iter()
            .map(|r| (r, ev.policy.rule(r).severity))
            .collect(),
        containers,
        findings,
        fixed: Vec::new(),
        expired_waivers: ev.expired_waivers().into_iter().cloned().collect(),
        errors: checked.errors.clone(),
        since: None,
        chains: Vec::new(),
        live: None,
    }
}

impl Report {
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            containers: self.containers.len(),
            ..Summary::default()
        };
        for f in &self.findings {
            match f.status {
                Status::Violation if f.is_error() => s.violations += 1,
                Status::Violation => s.warnings += 1,
                Status::Waived => s.waived += 1,
                Status::NotChecked => s.not_checked += 1,
            }
            if f.status == Status::Violation {
                *s.by_rule.entry(f.rule).or_default() += 1;
            }
        }
        let failing: std::collections::BTreeSet<&str> = self
            .findings
            .iter()
            .filter(|f| f.is_error())
            .map(|f| f.name.as_str())
            .collect();
        s.compliant = self
            .containers
            .iter()
            .filter(|c| !failing.contains(c.name.as_str()))
            .count();
        s
    }

    /// The findings of each container (findings are sorted by container name).
    pub fn by_container(&self) -> BTreeMap<&str, &[Finding]> {
        let mut out = BTreeMap::new();
        let mut rest = self.findings.as_slice();
        while let Some(first) = rest.first() {
            let n = rest.iter().take_while(|f| f.name == first.name).count();
            let (group, tail) = rest.split_at(n);
            out.insert(first.name.as_str(), group);
            rest = tail;
        }
        out
    }

    /// Marks each finding `new` or `existing` against the base revision's report, and
    /// collects the base's findings that are gone as `fixed`. Findings match by (rule,
    /// kind, name, key), so an edit above a finding does not make it new. Not-checked
    /// findings of the base are not listed as fixed: nothing was found there.
    pub fn compare(&mut self, base: &Report, rev: &str) {
        let mut pool: BTreeMap<(Rule, Kind, String, String), usize> = BTreeMap::new();
        for f in &base.findings {
            let (r, k, n, key) = f.identity();
            *pool
                .entry((r, k, n.to_string(), key.to_string()))
                .or_default() += 1;
        }
        for f in &mut self.findings {
            let (r, k, n, key) = f.identity();
            let id = (r, k, n.to_string(), key.to_string());
            f.change = Some(match pool.get_mut(&id) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    Change::Existing
                }
                _ => Change::New,
            });
        }
        for f in &base.findings {
            let (r, k, n, key) = f.identity();
            let id = (r, k, n.to_string(), key.to_string());
            if let Some(left) = pool.get_mut(&id).filter(|l| **l > 0) {
                *left -= 1;
                if f.status != Status::NotChecked {
                    self.fixed.push(Finding {
                        change: Some(Change::Fixed),
                        ..f.clone()
                    });
                }
            }
        }
        self.since = Some(rev.to_string());
    }

    /// The findings that fail the audit: error-level violations — only the new ones
    /// with `--since`, the gate a merge request needs.
    pub fn failing(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.is_error() && (self.since.is_none() || f.change == Some(Change::New)))
    }

    /// Whether `berth audit` exits 1: failing findings, errors in the tree, or a
    /// trust chain that no longer holds (`--verify`).
    pub fn failed(&self) -> bool {
        !self.errors.is_empty() || self.failing().next().is_some() || self.chain_flags() > 0
    }

    /// How many links of the trust chains no longer hold.
    pub fn chain_flags(&self) -> usize {
        self.chain_count(chain::FlagLevel::Error)
    }

    /// How many links of the trust chains could not be checked (`berth audit` exits
    /// 3 when nothing failed).
    pub fn chains_unchecked(&self) -> usize {
        self.chain_count(chain::FlagLevel::CannotCheck)
    }

    fn chain_count(&self, level: chain::FlagLevel) -> usize {
        self.chains
            .iter()
            .flat_map(|c| &c.flags)
            .filter(|f| f.level == level)
            .count()
    }

    pub fn to_text(&self, color: bool) -> String {
        text::render(self, color)
    }

    pub fn to_json(&self) -> String {
        json::render(self)
    }

    /// Reads a report [`Report::to_json`] wrote (the agent's live report); `words`
    /// completes each trust chain from its record (where it is located, its links).
    pub fn from_json(text: &str, words: ChainWords<'_>) -> Result<Report, ParseError> {
        json::parse(text, words)
    }

    pub fn to_sarif(&self, opts: &SarifOptions) -> String {
        sarif::render(self, opts)
    }

    pub fn to_junit(&self) -> String {
        junit::render(self)
    }
}
