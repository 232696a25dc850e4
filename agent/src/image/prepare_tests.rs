//! The signature verdict: the legacy signature and every stored bundle, each for the
//! image's digest; what each said when none verified.

use super::*;
use crate::image::registry::Target;
use crate::image::registry::referrers::ReferrersSource;
use crate::image::signature::referrers::build_referrer;
use crate::image::signature::{SigningKey, TrustedKey, sign_bundle};
use crate::image::store::records::{self, BlobRef};

/// [`super::verify_stored`] with keys only.
fn verify_stored(store: &Store, record: &ImageRecord, keys: &[TrustedKey]) -> SignatureCheck {
    super::verify_stored(store, record, &Trust::keys(keys.to_vec()))
}

/// [`super::judge`] with keys only.
fn judge(digest: &Digest, outcomes: Outcomes, keys: &[TrustedKey]) -> SignatureCheck {
    super::judge(digest, outcomes, &Trust::keys(keys.to_vec()))
}

fn blob(store: &Store, data: &[u8]) -> BlobRef {
    let d = Digest::of(data);
    store
        .write_blob(&d, data, &Target::new("r", "a", d.as_str()))
        .unwrap();
    BlobRef {
        digest: d,
        size: data.len() as u64,
        media_type: "x".into(),
    }
}

fn image(store: &Store) -> ImageRecord {
    let manifest = blob(store, b"image manifest");
    let config = blob(store, b"image config");
    records::sample("r/a:1", manifest, config, vec![])
}

/// A bundle signed by `key` for `signs`, attached (its referrer's subject) to `subject`,
/// stored and recorded as found for `subject`.
fn attach(
    store: &Store,
    record: &mut ImageRecord,
    key: &SigningKey,
    signs: &Digest,
    subject: &Digest,
) {
    let bundle = sign_bundle("r/a", signs.as_str(), key).unwrap();
    let subject_desc = crate::image::manifest::Descriptor {
        media_type: crate::image::manifest::OCI_MANIFEST.into(),
        digest: subject.clone(),
        size: 14,
        platform: None,
        urls: None,
        annotations: None,
        artifact_type: None,
    };
    let art = build_referrer(bundle, &subject_desc, "2026-12-04T20:00:00Z").unwrap();
    record.bundles.push(BundleRecord {
        signed: subject.clone(),
        found: ReferrersSource::Tag,
        manifest: blob(store, &art.manifest),
        bundle: blob(store, &art.bundle),
        refreshed: None,
    });
}

fn keys(names: &[&str]) -> (Vec<SigningKey>, Vec<TrustedKey>) {
    names
        .iter()
        .map(|n| {
            let k = SigningKey::generate(*n).unwrap();
            let p = k.public_key().unwrap();
            (k, p)
        })
        .unzip()
}

#[test]
fn a_stored_bundle_verifies_with_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (signing, trusted) = keys(&["release.pub", "other.pub"]);
    let mut record = image(&store);
    let digest = record.digest.clone();
    attach(&store, &mut record, &signing[0], &digest, &digest);

    match verify_stored(&store, &record, &trusted) {
        SignatureCheck::Verified(v) => {
            assert_eq!(v.keys, ["release.pub"]);
            assert!(v.unchecked.is_empty(), "{v:?}");
            // Reports that print the key names read it as the list.
            assert_eq!(v.join(", "), "release.pub");
            assert_eq!(
                serde_json::to_value(&v).unwrap(),
                serde_json::json!(["release.pub"])
            );
        }
        other => panic!("{other:?}"),
    }
    // Another key: refused, saying the legacy signature is absent and what the bundle said.
    let SignatureCheck::Failed(why) = verify_stored(&store, &record, &trusted[1..]) else {
        panic!("verified with the wrong key");
    };
    let manifest = record.bundles[0].manifest.digest.as_str();
    assert!(
        why.contains(&format!(
            "no legacy signature `sha256-{}.sig`",
            digest.hex()
        )),
        "{why}"
    );
    assert!(
        why.contains(&format!("sigstore bundle {manifest}: ")),
        "{why}"
    );
    assert!(why.contains("other.pub"), "{why}");

    // Two signers: either key verifies, both are listed when both are trusted.
    attach(&store, &mut record, &signing[1], &digest, &digest);
    let SignatureCheck::Verified(v) = verify_stored(&store, &record, &trusted[1..]) else {
        panic!("the second signer's bundle does not verify");
    };
    assert_eq!(v.keys, ["other.pub"]);
    let SignatureCheck::Verified(v) = verify_stored(&store, &record, &trusted) else {
        panic!();
    };
    assert_eq!(v.keys, ["other.pub", "release.pub"]);
}

#[test]
fn a_bundle_must_sign_the_digest_berth_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (signing, trusted) = keys(&["release.pub"]);
    let mut record = image(&store);
    let digest = record.digest.clone();
    let other = Digest::of(b"another image");

    // Signs another image, though attached to this one.
    attach(&store, &mut record, &signing[0], &other, &digest);
    let SignatureCheck::Failed(why) = verify_stored(&store, &record, &trusted) else {
        panic!("a bundle of another image verified");
    };
    assert!(
        why.contains(other.as_str()) && why.contains(digest.as_str()),
        "{why}"
    );

    // A bundle of another digest (found for it, attached to it): not this image's.
    record.bundles.clear();
    attach(&store, &mut record, &signing[0], &other, &other);
    let SignatureCheck::Failed(why) = verify_stored(&store, &record, &trusted) else {
        panic!("a bundle of another image verified");
    };
    assert!(why.contains(&format!("(found for {other})")), "{why}");

    // A record whose referrer manifest names another subject than it was found for.
    record.bundles[0].signed = digest.clone();
    let SignatureCheck::Failed(why) = verify_stored(&store, &record, &trusted) else {
        panic!("a referrer of another subject verified");
    };
    assert!(
        why.contains(&format!("refers to {other}, not to {digest}")),
        "{why}"
    );
}

#[test]
fn nothing_stored_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (_, trusted) = keys(&["release.pub"]);
    let record = image(&store);
    let SignatureCheck::Failed(why) = verify_stored(&store, &record, &trusted) else {
        panic!();
    };
    assert_eq!(
        why,
        format!(
            "no signature was found in the registry (neither `sha256-{}.sig` nor a sigstore bundle referrer; keys tried: release.pub)",
            record.digest.hex()
        )
    );
}

#[test]
fn any_signature_verifies_and_what_was_not_checked_is_kept() {
    let digest = Digest::of(b"image");
    let key = |name: &str| Voucher::Key {
        name: name.into(),
        fingerprint: String::new(),
    };
    let verified = |name: &str, unchecked: &[&str]| BundleVerified {
        voucher: key(name),
        log_index: None,
        signed_at: Vec::new(),
        unchecked: unchecked.iter().map(|s| s.to_string()).collect(),
    };
    let bundle = |result| BundleOutcome {
        manifest: Digest::of(b"referrer"),
        signed: digest.clone(),
        result,
    };
    let outcomes = Outcomes {
        legacy: Some(Ok(vec![key("b.pub"), key("a.pub")])),
        legacy_tag: None,
        bundles: vec![
            bundle(Ok(verified("b.pub", &["transparency-log entry"]))),
            bundle(Err(NotVerified::NoneVerified)),
            bundle(Ok(verified(
                "a.pub",
                &["timestamp", "transparency-log entry"],
            ))),
        ],
    };
    let SignatureCheck::Verified(v) = judge(&digest, outcomes, &[]) else {
        panic!();
    };
    assert_eq!(v.keys, ["a.pub", "b.pub"]);
    assert_eq!(v.vouchers, [key("a.pub"), key("b.pub")]);
    assert_eq!(v.unchecked, ["timestamp", "transparency-log entry"]);

    // Nothing verified: the legacy signature's reason and each bundle's.
    let outcomes = Outcomes {
        legacy: Some(Err(NotVerified::NoneVerified)),
        legacy_tag: None,
        bundles: vec![],
    };
    let SignatureCheck::Failed(why) = judge(&digest, outcomes, &[]) else {
        panic!();
    };
    assert_eq!(
        why,
        format!(
            "legacy signature `sha256-{}.sig`: no signature verified; no sigstore bundle referrer",
            digest.hex()
        )
    );

    // A legacy signature read from another tag (a platform manifest's) is named by it.
    let outcomes = Outcomes {
        legacy: Some(Err(NotVerified::NoneVerified)),
        legacy_tag: Some("sha256-0123.sig".into()),
        bundles: vec![],
    };
    let SignatureCheck::Failed(why) = judge(&digest, outcomes, &[]) else {
        panic!();
    };
    assert!(
        why.starts_with("legacy signature `sha256-0123.sig`: "),
        "{why}"
    );
}
