//! `berth key generate` end to end: files, modes, PEM shapes, refusal to overwrite, and
//! the key pair read back by independent implementations (the `openssl` CLI, Python's
//! `cryptography`), which also sign and verify with it.
//!
//! Signatures made by berth itself are checked against the same independent verifiers
//! in the agent's unit tests (`image::signature::interop_tests`) until `berth sign`
//! exists; that command's e2e test goes here.
//!
//! Debian packages: `openssl`, `python3-cryptography`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use berth_e2e::{have_tools, missing, run_berth};

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
