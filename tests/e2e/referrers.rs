//! Sigstore bundles as OCI 1.1 referrers (cosign 3's layout) against Debian's
//! `docker-registry`, which has no referrers API: `berth sign` pushes the bundle, the
//! empty config and the referrer manifest, and lists it in the `sha256-<hex>` index;
//! `berth image pull` finds it there and verifies it under enforce; `berth image
//! verify` checks it from the store and from the registry. What `sign` pushed is read
//! back by independent tools: `skopeo inspect --raw` for the manifest and index shapes
//! (fixtures README, `cosign-bundle/`), Python's `cryptography` for the DSSE signature
//! over the pre-authentication encoding.
//!
//! Debian packages: `docker-registry`, `skopeo`, `python3-cryptography`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::{Run, have_tools};
use serde_json::Value;

use crate::registry::{berth_in, setup};

const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// `skopeo inspect --raw` of `repo@reference` (a tag or digest) on the plain-http registry.
fn skopeo_raw(host: &str, repo: &str, reference: &str) -> Value {
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    let image = format!("docker://{host}/{repo}{sep}{reference}");
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &image])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A node configuration trusting `key` in enforce mode, the registry plain http.
fn enforcing(dir: &Path, key: &Path, host: &str) -> String {
    let path = dir.join(format!(
        "enforce-{}.toml",
        key.file_stem().unwrap().to_string_lossy()
    ));
    let text = format!(
        "[policy]\nmode = \"enforce\"\ntrusted_keys = [{:?}]\n[registries.\"{host}\"]\ninsecure = true\n",
        key.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn pull(state: &Path, config: &str, reference: &str) -> Run {
    berth_in(
        state,
        None,
        &["--config", config, "image", "pull", reference],
    )
}

fn verify(state: &Path, reference: &str, key: &Path, remote: bool) -> Run {
    let key = key.to_string_lossy();
    let mut args = vec!["image", "verify", reference, "--key", &key];
    if remote {
        args.push("--remote");
    }
    berth_in(state, None, &args)
}

fn sign(state: &Path, reference: &str, key: &Path, extra: &[&str]) -> Run {
    let key = key.to_string_lossy();
    let mut args = vec!["sign", reference, "--key", &key];
    args.extend_from_slice(extra);
    let run = berth_in(state, None, &args);
    assert_eq!(run.code, 0, "{run:?}");
    run
}

fn snapshots(state: &Path) -> usize {
    std::fs::read_dir(state.join("snapshots")).map_or(0, |d| d.count())
}

/// Checks the bundle's DSSE signature with Python's `cryptography` (fetching the
/// referrer manifest and the bundle blob itself), and the statement it signs.
fn python_verifies(host: &str, repo: &str, referrer: &str, public: &Path, digest: &str) {
    let script = r#"
import base64, hashlib, json, sys, urllib.request
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
host, repo, referrer, public, digest = sys.argv[1:]
def get(path, accept):
    req = urllib.request.Request(f"http://{host}/v2/{repo}/{path}", headers={"Accept": accept})
    return urllib.request.urlopen(req).read()
manifest = json.loads(get(f"manifests/{referrer}", "application/vnd.oci.image.manifest.v1+json"))
layer = manifest["layers"][0]["digest"]
blob = get(f"blobs/{layer}", "*/*")
assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer
bundle = json.loads(blob)
assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json", bundle["mediaType"]
env = bundle["dsseEnvelope"]
payload = base64.b64decode(env["payload"])
ptype = env["payloadType"].encode()
pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
key = serialization.load_pem_public_key(open(public, "rb").read())
key.verify(base64.b64decode(env["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256()))
statement = json.loads(payload)
assert env["payloadType"] == "application/vnd.in-toto+json"
assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1", statement
assert statement["subject"][0]["digest"]["sha256"] == digest.split(":")[1], statement
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script, host, repo, referrer])
        .arg(public)
        .arg(digest)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sign_pull_and_verify_a_bundle_referrer_without_the_referrers_api() {
    if !have_tools(&["skopeo", "python3"]) {
        return;
    }
    let Some((reg, state)) = setup() else { return };
    let (state, host) = (state.path(), reg.host());
    let keys = tempfile::tempdir().unwrap();
    let key = |name: &str| -> (PathBuf, PathBuf) {
        let prefix = keys.path().join(name);
        let run = berth_in(state, None, &["key", "generate", &prefix.to_string_lossy()]);
        assert_eq!(run.code, 0, "{run:?}");
        (prefix.with_extension("key"), prefix.with_extension("pub"))
    };
    let (release_key, release_pub) = key("release");
    let (other_key, other_pub) = key("other");
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "shop/bundled", "v1", &image);
    let reference = format!("{host}/shop/bundled:v1");
    let index_tag = format!("sha256-{}", &digest[7..]);

    // The new format by default, and where it went.
    let run = sign(state, &reference, &release_key, &["--format", "json"]);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["format"], "bundle", "{out}");
    assert_eq!(out["digest"], digest.as_str());
    assert_eq!(out["referrers_index_tag"], index_tag.as_str(), "{out}");
    let first = out["signature_manifest"].as_str().unwrap().to_string();

    // The referrer manifest and the index as another client reads them.
    let m = skopeo_raw(&host, "shop/bundled", &first);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], BUNDLE);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_eq!(m["config"]["size"], 2);
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(m["layers"][0]["mediaType"], BUNDLE);
    assert_eq!(m["subject"]["digest"], digest.as_str());
    assert_eq!(m["subject"]["size"], image.manifest.len());
    assert_eq!(m["subject"]["mediaType"], image.media_type.as_str());
    let a = &m["annotations"];
    assert_eq!(a["dev.sigstore.bundle.content"], "dsse-envelope");
    assert_eq!(
        a["dev.sigstore.bundle.predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    assert!(
        a["org.opencontainers.image.created"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{a}"
    );
    let index = skopeo_raw(&host, "shop/bundled", &index_tag);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"][0]["digest"], first.as_str());
    assert_eq!(index["manifests"][0]["artifactType"], BUNDLE);
    assert_eq!(index["manifests"][0]["annotations"], m["annotations"]);
    python_verifies(&host, "shop/bundled", &first, &release_pub, &digest);

    // Enforce, the key trusted: pulled and verified; from the store and the registry.
    let trusting_release = enforcing(keys.path(), &release_pub, &host);
    let run = pull(state, &trusting_release, &reference);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("signature verified by") && run.stdout.contains("release.pub"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("signature: 1 sigstore bundle(s) (found via tag)"),
        "{run:?}"
    );
    for remote in [false, true] {
        let run = verify(state, &reference, &release_pub, remote);
        assert_eq!(run.code, 0, "remote {remote}: {run:?}");
    }

    // Another key trusted: refused, nothing unpacked, and the reason says why.
    let fresh = tempfile::tempdir().unwrap();
    let trusting_other = enforcing(keys.path(), &other_pub, &host);
    let run = pull(fresh.path(), &trusting_other, &reference);
    assert_eq!(run.code, 1, "{run:?}");
    for needle in [
        "not signed by a trusted key",
        "sigstore bundle",
        &first,
        "other.pub",
    ] {
        assert!(run.stderr.contains(needle), "missing {needle}: {run:?}");
    }
    assert_eq!(snapshots(fresh.path()), 0, "unpacked although refused");
    let run = verify(state, &reference, &other_pub, true);
    assert_eq!(run.code, 1, "{run:?}");

    // A second signer: both referrers listed, either key verifies.
    let run = sign(state, &reference, &other_key, &[]);
    assert!(
        run.stdout.contains("sigstore bundle")
            && run.stdout.contains(&format!("shop/bundled:{index_tag}"))
            && run
                .stdout
                .contains(&format!("refreshed the signature stored with {reference}")),
        "{run:?}"
    );
    let index = skopeo_raw(&host, "shop/bundled", &index_tag);
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{index}");
    assert_eq!(listed[0], first, "the first referrer was dropped: {index}");
    for public in [&release_pub, &other_pub] {
        for remote in [false, true] {
            let run = verify(state, &reference, public, remote);
            assert_eq!(run.code, 0, "{} remote {remote}: {run:?}", public.display());
        }
    }
    let run = pull(fresh.path(), &trusting_other, &reference);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(snapshots(fresh.path()) > 0);

    // --legacy still writes the `.sig` layout, which still verifies.
    let legacy = fixture::busybox(&ImageSpec {
        files: vec![("etc/legacy".into(), b"1".to_vec())],
        ..ImageSpec::default()
    });
    let legacy_digest = fixture::push(&reg, "shop/legacy", "v1", &legacy);
    let legacy_ref = format!("{host}/shop/legacy:v1");
    let run = sign(state, &legacy_ref, &release_key, &["--legacy"]);
    let sig_tag = format!("sha256-{}.sig", &legacy_digest[7..]);
    assert!(run.stdout.contains(&sig_tag), "{run:?}");
    let sig = skopeo_raw(&host, "shop/legacy", &sig_tag);
    assert_eq!(
        sig["layers"][0]["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let run = pull(state, &trusting_release, &legacy_ref);
    assert_eq!(run.code, 0, "{run:?}");
    for remote in [false, true] {
        let run = verify(state, &legacy_ref, &release_pub, remote);
        assert_eq!(run.code, 0, "remote {remote}: {run:?}");
    }
}

/// An image refused under enforce because nobody had signed it yet runs once it is
/// signed: a pinned image is served from the store, and its signatures are fetched
/// again when what the store holds does not verify.
#[test]
fn a_pinned_image_signed_after_its_refusal_is_then_accepted() {
    let Some((reg, state)) = setup() else { return };
    let (state, host) = (state.path(), reg.host());
    let keys = tempfile::tempdir().unwrap();
    let prefix = keys.path().join("late");
    let run = berth_in(state, None, &["key", "generate", &prefix.to_string_lossy()]);
    assert_eq!(run.code, 0, "{run:?}");
    let (key, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "shop/late", "v1", &image);
    let pinned = format!("{host}/shop/late@{digest}");
    let config = enforcing(keys.path(), &public, &host);

    let refused = pull(state, &config, &pinned);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("no signature was found"),
        "{refused:?}"
    );
    assert_eq!(snapshots(state), 0, "nothing unpacked");
    sign(state, &format!("{host}/shop/late:v1"), &key, &[]);
    let accepted = pull(state, &config, &pinned);
    assert_eq!(accepted.code, 0, "{accepted:?}");
    assert!(snapshots(state) > 0, "unpacked once verified");
    let stored = verify(state, &pinned, &public, false);
    assert_eq!(stored.code, 0, "{stored:?}");
}

/// Signers at the same time: each one's referrer stays listed in the `sha256-<hex>`
/// index (each reads the tag back after its write and merges again when another
/// writer dropped its entry).
#[test]
fn signers_at_the_same_time_keep_every_referrer_listed() {
    if !have_tools(&["skopeo"]) {
        return;
    }
    let Some((reg, state)) = setup() else { return };
    let (state, host) = (state.path(), reg.host());
    let keys = tempfile::tempdir().unwrap();
    let image = fixture::busybox(&ImageSpec::default());
    let digest = fixture::push(&reg, "shop/crowd", "v1", &image);
    let reference = format!("{host}/shop/crowd:v1");
    let signers: Vec<PathBuf> = (0..4)
        .map(|i| {
            let prefix = keys.path().join(format!("k{i}"));
            let run = berth_in(state, None, &["key", "generate", &prefix.to_string_lossy()]);
            assert_eq!(run.code, 0, "{run:?}");
            prefix.with_extension("key")
        })
        .collect();
    let runs: Vec<std::process::Child> = signers
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let own = state.join(format!("signer{i}"));
            berth_e2e::berth()
                .args([
                    "--state-dir",
                    &own.to_string_lossy(),
                    "sign",
                    &reference,
                    "--key",
                ])
                .arg(key)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut r in runs {
        assert!(r.wait().unwrap().success());
    }
    let index = skopeo_raw(&host, "shop/crowd", &format!("sha256-{}", &digest[7..]));
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "{index:#}");
}
