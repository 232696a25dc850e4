//! Keyless (Sigstore) signatures, verified offline against a trusted root
//! (`policy.trusted_root`, the `trusted_root.json` format) and the node's trusted
//! identities (`policy.trusted_identities`), and the transparency-log entries and
//! timestamps of keyed bundles when a trusted root is configured.
//!
//! Contract — a bundle whose verification material is a certificate is accepted only
//! when all of these hold:
//! - the DSSE signature verifies with the certificate's key;
//! - it carries at least one transparency-log entry, and every entry is bound to the
//!   bundle (a `dsse` body names the payload's SHA-256, the signature and the
//!   certificate; a `hashedrekord` body the artifact's digest, the signature and the
//!   signer), its signed entry timestamp verifies with the key of a log the trusted root
//!   lists (at its integrated time), and its RFC 6962 inclusion proof (at the proof's own
//!   shard index) and the signed checkpoint naming the proof's root verify;
//! - every RFC 3161 timestamp verifies against a timestamp authority of the trusted root
//!   and its message imprint is the SHA-256 of the signature bytes;
//! - at every verified signing time (the integrated times and the timestamps' times,
//!   never the node's clock) the certificate is valid (bounds included) and chains to a
//!   Fulcio certificate authority of the trusted root trusted at that time;
//! - the certificate allows code signing, and its OIDC issuer (extension
//!   1.3.6.1.4.1.57264.1.8, else .1.1) and one of its subject alternative names (URI,
//!   e-mail, or Fulcio's username otherName) match a trusted identity; an error names
//!   the identity found and those expected;
//! - the chain: every authority is a CA (basicConstraints) allowed to sign certificates
//!   (keyUsage keyCertSign when present) with this many CAs below it
//!   (pathLenConstraint); the leaf is not a CA; no certificate has a critical extension
//!   berth does not process (a CT precertificate's poison included) or an extension
//!   twice.
//!
//! Order and bounds: the cheap checks ([`verify_signer`]: signature, usage, identity;
//! the caller then checks the digest) come before the evidence and the chain
//! ([`verify_keyless`]); at most [`MAX_TLOG_ENTRIES`] entries and [`MAX_TIMESTAMPS`]
//! timestamps, none twice; the chain is checked once per distinct signing time. Text
//! of the bundle reaches errors through [`shown`] (escaped, cut).
//!
//! Not checked: certificate-transparency proofs (SCTs) of the certificate. Rekor v2
//! entries (an Ed25519 log key, `0.0.2` entries) are refused by name.

mod identity;
mod rekor;
mod root;
mod tsa;
mod x509;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod forged_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub use identity::IdentityMatcher;
pub use rekor::TlogEntry;
pub use root::{RootError, TrustedRoot};
pub(crate) use x509::Cert;

use super::BoxError;

/// What was signed: a DSSE payload (its decoded bytes) or a blob (its SHA-256), with the
/// signature bytes.
#[derive(Debug, Clone, Copy)]
pub enum Artifact<'a> {
    Dsse {
        payload: &'a [u8],
        signature: &'a [u8],
    },
    /// A `hashedrekord` entry's blob (blob bundles; images are DSSE).
    #[cfg_attr(not(test), allow(dead_code))]
    Blob {
        digest: [u8; 32],
        signature: &'a [u8],
    },
}

impl Artifact<'_> {
    fn signature(&self) -> &[u8] {
        match self {
            Artifact::Dsse { signature, .. } | Artifact::Blob { signature, .. } => signature,
        }
    }
}

/// Who signed: a certificate (keyless) or a key (its DER SubjectPublicKeyInfo).
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    Certificate(&'a Cert),
    Key(&'a [u8]),
}

/// What the log entries and timestamps of a bundle established.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The (global) log index of the first entry.
    pub log_index: Option<u64>,
    /// Every verified signing time, seconds since the epoch.
    pub times: Vec<u64>,
}

/// A keyless signature that verified: the identity it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessVerified {
    pub issuer: String,
    pub subject: String,
    pub evidence: Evidence,
}

/// One certificate or timestamp authority that did not vouch, and why.
#[derive(Debug)]
pub struct ChainRejection {
    pub authority: String,
    pub error: Box<KeylessError>,
}

impl fmt::Display for ChainRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "authority {}: {}",
            self.authority,
            crate::util::error_chain(&*self.error)
        )
    }
}

/// The index of the first of `authorities` that `vouches` for, or why each did not.
fn first_vouching(
    authorities: &[root::CertAuthority],
    vouches: impl Fn(&root::CertAuthority) -> Result<(), KeylessError>,
) -> Result<usize, Vec<ChainRejection>> {
    let mut rejections = Vec::new();
    for (index, authority) in authorities.iter().enumerate() {
        match vouches(authority) {
            Ok(()) => return Ok(index),
            Err(error) => rejections.push(ChainRejection {
                authority: authority.name(index),
                error: Box::new(error),
            }),
        }
    }
    Err(rejections)
}

fn rejection_list(list: &[ChainRejection]) -> String {
    if list.is_empty() {
        return "the trusted root lists none".to_string();
    }
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a keyless signature, a log entry or a timestamp did not verify.
#[derive(Debug, thiserror::Error)]
pub enum KeylessError {
    #[error("the {what} is not valid base64")]
    Base64 {
        what: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("the {what} is not a valid {expected}")]
    Der {
        what: String,
        expected: &'static str,
        #[source]
        source: der::Error,
    },
    #[error("the {what} uses {algorithm}, which berth does not verify")]
    Algorithm { what: String, algorithm: String },
    #[error("the {what} is not made with a valid public key")]
    PublicKey {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("the {what} is not a DER-encoded ECDSA signature")]
    SignatureDer {
        what: String,
        #[source]
        source: p256::ecdsa::Error,
    },
    #[error("the {what} does not verify")]
    BadSignature { what: String },
    #[error(
        "the signing time {time} is outside the validity of the {what} ({not_before} to {not_after})"
    )]
    OutsideValidity {
        what: String,
        time: String,
        not_before: String,
        not_after: String,
    },
    #[error("the certificate's issuer `{issuer}` is not the next certificate `{parent}`")]
    IssuerName { issuer: String, parent: String },
    #[error("certificate {certificate} is not a certificate authority (basicConstraints)")]
    NotCa { certificate: String },
    #[error(
        "certificate {certificate} allows {max} intermediate authorities below it (pathLenConstraint), the chain has {below}"
    )]
    PathLength {
        certificate: String,
        max: u8,
        below: usize,
    },
    #[error("certificate {certificate} may not sign certificates (keyUsage without keyCertSign)")]
    NoKeyCertSign { certificate: String },
    #[error("{certificate} is a certificate authority (basicConstraints cA), not a signer")]
    LeafIsCa { certificate: String },
    #[error(
        "certificate {certificate} has the critical extension {oid}, which berth does not process"
    )]
    CriticalExtension { certificate: String, oid: String },
    #[error("the {what} has the extension {oid} twice")]
    DuplicateExtension { what: String, oid: String },
    #[error("certificate {certificate} is not for {usage} (extended key usage)")]
    Usage { certificate: String, usage: String },
    #[error("the certificate has no OIDC issuer extension (1.3.6.1.4.1.57264.1.8 or .1.1)")]
    NoIssuer,
    #[error(
        "the certificate (issuer {issuer}) has no URI, e-mail or username (1.3.6.1.4.1.57264.1.7) subject alternative name: it names no identity"
    )]
    NoSubject { issuer: String },
    #[error(
        "the certificate does not chain to a certificate authority of the trusted root at {time}: {}",
        rejection_list(rejections)
    )]
    NoChain {
        time: String,
        rejections: Vec<ChainRejection>,
    },
    #[error("it is trusted {valid_for}, not at {time}")]
    AuthorityTime { time: String, valid_for: String },
    #[error("the bundle carries no transparency-log entry (a keyless signature needs one)")]
    NoLogEntry,
    #[error("the log entry is from log {log_id}, which the trusted root does not list")]
    UnknownLog { log_id: String },
    #[error(
        "the log entry is from {log}, a Rekor v2 log (an Ed25519 key or a `0.0.2` entry): berth verifies only Rekor v1 entries; sign with a Rekor v1 log"
    )]
    RekorV2 { log: String },
    #[error(
        "the log entry of {log} has no signed entry timestamp (inclusion promise), which a Rekor v1 entry carries"
    )]
    NoPromise { log: String },
    #[error("the trusted root gives no key for log {log}")]
    LogWithoutKey { log: String },
    #[error(
        "the log entry's integrated time {time} is outside the trust of log {log}'s key ({valid_for})"
    )]
    LogKeyTime {
        log: String,
        time: String,
        valid_for: String,
    },
    #[error("the log entry has no inclusion proof")]
    NoInclusionProof,
    #[error("the log entry's inclusion proof does not verify: {problem}")]
    Inclusion { problem: &'static str },
    #[error("the log entry's checkpoint {problem}")]
    Checkpoint { problem: &'static str },
    #[error("the log entry's body is not a dsse or hashedrekord entry (JSON)")]
    BodyJson(#[source] serde_json::Error),
    #[error("the log entry is a `{found}` entry, not `{expected}`")]
    BodyKind { found: String, expected: String },
    #[error(
        "the log entry's {field} is not the bundle's: the entry is not bound to this signature"
    )]
    Binding { field: &'static str },
    #[error("the timestamp {problem}")]
    Timestamp { problem: &'static str },
    #[error("the timestamp's message imprint is not the hash of the signature")]
    Imprint,
    #[error(
        "the timestamp (time {time}) is not signed by a timestamp authority of the trusted root: {}",
        rejection_list(rejections)
    )]
    NoTimestampAuthority {
        time: String,
        rejections: Vec<ChainRejection>,
    },
    #[error("`{pattern}` is not a valid regular expression")]
    Regex {
        pattern: String,
        #[source]
        source: regex_lite::Error,
    },
    #[error("the bundle carries {count} {what}; berth reads at most {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("the bundle carries the same {what} twice")]
    Duplicate { what: &'static str },
    #[error(
        "no trusted identities are configured to verify a keyless signature (`policy.trusted_identities`, or --identity ISSUER=SUBJECT)"
    )]
    NoTrustedIdentities,
    #[error(
        "the certificate names identity {}={}, which is not trusted (expected {})",
        shown(issuer),
        subjects.iter().map(|s| shown(s)).collect::<Vec<_>>().join(","),
        expected.join(" or ")
    )]
    /// `issuer` and `subjects` are the certificate's own text (unescaped, uncut): only
    /// the message escapes and cuts them ([`shown`]).
    Identity {
        issuer: String,
        subjects: Vec<String>,
        expected: Vec<String>,
    },
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const MAX_RFC3339: u64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SSZ` of `t` seconds since the epoch; a time past the year 9999
/// (which only a forged, unsigned field can carry) as `<t> seconds since the epoch`.
/// Total: never panics.
pub(crate) fn rfc3339(t: u64) -> String {
    if t > MAX_RFC3339 {
        return format!("{t} seconds since the epoch");
    }
    match std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(t)) {
        Some(at) => humantime::format_rfc3339_seconds(at).to_string(),
        None => format!("{t} seconds since the epoch"),
    }
}

fn decode(what: &'static str, text: &str) -> Result<Vec<u8>, KeylessError> {
    STANDARD
        .decode(text)
        .map_err(|source| KeylessError::Base64 { what, source })
}

/// A bundle's log entries and timestamps (base64 `signedTimestamp`s).
#[derive(Debug, Clone, Copy)]
pub struct Material<'a> {
    pub entries: &'a [TlogEntry],
    pub timestamps: &'a [String],
}

/// The most transparency-log entries a bundle may carry (sigstore-go's
/// `MaxAllowedTlogEntries`); a real one carries one.
pub const MAX_TLOG_ENTRIES: usize = 32;
/// The most RFC 3161 timestamps a bundle may carry (sigstore-go's
/// `MaxAllowedTimestamps`); a real one carries at most one.
pub const MAX_TIMESTAMPS: usize = 32;

/// Refuses more entries or timestamps than a bundle carries, and repeated ones, before
/// any of them costs a signature check; returns the timestamps' tokens. A timestamp is
/// repeated when its token is: the TimeStampResp around it (status text included) is
/// not signed, so the same token wrapped twice is the same timestamp.
fn check_counts(material: &Material<'_>) -> Result<Vec<Vec<u8>>, KeylessError> {
    if material.entries.len() > MAX_TLOG_ENTRIES {
        return Err(KeylessError::TooMany {
            what: "transparency-log entries",
            count: material.entries.len(),
            max: MAX_TLOG_ENTRIES,
        });
    }
    if material.timestamps.len() > MAX_TIMESTAMPS {
        return Err(KeylessError::TooMany {
            what: "timestamps",
            count: material.timestamps.len(),
            max: MAX_TIMESTAMPS,
        });
    }
    let (mut places, mut bodies) = (BTreeSet::new(), BTreeSet::new());
    for e in material.entries {
        let place = places.insert((e.log_id.key_id.as_str(), e.log_index.0));
        if !place || !bodies.insert(e.canonicalized_body.as_str()) {
            return Err(KeylessError::Duplicate {
                what: "transparency-log entry",
            });
        }
    }
    let mut tokens: Vec<Vec<u8>> = Vec::with_capacity(material.timestamps.len());
    for text in material.timestamps {
        let token = tsa::token_of(&decode("timestamp", text)?)?;
        if tokens.contains(&token) {
            return Err(KeylessError::Duplicate { what: "timestamp" });
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Verifies every log entry and timestamp of a bundle for `artifact` by `signer`. The
/// times of the evidence are sorted and distinct.
pub fn verify_evidence(
    material: &Material<'_>,
    artifact: &Artifact<'_>,
    signer: &Signer<'_>,
    root: &TrustedRoot,
) -> Result<Evidence, KeylessError> {
    let tokens = check_counts(material)?;
    let mut evidence = Evidence::default();
    for entry in material.entries {
        let time = rekor::verify_entry(entry, artifact, signer, root)?;
        evidence.log_index.get_or_insert(entry.log_index.0);
        evidence.times.push(time);
    }
    for token in &tokens {
        evidence
            .times
            .push(tsa::verify_token(token, artifact.signature(), &root.tsas)?);
    }
    evidence.times.sort_unstable();
    evidence.times.dedup();
    Ok(evidence)
}

/// Parses the bundle's certificate (base64 DER).
pub fn parse_certificate(b64: &str) -> Result<Cert, KeylessError> {
    Cert::parse(decode("certificate", b64)?, "bundle's certificate")
}

/// The identity a certificate names, matched against a trusted identity; not yet
/// chained to a certificate authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedIdentity {
    pub issuer: String,
    pub subject: String,
}

/// The cheap half of a keyless signature, done before any log entry, timestamp or
/// chain is checked: the signature of `artifact` over its pre-authentication encoding
/// `pae` by `leaf`, the leaf's code-signing usage, and its identity against
/// `identities`. What it returns is only a claim until [`verify_keyless`] succeeds.
pub fn verify_signer(
    leaf: &Cert,
    pae: &[u8],
    artifact: &Artifact<'_>,
    identities: &[IdentityMatcher],
) -> Result<ClaimedIdentity, KeylessError> {
    if identities.is_empty() {
        return Err(KeylessError::NoTrustedIdentities);
    }
    let spki = leaf.spki()?;
    let what = "DSSE signature (with the certificate's key)";
    let hash = x509::Hash::of_key(&spki, what)?;
    x509::verify_ecdsa(&spki, hash, pae, artifact.signature(), what)?;
    leaf.require_usage(x509::EKU_CODE_SIGNING, "codeSigning")?;
    let (issuer, subjects) = leaf.identity()?;
    let subject = subjects
        .iter()
        .find(|s| identities.iter().any(|m| m.matches(&issuer, s)))
        .cloned()
        .ok_or_else(|| KeylessError::Identity {
            issuer: issuer.clone(),
            subjects: subjects.clone(),
            expected: identities.iter().map(ToString::to_string).collect(),
        })?;
    Ok(ClaimedIdentity { issuer, subject })
}

/// The expensive half of a keyless signature whose signer [`verify_signer`] accepted:
/// its log entries and timestamps, then the certificate's validity and chain at every
/// distinct verified signing time.
pub fn verify_keyless(
    leaf: &Cert,
    claimed: ClaimedIdentity,
    artifact: &Artifact<'_>,
    material: &Material<'_>,
    root: &TrustedRoot,
) -> Result<KeylessVerified, KeylessError> {
    if material.entries.is_empty() {
        return Err(KeylessError::NoLogEntry);
    }
    let evidence = verify_evidence(material, artifact, &Signer::Certificate(leaf), root)?;
    for &t in &evidence.times {
        leaf.require_valid_at(t, "certificate")?;
        x509::chain(leaf, &root.cas, t)?;
    }
    Ok(KeylessVerified {
        issuer: claimed.issuer,
        subject: claimed.subject,
        evidence,
    })
}

/// The longest text of a bundle (unsigned, or signed by a key not yet trusted) an
/// error repeats.
const MAX_SHOWN: usize = 200;

/// `text` as an error may show it: control and bidirectional characters escaped
/// (`berth_spec::diag::printable`), cut after [`MAX_SHOWN`] characters.
pub(crate) fn shown(text: &str) -> String {
    let cut: String = text.chars().take(MAX_SHOWN).collect();
    let mut out = berth_spec::diag::printable(&cut).into_owned();
    if cut.len() < text.len() {
        out.push('…');
    }
    out
}
