//! Unit tests over real spec text: each rule with a compliant and a violating spec,
//! policy files, waivers and the report formats.

use std::collections::BTreeMap;

use berth_spec::model::Container;
use berth_spec::{SourceFile, Tree, check};

use crate::evaluate::{Date, Evaluator, Facts, HostContext};
use crate::finding::{Finding, Status};
use crate::policy::Policy;
use crate::rule::Rule;

mod chains;
mod policy_files;
mod report;
mod rules;
mod schema;

pub const DIGEST: &str = "sha256:7d9eb2d8b3ee91df4021326ad0ce10c2e6033742ba327db0946e205a043689fe";

pub fn today() -> Date {
    Date {
        year: 2026,
        month: 11,
        day: 22,
    }
}

/// The keys of a container compliant with `restricted`; tests override or remove them.
fn base() -> BTreeMap<&'static str, String> {
    [
        (
            "image",
            format!("\"registry.example.com/shop/app@{DIGEST}\""),
        ),
        ("user", "\"10001:10001\"".to_string()),
        ("cap_drop", "[\"ALL\"]".to_string()),
        ("read_only", "true".to_string()),
        ("resources", "{ memory = \"64MiB\", pids = 64 }".to_string()),
    ]
    .into_iter()
    .collect()
}

/// A container `app` from the compliant base with keys overridden (an empty value
/// removes the key), followed by `tables` (e.g. `[[container.app.mounts]]`).
pub fn spec(overrides: &[(&'static str, &str)], tables: &str) -> String {
    let mut keys = base();
    for (k, v) in overrides {
        if v.is_empty() {
            keys.remove(k);
        } else {
            keys.insert(k, v.to_string());
        }
    }
    let mut text = String::from("[container.app]\n");
    for (k, v) in keys {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text.push_str(tables);
    text
}

pub fn parse(text: &str) -> Container {
    let tree = Tree::from_sources(vec![SourceFile {
        path: "app.toml".into(),
        text: text.to_string(),
    }]);
    let checked = check(&tree, None);
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    checked.state.containers["app"].clone()
}

pub fn restricted() -> Policy {
    Policy::profile("restricted").unwrap()
}

/// All findings of the container under `restricted`, offline.
pub fn findings_with(policy: &Policy, text: &str) -> Vec<Finding> {
    let host = HostContext::default();
    Evaluator::new(policy, &host, today()).evaluate(&parse(text), &Facts::default())
}

/// One rule's findings as (status, key).
pub fn verdicts(rule: Rule, text: &str) -> Vec<(Status, String)> {
    findings_with(&restricted(), text)
        .into_iter()
        .filter(|f| f.rule == rule)
        .map(|f| (f.status, f.key))
        .collect()
}

pub fn v(key: &str) -> (Status, String) {
    (Status::Violation, key.to_string())
}
