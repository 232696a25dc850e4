//! The live report: made from a state directory, written crash-safely (a reader sees
//! the old report or the new one, never a part), read back whole.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_policy::evaluate::HostContext;
use berth_policy::policy::Policy;
use berth_policy::report::LiveSource;
use berth_spec::node::PolicyMode;

use super::*;
use crate::runtime::record::{sample, write_record};

fn restricted() -> NodePolicy {
    NodePolicy {
        policy: Policy::profile("restricted").expect("profile"),
        mode: PolicyMode::Audit,
        host: HostContext::default(),
    }
}

/// A state directory running `names` (busybox records: each breaks a rule or two).
fn state_with(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for n in names {
        write_record(dir.path(), &sample(n)).expect("record");
    }
    dir
}

fn report_of(state_dir: &Path) -> Report {
    let policy = restricted();
    let scope = Scope {
        policy: &policy,
        node: None,
        tree: None,
    };
    from_state(state_dir, &scope, chains(state_dir), LiveSource::Agent).expect("report")
}

#[test]
fn the_report_judges_each_running_container_with_its_chain() {
    let state = state_with(&["web", "db"]);
    let r = report_of(state.path());
    let names: Vec<&str> = r.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["db", "web"]);
    assert_eq!(r.containers[0].file, "containers/db/state.json");
    assert!(!r.findings.is_empty(), "the sample pins no digest");
    let chained: Vec<&str> = r.chains.iter().map(|c| c.container.as_str()).collect();
    assert_eq!(chained, ["db", "web"]);
    // Nothing applied from a source: each was applied from a directory.
    assert!(
        r.chains[0]
            .links
            .iter()
            .any(|(k, w)| k == "commit" && w.contains(super::super::FROM_DIRECTORY)),
        "{:?}",
        r.chains[0].links
    );
    let live = r.live.as_ref().expect("live");
    assert_eq!(live.source, LiveSource::Agent);
    assert_eq!(live.revision, None);
    assert!(crate::util::rfc3339::parse(&live.generated_at).is_some());
}

#[test]
fn the_report_is_written_private_and_read_back_whole() {
    let state = state_with(&["web"]);
    assert!(read(state.path()).expect("read").is_none(), "none yet");
    let r = report_of(state.path());
    store(state.path(), &r).expect("store");
    let file = path(state.path());
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "as every state record");
    let bytes = read(state.path()).expect("read").expect("written");
    assert_eq!(bytes, r.to_json().as_bytes());
    let back = parse(std::str::from_utf8(&bytes).expect("utf-8"), "the file").expect("parse");
    assert_eq!(back.to_json(), r.to_json());
    assert_eq!(back.chains, r.chains, "the links in words again");
    // Only the report is left in the directory: no temp file.
    let left: Vec<String> = std::fs::read_dir(file.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["audit.json"]);
}

/// A reader never sees a report half-written while the agent writes another.
#[test]
fn a_reader_sees_the_old_report_or_the_new_one_never_a_part() {
    let small = state_with(&["web"]);
    let big = state_with(&["a", "b", "c", "d", "e", "f", "g", "h"]);
    let (a, b) = (report_of(small.path()), report_of(big.path()));
    let reports = [a.to_json(), b.to_json()];
    assert!(reports[1].len() > 2 * reports[0].len());
    let state = tempfile::tempdir().expect("tempdir");
    store(state.path(), &a).expect("first");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, dir) = (stop.clone(), state.path().to_path_buf());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                store(&dir, if n.is_multiple_of(2) { &b } else { &a }).expect("store");
                n += 1;
            }
            n
        })
    };
    let mut seen = [false, false];
    for _ in 0..300 {
        let bytes = read(state.path()).expect("read").expect("there");
        let text = String::from_utf8(bytes).expect("utf-8");
        let which = reports.iter().position(|r| *r == text);
        let Some(which) = which else {
            panic!("a torn report ({} bytes)", text.len());
        };
        seen[which] = true;
        parse(&text, "the file").expect("parses");
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    assert!(writes > 1, "the writer wrote ({writes})");
    assert!(seen.iter().any(|s| *s));
}

#[test]
fn a_report_that_is_not_a_regular_file_or_too_big_is_refused() {
    let state = state_with(&[]);
    let file = path(state.path());
    std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
    let elsewhere = state.path().join("elsewhere.json");
    std::fs::write(&elsewhere, "{}").expect("write");
    std::os::unix::fs::symlink(&elsewhere, &file).expect("symlink");
    let e = read(state.path()).expect_err("a link is not followed");
    assert!(
        error_chain(&e).contains("audit.json"),
        "{}",
        error_chain(&e)
    );
    std::fs::remove_file(&file).expect("rm");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(MAX_BYTES + 1))
        .expect("sparse");
    let e = read(state.path()).expect_err("too big");
    assert!(
        error_chain(&e).contains("larger than"),
        "{}",
        error_chain(&e)
    );
    let e = parse("{\"policy\": 1}", "the agent sent").expect_err("not a report");
    assert!(
        error_chain(&e).starts_with("the audit report the agent sent cannot be read"),
        "{}",
        error_chain(&e)
    );
}

#[test]
fn an_instance_no_record_accounts_for_is_an_error_of_the_report() {
    let state = state_with(&["web"]);
    std::fs::create_dir_all(state.path().join("instances/ghost-0123abcd")).expect("mkdir");
    let r = report_of(state.path());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].message.contains("ghost-0123abcd"));
    assert!(r.failed());
}

/// Finding: a record's spec has no parsed image reference (it is not stored), so the
/// live audit passed an image that is not pinned, or from a registry not allowed.
#[test]
fn the_image_of_what_runs_is_judged_as_the_trees() {
    let state = state_with(&["web"]);
    let r = report_of(state.path());
    let pinned: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.rule == berth_policy::rule::Rule::ImageDigestPinned)
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(
        pinned,
        [
            "image `registry.example.com/shop/web:1.0` is not pinned by digest: its tag can move to other content"
        ]
    );
}

/// Every field the agent records in a chain, and `--verify` adds, is one the report's
/// schema (`policies/report.schema.json`, which closes its objects) knows.
#[test]
fn what_a_chain_records_is_in_the_reports_schema() {
    use crate::image::signature::Voucher;
    use crate::source::applied::Signer;
    let schema: Value =
        serde_json::from_str(include_str!("../../../policies/report.schema.json")).expect("schema");
    let defs = &schema["$defs"];
    let known = |def: &Value, v: &Value, what: &str| {
        for key in v.as_object().expect("an object").keys() {
            assert!(
                def["properties"].get(key).is_some(),
                "{what}: `{key}` is not in the schema"
            );
        }
    };
    let chain = Chain {
        commit: Some("0123".into()),
        tag_object: Some("4567".into()),
        commit_signer: super::super::CommitLink::Verified(Signer {
            principal: "Ops <ops@example.com>".into(),
            key: "ABCDEF".into(),
            object: "tag".into(),
            kind: "openpgp".into(),
            primary_key: Some("012345".into()),
        }),
        digest: "sha256:00".into(),
        image_signature: super::super::ImageLink::Verified {
            vouchers: vec![
                Voucher::Key {
                    name: "release.pub".into(),
                    fingerprint: "sha256:0f".into(),
                },
                Voucher::Identity {
                    issuer: "https://issuer.example.com".into(),
                    subject: "ops@example.com".into(),
                    log_index: Some(42),
                },
            ],
        },
        instance: Some("web-0123abcd".into()),
        spec_hash: Some("0123abcd".into()),
        checked_at: Some("2026-12-04T10:00:00Z".into()),
    };
    let flag = ChainFlag {
        level: berth_policy::report::FlagLevel::Error,
        link: super::super::verify::IMAGE_LINK.into(),
        gone: vec!["release.pub".into()],
        message: "gone".into(),
    };
    let now = vec![
        (super::super::verify::COMMIT_LINK, "still".to_string()),
        (super::super::verify::IMAGE_LINK, "still".to_string()),
    ];
    let doc = shown("web".into(), &chain, Some(now), vec![flag]).json();
    known(&defs["chain"], &doc, "a chain");
    known(&defs["verified_signer"], &doc["commit_signer"], "a signer");
    known(
        &defs["chain"]["properties"]["verify"],
        &doc["verify"],
        "verify",
    );
    known(&defs["flag"], &doc["verify"]["flags"][0], "a flag");
    let branches = defs["voucher"]["oneOf"].as_array().expect("branches");
    for (v, branch) in doc["image_signature"]["vouchers"]
        .as_array()
        .expect("vouchers")
        .iter()
        .zip(branches)
    {
        known(branch, v, "a voucher");
    }
}
