//! Evaluating a container against a policy: the entry point both `berth audit`
//! (offline, default [`Facts`]) and the executor (with the facts it learned: the
//! resolved uid/gid, whether the image signature verified) call.
//!
//! Pure: the node's context and today's date are arguments, so the same inputs always
//! give the same findings. Waivers apply here: a waiver in force turns a violation into
//! `waived`; an expired one no longer waives and is listed by [`Evaluator::expired_waivers`].

use std::fmt;

use berth_spec::Kind;
use berth_spec::model::Container;
use berth_spec::node::{OnRunningViolation, PolicyMode, Waiver};

use crate::checks;
use crate::finding::{Finding, Status};
use crate::hostpath::DenyList;
use crate::policy::{Policy, RuleConfig};
use crate::rule::Rule;

/// What the node contributes to a decision.
#[derive(Debug, Clone)]
pub struct HostContext {
    /// berth's state and run directories (on the host-path deny list).
    pub state_dir: String,
    pub run_dir: String,
    /// Whether the node has trusted keys for image signatures.
    pub trusted_keys: bool,
    /// Whether the node verifies keyless signatures (a trusted root and identities).
    pub trusted_identities: bool,
}

impl Default for HostContext {
    fn default() -> Self {
        HostContext {
            state_dir: "/var/lib/berth".into(),
            run_dir: "/run/berth".into(),
            trusted_keys: false,
            trusted_identities: false,
        }
    }
}

impl HostContext {
    pub fn deny_list(&self) -> DenyList {
        DenyList::new(&self.state_dir, &self.run_dir)
    }
}

/// The outcome of verifying an image's signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SignatureFact {
    /// Not known here (offline, or before the pull): `not-checked`.
    #[default]
    Unknown,
    Verified,
    /// Checked and not verified, with the reason.
    Failed(String),
}

/// Facts known only at run time; the defaults are what an offline audit knows.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The uid `user` resolved to in the image (or the image's own user).
    pub resolved_uid: Option<u32>,
    /// The primary gid, likewise.
    pub resolved_gid: Option<u32>,
    pub signature: SignatureFact,
}

/// A calendar date (UTC), for waiver expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Parses `YYYY-MM-DD` (a longer TOML datetime is cut to its date).
    pub fn parse(s: &str) -> Option<Date> {
        let s = s.get(..10)?;
        let (y, rest) = s.split_once('-')?;
        let (m, d) = rest.split_once('-')?;
        let date = Date {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
            day: d.parse().ok()?,
        };
        ((1..=12).contains(&date.month) && (1..=31).contains(&date.day)).then_some(date)
    }

    /// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
    pub fn from_unix_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Whether a waiver has expired on `today` (it applies through its `expires` day).
/// A date that does not parse never waives (the node config parser reports it).
pub fn expired(w: &Waiver, today: Date) -> bool {
    match &w.expires {
        None => false,
        Some(e) => Date::parse(e).is_none_or(|d| d < today),
    }
}

fn covers(w: &Waiver, rule: &str, name: &str) -> bool {
    w.rule == rule
        && w.objects
            .iter()
            .any(|o| o == name || glob::Pattern::new(o).is_ok_and(|p| p.matches(name)))
}

/// A policy bound to a node and a day, ready to evaluate containers. What does not
/// depend on the container (enabled rules, the deny list, waivers in force) is worked
/// out once here, so evaluating a fleet costs little next to parsing it.
#[derive(Debug, Clone)]
pub struct Evaluator<'a> {
    pub policy: &'a Policy,
    pub host: &'a HostContext,
    pub today: Date,
    rules: Vec<(Rule, RuleConfig)>,
    deny: DenyList,
    waivers: Vec<&'a Waiver>,
}

impl<'a> Evaluator<'a> {
    pub fn new(policy: &'a Policy, host: &'a HostContext, today: Date) -> Self {
        Evaluator {
            policy,
            host,
            today,
            rules: policy
                .enabled()
                .into_iter()
                .map(|r| (r, policy.rule(r)))
                .collect(),
            deny: host.deny_list(),
            waivers: policy
                .waivers
                .iter()
                .filter(|w| !expired(w, today))
                .collect(),
        }
    }

    /// Every finding for one container, in rule order.
    pub fn evaluate(&self, c: &Container, facts: &Facts) -> Vec<Finding> {
        let mut out = Vec::new();
        for (rule, cfg) in &self.rules {
            let rule = *rule;
            for raw in checks::check(rule, cfg, c, facts, self.host, &self.deny) {
                let at = locate(c, &raw.key);
                let waiver = (raw.status == Status::Violation)
                    .then(|| self.waivers.iter().find(|w| covers(w, rule.id(), &c.name)))
                    .flatten();
                out.push(Finding {
                    rule,
                    severity: cfg.severity,
                    status: if waiver.is_some() {
                        Status::Waived
                    } else {
                        raw.status
                    },
                    kind: Kind::Container,
                    name: c.name.clone(),
                    key: raw.key,
                    file: at.file.clone(),
                    line: at.line,
                    column: at.column,
                    message: raw.message,
                    remedy: raw.remedy.unwrap_or_else(|| rule.info().remedy.to_string()),
                    waiver_reason: waiver.map(|w| w.reason.clone()),
                    change: None,
                });
            }
        }
        out
    }

    /// The waivers that no longer waive anything, in the order they were given.
    pub fn expired_waivers(&self) -> Vec<&'a Waiver> {
        self.policy
            .waivers
            .iter()
            .filter(|w| expired(w, self.today))
            .collect()
    }
}

/// The location of a key, else of its nearest written parent (`resources` for a
/// missing `resources.memory`), else the object's header.
fn locate<'c>(c: &'c Container, key: &str) -> &'c berth_spec::Location {
    let mut k = key;
    loop {
        if let Some(at) = c.keys.get(k) {
            return at;
        }
        match k.rfind(['.', '[']) {
            Some(i) => k = &k[..i],
            None => return &c.origin,
        }
    }
}

/// Whether a container with these findings is applied: in `enforce` mode not when any
/// error-level violation remains; in `audit` mode always (reported instead).
pub fn admits(findings: &[Finding], mode: PolicyMode) -> bool {
    mode == PolicyMode::Audit || !findings.iter().any(Finding::is_error)
}

/// What happens to a container already running that is no longer admitted (policy
/// tightened, waiver expired): DESIGN.md §5 keeps it running and reports it, unless the
/// node sets `on_running_violation = "stop"` (and the mode is `enforce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningAction {
    KeepAndReport,
    Stop,
}

pub fn running_action(
    findings: &[Finding],
    mode: PolicyMode,
    on_violation: OnRunningViolation,
) -> Option<RunningAction> {
    if admits(findings, mode) {
        return None;
    }
    Some(match on_violation {
        OnRunningViolation::Report => RunningAction::KeepAndReport,
        OnRunningViolation::Stop => RunningAction::Stop,
    })
}
