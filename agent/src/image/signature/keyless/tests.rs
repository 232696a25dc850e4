//! Keyless verification against the shared fixtures of
//! `$BERTH_SHARED_FIXTURES/cosign-bundle/`, read in place: a real keyless cosign 3 bundle
//! (a kubewarden release signed by its GitHub Actions workflow, with a Rekor v1 entry and
//! an RFC 3161 timestamp), the public-good trusted root, and a key-signed blob bundle
//! with a `hashedrekord` entry and a timestamp (blob mode of the same code).
//!
//! Every mutation of the table changes one signed or hashed byte (or a field bound to
//! one) and must be refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use p256::pkcs8::EncodePublicKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::image::signature::{
    BundleError, BundleVerified, Trust, TrustedKey, Voucher, verify_bundle,
};

const DIGEST: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const LOG_INDEX: u64 = 1_261_105_807;
const SIGNED_AT: u64 = 1_775_719_409;

use crate::image::signature::bundle_tests::read;

struct Fixtures {
    keyless: Value,
    blob: Value,
    root: Value,
    blob_key: TrustedKey,
    other_key: TrustedKey,
    artifact: Vec<u8>,
}

fn fixtures() -> Option<Fixtures> {
    let json = |b: Vec<u8>| serde_json::from_slice::<Value>(&b).unwrap();
    let key = |name: &str| -> Option<TrustedKey> {
        Some(TrustedKey::from_pem(name, &String::from_utf8(read(name)?).unwrap()).unwrap())
    };
    Some(Fixtures {
        keyless: json(read("keyless-image.bundle.json")?),
        blob: json(read("keyed-blob.bundle.json")?),
        root: json(read("trusted_root.public-good.json")?),
        blob_key: key("keyed-blob.key.pub")?,
        other_key: key("keyed-image.cosign.pub")?,
        artifact: read("keyed-blob.a.txt")?,
    })
}

fn root_of(root: &Value) -> TrustedRoot {
    TrustedRoot::parse("trusted_root.json", &serde_json::to_vec(root).unwrap()).unwrap()
}

fn the_identity() -> Vec<IdentityMatcher> {
    vec![IdentityMatcher::exact(ISSUER, SUBJECT)]
}

fn verify(
    bundle: &Value,
    root: &Value,
    digest: &str,
    identities: Vec<IdentityMatcher>,
) -> Result<BundleVerified, BundleError> {
    let trust = Trust {
        keys: Vec::new(),
        root: Some(root_of(root)),
        identities,
    };
    verify_bundle(&serde_json::to_vec(bundle).unwrap(), digest, &trust)
}

/// The value at JSON pointer `path` of `v`.
fn at<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    v.pointer_mut(path).unwrap_or_else(|| panic!("no {path}"))
}

/// Flips the lowest bit of the byte `index` picks in the base64 field at `path`.
fn flip(v: &mut Value, path: &str, index: impl Fn(&[u8]) -> usize) {
    let field = at(v, path);
    let mut bytes = B64.decode(field.as_str().unwrap()).unwrap();
    let i = index(&bytes);
    bytes[i] ^= 1;
    *field = json!(B64.encode(bytes));
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{} not found", String::from_utf8_lossy(needle)))
}

const TLOG: &str = "/verificationMaterial/tlogEntries/0";
const CERT: &str = "/verificationMaterial/certificate/rawBytes";
const TIMESTAMP: &str =
    "/verificationMaterial/timestampVerificationData/rfc3161Timestamps/0/signedTimestamp";

fn tlog(rest: &str) -> String {
    format!("{TLOG}{rest}")
}

type Mutation = (&'static str, Box<dyn Fn(&mut Value)>);

/// Mutations shared by both fixtures: the log entry and the timestamp.
fn evidence_mutations() -> Vec<Mutation> {
    vec![
        (
            "signed entry timestamp byte",
            Box::new(|b| {
                flip(b, &tlog("/inclusionPromise/signedEntryTimestamp"), |x| {
                    x.len() - 1
                })
            }),
        ),
        (
            "integratedTime + 1",
            Box::new(|b| {
                let t = at(b, &tlog("/integratedTime"));
                let n: u64 = t.as_str().unwrap().parse().unwrap();
                *t = json!((n + 1).to_string());
            }),
        ),
        (
            "global logIndex + 1",
            Box::new(|b| {
                let t = at(b, &tlog("/logIndex"));
                let n: u64 = t.as_str().unwrap().parse().unwrap();
                *t = json!((n + 1).to_string());
            }),
        ),
        (
            "inclusion proof logIndex + 1",
            Box::new(|b| {
                let t = at(b, &tlog("/inclusionProof/logIndex"));
                let n: u64 = t.as_str().unwrap().parse().unwrap();
                *t = json!((n + 1).to_string());
            }),
        ),
        (
            "inclusion proof logIndex := the global index",
            Box::new(|b| {
                let global = at(b, &tlog("/logIndex")).clone();
                *at(b, &tlog("/inclusionProof/logIndex")) = global;
            }),
        ),
        (
            "inclusion proof hash byte",
            Box::new(|b| flip(b, &tlog("/inclusionProof/hashes/0"), |_| 0)),
        ),
        (
            "inclusion proof rootHash byte",
            Box::new(|b| flip(b, &tlog("/inclusionProof/rootHash"), |_| 0)),
        ),
        (
            "inclusion proof hash dropped",
            Box::new(|b| {
                at(b, &tlog("/inclusionProof/hashes"))
                    .as_array_mut()
                    .unwrap()
                    .pop();
            }),
        ),
        (
            "checkpoint origin text",
            Box::new(|b| {
                let c = at(b, &tlog("/inclusionProof/checkpoint/envelope"));
                *c = json!(c.as_str().unwrap().replacen(" - ", " -- ", 1));
            }),
        ),
        (
            "checkpoint signature byte",
            Box::new(|b| {
                let c = at(b, &tlog("/inclusionProof/checkpoint/envelope"));
                let text = c.as_str().unwrap().to_string();
                let (head, sig) = text.trim_end().rsplit_once(' ').unwrap();
                let mut sig = B64.decode(sig).unwrap();
                let last = sig.len() - 1;
                sig[last] ^= 1;
                *c = json!(format!("{head} {}\n", B64.encode(sig)));
            }),
        ),
        (
            "checkpoint removed",
            Box::new(|b| {
                at(b, &tlog("/inclusionProof"))
                    .as_object_mut()
                    .unwrap()
                    .remove("checkpoint");
            }),
        ),
        (
            "inclusion proof removed",
            Box::new(|b| {
                at(b, TLOG)
                    .as_object_mut()
                    .unwrap()
                    .remove("inclusionProof");
            }),
        ),
        (
            "signed entry timestamp removed",
            Box::new(|b| {
                at(b, TLOG)
                    .as_object_mut()
                    .unwrap()
                    .remove("inclusionPromise");
            }),
        ),
        (
            "log id := the Rekor v2 (Ed25519) log's",
            Box::new(|b| {
                *at(b, &tlog("/logId/keyId")) =
                    json!("zxGZFVvd0FEmjR8WrFwMdcAJ9vtaY/QXf44Y1wUeP6A=");
            }),
        ),
        (
            "log id of a log the root does not list",
            Box::new(|b| flip(b, &tlog("/logId/keyId"), |_| 0)),
        ),
        (
            "timestamp TSTInfo byte (genTime)",
            Box::new(|b| flip(b, TIMESTAMP, |x| find(x, &[0x18, 0x0f]) + 14)),
        ),
        (
            "timestamp signature byte",
            Box::new(|b| flip(b, TIMESTAMP, |x| x.len() - 1)),
        ),
        (
            "timestamp message imprint byte",
            Box::new(|b| {
                // The imprint is SHA-256 of the signature bytes, found where it is.
                let sig = b
                    .pointer("/dsseEnvelope/signatures/0/sig")
                    .or_else(|| b.pointer("/messageSignature/signature"))
                    .and_then(Value::as_str)
                    .unwrap();
                let imprint = Sha256::digest(B64.decode(sig).unwrap());
                flip(b, TIMESTAMP, |x| find(x, &imprint) + 5)
            }),
        ),
    ]
}

/// Mutations of the keyless bundle only.
fn keyless_mutations(blob: &Value) -> Vec<Mutation> {
    let blob_entry = blob["verificationMaterial"]["tlogEntries"].clone();
    let blob_timestamps = blob["verificationMaterial"]["timestampVerificationData"].clone();
    let mut m: Vec<Mutation> = vec![
        (
            "payload byte",
            Box::new(|b| flip(b, "/dsseEnvelope/payload", |x| x.len() / 2)),
        ),
        (
            "signature byte",
            Box::new(|b| flip(b, "/dsseEnvelope/signatures/0/sig", |x| x.len() - 1)),
        ),
        (
            "certificate to-be-signed byte (SAN)",
            Box::new(|b| flip(b, CERT, |x| find(x, b"kubewarden-controller/.github"))),
        ),
        (
            "certificate to-be-signed byte (notAfter)",
            Box::new(|b| flip(b, CERT, |x| find(x, b"260409073329Z") + 11)),
        ),
        (
            "certificate signature byte",
            Box::new(|b| flip(b, CERT, |x| x.len() - 1)),
        ),
        (
            "log entry body byte (envelopeHash)",
            Box::new(|b| flip(b, &tlog("/canonicalizedBody"), |x| find(x, b"d46849f9"))),
        ),
        (
            "log entry body byte (payloadHash)",
            Box::new(|b| flip(b, &tlog("/canonicalizedBody"), |x| find(x, b"736c85e4"))),
        ),
        (
            "log entry swapped for keyed-blob's",
            Box::new(move |b| *at(b, "/verificationMaterial/tlogEntries") = blob_entry.clone()),
        ),
        (
            "timestamp swapped for keyed-blob's",
            Box::new(move |b| {
                *at(b, "/verificationMaterial/timestampVerificationData") = blob_timestamps.clone()
            }),
        ),
        (
            "log entry removed",
            Box::new(|b| *at(b, "/verificationMaterial/tlogEntries") = json!([])),
        ),
    ];
    m.extend(evidence_mutations());
    m
}

#[test]
fn the_keyless_fixture_verifies_offline_for_its_digest_and_identity() {
    let Some(f) = fixtures() else { return };
    let v = verify(&f.keyless, &f.root, DIGEST, the_identity()).unwrap();
    assert_eq!(
        v.voucher,
        Voucher::Identity {
            issuer: ISSUER.into(),
            subject: SUBJECT.into(),
            log_index: Some(LOG_INDEX),
        }
    );
    assert_eq!(v.log_index, Some(LOG_INDEX));
    // The log's integrated time and the timestamp's time, both notBefore: one
    // distinct time.
    assert_eq!(v.signed_at, [SIGNED_AT]);
    assert!(v.unchecked.is_empty());
    // Several identities: any one matching is enough.
    let ids = vec![
        IdentityMatcher::exact("https://gitlab.com", "x"),
        IdentityMatcher::regex(ISSUER, "https://github.com/kubewarden/.+").unwrap(),
    ];
    verify(&f.keyless, &f.root, DIGEST, ids).unwrap();
}

#[test]
fn it_fails_for_another_digest_subject_issuer_or_a_root_without_its_ca() {
    let Some(f) = fixtures() else { return };
    let other = format!("sha256:{}", "0".repeat(64));
    let err = verify(&f.keyless, &f.root, &other, the_identity()).unwrap_err();
    assert!(
        matches!(&err, BundleError::SubjectMismatch { expected, .. } if *expected == other),
        "{err}"
    );
    assert!(err.to_string().contains(SUBJECT), "{err}");

    let other_subject = SUBJECT.replace("v1.34.0", "v1.35.0");
    let err = verify(
        &f.keyless,
        &f.root,
        DIGEST,
        vec![IdentityMatcher::exact(ISSUER, &other_subject)],
    )
    .unwrap_err();
    let text = crate::util::error_chain(&err);
    assert!(
        text.contains(&format!("names identity {ISSUER}={SUBJECT}"))
            && text.contains(&format!("expected {ISSUER}={other_subject}")),
        "{text}"
    );

    let err = verify(
        &f.keyless,
        &f.root,
        DIGEST,
        vec![IdentityMatcher::exact("https://gitlab.com", SUBJECT)],
    )
    .unwrap_err();
    let text = crate::util::error_chain(&err);
    assert!(
        text.contains(&format!("expected https://gitlab.com={SUBJECT}")),
        "{text}"
    );

    // The second Fulcio authority (the intermediate) removed: the first one is trusted
    // only until 2022.
    let mut root = f.root.clone();
    root["certificateAuthorities"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    let err = verify(&f.keyless, &root, DIGEST, the_identity()).unwrap_err();
    let text = crate::util::error_chain(&err);
    assert!(
        text.contains(
            "does not chain to a certificate authority of the trusted root at 2026-04-09T07:23:29Z"
        ),
        "{text}"
    );
    // The authority kept, its validFor ending before the signing time.
    let mut root = f.root.clone();
    root["certificateAuthorities"][1]["validFor"]["end"] = json!("2026-01-01T00:00:00Z");
    assert!(verify(&f.keyless, &root, DIGEST, the_identity()).is_err());
    // No timestamp authority: the timestamp cannot verify.
    let mut root = f.root.clone();
    root["timestampAuthorities"] = json!([]);
    let err = verify(&f.keyless, &root, DIGEST, the_identity()).unwrap_err();
    assert!(
        crate::util::error_chain(&err).contains("timestamp"),
        "{err}"
    );
}

/// A `subject_regex` matches the whole subject; cosign's would match a part.
#[test]
fn a_subject_regex_is_anchored() {
    let Some(f) = fixtures() else { return };
    for part in [
        "https://github.com/kubewarden/",
        "kubewarden-controller",
        "v1.34.0",
    ] {
        let ids = vec![IdentityMatcher::regex(ISSUER, part).unwrap()];
        assert!(verify(&f.keyless, &f.root, DIGEST, ids).is_err(), "{part}");
    }
    let m = IdentityMatcher::regex(ISSUER, "a|b").unwrap();
    assert!(m.matches(ISSUER, "a") && !m.matches(ISSUER, "ab") && !m.matches(ISSUER, "xb"));
    assert!(IdentityMatcher::regex(ISSUER, "(").is_err());
}

#[test]
fn every_mutation_of_the_keyless_fixture_is_refused() {
    let Some(f) = fixtures() else { return };
    let mut caught = Vec::new();
    for (name, mutate) in keyless_mutations(&f.blob) {
        let mut bundle = f.keyless.clone();
        mutate(&mut bundle);
        assert_ne!(bundle, f.keyless, "{name}: the mutation changed nothing");
        match verify(&bundle, &f.root, DIGEST, the_identity()) {
            Ok(v) => panic!("{name}: verified anyway: {v:?}"),
            Err(e) => caught.push(format!("{name}: {}", crate::util::error_chain(&e))),
        }
    }
    assert_eq!(caught.len(), 28, "{caught:#?}");
    let reason = |name: &str| {
        caught
            .iter()
            .find(|c| c.starts_with(&format!("{name}:")))
            .unwrap()
            .clone()
    };
    assert!(reason("log entry swapped for keyed-blob's").contains("not `dsse 0.0.1`"));
    assert!(reason("signed entry timestamp removed").contains("no signed entry timestamp"));
    assert!(reason("log id := the Rekor v2 (Ed25519) log's").contains("Rekor v2"));
    assert!(reason("inclusion proof logIndex := the global index").contains("inclusion proof"));
    assert!(reason("log entry removed").contains("no transparency-log entry"));
}

/// A dsse entry of another signature: right kind, wrong bundle.
#[test]
fn a_dsse_entry_of_another_bundle_is_not_bound() {
    let Some(f) = fixtures() else { return };
    let mut other = f.keyless.clone();
    let entry = at(&mut other, &tlog("/canonicalizedBody"));
    let body = B64.decode(entry.as_str().unwrap()).unwrap();
    let mut body: Value = serde_json::from_slice(&body).unwrap();
    body["spec"]["signatures"][0]["signature"] =
        json!(B64.encode(b"another signature of another bundle"));
    *entry = json!(B64.encode(serde_json::to_vec(&body).unwrap()));
    let err = verify(&other, &f.root, DIGEST, the_identity()).unwrap_err();
    assert!(
        crate::util::error_chain(&err).contains("signature is not the bundle's"),
        "{err}"
    );
}

#[test]
fn without_a_root_or_identities_a_keyless_bundle_is_refused_by_name() {
    let Some(f) = fixtures() else { return };
    let bytes = serde_json::to_vec(&f.keyless).unwrap();
    let keys_only = Trust::keys(vec![f.other_key.clone()]);
    let err = verify_bundle(&bytes, DIGEST, &keys_only).unwrap_err();
    assert!(matches!(err, BundleError::Keyless), "{err}");
    assert!(err.to_string().contains("policy.trusted_root"), "{err}");
    let err = verify(&f.keyless, &f.root, DIGEST, Vec::new()).unwrap_err();
    assert!(
        matches!(&err, BundleError::KeylessNotVerified(e) if matches!(**e, KeylessError::NoTrustedIdentities)),
        "{err}"
    );
}

/// Blob mode: the message signature by the key, then the same evidence code.
fn verify_blob(
    bundle: &Value,
    key: &TrustedKey,
    artifact: &[u8],
    root: &TrustedRoot,
) -> Result<Evidence, String> {
    use p256::ecdsa::signature::Verifier;
    let ms = &bundle["messageSignature"];
    let digest: [u8; 32] = Sha256::digest(artifact).into();
    let claimed = B64
        .decode(ms["messageDigest"]["digest"].as_str().unwrap())
        .unwrap();
    if claimed != digest {
        return Err("messageDigest is not the artifact's".into());
    }
    let sig = B64.decode(ms["signature"].as_str().unwrap()).unwrap();
    let parsed = p256::ecdsa::DerSignature::try_from(sig.as_slice()).map_err(|e| e.to_string())?;
    key.verifying_key()
        .verify(artifact, &parsed)
        .map_err(|_| "the message signature does not verify".to_string())?;
    let entries: Vec<TlogEntry> =
        serde_json::from_value(bundle["verificationMaterial"]["tlogEntries"].clone())
            .map_err(|e| e.to_string())?;
    let timestamps: Vec<String> =
        bundle["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t["signedTimestamp"].as_str().unwrap().to_string())
            .collect();
    let spki = key.verifying_key().to_public_key_der().unwrap();
    verify_evidence(
        &Material {
            entries: &entries,
            timestamps: &timestamps,
        },
        &Artifact::Blob {
            digest,
            signature: &sig,
        },
        &Signer::Key(spki.as_bytes()),
        root,
    )
    .map_err(|e| crate::util::error_chain(&e))
}

#[test]
fn the_keyed_blob_verifies_with_its_log_entry_and_timestamp() {
    let Some(f) = fixtures() else { return };
    let root = root_of(&f.root);
    let evidence = verify_blob(&f.blob, &f.blob_key, &f.artifact, &root).unwrap();
    assert_eq!(
        evidence,
        Evidence {
            log_index: Some(771_488_337),
            // The entry's and the timestamp's, the same second: once.
            times: vec![1_766_077_479],
        }
    );
    let mut other_artifact = f.artifact.clone();
    other_artifact[0] ^= 1;
    assert!(verify_blob(&f.blob, &f.blob_key, &other_artifact, &root).is_err());
    assert!(verify_blob(&f.blob, &f.other_key, &f.artifact, &root).is_err());
    let keyless_entry = f.keyless["verificationMaterial"]["tlogEntries"].clone();
    let mut mutations: Vec<Mutation> = vec![
        (
            "message signature byte",
            Box::new(|b| flip(b, "/messageSignature/signature", |x| x.len() - 1)),
        ),
        (
            "log entry body byte (hash)",
            Box::new(|b| flip(b, &tlog("/canonicalizedBody"), |x| find(x, b"a0cfc712"))),
        ),
        (
            "log entry body byte (public key)",
            Box::new(|b| flip(b, &tlog("/canonicalizedBody"), |x| x.len() - 20)),
        ),
        (
            "log entry swapped for the keyless bundle's",
            Box::new(move |b| *at(b, "/verificationMaterial/tlogEntries") = keyless_entry.clone()),
        ),
    ];
    mutations.extend(evidence_mutations());
    let mut caught = 0;
    for (name, mutate) in mutations {
        let mut bundle = f.blob.clone();
        mutate(&mut bundle);
        assert_ne!(bundle, f.blob, "{name}: the mutation changed nothing");
        let result = verify_blob(&bundle, &f.blob_key, &f.artifact, &root);
        assert!(result.is_err(), "{name}: verified anyway");
        caught += 1;
    }
    assert_eq!(caught, 22);
}

/// A keyed image bundle with a trusted root: what it carries is checked, not reported
/// unchecked; a log entry of another signature fails it.
#[test]
fn a_keyed_bundle_s_log_entry_is_checked_with_a_root() {
    let Some(f) = fixtures() else { return };
    let Some(bundle) = read("keyed-image.bundle.json") else {
        return;
    };
    let digest = String::from_utf8(read("keyed-image.digest").unwrap()).unwrap();
    let digest = digest.trim();
    let mut trust = Trust::keys(vec![f.other_key.clone()]);
    trust.root = Some(root_of(&f.root));
    // It carries neither: verified by its key, nothing unchecked.
    let v = verify_bundle(&bundle, digest, &trust).unwrap();
    assert!(v.unchecked.is_empty() && v.log_index.is_none(), "{v:?}");
    // The keyless bundle's entry and timestamp are not bound to it.
    let mut with_entry: Value = serde_json::from_slice(&bundle).unwrap();
    with_entry["verificationMaterial"]["tlogEntries"] =
        f.keyless["verificationMaterial"]["tlogEntries"].clone();
    let bytes = serde_json::to_vec(&with_entry).unwrap();
    let err = verify_bundle(&bytes, digest, &trust).unwrap_err();
    assert!(matches!(err, BundleError::Evidence { .. }), "{err}");
    assert!(
        crate::util::error_chain(&err).contains("payload hash is not the bundle's"),
        "{err}"
    );
    let mut with_ts: Value = serde_json::from_slice(&bundle).unwrap();
    with_ts["verificationMaterial"]["timestampVerificationData"] =
        f.keyless["verificationMaterial"]["timestampVerificationData"].clone();
    let bytes = serde_json::to_vec(&with_ts).unwrap();
    let err = verify_bundle(&bytes, digest, &trust).unwrap_err();
    assert!(
        crate::util::error_chain(&err).contains("message imprint"),
        "{err}"
    );
    // Without a root the same bundle is verified by its key, the entry reported unchecked.
    let v = verify_bundle(&bytes, digest, &Trust::keys(vec![f.other_key.clone()])).unwrap();
    assert_eq!(v.unchecked, ["timestamp"]);
}

#[test]
fn a_bad_trusted_root_names_the_key() {
    let Some(f) = fixtures() else { return };
    type Case = (Box<dyn Fn(&mut Value)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            Box::new(|r| {
                r["tlogs"][0].as_object_mut().unwrap().remove("logId");
            }),
            "`tlogs[0].logId` is missing",
        ),
        (
            Box::new(|r| r["tlogs"][1]["publicKey"]["validFor"]["start"] = json!("yesterday")),
            "`tlogs[1].publicKey.validFor.start` is not an RFC 3339 UTC time",
        ),
        (
            Box::new(|r| {
                r["certificateAuthorities"][1]["certChain"]["certificates"][0]["rawBytes"] =
                    json!("AAAA")
            }),
            "`certificateAuthorities[1].certChain.certificates[0].rawBytes` is not a valid certificate",
        ),
        (
            Box::new(|r| r["timestampAuthorities"][0]["certChain"]["certificates"] = json!([])),
            "`timestampAuthorities[0].certChain.certificates` is not a non-empty list",
        ),
    ];
    for (mutate, expected) in cases {
        let mut root = f.root.clone();
        mutate(&mut root);
        let err = TrustedRoot::parse("r.json", &serde_json::to_vec(&root).unwrap()).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        assert!(err.to_string().contains("r.json"), "{err}");
    }
    let err = TrustedRoot::parse("r.json", b"{\n  \"tlogs\": [,]\n}").unwrap_err();
    assert!(
        crate::util::error_chain(&err).contains("line 2"),
        "{}",
        crate::util::error_chain(&err)
    );
    // The end of a validFor may carry milliseconds.
    let root = root_of(&f.root);
    assert_eq!(root.cas[0].valid_for.end, Some(1_672_531_199));
    assert_eq!(root.cas[1].valid_for.end, None);
}

#[test]
fn generalized_times_with_fractions_are_read() {
    assert_eq!(tsa::generalized_time(b"20260409072329Z"), Some(SIGNED_AT));
    assert_eq!(
        tsa::generalized_time(b"20260409072329.123Z"),
        Some(SIGNED_AT)
    );
    assert_eq!(tsa::generalized_time(b"20260409072329"), None);
    assert_eq!(tsa::generalized_time(b"2026040907232Z"), None);
}

#[test]
fn inclusion_proofs_follow_rfc_9162() {
    let leaf = |b: u8| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8, b]);
        h.finalize().into()
    };
    let node = |l: &[u8], r: &[u8]| -> Vec<u8> {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(l);
        h.update(r);
        h.finalize().to_vec()
    };
    // Three leaves: root = node(node(l0, l1), l2).
    let (l0, l1, l2) = (leaf(0), leaf(1), leaf(2));
    let n01 = node(&l0, &l1);
    let root = node(&n01, &l2);
    rekor::verify_inclusion(2, 3, l2, std::slice::from_ref(&n01), &root).unwrap();
    rekor::verify_inclusion(0, 3, l0, &[l1.to_vec(), l2.to_vec()], &root).unwrap();
    assert!(rekor::verify_inclusion(1, 3, l0, &[l1.to_vec(), l2.to_vec()], &root).is_err());
    assert!(rekor::verify_inclusion(3, 3, l2, std::slice::from_ref(&n01), &root).is_err());
    assert!(rekor::verify_inclusion(2, 3, l2, &[n01.clone(), n01], &root).is_err());
}

/// The chain check alone (the log entry's binding catches a changed certificate first in
/// the bundle): a flipped to-be-signed byte breaks the issuer's signature, and the
/// certificate is valid only during its ten minutes, bounds included.
#[test]
fn the_chain_check_alone_refuses_a_changed_certificate() {
    let Some(f) = fixtures() else { return };
    let root = root_of(&f.root);
    let der = || {
        B64.decode(f.keyless.pointer(CERT).unwrap().as_str().unwrap())
            .unwrap()
    };
    let leaf = x509::Cert::parse(der(), "leaf").unwrap();
    assert_eq!(x509::chain(&leaf, &root.cas, SIGNED_AT).unwrap(), 1);
    let (not_before, not_after) = leaf.validity();
    assert_eq!((not_before, not_after), (SIGNED_AT, SIGNED_AT + 600));
    leaf.require_valid_at(not_after, "certificate").unwrap();
    assert!(leaf.require_valid_at(not_after + 1, "certificate").is_err());
    let mut flipped = der();
    let i = find(&flipped, b"kubewarden-controller/.github");
    flipped[i] ^= 1;
    let changed = x509::Cert::parse(flipped, "leaf").unwrap();
    let err = x509::chain(&changed, &root.cas, SIGNED_AT).unwrap_err();
    assert!(
        crate::util::error_chain(&err).contains("does not verify"),
        "{err}"
    );
    // Outside every authority's validFor: the first is trusted until 2022 only.
    let err = x509::chain(&leaf, &root.cas[..1], SIGNED_AT).unwrap_err();
    assert!(crate::util::error_chain(&err).contains("not at"), "{err}");
}
