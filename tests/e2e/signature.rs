//! `berth key generate` end to end: files, modes, PEM shapes, refusal to overwrite, and
//! the key pair read back by independent implementations (the `openssl` CLI, Python's
//! `cryptography`), which also sign and verify with it.
//!
//! Signatures made by berth itself are checked against the same independent verifiers
//! in the agent's unit tests (`image::signature::interop_tests`).
//!
//! `berth sign` then `berth image verify` (from the local store, no `--remote`) against
//! a real `docker-registry`: the signature stored with a pulled image is refreshed by
//! `sign`, fetched by `verify` when the store has none, and every outcome says where
//! it looked.
//!
//! Debian packages: `openssl`, `python3-cryptography`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::{Run, have_tools, missing, run_berth};

use crate::registry::{berth_in, setup};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a program in `dir`; panics with its output when it fails.
fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn key_generate_writes_a_cosign_style_pair() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_berth(dir.path(), &["key", "generate"]);
    assert_eq!(run.code, 0, "{run:?}");
    let key = dir.path().join("cosign.key");
    let public = dir.path().join("cosign.pub");
    assert!(
        run.stdout.contains("cosign.key") && run.stdout.contains("cosign.pub"),
        "{run:?}"
    );

    assert_eq!(mode(&key), 0o600, "private key mode");
    let pub_mode = mode(&public);
    assert_eq!(pub_mode & 0o600, 0o600, "public key mode {pub_mode:o}");
    assert_eq!(
        pub_mode & 0o022,
        0,
        "public key writable by others: {pub_mode:o}"
    );

    let key_pem = read(&key);
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{key_pem}"
    );
    assert!(key_pem.ends_with("-----END PRIVATE KEY-----\n"));
    let pub_pem = read(&public);
    // Every P-256 SubjectPublicKeyInfo starts with the same 36 base64 characters.
    assert!(
        pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"),
        "{pub_pem}"
    );
    assert!(pub_pem.ends_with("-----END PUBLIC KEY-----\n"));
}

#[test]
fn key_generate_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let first = run_berth(dir.path(), &["key", "generate", "keys/release"]);
    assert_eq!(first.code, 0, "{first:?}");
    let key = dir.path().join("keys/release.key");
    let before = read(&key);

    let again = run_berth(dir.path(), &["key", "generate", "keys/release"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains("keys/release.key") && again.stderr.contains("--force"),
        "{again:?}"
    );
    assert_eq!(read(&key), before, "the key changed although berth refused");

    // Only the public key exists: still refused, and no private key is written.
    std::fs::remove_file(&key).unwrap();
    let half = run_berth(dir.path(), &["key", "generate", "keys/release"]);
    assert_eq!(half.code, 1, "{half:?}");
    assert!(!key.exists());

    // --force replaces both; a loosened mode on the old file does not carry over.
    std::fs::write(&key, "old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = run_berth(
        dir.path(),
        &[
            "key",
            "generate",
            "keys/release",
            "--force",
            "--format",
            "json",
        ],
    );
    assert_eq!(forced.code, 0, "{forced:?}");
    let json: serde_json::Value = serde_json::from_str(&forced.stdout).unwrap();
    assert_eq!(json["private_key"], "keys/release.key");
    assert_eq!(json["public_key"], "keys/release.pub");
    assert_eq!(mode(&key), 0o600);
    assert!(read(&key).starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn key_generate_usage_and_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_berth(dir.path(), &["key", "generate", "--no-such-flag"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = run_berth(dir.path(), &["key"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = run_berth(dir.path(), &["key", "generate", ""]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = run_berth(dir.path(), &["key", "generate", "no/such/dir/k"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("no/such/dir/k.key"), "{run:?}");
}

#[test]
fn openssl_uses_a_berth_key_pair() {
    if !have_tools(&["openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(run_berth(d, &["key", "generate", "k"]).code, 0);
    // The public key derived from the private key is the .pub file, byte for byte.
    assert_eq!(
        tool(d, "openssl", &["pkey", "-in", "k.key", "-pubout"]),
        read(&d.join("k.pub"))
    );
    let text = tool(
        d,
        "openssl",
        &["pkey", "-pubin", "-in", "k.pub", "-noout", "-text"],
    );
    assert!(text.contains("prime256v1"), "{text}");
    // Sign with the private key and verify with the public key, as cosign's algorithm does.
    std::fs::write(d.join("payload.json"), br#"{"critical":{}}"#).unwrap();
    tool(
        d,
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-sign",
            "k.key",
            "-out",
            "sig.der",
            "payload.json",
        ],
    );
    let ok = tool(
        d,
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            "k.pub",
            "-signature",
            "sig.der",
            "payload.json",
        ],
    );
    assert!(ok.contains("Verified OK"), "{ok}");
}

#[test]
fn python_cryptography_reads_a_berth_key_pair() {
    let importable = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        missing("python3 with the `cryptography` module (Debian package python3-cryptography)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_berth(dir.path(), &["key", "generate"]).code, 0);
    let script = r#"
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
priv = serialization.load_pem_private_key(open("cosign.key", "rb").read(), password=None)
pub = serialization.load_pem_public_key(open("cosign.pub", "rb").read())
assert isinstance(pub.curve, ec.SECP256R1), pub.curve
assert priv.public_key().public_numbers() == pub.public_numbers()
sig = priv.sign(b"payload", ec.ECDSA(hashes.SHA256()))
pub.verify(sig, b"payload", ec.ECDSA(hashes.SHA256()))
print("ok")
"#;
    assert_eq!(tool(dir.path(), "python3", &["-c", script]).trim(), "ok");
}

/// Generates `release.key` / `release.pub` in `dir`.
fn release_key(state: &Path, dir: &Path) -> (String, String) {
    let prefix = dir.join("release");
    let run = berth_in(state, None, &["key", "generate", &prefix.to_string_lossy()]);
    assert_eq!(run.code, 0, "{run:?}");
    (
        dir.join("release.key").to_string_lossy().into_owned(),
        dir.join("release.pub").to_string_lossy().into_owned(),
    )
}

fn verify(state: &Path, reference: &str, public: &str, json: bool) -> Run {
    let mut args = vec!["image", "verify", reference, "--key", public];
    if json {
        args.extend(["--format", "json"]);
    }
    berth_in(state, None, &args)
}

/// The reported outcome: `(code, looked, fetched.by)` from `verify --format json`.
fn verify_json(state: &Path, reference: &str, public: &str) -> (i32, String, String) {
    let run = verify(state, reference, public, true);
    let v: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("bad json ({e}): {run:?}"));
    let s = &v["signature"];
    (
        run.code,
        s["looked"].as_str().unwrap_or_default().to_string(),
        s["fetched"]["by"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn sign_after_pull_then_verify_from_the_store() {
    let Some((reg, state)) = setup() else { return };
    let state = state.path();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = release_key(state, keys.path());
    let digest = fixture::push(
        &reg,
        "shop/late",
        "v1",
        &fixture::busybox(&ImageSpec::default()),
    );
    let reference = format!("{}/shop/late:v1", reg.host());

    // Pulled unsigned: the store has no signature, nor has the registry.
    let run = berth_in(state, None, &["image", "pull", &reference]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = verify(state, &reference, &public, false);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("no signature was found")
            && run
                .stdout
                .contains("looked in the registry (the local store had none)"),
        "{run:?}"
    );

    // `sign` refreshes the stored signature: `verify` succeeds without `--remote`.
    let run = berth_in(state, None, &["sign", &reference, "--key", &key]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&digest), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("refreshed the signature stored with {reference}")),
        "{run:?}"
    );
    let run = verify(state, &reference, &public, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("release.pub; found")
            && run
                .stdout
                .contains("found in the local store (stored by `berth sign`, "),
        "{run:?}"
    );
    assert_eq!(
        verify_json(state, &reference, &public),
        (0, "store".into(), "sign".into())
    );

    // The registry is no longer asked: with it gone, the stored signature still verifies.
    drop(reg);
    let run = verify(state, &reference, &public, false);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn verify_fetches_a_signature_the_store_lacks() {
    let Some((reg, here)) = setup() else { return };
    let (here, elsewhere) = (here.path(), tempfile::tempdir().unwrap());
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = release_key(here, keys.path());
    let image = fixture::busybox(&ImageSpec::default());
    fixture::push(&reg, "shop/signed-elsewhere", "v1", &image);
    let reference = format!("{}/shop/signed-elsewhere:v1", reg.host());

    // Pulled here unsigned, then signed from another machine (another state dir).
    let run = berth_in(here, None, &["image", "pull", &reference]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = berth_in(elsewhere.path(), None, &["sign", &reference, "--key", &key]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("refreshed"), "{run:?}");

    // The store has none: `verify` asks the registry, says so, and keeps what it found.
    let run = verify(here, &reference, &public, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("release.pub; found in the registry (the local store had none)"),
        "{run:?}"
    );
    let run = verify(here, &reference, &public, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("found in the local store (fetched by `berth image verify`, "),
        "{run:?}"
    );

    // An image pulled after it was signed: its signature came with the pull.
    let pulled = format!(
        "{}/shop/signed-elsewhere@{}",
        reg.host(),
        image.manifest_digest
    );
    let fresh = tempfile::tempdir().unwrap();
    let run = berth_in(fresh.path(), None, &["image", "pull", &pulled]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = verify(fresh.path(), &pulled, &public, false);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("found in the local store (fetched at pull time, "),
        "{run:?}"
    );
    assert_eq!(
        verify_json(fresh.path(), &pulled, &public),
        (0, "store".into(), "pull".into())
    );
}
