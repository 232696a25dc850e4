//! Signed commits and tags made in-process (git2 writes the objects, ssh-key signs
//! them as `ssh-keygen -Y sign -n git` does); the end-to-end suite signs with real
//! `git commit -S` and checks ssh-keygen agrees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use git2::{ObjectType, Oid, Repository, Signature, Time};
use ssh_key::private::Ed25519Keypair;
use ssh_key::{HashAlg, LineEnding, PrivateKey};

use super::*;

/// 2026-11-22T10:00:00Z
const T: i64 = 1_795_341_600;

fn private(seed: u8) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
}

fn public(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap()
}

fn signers(text: &str) -> AllowedSigners {
    AllowedSigners::parse("allowed_signers", text.as_bytes()).unwrap()
}

fn sign(key: &PrivateKey, namespace: &str, hash: HashAlg, data: &[u8]) -> String {
    key.sign(namespace, hash, data)
        .unwrap()
        .to_pem(LineEnding::LF)
        .unwrap()
}

struct Repo {
    _dir: tempfile::TempDir,
    repo: Repository,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        Repo { _dir: dir, repo }
    }

    /// An unsigned commit object's text, committed at `time`.
    fn commit_text(&self, message: &str, time: i64) -> String {
        let blob = self.repo.blob(message.as_bytes()).unwrap();
        let mut tree = self.repo.treebuilder(None).unwrap();
        tree.insert("spec.toml", blob, 0o100644).unwrap();
        let tree = self.repo.find_tree(tree.write().unwrap()).unwrap();
        let who = Signature::new("Ops", "ops@example.com", &Time::new(time, 0)).unwrap();
        let buf = self
            .repo
            .commit_create_buffer(&who, &who, message, &tree, &[])
            .unwrap();
        String::from_utf8(buf.to_vec()).unwrap()
    }

    fn unsigned(&self, message: &str, time: i64) -> Oid {
        let text = self.commit_text(message, time);
        self.write(ObjectType::Commit, text.as_bytes())
    }

    /// A commit signed as `git commit -S` with `gpg.format=ssh` signs it.
    fn signed(&self, key: &PrivateKey, message: &str, time: i64) -> Oid {
        self.signed_with(message, time, |data| {
            sign(key, "git", HashAlg::Sha512, data)
        })
    }

    fn signed_with(&self, message: &str, time: i64, sig: impl Fn(&[u8]) -> String) -> Oid {
        let text = self.commit_text(message, time);
        let signature = sig(text.as_bytes());
        self.repo.commit_signed(&text, &signature, None).unwrap()
    }

    fn raw(&self, id: Oid) -> Vec<u8> {
        self.repo.odb().unwrap().read(id).unwrap().data().to_vec()
    }

    fn write(&self, kind: ObjectType, data: &[u8]) -> Oid {
        self.repo.odb().unwrap().write(kind, data).unwrap()
    }

    /// An annotated tag on `commit`, tagged at `time`, signed by `key` when given (the
    /// signature appended to the message, as `git tag -s` does).
    fn tag(&self, commit: Oid, key: Option<&PrivateKey>, time: i64) -> Oid {
        let mut text = format!(
            "object {commit}\ntype commit\ntag v1\ntagger Ops <ops@example.com> {time} +0000\n\nrelease 1\n"
        );
        if let Some(key) = key {
            let signature = sign(key, "git", HashAlg::Sha512, text.as_bytes());
            text.push_str(&signature);
        }
        self.write(ObjectType::Tag, text.as_bytes())
    }
}

#[test]
fn a_good_signature_by_a_listed_key_verifies() {
    let r = Repo::new();
    let alice = private(1);
    let commit = r.signed(&alice, "deploy web\n", T);
    let list = signers(&format!(
        "# ops\nalice@example.com,ops@* {}\n",
        public(&alice)
    ));
    let v = verify_commit(&r.repo, commit, &list).unwrap();
    assert_eq!(v.object, SignedObject::Commit);
    assert_eq!(v.principal, "alice@example.com,ops@*");
    assert_eq!(
        v.key_fingerprint,
        alice.public_key().fingerprint(HashAlg::Sha256).to_string()
    );
    assert_eq!(v.algorithm, "ssh-ed25519");
    assert_eq!(v.signed_at, T);
    assert_eq!(v.listed_at, "allowed_signers:2");
}

#[test]
fn sha256_signatures_verify_too() {
    let r = Repo::new();
    let alice = private(1);
    let commit = r.signed_with("m\n", T, |d| sign(&alice, "git", HashAlg::Sha256, d));
    let list = signers(&format!("a@x {}\n", public(&alice)));
    assert!(verify_commit(&r.repo, commit, &list).is_ok());
}

#[test]
fn an_unsigned_commit_is_refused() {
    let r = Repo::new();
    let commit = r.unsigned("m\n", T);
    let list = signers(&format!("a@x {}\n", public(&private(1))));
    let refusal = verify_commit(&r.repo, commit, &list).unwrap_err();
    assert!(matches!(refusal, Refusal::Unsigned));
    assert_eq!(refusal.kind(), "unsigned");
    assert_eq!(refusal.to_string(), "it is not signed");
    assert!(refusal.is_judgement());
}

#[test]
fn a_key_no_line_lists_is_refused_with_its_fingerprint() {
    let r = Repo::new();
    let (alice, mallory) = (private(1), private(9));
    let commit = r.signed(&mallory, "m\n", T);
    let list = signers(&format!("a@x {}\n", public(&alice)));
    let refusal = verify_commit(&r.repo, commit, &list).unwrap_err();
    let fingerprint = mallory
        .public_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    assert!(
        matches!(&refusal, Refusal::UnknownKey { fingerprint: f, .. } if *f == fingerprint),
        "{refusal:?}"
    );
    assert!(refusal.to_string().contains(&fingerprint), "{refusal}");
}

#[test]
fn a_changed_commit_is_refused_as_a_bad_signature() {
    let r = Repo::new();
    let alice = private(1);
    let commit = r.signed(&alice, "deploy web 1.0\n", T);
    let raw = String::from_utf8(r.raw(commit)).unwrap();
    let forged = raw.replace("deploy web 1.0", "deploy web 6.6");
    let forged = r.write(ObjectType::Commit, forged.as_bytes());
    let list = signers(&format!("alice@x {}\n", public(&alice)));
    assert!(verify_commit(&r.repo, commit, &list).is_ok());
    let refusal = verify_commit(&r.repo, forged, &list).unwrap_err();
    assert!(
        matches!(refusal, Refusal::BadSignature { .. }),
        "{refusal:?}"
    );
    assert!(refusal.to_string().contains("changed after it was signed"));
}

#[test]
fn a_signature_block_in_the_message_is_no_signature() {
    // libgit2's extract_signature finds a `gpgsig` line in the message too; git does
    // not, and neither does berth.
    let r = Repo::new();
    let alice = private(1);
    let signed = r.signed(&alice, "m\n", T);
    let raw = String::from_utf8(r.raw(signed)).unwrap();
    let (headers, message) = raw.split_once("\n\n").unwrap();
    let gpgsig_at = headers.find("gpgsig ").unwrap();
    let block = &headers[gpgsig_at..];
    let moved = format!("{}\n\n{message}{block}\n", &headers[..gpgsig_at].trim_end());
    let moved = r.write(ObjectType::Commit, moved.as_bytes());
    assert!(r.repo.extract_signature(&moved, None).is_ok());
    let list = signers(&format!("alice@x {}\n", public(&alice)));
    assert!(matches!(
        verify_commit(&r.repo, moved, &list),
        Err(Refusal::Unsigned)
    ));
}

#[test]
fn split_commit_leaves_out_every_signature_header_as_git_does() {
    let raw = b"tree t\nparent p\nauthor a\ncommitter c\ngpgsig -----BEGIN SSH SIGNATURE-----\n AAAA\n \n -----END SSH SIGNATURE-----\ngpgsig-sha256 other\n more\nencoding x\n\nmsg\ngpgsig not a header\n";
    let (signature, payload) = split_commit(raw).unwrap();
    assert_eq!(
        signature,
        b"-----BEGIN SSH SIGNATURE-----\nAAAA\n\n-----END SSH SIGNATURE-----\n"
    );
    assert_eq!(
        payload,
        b"tree t\nparent p\nauthor a\ncommitter c\nencoding x\n\nmsg\ngpgsig not a header\n"
    );
    assert!(split_commit(b"tree t\n\ngpgsig x\n").is_none());
}

#[test]
fn a_key_not_allowed_for_git_is_refused() {
    let r = Repo::new();
    let alice = private(1);
    let commit = r.signed(&alice, "m\n", T);
    let list = signers(&format!("alice@x namespaces=\"file\" {}\n", public(&alice)));
    let refusal = verify_commit(&r.repo, commit, &list).unwrap_err();
    assert!(
        matches!(&refusal, Refusal::KeyNamespace { namespaces, listed_at, .. } if namespaces == "file" && listed_at == "allowed_signers:1"),
        "{refusal:?}"
    );
}

#[test]
fn a_later_line_for_the_same_key_can_admit_it() {
    let r = Repo::new();
    let alice = private(1);
    let commit = r.signed(&alice, "m\n", T);
    let key = public(&alice);
    let list = signers(&format!(
        "files@x namespaces=\"file\" {key}\ngit@x namespaces=\"git\" {key}\n"
    ));
    let v = verify_commit(&r.repo, commit, &list).unwrap();
    assert_eq!(
        (v.principal.as_str(), v.listed_at.as_str()),
        ("git@x", "allowed_signers:2")
    );
}

#[test]
fn a_signature_for_another_namespace_is_refused() {
    let r = Repo::new();
    let alice = private(1);
    let commit = r.signed_with("m\n", T, |d| sign(&alice, "file", HashAlg::Sha512, d));
    let list = signers(&format!("a@x {}\n", public(&alice)));
    assert!(matches!(
        verify_commit(&r.repo, commit, &list),
        Err(Refusal::SignatureNamespace { namespace }) if namespace == "file"
    ));
}

#[test]
fn validity_is_judged_at_the_committer_time_bounds_included() {
    let r = Repo::new();
    let alice = private(1);
    let key = public(&alice);
    // 2026-11-22T10:00:00Z.
    let commit = r.signed(&alice, "m\n", T);
    let verdict =
        |options: &str| verify_commit(&r.repo, commit, &signers(&format!("a@x {options} {key}\n")));

    // Expired since, but valid when committed: still verified.
    assert!(verdict("valid-before=\"20261123\"").is_ok());
    assert!(
        verdict("valid-before=\"202611221000Z\"").is_ok(),
        "inclusive"
    );
    assert!(
        verdict("valid-after=\"20261122100000\"").is_ok(),
        "inclusive"
    );
    let expired = verdict("valid-before=\"20261122095959Z\"").unwrap_err();
    assert!(
        matches!(expired, Refusal::Expired { at: T, .. }),
        "{expired:?}"
    );
    assert_eq!(
        expired.to_string(),
        format!(
            "the key of a@x ({}) expired at 2026-11-22T09:59:59Z (valid-before at allowed_signers:1); its committer time is 2026-11-22T10:00:00Z",
            alice.public_key().fingerprint(HashAlg::Sha256)
        )
    );
    let early = verdict("valid-after=\"20261122100001\"").unwrap_err();
    assert!(matches!(early, Refusal::NotYetValid { .. }), "{early:?}");
    assert_eq!(early.kind(), "not_yet_valid");
}

#[test]
fn other_signature_formats_are_named() {
    let r = Repo::new();
    let pgp = "-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n-----END PGP SIGNATURE-----\n";
    let commit = r.signed_with("m\n", T, |_| pgp.to_string());
    let list = signers(&format!("a@x {}\n", public(&private(1))));
    let refusal = verify_commit(&r.repo, commit, &list).unwrap_err();
    assert!(matches!(
        refusal,
        Refusal::NoKeys {
            format: SignatureFormat::OpenPgp
        }
    ));
    assert!(refusal.to_string().contains("OpenPGP"), "{refusal}");
    let x509 = "-----BEGIN SIGNED MESSAGE-----\nMIIB\n-----END SIGNED MESSAGE-----\n";
    let commit = r.signed_with("x\n", T, |_| x509.to_string());
    assert!(matches!(
        verify_commit(&r.repo, commit, &list),
        Err(Refusal::Unsupported {
            format: SignatureFormat::X509
        })
    ));

    let garbage = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n";
    let commit = r.signed_with("n\n", T, |_| garbage.to_string());
    assert!(matches!(
        verify_commit(&r.repo, commit, &list),
        Err(Refusal::Malformed { .. })
    ));

    let commit = r.signed_with("o\n", T, |_| "just text\n".to_string());
    assert!(matches!(
        verify_commit(&r.repo, commit, &list),
        Err(Refusal::UnknownFormat)
    ));
}

#[test]
fn a_signed_tag_verifies_at_the_tagger_time() {
    let r = Repo::new();
    let alice = private(1);
    let commit = r.unsigned("m\n", T);
    let tag = r.tag(commit, Some(&alice), T + 60);
    let list = signers(&format!("alice@x {}\n", public(&alice)));
    let v = verify_tag(&r.repo, tag, &list).unwrap();
    assert_eq!((v.object, v.signed_at), (SignedObject::Tag, T + 60));
    // The commit itself is unsigned, but the signed tag counts.
    assert_eq!(
        verify_revision(&r.repo, commit, Some(tag), &list).unwrap(),
        v
    );
    assert!(matches!(
        verify_revision(&r.repo, commit, None, &list),
        Err(Refusal::Unsigned)
    ));

    // A changed tag message.
    let raw = String::from_utf8(r.raw(tag)).unwrap();
    let forged = r.write(
        ObjectType::Tag,
        raw.replace("release 1", "release 6").as_bytes(),
    );
    assert!(matches!(
        verify_tag(&r.repo, forged, &list),
        Err(Refusal::BadSignature { .. })
    ));
}

#[test]
fn an_unsigned_or_refused_tag_falls_back_to_the_commit() {
    let r = Repo::new();
    let (alice, mallory) = (private(1), private(9));
    let list = signers(&format!("alice@x {}\n", public(&alice)));

    let signed = r.signed(&alice, "m\n", T);
    let plain_tag = r.tag(signed, None, T);
    assert!(matches!(
        verify_tag(&r.repo, plain_tag, &list),
        Err(Refusal::Unsigned)
    ));
    let v = verify_revision(&r.repo, signed, Some(plain_tag), &list).unwrap();
    assert_eq!(v.object, SignedObject::Commit);
    let mallory_tag = r.tag(signed, Some(&mallory), T);
    let v = verify_revision(&r.repo, signed, Some(mallory_tag), &list).unwrap();
    assert_eq!(v.object, SignedObject::Commit);

    let unsigned = r.unsigned("n\n", T);
    let mallory_tag = r.tag(unsigned, Some(&mallory), T);
    let refusal = verify_revision(&r.repo, unsigned, Some(mallory_tag), &list).unwrap_err();
    assert!(
        matches!(&refusal, Refusal::TagAndCommit { tag, commit }
            if matches!(**tag, Refusal::UnknownKey { .. }) && matches!(**commit, Refusal::Unsigned)),
        "{refusal:?}"
    );
    assert!(
        refusal
            .to_string()
            .starts_with("the tag: it is signed by key"),
        "{refusal}"
    );

    // A tag of another commit is a caller's mistake, not a verdict.
    let refusal = verify_revision(&r.repo, signed, Some(mallory_tag), &list).unwrap_err();
    assert!(!refusal.is_judgement(), "{refusal:?}");
}

#[test]
fn an_object_of_the_wrong_kind_cannot_be_checked() {
    let r = Repo::new();
    let commit = r.unsigned("m\n", T);
    let tag = r.tag(commit, None, T);
    let list = signers(&format!("a@x {}\n", public(&private(1))));
    let refusal = verify_commit(&r.repo, tag, &list).unwrap_err();
    assert!(!refusal.is_judgement());
    assert!(
        refusal.to_string().contains("is a tag, not a commit"),
        "{refusal}"
    );
    assert!(
        !verify_tag(&r.repo, commit, &list)
            .unwrap_err()
            .is_judgement()
    );
    assert!(
        !verify_commit(&r.repo, Oid::from_bytes(&[7; 20]).unwrap(), &list)
            .unwrap_err()
            .is_judgement()
    );
}

#[test]
fn a_huge_commit_is_refused_from_its_header_and_a_huge_signature_block_too() {
    let r = Repo::new();
    let key = private(1);
    let allowed = signers(&format!("ops@x {}\n", public(&key)));
    // A signed commit whose message makes it larger than berth reads.
    let big = "x".repeat(MAX_OBJECT_BYTES);
    let id = r.signed(&key, &big, T);
    let refused = verify_commit(&r.repo, id, &allowed).unwrap_err();
    assert_eq!(refused.kind(), "too_large", "{refused}");
    assert!(refused.is_judgement());
    assert!(
        refused
            .to_string()
            .starts_with("the commit object is 16777"),
        "{refused}"
    );
    // A signature block larger than berth decodes (an armored block of padding).
    let id = r.signed_with("small\n", T, |_| {
        format!(
            "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
            "A".repeat(MAX_SIGNATURE_BYTES)
        )
    });
    let refused = verify_commit(&r.repo, id, &allowed).unwrap_err();
    assert_eq!(refused.kind(), "signature_too_large", "{refused}");
    // At the limit, a signature is decoded (and this one is found wanting).
    let id = r.signed_with("limit\n", T, |_| {
        "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n".to_string()
    });
    assert_eq!(
        verify_commit(&r.repo, id, &allowed).unwrap_err().kind(),
        "malformed"
    );
}
