//! Reports: counting, `--since` comparison and the four formats on a small tree.

use berth_spec::node::PolicyMode;

use super::*;
use crate::finding::Change;
use crate::report::{SarifOptions, audit};

fn report_of(text: &str) -> crate::Report {
    let tree = Tree::from_sources(vec![SourceFile {
        path: "app.toml".into(),
        text: text.to_string(),
    }]);
    let checked = check(&tree, None);
    let policy = restricted();
    let host = HostContext::default();
    audit(
        &checked,
        None,
        &Evaluator::new(&policy, &host, today()),
        PolicyMode::Enforce,
    )
}

fn two(first_user: &str, extra_first: &str) -> String {
    format!(
        "{}\n[container.web]\nimage = \"registry.example.com/web@{DIGEST}\"\nuser = \"{first_user}\"\ncap_drop = [\"ALL\"]\nresources = {{ memory = \"64MiB\", pids = 64 }}\n{extra_first}\n",
        spec(&[("read_only", "")], "")
    )
}

#[test]
fn summary_counts() {
    let r = report_of(&two("0", ""));
    let s = r.summary();
    assert_eq!(s.containers, 2);
    assert_eq!(s.compliant, 1, "web runs as root");
    assert_eq!(s.violations, 1);
    assert_eq!(s.warnings, 2, "app: read_only; web: read_only");
    assert_eq!(
        s.not_checked, 3,
        "signatures, and web's group (no gid given)"
    );
    assert_eq!(s.by_rule.get(&Rule::ReadOnlyRootfs), Some(&2));
    assert!(r.failed());
}

#[test]
fn since_matches_by_key_not_line() {
    let base = report_of(&two("0", "privileged = true"));
    // lines inserted above every finding, privileged fixed, a new host network
    let now_text = format!(
        "# a comment\n# another\n{}",
        two("0", "network_mode = \"host\"")
    );
    let mut now = report_of(&now_text);
    now.compare(&base, "HEAD~1");
    let changes: Vec<(Rule, &str, Option<Change>)> = now
        .findings
        .iter()
        .filter(|f| f.name == "web")
        .map(|f| (f.rule, f.key.as_str(), f.change))
        .collect();
    assert!(changes.contains(&(Rule::RunAsNonRoot, "user", Some(Change::Existing))));
    assert!(changes.contains(&(Rule::NoHostNetwork, "network_mode", Some(Change::New))));
    let fixed: Vec<Rule> = now.fixed.iter().map(|f| f.rule).collect();
    assert_eq!(fixed, vec![Rule::NoPrivileged]);
    let failing: Vec<Rule> = now.failing().map(|f| f.rule).collect();
    assert_eq!(failing, vec![Rule::NoHostNetwork], "only new errors fail");
    let mut same = report_of(&two("0", ""));
    same.compare(&report_of(&two("0", "")), "HEAD");
    assert!(
        !same.failed(),
        "existing violations do not fail with --since"
    );
}

#[test]
fn formats_are_well_formed() {
    let r = report_of(&two("0", ""));
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["summary"]["violations"], 1);
    assert_eq!(json["findings"][0]["status"], "violation");
    assert!(json["findings"][0].get("change").is_none());
    let sarif: serde_json::Value = serde_json::from_str(&r.to_sarif(&SarifOptions {
        uri_prefix: "fleet/".into(),
        src_root: None,
        version: "0.1.0".into(),
    }))
    .unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "1 error + 2 warnings");
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "fleet/app.toml"
    );
    let junit = r.to_junit();
    assert!(
        junit.contains("tests=\"36\" failures=\"1\" errors=\"0\" skipped=\"3\""),
        "{junit}"
    );
    let text = r.to_text(false);
    assert!(text.contains("app.toml:9: run-as-non-root: error: `user = \"0\"` runs as root (uid 0) (fix: set `user = \"UID:GID\"` with a non-zero uid, e.g. \"10001:10001\")"), "{text}");
    assert!(!text.contains('\x1b'));
    assert!(r.to_text(true).contains('\x1b'));
}
