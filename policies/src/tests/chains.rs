//! A live audit's trust chains in the four formats: a link the node does not require
//! reads "not required", and a link that no longer holds fails the audit and is a
//! SARIF result, a JUnit failure and a JSON flag.

use berth_spec::node::PolicyMode;
use serde_json::{Value, json};

use super::*;
use crate::report::{ChainFlag, FlagLevel, SarifOptions, TrustChain, audit};

fn words(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn chain(name: &str, flags: Vec<ChainFlag>) -> TrustChain {
    TrustChain {
        container: name.into(),
        file: format!("containers/{name}/state.json"),
        record: json!({"commit": "c1", "commit_signer": {"status": "not-required"},
                       "digest": DIGEST, "image_signature": {"status": "not-required"}}),
        links: words(&[
            ("commit", "c1"),
            (
                "signer",
                "not required (no source.allowed_signers or trusted_pgp_keys)",
            ),
            ("image", DIGEST),
            (
                "image signer",
                "not required (no policy.trusted_keys or trusted_identities)",
            ),
        ]),
        now: Some(words(&[("image signature", "not verified: no key")])),
        flags,
    }
}

fn report(flags: Vec<ChainFlag>) -> crate::Report {
    let checked = check(&Tree::from_sources(vec![]), None);
    let policy = restricted();
    let host = HostContext::default();
    let mut r = audit(
        &checked,
        None,
        &Evaluator::new(&policy, &host, today()),
        PolicyMode::Enforce,
    );
    r.chains = vec![chain("web", flags)];
    r
}

fn gone() -> ChainFlag {
    ChainFlag {
        level: FlagLevel::Error,
        link: "image signature".into(),
        gone: vec!["key release.pub (sha256:0f)".into()],
        message: "key release.pub (sha256:0f) no longer vouches for image".into(),
    }
}

#[test]
fn not_required_links_are_shown_and_pass() {
    let r = report(vec![]);
    assert!(!r.failed());
    let text = r.to_text(false);
    assert!(
        text.contains(
            "  signer:              not required (no source.allowed_signers or trusted_pgp_keys)"
        ),
        "{text}"
    );
    assert!(
        text.contains("image signature now: not verified: no key"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    let c = &v["trust_chains"][0];
    assert_eq!(c["container"], "web");
    assert_eq!(c["commit_signer"]["status"], "not-required");
    assert_eq!(c["verify"]["image_signature"], "not verified: no key");
    assert_eq!(c["verify"]["flags"], json!([]));
    let sarif: Value = serde_json::from_str(&r.to_sarif(&SarifOptions::default())).unwrap();
    let run = &sarif["runs"][0];
    assert_eq!(
        run["properties"]["trustChains"][0]["image_signature"]["status"],
        "not-required"
    );
    assert_eq!(run["results"], json!([]));
    let junit = r.to_junit();
    assert!(
        junit.contains("<testsuite name=\"trust chains\" tests=\"1\" failures=\"0\""),
        "{junit}"
    );
    assert!(
        junit.contains("name=\"web.image_signer\" value=\"not required"),
        "{junit}"
    );
}

#[test]
fn a_link_that_no_longer_holds_fails_in_every_format() {
    let r = report(vec![gone()]);
    assert!(r.failed());
    let text = r.to_text(false);
    assert!(
        text.contains(
            "containers/web/state.json:1: trust-chain: error: image signature: key release.pub"
        ),
        "{text}"
    );
    assert!(
        text.contains("1 link of the trust chains no longer holds"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(
        v["trust_chains"][0]["verify"]["flags"][0]["gone"][0],
        "key release.pub (sha256:0f)"
    );
    let sarif: Value = serde_json::from_str(&r.to_sarif(&SarifOptions::default())).unwrap();
    let run = &sarif["runs"][0];
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "trust-chain");
    assert_eq!(result["level"], "error");
    let index = result["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(run["tool"]["driver"]["rules"][index]["id"], "trust-chain");
    assert_eq!(
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "containers/web/state.json"
    );
    let junit = r.to_junit();
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(
        junit.contains("<failure message=\"image signature: key release.pub"),
        "{junit}"
    );
}

/// Finding: a link that could not be checked failed the audit like one that no longer
/// holds; a link never vouched for is a warning that passes.
#[test]
fn a_link_that_cannot_be_checked_or_was_never_vouched_for_does_not_fail() {
    let unchecked = ChainFlag {
        level: FlagLevel::CannotCheck,
        link: "commit signer".into(),
        gone: vec![],
        message: "commit c1 cannot be checked again: the clone cannot be read".into(),
    };
    let never = ChainFlag {
        level: FlagLevel::Warning,
        link: "image signature".into(),
        gone: vec![],
        message: "image was never vouched for".into(),
    };
    let r = report(vec![unchecked, never]);
    assert!(!r.failed());
    assert_eq!((r.chain_flags(), r.chains_unchecked()), (0, 1));
    let text = r.to_text(false);
    assert!(
        text.contains("trust-chain: cannot check: commit signer: commit c1 cannot be checked"),
        "{text}"
    );
    assert!(
        text.contains("trust-chain: warning: image signature: image was never vouched for"),
        "{text}"
    );
    assert!(
        text.contains("1 link of the trust chains could not be checked"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(
        v["trust_chains"][0]["verify"]["flags"][0]["level"],
        "cannot-check"
    );
    let sarif: Value = serde_json::from_str(&r.to_sarif(&SarifOptions::default())).unwrap();
    let levels: Vec<&str> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, ["warning", "warning"]);
    let junit = r.to_junit();
    assert!(
        junit.contains("<testsuite name=\"trust chains\" tests=\"1\" failures=\"0\" errors=\"1\""),
        "{junit}"
    );
    assert!(
        junit.contains("<error message=\"commit signer: commit c1"),
        "{junit}"
    );
    assert!(
        junit.contains("warning: image signature: image was never vouched for"),
        "{junit}"
    );
}

/// Finding: JUnit kept U+FFFE and U+FFFF, which XML 1.0 does not allow.
#[test]
fn junit_drops_the_noncharacters_xml_forbids() {
    let mut r = report(vec![]);
    r.chains[0].container = "we\u{FFFE}b\u{FFFF}".into();
    let junit = r.to_junit();
    assert!(
        !junit.contains('\u{FFFE}') && !junit.contains('\u{FFFF}'),
        "{junit}"
    );
    assert!(junit.contains("<testcase name=\"web\""), "{junit}");
}
