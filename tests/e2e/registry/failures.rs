//! Failure paths: auth, integrity, interrupted downloads, retries, mirrors, 404s.

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::registry::proxy::{Proxy, ProxyOptions};
use berth_e2e::registry::{RegistryOptions, TestRegistry, docker_config};

use super::{berth_in, blob_in_store, json, pull_json, setup};

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
    assert_eq!(json(&run)["image"]["digest"], digest.as_str());

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
    assert_eq!(json(&run)["image"]["digest"], digest.as_str());
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
