//! `berth image` against a real `docker-registry` on loopback: pulls by tag and

#![allow(clippy::unwrap_used)]
//! digest, platform selection, images made by umoci and copied by skopeo, Basic and
//! Bearer auth, integrity failures, resumed downloads, retries, mirrors, rm and prune.

use std::path::Path;

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::registry::proxy::{Proxy, ProxyOptions};
use berth_e2e::registry::{RegistryOptions, TestRegistry, docker_config};
use berth_e2e::{Run, berth, have_tools};
use serde_json::Value;

/// Runs `berth --state-dir STATE ARGS` with `DOCKER_CONFIG` pointing at `docker_config`
/// (or at an empty directory, so the host's own credentials never leak in).
fn berth_in(state: &Path, docker_config: Option<&Path>, args: &[&str]) -> Run {
    let empty = state.join("no-docker-config");
    let out = berth()
        .current_dir(state)
        .env("DOCKER_CONFIG", docker_config.unwrap_or(&empty))
        .env_remove("HOME")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run berth: {e}"));
    Run::from(out)
}

fn json(run: &Run) -> Value {
    assert_eq!(run.code, 0, "berth failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("bad json ({e}): {}", run.stdout))
}

fn pull_json(state: &Path, reference: &str, extra: &[&str]) -> Value {
    let mut args = vec!["image", "pull", reference, "--format", "json"];
    args.extend_from_slice(extra);
    json(&berth_in(state, None, &args))
}

fn blob_in_store(state: &Path, digest: &str) -> bool {
    state
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file()
}

fn setup() -> Option<(TestRegistry, tempfile::TempDir)> {
    if !fixture::have_busybox() {
        return None;
    }
    let reg = TestRegistry::start()?;
    Some((reg, tempfile::tempdir().unwrap()))
}

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
fn basic_auth_with_credentials_from_docker_config() {
    if !fixture::have_busybox() {
        return;
    }
    let opts = RegistryOptions {
        htpasswd: Some(("alice".into(), "s3cret".into())),
    };
    let Some(reg) = TestRegistry::start_with(opts) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "private/app", "v1", &image);
    let reference = format!("{}/private/app:v1", reg.host());

    let good = docker_config(&reg.host(), "alice", "s3cret");
    let run = berth_in(
        state.path(),
        Some(good.path()),
        &["image", "pull", &reference, "--format", "json"],
    );
    assert_eq!(json(&run)["digest"], digest.as_str());

    let fresh = tempfile::tempdir().unwrap();
    let bad = docker_config(&reg.host(), "alice", "wrong");
    let run = berth_in(
        fresh.path(),
        Some(bad.path()),
        &["image", "pull", &reference],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    for needle in [
        "401",
        &reg.host(),
        "private/app",
        "v1",
        "rejected the credentials",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing `{needle}` in: {}",
            run.stderr
        );
    }
    assert!(
        !run.stderr.contains("wrong"),
        "password leaked: {}",
        run.stderr
    );

    let run = berth_in(fresh.path(), None, &["image", "pull", &reference]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("no credentials are configured"),
        "{}",
        run.stderr
    );
}

#[test]
fn bearer_token_flow_with_one_token_per_repository_scope() {
    let Some((reg, state)) = setup() else { return };
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "team/app", "v1", &image);
    let proxy = Proxy::start(
        reg.addr(),
        ProxyOptions {
            bearer: Some(("bob".into(), "hunter2".into())),
            ..ProxyOptions::default()
        },
    );
    let reference = format!("{}/team/app:v1", proxy.host());

    let creds = docker_config(&proxy.host(), "bob", "hunter2");
    let run = berth_in(
        state.path(),
        Some(creds.path()),
        &["image", "pull", &reference, "--format", "json"],
    );
    assert_eq!(json(&run)["digest"], digest.as_str());
    // Manifest, config, two layers and the signature lookup share one token.
    assert_eq!(proxy.token_requests(), 1, "{:#?}", proxy.log());

    let bad = docker_config(&proxy.host(), "bob", "nope");
    let fresh = tempfile::tempdir().unwrap();
    let run = berth_in(
        fresh.path(),
        Some(bad.path()),
        &["image", "pull", &reference],
    );
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("token server")
            && run.stderr.contains("team/app")
            && run.stderr.contains("401"),
        "{}",
        run.stderr
    );
}

#[test]
fn tampered_blob_is_rejected_and_nothing_is_stored() {
    let Some((reg, state)) = setup() else { return };
    let image = fixture::busybox(&ImageSpec::default());
    fixture::push(&reg, "evil/app", "v1", &image);
    let layer = &image.layers[0];
    let path = reg.blob_data(&layer.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let run = berth_in(
        state.path(),
        None,
        &["image", "pull", &format!("{}/evil/app:v1", reg.host())],
    );
    assert_eq!(run.code, 1, "integrity failures exit 1: {}", run.stderr);
    assert!(
        run.stderr.contains(&layer.digest) && run.stderr.contains("does not match"),
        "{}",
        run.stderr
    );
    assert!(!blob_in_store(state.path(), &layer.digest));
    // Other layers' interrupted downloads may stay for a later resume; the bad one may not.
    for entry in std::fs::read_dir(state.path().join("content/ingest")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.starts_with(&layer.digest[7..]),
            "partial of the tampered blob kept: {name}"
        );
    }
    assert_eq!(
        json(&berth_in(
            state.path(),
            None,
            &["image", "ls", "--format", "json"]
        )),
        serde_json::json!([])
    );
}

#[test]
fn interrupted_download_resumes_with_range() {
    let Some((reg, state)) = setup() else { return };
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "flaky/app", "v1", &image);
    let big = &image.layers[0];
    assert!(
        big.blob.len() > 300_000,
        "busybox layer too small for this test"
    );
    let opts = ProxyOptions {
        cut: Some((big.digest.clone(), 200_000)),
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(reg.addr(), opts);

    let pulled = pull_json(state.path(), &format!("{}/flaky/app:v1", proxy.host()), &[]);
    assert_eq!(pulled["digest"], digest.as_str());
    let stored = std::fs::read(
        state
            .path()
            .join("content/blobs/sha256")
            .join(&big.digest[7..]),
    )
    .unwrap();
    assert_eq!(fixture::sha256(&stored), big.digest);
    let gets: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET") && l.contains(&big.digest))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert!(!gets[0].contains("range="), "{gets:#?}");
    assert!(
        gets[1].contains("range=bytes=") && !gets[1].contains("range=bytes=0-"),
        "resumed mid-blob: {gets:#?}"
    );
}

#[test]
fn retries_on_429_with_retry_after_and_on_503() {
    let Some((reg, state)) = setup() else { return };
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "busy/app", "v1", &image);
    for (status, retry_after) in [(429, Some(1)), (503, None)] {
        let opts = ProxyOptions {
            fail: Some(("/manifests/v1".into(), status, 2, retry_after)),
            ..ProxyOptions::default()
        };
        let proxy = Proxy::start(reg.addr(), opts);
        let started = std::time::Instant::now();
        let pulled = pull_json(
            state.path(),
            &format!("{}/busy/app:v1", proxy.host()),
            &["--no-signature"],
        );
        assert_eq!(pulled["digest"], digest.as_str());
        let tries = proxy
            .log()
            .iter()
            .filter(|l| l.contains("/manifests/v1"))
            .count();
        assert_eq!(tries, 3, "{status}: {:#?}", proxy.log());
        if retry_after.is_some() {
            assert!(
                started.elapsed() >= std::time::Duration::from_secs(2),
                "Retry-After honoured"
            );
        }
    }
    // A registry that never recovers: a clear, transient-looking error.
    let opts = ProxyOptions {
        fail: Some(("/manifests/v1".into(), 503, 100, None)),
        ..ProxyOptions::default()
    };
    let proxy = Proxy::start(reg.addr(), opts);
    let run = berth_in(
        state.path(),
        None,
        &["image", "pull", &format!("{}/busy/app:v1", proxy.host())],
    );
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("answered 503") && run.stderr.contains("busy/app"),
        "{}",
        run.stderr
    );
}

#[test]
fn mirror_is_tried_first_then_the_registry() {
    let Some((upstream, state)) = setup() else {
        return;
    };
    let Some(mirror) = TestRegistry::start() else {
        return;
    };
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&upstream, "lib/app", "v1", &image);
    let up = Proxy::start(upstream.addr(), ProxyOptions::default());
    let mp = Proxy::start(mirror.addr(), ProxyOptions::default());
    let reference = format!("{}/lib/app:v1", up.host());
    let flag = format!("{}=http://{}", up.host(), mp.host());

    // The mirror lacks the image: asked first, then the registry serves it.
    let pulled = pull_json(
        state.path(),
        &reference,
        &["--registry-mirror", &flag, "--no-signature"],
    );
    assert_eq!(pulled["digest"], digest.as_str());
    assert!(
        mp.log()
            .iter()
            .any(|l| l.contains("/v2/lib/app/manifests/v1")),
        "{:#?}",
        mp.log()
    );

    // Once the mirror has it, the registry is not asked at all.
    fixture::push(&mirror, "lib/app", "v1", &image);
    let before = up.log().len();
    let fresh = tempfile::tempdir().unwrap();
    let pulled = pull_json(
        fresh.path(),
        &reference,
        &["--registry-mirror", &flag, "--no-signature"],
    );
    assert_eq!(pulled["digest"], digest.as_str());
    assert_eq!(up.log().len(), before, "{:#?}", up.log());
}

#[test]
fn not_found_names_registry_repository_and_reference() {
    let Some((reg, state)) = setup() else { return };
    let run = berth_in(
        state.path(),
        None,
        &["image", "pull", &format!("{}/no/such:v9", reg.host())],
    );
    assert_eq!(run.code, 3);
    for needle in [
        "v9 not found in repository no/such on registry",
        &reg.host(),
        "404",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing `{needle}`: {}",
            run.stderr
        );
    }
    let run = berth_in(state.path(), None, &["image", "pull", "bad//reference"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
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
