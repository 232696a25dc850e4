//! The JSON report against its JSON Schema (`report.schema.json`, draft 2020-12, with
//! an independent validator): offline, compared with a base revision, and live with
//! trust chains of every kind of link, checked again or not. And read back: rendering
//! a report read from its JSON gives the same JSON, text, SARIF and JUnit.

use berth_spec::Location;
use berth_spec::node::{PolicyMode, Waiver};
use serde_json::{Value, json};

use super::*;
use crate::report::{ChainFlag, FlagLevel, Live, LiveSource, SarifOptions, TrustChain, audit};

const SCHEMA: &str = include_str!("../../report.schema.json");

/// The schema, compiled with format assertions (dates are dates).
fn validator() -> (boon::Schemas, boon::SchemaIndex) {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.enable_format_assertions();
    let schema: Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
    compiler
        .add_resource("report.schema.json", schema)
        .expect("resource");
    let index = compiler
        .compile("report.schema.json", &mut schemas)
        .unwrap_or_else(|e| panic!("{e:#}"));
    (schemas, index)
}

fn conforms(doc: &Value) -> Result<(), String> {
    let (schemas, index) = validator();
    schemas.validate(doc, index).map_err(|e| format!("{e}"))
}

/// A tree with a violation, a waived finding, a not-checked one, a broken container
/// (an error of the tree) and a compliant one.
const TREE: &str = r#"
[container.app]
image = "registry.example.com/shop/app:1"
user = "0"
cap_drop = ["ALL"]
read_only = true
resources = { memory = "64MiB", pids = 64 }
network_mode = "host"

[container.ok]
image = "registry.example.com/shop/ok@sha256:7d9eb2d8b3ee91df4021326ad0ce10c2e6033742ba327db0946e205a043689fe"
user = "10001:10001"
cap_drop = ["ALL"]
read_only = true
resources = { memory = "64MiB", pids = 64 }

[container.broken]
image = 12
"#;

fn offline(text: &str) -> crate::Report {
    let tree = Tree::from_sources(vec![SourceFile {
        path: "app.toml".into(),
        text: text.to_string(),
    }]);
    let checked = check(&tree, None);
    let mut policy = restricted();
    let at = |line| Location {
        file: "node.toml".into(),
        line,
        column: 1,
    };
    policy.waivers.push(Waiver {
        rule: "no-host-network".into(),
        objects: vec!["app".into()],
        reason: "a lab".into(),
        expires: None,
        origin: at(3),
    });
    policy.waivers.push(Waiver {
        rule: "resource-limits".into(),
        objects: vec!["sensor-*".into()],
        reason: "measured".into(),
        expires: Some("2025-12-31".into()),
        origin: at(9),
    });
    let host = HostContext::default();
    audit(
        &checked,
        None,
        &Evaluator::new(&policy, &host, today()),
        PolicyMode::Audit,
    )
}

fn words(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a reader of the agent's report completes: here, the record's own commit.
fn chain_words(name: &str, record: &Value) -> (String, Vec<(String, String)>) {
    let commit = record["commit"].as_str().unwrap_or("none");
    (
        format!("containers/{name}/state.json"),
        words(&[("commit", commit)]),
    )
}

fn chain(name: &str, record: Value, verified: Option<Vec<ChainFlag>>) -> TrustChain {
    let (file, links) = chain_words(name, &record);
    TrustChain {
        container: name.into(),
        file,
        record,
        links,
        now: verified.as_ref().map(|_| {
            words(&[
                ("commit signer", "still signed by ops@example.com"),
                ("image signature", "cannot be checked"),
            ])
        }),
        flags: verified.unwrap_or_default(),
    }
}

/// Every kind of link the agent records.
fn records() -> Vec<(&'static str, Value)> {
    vec![
        (
            "app",
            json!({"commit": "0123456789abcdef0123456789abcdef01234567",
                   "tag_object": "89abcdef0123456789abcdef0123456789abcdef",
                   "commit_signer": {"status": "verified", "principal": "ops@example.com",
                                     "key": "SHA256:abc", "object": "tag", "kind": "ssh"},
                   "digest": DIGEST,
                   "image_signature": {"status": "verified", "vouchers": [
                       {"kind": "key", "name": "/etc/berth/release.pub", "fingerprint": "sha256:0f"},
                       {"kind": "identity", "issuer": "https://token.actions.example.com",
                        "subject": "https://git.example.com/shop/.github/workflows/release.yml@refs/heads/main",
                        "log_index": 42}]},
                   "instance": "app-0123abcd", "spec_hash": "f00d",
                   "checked_at": "2026-12-04T10:00:00Z"}),
        ),
        (
            "pgp",
            json!({"commit": "0123456789abcdef0123456789abcdef01234567",
                   "commit_signer": {"status": "verified", "principal": "Ops <ops@example.com>",
                                     "key": "ABCDEF", "object": "commit", "kind": "openpgp",
                                     "primary_key": "012345"},
                   "digest": DIGEST, "image_signature": {"status": "failed", "reason": "no signature"},
                   "instance": "pgp-0123abcd", "spec_hash": "f00d",
                   "checked_at": "2026-12-04T10:00:00Z"}),
        ),
        (
            "dir",
            json!({"commit_signer": {"status": "applied-from-directory"}, "digest": DIGEST,
                   "image_signature": {"status": "not-recorded"},
                   "instance": "dir-0123abcd", "spec_hash": "f00d"}),
        ),
        (
            "old",
            json!({"commit": "0123456789abcdef0123456789abcdef01234567",
                   "commit_signer": {"status": "not-recorded"}, "digest": DIGEST,
                   "image_signature": {"status": "not-required"}}),
        ),
        (
            "lost",
            json!({"commit_signer": {"status": "unknown", "reason": "a pass not recorded yet"},
                   "digest": DIGEST, "image_signature": {"status": "not-recorded"},
                   "instance": "lost-0123abcd", "spec_hash": "f00d"}),
        ),
        (
            "plain",
            json!({"commit": "0123456789abcdef0123456789abcdef01234567",
                   "commit_signer": {"status": "not-required"}, "digest": DIGEST,
                   "image_signature": {"status": "not-required"},
                   "checked_at": "2026-12-04T10:00:00Z"}),
        ),
    ]
}

fn flags() -> Vec<ChainFlag> {
    [
        (FlagLevel::Error, "image signature"),
        (FlagLevel::Warning, "commit signer"),
        (FlagLevel::CannotCheck, "image signature"),
    ]
    .into_iter()
    .map(|(level, link)| ChainFlag {
        level,
        link: link.into(),
        gone: vec!["key release.pub (sha256:0f)".into()],
        message: format!("{} {link}", level.as_str()),
    })
    .collect()
}

fn live(source: LiveSource, verify: bool) -> crate::Report {
    let mut r = offline(TREE);
    r.chains = records()
        .into_iter()
        .map(|(name, record)| chain(name, record, verify.then(flags)))
        .collect();
    r.live = Some(Live {
        source,
        generated_at: "2026-12-04T10:00:01Z".into(),
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
    });
    r
}

/// Every kind of report the serializer writes.
fn reports() -> Vec<(&'static str, crate::Report)> {
    let mut since = offline(TREE);
    since.compare(
        &offline(&TREE.replace(
            "network_mode = \"host\"",
            "network_mode = \"host\"\nprivileged = true",
        )),
        "HEAD~1",
    );
    assert!(!since.fixed.is_empty() && since.findings.iter().any(|f| f.change.is_some()));
    let mut no_revision = live(LiveSource::StateDirectory, false);
    if let Some(l) = no_revision.live.as_mut() {
        l.revision = None;
    }
    no_revision.chains.clear();
    vec![
        ("offline", offline(TREE)),
        ("empty", offline("")),
        ("since", since),
        ("live", live(LiveSource::Agent, false)),
        ("live verified", live(LiveSource::StateDirectory, true)),
        ("live, nothing runs", no_revision),
    ]
}

#[test]
fn every_report_conforms_to_the_schema() {
    // What the reports cover, so that the schema is tried on each.
    let r = offline(TREE);
    let statuses: Vec<Status> = r.findings.iter().map(|f| f.status).collect();
    for s in [Status::Violation, Status::Waived, Status::NotChecked] {
        assert!(statuses.contains(&s), "{s:?}");
    }
    assert!(!r.errors.is_empty() && !r.expired_waivers.is_empty());
    assert_eq!(r.containers.len(), 2, "broken is not audited");
    for (what, r) in reports() {
        let doc: Value = serde_json::from_str(&r.to_json()).expect(what);
        conforms(&doc).unwrap_or_else(|e| panic!("{what}: {e}\n{doc:#}"));
    }
}

/// The validator is not a rubber stamp: what the schema forbids is refused.
#[test]
fn the_schema_refuses_what_the_format_is_not() {
    let doc: Value = serde_json::from_str(&live(LiveSource::Agent, true).to_json()).unwrap();
    assert_eq!(conforms(&doc), Ok(()));
    type Breaks = fn(&mut Value);
    let broken: [(&str, Breaks); 8] = [
        ("an unknown key", |d| d["extra"] = json!(1)),
        ("no containers", |d| {
            d.as_object_mut().unwrap().remove("containers");
        }),
        ("an unknown rule", |d| {
            d["findings"][0]["rule"] = json!("no-such-rule")
        }),
        ("a line 0", |d| d["findings"][0]["line"] = json!(0)),
        ("an unknown source", |d| {
            d["live"]["source"] = json!("cache")
        }),
        ("a time that is none", |d| {
            d["live"]["generated_at"] = json!("yesterday")
        }),
        ("a signer without a key", |d| {
            d["trust_chains"][0]["commit_signer"]
                .as_object_mut()
                .unwrap()
                .remove("key");
        }),
        ("an unknown flag level", |d| {
            d["trust_chains"][0]["verify"]["flags"][0]["level"] = json!("fatal")
        }),
    ];
    for (what, break_it) in broken {
        let mut d = doc.clone();
        break_it(&mut d);
        assert!(conforms(&d).is_err(), "{what} passes the schema");
    }
}

/// The schema's rules are the catalogue's.
#[test]
fn the_schema_names_every_rule() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let ids: Vec<&str> = schema["$defs"]["rule"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids, Rule::ids());
}

/// What the agent writes reads back whole: every format renders the same.
#[test]
fn a_report_read_back_renders_the_same_in_every_format() {
    for (what, r) in reports() {
        let json = r.to_json();
        let back =
            crate::Report::from_json(&json, &chain_words).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(back.to_json(), json, "{what}");
        assert_eq!(back.to_text(false), r.to_text(false), "{what}");
        let opts = SarifOptions::default();
        assert_eq!(back.to_sarif(&opts), r.to_sarif(&opts), "{what}");
        assert_eq!(back.to_junit(), r.to_junit(), "{what}");
        assert_eq!(back.failed(), r.failed(), "{what}");
        assert_eq!(back.chains_unchecked(), r.chains_unchecked(), "{what}");
    }
    let text = live(LiveSource::Agent, false).to_text(false);
    assert!(
        text.starts_with("live: the agent's report after its pass at 2026-12-04T10:00:01Z (revision 0123456789abcdef0123456789abcdef01234567)\n"),
        "{text}"
    );
    assert!(crate::Report::from_json("{}", &chain_words).is_err());
    let unknown = r#"{"policy": "p", "mode": "audit", "rules": [{"id": "nope", "severity": "error"}],
        "containers": [], "findings": [], "expired_waivers": [], "errors": [], "summary": {}}"#;
    let e = crate::Report::from_json(unknown, &chain_words)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.to_string(), "the report names an unknown rule `nope`");
}
