//! Pulling: tags, digests, platforms, umoci/skopeo images, signatures, rm and prune.

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::have_tools;

use super::{berth_in, blob_in_store, json, pull_json, setup};

#[test]
fn pull_by_tag_then_by_digest_without_the_registry() {
    let Some((reg, state)) = setup() else { return };
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "fixture/busybox", "v1", &image);
    let reference = format!("{}/fixture/busybox:v1", reg.host());

    let pulled = pull_json(state.path(), &reference, &[]);
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(pulled["config"]["digest"], image.config_digest.as_str());
    let layers = pulled["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (got, want) in layers.iter().zip(&image.layers) {
        assert_eq!(got["digest"], want.digest.as_str());
        assert_eq!(got["diff_id"], want.diff_id.as_str());
        let stored = std::fs::read(
            state
                .path()
                .join("content/blobs/sha256")
                .join(&want.digest[7..]),
        )
        .unwrap();
        assert_eq!(stored, want.blob);
    }
    assert!(
        blob_in_store(state.path(), &digest) && blob_in_store(state.path(), &image.config_digest)
    );
    assert_eq!(pulled["platform"]["architecture"], fixture::host_arch());

    // By digest, with the registry gone: served from the store.
    drop(reg);
    let by_digest = reference.replace(":v1", &format!("@{digest}"));
    let run = berth_in(state.path(), None, &["image", "pull", &by_digest]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("already present"), "{}", run.stdout);
    // A tag is always resolved again, so it fails now.
    let run = berth_in(state.path(), None, &["image", "pull", &reference]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot reach registry"),
        "{}",
        run.stderr
    );

    let ls = json(&berth_in(
        state.path(),
        None,
        &["image", "ls", "--format", "json"],
    ));
    let refs: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs,
        vec![reference.as_str(), by_digest.as_str()],
        "sorted by reference"
    );
    let text = berth_in(state.path(), None, &["image", "ls"]).stdout;
    assert!(
        text.starts_with("REFERENCE") && text.contains(&digest[7..19]),
        "{text}"
    );

    let inspect = json(&berth_in(
        state.path(),
        None,
        &["image", "inspect", &reference, "--format", "json"],
    ));
    assert_eq!(inspect["image_config"]["User"], "10001:10001");
    assert_eq!(inspect["history"].as_array().unwrap().len(), 3);
    let text = berth_in(state.path(), None, &["image", "inspect", &digest]).stdout;
    assert!(
        text.contains("history:") && text.contains(&image.layers[1].diff_id),
        "{text}"
    );
}

#[test]
fn pull_selects_the_platform_from_an_index_and_a_manifest_list() {
    let Some((reg, state)) = setup() else { return };
    for docker in [false, true] {
        let arch = |a: &str, v: Option<&str>| {
            let spec = ImageSpec {
                architecture: a.into(),
                variant: v.map(Into::into),
                docker,
                files: vec![("etc/arch".into(), format!("{a}{v:?}").into_bytes())],
                ..ImageSpec::default()
            };
            fixture::busybox(&spec)
        };
        let images = [
            arch("amd64", None),
            arch("arm64", Some("v8")),
            arch("arm", Some("v6")),
            arch("arm", Some("v7")),
        ];
        let repo = if docker { "multi/docker" } else { "multi/oci" };
        let index = fixture::push_index(&reg, repo, "latest", &images, docker);
        let reference = format!("{}/{repo}", reg.host());
        for (platform, want) in [
            ("linux/arm/v7", 3),
            ("linux/arm/v6", 2),
            ("linux/aarch64", 1),
            ("linux/x86_64", 0),
            ("linux/arm/v8", 3),
        ] {
            let pulled = pull_json(state.path(), &reference, &["--platform", platform]);
            assert_eq!(pulled["digest"], index.as_str(), "{platform}");
            assert_eq!(
                pulled["manifest"]["digest"],
                images[want].manifest_digest.as_str(),
                "{platform}"
            );
            assert_eq!(pulled["indexes"][0]["digest"], index.as_str());
        }
        let run = berth_in(
            state.path(),
            None,
            &["image", "pull", &reference, "--platform", "linux/s390x"],
        );
        assert_eq!(run.code, 3);
        assert!(
            run.stderr.contains("no manifest for platform linux/s390x")
                && run.stderr.contains("linux/arm/v7"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn pull_an_umoci_image_copied_with_skopeo() {
    if !have_tools(&["umoci", "skopeo"]) {
        return;
    }
    let Some((reg, state)) = setup() else { return };
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = format!("{}:v1", layout.display());
    let sh = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    sh(&["umoci", "init", "--layout", &layout.to_string_lossy()]);
    sh(&["umoci", "new", "--image", &image]);
    sh(&[
        "umoci",
        "insert",
        "--image",
        &image,
        "/bin/busybox",
        "/bin/busybox",
    ]);
    sh(&[
        "umoci",
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/busybox",
    ]);
    let dest = format!("docker://{}/umoci/busybox:v1", reg.host());
    sh(&[
        "skopeo",
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &dest,
    ]);
    let raw = sh(&["skopeo", "inspect", "--raw", "--tls-verify=false", &dest]);

    let pulled = pull_json(
        state.path(),
        &format!("{}/umoci/busybox:v1", reg.host()),
        &[],
    );
    assert_eq!(pulled["digest"], fixture::sha256(&raw).as_str());
    assert_eq!(pulled["layers"].as_array().unwrap().len(), 1);
    for layer in pulled["layers"].as_array().unwrap() {
        assert!(blob_in_store(
            state.path(),
            layer["digest"].as_str().unwrap()
        ));
    }
}

#[test]
fn pull_stores_the_cosign_signature() {
    let Some((reg, state)) = setup() else { return };
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "signed/app", "v1", &image);
    // A legacy cosign signature artifact (the payload and signature need not verify here).
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/signed/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        reg.host()
    );
    let config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let p = fixture::push_blob(&reg, "signed/app", payload.as_bytes());
    let c = fixture::push_blob(&reg, "signed/app", config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": p, "size": payload.len(),
                     "annotations": { "dev.cosignproject.cosign/signature": "MEUCIQ==" } }],
    });
    let tag = format!("sha256-{}.sig", &digest[7..]);
    let sig = fixture::push_manifest(
        &reg,
        "signed/app",
        &tag,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );

    let pulled = pull_json(state.path(), &format!("{}/signed/app:v1", reg.host()), &[]);
    assert_eq!(pulled["signature"]["tag"], tag.as_str());
    assert_eq!(pulled["signature"]["manifest"]["digest"], sig.as_str());
    for d in [&sig, &p, &c] {
        assert!(blob_in_store(state.path(), d), "{d}");
    }
    // Without a signature: no error, none recorded.
    fixture::push(&reg, "unsigned/app", "v1", &image);
    let pulled = pull_json(
        state.path(),
        &format!("{}/unsigned/app:v1", reg.host()),
        &[],
    );
    assert!(pulled["signature"].is_null());
}

#[test]
fn rm_and_prune_remove_only_what_nothing_uses() {
    let Some((reg, state)) = setup() else { return };
    let s = state.path();
    let a = fixture::busybox(&ImageSpec {
        files: vec![("etc/a".into(), b"a".to_vec())],
        ..ImageSpec::default()
    });
    let b = fixture::busybox(&ImageSpec {
        files: vec![("etc/b".into(), b"b".to_vec())],
        ..ImageSpec::default()
    });
    assert_eq!(
        a.layers[0].digest, b.layers[0].digest,
        "shared busybox layer"
    );
    fixture::push(&reg, "gc/a", "v1", &a);
    fixture::push(&reg, "gc/b", "v1", &b);
    let ra = format!("{}/gc/a:v1", reg.host());
    let rb = format!("{}/gc/b:v1", reg.host());
    pull_json(s, &ra, &[]);
    pull_json(s, &rb, &[]);
    let stray = fixture::sha256(b"stray");
    std::fs::write(s.join("content/blobs/sha256").join(&stray[7..]), b"stray").unwrap();
    std::fs::write(s.join("content/ingest/0123.partial"), b"half").unwrap();

    let rm = json(&berth_in(
        s,
        None,
        &["image", "rm", &ra, "--format", "json"],
    ));
    assert_eq!(rm["untagged"], serde_json::json!([ra]));
    let mut deleted: Vec<String> = rm["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    let mut want = vec![
        a.manifest_digest.clone(),
        a.config_digest.clone(),
        a.layers[1].digest.clone(),
    ];
    want.sort();
    assert_eq!(deleted, want);
    assert!(blob_in_store(s, &a.layers[0].digest), "shared layer kept");
    assert!(blob_in_store(s, &stray), "rm leaves unrelated blobs");
    let run = berth_in(s, None, &["image", "rm", &ra]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("no image"), "{}", run.stderr);

    let pruned = json(&berth_in(s, None, &["image", "prune", "--format", "json"]));
    assert_eq!(pruned["removed"], serde_json::json!([stray]));
    assert_eq!(pruned["partials"], 1);
    for d in [
        &b.manifest_digest,
        &b.config_digest,
        &b.layers[0].digest,
        &b.layers[1].digest,
    ] {
        assert!(blob_in_store(s, d), "{d}");
    }
    // The remaining image is intact and inspectable.
    let inspect = json(&berth_in(
        s,
        None,
        &["image", "inspect", &rb, "--format", "json"],
    ));
    assert_eq!(inspect["digest"], b.manifest_digest.as_str());
}
