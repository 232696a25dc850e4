//! SSH signatures (SSHSIG, namespace `git`) on commits and annotated tags, verified
//! in-process against the node's allowed signers, and OpenPGP ones against its trusted
//! OpenPGP keys (`pgp`). Nothing here runs git, ssh-keygen or gpg.
//!
//! The stable entry points (the agent's fetch and `berth source verify` call them):
//! - [`AllowedSigners::load`]`(path: &Path) -> Result<AllowedSigners, SignersError>`
//!   (in `signers`): the `allowed_signers` file, every bad line a located error.
//! - [`verify_commit`]`(repo: &Repository, commit: Oid, keys: impl Into<TrustedKeys>)
//!   -> Result<Verified, Refusal>`: the commit's `gpgsig` signature (`keys`: the
//!   allowed signers, the trusted OpenPGP keys, or both).
//! - [`verify_tag`]`(repo: &Repository, tag: Oid, keys: impl Into<TrustedKeys>)
//!   -> Result<Verified, Refusal>`: an annotated tag's signature, appended to its message.
//! - [`verify_revision`]`(repo, commit, tag: Option<Oid>, signers)`: what the agent
//!   asks of a revision: the tag's signature when the tag is signed by a listed key,
//!   else the commit's.
//!
//! What is checked, in order, as git and ssh-keygen do:
//! 1. the object carries a signature (commit: the `gpgsig` header, read as git reads
//!    it: in the header only; tag: from the last line that opens a signature block);
//! 2. it is an SSH signature (an OpenPGP one goes to `pgp::check` when the node trusts
//!    OpenPGP keys; an X.509 one, or a kind the node has no keys for, is named and
//!    refused);
//! 3. it decodes (SSHSIG version 1, SHA-256 or SHA-512), for namespace `git`, made
//!    with a plain key (not a certificate);
//! 4. its key is listed in the allowed signers (matched by the key, never by name);
//! 5. it is valid over the signed data (the object without its signature): a changed
//!    object is refused;
//! 6. some line listing the key allows namespace `git` and holds the committer time
//!    (tagger time for a tag) within `valid-after`/`valid-before`, both inclusive: a
//!    key that expired later does not invalidate what it signed while valid.
//!
//! The principal recorded is that line's principals field; it is not matched against
//! the committer.

use git2::{ObjectType, Oid, Repository};
use ssh_key::{HashAlg, SshSig};

use super::pgp::{self, PgpRefusal, TrustedPgpKeys};
use super::signers::{AllowedSigner, AllowedSigners};
use crate::util::rfc3339;

/// The largest commit or tag berth reads to check its signature: its size is read
/// from the object's header first, so a huge object is refused without being read.
pub const MAX_OBJECT_BYTES: usize = 16 * 1024 * 1024;

/// The largest signature block berth decodes.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// The SSHSIG namespace git signs commits and tags in.
pub const NAMESPACE: &str = "git";

/// Which object carried the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedObject {
    Commit,
    Tag,
}

impl SignedObject {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Tag => "tag",
        }
    }

    /// The time a signature on this object is judged at.
    pub(crate) fn time_name(self) -> &'static str {
        match self {
            Self::Commit => "committer time",
            Self::Tag => "tagger time",
        }
    }
}

/// A good signature by a listed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub object: SignedObject,
    /// SSH or OpenPGP.
    pub format: SignatureFormat,
    /// SSH: the principals field of the `allowed_signers` line that admitted the key.
    /// OpenPGP: the key's primary user id.
    pub principal: String,
    /// SSH: `SHA256:…`, as ssh-keygen prints it. OpenPGP: the fingerprint of the key
    /// that signed (a subkey, or the primary key), upper-case hex as gpg prints it.
    pub key_fingerprint: String,
    /// OpenPGP, when a subkey signed: the primary key's fingerprint.
    pub primary_key: Option<String>,
    /// The key's algorithm (`ssh-ed25519`, `EdDSALegacy`).
    pub algorithm: String,
    /// The committer (or tagger) time the key was judged at, Unix seconds.
    pub signed_at: i64,
    /// SSH: `FILE:LINE` of that `allowed_signers` line. OpenPGP: the key's file.
    pub listed_at: String,
}

/// The keys a revision may be signed by: SSH allowed signers, OpenPGP keys, or both
/// (either signature is then enough).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrustedKeys<'a> {
    pub ssh: Option<&'a AllowedSigners>,
    pub pgp: Option<&'a TrustedPgpKeys>,
}

impl<'a> From<&'a AllowedSigners> for TrustedKeys<'a> {
    fn from(signers: &'a AllowedSigners) -> Self {
        Self {
            ssh: Some(signers),
            pgp: None,
        }
    }
}

impl<'a> From<&'a TrustedPgpKeys> for TrustedKeys<'a> {
    fn from(keys: &'a TrustedPgpKeys) -> Self {
        Self {
            ssh: None,
            pgp: Some(keys),
        }
    }
}

/// A signature format git writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    Ssh,
    OpenPgp,
    X509,
}

impl SignatureFormat {
    /// `ssh` or `openpgp` (`x509`), for JSON and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::OpenPgp => "openpgp",
            Self::X509 => "x509",
        }
    }

    /// The node config key that lists this kind's keys, if berth verifies it.
    fn keys_key(self) -> Option<&'static str> {
        match self {
            Self::Ssh => Some("source.allowed_signers"),
            Self::OpenPgp => Some("source.trusted_pgp_keys"),
            Self::X509 => None,
        }
    }

    /// git's armor lines (gpg-interface.c), by format.
    const MARKERS: &[(&str, SignatureFormat)] = &[
        ("-----BEGIN SSH SIGNATURE-----", Self::Ssh),
        ("-----BEGIN PGP SIGNATURE-----", Self::OpenPgp),
        ("-----BEGIN PGP MESSAGE-----", Self::OpenPgp),
        ("-----BEGIN SIGNED MESSAGE-----", Self::X509),
    ];

    fn of(block: &[u8]) -> Option<Self> {
        Self::MARKERS
            .iter()
            .find(|(marker, _)| block.starts_with(marker.as_bytes()))
            .map(|(_, format)| *format)
    }
}

impl std::fmt::Display for SignatureFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ssh => "SSH",
            Self::OpenPgp => "OpenPGP",
            Self::X509 => "X.509 (gpgsm)",
        })
    }
}

/// Why a revision is not applied. Every variant but [`Refusal::Unreadable`] is a
/// judgement on the object ([`Refusal::is_judgement`]).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("it is not signed")]
    Unsigned,
    #[error("it carries an {format} signature; berth verifies SSH and OpenPGP signatures")]
    Unsupported { format: SignatureFormat },
    #[error(
        "it carries an {format} signature, but the node trusts no {format} keys (`{}` is not set)",
        .format.keys_key().unwrap_or_default()
    )]
    NoKeys { format: SignatureFormat },
    #[error("a signature block that git would not recognise")]
    UnknownFormat,
    #[error("its SSH signature cannot be decoded: {source}")]
    Malformed {
        #[source]
        source: ssh_key::Error,
    },
    #[error("its SSH signature is for namespace `{namespace}`, not `{NAMESPACE}`")]
    SignatureNamespace { namespace: String },
    #[error(
        "it is signed with an SSH certificate ({algorithm}); berth does not verify certificates"
    )]
    Certificate { algorithm: String },
    #[error("it is signed by key {fingerprint} ({algorithm}), which no allowed signer lists")]
    UnknownKey {
        fingerprint: String,
        algorithm: String,
    },
    #[error(
        "its signature by {principal} ({fingerprint}) does not match its content: the object was changed after it was signed"
    )]
    BadSignature {
        principal: String,
        fingerprint: String,
    },
    #[error(
        "the key of {principal} ({fingerprint}) may not sign namespace `{NAMESPACE}` (namespaces=\"{namespaces}\" at {listed_at})"
    )]
    KeyNamespace {
        principal: String,
        fingerprint: String,
        namespaces: String,
        listed_at: String,
    },
    #[error(
        "the key of {principal} ({fingerprint}) is valid only from {} (valid-after at {listed_at}); its {} is {}",
        format_time(*.valid_after), .object.time_name(), format_time(*.at)
    )]
    NotYetValid {
        principal: String,
        fingerprint: String,
        valid_after: i64,
        at: i64,
        object: SignedObject,
        listed_at: String,
    },
    #[error(
        "the key of {principal} ({fingerprint}) expired at {} (valid-before at {listed_at}); its {} is {}",
        format_time(*.valid_before), .object.time_name(), format_time(*.at)
    )]
    Expired {
        principal: String,
        fingerprint: String,
        valid_before: i64,
        at: i64,
        object: SignedObject,
        listed_at: String,
    },
    #[error(
        "the {} object is {size} bytes, more than the {MAX_OBJECT_BYTES} berth reads to check a signature",
        .object.as_str()
    )]
    TooLarge { object: SignedObject, size: usize },
    #[error(
        "its signature block is {size} bytes, more than the {MAX_SIGNATURE_BYTES} berth decodes"
    )]
    SignatureTooLarge { size: usize },
    #[error("the tag: {tag}; the commit: {commit}")]
    TagAndCommit {
        tag: Box<Refusal>,
        commit: Box<Refusal>,
    },
    #[error(transparent)]
    OpenPgp(#[from] PgpRefusal),
    #[error("it cannot be read: {source}")]
    Unreadable {
        #[source]
        source: git2::Error,
    },
}

impl Refusal {
    /// A short snake_case name of the reason, for JSON and records.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::Unsupported { .. } => "unsupported_format",
            Self::NoKeys { .. } => "no_keys",
            Self::UnknownFormat => "unknown_format",
            Self::Malformed { .. } => "malformed",
            Self::SignatureNamespace { .. } => "signature_namespace",
            Self::Certificate { .. } => "certificate",
            Self::UnknownKey { .. } => "unknown_key",
            Self::BadSignature { .. } => "bad_signature",
            Self::KeyNamespace { .. } => "key_namespace",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
            Self::TooLarge { .. } => "too_large",
            Self::SignatureTooLarge { .. } => "signature_too_large",
            Self::TagAndCommit { .. } => "tag_and_commit",
            Self::OpenPgp(r) => r.kind(),
            Self::Unreadable { .. } => "unreadable",
        }
    }

    /// True when the object was judged and found wanting; false when it could not be
    /// read (the check could not be done).
    pub fn is_judgement(&self) -> bool {
        !matches!(self, Self::Unreadable { .. })
    }
}

/// A signature time (Unix seconds) as RFC 3339 UTC; before 1970 shows as 1970.
pub fn format_time(secs: i64) -> String {
    rfc3339::format(u64::try_from(secs).unwrap_or(0))
}

fn unreadable(source: git2::Error) -> Refusal {
    Refusal::Unreadable { source }
}

/// Verifies the SSH signature of `commit` (see the module documentation).
pub fn verify_commit<'a>(
    repo: &Repository,
    commit: Oid,
    keys: impl Into<TrustedKeys<'a>>,
) -> Result<Verified, Refusal> {
    let raw = read_object(repo, commit, ObjectType::Commit)?;
    let (signature, payload) = split_commit(&raw).ok_or(Refusal::Unsigned)?;
    bounded(&signature)?;
    let at = repo
        .find_commit(commit)
        .map_err(unreadable)?
        .committer()
        .when()
        .seconds();
    check(&signature, &payload, at, SignedObject::Commit, keys.into())
}

/// Verifies the SSH signature of the annotated tag `tag` (see the module
/// documentation). A tag without a tagger is judged at the current time, as git does.
pub fn verify_tag<'a>(
    repo: &Repository,
    tag: Oid,
    keys: impl Into<TrustedKeys<'a>>,
) -> Result<Verified, Refusal> {
    let raw = read_object(repo, tag, ObjectType::Tag)?;
    let (payload, signature) = split_tag(&raw).ok_or(Refusal::Unsigned)?;
    bounded(signature)?;
    let at = match repo.find_tag(tag).map_err(unreadable)?.tagger() {
        Some(tagger) => tagger.when().seconds(),
        None => now(),
    };
    check(signature, payload, at, SignedObject::Tag, keys.into())
}

/// What the agent asks of a revision: with `tag` (an annotated tag pointing at
/// `commit`), a tag signed by a listed key counts; otherwise, or when the tag's
/// signature is refused, the commit's own signature must verify. When both are
/// refused, both reasons are given.
pub fn verify_revision<'a>(
    repo: &Repository,
    commit: Oid,
    tag: Option<Oid>,
    keys: impl Into<TrustedKeys<'a>>,
) -> Result<Verified, Refusal> {
    let signers: TrustedKeys<'a> = keys.into();
    let Some(tag) = tag else {
        return verify_commit(repo, commit, signers);
    };
    // The tag is read whole below: its size first.
    check_header(&repo.odb().map_err(unreadable)?, tag, ObjectType::Tag)?;
    let target = tag_target(repo, tag).map_err(unreadable)?;
    if target != commit {
        return Err(unreadable(git2::Error::from_str(&format!(
            "tag {tag} points at commit {target}, not {commit}"
        ))));
    }
    match verify_tag(repo, tag, signers) {
        Ok(verified) => Ok(verified),
        Err(Refusal::Unsigned) => verify_commit(repo, commit, signers),
        Err(refusal) if !refusal.is_judgement() => Err(refusal),
        Err(tag_refusal) => verify_commit(repo, commit, signers).map_err(|commit_refusal| {
            if commit_refusal.is_judgement() {
                Refusal::TagAndCommit {
                    tag: Box::new(tag_refusal),
                    commit: Box::new(commit_refusal),
                }
            } else {
                commit_refusal
            }
        }),
    }
}

/// The commit an annotated tag points at, named by the tag without reading the commit
/// (whose size is checked before it is read); a tag of a tag is peeled. The tag itself
/// is read whole: check its header first.
pub fn tag_target(repo: &Repository, tag: Oid) -> Result<Oid, git2::Error> {
    let t = repo.find_tag(tag)?;
    if t.target_type() == Some(ObjectType::Commit) {
        return Ok(t.target_id());
    }
    Ok(t.peel()?.peel_to_commit()?.id())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A signature block of at most [`MAX_SIGNATURE_BYTES`].
fn bounded(signature: &[u8]) -> Result<(), Refusal> {
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(Refusal::SignatureTooLarge {
            size: signature.len(),
        });
    }
    Ok(())
}

/// The raw object, which must be of `kind` and at most [`MAX_OBJECT_BYTES`] (checked
/// from its header, before it is read).
fn read_object(repo: &Repository, id: Oid, kind: ObjectType) -> Result<Vec<u8>, Refusal> {
    let odb = repo.odb().map_err(unreadable)?;
    check_header(&odb, id, kind)?;
    let object = odb.read(id).map_err(unreadable)?;
    Ok(object.data().to_vec())
}

/// That the object is of `kind` and at most [`MAX_OBJECT_BYTES`], from its header.
fn check_header(odb: &git2::Odb<'_>, id: Oid, kind: ObjectType) -> Result<(), Refusal> {
    let (size, found) = odb.read_header(id).map_err(unreadable)?;
    if found != kind {
        return Err(unreadable(git2::Error::from_str(&format!(
            "{id} is a {}, not a {}",
            found.str(),
            kind.str()
        ))));
    }
    if size > MAX_OBJECT_BYTES {
        return Err(Refusal::TooLarge {
            object: if kind == ObjectType::Tag {
                SignedObject::Tag
            } else {
                SignedObject::Commit
            },
            size,
        });
    }
    Ok(())
}

/// A commit's `gpgsig` header and the commit without it, as git splits them
/// (commit.c, `parse_buffer_signed_by_header`): only header lines count (libgit2's
/// `git_commit_extract_signature` also takes a `gpgsig` line from the message, which
/// git does not); continuation lines start with a space; every `gpgsig*` header
/// (`gpgsig-sha256` too) is left out of the signed data. `None` when unsigned.
fn split_commit(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut signature = Vec::new();
    let mut payload = Vec::with_capacity(raw.len());
    let (mut in_signature, mut other_signature, mut saw) = (false, false, false);
    let mut rest = raw;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, next) = rest.split_at(end);
        let sig = if in_signature && line.starts_with(b" ") {
            Some(&line[1..])
        } else if let Some(value) = line.strip_prefix(b"gpgsig ") {
            other_signature = false;
            Some(value)
        } else {
            if line.starts_with(b"gpgsig") {
                other_signature = true;
            } else if other_signature && !line.starts_with(b" ") {
                other_signature = false;
            }
            None
        };
        if let Some(sig) = sig {
            signature.extend_from_slice(sig);
            saw = true;
            in_signature = true;
        } else if line.first() == Some(&b'\n') {
            // The message: the rest is payload as is.
            payload.extend_from_slice(rest);
            break;
        } else {
            if !other_signature {
                payload.extend_from_slice(line);
            }
            in_signature = false;
        }
        rest = next;
    }
    saw.then_some((signature, payload))
}

/// An annotated tag's signed part and its signature: the signature starts at the last
/// line that opens a signature block, as git splits it (`parse_signed_buffer`).
/// `None` when unsigned.
fn split_tag(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut at = None;
    let mut start = 0;
    while start < raw.len() {
        if SignatureFormat::of(&raw[start..]).is_some() {
            at = Some(start);
        }
        start = raw[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(raw.len(), |i| start + i + 1);
    }
    at.map(|i| raw.split_at(i))
}

/// Steps 2–6 of the module documentation on one signature block.
fn check(
    signature: &[u8],
    payload: &[u8],
    at: i64,
    object: SignedObject,
    keys: TrustedKeys<'_>,
) -> Result<Verified, Refusal> {
    let format = SignatureFormat::of(signature).ok_or(Refusal::UnknownFormat)?;
    match (format, keys.ssh, keys.pgp) {
        (SignatureFormat::Ssh, Some(signers), _) => {
            check_ssh(signature, payload, at, object, signers)
        }
        (SignatureFormat::OpenPgp, _, Some(pgp_keys)) => {
            Ok(pgp::check(signature, payload, at, now(), object, pgp_keys)?)
        }
        (SignatureFormat::X509, _, _) => Err(Refusal::Unsupported { format }),
        _ => Err(Refusal::NoKeys { format }),
    }
}

/// Steps 3–6 on an SSH signature block.
fn check_ssh(
    signature: &[u8],
    payload: &[u8],
    at: i64,
    object: SignedObject,
    signers: &AllowedSigners,
) -> Result<Verified, Refusal> {
    // Blank lines around the armor are not part of it (libgit2 writes a blank
    // continuation line after a signature that ends with a newline).
    let sig =
        SshSig::from_pem(signature.trim_ascii()).map_err(|source| Refusal::Malformed { source })?;
    if sig.namespace() != NAMESPACE {
        return Err(Refusal::SignatureNamespace {
            namespace: sig.namespace().to_string(),
        });
    }
    let key = sig.public_key();
    let algorithm = key.algorithm().as_str().to_string();
    if algorithm.ends_with("-cert-v01@openssh.com") {
        return Err(Refusal::Certificate { algorithm });
    }
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let listed: Vec<&AllowedSigner> = signers.for_key(key).collect();
    let Some(first) = listed.first() else {
        return Err(Refusal::UnknownKey {
            fingerprint,
            algorithm,
        });
    };
    // The listed key (equal to the signature's) checks namespace, key and signature.
    if first.key.verify(NAMESPACE, payload, &sig).is_err() {
        return Err(Refusal::BadSignature {
            principal: first.principals.clone(),
            fingerprint,
        });
    }
    let mut refusal = None;
    for signer in listed {
        match admits(signer, signers.file(), at, object) {
            Ok(()) => {
                return Ok(Verified {
                    object,
                    format: SignatureFormat::Ssh,
                    principal: signer.principals.clone(),
                    key_fingerprint: fingerprint,
                    primary_key: None,
                    algorithm,
                    signed_at: at,
                    listed_at: format!("{}:{}", signers.file(), signer.line),
                });
            }
            Err(r) => {
                refusal.get_or_insert(r);
            }
        }
    }
    Err(refusal.unwrap_or(Refusal::UnknownKey {
        fingerprint,
        algorithm,
    }))
}

/// Whether one `allowed_signers` line admits its key for namespace `git` at `at`.
fn admits(
    signer: &AllowedSigner,
    file: &str,
    at: i64,
    object: SignedObject,
) -> Result<(), Refusal> {
    let principal = signer.principals.clone();
    let fingerprint = signer.fingerprint();
    let listed_at = format!("{file}:{}", signer.line);
    if !signer.allows_namespace(NAMESPACE) {
        return Err(Refusal::KeyNamespace {
            principal,
            fingerprint,
            namespaces: signer.namespaces.as_deref().unwrap_or_default().join(","),
            listed_at,
        });
    }
    if let Some(valid_after) = signer.valid_after
        && at < valid_after
    {
        return Err(Refusal::NotYetValid {
            principal,
            fingerprint,
            valid_after,
            at,
            object,
            listed_at,
        });
    }
    if let Some(valid_before) = signer.valid_before
        && at > valid_before
    {
        return Err(Refusal::Expired {
            principal,
            fingerprint,
            valid_before,
            at,
            object,
            listed_at,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
