//! `berth image verify --bundle FILE --digest DIGEST [--key PUB]`: a Sigstore bundle
//! checked offline (no registry, no store, no root), against the shared fixture
//! `cosign-bundle/keyed-image.*` that cosign 3 wrote. Exit 0 when it verifies, 1 for
//! every mutation (another digest, another key, a flipped payload or signature byte),
//! 2 for bad arguments, 3 when the file cannot be read.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use base64::Engine;
use berth_e2e::{Run, berth, shared_fixtures};
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Fixture {
    bundle: PathBuf,
    key: PathBuf,
    digest: String,
    /// Holds an empty node configuration and the files the test writes.
    dir: tempfile::TempDir,
}

fn fixture() -> Option<Fixture> {
    let dir = shared_fixtures()?.join("cosign-bundle");
    let digest = std::fs::read_to_string(dir.join("keyed-image.digest"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("node.toml"), "").unwrap();
    Some(Fixture {
        bundle: dir.join("keyed-image.bundle.json"),
        key: dir.join("keyed-image.cosign.pub"),
        digest: digest.trim().to_string(),
        dir: tmp,
    })
}

impl Fixture {
    /// `berth image verify ARGS` with the empty node configuration (unless ARGS name one).
    fn verify(&self, args: &[&str]) -> Run {
        let mut cmd = berth();
        if !args.contains(&"--config") {
            cmd.arg("--config").arg(self.dir.path().join("node.toml"));
        }
        let out = cmd
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["image", "verify"])
            .args(args)
            .output()
            .unwrap();
        Run::from(out)
    }

    fn check(&self, bundle: &Path, digest: &str, key: &Path) -> Run {
        self.check_with(bundle, digest, key, &[])
    }

    /// `--bundle BUNDLE --digest DIGEST --key KEY EXTRA…`
    fn check_with(&self, bundle: &Path, digest: &str, key: &Path, extra: &[&str]) -> Run {
        let args = ["--bundle", s(bundle), "--digest", digest, "--key", s(key)];
        self.verify(&[&args[..], extra].concat())
    }

    /// Writes the fixture with its base64 field at `pointer` decoded, bit-flipped at
    /// `byte`, and re-encoded.
    fn flipped(&self, pointer: &str, byte: usize) -> PathBuf {
        let mut json: Value =
            serde_json::from_slice(&std::fs::read(&self.bundle).unwrap()).unwrap();
        let field = json.pointer_mut(pointer).unwrap();
        let mut bytes = B64.decode(field.as_str().unwrap()).unwrap();
        bytes[byte] ^= 0x10;
        *field = Value::String(B64.encode(&bytes));
        let path = self
            .dir
            .path()
            .join(format!("{}-{byte}.json", pointer.replace('/', "_")));
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    }

    fn generated_key(&self) -> PathBuf {
        let prefix = self.dir.path().join("other");
        let out = berth()
            .args(["key", "generate"])
            .arg(&prefix)
            .output()
            .unwrap();
        assert!(out.status.success(), "{:?}", Run::from(out));
        self.dir.path().join("other.pub")
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_fixture_verifies_with_its_key_for_its_digest() {
    let Some(f) = fixture() else { return };
    let run = f.check(&f.bundle, &f.digest, &f.key);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!(
            "{}: verified by {} for {}",
            s(&f.bundle),
            s(&f.key),
            f.digest
        )
    );

    let run = f.check_with(&f.bundle, &f.digest, &f.key, &["--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["status"], "verified", "{v}");
    assert_eq!(v["key"], s(&f.key), "{v}");
    assert_eq!(v["unchecked"], serde_json::json!([]), "{v}");
}

/// Without `--key`, the node's `policy.trusted_keys`.
#[test]
fn the_node_trusted_keys_are_the_default() {
    let Some(f) = fixture() else { return };
    let config = f.dir.path().join("keyed.toml");
    std::fs::write(
        &config,
        format!("[policy]\ntrusted_keys = [{:?}]\n", s(&f.key)),
    )
    .unwrap();
    let args = ["--bundle", s(&f.bundle), "--digest", &f.digest];
    let run = f.verify(&[&["--config", s(&config)][..], &args].concat());
    assert_eq!(run.code, 0, "{run:?}");
    // No key anywhere: a usage error.
    let run = f.verify(&args);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("policy.trusted_keys"), "{run:?}");
}

#[test]
fn another_digest_or_key_is_not_verified() {
    let Some(f) = fixture() else { return };
    let other = format!("sha256:{}", "0".repeat(64));
    let run = f.check(&f.bundle, &other, &f.key);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with(&format!("{}: not verified for {other}: ", s(&f.bundle)))
            && run.stdout.contains(&format!("signs {}", f.digest)),
        "{run:?}"
    );

    let key = f.generated_key();
    let run = f.check(&f.bundle, &f.digest, &key);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "with key {}: the signature does not verify",
            s(&key)
        )),
        "{run:?}"
    );
}

#[test]
fn a_flipped_payload_or_signature_byte_is_not_verified() {
    let Some(f) = fixture() else { return };
    for (pointer, byte) in [
        ("/dsseEnvelope/payload", 0),
        ("/dsseEnvelope/payload", 120),
        ("/dsseEnvelope/signatures/0/sig", 10),
        ("/dsseEnvelope/signatures/0/sig", 60),
    ] {
        let bundle = f.flipped(pointer, byte);
        let run = f.check(&bundle, &f.digest, &f.key);
        assert_eq!(run.code, 1, "{pointer} byte {byte}: {run:?}");
        assert!(
            run.stdout.contains("not verified for"),
            "{pointer} byte {byte}: {run:?}"
        );
    }
}

#[test]
fn bad_arguments_and_unreadable_files() {
    let Some(f) = fixture() else { return };
    // --bundle needs --digest.
    let run = f.verify(&["--bundle", s(&f.bundle), "--key", s(&f.key)]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--digest"), "{run:?}");
    // A digest that is not one.
    let run = f.check(&f.bundle, "sha256:abc", &f.key);
    assert_eq!(run.code, 2, "{run:?}");
    // Not with --remote, nor with an image reference.
    for extra in ["--remote", "localhost/x:1"] {
        let run = f.check_with(&f.bundle, &f.digest, &f.key, &[extra]);
        assert_eq!(run.code, 2, "{extra}: {run:?}");
    }
    // A file that cannot be read.
    let missing = f.dir.path().join("missing.json");
    let run = f.check(&missing, &f.digest, &f.key);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("missing.json"), "{run:?}");
}
