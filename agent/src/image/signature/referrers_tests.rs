//! Bundle referrers: the manifest `berth sign` writes has the layout of the fixtures
//! README (`cosign-bundle/`), is accepted back, and everything else is refused with
//! its reason; the fallback index only ever grows.

use serde_json::{Value, json};

use super::*;

/// `sha256:` of `{}`, as image-spec gives it.
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn d(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn image() -> Descriptor {
    Descriptor {
        media_type: OCI_MANIFEST.to_string(),
        digest: d('1'),
        size: 1234,
        platform: None,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

fn built() -> ReferrerArtifact {
    build_referrer(
        br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#.to_vec(),
        &image(),
        "2026-12-04T20:00:00Z",
    )
    .unwrap()
}

#[test]
fn the_empty_config_is_what_image_spec_says() {
    assert_eq!(Digest::of(EMPTY_JSON).as_str(), EMPTY_DIGEST);
    assert_eq!(EMPTY_JSON.len(), 2);
}

#[test]
fn the_referrer_manifest_has_cosigns_layout() {
    let art = built();
    let m: Value = serde_json::from_slice(&art.manifest).unwrap();
    assert_eq!(art.digest, Digest::of(&art.manifest));
    assert_eq!(
        m,
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                        "digest": Digest::of(&art.bundle).as_str(), "size": art.bundle.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": d('1').as_str(), "size": 1234},
            "annotations": {
                "dev.sigstore.bundle.content": "dsse-envelope",
                "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
                "org.opencontainers.image.created": "2026-12-04T20:00:00Z",
            },
        })
    );
    // The index entry: what the referrers API would list for it.
    let entry = serde_json::to_value(&art.entry).unwrap();
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    assert_eq!(entry["digest"], art.digest.as_str());
    assert_eq!(entry["size"], art.manifest.len());
    assert_eq!(entry["artifactType"], BUNDLE_MEDIA_TYPE);
    assert_eq!(entry["annotations"], m["annotations"]);
    // And it is accepted back as a bundle referrer of the image.
    let layer = check_referrer(&art.manifest, &art.digest, &d('1')).unwrap();
    assert_eq!(layer.digest, Digest::of(&art.bundle));
}

/// `manifest` with `edit` applied, checked as a referrer of the image.
fn check_edited(edit: impl FnOnce(&mut Value)) -> Result<Descriptor, ReferrersError> {
    let mut m: Value = serde_json::from_slice(&built().manifest).unwrap();
    edit(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    check_referrer(&bytes, &Digest::of(&bytes), &d('1'))
}

#[test]
fn older_writers_name_the_type_in_the_config() {
    let layer = check_edited(|m| {
        m.as_object_mut().unwrap().remove("artifactType");
        m["config"]["mediaType"] = json!(BUNDLE_MEDIA_TYPE);
        m.as_object_mut().unwrap().remove("mediaType");
    });
    assert!(layer.is_ok(), "{layer:?}");
}

#[test]
fn other_referrers_are_refused_each_with_its_reason() {
    let why = |edit: fn(&mut Value)| check_edited(edit).unwrap_err().to_string();
    // Another image's bundle, or none named.
    let e = why(|m| m["subject"]["digest"] = json!(format!("sha256:{}", "2".repeat(64))));
    assert!(
        e.contains(&format!(
            "refers to sha256:{}, not to {}",
            "2".repeat(64),
            d('1')
        )),
        "{e}"
    );
    let e = why(|m| {
        m.as_object_mut().unwrap().remove("subject");
    });
    assert!(e.contains("refers to no subject"), "{e}");
    // An SBOM or an attestation store, not a bundle.
    let e = why(|m| m["artifactType"] = json!("application/spdx+json"));
    assert!(
        e.contains("artifact type is `application/spdx+json`"),
        "{e}"
    );
    // An index, a schema 1 document.
    let e = why(|m| m["mediaType"] = json!(OCI_INDEX));
    assert!(
        e.contains("media type is `application/vnd.oci.image.index.v1+json`"),
        "{e}"
    );
    let e = why(|m| m["schemaVersion"] = json!(1));
    assert!(e.contains("schemaVersion is 1"), "{e}");
    // Not exactly one bundle layer, or one too large to read.
    let e = why(|m| {
        let l = m["layers"][0].clone();
        m["layers"].as_array_mut().unwrap().push(l);
    });
    assert!(e.contains("2 layers"), "{e}");
    let e = why(|m| m["layers"] = json!([]));
    assert!(e.contains("0 layers"), "{e}");
    let e = why(|m| m["layers"][0]["mediaType"] = json!("application/vnd.in-toto+json"));
    assert!(
        e.contains("layer has media type `application/vnd.in-toto+json`"),
        "{e}"
    );
    let e = why(|m| m["layers"][0]["size"] = json!(2 << 20));
    assert!(e.contains("declares 2097152 bytes"), "{e}");
    // Not JSON of a manifest at all.
    let e = check_referrer(b"{\"manifests\":[]}", &d('3'), &d('1')).unwrap_err();
    assert!(e.to_string().contains(d('3').as_str()), "{e}");
}

/// An index tagged `sha256-<hex>` as cosign and oras leave it: another signer's
/// bundle, an SBOM with fields berth does not know, and an index annotation.
fn existing_index() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d('a').as_str(), "size": 700,
             "artifactType": BUNDLE_MEDIA_TYPE,
             "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"}},
            {"mediaType": OCI_MANIFEST, "digest": d('b').as_str(), "size": 500,
             "artifactType": "application/spdx+json", "data": "e30=", "x-vendor": {"k": 1}},
        ],
        "annotations": {"org.example": "kept"},
    }))
    .unwrap()
}

#[test]
fn the_fallback_index_keeps_every_referrer_already_listed() {
    let art = built();
    let tag = "sha256-1111";
    let fresh: Value =
        serde_json::from_slice(&merge_index(tag, None, &art.entry).unwrap()).unwrap();
    assert_eq!(fresh["schemaVersion"], 2);
    assert_eq!(fresh["mediaType"], OCI_INDEX);
    assert_eq!(fresh["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(fresh["manifests"][0]["digest"], art.digest.as_str());

    let old = existing_index();
    let merged = merge_index(tag, Some(&old), &art.entry).unwrap();
    let v: Value = serde_json::from_slice(&merged).unwrap();
    let before: Value = serde_json::from_slice(&old).unwrap();
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(
        list[..2],
        before["manifests"].as_array().unwrap()[..],
        "kept as they were"
    );
    assert_eq!(list[2]["digest"], art.digest.as_str());
    assert_eq!(list[2]["artifactType"], BUNDLE_MEDIA_TYPE);
    assert_eq!(v["annotations"]["org.example"], "kept");

    // The same referrer again: the index is left byte for byte.
    assert_eq!(merge_index(tag, Some(&merged), &art.entry).unwrap(), merged);
}

#[test]
fn the_fallback_tag_is_never_overwritten_with_something_else() {
    let entry = built().entry;
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {}, "layers": []}))
    .unwrap();
    let e = merge_index("sha256-x", Some(&manifest), &entry).unwrap_err();
    assert!(
        e.to_string().contains("sha256-x is not an OCI image index"),
        "{e}"
    );
    let e = merge_index("sha256-x", Some(br#"{"schemaVersion":2}"#), &entry).unwrap_err();
    assert!(e.to_string().contains("no `manifests`"), "{e}");
    let e = merge_index(
        "sha256-x",
        Some(br#"{"schemaVersion":1,"manifests":[]}"#),
        &entry,
    )
    .unwrap_err();
    assert!(e.to_string().contains("schemaVersion is 1"), "{e}");
    assert!(merge_index("sha256-x", Some(b"not json"), &entry).is_err());
    // No mediaType is allowed (OCI makes it optional).
    assert!(
        merge_index(
            "sha256-x",
            Some(br#"{"schemaVersion":2,"manifests":[]}"#),
            &entry
        )
        .is_ok()
    );
}
