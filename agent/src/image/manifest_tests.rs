use super::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn image_json(media_type: Option<&str>, config_type: &str, layer_type: &str) -> String {
    let mt = media_type
        .map(|m| format!(r#""mediaType":"{m}","#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{config_type}","digest":"{D1}","size":100}},
        "layers":[{{"mediaType":"{layer_type}","digest":"{D2}","size":2048}}]}}"#
    )
}

fn index_json(media_type: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[
        {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":500,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}},
        {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":500,"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#
    )
}

#[test]
fn parses_all_four_media_types() {
    let oci = image_json(
        Some(OCI_MANIFEST),
        OCI_CONFIG,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let (m, mt) = parse_manifest(oci.as_bytes(), None).unwrap();
    assert_eq!(mt, OCI_MANIFEST);
    let Manifest::Image(m) = m else {
        panic!("not an image")
    };
    assert_eq!(m.layers[0].size, 2048);
    m.check_image().unwrap();

    let docker = image_json(
        Some(DOCKER_MANIFEST),
        DOCKER_CONFIG,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    let (m, mt) = parse_manifest(docker.as_bytes(), Some(OCI_MANIFEST)).unwrap();
    assert_eq!(
        mt, DOCKER_MANIFEST,
        "the body's media type wins over the header"
    );
    let Manifest::Image(m) = m else {
        panic!("not an image")
    };
    m.check_image().unwrap();

    for kind in [OCI_INDEX, DOCKER_LIST] {
        let (m, mt) = parse_manifest(index_json(kind).as_bytes(), None).unwrap();
        assert_eq!(mt, kind);
        let Manifest::Index(i) = m else {
            panic!("not an index")
        };
        assert_eq!(i.manifests.len(), 2);
        let p = i.manifests[0].platform.as_ref().unwrap().normalized();
        assert_eq!(p.to_string(), "linux/arm/v7");
    }
}

#[test]
fn media_type_from_header_or_shape() {
    let bare = image_json(None, OCI_CONFIG, "application/vnd.oci.image.layer.v1.tar");
    let (_, mt) = parse_manifest(
        bare.as_bytes(),
        Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    )
    .unwrap();
    assert_eq!(mt, DOCKER_MANIFEST);
    let (_, mt) = parse_manifest(bare.as_bytes(), Some("application/json")).unwrap();
    assert_eq!(mt, OCI_MANIFEST);
    let idx = r#"{"schemaVersion":2,"manifests":[]}"#.to_string();
    let (_, mt) = parse_manifest(idx.as_bytes(), None).unwrap();
    assert_eq!(mt, OCI_INDEX);
}

#[test]
fn refuses_bad_manifests() {
    let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
    assert!(matches!(
        parse_manifest(schema1.as_bytes(), None),
        Err(ManifestError::SchemaOne)
    ));
    let odd = r#"{"schemaVersion":2,"mediaType":"application/vnd.example+json","config":{}}"#;
    assert!(
        matches!(parse_manifest(odd.as_bytes(), None), Err(ManifestError::UnsupportedType(t)) if t == "application/vnd.example+json")
    );
    assert!(matches!(
        parse_manifest(b"{not json", None),
        Err(ManifestError::Json { .. })
    ));
    let v3 = image_json(Some(OCI_MANIFEST), OCI_CONFIG, "x")
        .replace("\"schemaVersion\":2", "\"schemaVersion\":3");
    assert!(matches!(
        parse_manifest(v3.as_bytes(), None),
        Err(ManifestError::SchemaVersion(3))
    ));
    let bad_digest = image_json(Some(OCI_MANIFEST), OCI_CONFIG, "x").replace(D2, "sha256:zz");
    assert!(matches!(
        parse_manifest(bad_digest.as_bytes(), None),
        Err(ManifestError::Json { .. })
    ));

    // An artifact (cosign signature, SBOM) is not a container image.
    let artifact = image_json(
        Some(OCI_MANIFEST),
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "application/vnd.dev.cosign.simplesigning.v1+json",
    );
    let (Manifest::Image(m), _) = parse_manifest(artifact.as_bytes(), None).unwrap() else {
        panic!()
    };
    assert!(matches!(m.check_image(), Err(ManifestError::NotAnImage(_))));
    let foreign = image_json(
        Some(DOCKER_MANIFEST),
        DOCKER_CONFIG,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    );
    let (Manifest::Image(m), _) = parse_manifest(foreign.as_bytes(), None).unwrap() else {
        panic!()
    };
    assert!(matches!(
        m.check_image(),
        Err(ManifestError::UnsupportedLayer { .. })
    ));
}

#[test]
fn size_caps() {
    let mut big = image_json(
        Some(OCI_MANIFEST),
        OCI_CONFIG,
        "application/vnd.oci.image.layer.v1.tar",
    )
    .into_bytes();
    big.truncate(big.len() - 1);
    big.extend(std::iter::repeat_n(b' ', MAX_MANIFEST_BYTES as usize));
    big.push(b'}');
    let err = parse_manifest(&big, None).unwrap_err();
    assert!(
        err.to_string().contains("more than the 4194304 bytes"),
        "{err}"
    );

    let huge_config = image_json(
        Some(OCI_MANIFEST),
        OCI_CONFIG,
        "application/vnd.oci.image.layer.v1.tar",
    )
    .replace(
        "\"size\":100",
        &format!("\"size\":{}", MAX_CONFIG_BYTES + 1),
    );
    let (Manifest::Image(m), _) = parse_manifest(huge_config.as_bytes(), None).unwrap() else {
        panic!()
    };
    assert!(matches!(
        m.check_image(),
        Err(ManifestError::TooLarge {
            what: "image config",
            ..
        })
    ));
    assert!(check_size("x", MAX_CONFIG_BYTES, MAX_CONFIG_BYTES).is_ok());

    let mut cfg = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    cfg.extend(std::iter::repeat_n(b' ', MAX_CONFIG_BYTES as usize));
    assert!(matches!(
        ImageConfig::parse(&cfg, 0),
        Err(ManifestError::TooLarge { .. })
    ));
}

#[test]
fn config_parsing() {
    let cfg = format!(
        r#"{{"architecture":"arm64","os":"linux","config":{{"User":"10001","Cmd":["sh"]}},
        "rootfs":{{"type":"layers","diff_ids":["{D1}"]}},
        "history":[{{"created_by":"ADD busybox"}},{{"created_by":"CMD","empty_layer":true}}]}}"#
    );
    let c = ImageConfig::parse(cfg.as_bytes(), 1).unwrap();
    assert_eq!(c.platform().unwrap().to_string(), "linux/arm64/v8");
    assert_eq!(c.history.len(), 2);
    assert!(c.history[1].empty_layer);
    assert!(matches!(
        ImageConfig::parse(cfg.as_bytes(), 2),
        Err(ManifestError::LayerCount {
            layers: 2,
            diff_ids: 1
        })
    ));
}
