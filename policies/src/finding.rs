//! Findings: what a rule says about one key of one object.
//!
//! A passing rule leaves no finding. Every finding has a status (DESIGN.md §5):
//! `violation`, `waived` (a waiver in force covers it) or `not-checked` (the rule could
//! not be evaluated here, e.g. an image signature offline). Only error-level violations
//! block (enforce mode) or fail `berth audit`.

use berth_spec::Kind;
use serde::Serialize;

use crate::policy::Severity;
use crate::rule::Rule;

/// A finding's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Violation,
    Waived,
    NotChecked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Violation => "violation",
            Status::Waived => "waived",
            Status::NotChecked => "not-checked",
        }
    }
}

/// How a finding compares with a base revision (`berth audit --since REV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Not in the base revision.
    New,
    /// Also in the base revision (matched by rule, kind, name and key, not by line).
    Existing,
    /// In the base revision only; its location is the base revision's.
    Fixed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Existing => "existing",
            Change::Fixed => "fixed",
        }
    }
}

/// One finding, located at the key it is about (or the object's header when the key
/// is absent, e.g. a missing `user`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    /// The rule's severity in the policy (`error` or `warning`).
    pub severity: Severity,
    pub status: Status,
    pub kind: Kind,
    pub name: String,
    /// The key, as a dotted path (`user`, `cap_add[0]`, `env.DB_PASSWORD`).
    pub key: String,
    /// Relative to the audited path.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// What is wrong; never contains a secret value.
    pub message: String,
    /// How to fix it.
    pub remedy: String,
    /// The reason of the waiver covering it (status `waived`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiver_reason: Option<String>,
    /// Set only with `--since`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
}

impl Finding {
    /// What matches a finding across revisions: lines move, keys do not.
    pub fn identity(&self) -> (Rule, Kind, &str, &str) {
        (self.rule, self.kind, &self.name, &self.key)
    }

    /// An error-level violation: blocks in enforce mode, fails `berth audit`.
    pub fn is_error(&self) -> bool {
        self.status == Status::Violation && self.severity == Severity::Error
    }

    /// A warning-level violation.
    pub fn is_warning(&self) -> bool {
        self.status == Status::Violation && self.severity == Severity::Warning
    }
}
