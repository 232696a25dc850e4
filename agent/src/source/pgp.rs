//! OpenPGP signatures on commits and annotated tags (`source.trusted_pgp_keys`),
//! verified in-process against armored public keys. rpgp parses the packets and checks
//! each signature's cryptography; whether a key was valid when the object was signed
//! is decided here, at the committer (or tagger) time `t`, as RFC 9580 has it:
//!
//! 1. the block is one detached binary signature (type 0x00, as git makes them; a
//!    text-mode one, 0x01, is refused: it also holds for the object with CRLF line
//!    ends, a different commit), made with a strong hash: SHA-1, MD5 and RIPEMD-160
//!    are refused;
//! 2. it has not expired: a signature expiration time set by its signer is judged
//!    against the current time, as git and gpg do (the signer said when the signature
//!    stops counting; every other check is at `t`);
//! 3. an issuer it names (fingerprint or key id) is the primary key or a subkey of a
//!    trusted key (every copy of a key, in any file, merged: see [`TrustedPgpKeys`]);
//! 4. the primary key existed at `t` and has a valid self-signature: a certification
//!    (0x10–0x13) of a user id that is not revoked, or a direct-key signature (0x1F);
//!    the one in force at `t` is the newest made at or before `t`, or, when all are
//!    newer, the oldest (gpg replaces the self-signature when a key is renewed with
//!    `--quick-set-expire`, so commits from before the renewal keep verifying); the
//!    key had not expired at `t` (creation + that self-signature's key expiration
//!    time, expired at that second);
//! 5. no revocation applies: a hard one (no reason, compromised, or any other code)
//!    voids every signature the key made, whenever it was made; a soft one (superseded,
//!    retired) only from its own creation time on;
//! 6. a signing subkey existed at `t`, has a valid binding in force at `t` (chosen as
//!    in 4) that allows signing and carries the subkey's back-signature, and is
//!    neither expired nor revoked at `t` by the same rules; a primary key that signs
//!    must be allowed to by its self-signature in force;
//! 7. the signature was not made before its key existed, and it is valid over the
//!    signed data (the object without its signature).
//!
//! Self-signatures that do not verify (and third-party certifications) are ignored,
//! never fatal: a key exported with others' certifications still works.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use pgp::armor::Dearmor;
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Packet, PacketParser, RevocationCode, Signature, SignatureType};
use pgp::types::{
    EddsaLegacyPublicParams, Fingerprint, KeyDetails, KeyId, PublicParams, Tag, Timestamp,
};

use super::signers::{ReadError, read_regular};
use super::verify::{SignatureFormat, SignedObject, Verified, format_time};

/// The armor line of a secret key, which must never sit on a node.
const SECRET_ARMOR: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";

/// How big one OpenPGP key file may be (a key with many certifications is large).
pub const MAX_KEY_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The public-key algorithms berth verifies signatures of, as named in errors.
const SUPPORTED_ALGORITHMS: &str = "RSA, DSA, ECDSA over NIST P-256, P-384, P-521 or secp256k1, EdDSA over Ed25519, Ed25519, Ed448";

/// Why the trusted OpenPGP keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PgpKeysError {
    #[error("cannot read the OpenPGP key file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the OpenPGP key file {} is not a regular file", .path.display())]
    NotRegular { path: PathBuf },
    #[error("the OpenPGP key file {} is larger than {MAX_KEY_FILE_BYTES} bytes", .path.display())]
    TooLarge { path: PathBuf },
    /// `detail` is rpgp's reason, shortened: its errors can hold whole byte arrays.
    #[error(
        "{}: not an OpenPGP public key (export one with `gpg --export --armor KEY`): {detail}",
        .path.display()
    )]
    Parse { path: PathBuf, detail: String },
    #[error(
        "{}: holds a secret key; only public keys (`gpg --export --armor KEY`) belong on a node",
        .path.display()
    )]
    Secret { path: PathBuf },
    #[error("{}: the file is empty; export a key with `gpg --export --armor KEY`", .path.display())]
    EmptyFile { path: PathBuf },
    #[error("{}: holds no OpenPGP public key", .path.display())]
    Empty { path: PathBuf },
    #[error(
        "{}: {key} uses {algorithm}, which berth does not verify signatures of (supported: {SUPPORTED_ALGORITHMS})",
        .path.display()
    )]
    UnsupportedAlgorithm {
        path: PathBuf,
        key: String,
        algorithm: String,
    },
    #[error(
        "{}: holds a signature of type {typ} and no key; only public keys and key revocation certificates belong here",
        .path.display()
    )]
    NotRevocation { path: PathBuf, typ: String },
    #[error(
        "{}: a revocation certificate for OpenPGP key {issuer}, which no trusted OpenPGP key file holds",
        .path.display()
    )]
    RevocationForUnknownKey { path: PathBuf, issuer: String },
    #[error(
        "{}: a revocation certificate that names OpenPGP key {issuer} but was not made by it",
        .path.display()
    )]
    BadRevocation { path: PathBuf, issuer: String },
}

/// One trusted key (every copy of it merged) and the files it came from.
#[derive(Debug, Clone)]
struct TrustedKey {
    key: SignedPublicKey,
    file: String,
}

/// The node's trusted OpenPGP keys (every key of every file). Copies of one key, in
/// one file or several, are merged into one key by primary fingerprint: every
/// self-signature, binding and revocation of any copy counts, so a stale copy next to
/// a revoked one cannot bring the key back. A standalone key revocation certificate
/// (`gpg --gen-revoke`, or gpg's `openpgp-revocs.d/FPR.rev` with its armor line's
/// leading `:` removed) revokes the key it was made by.
#[derive(Debug, Clone, Default)]
pub struct TrustedPgpKeys {
    keys: Vec<TrustedKey>,
}

/// What one key file holds.
#[derive(Default)]
struct FileContents {
    keys: Vec<SignedPublicKey>,
    /// Standalone key revocation certificates.
    revocations: Vec<Signature>,
}

impl TrustedPgpKeys {
    /// Every key in `paths`; a file that cannot be read, holds no public key, holds a
    /// secret key, a key of an algorithm berth cannot verify, or does not parse is an
    /// error naming it. Key files are read without blocking on a FIFO, only when they
    /// are regular files of at most [`MAX_KEY_FILE_BYTES`].
    pub fn load(paths: &[PathBuf]) -> Result<Self, PgpKeysError> {
        let mut files = Vec::new();
        for path in paths {
            let bytes = read_regular(path, MAX_KEY_FILE_BYTES).map_err(|e| read_error(path, e))?;
            files.push((path.clone(), parse_file(path, &bytes)?));
        }
        Self::from_files(files)
    }

    /// Merges the keys of every file by primary fingerprint, then applies the
    /// standalone revocations.
    fn from_files(files: Vec<(PathBuf, FileContents)>) -> Result<Self, PgpKeysError> {
        let mut keys: Vec<TrustedKey> = Vec::new();
        let mut by_fp: HashMap<Fingerprint, usize> = HashMap::new();
        let mut revocations = Vec::new();
        for (path, contents) in files {
            let file = path.display().to_string();
            for key in contents.keys {
                supported(&path, &key)?;
                match by_fp.get(&key.fingerprint()) {
                    Some(&i) => {
                        let known = &mut keys[i];
                        if !known.file.split(", ").any(|f| f == file) {
                            known.file = format!("{}, {file}", known.file);
                        }
                        merge(&mut known.key, key);
                    }
                    None => {
                        by_fp.insert(key.fingerprint(), keys.len());
                        keys.push(TrustedKey {
                            key,
                            file: file.clone(),
                        });
                    }
                }
            }
            revocations.extend(contents.revocations.into_iter().map(|r| (path.clone(), r)));
        }
        for (path, revocation) in revocations {
            let issuer = issuers(&revocation);
            let named: Vec<&mut TrustedKey> = keys
                .iter_mut()
                .filter(|k| names(&revocation, &k.key.fingerprint(), &k.key.legacy_key_id()))
                .collect();
            if named.is_empty() {
                return Err(PgpKeysError::RevocationForUnknownKey { path, issuer });
            }
            let mut applied = false;
            for known in named {
                if revocation.verify_key(&known.key.primary_key).is_ok() {
                    known
                        .key
                        .details
                        .revocation_signatures
                        .push(revocation.clone());
                    applied = true;
                }
            }
            if !applied {
                return Err(PgpKeysError::BadRevocation { path, issuer });
            }
        }
        Ok(Self { keys })
    }
}

fn read_error(path: &Path, e: ReadError) -> PgpKeysError {
    let path = path.to_path_buf();
    match e {
        ReadError::Io(source) => PgpKeysError::Read { path, source },
        ReadError::NotRegular => PgpKeysError::NotRegular { path },
        ReadError::TooLarge { .. } => PgpKeysError::TooLarge { path },
    }
}

/// rpgp's reason, without the byte arrays some of its errors carry, at most 160
/// characters.
fn sanitized(e: &pgp::errors::Error) -> String {
    let text = e.to_string();
    let cut = text.find(['[', '{']).unwrap_or(text.len());
    let short = text[..cut].trim_end_matches([' ', ':', ',', '(']);
    let short: String = short.chars().take(160).collect();
    if short.is_empty() {
        "it cannot be decoded".to_string()
    } else {
        short
    }
}

/// The keys and revocation certificates of one key file: armored (one or more
/// `PUBLIC KEY BLOCK`s) or binary (`gpg --export KEY`).
fn parse_file(path: &Path, bytes: &[u8]) -> Result<FileContents, PgpKeysError> {
    let parse = |e: &pgp::errors::Error| PgpKeysError::Parse {
        path: path.to_path_buf(),
        detail: sanitized(e),
    };
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(PgpKeysError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8_lossy(bytes);
    if text.lines().any(|l| l.trim_end() == SECRET_ARMOR) {
        return Err(PgpKeysError::Secret {
            path: path.to_path_buf(),
        });
    }
    let mut blocks = Vec::new();
    let armored = armor_blocks(bytes);
    if !armored.is_empty() {
        // rpgp reads one armor block; a file may hold several (`cat a.asc b.asc`), and
        // text before the first (gpg's revocation certificates start with an
        // explanation).
        for block in armored {
            let mut raw = Vec::new();
            Dearmor::new(std::io::BufReader::new(block))
                .read_to_end(&mut raw)
                .map_err(|e| PgpKeysError::Parse {
                    path: path.to_path_buf(),
                    detail: format!("its armor cannot be decoded: {e}"),
                })?;
            blocks.push(raw);
        }
    } else if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        // An OpenPGP packet header has its top bit set: a binary export.
        blocks.push(bytes.to_vec());
    } else {
        return Err(PgpKeysError::Parse {
            path: path.to_path_buf(),
            detail:
                "neither an armored (`-----BEGIN PGP PUBLIC KEY BLOCK-----`) nor a binary export"
                    .to_string(),
        });
    }
    let mut contents = FileContents::default();
    for raw in blocks {
        // What the block holds: a key, or signatures only (a revocation certificate).
        let mut first_key = None;
        let mut signatures = Vec::new();
        let mut error = None;
        for packet in PacketParser::new(raw.as_slice()) {
            match packet {
                Ok(Packet::SecretKey(_) | Packet::SecretSubkey(_)) => {
                    return Err(PgpKeysError::Secret {
                        path: path.to_path_buf(),
                    });
                }
                Ok(Packet::PublicKey(_)) => {
                    first_key.get_or_insert(true);
                }
                Ok(Packet::Signature(sig)) => {
                    first_key.get_or_insert(false);
                    signatures.push(sig);
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
                _ => {}
            }
        }
        match first_key {
            Some(true) => {
                for key in
                    SignedPublicKey::from_bytes_many(raw.as_slice()).map_err(|e| parse(&e))?
                {
                    contents.keys.push(key.map_err(|e| parse(&e))?);
                }
            }
            Some(false) => {
                for sig in signatures {
                    if sig.typ() != Some(SignatureType::KeyRevocation) {
                        return Err(PgpKeysError::NotRevocation {
                            path: path.to_path_buf(),
                            typ: sig
                                .typ()
                                .map_or_else(|| "unknown".to_string(), |t| format!("{t:?}")),
                        });
                    }
                    contents.revocations.push(sig);
                }
            }
            // Nothing but packets that do not parse.
            None => {
                if let Some(e) = error {
                    return Err(parse(&e));
                }
            }
        }
    }
    if contents.keys.is_empty() && contents.revocations.is_empty() {
        return Err(PgpKeysError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(contents)
}

/// The armor blocks of a key file, each from its `-----BEGIN ` line to the next one;
/// none when it has no such line.
fn armor_blocks(bytes: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at..].starts_with(BEGIN) {
            starts.push(at);
        }
        at = bytes[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| at + i + 1);
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, start)| &bytes[*start..starts.get(i + 1).copied().unwrap_or(bytes.len())])
        .collect()
}

/// Adds what `other` (a copy of the same key) says about the key to `into`.
fn merge(into: &mut SignedPublicKey, other: SignedPublicKey) {
    let details = &mut into.details;
    details
        .revocation_signatures
        .extend(other.details.revocation_signatures);
    details
        .direct_signatures
        .extend(other.details.direct_signatures);
    for user in other.details.users {
        match details.users.iter_mut().find(|u| u.id.id() == user.id.id()) {
            Some(known) => known.signatures.extend(user.signatures),
            None => details.users.push(user),
        }
    }
    for sub in other.public_subkeys {
        let fp = sub.key.fingerprint();
        match into
            .public_subkeys
            .iter_mut()
            .find(|s| s.key.fingerprint() == fp)
        {
            Some(known) => known.signatures.extend(sub.signatures),
            None => into.public_subkeys.push(sub),
        }
    }
}

/// The algorithm of `params` when berth cannot verify signatures made with it.
fn unsupported(params: &PublicParams) -> Option<String> {
    match params {
        PublicParams::RSA(_)
        | PublicParams::DSA(_)
        | PublicParams::Ed25519(_)
        | PublicParams::Ed448(_)
        | PublicParams::EdDSALegacy(EddsaLegacyPublicParams::Ed25519 { .. }) => None,
        PublicParams::ECDSA(p) if p.is_supported() => None,
        PublicParams::ECDSA(p) => Some(format!("ECDSA over {}", p.curve())),
        PublicParams::EdDSALegacy(EddsaLegacyPublicParams::Unsupported { curve, .. }) => {
            Some(format!("EdDSA over {curve}"))
        }
        PublicParams::ECDH(_) => Some("ECDH (an encryption algorithm)".to_string()),
        PublicParams::Elgamal(_) => Some("Elgamal (an encryption algorithm)".to_string()),
        PublicParams::X25519(_) | PublicParams::X448(_) => {
            Some("X25519/X448 (an encryption algorithm)".to_string())
        }
        _ => Some("an unknown algorithm".to_string()),
    }
}

/// Refuses a key whose primary key, or a subkey some binding lets sign, berth cannot
/// verify signatures of (rather than misreport every signature it makes).
fn supported(path: &Path, key: &SignedPublicKey) -> Result<(), PgpKeysError> {
    let primary_fp = hex(&key.fingerprint());
    let uid = key
        .details
        .users
        .first()
        .map(|u| format!(" ({})", String::from_utf8_lossy(u.id.id())))
        .unwrap_or_default();
    if let Some(algorithm) = unsupported(key.primary_key.public_params()) {
        return Err(PgpKeysError::UnsupportedAlgorithm {
            path: path.to_path_buf(),
            key: format!("OpenPGP key {primary_fp}{uid}"),
            algorithm,
        });
    }
    for sub in &key.public_subkeys {
        let signs = sub
            .signatures
            .iter()
            .any(|s| s.typ() == Some(SignatureType::SubkeyBinding) && s.key_flags().sign());
        if !signs {
            continue;
        }
        if let Some(algorithm) = unsupported(sub.key.public_params()) {
            return Err(PgpKeysError::UnsupportedAlgorithm {
                path: path.to_path_buf(),
                key: format!(
                    "OpenPGP subkey {} of key {primary_fp}{uid}",
                    hex(&sub.key.fingerprint())
                ),
                algorithm,
            });
        }
    }
    Ok(())
}

/// Why an OpenPGP signature does not vouch for the object. `key` names the key as
/// `OpenPGP key <FPR> (<user id>)` or `OpenPGP subkey <FPR> of key <FPR> (<user id>)`.
#[derive(Debug, thiserror::Error)]
pub enum PgpRefusal {
    /// `detail` is rpgp's reason, shortened (see `sanitized`).
    #[error("its OpenPGP signature cannot be decoded: {detail}")]
    Malformed { detail: String },
    #[error("its OpenPGP block is a {typ} signature, not a signature over a document")]
    SignatureType { typ: String },
    #[error(
        "its OpenPGP signature is a text-mode signature (type 0x01), which berth refuses: it would also vouch for the commit with other line ends (a new commit id); git signs in binary mode"
    )]
    TextMode,
    #[error(
        "its OpenPGP signature uses the hash {hash}, which berth refuses (SHA-1, MD5 and RIPEMD-160 are broken); sign with SHA-256 or stronger (gpg: `personal-digest-preferences SHA512 SHA384 SHA256` in gpg.conf, or `--digest-algo SHA256`)"
    )]
    WeakHash { hash: String },
    #[error("its OpenPGP signature names no issuer key")]
    NoIssuer,
    #[error(
        "it is signed by OpenPGP key {issuer}, which no trusted OpenPGP key holds (export it with `gpg --armor --export {issuer}` into a file listed in `source.trusted_pgp_keys`)"
    )]
    UnknownKey { issuer: String },
    #[error(
        "its OpenPGP signature expired at {} (its signer gave it an expiration time); signatures are judged against the current time {}",
        format_time(*.expired), format_time(*.now)
    )]
    SignatureExpired { expired: i64, now: i64 },
    #[error(
        "it is signed by {key}, created at {}, after its {} {}: a signature from before the key existed",
        format_time(*.created), .object.time_name(), format_time(*.at)
    )]
    BeforeKeyCreation {
        key: String,
        created: i64,
        at: i64,
        object: SignedObject,
    },
    #[error(
        "its signature by {key} says it was made at {}, before the key was created at {}",
        format_time(*.signed), format_time(*.created)
    )]
    SignedBeforeKeyCreation {
        key: String,
        created: i64,
        signed: i64,
    },
    #[error(
        "it is signed by {key}, which has no valid self-signature at its {} {}",
        .object.time_name(), format_time(*.at)
    )]
    NoSelfSignature {
        key: String,
        at: i64,
        object: SignedObject,
    },
    #[error(
        "it is signed by {key}, which expired at {}; its {} is {}",
        format_time(*.expired), .object.time_name(), format_time(*.at)
    )]
    Expired {
        key: String,
        expired: i64,
        at: i64,
        object: SignedObject,
    },
    #[error(
        "it is signed by {key}, which was revoked at {} ({reason}){}",
        format_time(*.revoked),
        if *.hard { "; a hard revocation voids every signature the key made" } else { "" }
    )]
    Revoked {
        key: String,
        revoked: i64,
        reason: String,
        hard: bool,
    },
    #[error("it is signed by {key}, which its self-signature does not allow to sign")]
    NotSigningKey { key: String },
    #[error(
        "it is signed by {key}, which has no valid binding to its primary key at its {} {}",
        .object.time_name(), format_time(*.at)
    )]
    UnboundSubkey {
        key: String,
        at: i64,
        object: SignedObject,
    },
    #[error(
        "it is signed by {key}, whose binding carries no valid back-signature (the subkey never agreed to belong to the key)"
    )]
    NoBackSignature { key: String },
    #[error(
        "its signature by {key} does not match its content: the object was changed after it was signed, or the signature was not made by that key (a signature can name any key as its issuer)"
    )]
    BadSignature { key: String },
}

impl PgpRefusal {
    /// A short snake_case name of the reason, for JSON and records (the SSH names
    /// where the reason is the same).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::SignatureType { .. } | Self::TextMode => "signature_type",
            Self::WeakHash { .. } => "weak_hash",
            Self::NoIssuer => "no_issuer",
            Self::UnknownKey { .. } => "unknown_key",
            Self::SignatureExpired { .. } => "signature_expired",
            Self::BeforeKeyCreation { .. } | Self::SignedBeforeKeyCreation { .. } => {
                "before_key_creation"
            }
            Self::NoSelfSignature { .. } => "no_self_signature",
            Self::Expired { .. } => "expired",
            Self::Revoked { .. } => "revoked",
            Self::NotSigningKey { .. } => "not_signing_key",
            Self::UnboundSubkey { .. } => "unbound_subkey",
            Self::NoBackSignature { .. } => "no_back_signature",
            Self::BadSignature { .. } => "bad_signature",
        }
    }
}

fn secs(t: Option<Timestamp>) -> u32 {
    t.map_or(0, |t| t.as_secs())
}

/// `FPR` as gpg prints it (upper-case hex).
fn hex(fp: &Fingerprint) -> String {
    format!("{fp:X}")
}

/// Data signatures berth accepts; SHA-1 (even collision-detecting), MD5, RIPEMD-160
/// and unknown hashes are refused.
fn strong(h: Option<HashAlgorithm>) -> bool {
    matches!(
        h,
        Some(
            HashAlgorithm::Sha224
                | HashAlgorithm::Sha256
                | HashAlgorithm::Sha384
                | HashAlgorithm::Sha512
                | HashAlgorithm::Sha3_256
                | HashAlgorithm::Sha3_512
        )
    )
}

/// The first revocation in `revs` that applies at `t`: a hard one always, a soft one
/// (superseded, retired) from its creation time on. (revoked at, reason, hard)
fn revoked_at(revs: &[&Signature], t: u32) -> Option<(i64, String, bool)> {
    revs.iter().find_map(|r| {
        let code = r.revocation_reason_code();
        let soft = matches!(
            code,
            Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired)
        );
        let created = secs(r.created());
        (!soft || created <= t).then(|| {
            let name = match code {
                None | Some(RevocationCode::NoReason) => "no reason given".to_string(),
                Some(RevocationCode::KeySuperseded) => "superseded".to_string(),
                Some(RevocationCode::KeyCompromised) => "compromised".to_string(),
                Some(RevocationCode::KeyRetired) => "retired".to_string(),
                Some(other) => format!("reason {}", u8::from(*other)),
            };
            (i64::from(created), name, !soft)
        })
    })
}

/// The end of a key's life (creation + the binding's key expiration time) when it is
/// at or before `t`.
fn expired_at(created: u32, binding: &Signature, t: u32) -> Option<i64> {
    let lifetime = binding.key_expiration_time()?.as_secs();
    if lifetime == 0 {
        return None;
    }
    let end = created.saturating_add(lifetime);
    (t >= end).then_some(i64::from(end))
}

/// The signature's issuers, as named in the refusal when no key holds them.
fn issuers(sig: &Signature) -> String {
    let fps: Vec<String> = sig.issuer_fingerprint().into_iter().map(hex).collect();
    if fps.is_empty() {
        let ids: Vec<String> = sig
            .issuer_key_id()
            .into_iter()
            .map(|id| id.as_ref().iter().map(|b| format!("{b:02X}")).collect())
            .collect();
        ids.join(", ")
    } else {
        fps.join(", ")
    }
}

/// Whether `sig` names the key `fp` (`id`) as its issuer.
fn names(sig: &Signature, fp: &Fingerprint, id: &KeyId) -> bool {
    sig.issuer_fingerprint().contains(&fp) || sig.issuer_key_id().contains(&id)
}

/// The signature that is in force at `t` among `items` (each with its creation time):
/// the newest one made at or before `t`; when every one is newer (gpg replaces a
/// self-signature or binding when the key is renewed, `gpg --quick-set-expire`), the
/// oldest one.
fn in_force<X>(items: &[X], created: impl Fn(&X) -> u32, t: u32) -> Option<&X> {
    items
        .iter()
        .filter(|x| created(x) <= t)
        .max_by_key(|x| created(x))
        .or_else(|| items.iter().min_by_key(|x| created(x)))
}

/// Verifies one armored OpenPGP signature over `payload` against `keys`, judged at
/// `at` (see the module documentation); `now` is the time its own expiration is
/// judged at.
pub fn check(
    armored: &[u8],
    payload: &[u8],
    at: i64,
    now: i64,
    object: SignedObject,
    keys: &TrustedPgpKeys,
) -> Result<Verified, PgpRefusal> {
    let t = u32::try_from(at.max(0)).unwrap_or(u32::MAX);
    let (detached, _) =
        DetachedSignature::from_armor_single(armored.trim_ascii()).map_err(|e| {
            PgpRefusal::Malformed {
                detail: sanitized(&e),
            }
        })?;
    let sig = &detached.signature;
    match sig.typ() {
        Some(SignatureType::Binary) => {}
        Some(SignatureType::Text) => return Err(PgpRefusal::TextMode),
        other => {
            return Err(PgpRefusal::SignatureType {
                typ: other.map_or_else(|| "unknown".to_string(), |t| format!("{t:?}")),
            });
        }
    }
    if !strong(sig.hash_alg()) {
        return Err(PgpRefusal::WeakHash {
            hash: match sig.hash_alg() {
                Some(HashAlgorithm::Sha1) => "SHA-1".to_string(),
                Some(HashAlgorithm::Md5) => "MD5".to_string(),
                Some(HashAlgorithm::Ripemd160) => "RIPEMD-160".to_string(),
                Some(other) => format!("{other:?}"),
                None => "unknown".to_string(),
            },
        });
    }
    if let Some(lifetime) = sig.signature_expiration_time().map(|d| d.as_secs())
        && lifetime != 0
    {
        let expired = i64::from(secs(sig.created())) + i64::from(lifetime);
        if now >= expired {
            return Err(PgpRefusal::SignatureExpired { expired, now });
        }
    }
    if sig.issuer_fingerprint().is_empty() && sig.issuer_key_id().is_empty() {
        return Err(PgpRefusal::NoIssuer);
    }
    let mut refusal = None;
    for trusted in &keys.keys {
        let key = &trusted.key;
        let mut candidates: Vec<Option<&SignedPublicSubKey>> = Vec::new();
        if names(sig, &key.fingerprint(), &key.legacy_key_id()) {
            candidates.push(None);
        }
        for sub in &key.public_subkeys {
            if names(sig, &sub.key.fingerprint(), &sub.key.legacy_key_id()) {
                candidates.push(Some(sub));
            }
        }
        for candidate in candidates {
            let judged = Judged {
                sig,
                payload,
                t,
                at,
                object,
            };
            match judged.by(trusted, candidate) {
                Ok(v) => return Ok(v),
                Err(r) => {
                    refusal.get_or_insert(r);
                }
            }
        }
    }
    Err(refusal.unwrap_or_else(|| PgpRefusal::UnknownKey {
        issuer: issuers(sig),
    }))
}

/// One signature, judged at a time.
struct Judged<'a> {
    sig: &'a Signature,
    payload: &'a [u8],
    /// The time as OpenPGP counts it, and as given.
    t: u32,
    at: i64,
    object: SignedObject,
}

impl Judged<'_> {
    /// Steps 3–6 with `subkey` (or the primary key) as the signing key.
    fn by(
        &self,
        trusted: &TrustedKey,
        subkey: Option<&SignedPublicSubKey>,
    ) -> Result<Verified, PgpRefusal> {
        let key = &trusted.key;
        let primary = &key.primary_key;
        let t = self.t;
        // The valid self-signatures: certifications (0x10–0x13) of a user id the key
        // has not revoked, and direct-key signatures (0x1F).
        let mut self_sigs: Vec<(&Signature, Option<String>)> = Vec::new();
        for user in &key.details.users {
            let own = |s: &&Signature| {
                s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
            };
            let revoked = user
                .signatures
                .iter()
                .filter(|s| s.typ() == Some(SignatureType::CertRevocation))
                .any(|s| own(&s));
            if revoked {
                continue;
            }
            let id = String::from_utf8_lossy(user.id.id()).into_owned();
            for s in user.signatures.iter().filter(|s| {
                matches!(
                    s.typ(),
                    Some(
                        SignatureType::CertGeneric
                            | SignatureType::CertPersona
                            | SignatureType::CertCasual
                            | SignatureType::CertPositive
                    )
                )
            }) {
                if own(&s) {
                    self_sigs.push((s, Some(id.clone())));
                }
            }
        }
        for s in &key.details.direct_signatures {
            if s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok() {
                self_sigs.push((s, None));
            }
        }
        let user_id = self_sigs
            .iter()
            .filter(|(s, id)| id.is_some() && s.is_primary())
            .chain(self_sigs.iter().filter(|(_, id)| id.is_some()))
            .find_map(|(_, id)| id.clone())
            .unwrap_or_default();
        let primary_fp = hex(&key.fingerprint());
        let named = |fp: &str| {
            let who = if user_id.is_empty() {
                String::new()
            } else {
                format!(" ({user_id})")
            };
            if fp == primary_fp {
                format!("OpenPGP key {primary_fp}{who}")
            } else {
                format!("OpenPGP subkey {fp} of key {primary_fp}{who}")
            }
        };
        let primary_created = primary.created_at().as_secs();
        if primary_created > t {
            return Err(PgpRefusal::BeforeKeyCreation {
                key: named(&primary_fp),
                created: i64::from(primary_created),
                at: self.at,
                object: self.object,
            });
        }
        let Some((current, _)) = in_force(&self_sigs, |(s, _)| secs(s.created()), t) else {
            return Err(PgpRefusal::NoSelfSignature {
                key: named(&primary_fp),
                at: self.at,
                object: self.object,
            });
        };
        if let Some(expired) = expired_at(primary_created, current, t) {
            return Err(PgpRefusal::Expired {
                key: named(&primary_fp),
                expired,
                at: self.at,
                object: self.object,
            });
        }
        let revocations: Vec<&Signature> = key
            .details
            .revocation_signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::KeyRevocation))
            .filter(|s| s.verify_key(primary).is_ok())
            .collect();
        if let Some((revoked, reason, hard)) = revoked_at(&revocations, t) {
            return Err(PgpRefusal::Revoked {
                key: named(&primary_fp),
                revoked,
                reason,
                hard,
            });
        }
        let (signing_fp, algorithm) = match subkey {
            None => {
                let flags = current.key_flags();
                if !flags.sign() && flags != Default::default() {
                    return Err(PgpRefusal::NotSigningKey {
                        key: named(&primary_fp),
                    });
                }
                self.not_before(primary_created, &named(&primary_fp))?;
                self.sig
                    .verify(primary, self.payload)
                    .map_err(|_| PgpRefusal::BadSignature {
                        key: named(&primary_fp),
                    })?;
                (primary_fp.clone(), primary.algorithm())
            }
            Some(sub) => {
                let fp = hex(&sub.key.fingerprint());
                let name = named(&fp);
                let created = sub.key.created_at().as_secs();
                if created > t {
                    return Err(PgpRefusal::BeforeKeyCreation {
                        key: name,
                        created: i64::from(created),
                        at: self.at,
                        object: self.object,
                    });
                }
                let mut bindings: Vec<&Signature> = Vec::new();
                let mut revocations: Vec<&Signature> = Vec::new();
                for s in &sub.signatures {
                    if s.verify_subkey_binding(primary, &sub.key).is_err() {
                        continue;
                    }
                    match s.typ() {
                        Some(SignatureType::SubkeyBinding) => bindings.push(s),
                        Some(SignatureType::SubkeyRevocation) => revocations.push(s),
                        _ => {}
                    }
                }
                let Some(binding) = in_force(&bindings, |s| secs(s.created()), t) else {
                    return Err(PgpRefusal::UnboundSubkey {
                        key: name,
                        at: self.at,
                        object: self.object,
                    });
                };
                if !binding.key_flags().sign() {
                    return Err(PgpRefusal::NotSigningKey { key: name });
                }
                let backed = binding
                    .embedded_signature()
                    .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok());
                if !backed {
                    return Err(PgpRefusal::NoBackSignature { key: name });
                }
                if let Some(expired) = expired_at(created, binding, t) {
                    return Err(PgpRefusal::Expired {
                        key: name,
                        expired,
                        at: self.at,
                        object: self.object,
                    });
                }
                if let Some((revoked, reason, hard)) = revoked_at(&revocations, t) {
                    return Err(PgpRefusal::Revoked {
                        key: name,
                        revoked,
                        reason,
                        hard,
                    });
                }
                self.not_before(created, &name)?;
                self.sig
                    .verify(&sub.key, self.payload)
                    .map_err(|_| PgpRefusal::BadSignature { key: name })?;
                (fp, sub.key.algorithm())
            }
        };
        Ok(Verified {
            object: self.object,
            format: SignatureFormat::OpenPgp,
            principal: user_id,
            primary_key: (signing_fp != primary_fp).then_some(primary_fp),
            key_fingerprint: signing_fp,
            algorithm: format!("{algorithm:?}"),
            signed_at: self.at,
            listed_at: trusted.file.clone(),
        })
    }

    /// A signature whose own creation time is before its key existed is refused.
    fn not_before(&self, key_created: u32, key: &str) -> Result<(), PgpRefusal> {
        match self.sig.created() {
            Some(made) if made.as_secs() < key_created => {
                Err(PgpRefusal::SignedBeforeKeyCreation {
                    key: key.to_string(),
                    created: i64::from(key_created),
                    signed: i64::from(made.as_secs()),
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "pgp_tests.rs"]
mod tests;
