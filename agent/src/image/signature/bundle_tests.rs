//! Sigstore bundle tests.

use std::path::PathBuf;

use super::*;

fn dir() -> PathBuf {
    std::env::var_os("BERTH_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("cosign-bundle")
}

#[test]
fn smoke() {
    let d = dir();
    let b = std::fs::read(d.join("keyed-image.bundle.json")).unwrap();
    let k = TrustedKey::load(&d.join("keyed-image.cosign.pub")).unwrap();
    let dg = std::fs::read_to_string(d.join("keyed-image.digest")).unwrap();
    let v = verify_bundle(&b, dg.trim(), &[k]).unwrap();
    println!("{v:?}");
    let s = SigningKey::generate("g").unwrap();
    let out = sign_bundle("", dg.trim(), &s).unwrap();
    println!("{}", String::from_utf8_lossy(&out));
    verify_bundle(&out, dg.trim(), &[s.public_key().unwrap()]).unwrap();
}
