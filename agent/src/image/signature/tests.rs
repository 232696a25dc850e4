//! Verification against the shared cosign fixture, sign/verify round trips, and
//! signature-manifest verification with a fake blob source.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;

use super::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The cosign test vector of `$BERTH_SHARED_FIXTURES/cosign/legacy-keyed.json`.
struct Fixture {
    key: TrustedKey,
    payload: Vec<u8>,
    signature_b64: String,
    digest: String,
}

fn fixture() -> Option<Fixture> {
    let dir = std::env::var_os("BERTH_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    let path = dir.join("cosign/legacy-keyed.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            crate::testing::missing(&format!("shared fixture {}: {e}", path.display()));
            return None;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let field = |p: &str| {
        json.pointer(p)
            .and_then(|v| v.as_str())
            .unwrap()
            .to_string()
    };
    Some(Fixture {
        key: TrustedKey::from_pem("legacy-keyed.pub", &field("/public_key_pem")).unwrap(),
        payload: field("/payload").into_bytes(),
        signature_b64: field("/signature_b64"),
        digest: field("/expect/valid_for_digest"),
    })
}

fn other_digest() -> String {
    format!("sha256:{}", "0".repeat(64))
}

#[test]
fn fixture_verifies_for_its_digest() {
    let Some(f) = fixture() else { return };
    let v = verify(&f.payload, &f.signature_b64, &f.key, &f.digest).unwrap();
    assert_eq!(v.manifest_digest, f.digest);
    assert_eq!(v.key, "legacy-keyed.pub");
    assert_eq!(v.docker_reference, "registry-testing.svc.lan/busybox");
    assert_eq!(v.key_fingerprint, f.key.fingerprint());
}

#[test]
fn fixture_fails_when_any_payload_byte_flips() {
    let Some(f) = fixture() else { return };
    for i in 0..f.payload.len() {
        let mut payload = f.payload.clone();
        payload[i] ^= 0x01;
        let err = verify(&payload, &f.signature_b64, &f.key, &f.digest).unwrap_err();
        assert!(
            matches!(err, SignatureError::BadSignature { .. }),
            "byte {i}: {err}"
        );
    }
}

#[test]
fn fixture_fails_when_any_signature_byte_flips() {
    let Some(f) = fixture() else { return };
    let der = B64.decode(&f.signature_b64).unwrap();
    for i in 0..der.len() {
        let mut bad = der.clone();
        bad[i] ^= 0x01;
        let err = verify(&f.payload, &B64.encode(&bad), &f.key, &f.digest).unwrap_err();
        assert!(
            matches!(
                err,
                SignatureError::BadSignature { .. } | SignatureError::SignatureDer(_)
            ),
            "byte {i}: {err}"
        );
    }
}

#[test]
fn fixture_fails_for_another_digest() {
    let Some(f) = fixture() else { return };
    let err = verify(&f.payload, &f.signature_b64, &f.key, &other_digest()).unwrap_err();
    assert!(
        matches!(err, SignatureError::DigestMismatch { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&f.digest) && msg.contains(&other_digest()),
        "{msg}"
    );
}

#[test]
fn fixture_fails_with_another_key() {
    let Some(f) = fixture() else { return };
    let other = SigningKey::generate("other.key")
        .unwrap()
        .public_key()
        .unwrap();
    let err = verify(&f.payload, &f.signature_b64, &other, &f.digest).unwrap_err();
    assert!(
        matches!(&err, SignatureError::BadSignature { key } if key == "other.key"),
        "{err}"
    );
}

#[test]
fn fixture_rejects_garbage_signatures() {
    let Some(f) = fixture() else { return };
    let err = verify(&f.payload, "not base64!", &f.key, &f.digest).unwrap_err();
    assert!(matches!(err, SignatureError::SignatureBase64(_)), "{err}");
    let err = verify(
        &f.payload,
        &B64.encode(b"\x30\x02\x01\x01"),
        &f.key,
        &f.digest,
    )
    .unwrap_err();
    assert!(matches!(err, SignatureError::SignatureDer(_)), "{err}");
    let err = verify(&f.payload, &f.signature_b64, &f.key, "sha256:F3").unwrap_err();
    assert!(matches!(err, SignatureError::InvalidDigest { .. }), "{err}");
}

/// Go's ECDSA does not normalise `s`, so cosign signatures may carry a high `s`;
/// both forms must verify.
#[test]
fn fixture_verifies_with_high_s() {
    let Some(f) = fixture() else { return };
    let der = B64.decode(&f.signature_b64).unwrap();
    let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
    let (r, s) = sig.split_scalars();
    let high = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
    assert_ne!(high, sig);
    let high_b64 = B64.encode(high.to_der().as_bytes());
    verify(&f.payload, &high_b64, &f.key, &f.digest).unwrap();
}

#[test]
fn fixture_verifies_through_a_signature_manifest() {
    let Some(f) = fixture() else { return };
    let art = build_signature_artifact(f.payload.clone(), f.signature_b64.clone(), None).unwrap();
    assert_eq!(art.payload.bytes, f.payload);
    let blobs = store(&[&art]);
    let ok = verify_signature_manifest(
        &art.manifest.bytes,
        &f.digest,
        std::slice::from_ref(&f.key),
        &blobs,
    )
    .unwrap();
    assert_eq!(
        ok.keys().into_iter().collect::<Vec<_>>(),
        ["legacy-keyed.pub"]
    );
    assert_eq!(
        ok.verified[0].layer.as_deref(),
        Some(art.payload.digest.as_str())
    );
}

/// A fake registry: blobs by digest.
fn store(artifacts: &[&SignatureArtifact]) -> impl Fn(&str) -> Result<Vec<u8>, BoxError> + use<> {
    let mut blobs = BTreeMap::new();
    for a in artifacts {
        for b in [&a.config, &a.payload, &a.manifest] {
            blobs.insert(b.digest.clone(), b.bytes.clone());
        }
    }
    move |digest: &str| {
        blobs
            .get(digest)
            .cloned()
            .ok_or_else(|| format!("blob {digest} not found").into())
    }
}

fn image_digest() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

#[test]
fn round_trip_generate_sign_verify() {
    let key = SigningKey::generate("release.key").unwrap();
    let public = key.public_key().unwrap();
    let art = sign_image("registry.example.com/shop/web", &image_digest(), &key, None).unwrap();
    assert_eq!(art.tag, format!("sha256-{}.sig", "ab".repeat(32)));
    let v = verify(&art.payload.bytes, &art.signature, &public, &image_digest()).unwrap();
    assert_eq!(v.docker_reference, "registry.example.com/shop/web");
    let ok = verify_signature_manifest(
        &art.manifest.bytes,
        &image_digest(),
        &[public],
        &store(&[&art]),
    )
    .unwrap();
    assert_eq!(ok.verified.len(), 1);
    assert!(ok.rejected.is_empty());
}

#[test]
fn the_artifact_is_a_valid_oci_image() {
    let key = SigningKey::generate("k").unwrap();
    let art = sign_image("r.example/x", &image_digest(), &key, None).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&art.manifest.bytes).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], OCI_MANIFEST_MEDIA_TYPE);
    assert_eq!(m["config"]["mediaType"], OCI_CONFIG_MEDIA_TYPE);
    assert_eq!(m["config"]["digest"], art.config.digest.as_str());
    assert_eq!(m["config"]["size"], art.config.bytes.len());
    let layer = &m["layers"][0];
    assert_eq!(layer["mediaType"], SIMPLE_SIGNING_MEDIA_TYPE);
    assert_eq!(layer["digest"], art.payload.digest.as_str());
    assert_eq!(layer["size"], art.payload.bytes.len());
    assert_eq!(
        layer["annotations"][SIGNATURE_ANNOTATION],
        art.signature.as_str()
    );
    let c: serde_json::Value = serde_json::from_slice(&art.config.bytes).unwrap();
    assert_eq!(c["rootfs"]["type"], "layers");
    assert_eq!(c["rootfs"]["diff_ids"][0], art.payload.digest.as_str());
    assert!(c["architecture"].is_string() && c["os"].is_string());
    assert_eq!(art.manifest.digest, sha256_digest(&art.manifest.bytes));
}

#[test]
fn appending_keeps_earlier_signatures_without_duplicates() {
    let a = SigningKey::generate("a.key").unwrap();
    let b = SigningKey::generate("b.key").unwrap();
    let first = sign_image("r.example/x", &image_digest(), &a, None).unwrap();
    let second = sign_image(
        "r.example/x",
        &image_digest(),
        &b,
        Some(&first.manifest.bytes),
    )
    .unwrap();
    let again = sign_image(
        "r.example/x",
        &image_digest(),
        &b,
        Some(&second.manifest.bytes),
    )
    .unwrap();
    assert_eq!(
        ImageManifest::parse(&again.manifest.bytes)
            .unwrap()
            .layers
            .len(),
        2
    );
    let keys = [a.public_key().unwrap(), b.public_key().unwrap()];
    let ok = verify_signature_manifest(
        &again.manifest.bytes,
        &image_digest(),
        &keys,
        &store(&[&first, &second]),
    )
    .unwrap();
    assert_eq!(
        ok.keys().into_iter().collect::<Vec<_>>(),
        ["a.key", "b.key"]
    );
    // Each layer was also tried with the other key, and that is recorded.
    assert_eq!(ok.rejected.len(), 2);
}

#[test]
fn a_blob_that_does_not_match_its_descriptor_is_rejected() {
    let key = SigningKey::generate("k.pub").unwrap();
    let art = sign_image("r.example/x", &image_digest(), &key, None).unwrap();
    let layer = art.payload.digest.clone();
    // The registry serves other bytes under the layer's digest.
    let tampered = art.payload.bytes.clone();
    let lying = move |_: &str| -> Result<Vec<u8>, BoxError> {
        let mut bytes = tampered.clone();
        bytes.push(b' ');
        Ok(bytes)
    };
    let err = verify_signature_manifest(
        &art.manifest.bytes,
        &image_digest(),
        &[key.public_key().unwrap()],
        &lying,
    )
    .unwrap_err();
    let SignatureError::NotVerified { rejections, .. } = &err else {
        panic!("{err}")
    };
    assert!(matches!(
        rejections[0].error,
        SignatureError::BlobMismatch { .. }
    ));
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.contains(&image_digest()) && msg.contains(&layer) && msg.contains("k.pub"),
        "{msg}"
    );
}

#[test]
fn the_error_names_every_key_and_why() {
    let signer = SigningKey::generate("signer.key").unwrap();
    let art = sign_image("r.example/x", &image_digest(), &signer, None).unwrap();
    let keys = [
        SigningKey::generate("/etc/berth/keys/one.pub")
            .unwrap()
            .public_key()
            .unwrap(),
        SigningKey::generate("/etc/berth/keys/two.pub")
            .unwrap()
            .public_key()
            .unwrap(),
    ];
    let err =
        verify_signature_manifest(&art.manifest.bytes, &image_digest(), &keys, &store(&[&art]))
            .unwrap_err();
    let msg = err.to_string();
    for k in ["/etc/berth/keys/one.pub", "/etc/berth/keys/two.pub"] {
        assert!(
            msg.contains(&format!("with key {k}: the signature does not verify")),
            "{msg}"
        );
    }
    assert!(
        msg.starts_with(&format!("no signature of {}", image_digest())),
        "{msg}"
    );

    // Signed for another digest: the right key says so.
    let err = verify_signature_manifest(
        &art.manifest.bytes,
        &other_digest(),
        &[signer.public_key().unwrap()],
        &store(&[&art]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is valid but signs"), "{err}");
}

#[test]
fn fetch_failures_are_transient_and_named() {
    let key = SigningKey::generate("k").unwrap();
    let art = sign_image("r.example/x", &image_digest(), &key, None).unwrap();
    let offline = |d: &str| -> Result<Vec<u8>, BoxError> {
        Err(format!("connection refused fetching {d}").into())
    };
    let err = verify_signature_manifest(
        &art.manifest.bytes,
        &image_digest(),
        &[key.public_key().unwrap()],
        &offline,
    )
    .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");
}

#[test]
fn manifests_without_usable_layers() {
    let key = SigningKey::generate("k").unwrap().public_key().unwrap();
    let none = |_: &str| -> Result<Vec<u8>, BoxError> { Err("unused".into()) };
    let empty = br#"{"schemaVersion":2,"config":{"mediaType":"x","size":0,"digest":"sha256:c"},"layers":[]}"#;
    assert!(matches!(
        verify_signature_manifest(empty, &image_digest(), std::slice::from_ref(&key), &none),
        Err(SignatureError::NoSignatures { .. })
    ));
    assert!(matches!(
        verify_signature_manifest(empty, &image_digest(), &[], &none),
        Err(SignatureError::NoTrustedKeys { .. })
    ));
    let unannotated = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"x","size":0,"digest":"sha256:c"}},
           "layers":[{{"mediaType":"{SIMPLE_SIGNING_MEDIA_TYPE}","size":3,"digest":"{}"}}]}}"#,
        image_digest()
    );
    let err = verify_signature_manifest(unannotated.as_bytes(), &image_digest(), &[key], &none)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no `dev.cosignproject.cosign/signature` annotation"),
        "{err}"
    );
}
