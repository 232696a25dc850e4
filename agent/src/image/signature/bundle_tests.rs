//! Sigstore bundle (v0.3) tests against the shared fixtures of
//! `$BERTH_SHARED_FIXTURES/cosign-bundle/` (a real `cosign sign --key` bundle, a keyless
//! one, a key-signed blob), read in place, and round trips through [`sign_bundle`].
//!
//! Which bytes of a keyed bundle are covered by its signature:
//! - signed: `dsseEnvelope.payload` (its decoded bytes) and `dsseEnvelope.payloadType`,
//!   both inside the DSSE pre-authentication encoding; the signature bytes
//!   (`signatures[].sig`) are what is checked;
//! - checked, not signed: `mediaType` (must be v0.3), the absence of a certificate;
//! - neither: `verificationMaterial.publicKey.hint` (picks the key to try first),
//!   `signatures[].keyid`, the base64 alphabet and padding, unknown fields.

use std::path::PathBuf;

use base64::Engine;
use serde_json::{Value, json};

use super::bundle::{key_hint, sign_payload, sign_statement};
use super::*;

/// [`super::verify_bundle`] with keys only.
fn verify_bundle(
    bundle: &[u8],
    digest: &str,
    keys: &[TrustedKey],
) -> Result<BundleVerified, BundleError> {
    super::verify_bundle(bundle, digest, &Trust::keys(keys.to_vec()))
}

/// The key that verified `v`.
fn key_of(v: &BundleVerified) -> (&str, &str) {
    match &v.voucher {
        Voucher::Key { name, fingerprint } => (name, fingerprint),
        other => panic!("not a key: {other}"),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64_URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn fixture_dir() -> PathBuf {
    std::env::var_os("BERTH_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("cosign-bundle")
}

/// The bytes of fixture `name`, or `None` after reporting it missing (a failure under
/// `CI=true`).
pub(super) fn read(name: &str) -> Option<Vec<u8>> {
    let path = fixture_dir().join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            crate::testing::missing(&format!("shared fixture {}: {e}", path.display()));
            None
        }
    }
}

/// `keyed-image.*`: the bundle, its key and the digest it signs.
struct Fixture {
    bundle: Vec<u8>,
    key: TrustedKey,
    digest: String,
}

impl Fixture {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bundle).unwrap()
    }

    fn verify(&self, bundle: &Value) -> Result<BundleVerified, BundleError> {
        verify_bundle(
            &serde_json::to_vec(bundle).unwrap(),
            &self.digest,
            std::slice::from_ref(&self.key),
        )
    }
}

fn fixture() -> Option<Fixture> {
    let bundle = read("keyed-image.bundle.json")?;
    let pem = String::from_utf8(read("keyed-image.cosign.pub")?).unwrap();
    let digest = String::from_utf8(read("keyed-image.digest")?).unwrap();
    Some(Fixture {
        bundle,
        key: TrustedKey::from_pem("keyed-image.cosign.pub", &pem).unwrap(),
        digest: digest.trim().to_string(),
    })
}

fn other_digest() -> String {
    format!("sha256:{}", "0".repeat(64))
}

fn generated(name: &str) -> (SigningKey, TrustedKey) {
    let key = SigningKey::generate(name).unwrap();
    let public = key.public_key().unwrap();
    (key, public)
}

fn decoded(bundle: &Value, pointer: &str) -> Vec<u8> {
    B64.decode(bundle.pointer(pointer).unwrap().as_str().unwrap())
        .unwrap()
}

/// Sets (or adds) the field at `pointer`; its parent must exist.
fn set(bundle: &mut Value, pointer: &str, value: Value) {
    let (parent, field) = pointer.rsplit_once('/').unwrap();
    match bundle.pointer_mut(parent).unwrap() {
        Value::Array(items) => items[field.parse::<usize>().unwrap()] = value,
        parent => {
            parent
                .as_object_mut()
                .unwrap()
                .insert(field.to_string(), value);
        }
    }
}

#[test]
fn fixture_verifies_with_its_key_for_its_digest() {
    let Some(f) = fixture() else { return };
    let v = verify_bundle(&f.bundle, &f.digest, std::slice::from_ref(&f.key)).unwrap();
    assert_eq!(key_of(&v), ("keyed-image.cosign.pub", f.key.fingerprint()));
    // No log entry and no timestamp: nothing left unchecked.
    assert!(v.unchecked.is_empty(), "{v:?}");
    // The hint cosign wrote is the one berth computes for the key.
    let hint = f.json()["verificationMaterial"]["publicKey"]["hint"].clone();
    assert_eq!(json!(key_hint(&f.key).unwrap()), hint);
}

#[test]
fn fixture_fails_for_another_digest() {
    let Some(f) = fixture() else { return };
    let err = verify_bundle(&f.bundle, &other_digest(), std::slice::from_ref(&f.key)).unwrap_err();
    assert!(
        matches!(&err, BundleError::SubjectMismatch { expected, found, .. }
            if *expected == other_digest() && *found == vec![f.digest.clone()]),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&f.digest) && msg.contains(&other_digest()),
        "{msg}"
    );
}

#[test]
fn fixture_fails_with_another_key_and_names_every_key_tried() {
    let Some(f) = fixture() else { return };
    let (_, a) = generated("a.pub");
    let (_, b) = generated("b.pub");
    let err = verify_bundle(&f.bundle, &f.digest, &[a.clone(), b.clone()]).unwrap_err();
    let BundleError::NotVerified {
        keys, rejections, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(keys, &["a.pub", "b.pub"]);
    let tried: Vec<_> = rejections.iter().map(|r| r.key.as_deref()).collect();
    assert_eq!(tried, [Some("a.pub"), Some("b.pub")]);
    assert!(
        rejections
            .iter()
            .all(|r| matches!(r.error, BundleError::BadSignature { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&f.digest) && msg.contains("signature 0 with key b.pub"),
        "{msg}"
    );
    // Among other keys, in any order, the right one verifies.
    for keys in [
        vec![a.clone(), f.key.clone(), b.clone()],
        vec![f.key.clone(), a.clone()],
        vec![b.clone(), a.clone(), f.key.clone()],
    ] {
        let v = verify_bundle(&f.bundle, &f.digest, &keys).unwrap();
        assert_eq!(key_of(&v).0, "keyed-image.cosign.pub");
    }
}

/// Signed: every bit flipped in the decoded payload fails, whatever the flip turns
/// the payload into (the signature is checked before the payload is read, so each
/// fails there).
#[test]
fn fixture_fails_when_any_payload_byte_flips() {
    let Some(f) = fixture() else { return };
    let original = f.json();
    let payload = decoded(&original, "/dsseEnvelope/payload");
    assert!(payload.len() > 200, "{}", payload.len());
    for i in 0..payload.len() {
        let mut flipped = payload.clone();
        flipped[i] ^= 1 << (i % 8);
        let mut bundle = original.clone();
        set(
            &mut bundle,
            "/dsseEnvelope/payload",
            json!(B64.encode(&flipped)),
        );
        let err = f.verify(&bundle).unwrap_err();
        assert!(
            matches!(err, BundleError::NotVerified { .. }),
            "byte {i}: {err}"
        );
    }
}

/// Checked: every bit flipped in the decoded signature fails (as DER that no longer
/// parses, or as a signature that does not verify).
#[test]
fn fixture_fails_when_any_signature_byte_flips() {
    let Some(f) = fixture() else { return };
    let original = f.json();
    let der = decoded(&original, "/dsseEnvelope/signatures/0/sig");
    assert!(der.len() > 64, "{}", der.len());
    for i in 0..der.len() {
        let mut flipped = der.clone();
        flipped[i] ^= 1 << (i % 8);
        let mut bundle = original.clone();
        set(
            &mut bundle,
            "/dsseEnvelope/signatures/0/sig",
            json!(B64.encode(&flipped)),
        );
        let err = f.verify(&bundle).unwrap_err();
        let BundleError::NotVerified { rejections, .. } = &err else {
            panic!("byte {i}: {err}");
        };
        assert!(
            rejections.iter().all(|r| matches!(
                r.error,
                BundleError::BadSignature { .. } | BundleError::SignatureDer(_)
            )),
            "byte {i}: {err}"
        );
    }
}

/// Signed (it is in the pre-authentication encoding) and checked first.
#[test]
fn fixture_fails_with_another_payload_type() {
    let Some(f) = fixture() else { return };
    let mut bundle = f.json();
    let found = "application/vnd.dev.cosign.simplesigning.v1+json";
    set(&mut bundle, "/dsseEnvelope/payloadType", json!(found));
    let err = f.verify(&bundle).unwrap_err();
    assert!(
        matches!(&err, BundleError::PayloadType { found: f } if f == found),
        "{err}"
    );
    assert!(err.to_string().contains("application/vnd.in-toto+json"));
}

/// Not signed: the key hint, a signature's `keyid`, the base64 alphabet and padding,
/// unknown fields. Changing them changes nothing.
#[test]
fn unsigned_fields_may_change_without_effect() {
    let Some(f) = fixture() else { return };
    let original = f.json();
    let (_, other) = generated("other.pub");
    let other_hint = key_hint(&other).unwrap();
    // (The fixture's payload is the same in every base64 alphabet: no `+`, `/` or `=`.)
    let sig = decoded(&original, "/dsseEnvelope/signatures/0/sig");
    type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let edits: Vec<(&str, Edit<'_>)> = vec![
        (
            "hint of another key",
            Box::new(|b| set(b, "/verificationMaterial/publicKey/hint", json!(other_hint))),
        ),
        (
            "hint that is not base64",
            Box::new(|b| set(b, "/verificationMaterial/publicKey/hint", json!("?!"))),
        ),
        (
            "no hint",
            Box::new(|b| set(b, "/verificationMaterial/publicKey", json!({}))),
        ),
        (
            "a keyid",
            Box::new(|b| set(b, "/dsseEnvelope/signatures/0/keyid", json!("anything"))),
        ),
        (
            "an empty keyid",
            Box::new(|b| set(b, "/dsseEnvelope/signatures/0/keyid", json!(""))),
        ),
        (
            "URL-safe unpadded signature",
            Box::new(|b| {
                set(
                    b,
                    "/dsseEnvelope/signatures/0/sig",
                    json!(B64_URL.encode(&sig)),
                )
            }),
        ),
        (
            "an unknown field",
            Box::new(|b| set(b, "/verificationMaterial/somethingNew", json!([1, 2]))),
        ),
        (
            "the other spelling of the v0.3 media type",
            Box::new(|b| {
                set(
                    b,
                    "/mediaType",
                    json!("application/vnd.dev.sigstore.bundle+json;version=0.3"),
                )
            }),
        ),
    ];
    for (what, edit) in edits {
        let mut bundle = original.clone();
        edit(&mut bundle);
        assert_ne!(bundle, original, "{what}");
        let v = f.verify(&bundle).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(key_of(&v).0, "keyed-image.cosign.pub", "{what}");
    }
    // The hint of another key puts that key first; the fixture's key still verifies.
    let mut bundle = original.clone();
    set(
        &mut bundle,
        "/verificationMaterial/publicKey/hint",
        json!(other_hint),
    );
    let v = verify_bundle(
        &serde_json::to_vec(&bundle).unwrap(),
        &f.digest,
        &[f.key.clone(), other],
    )
    .unwrap();
    assert_eq!(key_of(&v).0, "keyed-image.cosign.pub");
}

/// A log entry or a timestamp is carried but not checked: the outcome says so.
#[test]
fn log_entries_and_timestamps_are_reported_unchecked() {
    let Some(f) = fixture() else { return };
    let mut bundle = f.json();
    set(
        &mut bundle,
        "/verificationMaterial/tlogEntries",
        json!([{}]),
    );
    assert_eq!(
        f.verify(&bundle).unwrap().unchecked,
        ["transparency-log entry"]
    );
    set(
        &mut bundle,
        "/verificationMaterial/timestampVerificationData",
        json!({"rfc3161Timestamps": [{"signedTimestamp": "AAAA"}]}),
    );
    assert_eq!(
        f.verify(&bundle).unwrap().unchecked,
        ["transparency-log entry", "timestamp"]
    );
}

#[test]
fn other_media_types_and_versions_are_refused_naming_them() {
    let Some(f) = fixture() else { return };
    for found in [
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle.v0.2+json",
        "application/vnd.dev.sigstore.bundle.v0.4+json",
        "application/json",
    ] {
        let mut bundle = f.json();
        set(&mut bundle, "/mediaType", json!(found));
        let err = f.verify(&bundle).unwrap_err();
        assert!(
            matches!(&err, BundleError::MediaType { found: f } if f == found),
            "{found}: {err}"
        );
        assert!(err.to_string().contains(found), "{err}");
    }
    let mut bundle = f.json();
    bundle.as_object_mut().unwrap().remove("mediaType");
    let err = f.verify(&bundle).unwrap_err();
    assert!(matches!(err, BundleError::NoMediaType), "{err}");
}

#[test]
fn a_message_signature_bundle_signs_a_blob_not_an_image() {
    let Some(bundle) = read("keyed-blob.bundle.json") else {
        return;
    };
    let Some(pem) = read("keyed-blob.key.pub") else {
        return;
    };
    let key = TrustedKey::from_pem("keyed-blob.key.pub", &String::from_utf8(pem).unwrap()).unwrap();
    let err = verify_bundle(&bundle, &other_digest(), &[key]).unwrap_err();
    assert!(matches!(err, BundleError::MessageSignature), "{err}");
    assert!(err.to_string().contains("blob, not an image"), "{err}");
}

#[test]
fn a_keyless_bundle_is_refused_without_a_trusted_root() {
    let Some(bundle) = read("keyless-image.bundle.json") else {
        return;
    };
    let Some(f) = fixture() else { return };
    let digest = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
    let err = verify_bundle(&bundle, digest, std::slice::from_ref(&f.key)).unwrap_err();
    assert!(matches!(err, BundleError::Keyless), "{err}");
    assert!(
        err.to_string()
            .contains("no trusted root is configured (`policy.trusted_root`, or --trusted-root)"),
        "{err}"
    );
    // A certificate chain is keyless too, even beside a key hint.
    let mut chained = f.json();
    set(
        &mut chained,
        "/verificationMaterial/x509CertificateChain",
        json!({"certificates": []}),
    );
    assert!(matches!(f.verify(&chained), Err(BundleError::Keyless)));
}

#[test]
fn an_attestation_is_not_a_signature() {
    let digest = other_digest();
    let (key, public) = generated("release.key");
    let predicate = "https://slsa.dev/provenance/v1";
    let bundle = sign_statement("", &digest, predicate, &key).unwrap();
    let err = verify_bundle(&bundle, &digest, &[public]).unwrap_err();
    assert!(
        matches!(&err, BundleError::Attestation { predicate: p, .. } if p == predicate),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "an attestation (predicate `{predicate}`), not a signature"
        )),
        "{msg}"
    );
}

#[test]
fn a_subject_mismatch_names_the_digests_found() {
    let (key, public) = generated("release.key");
    let signed = format!("sha256:{}", "a".repeat(64));
    let bundle = sign_bundle("registry.example/shop/web", &signed, &key).unwrap();
    let err = verify_bundle(&bundle, &other_digest(), &[public]).unwrap_err();
    assert!(
        matches!(&err, BundleError::SubjectMismatch { found, .. } if *found == vec![signed.clone()]),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("signs {signed}, not {}", other_digest())),
        "{err}"
    );
}

/// Statements made by hand and signed: what the payload may and may not be.
#[test]
fn statements_v1_and_v01_without_a_predicate_and_with_several_subjects() {
    let digest = other_digest();
    let hex = "0".repeat(64);
    let (key, public) = generated("release.key");
    let check = |statement: Value| {
        let bundle = sign_payload(&serde_json::to_vec(&statement).unwrap(), &key).unwrap();
        verify_bundle(&bundle, &digest, std::slice::from_ref(&public))
    };
    // v0.1, no `predicate`, the matching subject second: verifies.
    check(json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [
            {"name": "a", "digest": {"sha512": "ff"}},
            {"name": "b", "digest": {"sha256": "11".repeat(32)}},
            {"name": "c", "digest": {"sha256": hex}},
        ],
        "predicateType": COSIGN_SIGN_PREDICATE,
    }))
    .unwrap();
    // Another statement type.
    let err = check(json!({
        "_type": "https://in-toto.io/Statement/v2",
        "subject": [{"digest": {"sha256": hex}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
    }))
    .unwrap_err();
    assert!(
        matches!(&err, BundleError::StatementType { found, .. } if found.ends_with("/v2")),
        "{err}"
    );
    // No sha256 subject at all.
    let err = check(json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [],
        "predicateType": COSIGN_SIGN_PREDICATE,
    }))
    .unwrap_err();
    assert!(err.to_string().contains("no sha256 subject"), "{err}");
    // Not a statement: a legacy simple-signing payload, and no JSON at all.
    let err = check(json!({"critical": {"type": "cosign container image signature"}})).unwrap_err();
    assert!(matches!(err, BundleError::Statement { .. }), "{err}");
    let bundle = sign_payload(b"hello", &key).unwrap();
    let err = verify_bundle(&bundle, &digest, std::slice::from_ref(&public)).unwrap_err();
    assert!(matches!(err, BundleError::Statement { .. }), "{err}");
}

#[test]
fn malformed_bundles_are_refused_with_their_reason() {
    let Some(f) = fixture() else { return };
    let keys = [f.key.clone()];
    let err = verify_bundle(b"{not json", &f.digest, &keys).unwrap_err();
    assert!(matches!(err, BundleError::Json(_)), "{err}");
    let huge = vec![b' '; MAX_BUNDLE_SIZE + 1];
    let err = verify_bundle(&huge, &f.digest, &keys).unwrap_err();
    assert!(matches!(err, BundleError::TooLarge { .. }), "{err}");
    let err = verify_bundle(&f.bundle, "sha256:F00", &keys).unwrap_err();
    assert!(matches!(err, BundleError::InvalidDigest { .. }), "{err}");
    let err = verify_bundle(&f.bundle, &f.digest, &[]).unwrap_err();
    assert!(matches!(err, BundleError::NoTrustedKeys { .. }), "{err}");

    let mut bundle = f.json();
    bundle.as_object_mut().unwrap().remove("dsseEnvelope");
    assert!(matches!(f.verify(&bundle), Err(BundleError::NoEnvelope)));

    let mut bundle = f.json();
    set(&mut bundle, "/dsseEnvelope/payload", json!("not base64!"));
    let err = f.verify(&bundle).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Base64 {
                what: "payload",
                ..
            }
        ),
        "{err}"
    );

    let mut bundle = f.json();
    set(&mut bundle, "/dsseEnvelope/signatures", json!([]));
    assert!(matches!(f.verify(&bundle), Err(BundleError::NoSignatures)));

    let mut bundle = f.json();
    set(&mut bundle, "/dsseEnvelope/signatures/0/sig", json!("%%%"));
    let err = f.verify(&bundle).unwrap_err();
    assert!(
        err.to_string()
            .contains("signature 0: the bundle's signature is not valid base64"),
        "{err}"
    );
}

/// Exactly one signature: a second one, even a good one beside a bad one, is refused
/// before any is tried (thousands of them would each be tried with every key).
#[test]
fn an_envelope_carries_exactly_one_signature() {
    let Some(f) = fixture() else { return };
    let mut bundle = f.json();
    let good = bundle["dsseEnvelope"]["signatures"][0].clone();
    set(
        &mut bundle,
        "/dsseEnvelope/signatures",
        json!([{"sig": B64.encode(b"\x30\x02\x01\x01")}, good]),
    );
    let err = f.verify(&bundle).unwrap_err();
    assert!(matches!(err, BundleError::SignatureCount(2)), "{err}");
    assert!(err.to_string().contains("exactly one"), "{err}");
}

/// Go's ECDSA does not normalise `s`: a high-`s` signature verifies too.
#[test]
fn fixture_verifies_with_high_s() {
    let Some(f) = fixture() else { return };
    let mut bundle = f.json();
    let der = decoded(&bundle, "/dsseEnvelope/signatures/0/sig");
    let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
    let (r, s) = sig.split_scalars();
    let flipped = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
    assert_ne!(flipped, sig);
    set(
        &mut bundle,
        "/dsseEnvelope/signatures/0/sig",
        json!(B64.encode(flipped.to_der().as_bytes())),
    );
    f.verify(&bundle).unwrap();
}

/// The keys of every object in `v`, by path, to compare shapes.
fn shape(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(format!("{path}/{k}"));
                shape(v, &format!("{path}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                shape(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn statement_of(bundle: &Value) -> Value {
    serde_json::from_slice(&decoded(bundle, "/dsseEnvelope/payload")).unwrap()
}

#[test]
fn sign_bundle_writes_what_cosign_writes_and_it_verifies() {
    let Some(f) = fixture() else { return };
    let (key, public) = generated("release.key");
    let bytes = sign_bundle("", &f.digest, &key).unwrap();
    let v = verify_bundle(&bytes, &f.digest, std::slice::from_ref(&public)).unwrap();
    assert_eq!(key_of(&v).0, "release.key");
    assert!(v.unchecked.is_empty());
    // Only for its digest, only with its key.
    assert!(verify_bundle(&bytes, &other_digest(), std::slice::from_ref(&public)).is_err());
    assert!(verify_bundle(&bytes, &f.digest, std::slice::from_ref(&f.key)).is_err());

    // The same fields, in the same places, as the bundle cosign wrote; the same
    // statement; the hint of the signing key.
    let ours: Value = serde_json::from_slice(&bytes).unwrap();
    let theirs = f.json();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    shape(&ours, "", &mut a);
    shape(&theirs, "", &mut b);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(ours["mediaType"], BUNDLE_MEDIA_TYPE);
    assert_eq!(
        ours["verificationMaterial"]["publicKey"]["hint"],
        json!(key_hint(&public).unwrap())
    );
    assert_eq!(statement_of(&ours), statement_of(&theirs));
    assert_eq!(
        statement_of(&ours)["predicateType"],
        json!(COSIGN_SIGN_PREDICATE)
    );
    // Standard padded base64, as cosign writes.
    let sig = ours["dsseEnvelope"]["signatures"][0]["sig"]
        .as_str()
        .unwrap();
    assert_eq!(B64.encode(B64.decode(sig).unwrap()), sig);

    // A name becomes the subject's name (cosign writes none); it still verifies.
    let named = sign_bundle("registry.example/shop/web", &f.digest, &key).unwrap();
    let named_json: Value = serde_json::from_slice(&named).unwrap();
    assert_eq!(
        statement_of(&named_json)["subject"][0]["name"],
        "registry.example/shop/web"
    );
    verify_bundle(&named, &f.digest, &[public]).unwrap();

    let err = sign_bundle("", "sha256:nope", &key).unwrap_err();
    assert!(matches!(err, BundleError::InvalidDigest { .. }), "{err}");
}

#[test]
fn read_bundle_file_caps_the_size_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    std::fs::write(&path, vec![b' '; MAX_BUNDLE_SIZE + 10]).unwrap();
    let err = read_bundle_file(&path).unwrap_err();
    assert!(matches!(err, BundleError::TooLarge { .. }), "{err}");
    std::fs::write(&path, b"{}").unwrap();
    assert_eq!(read_bundle_file(&path).unwrap(), b"{}");
    let missing = dir.path().join("missing.json");
    let err = read_bundle_file(&missing).unwrap_err();
    assert!(matches!(err, BundleError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.json"), "{err}");
}
