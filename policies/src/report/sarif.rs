//! The SARIF 2.1.0 report (`--format sarif`) for code-scanning tools: one `rule` per
//! evaluated rule (short description, help text with the remedy and the anchor) and
//! one `result` per violation or warning, located by file and line.
//!
//! Artifact URIs are relative to `%SRCROOT%`: the Git repository root when the audited
//! path is inside one (so code scanning annotates the right file), else the audited
//! path — the caller passes the prefix. Waived and not-checked findings are not
//! results; the tree's errors are tool execution notifications. A stable
//! `partialFingerprints` entry (rule, kind, name, key) lets viewers track a finding as
//! lines move, and under `--since` each result carries its `baselineState`.

use serde::Serialize;
use serde_json::{Value, json};

use crate::finding::{Change, Finding, Status};
use crate::policy::Severity;

use super::Report;
use super::chain::{FlagLevel, RULE, TrustChain};

/// Where artifacts are, and who made the report.
#[derive(Debug, Clone, Default)]
pub struct SarifOptions {
    /// Prepended to each finding's file (relative to the audited path) to make it
    /// relative to `%SRCROOT%`: `""`, or e.g. `"fleet/"`.
    pub uri_prefix: String,
    /// The absolute `file://` URI of `%SRCROOT%` (ending in `/`), if known.
    pub src_root: Option<String>,
    /// The tool's version.
    pub version: String,
}

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Off => "none",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: usize,
    start_column: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactLocation {
    uri: String,
    uri_base_id: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    region: Region,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    physical_location: PhysicalLocation,
}

#[derive(Serialize)]
struct Message {
    text: String,
}

#[derive(Serialize)]
struct Fingerprints {
    #[serde(rename = "berthFinding/v1")]
    berth: String,
}

#[derive(Serialize)]
struct Properties<'a> {
    kind: &'static str,
    name: &'a str,
    key: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult<'a> {
    rule_id: &'static str,
    rule_index: usize,
    level: &'static str,
    message: Message,
    locations: [Location; 1],
    partial_fingerprints: Fingerprints,
    properties: Properties<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_state: Option<&'static str>,
}

fn location(uri: String, line: usize, column: usize) -> Location {
    Location {
        physical_location: PhysicalLocation {
            artifact_location: ArtifactLocation {
                uri,
                uri_base_id: "%SRCROOT%",
            },
            region: Region {
                start_line: line.max(1),
                start_column: column.max(1),
            },
        },
    }
}

fn result<'a>(f: &'a Finding, index: usize, opts: &SarifOptions) -> SarifResult<'a> {
    SarifResult {
        rule_id: f.rule.id(),
        rule_index: index,
        level: level(f.severity),
        message: Message {
            text: format!("{} (fix: {})", f.message, f.remedy),
        },
        locations: [location(
            format!("{}{}", opts.uri_prefix, f.file),
            f.line,
            f.column,
        )],
        partial_fingerprints: Fingerprints {
            berth: format!("{}/{}/{}/{}", f.rule, f.kind, f.name, f.key),
        },
        properties: Properties {
            kind: f.kind.as_str(),
            name: &f.name,
            key: &f.key,
        },
        baseline_state: f.change.map(|c| match c {
            Change::New => "new",
            Change::Existing => "unchanged",
            Change::Fixed => "absent",
        }),
    }
}
pub(super) fn render(r: &Report, opts: &SarifOptions) -> String {
    let mut rules: Vec<Value> = r
        .rules
        .iter()
        .map(|(rule, sev)| {
            let info = rule.info();
            json!({
                "id": info.id,
                "name": info.id,
                "shortDescription": { "text": info.summary },
                "fullDescription": { "text": format!("{}. Anchor: {}.", info.summary, info.anchor) },
                "help": {
                    "text": format!("Fix: {}. Anchor: {}. See policies/README.md#{}.", info.remedy, info.anchor, info.id),
                    "markdown": format!("**Fix:** {}\n\n**Anchor:** {}", info.remedy, info.anchor)
                },
                "defaultConfiguration": { "level": level(*sev) },
                "properties": { "tags": ["security", "container"] }
            })
        })
        .collect();
    let mut results: Vec<SarifResult<'_>> = r
        .findings
        .iter()
        .filter(|f| f.status == Status::Violation)
        .map(|f| {
            let index = r.rules.iter().position(|(x, _)| *x == f.rule).unwrap_or(0);
            result(f, index, opts)
        })
        .collect();
    if r.chains.iter().any(|c| !c.flags.is_empty()) {
        results.extend(chain_results(r, rules.len(), opts));
        rules.push(chain_rule());
    }
    let notifications: Vec<Value> = r
        .errors
        .iter()
        .map(|e| {
            json!({
                "level": "error",
                "message": { "text": e.message },
                "locations": [location(format!("{}{}", opts.uri_prefix, e.file), e.line, e.column)]
            })
        })
        .collect();
    // The results are serialised straight from their structs: building a
    // `serde_json::Value` for each would cost more than evaluating the fleet.
    let run = Run {
        tool: json!({ "driver": {
            "name": "berth",
            "version": opts.version,
            "rules": rules
        }}),
        invocations: json!([{
            "executionSuccessful": true,
            "toolExecutionNotifications": notifications
        }]),
        column_kind: "unicodeCodePoints",
        original_uri_base_ids: opts
            .src_root
            .as_ref()
            .map(|root| json!({ "%SRCROOT%": { "uri": root } })),
        results,
        properties: properties(r),
    };
    let doc = Doc {
        schema: SCHEMA,
        version: "2.1.0",
        runs: [run],
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// The run's properties: the policy, the mode and, live, the report's source and the
/// trust chains.
fn properties(r: &Report) -> Value {
    let mut p = json!({ "policy": r.policy, "mode": r.mode.as_str() });
    if let Some(live) = &r.live {
        p["live"] = serde_json::to_value(live).unwrap_or(Value::Null);
    }
    if !r.chains.is_empty() {
        p["trustChains"] = Value::Array(r.chains.iter().map(TrustChain::json).collect());
    }
    p
}

/// The rule of the trust-chain flags.
fn chain_rule() -> Value {
    json!({
        "id": RULE,
        "name": RULE,
        "shortDescription": { "text": "what runs is still vouched for by the node's current keys and identities" },
        "fullDescription": { "text": "berth audit --live --verify checks each running container's commit signer and image signature again against the node's current configuration." },
        "help": {
            "text": "Fix: sign the revision or the image with a key the node trusts, or trust the key again. See README.md, \"Why does this node trust what it runs?\".",
            "markdown": "**Fix:** sign the revision or the image with a key the node trusts, or trust the key again."
        },
        "defaultConfiguration": { "level": "error" },
        "properties": { "tags": ["security", "supply-chain"] }
    })
}

/// A result per flag, located at the container's record.
fn chain_results<'a>(r: &'a Report, index: usize, opts: &SarifOptions) -> Vec<SarifResult<'a>> {
    r.chains
        .iter()
        .flat_map(|c| c.flags.iter().map(move |f| (c, f)))
        .map(|(c, f)| SarifResult {
            rule_id: RULE,
            rule_index: index,
            level: match f.level {
                FlagLevel::Error => "error",
                FlagLevel::Warning | FlagLevel::CannotCheck => "warning",
            },
            message: Message {
                text: match f.level {
                    FlagLevel::CannotCheck => {
                        format!("{} cannot be checked: {}", f.link, f.message)
                    }
                    _ => format!("{}: {}", f.link, f.message),
                },
            },
            locations: [location(format!("{}{}", opts.uri_prefix, c.file), 1, 1)],
            partial_fingerprints: Fingerprints {
                berth: format!("{RULE}/container/{}/{}", c.container, f.link),
            },
            properties: Properties {
                kind: "container",
                name: &c.container,
                key: &f.link,
            },
            baseline_state: None,
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Run<'a> {
    tool: Value,
    invocations: Value,
    column_kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_uri_base_ids: Option<Value>,
    results: Vec<SarifResult<'a>>,
    properties: Value,
}

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: [Run<'a>; 1],
}
