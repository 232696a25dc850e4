//! OpenPGP signatures on commits and annotated tags (`source.trusted_pgp_keys`),
//! verified in-process against armored public keys. rpgp parses the packets and checks
//! each signature's cryptography; whether a key was valid when the object was signed
//! is decided here, at the committer (or tagger) time `t`, as RFC 9580 has it:
//!
//! 1. the block is one detached signature over a document (type binary or text), made
//!    with a strong hash: SHA-1, MD5 and RIPEMD-160 are refused;
//! 2. an issuer it names (fingerprint or key id) is the primary key or a subkey of a
//!    trusted key;
//! 3. the primary key existed at `t` and has a valid self-signature made at or before
//!    `t` (the newest such one is current); the key had not expired at `t` (creation +
//!    the current self-signature's key expiration time, expired at that second);
//! 4. no revocation applies: a hard one (no reason, compromised, or any other code)
//!    voids every signature the key made, whenever it was made; a soft one (superseded,
//!    retired) only from its own creation time on;
//! 5. a signing subkey existed at `t`, has a valid binding made at or before `t` that
//!    allows signing and carries the subkey's back-signature, and is neither expired
//!    nor revoked at `t` by the same rules; a primary key that signs must be allowed
//!    to by its current self-signature;
//! 6. the signature was not made before its key existed, and it is valid over the
//!    signed data (the object without its signature).
//!
//! Self-signatures that do not verify (and third-party certifications) are ignored,
//! never fatal: a key exported with others' certifications still works.

use std::io::Read;
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{RevocationCode, Signature, SignatureType};
use pgp::types::{Fingerprint, KeyDetails, KeyId, Tag, Timestamp};

use super::verify::{SignatureFormat, SignedObject, Verified, format_time};

/// The armor line of a secret key, which must never sit on a node.
const SECRET_ARMOR: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";

/// Why the trusted OpenPGP keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PgpKeysError {
    #[error("cannot read the OpenPGP key file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an armored OpenPGP public key (`gpg --export --armor`): {source}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: pgp::errors::Error,
    },
    #[error(
        "{}: holds a secret key; only public keys (`gpg --export --armor KEY`) belong on a node",
        .path.display()
    )]
    Secret { path: PathBuf },
    #[error("{}: holds no OpenPGP public key", .path.display())]
    Empty { path: PathBuf },
}

/// One trusted key and the file it came from.
#[derive(Debug, Clone)]
struct TrustedKey {
    key: SignedPublicKey,
    file: String,
}

/// The node's trusted OpenPGP keys (every key of every file).
#[derive(Debug, Clone, Default)]
pub struct TrustedPgpKeys {
    keys: Vec<TrustedKey>,
}

impl TrustedPgpKeys {
    /// Every key in `paths`; a file that cannot be read, holds no public key, holds a
    /// secret key or does not parse is an error naming it.
    pub fn load(paths: &[PathBuf]) -> Result<Self, PgpKeysError> {
        let mut keys = Vec::new();
        for path in paths {
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|source| PgpKeysError::Read {
                    path: path.clone(),
                    source,
                })?;
            keys.extend(Self::parse(path, &bytes)?.keys);
        }
        Ok(Self { keys })
    }

    /// The keys of one armored file's contents, `path` naming it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, PgpKeysError> {
        let text = String::from_utf8_lossy(bytes);
        if text.lines().any(|l| l.trim_end() == SECRET_ARMOR) {
            return Err(PgpKeysError::Secret {
                path: path.to_path_buf(),
            });
        }
        let parse = |source| PgpKeysError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let file = path.display().to_string();
        let mut keys = Vec::new();
        // rpgp reads one armor block; a file may hold several (`cat a.asc b.asc`).
        for block in armor_blocks(bytes) {
            let (parsed, _headers) = SignedPublicKey::from_armor_many(block).map_err(parse)?;
            for key in parsed {
                keys.push(TrustedKey {
                    key: key.map_err(parse)?,
                    file: file.clone(),
                });
            }
        }
        if keys.is_empty() {
            return Err(PgpKeysError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { keys })
    }
}

/// The armor blocks of a key file, each from its `BEGIN PGP PUBLIC KEY BLOCK` line to
/// the next one; the whole file when it has none (for the parser to name what is wrong).
fn armor_blocks(bytes: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN PGP PUBLIC KEY BLOCK-----";
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
    if starts.is_empty() {
        return vec![bytes];
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, start)| &bytes[*start..starts.get(i + 1).copied().unwrap_or(bytes.len())])
        .collect()
}

/// Why an OpenPGP signature does not vouch for the object. `key` names the key as
/// `OpenPGP key <FPR> (<user id>)` or `OpenPGP subkey <FPR> of key <FPR> (<user id>)`.
#[derive(Debug, thiserror::Error)]
pub enum PgpRefusal {
    #[error("its OpenPGP signature cannot be decoded: {source}")]
    Malformed {
        #[source]
        source: pgp::errors::Error,
    },
    #[error("its OpenPGP block is a {typ} signature, not a signature over a document")]
    SignatureType { typ: String },
    #[error(
        "its OpenPGP signature uses the hash {hash}, which berth refuses (SHA-1, MD5 and RIPEMD-160 are broken); sign with SHA-256 or stronger"
    )]
    WeakHash { hash: String },
    #[error("its OpenPGP signature names no issuer key")]
    NoIssuer,
    #[error("it is signed by OpenPGP key {issuer}, which no trusted OpenPGP key holds")]
    UnknownKey { issuer: String },
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
        "its signature by {key} does not match its content: the object was changed after it was signed"
    )]
    BadSignature { key: String },
}

impl PgpRefusal {
    /// A short snake_case name of the reason, for JSON and records (the SSH names
    /// where the reason is the same).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::SignatureType { .. } => "signature_type",
            Self::WeakHash { .. } => "weak_hash",
            Self::NoIssuer => "no_issuer",
            Self::UnknownKey { .. } => "unknown_key",
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

/// Verifies one armored OpenPGP signature over `payload` against `keys`, judged at
/// `at` (see the module documentation).
pub fn check(
    armored: &[u8],
    payload: &[u8],
    at: i64,
    object: SignedObject,
    keys: &TrustedPgpKeys,
) -> Result<Verified, PgpRefusal> {
    let t = u32::try_from(at.max(0)).unwrap_or(u32::MAX);
    let (detached, _) = DetachedSignature::from_armor_single(armored.trim_ascii())
        .map_err(|source| PgpRefusal::Malformed { source })?;
    let sig = &detached.signature;
    match sig.typ() {
        Some(SignatureType::Binary | SignatureType::Text) => {}
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
    let by_fp = sig.issuer_fingerprint();
    let by_id = sig.issuer_key_id();
    if by_fp.is_empty() && by_id.is_empty() {
        return Err(PgpRefusal::NoIssuer);
    }
    let names = |fp: &Fingerprint, id: &KeyId| by_fp.contains(&fp) || by_id.contains(&id);
    let mut refusal = None;
    for trusted in &keys.keys {
        let key = &trusted.key;
        let mut candidates: Vec<Option<&SignedPublicSubKey>> = Vec::new();
        if names(&key.fingerprint(), &key.legacy_key_id()) {
            candidates.push(None);
        }
        for sub in &key.public_subkeys {
            if names(&sub.key.fingerprint(), &sub.key.legacy_key_id()) {
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
        // The user ids whose self-signature verifies and was made by `t`.
        let mut self_sigs: Vec<(&Signature, Option<String>)> = Vec::new();
        for user in &key.details.users {
            for s in &user.signatures {
                if secs(s.created()) <= t
                    && s.verify_certification(primary, Tag::UserId, &user.id)
                        .is_ok()
                {
                    let id = String::from_utf8_lossy(user.id.id()).into_owned();
                    self_sigs.push((s, Some(id)));
                }
            }
        }
        for s in &key.details.direct_signatures {
            if secs(s.created()) <= t && s.verify_key(primary).is_ok() {
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
        let Some((current, _)) = self_sigs.iter().max_by_key(|(s, _)| secs(s.created())) else {
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
                        Some(SignatureType::SubkeyBinding) if secs(s.created()) <= t => {
                            bindings.push(s);
                        }
                        Some(SignatureType::SubkeyRevocation) => revocations.push(s),
                        _ => {}
                    }
                }
                let Some(binding) = bindings.iter().max_by_key(|s| secs(s.created())) else {
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
