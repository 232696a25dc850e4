//! Keyless verification against the forged fixtures of `testdata/` (a private Sigstore
//! that `testdata/make.py` writes: see `testdata/README.md`): what the real public-good
//! fixture cannot show — other kinds of subject, the older issuer extension, a chain
//! in the bundle, a Rekor v2 entry, malformed chains — and hostile bundles: huge
//! times, repeated evidence, escape sequences.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::*;
use crate::image::signature::{BundleError, BundleVerified, Trust, verify_bundle};

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1";
const TLOG: &str = "/verificationMaterial/tlogEntries/0";
const TIMESTAMPS: &str = "/verificationMaterial/timestampVerificationData/rfc3161Timestamps";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/image/signature/keyless/testdata")
}

/// The bundle and trusted root of case `name`.
fn case(name: &str) -> (Value, Value) {
    let read = |file: &str| -> Value {
        let path = dir().join(name).join(file);
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
            .unwrap()
    };
    (read("bundle.json"), read("trusted_root.json"))
}

fn trust(root: &Value, identities: Vec<IdentityMatcher>) -> Trust {
    Trust {
        keys: Vec::new(),
        root: Some(
            TrustedRoot::parse("trusted_root.json", &serde_json::to_vec(root).unwrap()).unwrap(),
        ),
        identities,
    }
}

fn verify_as(bundle: &Value, root: &Value, subject: &str) -> Result<BundleVerified, BundleError> {
    let t = trust(root, vec![IdentityMatcher::exact(ISSUER, subject)]);
    verify_bundle(&serde_json::to_vec(bundle).unwrap(), DIGEST, &t)
}

fn verify(bundle: &Value, root: &Value) -> Result<BundleVerified, BundleError> {
    verify_as(bundle, root, SUBJECT)
}

fn reason(r: Result<BundleVerified, BundleError>) -> String {
    crate::util::error_chain(&r.expect_err("must be refused"))
}

#[test]
fn forged_fixtures_of_every_supported_shape_verify() {
    for (name, subject) in [
        ("uri", SUBJECT),
        ("email", "release@acme.example"),
        ("issuer-v1", SUBJECT),
        ("chain", SUBJECT),
        ("tsa", SUBJECT),
        ("othername", "octocat"),
    ] {
        let (bundle, root) = case(name);
        let v = verify_as(&bundle, &root, subject).unwrap_or_else(|e| {
            panic!("{name}: {}", crate::util::error_chain(&e));
        });
        assert_eq!(v.log_index, Some(7), "{name}");
        assert!(!v.signed_at.is_empty(), "{name}");
        // Not for another subject.
        assert!(verify_as(&bundle, &root, "someone-else").is_err(), "{name}");
    }
}

#[test]
fn a_certificate_without_a_subject_names_no_identity() {
    let (bundle, root) = case("no-san");
    let r = reason(verify(&bundle, &root));
    assert!(r.contains("has no URI, e-mail or username"), "{r}");
}

#[test]
fn a_rekor_v2_entry_is_refused_by_name_and_a_v1_entry_without_promise_as_such() {
    let (bundle, root) = case("rekor-v2");
    let r = reason(verify(&bundle, &root));
    assert!(r.contains("a Rekor v2 log"), "{r}");
    assert!(!r.contains("0.0.1"), "{r}");
    // The same entry in a root that lists its log with an ECDSA key: still v2 (0.0.2).
    let (v1_bundle, v1_root) = case("uri");
    let mut mixed = root.clone();
    mixed["tlogs"][0]["publicKey"] = v1_root["tlogs"][0]["publicKey"].clone();
    let r = reason(verify(&bundle, &mixed));
    assert!(r.contains("a Rekor v2 log"), "{r}");
    let (bundle, root) = case("no-promise");
    let r = reason(verify(&bundle, &root));
    assert!(r.contains("no signed entry timestamp"), "{r}");
    assert!(!r.contains("v2"), "{r}");
    assert!(verify(&v1_bundle, &v1_root).is_ok());
}

#[test]
fn malformed_chains_are_refused() {
    for (name, expected) in [
        (
            "leaf-ca",
            "is a certificate authority (basicConstraints cA), not a signer",
        ),
        ("path-length", "allows 0 intermediate authorities below it"),
        ("no-key-cert-sign", "keyUsage without keyCertSign"),
        ("critical-unknown", "critical extension 1.3.6.1.4.1.99999.1"),
        ("precert-poison", "a precertificate's poison"),
        ("duplicate-extension", "the extension 2.5.29.17 twice"),
    ] {
        let (bundle, root) = case(name);
        let r = reason(verify(&bundle, &root));
        assert!(r.contains(expected), "{name}: {r}");
    }
}

/// The integrated time is unsigned until the signed entry timestamp verified: a huge
/// one must not crash (or be named as the log's).
#[test]
fn huge_integrated_times_are_refused_without_a_panic() {
    assert_eq!(
        rfc3339(u64::MAX),
        "18446744073709551615 seconds since the epoch"
    );
    assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    let (bundle, mut root) = case("uri");
    root["tlogs"][0]["publicKey"]["validFor"]["end"] = json!("2099-01-01T00:00:00Z");
    for time in [u64::MAX, 253_402_300_800] {
        let mut b = bundle.clone();
        *b.pointer_mut(&format!("{TLOG}/integratedTime")).unwrap() = json!(time.to_string());
        let r = reason(verify(&b, &root));
        assert!(r.contains("signed entry timestamp does not verify"), "{r}");
    }
}

#[test]
fn too_many_or_repeated_entries_and_timestamps_are_refused_before_any_is_checked() {
    let (bundle, root) = case("tsa");
    let ts = bundle.pointer(&format!("{TIMESTAMPS}/0")).unwrap().clone();
    let entry = bundle.pointer(TLOG).unwrap().clone();
    let mut b = bundle.clone();
    *b.pointer_mut(TIMESTAMPS).unwrap() = json!(vec![ts.clone(); 2]);
    assert!(reason(verify(&b, &root)).contains("the same timestamp twice"));
    let mut b = bundle.clone();
    *b.pointer_mut(TIMESTAMPS).unwrap() = json!(vec![ts; MAX_TIMESTAMPS + 1]);
    assert!(reason(verify(&b, &root)).contains("33 timestamps; berth reads at most 32"));
    let mut b = bundle.clone();
    *b.pointer_mut("/verificationMaterial/tlogEntries").unwrap() = json!(vec![entry.clone(); 2]);
    assert!(reason(verify(&b, &root)).contains("the same transparency-log entry twice"));
    let mut b = bundle.clone();
    *b.pointer_mut("/verificationMaterial/tlogEntries").unwrap() =
        json!(vec![entry; MAX_TLOG_ENTRIES + 1]);
    assert!(reason(verify(&b, &root)).contains("33 transparency-log entries"));
}

/// The first signature by the log's key decides; a checkpoint with many lines is
/// refused before any is checked.
#[test]
fn checkpoint_signatures_stop_at_the_log_s_and_are_capped() {
    let (bundle, root) = case("uri");
    let path = format!("{TLOG}/inclusionProof/checkpoint/envelope");
    let envelope = bundle.pointer(&path).unwrap().as_str().unwrap().to_string();
    let (head, sig_line) = envelope.split_once("\n\n").unwrap();
    let sig_line = sig_line.trim_end();
    // A later line with the log's key hint and a bad signature (a witness, say).
    let (name, sig) = sig_line.rsplit_once(' ').unwrap();
    let mut bad = B64.decode(sig).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let bad_line = format!("{name} {}", B64.encode(bad));
    let mut b = bundle.clone();
    *b.pointer_mut(&path).unwrap() = json!(format!("{head}\n\n{sig_line}\n{bad_line}\n"));
    verify(&b, &root).unwrap();
    let many = format!("{sig_line}\n").repeat(17);
    *b.pointer_mut(&path).unwrap() = json!(format!("{head}\n\n{many}"));
    assert!(reason(verify(&b, &root)).contains("more signature lines than berth reads"));
}

/// The identity and the digest are checked before the log entry: a bundle for another
/// identity or digest is refused for that, even with a broken entry.
#[test]
fn identity_and_digest_are_checked_before_the_evidence() {
    let (bundle, root) = case("uri");
    let mut b = bundle.clone();
    *b.pointer_mut(&format!("{TLOG}/inclusionPromise/signedEntryTimestamp"))
        .unwrap() = json!(B64.encode(b"not a signature"));
    assert!(reason(verify(&b, &root)).contains("signed entry timestamp"));
    assert!(reason(verify_as(&b, &root, "someone-else")).contains("which is not trusted"));
    let t = trust(&root, vec![IdentityMatcher::exact(ISSUER, SUBJECT)]);
    let other = format!("sha256:{}", "b".repeat(64));
    let r = crate::util::error_chain(
        &verify_bundle(&serde_json::to_vec(&b).unwrap(), &other, &t).unwrap_err(),
    );
    assert!(r.contains(&format!("not {other}")), "{r}");
    // Before the chain and the log entry verified, the certificate is only a claim:
    // the message says so, even for a bundle with no log entry at all.
    let claim = format!("signed by a certificate claiming {ISSUER}={SUBJECT}, not verified");
    *b.pointer_mut("/verificationMaterial/tlogEntries").unwrap() = json!([]);
    let r = crate::util::error_chain(
        &verify_bundle(&serde_json::to_vec(&b).unwrap(), &other, &t).unwrap_err(),
    );
    assert!(
        r.contains(&claim) && r.contains(&format!("not {other}")),
        "{r}"
    );
    assert!(!r.contains("verified with"), "{r}");
}

/// A timestamp is the same when its token is: the response around it is not signed,
/// so another status text does not make another timestamp.
#[test]
fn a_timestamp_re_wrapped_with_another_status_is_the_same_timestamp() {
    let (bundle, root) = case("tsa");
    let resp = B64
        .decode(
            bundle
                .pointer(&format!("{TIMESTAMPS}/0/signedTimestamp"))
                .unwrap()
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let token = tsa::token_of(&resp).unwrap();
    // TimeStampResp { PKIStatusInfo { granted, statusString { text } }, token }.
    let wrapped = |text: &str| -> Value {
        let status = der_tlv(
            0x30,
            &[
                der_tlv(0x02, &[0]),
                der_tlv(0x30, &der_tlv(0x0c, text.as_bytes())),
            ]
            .concat(),
        );
        json!({"signedTimestamp": B64.encode(der_tlv(0x30, &[status, token.clone()].concat()))})
    };
    let mut b = bundle.clone();
    *b.pointer_mut(TIMESTAMPS).unwrap() = json!([wrapped("one")]);
    verify(&b, &root).unwrap();
    *b.pointer_mut(TIMESTAMPS).unwrap() = json!([wrapped("one"), wrapped("two")]);
    let r = reason(verify(&b, &root));
    assert!(r.contains("the same timestamp twice"), "{r}");
    // The bare token and a response holding it.
    *b.pointer_mut(TIMESTAMPS).unwrap() =
        json!([{"signedTimestamp": B64.encode(&token)}, wrapped("one")]);
    let r = reason(verify(&b, &root));
    assert!(r.contains("the same timestamp twice"), "{r}");
}

/// A DER TLV (definite length).
fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match u8::try_from(body.len()) {
        Ok(n) if n < 0x80 => out.push(n),
        _ => {
            let len = body.len().to_be_bytes();
            let skip = len.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | u8::try_from(len.len() - skip).unwrap());
            out.extend_from_slice(&len[skip..]);
        }
    }
    out.extend_from_slice(body);
    out
}

/// An identity that is not trusted: the error holds the certificate's own text (for
/// JSON), its message shows it escaped and cut.
#[test]
fn an_untrusted_identity_keeps_the_certificate_s_text_and_shows_it_escaped() {
    let (bundle, root) = case("long-subject");
    let raw = format!("\u{1b}[31m{}", "x".repeat(300));
    assert!(verify_as(&bundle, &root, &raw).is_ok());
    let err = verify_as(&bundle, &root, "someone-else").unwrap_err();
    let BundleError::KeylessNotVerified(k) = &err else {
        panic!("{err:?}");
    };
    let KeylessError::Identity {
        issuer, subjects, ..
    } = &**k
    else {
        panic!("{k:?}");
    };
    assert_eq!((issuer.as_str(), subjects.as_slice()), (ISSUER, &[raw][..]));
    let r = crate::util::error_chain(&err);
    assert!(!r.contains('\u{1b}'), "{r:?}");
    assert!(r.contains("\\u{1b}[31m") && r.contains("x…"), "{r}");
    assert!(!r.contains(&"x".repeat(250)), "{r}");
}

/// Unsigned text of a bundle reaches messages escaped and cut.
#[test]
fn bundle_text_in_errors_is_escaped_and_cut() {
    let (bundle, root) = case("uri");
    let path = format!("{TLOG}/canonicalizedBody");
    let body = B64
        .decode(bundle.pointer(&path).unwrap().as_str().unwrap())
        .unwrap();
    let mut body: Value = serde_json::from_slice(&body).unwrap();
    body["kind"] = json!(format!("\u{1b}]0;owned\u{7}\u{1b}[2J{}", "x".repeat(1000)));
    let mut b = bundle.clone();
    *b.pointer_mut(&path).unwrap() = json!(B64.encode(serde_json::to_vec(&body).unwrap()));
    let r = reason(verify(&b, &root));
    assert!(!r.contains('\u{1b}') && !r.contains('\u{7}'), "{r:?}");
    assert!(
        r.contains("\\u{1b}") && r.contains('…') && r.len() < 1000,
        "{r}"
    );
    let mut b = bundle.clone();
    *b.pointer_mut(&format!("{TLOG}/logIndex")).unwrap() = json!("\u{1b}[31m");
    let r = reason(verify(&b, &root));
    assert!(!r.contains('\u{1b}'), "{r:?}");
    let mut b = bundle.clone();
    b["mediaType"] = json!("\u{1b}[31mred");
    let r = reason(verify(&b, &root));
    assert!(!r.contains('\u{1b}'), "{r:?}");
}

/// A pattern invalid alone is refused, even if it is valid once anchored.
#[test]
fn a_regex_that_escapes_its_anchors_is_refused() {
    let err = IdentityMatcher::regex(ISSUER, r"https://github\.com/acme/.*)|(.*").unwrap_err();
    assert!(
        err.to_string().contains("not a valid regular expression"),
        "{err}"
    );
    assert!(IdentityMatcher::regex(ISSUER, r"https://github\.com/acme/.*").is_ok());
}

#[test]
fn a_trusted_root_must_be_one() {
    let (_, root) = case("uri");
    let parse = |v: &Value| TrustedRoot::parse("r.json", &serde_json::to_vec(v).unwrap());
    let mut tuf = json!({"signed": {"_type": "root", "version": 1}, "signatures": []});
    let err = parse(&tuf).unwrap_err().to_string();
    assert!(
        err.contains("r.json") && err.contains("not a Sigstore trusted root"),
        "{err}"
    );
    tuf["mediaType"] = json!("application/vnd.dev.sigstore.bundle.v0.3+json");
    let err = parse(&tuf).unwrap_err().to_string();
    assert!(err.contains("not a Sigstore trusted root"), "{err}");
    let mut empty = root.clone();
    empty["tlogs"] = json!([]);
    empty["certificateAuthorities"] = json!([]);
    let err = parse(&empty).unwrap_err().to_string();
    assert!(err.contains("trusts nothing"), "{err}");
    let mut v2 = root.clone();
    v2["mediaType"] = json!("application/vnd.dev.sigstore.trustedroot+json;version=0.2");
    assert!(parse(&v2).is_ok());
}
