//! Interoperability with independent ECDSA implementations: signatures berth makes are
//! checked by the `openssl` CLI and by Python's `cryptography`; keys and signatures
//! OpenSSL makes are read and verified by berth. Needs the Debian packages `openssl`
//! and `python3-cryptography`; without them the tests skip, or fail when `CI=true`.

use std::path::Path;
use std::process::Command;

use base64::Engine;

use super::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    crate::testing::require(ok, "`openssl` runnable (Debian package openssl)")
}

fn have_python_cryptography() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    crate::testing::require(
        ok,
        "python3 with the `cryptography` module (Debian package python3-cryptography)",
    )
}

/// Runs a command in `dir`; returns whether it succeeded, and its combined output.
fn run(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A berth-made key pair and signature, written out the way another tool reads them.
fn berth_signature(dir: &Path) -> SignatureArtifact {
    let paths = write_key_pair(&dir.join("berth"), false).unwrap();
    let key = SigningKey::load(&paths.private_key).unwrap();
    let digest = format!("sha256:{}", "5e".repeat(32));
    let art = sign_image("registry.example.com/shop/web", &digest, &key, None).unwrap();
    std::fs::write(dir.join("payload.json"), &art.payload.bytes).unwrap();
    std::fs::write(dir.join("sig.der"), B64.decode(&art.signature).unwrap()).unwrap();
    let mut tampered = art.payload.bytes.clone();
    tampered[10] ^= 0x01;
    std::fs::write(dir.join("tampered.json"), tampered).unwrap();
    art
}

#[test]
fn openssl_verifies_a_berth_signature() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    berth_signature(dir.path());
    let verify = |payload: &str| {
        run(
            dir.path(),
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-verify",
                "berth.pub",
                "-signature",
                "sig.der",
                payload,
            ],
        )
    };
    let (ok, out) = verify("payload.json");
    assert!(ok && out.contains("Verified OK"), "{out}");
    let (ok, out) = verify("tampered.json");
    assert!(!ok, "openssl accepted a tampered payload: {out}");
}

#[test]
fn openssl_reads_berth_key_files_as_one_pair() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = write_key_pair(&dir.path().join("berth"), false).unwrap();
    let (ok, derived) = run(
        dir.path(),
        "openssl",
        &["pkey", "-in", "berth.key", "-pubout"],
    );
    assert!(ok, "{derived}");
    assert_eq!(derived, std::fs::read_to_string(&paths.public_key).unwrap());
    let (ok, text) = run(
        dir.path(),
        "openssl",
        &["pkey", "-pubin", "-in", "berth.pub", "-noout", "-text"],
    );
    assert!(ok && text.contains("prime256v1"), "{text}");
}

#[test]
fn python_cryptography_verifies_a_berth_signature() {
    if !have_python_cryptography() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    berth_signature(dir.path());
    let script = r#"
import sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = serialization.load_pem_public_key(open("berth.pub", "rb").read())
assert isinstance(key.curve, ec.SECP256R1), key.curve
priv = serialization.load_pem_private_key(open("berth.key", "rb").read(), password=None)
assert priv.public_key().public_numbers() == key.public_numbers()
sig = open("sig.der", "rb").read()
try:
    key.verify(sig, open(sys.argv[1], "rb").read(), ec.ECDSA(hashes.SHA256()))
    print("valid")
except InvalidSignature:
    print("invalid")
"#;
    let (ok, out) = run(dir.path(), "python3", &["-c", script, "payload.json"]);
    assert!(ok && out.trim() == "valid", "{out}");
    let (ok, out) = run(dir.path(), "python3", &["-c", script, "tampered.json"]);
    assert!(ok && out.trim() == "invalid", "{out}");
}

#[test]
fn berth_verifies_an_openssl_signature_and_reads_openssl_keys() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let digest = format!("sha256:{}", "c0".repeat(32));
    std::fs::write(
        d.join("payload.json"),
        build_payload("r.example/app", &digest).unwrap(),
    )
    .unwrap();
    for args in [
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "k.pem",
        ][..],
        &["pkey", "-in", "k.pem", "-pubout", "-out", "k.pub"],
        &["ec", "-in", "k.pem", "-out", "sec1.pem"],
        &[
            "dgst",
            "-sha256",
            "-sign",
            "k.pem",
            "-out",
            "sig.der",
            "payload.json",
        ],
    ] {
        let (ok, out) = run(d, "openssl", args);
        assert!(ok, "openssl {args:?}: {out}");
    }
    let public = TrustedKey::load(&d.join("k.pub")).unwrap();
    let payload = std::fs::read(d.join("payload.json")).unwrap();
    let sig = B64.encode(std::fs::read(d.join("sig.der")).unwrap());
    verify(&payload, &sig, &public, &digest).unwrap();

    assert!(
        std::fs::read_to_string(d.join("sec1.pem"))
            .unwrap()
            .starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    for file in ["k.pem", "sec1.pem"] {
        let key = SigningKey::load(&d.join(file)).unwrap();
        assert_eq!(
            key.public_key().unwrap().to_pem().unwrap(),
            public.to_pem().unwrap(),
            "{file}"
        );
    }
}
