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

use serde_json::{Value, json};

use crate::finding::{Change, Finding, Status};
use crate::policy::Severity;

use super::Report;

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

fn location(uri: String, line: usize, column: usize) -> Value {
    json!({
        "physicalLocation": {
            "artifactLocation": { "uri": uri, "uriBaseId": "%SRCROOT%" },
            "region": { "startLine": line.max(1), "startColumn": column.max(1) }
        }
    })
}

fn result(f: &Finding, index: usize, opts: &SarifOptions) -> Value {
    let mut r = json!({
        "ruleId": f.rule.id(),
        "ruleIndex": index,
        "level": level(f.severity),
        "message": { "text": format!("{} (fix: {})", f.message, f.remedy) },
        "locations": [location(format!("{}{}", opts.uri_prefix, f.file), f.line, f.column)],
        "partialFingerprints": {
            "berthFinding/v1": format!("{}/{}/{}/{}", f.rule, f.kind, f.name, f.key)
        },
        "properties": { "kind": f.kind.as_str(), "name": f.name, "key": f.key }
    });
    if let Some(c) = f.change {
        r["baselineState"] = json!(match c {
            Change::New => "new",
            Change::Existing => "unchanged",
            Change::Fixed => "absent",
        });
    }
    r
}

pub(super) fn render(r: &Report, opts: &SarifOptions) -> String {
    let rules: Vec<Value> = r
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
    let results: Vec<Value> = r
        .findings
        .iter()
        .filter(|f| f.status == Status::Violation)
        .map(|f| {
            let index = r.rules.iter().position(|(x, _)| *x == f.rule).unwrap_or(0);
            result(f, index, opts)
        })
        .collect();
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
    let mut run = json!({
        "tool": { "driver": {
            "name": "berth",
            "version": opts.version,
            "rules": rules
        }},
        "invocations": [{
            "executionSuccessful": true,
            "toolExecutionNotifications": notifications
        }],
        "columnKind": "unicodeCodePoints",
        "results": results,
        "properties": { "policy": r.policy, "mode": r.mode.as_str() }
    });
    if let Some(root) = &opts.src_root {
        run["originalUriBaseIds"] = json!({ "%SRCROOT%": { "uri": root } });
    }
    let doc = json!({ "$schema": SCHEMA, "version": "2.1.0", "runs": [run] });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
