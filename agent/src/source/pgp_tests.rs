//! OpenPGP verdicts on commits and a tag signed by real `git commit -S` / `git tag -s`
//! with gpg 2.2 keys (`testdata/pgp`, see its README): each raw object is written into
//! a fresh repository and judged as the agent judges it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};
use ssh_key::private::Ed25519Keypair;
use ssh_key::{HashAlg, LineEnding, PrivateKey};

use super::*;
use crate::source::signers::AllowedSigners;
use crate::source::verify::{Refusal, TrustedKeys, verify_commit, verify_revision, verify_tag};

const A: &str = "9B1C04E7A49084987C6C14583A42C33190548D2E";
const B: &str = "587087DBE7A719D42B2771C5B3ADB1B620F80121";
const C: &str = "0D01A495F9EE13C9DF40FD3CAEFB1B5A8661DB25";
const D: &str = "077E08B81A5F4E9EB7D459C82DD2A079CE795331";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/source/testdata/pgp")
        .join(name)
}

fn keys(files: &[&str]) -> TrustedPgpKeys {
    let paths: Vec<PathBuf> = files.iter().map(|f| fixture(f)).collect();
    TrustedPgpKeys::load(&paths).unwrap()
}

/// A fresh repository (kept alive by the directory) holding the fixture objects
/// `names` (`a-good.commit`, `a-tag.tag`); their ids, in order.
fn holding(names: &[&str]) -> (tempfile::TempDir, Repository, Vec<Oid>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let odb = repo.odb().unwrap();
    let ids = names
        .iter()
        .map(|name| {
            let kind = if name.ends_with(".tag") {
                ObjectType::Tag
            } else {
                ObjectType::Commit
            };
            odb.write(kind, &std::fs::read(fixture(name)).unwrap())
                .unwrap()
        })
        .collect();
    drop(odb);
    (dir, repo, ids)
}

fn judge(commit: &str, files: &[&str]) -> Result<Verified, Refusal> {
    let (_dir, repo, ids) = holding(&[&format!("{commit}.commit")]);
    verify_commit(&repo, ids[0], &keys(files))
}

fn refusal(commit: &str, files: &[&str]) -> PgpRefusal {
    match judge(commit, files) {
        Err(Refusal::OpenPgp(r)) => r,
        other => panic!("{commit}: expected an OpenPGP refusal, got {other:?}"),
    }
}

#[test]
fn a_commit_signed_by_a_trusted_primary_key_verifies() {
    let v = judge("a-good", &["A.asc"]).unwrap();
    assert_eq!(v.format, SignatureFormat::OpenPgp);
    assert_eq!(v.object, SignedObject::Commit);
    assert_eq!(v.key_fingerprint, A);
    assert_eq!(v.primary_key, None);
    assert_eq!(v.principal, "Alice <alice@x>");
    assert_eq!(v.algorithm, "EdDSALegacy");
    assert!(
        v.listed_at.ends_with("testdata/pgp/A.asc"),
        "{}",
        v.listed_at
    );
    assert_eq!(signature_kind(&v), "openpgp");
}

fn signature_kind(v: &Verified) -> &'static str {
    v.format.as_str()
}

#[test]
fn a_signing_subkey_verifies_and_names_its_primary_key() {
    let v = judge("b-subkey", &["B.asc"]).unwrap();
    assert_eq!(v.primary_key.as_deref(), Some(B));
    assert_ne!(v.key_fingerprint, B);
    assert_eq!(v.key_fingerprint.len(), 40);
    assert_eq!(v.principal, "Bob <bob@x>");
    // Found among several files, each of one key.
    let v = judge("b-subkey", &["A.asc", "C.asc", "B.asc"]).unwrap();
    assert_eq!(v.primary_key.as_deref(), Some(B));
}

#[test]
fn a_signing_subkey_without_its_back_signature_is_refused() {
    let r = refusal("b-subkey", &["B-nobacksig.asc"]);
    assert_eq!(r.kind(), "no_back_signature");
    assert!(r.to_string().contains(&format!("of key {B}")), "{r}");
}

#[test]
fn rsa_keys_verify_and_sha1_signatures_are_refused() {
    let v = judge("c-rsa", &["C.asc"]).unwrap();
    assert_eq!(v.key_fingerprint, C);
    let r = refusal("c-sha1", &["C.asc"]);
    assert_eq!(r.kind(), "weak_hash");
    assert!(r.to_string().contains("the hash SHA-1,"), "{r}");
}

#[test]
fn a_changed_commit_is_refused_as_a_bad_signature() {
    let r = refusal("a-tampered", &["A.asc"]);
    assert_eq!(r.kind(), "bad_signature");
    assert!(r.to_string().contains(A), "{r}");
    assert!(r.to_string().contains("changed after it was signed"), "{r}");
}

#[test]
fn an_unsigned_commit_is_refused() {
    assert!(matches!(
        judge("unsigned", &["A.asc"]),
        Err(Refusal::Unsigned)
    ));
}

#[test]
fn a_key_no_trusted_file_holds_is_named() {
    let r = refusal("a-good", &["B.asc", "C.asc"]);
    assert_eq!(r.kind(), "unknown_key");
    assert_eq!(
        r.to_string(),
        format!("it is signed by OpenPGP key {A}, which no trusted OpenPGP key holds")
    );
    // A subkey without its binding signature is no part of the key.
    assert_eq!(
        refusal("b-subkey", &["B-nobinding.asc"]).kind(),
        "unknown_key"
    );
}

#[test]
fn expiry_is_judged_at_the_committer_time() {
    let r = refusal("a-committed-after-expiry", &["A.asc"]);
    assert_eq!(r.kind(), "expired");
    let text = r.to_string();
    assert!(
        text.starts_with(&format!(
            "it is signed by OpenPGP key {A} (Alice <alice@x>), which expired at 2027-"
        )),
        "{text}"
    );
    assert!(
        text.ends_with("its committer time is 2031-01-01T00:00:00Z"),
        "{text}"
    );
}

#[test]
fn a_hard_revocation_voids_earlier_signatures_and_a_soft_one_only_later_ones() {
    // Before D was revoked, its signature is good.
    assert_eq!(
        judge("d-revoked-later", &["D.asc"])
            .unwrap()
            .key_fingerprint,
        D
    );
    // Revoked without a reason (gpg's revocation certificate): hard.
    let r = refusal("d-revoked-later", &["D-revoked.asc"]);
    assert_eq!(r.kind(), "revoked");
    assert!(r.to_string().contains("no reason given"), "{r}");
    assert!(r.to_string().contains("hard revocation"), "{r}");
    // Compromised: hard.
    let r = refusal("d2-before-compromise", &["D2-compromised.asc"]);
    assert!(r.to_string().contains("(compromised)"), "{r}");
    // Superseded: soft; the commit from before it stands, the later one does not.
    assert!(judge("d3-before-supersede", &["D3-superseded.asc"]).is_ok());
    let r = refusal("d3-committed-2031", &["D3-superseded.asc"]);
    assert!(r.to_string().contains("(superseded)"), "{r}");
    assert!(!r.to_string().contains("hard revocation"), "{r}");
}

#[test]
fn a_signature_from_before_the_key_existed_is_refused() {
    let r = refusal("e-before-key-creation", &["E.asc"]);
    assert_eq!(r.kind(), "before_key_creation");
    assert!(r.to_string().contains("created at 2030-01-01"), "{r}");
}

#[test]
fn a_signed_tag_verifies_at_the_tagger_time() {
    let (_dir, repo, ids) = holding(&["a-good.commit", "a-tag.tag"]);
    let (commit, tag) = (ids[0], ids[1]);
    let keys = keys(&["A.asc"]);
    let v = verify_tag(&repo, tag, &keys).unwrap();
    assert_eq!(
        (v.object, v.key_fingerprint.as_str()),
        (SignedObject::Tag, A)
    );
    let v = verify_revision(&repo, commit, Some(tag), &keys).unwrap();
    assert_eq!(v.object, SignedObject::Tag);
}

fn ssh_signed(repo: &Repository) -> (Oid, AllowedSigners) {
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
    let text = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor Ops <o@x> 1795341600 +0000\ncommitter Ops <o@x> 1795341600 +0000\n\nssh\n";
    let sig = key
        .sign("git", HashAlg::Sha512, text.as_bytes())
        .unwrap()
        .to_pem(LineEnding::LF)
        .unwrap();
    let id = repo.commit_signed(text, &sig, None).unwrap();
    let line = format!("ops@x {}\n", key.public_key().to_openssh().unwrap());
    let signers = AllowedSigners::parse("allowed_signers", line.as_bytes()).unwrap();
    (id, signers)
}

#[test]
fn with_both_kinds_configured_either_signature_is_enough() {
    let (_dir, repo, ids) = holding(&["a-good.commit"]);
    let (ssh_commit, signers) = ssh_signed(&repo);
    let pgp_commit = ids[0];
    let pgp_keys = keys(&["A.asc"]);
    let both = TrustedKeys {
        ssh: Some(&signers),
        pgp: Some(&pgp_keys),
    };
    let v = verify_commit(&repo, ssh_commit, both).unwrap();
    assert_eq!(
        (v.format, v.principal.as_str()),
        (SignatureFormat::Ssh, "ops@x")
    );
    let v = verify_commit(&repo, pgp_commit, both).unwrap();
    assert_eq!(v.format, SignatureFormat::OpenPgp);

    // A kind the node has no keys for is refused, naming the key to set.
    let refused = verify_commit(&repo, pgp_commit, &signers).unwrap_err();
    assert_eq!(refused.kind(), "no_keys");
    assert_eq!(
        refused.to_string(),
        "it carries an OpenPGP signature, but the node trusts no OpenPGP keys (`source.trusted_pgp_keys` is not set)"
    );
    let refused = verify_commit(&repo, ssh_commit, &pgp_keys).unwrap_err();
    assert!(
        refused.to_string().contains("`source.allowed_signers`"),
        "{refused}"
    );
}

#[test]
fn key_files_that_cannot_be_used_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let secret = write(
        "secret.asc",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n",
    );
    let err = TrustedPgpKeys::load(std::slice::from_ref(&secret)).unwrap_err();
    assert!(matches!(err, PgpKeysError::Secret { .. }), "{err}");
    assert!(err.to_string().starts_with(&secret.display().to_string()));

    let garbage = write("garbage.asc", "not a key\n");
    let err = TrustedPgpKeys::load(&[fixture("A.asc"), garbage.clone()]).unwrap_err();
    assert!(matches!(err, PgpKeysError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("garbage.asc"), "{err}");

    let missing = dir.path().join("missing.asc");
    let err = TrustedPgpKeys::load(&[missing]).unwrap_err();
    assert!(matches!(err, PgpKeysError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.asc"), "{err}");

    // One file holding several keys: concatenated exports, and one export of three.
    let mut ring = String::new();
    for f in ["A.asc", "B.asc", "C.asc"] {
        ring.push_str(&std::fs::read_to_string(fixture(f)).unwrap());
    }
    let ring = write("ring.asc", &ring);
    let loaded = TrustedPgpKeys::load(&[ring]).unwrap();
    assert_eq!(loaded.keys.len(), 3);
    assert_eq!(armor_blocks(b"no armor").len(), 1);
    assert_eq!(keys(&["ABC.asc"]).keys.len(), 3);
}
