//! A bundle's transparency-log (Rekor v1) entry: bound to the bundle (its body names
//! the same payload, signature and signer), promised by the log (the signed entry
//! timestamp over the canonical JSON of body, integrated time, log id and the global log
//! index) and included in the log (an RFC 6962 inclusion proof at the shard index,
//! whose root a signed checkpoint names).
//!
//! Rekor v2 entries (a log whose key in the trusted root is Ed25519, or a `0.0.2`
//! entry) are refused by name before anything else is read; a Rekor v1 entry without
//! a signed entry timestamp is refused as such. At most [`MAX_CHECKPOINT_SIGNATURES`]
//! checkpoint signature lines are read, and the first by the log's key decides.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::root::{LogKey, TrustedRoot};
use super::x509::{Hash, verify_ecdsa};
use super::{Artifact, KeylessError, Signer, decode, rfc3339};

/// A protobuf-JSON int64: a string, or (from other encoders) a number.
#[derive(Debug, Clone, Copy, Default)]
pub struct Int(pub u64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Int(n)),
            Either::S(s) => s.parse().map(Int).map_err(|_| {
                serde::de::Error::custom(format!("`{}` is not an integer", super::shown(&s)))
            }),
        }
    }
}

/// `verificationMaterial.tlogEntries[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlogEntry {
    pub log_index: Int,
    pub log_id: LogId,
    pub kind_version: KindVersion,
    #[serde(default)]
    pub integrated_time: Int,
    pub inclusion_promise: Option<Promise>,
    pub inclusion_proof: Option<Proof>,
    pub canonicalized_body: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogId {
    pub key_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KindVersion {
    pub kind: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promise {
    pub signed_entry_timestamp: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proof {
    pub log_index: Int,
    pub root_hash: String,
    pub tree_size: Int,
    #[serde(default)]
    pub hashes: Vec<String>,
    pub checkpoint: Option<Checkpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Checkpoint {
    pub envelope: String,
}

/// The body of a `dsse` or `hashedrekord` entry (v0.0.1): the fields berth binds.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    api_version: String,
    kind: String,
    spec: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseSpec {
    payload_hash: HashIn,
    signatures: Vec<DsseSignature>,
}

#[derive(Deserialize)]
struct DsseSignature {
    signature: String,
    verifier: String,
}

#[derive(Deserialize)]
struct HashIn {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
struct HashedRekordSpec {
    data: HashedData,
    signature: HashedSignature,
}

#[derive(Deserialize)]
struct HashedData {
    hash: HashIn,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HashedSignature {
    content: String,
    public_key: HashedKey,
}

#[derive(Deserialize)]
struct HashedKey {
    content: String,
}

/// Verifies `entry` for `artifact` signed by `signer`; returns its integrated time.
pub(super) fn verify_entry(
    entry: &TlogEntry,
    artifact: &Artifact<'_>,
    signer: &Signer<'_>,
    root: &TrustedRoot,
) -> Result<u64, KeylessError> {
    let key_id = decode("log entry's log id", &entry.log_id.key_id)?;
    let log = root
        .tlogs
        .iter()
        .find(|t| t.key_id == key_id)
        .ok_or_else(|| KeylessError::UnknownLog {
            log_id: super::shown(&entry.log_id.key_id),
        })?;
    // Rekor v2: an Ed25519 log key in the trusted root, or a v0.0.2 entry.
    if log.details.contains("ED25519")
        || log.spki.as_deref().is_some_and(is_ed25519)
        || entry.kind_version.version == "0.0.2"
    {
        return Err(KeylessError::RekorV2 { log: log_name(log) });
    }
    let Some(spki) = &log.spki else {
        return Err(KeylessError::LogWithoutKey { log: log_name(log) });
    };
    let Some(promise) = &entry.inclusion_promise else {
        return Err(KeylessError::NoPromise { log: log_name(log) });
    };
    let body_bytes = decode("log entry's body", &entry.canonicalized_body)?;
    bind(&body_bytes, entry, artifact, signer)?;
    let time = entry.integrated_time.0;
    // The signed entry timestamp: RFC 8785 canonical JSON (keys sorted, no spaces) of
    // the body as its base64 text, the integrated time, the log id in lowercase hex and
    // the global log index. Base64 and hex need no JSON escaping.
    let canonical = format!(
        r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
        entry.canonicalized_body,
        time,
        hex::encode(&key_id),
        entry.log_index.0
    );
    let set = decode(
        "log entry's signed entry timestamp",
        &promise.signed_entry_timestamp,
    )?;
    verify_ecdsa(
        spki,
        Hash::Sha256,
        canonical.as_bytes(),
        &set,
        "log entry's signed entry timestamp",
    )?;
    // Only now is the integrated time the log's word, and worth naming.
    if !log.valid_for.contains(time) {
        return Err(KeylessError::LogKeyTime {
            log: log_name(log),
            time: rfc3339(time),
            valid_for: log.valid_for.to_string(),
        });
    }
    let proof = entry
        .inclusion_proof
        .as_ref()
        .ok_or(KeylessError::NoInclusionProof)?;
    let root_hash = decode("inclusion proof's root hash", &proof.root_hash)?;
    let hashes = proof
        .hashes
        .iter()
        .map(|h| decode("inclusion proof's hashes", h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut leaf = Sha256::new();
    leaf.update([0u8]);
    leaf.update(&body_bytes);
    verify_inclusion(
        proof.log_index.0,
        proof.tree_size.0,
        leaf.finalize().into(),
        &hashes,
        &root_hash,
    )?;
    let checkpoint = proof.checkpoint.as_ref().ok_or(KeylessError::Checkpoint {
        problem: "is missing",
    })?;
    verify_checkpoint(
        &checkpoint.envelope,
        log,
        spki,
        proof.tree_size.0,
        &root_hash,
    )?;
    Ok(time)
}

fn log_name(log: &LogKey) -> String {
    if log.base_url.is_empty() {
        STANDARD.encode(&log.key_id)
    } else {
        log.base_url.clone()
    }
}

/// The entry's body names this bundle: for `dsse`, the payload's hash, the signature
/// and the signer; for `hashedrekord`, the artifact's digest, the signature and the
/// signer.
fn bind(
    body_bytes: &[u8],
    entry: &TlogEntry,
    artifact: &Artifact<'_>,
    signer: &Signer<'_>,
) -> Result<(), KeylessError> {
    let body: Body = serde_json::from_slice(body_bytes).map_err(KeylessError::BodyJson)?;
    let expected = match artifact {
        Artifact::Dsse { .. } => "dsse",
        Artifact::Blob { .. } => "hashedrekord",
    };
    if body.kind != expected
        || body.api_version != "0.0.1"
        || entry.kind_version.kind != body.kind
        || entry.kind_version.version != body.api_version
    {
        return Err(KeylessError::BodyKind {
            found: super::shown(&format!("{} {}", body.kind, body.api_version)),
            expected: format!("{expected} 0.0.1"),
        });
    }
    let mismatch = |field| Err(KeylessError::Binding { field });
    let (logged, signature, verifier) = match artifact {
        Artifact::Dsse { payload, signature } => {
            let spec: DsseSpec =
                serde_json::from_value(body.spec).map_err(KeylessError::BodyJson)?;
            let [sig] = spec.signatures.as_slice() else {
                return mismatch("signatures");
            };
            if spec.payload_hash.algorithm != "sha256"
                || spec.payload_hash.value != hex::encode(Sha256::digest(payload))
            {
                return mismatch("payload hash");
            }
            (
                decode("log entry's signature", &sig.signature)?,
                *signature,
                decode("log entry's verifier", &sig.verifier)?,
            )
        }
        Artifact::Blob { digest, signature } => {
            let spec: HashedRekordSpec =
                serde_json::from_value(body.spec).map_err(KeylessError::BodyJson)?;
            if spec.data.hash.algorithm != "sha256" || spec.data.hash.value != hex::encode(digest) {
                return mismatch("artifact digest");
            }
            (
                decode("log entry's signature", &spec.signature.content)?,
                *signature,
                decode("log entry's public key", &spec.signature.public_key.content)?,
            )
        }
    };
    if logged != signature {
        return mismatch("signature");
    }
    let signer_der = pem_der(&verifier).ok_or(KeylessError::Binding {
        field: "verifier (not PEM)",
    })?;
    let same = match signer {
        Signer::Certificate(leaf) => signer_der == leaf.der,
        Signer::Key(spki) => signer_der == *spki,
    };
    if !same {
        return mismatch("verifier");
    }
    Ok(())
}

/// The DER inside PEM text (the first block).
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let mut lines = text.lines().skip_while(|l| !l.starts_with("-----BEGIN "));
    lines.next()?;
    let body: String = lines
        .take_while(|l| !l.starts_with("-----END "))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).ok()
}

fn node(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 9162 §2.1.3.2: the root computed from `leaf` at `index` in a tree of `size`
/// with `proof` equals `root`.
pub(super) fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: [u8; 32],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), KeylessError> {
    let fail = |problem| Err(KeylessError::Inclusion { problem });
    if index >= size {
        return fail("its index is not within the tree size");
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, leaf);
    for p in proof {
        if p.len() != 32 {
            return fail("a hash is not 32 bytes long");
        }
        if snode == 0 {
            return fail("it has more hashes than the tree has levels");
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return fail("it has fewer hashes than the tree has levels");
    }
    if r[..] != *root {
        return fail("the computed root is not the proof's root hash");
    }
    Ok(())
}

/// A signed note (checkpoint): `origin\nsize\nroot\n[extensions]\n\n— name sig\n…`.
/// Signed are the bytes up to the blank line (its first newline included); a Rekor v1
/// signature is base64 of the log id's first four bytes and a DER ECDSA signature.
fn verify_checkpoint(
    envelope: &str,
    log: &LogKey,
    spki: &[u8],
    size: u64,
    root: &[u8],
) -> Result<(), KeylessError> {
    let fail = |problem| Err(KeylessError::Checkpoint { problem });
    let Some(split) = envelope.find("\n\n") else {
        return fail("has no blank line before its signatures");
    };
    let text = &envelope[..split + 1];
    let mut lines = text.lines();
    // The origin names the log (`rekor.sigstore.dev - <tree id>`); berth does not
    // compare it: the signature by the log's own key over these lines, and the tree
    // size and root they name, are what bind the checkpoint to the log. A log that
    // signs a note under another origin still signs this root.
    let _origin = lines.next();
    let tree_size = lines.next().and_then(|l| l.parse::<u64>().ok());
    let tree_root = lines.next().and_then(|l| STANDARD.decode(l).ok());
    if tree_size != Some(size) || tree_root.as_deref() != Some(root) {
        return fail("names another tree size or root hash than the inclusion proof");
    }
    let hint = log.key_id.get(..4).unwrap_or_default();
    let signatures = &envelope[split + 2..];
    if signatures.lines().count() > MAX_CHECKPOINT_SIGNATURES {
        return fail("carries more signature lines than berth reads (16)");
    }
    for line in signatures.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return fail("has a signature line not starting with an em dash");
        };
        let Some((_, sig)) = rest.rsplit_once(' ') else {
            return fail("has a signature line without a key name");
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            return fail("has a signature that is not base64");
        };
        if sig.len() <= 4 || sig[..4] != *hint {
            continue;
        }
        verify_ecdsa(
            spki,
            Hash::Sha256,
            text.as_bytes(),
            &sig[4..],
            "log checkpoint's signature",
        )?;
        // One signature by the log suffices; the others (witnesses) are not read.
        return Ok(());
    }
    fail("carries no signature by the log's key")
}

/// The most signature lines a checkpoint may carry (the log's and a few witnesses').
const MAX_CHECKPOINT_SIGNATURES: usize = 16;

/// Whether `spki_der` is an Ed25519 key (the key of a Rekor v2 log).
fn is_ed25519(spki_der: &[u8]) -> bool {
    use der::Decode;
    spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .is_ok_and(|k| k.algorithm.oid == super::x509::ED25519)
}
