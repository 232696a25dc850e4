//! The JSON report (`--format json`; its JSON Schema is `policies/report.schema.json`):
//! policy, mode, live source, summary, the rules evaluated and the containers audited
//! (so that a compliant container is told from one not audited), findings (with
//! `fixed` ones after the current ones under `--since`), expired waivers, the tree's
//! errors and, live, the trust chains.
//!
//! It is also read back ([`parse`]): the agent writes its live report in this format
//! after every pass, and `berth audit --live` renders it in any format. What reading
//! needs is in the document, so that rendering a report read back gives the same text.

use berth_spec::node::{PolicyMode, Waiver};
use berth_spec::{Diagnostic, Kind, Location};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::finding::{Change, Finding, Status};
use crate::policy::Severity;
use crate::rule::Rule;

use super::{Audited, Live, Report, Summary, TrustChain};

#[derive(Serialize)]
struct Json<'a> {
    policy: &'a str,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<&'a Live>,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a str>,
    summary: Summary,
    rules: Vec<RuleDoc>,
    containers: Vec<ContainerDoc<'a>>,
    findings: Vec<&'a Finding>,
    expired_waivers: Vec<ExpiredWaiver<'a>>,
    errors: &'a [Diagnostic],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trust_chains: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct RuleDoc {
    id: Rule,
    severity: Severity,
}

#[derive(Serialize)]
struct ContainerDoc<'a> {
    name: &'a str,
    file: &'a str,
    line: usize,
}

#[derive(Serialize)]
struct ExpiredWaiver<'a> {
    rule: &'a str,
    objects: &'a [String],
    expires: Option<&'a str>,
    reason: &'a str,
    /// Where the waiver is written (the policy file or the node configuration).
    file: &'a str,
    line: usize,
}

pub(super) fn render(r: &Report) -> String {
    let doc = Json {
        policy: &r.policy,
        mode: r.mode.as_str(),
        live: r.live.as_ref(),
        since: r.since.as_deref(),
        summary: r.summary(),
        rules: r
            .rules
            .iter()
            .map(|(id, severity)| RuleDoc {
                id: *id,
                severity: *severity,
            })
            .collect(),
        containers: r
            .containers
            .iter()
            .map(|c| ContainerDoc {
                name: &c.name,
                file: &c.file,
                line: c.line,
            })
            .collect(),
        findings: r.findings.iter().chain(&r.fixed).collect(),
        expired_waivers: r
            .expired_waivers
            .iter()
            .map(|w| ExpiredWaiver {
                rule: &w.rule,
                objects: &w.objects,
                expires: w.expires.as_deref(),
                reason: &w.reason,
                file: &w.origin.file,
                line: w.origin.line,
            })
            .collect(),
        errors: &r.errors,
        trust_chains: r.chains.iter().map(super::TrustChain::json).collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        // Serialising plain strings and numbers cannot fail; keep the output JSON anyway.
        format!("{{\"error\": \"cannot serialise the report: {e}\"}}")
    });
    s.push('\n');
    s
}

/// Why a JSON report cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the report is not berth's JSON report")]
    Json(#[from] serde_json::Error),
    #[error("the report names an unknown {what} `{value}`")]
    Unknown { what: &'static str, value: String },
}

/// What a reader completes of a trust chain from its record: the file reports locate
/// it at, and its links in words (the agent's words, which this crate does not know).
pub type ChainWords<'a> = &'a dyn Fn(&str, &Value) -> (String, Vec<(String, String)>);

#[derive(Deserialize)]
struct In {
    policy: String,
    mode: String,
    #[serde(default)]
    live: Option<Live>,
    #[serde(default)]
    since: Option<String>,
    rules: Vec<RuleIn>,
    containers: Vec<ContainerIn>,
    findings: Vec<FindingIn>,
    expired_waivers: Vec<WaiverIn>,
    errors: Vec<DiagnosticIn>,
    #[serde(default)]
    trust_chains: Vec<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct RuleIn {
    id: String,
    severity: String,
}

#[derive(Deserialize)]
struct ContainerIn {
    name: String,
    file: String,
    line: usize,
}

#[derive(Deserialize)]
struct FindingIn {
    rule: String,
    severity: String,
    status: String,
    kind: String,
    name: String,
    key: String,
    file: String,
    line: usize,
    column: usize,
    message: String,
    remedy: String,
    #[serde(default)]
    waiver_reason: Option<String>,
    #[serde(default)]
    change: Option<String>,
}

#[derive(Deserialize)]
struct WaiverIn {
    rule: String,
    objects: Vec<String>,
    expires: Option<String>,
    reason: String,
    file: String,
    line: usize,
}

#[derive(Deserialize)]
struct DiagnosticIn {
    file: String,
    line: usize,
    column: usize,
    kind: Option<String>,
    name: Option<String>,
    key: Option<String>,
    message: String,
}

#[derive(Deserialize)]
struct FlagIn {
    level: super::FlagLevel,
    link: String,
    gone: Vec<String>,
    message: String,
}

fn unknown(what: &'static str, value: &str) -> ParseError {
    ParseError::Unknown {
        what,
        value: value.to_string(),
    }
}

fn rule(id: &str) -> Result<Rule, ParseError> {
    Rule::from_id(id).ok_or_else(|| unknown("rule", id))
}

fn severity(s: &str) -> Result<Severity, ParseError> {
    [Severity::Off, Severity::Warning, Severity::Error]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| unknown("severity", s))
}

fn kind(s: &str) -> Result<Kind, ParseError> {
    Kind::from_table_name(s).ok_or_else(|| unknown("kind", s))
}

fn status(s: &str) -> Result<Status, ParseError> {
    [Status::Violation, Status::Waived, Status::NotChecked]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| unknown("status", s))
}

fn change(s: &str) -> Result<Change, ParseError> {
    [Change::New, Change::Existing, Change::Fixed]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| unknown("change", s))
}

impl FindingIn {
    fn finding(self) -> Result<Finding, ParseError> {
        Ok(Finding {
            rule: rule(&self.rule)?,
            severity: severity(&self.severity)?,
            status: status(&self.status)?,
            kind: kind(&self.kind)?,
            name: self.name,
            key: self.key,
            file: self.file,
            line: self.line,
            column: self.column,
            message: self.message,
            remedy: self.remedy,
            waiver_reason: self.waiver_reason,
            change: self.change.as_deref().map(change).transpose()?,
        })
    }
}

/// A trust chain as [`TrustChain::json`] wrote it: the record, `container` and, after
/// `--verify`, `verify` (each link now, and the flags).
fn chain(
    mut m: serde_json::Map<String, Value>,
    words: ChainWords<'_>,
) -> Result<TrustChain, ParseError> {
    let container = match m.remove("container") {
        Some(Value::String(s)) => s,
        _ => return Err(unknown("trust chain", "without a container")),
    };
    let (now, flags) = match m.remove("verify") {
        Some(Value::Object(mut v)) => {
            let flags: Vec<FlagIn> =
                serde_json::from_value(v.remove("flags").unwrap_or(Value::Array(Vec::new())))?;
            let now = v
                .into_iter()
                .map(|(k, w)| match w {
                    Value::String(w) => Ok((k.replace('_', " "), w)),
                    _ => Err(unknown("verify link", &k)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let flags = flags
                .into_iter()
                .map(|f| super::ChainFlag {
                    level: f.level,
                    link: f.link,
                    gone: f.gone,
                    message: f.message,
                })
                .collect();
            (Some(now), flags)
        }
        None => (None, Vec::new()),
        Some(_) => return Err(unknown("verify", "that is not an object")),
    };
    // A record that was not an object was kept under `record`.
    let record = match m.remove("record") {
        Some(r) if m.is_empty() => r,
        Some(r) => {
            m.insert("record".into(), r);
            Value::Object(m)
        }
        None => Value::Object(m),
    };
    let (file, links) = words(&container, &record);
    Ok(TrustChain {
        container,
        file,
        record,
        links,
        now,
        flags,
    })
}

/// Reads a report [`render`] wrote; `words` completes each trust chain.
pub fn parse(text: &str, words: ChainWords<'_>) -> Result<Report, ParseError> {
    let doc: In = serde_json::from_str(text)?;
    let mode = match doc.mode.as_str() {
        "enforce" => PolicyMode::Enforce,
        "audit" => PolicyMode::Audit,
        other => return Err(unknown("mode", other)),
    };
    let mut findings = Vec::new();
    let mut fixed = Vec::new();
    for f in doc.findings {
        let f = f.finding()?;
        if f.change == Some(Change::Fixed) {
            fixed.push(f);
        } else {
            findings.push(f);
        }
    }
    Ok(Report {
        policy: doc.policy,
        mode,
        rules: doc
            .rules
            .iter()
            .map(|r| Ok((rule(&r.id)?, severity(&r.severity)?)))
            .collect::<Result<_, ParseError>>()?,
        containers: doc
            .containers
            .into_iter()
            .map(|c| Audited {
                name: c.name,
                file: c.file,
                line: c.line,
            })
            .collect(),
        findings,
        fixed,
        expired_waivers: doc
            .expired_waivers
            .into_iter()
            .map(|w| Waiver {
                rule: w.rule,
                objects: w.objects,
                reason: w.reason,
                expires: w.expires,
                origin: Location {
                    file: w.file,
                    line: w.line,
                    column: 1,
                },
            })
            .collect(),
        errors: doc
            .errors
            .into_iter()
            .map(|d| {
                Ok(Diagnostic {
                    file: d.file,
                    line: d.line,
                    column: d.column,
                    kind: d.kind.as_deref().map(kind).transpose()?,
                    name: d.name,
                    key: d.key,
                    message: d.message,
                })
            })
            .collect::<Result<_, ParseError>>()?,
        since: doc.since,
        chains: doc
            .trust_chains
            .into_iter()
            .map(|m| chain(m, words))
            .collect::<Result<_, _>>()?,
        live: doc.live,
    })
}
