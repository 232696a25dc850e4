//! The JSON report (`--format json`): policy, mode, summary, findings (with `fixed`
//! ones after the current ones under `--since`), expired waivers, the tree's errors and,
//! live, the trust chains.

use berth_spec::Diagnostic;
use serde::Serialize;

use crate::finding::Finding;

use super::{Report, Summary};

#[derive(Serialize)]
struct Json<'a> {
    policy: &'a str,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<&'a str>,
    summary: Summary,
    findings: Vec<&'a Finding>,
    expired_waivers: Vec<ExpiredWaiver<'a>>,
    errors: &'a [Diagnostic],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trust_chains: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct ExpiredWaiver<'a> {
    rule: &'a str,
    objects: &'a [String],
    expires: Option<&'a str>,
    reason: &'a str,
}

pub(super) fn render(r: &Report) -> String {
    let doc = Json {
        policy: &r.policy,
        mode: r.mode.as_str(),
        since: r.since.as_deref(),
        summary: r.summary(),
        findings: r.findings.iter().chain(&r.fixed).collect(),
        expired_waivers: r
            .expired_waivers
            .iter()
            .map(|w| ExpiredWaiver {
                rule: &w.rule,
                objects: &w.objects,
                expires: w.expires.as_deref(),
                reason: &w.reason,
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
