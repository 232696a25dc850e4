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
    // Any signature can name a trusted key as its issuer: not blamed on the object alone.
    assert!(
        r.to_string()
            .contains("or the signature was not made by that key"),
        "{r}"
    );
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
        format!(
            "it is signed by OpenPGP key {A}, which no trusted OpenPGP key holds (export it with `gpg --armor --export {A}` into a file listed in `source.trusted_pgp_keys`)"
        )
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
    assert!(armor_blocks(b"no armor").is_empty());
    assert_eq!(keys(&["ABC.asc"]).keys.len(), 3);
}

const R: &str = "9BD1024386A1DC5688BC7F8040B15072F836493A";
const G: &str = "0C6109EBD2DC3AC22372EA95A45A0B3269A2CF50";

#[test]
fn a_renewed_key_still_verifies_what_it_signed_before_the_renewal() {
    // R expired 2027-01-01 and was renewed on 2026-12-01 (gpg --quick-set-expire),
    // which replaced its only self-signature: none is from before the commit.
    assert_eq!(
        judge("r-before-renewal", &["R.asc"])
            .unwrap()
            .key_fingerprint,
        R
    );
    let v = judge("r-before-renewal", &["R-renewed.asc"]).unwrap();
    assert_eq!(
        (v.key_fingerprint.as_str(), v.principal.as_str()),
        (R, "Rita <rita@x>")
    );
    // A commit after the renewed expiry is still refused, as it is with the old key.
    let r = refusal("r-after-renewed-expiry", &["R-renewed.asc"]);
    assert_eq!(r.kind(), "expired");
    assert!(r.to_string().contains("which expired at 2028-12-01"), "{r}");
    assert_eq!(
        refusal("r-after-renewed-expiry", &["R.asc"]).kind(),
        "expired"
    );
    // The same for a signing subkey whose binding was renewed.
    let v = judge("s-before-renewal", &["S-renewed.asc"]).unwrap();
    assert_eq!(
        v.primary_key.as_deref(),
        Some("9813729888F732E68A7AC33B96540D325E7B83E7")
    );
}

#[test]
fn a_user_id_revocation_is_no_self_signature() {
    // U expires 2027-01-01; its second user id was revoked on 2026-02-01, after both
    // self-signatures: the revocation neither lifts the expiry nor names the key.
    let r = refusal("u-committed-2030", &["U-uid-revoked.asc"]);
    assert_eq!(r.kind(), "expired", "{r}");
    assert!(r.to_string().contains("(Ursula <ursula@x>)"), "{r}");
}

/// A file in a fresh directory holding the fixtures `names`, concatenated.
fn concatenated(dir: &tempfile::TempDir, names: &[&str]) -> PathBuf {
    let mut text = Vec::new();
    for name in names {
        text.extend(std::fs::read(fixture(name)).unwrap());
    }
    let path = dir.path().join(names.join("+"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_revocation_in_any_copy_of_a_key_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo_dir, repo, ids) = holding(&["d-revoked-later.commit"]);
    let verdict = |paths: &[PathBuf]| {
        let keys = TrustedPgpKeys::load(paths).unwrap();
        assert_eq!(keys.keys.len(), 1);
        verify_commit(&repo, ids[0], &keys)
    };
    // The old copy first, in one file and in two.
    for paths in [
        vec![concatenated(&dir, &["D.asc", "D-revoked.asc"])],
        vec![fixture("D.asc"), fixture("D-revoked.asc")],
        vec![fixture("D-revoked.asc"), fixture("D.asc")],
    ] {
        let refused = verdict(&paths).unwrap_err();
        assert_eq!(refused.kind(), "revoked", "{paths:?}: {refused}");
    }
}

#[test]
fn a_standalone_revocation_certificate_revokes_its_key() {
    assert_eq!(judge("g-good", &["G.asc"]).unwrap().key_fingerprint, G);
    for files in [["G.asc", "G-revocation.asc"], ["G-revocation.asc", "G.asc"]] {
        let r = refusal("g-good", &files);
        assert_eq!(r.kind(), "revoked", "{r}");
        assert!(r.to_string().contains("hard revocation"), "{r}");
    }
    // Alone, it revokes nothing the node trusts: named as a mistake.
    let err = TrustedPgpKeys::load(&[fixture("G-revocation.asc"), fixture("A.asc")]).unwrap_err();
    assert!(
        matches!(err, PgpKeysError::RevocationForUnknownKey { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(G), "{err}");
    assert!(err.to_string().contains("G-revocation.asc"), "{err}");
}

#[test]
fn key_files_are_read_only_when_regular_and_small() {
    let err = TrustedPgpKeys::load(&[PathBuf::from("/dev/zero")]).unwrap_err();
    assert!(matches!(err, PgpKeysError::NotRegular { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.asc");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Opened without blocking (no writer), and refused.
    let err = TrustedPgpKeys::load(&[fifo]).unwrap_err();
    assert!(matches!(err, PgpKeysError::NotRegular { .. }), "{err}");
    let big = dir.path().join("big.asc");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(MAX_KEY_FILE_BYTES + 1).unwrap();
    let err = TrustedPgpKeys::load(&[big]).unwrap_err();
    assert!(matches!(err, PgpKeysError::TooLarge { .. }), "{err}");
}

#[test]
fn an_expired_signature_is_refused_at_the_current_time() {
    // Signed on 2026-06-01 to expire a day later.
    let r = refusal("g-sig-expired", &["G.asc"]);
    assert_eq!(r.kind(), "signature_expired");
    assert!(
        r.to_string().contains("expired at 2026-06-02T00:00:00Z"),
        "{r}"
    );
    // One that expires in 2076 verifies.
    assert_eq!(
        judge("g-sig-expires-2076", &["G.asc"])
            .unwrap()
            .key_fingerprint,
        G
    );
}

#[test]
fn a_text_mode_signature_is_refused() {
    let r = refusal("g-textmode", &["G.asc"]);
    assert!(matches!(r, PgpRefusal::TextMode), "{r}");
    assert_eq!(r.kind(), "signature_type");
}

#[test]
fn a_key_of_an_algorithm_berth_cannot_verify_is_refused_when_loaded() {
    let err = TrustedPgpKeys::load(&[fixture("BP.asc")]).unwrap_err();
    assert!(
        matches!(err, PgpKeysError::UnsupportedAlgorithm { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("BP.asc: OpenPGP key "), "{text}");
    assert!(
        text.contains("(Bea <bea@x>) uses ECDSA over brainpoolP256r1"),
        "{text}"
    );
    // secp256k1 is verified.
    let v = judge("k-secp256k1", &["K.asc"]).unwrap();
    assert_eq!(
        v.key_fingerprint,
        "ACE492EC523C986FE7E8DF314A2F9355E1908C41"
    );
}

#[test]
fn key_file_errors_are_short_and_binary_exports_load() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.asc");
    std::fs::write(&empty, "\n").unwrap();
    let err = TrustedPgpKeys::load(&[empty]).unwrap_err();
    assert!(matches!(err, PgpKeysError::EmptyFile { .. }), "{err}");
    // Broken armored keys: their messages hold no bytes.
    let text = std::fs::read_to_string(fixture("A.asc")).unwrap();
    let body = text.find("\n\n").unwrap() + 2;
    let end = text.find("\n-----END").unwrap() + 1;
    let garbage = [
        "AAAAAAAAAAAA\n",
        "mDMEaVVVrBYJKwYBBAHaRw8BAQdAt2Kx14ItxRqJNS3iEvsAFEzl+5B2nIdIzmO7nn5TQNq0GUFs\n",
        "xsBNBGlVVawBCADL\n",
    ];
    for (i, garbage) in garbage.iter().enumerate() {
        let broken = dir.path().join(format!("broken{i}.asc"));
        std::fs::write(
            &broken,
            format!("{}{garbage}{}", &text[..body], &text[end..]),
        )
        .unwrap();
        let err = TrustedPgpKeys::load(&[broken]).unwrap_err();
        let shown = err.to_string();
        eprintln!("{shown}");
        assert!(
            shown.contains(&format!("broken{i}.asc: not an OpenPGP public key")),
            "{shown}"
        );
        assert!(!shown.contains('['), "{shown}");
        assert!(shown.len() < 400, "{shown}");
    }
    // `gpg --export KEY` without --armor.
    assert_eq!(judge("g-good", &["G.gpg"]).unwrap().key_fingerprint, G);
}
