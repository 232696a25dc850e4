//! Sigstore bundles (v0.3) as cosign 3 writes them for `cosign sign --key`
//! (security.md §3.2): verifying one against the node's trusted keys, and making one.
//!
//! Contract:
//! - A bundle signs image manifest `D` when it is a v0.3 bundle with a `dsseEnvelope`
//!   whose `payloadType` is `application/vnd.in-toto+json`, one of its signatures is a
//!   DER ECDSA P-256/SHA-256 signature over the DSSE pre-authentication encoding
//!   (`DSSEv1 SP len(type) SP type SP len(body) SP body`) of the decoded payload by a
//!   trusted key, and the payload (parsed only after the signature verified) is an
//!   in-toto Statement (v1 or v0.1) with `predicateType` [`COSIGN_SIGN_PREDICATE`] and a
//!   subject whose `sha256` digest is `D`. No `predicate` field is required.
//! - Nothing outside the payload and the signature is trusted:
//!   `verificationMaterial.publicKey.hint` only picks which key to try first, and a
//!   signature's `keyid` is ignored.
//! - Without a trusted root, keyed bundles are judged by their key alone: a
//!   transparency-log entry or a timestamp they carry is not checked, and
//!   [`BundleVerified::unchecked`] says so. With one, every entry and timestamp they
//!   carry must verify ([`keyless::verify_evidence`]).
//! - A bundle whose verification material is a certificate (or a chain) is keyless: it
//!   is refused without a trusted root, else verified by [`keyless::verify_keyless`]
//!   (chain, identity, log entry, timestamps) before its statement is read.
//! - [`sign_bundle`] writes what `cosign sign --key` writes without a log upload.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use p256::ecdsa::DerSignature;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::EncodePublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keyless::{self, Artifact, KeylessError, Material, TlogEntry};
use super::{SignatureError, SigningKey, Trust, TrustedKey, Voucher};

/// The media type of a Sigstore bundle v0.3 (and the referrer's `artifactType`).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The in-toto predicate type of a cosign image signature.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// The DSSE payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The largest bundle berth reads (a keyed bundle is well under 4 KiB; a keyless one
/// with a log entry and a timestamp under 16 KiB).
pub const MAX_BUNDLE_SIZE: usize = 128 << 10;

/// The older spelling of the v0.3 media type, which clients must also accept.
const BUNDLE_MEDIA_TYPE_PARAM: &str = "application/vnd.dev.sigstore.bundle+json;version=0.3";
const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";

/// A bundle that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleVerified {
    /// Who vouched: the trusted key (its name and fingerprint), or the identity of a
    /// keyless signature (with its log index).
    pub voucher: Voucher,
    /// The global index of its first transparency-log entry, when one was verified.
    pub log_index: Option<u64>,
    /// The verified signing times (log integrated times, timestamps), in seconds since
    /// the epoch.
    pub signed_at: Vec<u64>,
    /// What the bundle carries that was not checked (keyed bundles without a trusted
    /// root are judged by their key alone): `"transparency-log entry"`, `"timestamp"`.
    pub unchecked: Vec<String>,
}

/// Why a bundle was refused, or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bundle is larger than the {max} bytes berth reads ({size} bytes read)")]
    TooLarge { size: usize, max: usize },
    #[error("the bundle is not a Sigstore bundle (JSON)")]
    Json(#[source] serde_json::Error),
    #[error("the bundle has no `mediaType`; expected `{BUNDLE_MEDIA_TYPE}`")]
    NoMediaType,
    #[error(
        "the bundle has media type `{found}`; berth reads only v0.3 bundles (`{BUNDLE_MEDIA_TYPE}`)"
    )]
    MediaType { found: String },
    #[error(
        "the bundle is keyless (it carries a certificate) and no trusted root is configured (`policy.trusted_root`, or --trusted-root)"
    )]
    Keyless,
    #[error("the bundle's keyless signature does not verify")]
    KeylessNotVerified(#[source] Box<KeylessError>),
    #[error("the bundle's {what} is not what a Sigstore bundle holds there")]
    Material {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the bundle ({key}) carries a log entry or timestamp that does not verify")]
    Evidence {
        key: String,
        #[source]
        source: Box<KeylessError>,
    },
    #[error(
        "the bundle has a `messageSignature`, not a `dsseEnvelope`: it signs a blob, not an image"
    )]
    MessageSignature,
    #[error("the bundle has no `dsseEnvelope`")]
    NoEnvelope,
    #[error("the bundle's envelope has payload type `{found}`, not `{IN_TOTO_PAYLOAD_TYPE}`")]
    PayloadType { found: String },
    #[error("the bundle's {what} is not valid base64")]
    Base64 {
        what: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("the bundle's envelope has no signatures")]
    NoSignatures,
    /// A Sigstore bundle's envelope carries exactly one signature (as sigstore's own
    /// verifiers require); trying thousands against every key would cost minutes.
    #[error("the bundle's envelope carries {0} signatures; a Sigstore bundle carries exactly one")]
    SignatureCount(usize),
    #[error("no trusted keys are configured to verify bundles of {digest}")]
    NoTrustedKeys { digest: String },
    #[error("the signature is not a DER-encoded ECDSA P-256 signature")]
    SignatureDer(#[source] p256::ecdsa::Error),
    /// The key is named by the [`BundleRejection`] that holds this.
    #[error("the signature does not verify")]
    BadSignature { key: String },
    #[error("{}", not_verified(digest, keys, rejections))]
    NotVerified {
        digest: String,
        keys: Vec<String>,
        rejections: Vec<BundleRejection>,
    },
    #[error("the bundle's payload ({key}) is not an in-toto Statement (JSON)")]
    Statement {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the bundle's payload ({key}) has `_type` `{found}`, not an in-toto Statement (`{STATEMENT_V1}` or `{STATEMENT_V01}`)"
    )]
    StatementType { key: String, found: String },
    #[error("the bundle ({key}) is an attestation (predicate `{predicate}`), not a signature")]
    Attestation { key: String, predicate: String },
    #[error("the bundle ({key}) signs {}, not {expected}", found_list(found))]
    SubjectMismatch {
        key: String,
        expected: String,
        found: Vec<String>,
    },
    #[error("invalid digest `{digest}`: expected `sha256:` followed by 64 lowercase hex digits")]
    InvalidDigest { digest: String },
    #[error("cannot use key {key}")]
    Key {
        key: String,
        #[source]
        source: SignatureError,
    },
    #[error("cannot sign with key {key}")]
    Sign {
        key: String,
        #[source]
        source: p256::ecdsa::Error,
    },
    #[error("cannot encode {what} as JSON")]
    EncodeJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// One signature of the envelope (and, once it decoded, one key) that did not verify.
#[derive(Debug)]
pub struct BundleRejection {
    /// The signature's index in `dsseEnvelope.signatures`.
    pub signature: usize,
    /// The trusted key tried; `None` when the signature failed before any key was tried.
    pub key: Option<String>,
    /// Why it failed.
    pub error: BundleError,
}

impl std::fmt::Display for BundleRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "signature {}", self.signature)?;
        if let Some(key) = &self.key {
            write!(f, " with key {key}")?;
        }
        write!(f, ": {}", crate::util::error_chain(&self.error))
    }
}

fn not_verified(digest: &str, keys: &[String], rejections: &[BundleRejection]) -> String {
    let mut msg = format!(
        "the bundle of {digest} does not verify with the trusted keys ({})",
        keys.join(", ")
    );
    for r in rejections {
        msg.push_str("; ");
        msg.push_str(&r.to_string());
    }
    msg
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        "no sha256 subject".to_string()
    } else {
        found.join(", ")
    }
}

/// A bundle as read: only the fields berth looks at; unknown fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleIn {
    media_type: Option<String>,
    #[serde(default)]
    verification_material: MaterialIn,
    dsse_envelope: Option<EnvelopeIn>,
    message_signature: Option<serde::de::IgnoredAny>,
}

/// Log entries and timestamps are read as JSON and parsed only when a trusted root
/// checks them.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MaterialIn {
    public_key: Option<HintIn>,
    certificate: Option<CertificateIn>,
    x509_certificate_chain: Option<ChainIn>,
    #[serde(default)]
    tlog_entries: Vec<serde_json::Value>,
    timestamp_verification_data: Option<TimestampsIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateIn {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct ChainIn {
    #[serde(default)]
    certificates: Vec<CertificateIn>,
}

#[derive(Deserialize)]
struct HintIn {
    hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimestampsIn {
    #[serde(default)]
    rfc3161_timestamps: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeIn {
    payload: String,
    payload_type: String,
    #[serde(default)]
    signatures: Vec<SignatureIn>,
}

/// `keyid` is not read: nothing signs it.
#[derive(Deserialize)]
struct SignatureIn {
    sig: String,
}

#[derive(Deserialize)]
struct StatementIn {
    #[serde(rename = "_type")]
    statement_type: String,
    #[serde(default)]
    subject: Vec<SubjectIn>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
}

#[derive(Deserialize)]
struct SubjectIn {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// Verifies the bundle JSON `bundle` as a signature of manifest `digest`
/// (`sha256:<hex>`) by `trust`: a keyed bundle by one of its keys (every signature is
/// tried with every key, the key named by the hint first), a keyless one by its
/// trusted root and identities. The payload is read only once a signature verified.
pub fn verify_bundle(
    bundle: &[u8],
    digest: &str,
    trust: &Trust,
) -> Result<BundleVerified, BundleError> {
    validate_digest(digest)?;
    if bundle.len() > MAX_BUNDLE_SIZE {
        return Err(BundleError::TooLarge {
            size: bundle.len(),
            max: MAX_BUNDLE_SIZE,
        });
    }
    let parsed: BundleIn = serde_json::from_slice(bundle).map_err(BundleError::Json)?;
    match parsed.media_type.as_deref() {
        None => return Err(BundleError::NoMediaType),
        Some(BUNDLE_MEDIA_TYPE | BUNDLE_MEDIA_TYPE_PARAM) => {}
        Some(other) => {
            return Err(BundleError::MediaType {
                found: keyless::shown(other),
            });
        }
    }
    let material = &parsed.verification_material;
    let keyless = material.certificate.is_some() || material.x509_certificate_chain.is_some();
    if keyless && trust.root.is_none() {
        return Err(BundleError::Keyless);
    }
    let Some(envelope) = &parsed.dsse_envelope else {
        return Err(match parsed.message_signature {
            Some(_) => BundleError::MessageSignature,
            None => BundleError::NoEnvelope,
        });
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(BundleError::PayloadType {
            found: keyless::shown(&envelope.payload_type),
        });
    }
    let payload = decode_base64(&envelope.payload).map_err(|source| BundleError::Base64 {
        what: "payload",
        source,
    })?;
    match envelope.signatures.len() {
        0 => return Err(BundleError::NoSignatures),
        1 => {}
        n => return Err(BundleError::SignatureCount(n)),
    }
    if let (true, Some(root)) = (keyless, &trust.root) {
        return verify_keyless(
            material,
            &envelope.signatures[0],
            &payload,
            digest,
            root,
            trust,
        );
    }
    let keys = &trust.keys;
    if keys.is_empty() {
        return Err(BundleError::NoTrustedKeys {
            digest: digest.to_string(),
        });
    }
    let hint = material.public_key.as_ref().and_then(|k| k.hint.as_deref());
    let key = verify_signatures(&envelope.signatures, &payload, digest, &ordered(keys, hint))?;
    let signer = format!("verified with key {}", key.name());
    check_statement(&payload, digest, &signer)?;
    let mut verified = BundleVerified {
        voucher: Voucher::Key {
            name: key.name().to_string(),
            fingerprint: key.fingerprint().to_string(),
        },
        log_index: None,
        signed_at: Vec::new(),
        unchecked: Vec::new(),
    };
    let carries_timestamps = material
        .timestamp_verification_data
        .as_ref()
        .is_some_and(|t| !t.rfc3161_timestamps.is_empty());
    let Some(root) = &trust.root else {
        if !material.tlog_entries.is_empty() {
            verified
                .unchecked
                .push("transparency-log entry".to_string());
        }
        if carries_timestamps {
            verified.unchecked.push("timestamp".to_string());
        }
        return Ok(verified);
    };
    if material.tlog_entries.is_empty() && !carries_timestamps {
        return Ok(verified);
    }
    let entries = tlog_entries(material)?;
    let timestamps = timestamps(material)?;
    let signature =
        decode_base64(&envelope.signatures[0].sig).map_err(|source| BundleError::Base64 {
            what: "signature",
            source,
        })?;
    let spki = key_der(key)?;
    let evidence = keyless::verify_evidence(
        &Material {
            entries: &entries,
            timestamps: &timestamps,
        },
        &Artifact::Dsse {
            payload: &payload,
            signature: &signature,
        },
        &keyless::Signer::Key(&spki),
        root,
    )
    .map_err(|source| BundleError::Evidence {
        key: signer,
        source: Box::new(source),
    })?;
    verified.log_index = evidence.log_index;
    verified.signed_at = evidence.times;
    Ok(verified)
}

/// A keyless bundle: its one signature by its certificate, the certificate's chain and
/// identity, its log entries and timestamps; then its statement.
fn verify_keyless(
    material: &MaterialIn,
    signature: &SignatureIn,
    payload: &[u8],
    digest: &str,
    root: &keyless::TrustedRoot,
    trust: &Trust,
) -> Result<BundleVerified, BundleError> {
    let leaf = match (&material.certificate, &material.x509_certificate_chain) {
        (Some(c), _) => &c.raw_bytes,
        // A chain (the field of v0.1/v0.2 bundles, read here in a v0.3 one): its first
        // certificate is the leaf; the others are not trusted (authorities come from
        // the trusted root).
        (None, Some(chain)) => match chain.certificates.first() {
            Some(c) => &c.raw_bytes,
            None => {
                return Err(BundleError::KeylessNotVerified(Box::new(
                    KeylessError::Der {
                        what: "bundle's certificate chain".into(),
                        expected: "non-empty list of certificates",
                        source: der::Tag::Sequence.length_error().into(),
                    },
                )));
            }
        },
        (None, None) => return Err(BundleError::Keyless),
    };
    let leaf = keyless::parse_certificate(leaf)
        .map_err(|e| BundleError::KeylessNotVerified(Box::new(e)))?;
    let sig = decode_base64(&signature.sig).map_err(|source| BundleError::Base64 {
        what: "signature",
        source,
    })?;
    let entries = tlog_entries(material)?;
    let timestamps = timestamps(material)?;
    let artifact = Artifact::Dsse {
        payload,
        signature: &sig,
    };
    let not_verified = |e| BundleError::KeylessNotVerified(Box::new(e));
    // Cheap checks first: the signature by the certificate's key, its identity and the
    // digest the statement signs; the log entries, timestamps and chain last.
    let claimed = keyless::verify_signer(
        &leaf,
        &pae(IN_TOTO_PAYLOAD_TYPE, payload),
        &artifact,
        &trust.identities,
    )
    .map_err(not_verified)?;
    check_statement(
        payload,
        digest,
        &format!(
            "signed by a certificate claiming {}={}, not verified",
            claimed.issuer, claimed.subject
        ),
    )?;
    let verified = keyless::verify_keyless(
        &leaf,
        claimed,
        &artifact,
        &Material {
            entries: &entries,
            timestamps: &timestamps,
        },
        root,
    )
    .map_err(not_verified)?;
    let voucher = Voucher::Identity {
        issuer: verified.issuer,
        subject: verified.subject,
        log_index: verified.evidence.log_index,
    };
    Ok(BundleVerified {
        voucher,
        log_index: verified.evidence.log_index,
        signed_at: verified.evidence.times,
        unchecked: Vec::new(),
    })
}

/// The bundle's transparency-log entries, parsed.
fn tlog_entries(material: &MaterialIn) -> Result<Vec<TlogEntry>, BundleError> {
    material
        .tlog_entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            TlogEntry::deserialize(e).map_err(|source| BundleError::Material {
                what: format!("verificationMaterial.tlogEntries[{i}]"),
                source,
            })
        })
        .collect()
}

/// The bundle's RFC 3161 timestamps (base64 `signedTimestamp`).
fn timestamps(material: &MaterialIn) -> Result<Vec<String>, BundleError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TimestampIn {
        signed_timestamp: String,
    }
    let Some(data) = &material.timestamp_verification_data else {
        return Ok(Vec::new());
    };
    data.rfc3161_timestamps
        .iter()
        .enumerate()
        .map(|(i, t)| {
            TimestampIn::deserialize(t)
                .map(|t| t.signed_timestamp)
                .map_err(|source| BundleError::Material {
                    what: format!(
                        "verificationMaterial.timestampVerificationData.rfc3161Timestamps[{i}]"
                    ),
                    source,
                })
        })
        .collect()
}

/// Reads a bundle file, at most [`MAX_BUNDLE_SIZE`] bytes (a larger one is
/// [`BundleError::TooLarge`], whatever it holds).
pub fn read_bundle_file(path: &std::path::Path) -> Result<Vec<u8>, BundleError> {
    use std::io::Read;
    let read = |source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_BUNDLE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() > MAX_BUNDLE_SIZE {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            max: MAX_BUNDLE_SIZE,
        });
    }
    Ok(bytes)
}

/// The keys with the ones `hint` names first (a hint is never a proof: every key is
/// still tried).
fn ordered<'a>(keys: &'a [TrustedKey], hint: Option<&str>) -> Vec<&'a TrustedKey> {
    let (mut first, rest): (Vec<&TrustedKey>, Vec<&TrustedKey>) = keys
        .iter()
        .partition(|k| hint.is_some() && key_hint(k).ok().as_deref() == hint);
    first.extend(rest);
    first
}

/// The first key that verifies one of `signatures` over the PAE of `payload`, or every
/// reason none did.
fn verify_signatures<'a>(
    signatures: &[SignatureIn],
    payload: &[u8],
    digest: &str,
    keys: &[&'a TrustedKey],
) -> Result<&'a TrustedKey, BundleError> {
    let message = pae(IN_TOTO_PAYLOAD_TYPE, payload);
    let mut rejections = Vec::new();
    for (index, signature) in signatures.iter().enumerate() {
        let reject = |error| BundleRejection {
            signature: index,
            key: None,
            error,
        };
        let der = match decode_base64(&signature.sig) {
            Ok(der) => der,
            Err(source) => {
                rejections.push(reject(BundleError::Base64 {
                    what: "signature",
                    source,
                }));
                continue;
            }
        };
        let parsed = match DerSignature::try_from(der.as_slice()) {
            Ok(parsed) => parsed,
            Err(e) => {
                rejections.push(reject(BundleError::SignatureDer(e)));
                continue;
            }
        };
        for key in keys {
            if key.verifying_key().verify(&message, &parsed).is_ok() {
                return Ok(key);
            }
            rejections.push(BundleRejection {
                signature: index,
                key: Some(key.name().to_string()),
                error: BundleError::BadSignature {
                    key: key.name().to_string(),
                },
            });
        }
    }
    Err(BundleError::NotVerified {
        digest: digest.to_string(),
        keys: keys.iter().map(|k| k.name().to_string()).collect(),
        rejections,
    })
}

/// Checks the (authenticated) payload: an in-toto Statement of the cosign-sign
/// predicate with a subject whose sha256 is `digest`.
fn check_statement(payload: &[u8], digest: &str, signer: &str) -> Result<(), BundleError> {
    let name = || signer.to_string();
    let statement: StatementIn =
        serde_json::from_slice(payload).map_err(|source| BundleError::Statement {
            key: name(),
            source,
        })?;
    if statement.statement_type != STATEMENT_V1 && statement.statement_type != STATEMENT_V01 {
        return Err(BundleError::StatementType {
            key: name(),
            found: keyless::shown(&statement.statement_type),
        });
    }
    if statement.predicate_type != COSIGN_SIGN_PREDICATE {
        return Err(BundleError::Attestation {
            key: name(),
            predicate: keyless::shown(&statement.predicate_type),
        });
    }
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let found: Vec<String> = statement
        .subject
        .iter()
        .filter_map(|s| s.digest.get("sha256"))
        .map(|h| format!("sha256:{}", keyless::shown(h)))
        .collect();
    if found.iter().any(|f| f.strip_prefix("sha256:") == Some(hex)) {
        Ok(())
    } else {
        Err(BundleError::SubjectMismatch {
            key: name(),
            expected: digest.to_string(),
            found,
        })
    }
}

/// The DSSE pre-authentication encoding: `DSSEv1 SP len(type) SP type SP len(body) SP body`.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Standard or URL-safe base64, padded or not (DSSE verifiers must accept both
/// alphabets). The error is the standard alphabet's.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text).or_else(|e| {
        [STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(e)
    })
}

/// `verificationMaterial.publicKey.hint` as cosign writes it: base64(SHA-256(SPKI DER)).
pub(super) fn key_hint(key: &TrustedKey) -> Result<String, BundleError> {
    Ok(STANDARD.encode(Sha256::digest(key_der(key)?)))
}

/// The key's DER SubjectPublicKeyInfo.
fn key_der(key: &TrustedKey) -> Result<Vec<u8>, BundleError> {
    key.verifying_key()
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|e| BundleError::Key {
            key: key.name().to_string(),
            source: SignatureError::EncodeKey {
                key: key.name().to_string(),
                source: Box::new(e),
            },
        })
}

fn validate_digest(digest: &str) -> Result<(), BundleError> {
    super::validate_digest(digest).map_err(|_| BundleError::InvalidDigest {
        digest: digest.to_string(),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleOut<'a> {
    media_type: &'a str,
    verification_material: MaterialOut,
    dsse_envelope: EnvelopeOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MaterialOut {
    public_key: HintOut,
}

#[derive(Serialize)]
struct HintOut {
    hint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeOut<'a> {
    payload: String,
    payload_type: &'a str,
    signatures: Vec<SignatureOut>,
}

#[derive(Serialize)]
struct SignatureOut {
    sig: String,
}

#[derive(Serialize)]
struct StatementOut<'a> {
    #[serde(rename = "_type")]
    statement_type: &'a str,
    subject: [SubjectOut<'a>; 1],
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    predicate: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct SubjectOut<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    digest: DigestOut<'a>,
    annotations: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct DigestOut<'a> {
    sha256: &'a str,
}

/// Signs manifest `digest` with `key`: the bundle JSON as `cosign sign --key` writes it
/// (without a transparency-log upload), an in-toto Statement v1 of the cosign-sign
/// predicate in a DSSE envelope with one signature. `name` (the image's repository, or
/// empty) becomes the subject's `name`; cosign writes none, and verifiers ignore it.
pub fn sign_bundle(name: &str, digest: &str, key: &SigningKey) -> Result<Vec<u8>, BundleError> {
    sign_statement(name, digest, COSIGN_SIGN_PREDICATE, key)
}

/// [`sign_bundle`] with any predicate type (tests make attestations with it).
pub(super) fn sign_statement(
    name: &str,
    digest: &str,
    predicate_type: &str,
    key: &SigningKey,
) -> Result<Vec<u8>, BundleError> {
    validate_digest(digest)?;
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let statement = StatementOut {
        statement_type: STATEMENT_V1,
        subject: [SubjectOut {
            name,
            digest: DigestOut { sha256: hex },
            annotations: serde_json::Map::new(),
        }],
        predicate_type,
        predicate: serde_json::Map::new(),
    };
    let payload = serde_json::to_vec(&statement).map_err(|source| BundleError::EncodeJson {
        what: "the in-toto statement",
        source,
    })?;
    sign_payload(&payload, key)
}

/// A bundle of `payload` (any bytes, as the in-toto payload type) signed with `key`.
pub(super) fn sign_payload(payload: &[u8], key: &SigningKey) -> Result<Vec<u8>, BundleError> {
    let signature: DerSignature = key
        .ecdsa()
        .try_sign(&pae(IN_TOTO_PAYLOAD_TYPE, payload))
        .map_err(|source| BundleError::Sign {
            key: key.name().to_string(),
            source,
        })?;
    let public = key.public_key().map_err(|source| BundleError::Key {
        key: key.name().to_string(),
        source,
    })?;
    let bundle = BundleOut {
        media_type: BUNDLE_MEDIA_TYPE,
        verification_material: MaterialOut {
            public_key: HintOut {
                hint: key_hint(&public)?,
            },
        },
        dsse_envelope: EnvelopeOut {
            payload: STANDARD.encode(payload),
            payload_type: IN_TOTO_PAYLOAD_TYPE,
            signatures: vec![SignatureOut {
                sig: STANDARD.encode(signature.as_bytes()),
            }],
        },
    };
    serde_json::to_vec(&bundle).map_err(|source| BundleError::EncodeJson {
        what: "the bundle",
        source,
    })
}
