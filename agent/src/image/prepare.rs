//! Making a pulled image ready to run: check its signatures against the node's trusted
//! keys (from the store, offline), unpack its layers into shared snapshots, or flatten
//! them into one directory for `berth image unpack`.
//!
//! Contract: nothing is unpacked for an image whose signature the node requires and
//! that does not verify; the error names the image, the digest and every key tried.
//! An image is signed when its legacy signature (`sha256-<hex>.sig`) or any of its
//! Sigstore bundles verifies for the digest berth pinned ([`ImageRecord::digest`]);
//! a failure says what each of them said.
//! Layers unpack in parallel (each into its own snapshot) and commit base first, so a
//! failure leaves no partial snapshot visible.

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::digest::Digest;
use super::signature::referrers::{ReferrersError, check_referrer};
use super::signature::{
    self, BoxError, BundleVerified, MAX_BUNDLE_SIZE, SignatureError, Trust, VerifiedManifest,
    Voucher,
};
use super::snapshot::{ChainId, Prepared, Snapshot, SnapshotError, SnapshotStore};
use super::store::records::{BundleRecord, ImageRecord, SignatureRecord};
use super::store::{Store, StoreError};
use super::unpack::{self, UnpackOptions, WhiteoutMode};

/// The largest signature manifest or payload read from the store.
const MAX_SIGNATURE_BLOB: u64 = 4 << 20;

/// Why an image could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("image {reference} ({digest}) is not signed by a trusted key or identity: {reason}")]
    Signature {
        reference: String,
        digest: String,
        reason: String,
    },
    #[error("cannot read layer {layer} of {reference} from the store")]
    Blob {
        reference: String,
        layer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unpack layer {layer} of {reference}")]
    Snapshot {
        reference: String,
        layer: String,
        #[source]
        source: Box<SnapshotError>,
    },
    #[error("cannot unpack layer {layer} of {reference} into {}", dest.display())]
    Flatten {
        reference: String,
        layer: String,
        dest: PathBuf,
        #[source]
        source: Box<unpack::UnpackError>,
    },
    #[error("the unpack of {reference} stopped unexpectedly")]
    Worker { reference: String },
}

impl PrepareError {
    /// A digest or signature that does not verify (exit 1), as opposed to I/O (exit 3).
    pub fn is_integrity(&self) -> bool {
        match self {
            PrepareError::Signature { .. } => true,
            PrepareError::Snapshot { source, .. } => matches!(
                **source,
                SnapshotError::Unpack(unpack::UnpackError::DiffIdMismatch { .. })
            ),
            PrepareError::Flatten { source, .. } => {
                matches!(**source, unpack::UnpackError::DiffIdMismatch { .. })
            }
            _ => false,
        }
    }
}

/// The result of checking an image's signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verified by these keys (file names).
    Verified(Verifiers),
    /// Checked and not verified, with the reason (every key tried).
    Failed(String),
}

/// The keys that verified an image, and what its verified bundles carry that berth did
/// not check. Reads as the list of key names (it dereferences to them and serializes
/// as them), so reports that print the keys need no change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verifiers {
    /// Key names, sorted, each once.
    pub keys: Vec<String>,
    /// Who vouched: each key (with its fingerprint) or identity whose signature
    /// verified, sorted, each once.
    pub vouchers: Vec<Voucher>,
    /// What a verified bundle carries that was not checked (`transparency-log entry`,
    /// `timestamp`): such a bundle was judged by its key alone. Sorted, each once.
    pub unchecked: Vec<String>,
}

impl Deref for Verifiers {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.keys
    }
}

impl Serialize for Verifiers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.keys.serialize(serializer)
    }
}

/// Why one signature of an image (the legacy one, or a bundle) did not verify.
#[derive(Debug, thiserror::Error)]
pub enum NotVerified {
    #[error("no signature verified")]
    NoneVerified,
    #[error(transparent)]
    Legacy(#[from] SignatureError),
    #[error(transparent)]
    Bundle(#[from] signature::BundleError),
    #[error(transparent)]
    Referrer(#[from] ReferrersError),
    #[error("cannot read the {what}")]
    Store {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("the referrer manifest names bundle {named}, the store has {stored}")]
    OtherBundle { named: Digest, stored: Digest },
}

/// What each signature of an image said, for [`judge`].
#[derive(Debug, Default)]
pub struct Outcomes {
    /// The legacy signature (`None`: there is none): the keys that verified it, or why
    /// it did not verify.
    pub legacy: Option<Result<Vec<Voucher>, NotVerified>>,
    /// The tag the legacy signature was read from, when not the image digest's own
    /// (a multi-platform image's platform manifest).
    pub legacy_tag: Option<String>,
    /// Each bundle, by its referrer manifest's digest and the digest it was found for.
    pub bundles: Vec<BundleOutcome>,
}

/// What one Sigstore bundle said.
#[derive(Debug)]
pub struct BundleOutcome {
    /// The referrer manifest's digest.
    pub manifest: Digest,
    /// The digest it was found for.
    pub signed: Digest,
    pub result: Result<BundleVerified, NotVerified>,
}

/// The verdict on image `digest`: verified when the legacy signature or any bundle
/// verified (every key or identity that did, listed); otherwise failed, saying what the
/// legacy signature and each bundle said, and (when none was found) the keys tried and
/// the identities expected.
pub fn judge(digest: &Digest, outcomes: Outcomes, trust: &Trust) -> SignatureCheck {
    let tag = format!("sha256-{}.sig", digest.hex());
    if outcomes.legacy.is_none() && outcomes.bundles.is_empty() {
        return SignatureCheck::Failed(format!(
            "no signature was found in the registry (neither `{tag}` nor a sigstore bundle referrer; {})",
            trust.tried()
        ));
    }
    let mut verified = Verifiers::default();
    let mut reasons = Vec::new();
    match outcomes.legacy {
        None => reasons.push(format!("no legacy signature `{tag}`")),
        Some(Ok(vouchers)) => verified.vouchers.extend(vouchers),
        Some(Err(why)) => reasons.push(format!(
            "legacy signature `{}`: {}",
            outcomes.legacy_tag.as_deref().unwrap_or(&tag),
            crate::util::error_chain(&why)
        )),
    }
    if outcomes.bundles.is_empty() {
        reasons.push("no sigstore bundle referrer".to_string());
    }
    for b in outcomes.bundles {
        match b.result {
            Ok(v) => {
                verified.vouchers.push(v.voucher);
                verified.unchecked.extend(v.unchecked);
            }
            Err(why) if b.signed != *digest => reasons.push(format!(
                "sigstore bundle {} (found for {}): {}",
                b.manifest,
                b.signed,
                crate::util::error_chain(&why)
            )),
            Err(why) => reasons.push(format!(
                "sigstore bundle {}: {}",
                b.manifest,
                crate::util::error_chain(&why)
            )),
        }
    }
    if verified.vouchers.is_empty() {
        return SignatureCheck::Failed(reasons.join("; "));
    }
    verified.vouchers.sort();
    verified.vouchers.dedup();
    verified.keys = verified.vouchers.iter().map(Voucher::name).collect();
    verified.keys.sort();
    verified.keys.dedup();
    verified.unchecked.sort();
    verified.unchecked.dedup();
    SignatureCheck::Verified(verified)
}

/// Verifies the signatures stored with `record` (fetched at pull time, or since)
/// against `trust`, entirely from the store: its legacy signature and every bundle,
/// each for the image's digest.
pub fn verify_stored(store: &Store, record: &ImageRecord, trust: &Trust) -> SignatureCheck {
    let outcomes = Outcomes {
        legacy: record
            .signature
            .as_ref()
            .map(|sig| stored_legacy(store, record, sig, &trust.keys)),
        legacy_tag: record.signature.as_ref().map(|sig| sig.tag.clone()),
        bundles: record
            .bundles
            .iter()
            .map(|b| BundleOutcome {
                manifest: b.manifest.digest.clone(),
                signed: b.signed.clone(),
                result: stored_bundle(store, &record.digest, b, trust),
            })
            .collect(),
    };
    judge(&record.digest, outcomes, trust)
}

/// The legacy signature `sig` of `record`: the keys that verified it, or why none did.
fn stored_legacy(
    store: &Store,
    record: &ImageRecord,
    sig: &SignatureRecord,
    keys: &[signature::TrustedKey],
) -> Result<Vec<Voucher>, NotVerified> {
    let manifest = store
        .read_blob(&sig.manifest.digest, MAX_SIGNATURE_BLOB)
        .map_err(|source| NotVerified::Store {
            what: "signature manifest",
            source,
        })?;
    let fetch = |digest: &str| -> Result<Vec<u8>, BoxError> {
        let d = Digest::parse(digest).map_err(|e| Box::new(e) as BoxError)?;
        store
            .read_blob(&d, MAX_SIGNATURE_BLOB)
            .map_err(|e: StoreError| Box::new(e) as BoxError)
    };
    match signature::verify_signature_manifest(&manifest, record.digest.as_str(), keys, &fetch) {
        Ok(VerifiedManifest { verified, .. }) if !verified.is_empty() => {
            Ok(verified.iter().map(Voucher::of_legacy).collect())
        }
        Ok(_) => Err(NotVerified::NoneVerified),
        Err(e) => Err(e.into()),
    }
}

/// The stored bundle `b`, verified for `digest`: its referrer manifest is checked again
/// (a bundle referrer of the digest it was found for, naming the stored layer), then
/// the bundle.
fn stored_bundle(
    store: &Store,
    digest: &Digest,
    b: &BundleRecord,
    trust: &Trust,
) -> Result<BundleVerified, NotVerified> {
    let manifest = store
        .read_blob(&b.manifest.digest, MAX_SIGNATURE_BLOB)
        .map_err(|source| NotVerified::Store {
            what: "referrer manifest",
            source,
        })?;
    let layer = check_referrer(&manifest, &b.manifest.digest, &b.signed)?;
    if layer.digest != b.bundle.digest {
        return Err(NotVerified::OtherBundle {
            named: layer.digest,
            stored: b.bundle.digest.clone(),
        });
    }
    let bundle = store
        .read_blob(&b.bundle.digest, MAX_BUNDLE_SIZE as u64)
        .map_err(|source| NotVerified::Store {
            what: "bundle",
            source,
        })?;
    Ok(signature::verify_bundle(&bundle, digest.as_str(), trust)?)
}

/// Fails with a located message unless the check verified.
pub fn require_signature(record: &ImageRecord, check: &SignatureCheck) -> Result<(), PrepareError> {
    match check {
        SignatureCheck::Verified(_) => Ok(()),
        SignatureCheck::Failed(reason) => Err(PrepareError::Signature {
            reference: record.reference.clone(),
            digest: record.digest.as_str().to_string(),
            reason: reason.clone(),
        }),
    }
}

/// The chain IDs of the image's layers, base first.
pub fn chain_ids(record: &ImageRecord) -> Result<Vec<ChainId>, PrepareError> {
    let diff_ids: Vec<&str> = record.layers.iter().map(|l| l.diff_id.as_str()).collect();
    super::snapshot::chain_ids(&diff_ids).map_err(|source| PrepareError::Snapshot {
        reference: record.reference.clone(),
        layer: String::new(),
        source: Box::new(source),
    })
}

/// Unpacks every layer of `record` into the snapshot store (those already there are
/// reused), in parallel; returns the snapshots base first.
pub fn unpack_snapshots(
    store: &Store,
    snapshots: &SnapshotStore,
    record: &ImageRecord,
) -> Result<Vec<Snapshot>, PrepareError> {
    let chains = chain_ids(record)?;
    let opts = UnpackOptions::default();
    let snap_err = |layer: &str| {
        let reference = record.reference.clone();
        let layer = layer.to_string();
        move |source| PrepareError::Snapshot {
            reference,
            layer,
            source: Box::new(source),
        }
    };
    // Unpack each missing layer on its own thread; commit base first.
    let results: Vec<Result<Prepared<'_>, PrepareError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = record
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let parent = i.checked_sub(1).map(|p| &chains[p]);
                let chain = &chains[i];
                let opts = &opts;
                scope.spawn(move || -> Result<Prepared<'_>, PrepareError> {
                    let digest = layer.digest.as_str();
                    let prepared = snapshots.prepare(chain, parent).map_err(snap_err(digest))?;
                    let Prepared::New(active) = prepared else {
                        return Ok(prepared);
                    };
                    let file = File::open(store.blob_path(&layer.digest)).map_err(|source| {
                        PrepareError::Blob {
                            reference: record.reference.clone(),
                            layer: digest.to_string(),
                            source,
                        }
                    })?;
                    let opts = UnpackOptions {
                        mode: WhiteoutMode::Snapshot,
                        ..opts.clone()
                    };
                    let stats =
                        unpack::unpack_layer(digest, &layer.media_type, file, active.path(), &opts)
                            .map_err(|e| snap_err(digest)(SnapshotError::from(e)))?;
                    unpack::verify_diff_id(digest, &stats, layer.diff_id.as_str())
                        .map_err(|e| snap_err(digest)(SnapshotError::from(e)))?;
                    Ok(Prepared::New(active))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(PrepareError::Worker {
                        reference: record.reference.clone(),
                    })
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(results.len());
    let mut first_error = None;
    for (layer, result) in record.layers.iter().zip(results) {
        match (result, &first_error) {
            (Err(e), None) => first_error = Some(e),
            (Ok(Prepared::Exists(s)), None) => out.push(s),
            (Ok(Prepared::New(active)), None) => out.push(
                active
                    .commit(layer.diff_id.as_str())
                    .map_err(snap_err(layer.digest.as_str()))?,
            ),
            // After a failure, dropping the remaining active snapshots removes them.
            _ => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Applies every layer of `record` in order into `dest` (created if missing): the
/// flattened root filesystem, whiteouts applied.
pub fn flatten(store: &Store, record: &ImageRecord, dest: &Path) -> Result<(), PrepareError> {
    let flatten_err = |layer: &str| {
        let (reference, layer, dest) = (
            record.reference.clone(),
            layer.to_string(),
            dest.to_path_buf(),
        );
        move |source| PrepareError::Flatten {
            reference,
            layer,
            dest,
            source: Box::new(source),
        }
    };
    std::fs::create_dir_all(dest).map_err(|source| PrepareError::Blob {
        reference: record.reference.clone(),
        layer: dest.display().to_string(),
        source,
    })?;
    let opts = UnpackOptions {
        mode: WhiteoutMode::Flatten,
        ..UnpackOptions::default()
    };
    for layer in &record.layers {
        let digest = layer.digest.as_str();
        let file =
            File::open(store.blob_path(&layer.digest)).map_err(|source| PrepareError::Blob {
                reference: record.reference.clone(),
                layer: digest.to_string(),
                source,
            })?;
        let stats = unpack::unpack_layer(digest, &layer.media_type, file, dest, &opts)
            .map_err(flatten_err(digest))?;
        unpack::verify_diff_id(digest, &stats, layer.diff_id.as_str())
            .map_err(flatten_err(digest))?;
    }
    Ok(())
}

/// Reads a file of an unpacked image (`etc/passwd`) from its snapshots, top-most first,
/// as overlayfs would show it: a whiteout (a 0/0 character device) or an opaque
/// directory above hides what lies below. At most `limit` bytes.
pub fn read_image_file(lowerdirs: &[PathBuf], rel: &str, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    for dir in lowerdirs {
        let path = dir.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {
                let mut out = Vec::new();
                File::open(&path)
                    .ok()?
                    .take(limit)
                    .read_to_end(&mut out)
                    .ok()?;
                return Some(out);
            }
            // A whiteout, or anything else that shadows the path.
            Ok(m) if m.file_type().is_char_device() => return None,
            Ok(_) => return None,
            Err(_) => {}
        }
        // An opaque parent directory hides the lower layers.
        let parent = Path::new(rel)
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent
            && let Ok(Some(v)) = xattr_opaque(&dir.join(parent))
            && v
        {
            return None;
        }
    }
    None
}

fn xattr_opaque(dir: &Path) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; 4];
    match rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf) {
        Ok(n) => Ok(Some(&buf[..n] == b"y")),
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "prepare_tests.rs"]
mod tests;
