//! The signatures a pull stores with an image: the legacy cosign signature
//! (`sha256-<hex>.sig`) and the Sigstore bundles attached as OCI referrers, each from
//! the first of the image's top and platform digests that has any; every blob
//! size-capped, digest-checked and stored. A missing signature is normal.

use std::collections::BTreeSet;

use berth_spec::reference::Reference;

use super::{MAX_SIGNATURE_BLOB, MAX_SIGNATURE_LAYERS, PullError, Puller, Silent};
use crate::image::digest::Digest;
use crate::image::manifest::{self, Manifest};
use crate::image::registry::{Client, Repository};
use crate::image::signature::referrers::{
    MAX_BUNDLE_REFERRERS, MAX_REFERRER_BYTES, check_referrer,
};
use crate::image::signature::{BUNDLE_MEDIA_TYPE, MAX_BUNDLE_SIZE};
use crate::image::store::Store;
use crate::image::store::records::{BlobRef, BundleRecord, ImageRecord, SignatureRecord};

/// The signatures of an image fetched from its registry.
#[derive(Debug, Clone, Default)]
pub struct Signatures {
    /// The legacy `sha256-<hex>.sig` one.
    pub legacy: Option<SignatureRecord>,
    /// The Sigstore bundles.
    pub bundles: Vec<BundleRecord>,
}

impl Signatures {
    pub fn is_empty(&self) -> bool {
        self.legacy.is_none() && self.bundles.is_empty()
    }
}

/// Fetches the signatures of a pulled image from its registry again, as a pull does
/// (for each kind, the first of its top and platform digests that has any; blobs
/// size-capped, digest-checked and stored). The record is not written. Empty when the
/// registry has none; unlike a pull, a registry that cannot be asked is an error.
pub async fn fetch_signature_of(
    client: &Client,
    store: &Store,
    reference: &Reference,
    record: &ImageRecord,
) -> Result<Signatures, PullError> {
    let p = Puller {
        client,
        store,
        repo: Repository::of(reference),
        key: record.reference.clone(),
        progress: &Silent,
    };
    let mut candidates = vec![&record.digest];
    if record.manifest.digest != record.digest {
        candidates.push(&record.manifest.digest);
    }
    let mut found = Signatures::default();
    for signed in &candidates {
        let tag = format!("sha256-{}.sig", signed.hex());
        match p.fetch_signature(signed, &tag).await {
            Ok(s) => {
                found.legacy = Some(s);
                break;
            }
            Err(PullError::Registry(e)) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    for signed in candidates {
        found.bundles = p.fetch_bundles(signed).await?;
        if !found.bundles.is_empty() {
            break;
        }
    }
    Ok(found)
}

impl Puller<'_> {
    /// Fetches the legacy cosign signature (`sha256-<hex>.sig`) of the first candidate
    /// digest that has one. A missing signature is normal; other failures are logged
    /// and leave the image unsigned in the store (verification then reports it).
    pub(super) async fn signature(
        &self,
        candidates: &[Digest],
    ) -> Result<Option<SignatureRecord>, PullError> {
        for signed in candidates {
            let tag = format!("sha256-{}.sig", signed.hex());
            match self.fetch_signature(signed, &tag).await {
                Ok(record) => return Ok(Some(record)),
                Err(PullError::Registry(e)) if e.is_not_found() => continue,
                Err(e) if e.is_integrity() => return Err(e),
                Err(e) => {
                    tracing::warn!(image = %self.key, %tag, error = %e, "cannot fetch the image signature");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Fetches the Sigstore bundles of the first candidate digest that has any. None
    /// is normal; failures are handled as [`Self::signature`] handles them.
    pub(super) async fn bundles(
        &self,
        candidates: &[Digest],
    ) -> Result<Vec<BundleRecord>, PullError> {
        for signed in candidates {
            match self.fetch_bundles(signed).await {
                Ok(found) if found.is_empty() => continue,
                Ok(found) => return Ok(found),
                Err(e) if e.is_integrity() => return Err(e),
                Err(e) => {
                    tracing::warn!(image = %self.key, %signed, error = %e, "cannot fetch the image's sigstore bundles");
                    return Ok(Vec::new());
                }
            }
        }
        Ok(Vec::new())
    }

    /// The bundle referrers of `signed` (at most [`MAX_BUNDLE_REFERRERS`]), each
    /// referrer manifest and bundle digest-checked and stored. A referrer that is
    /// gone, is not a bundle of `signed` or does not fit is skipped with a warning;
    /// content that does not match its digest fails.
    async fn fetch_bundles(&self, signed: &Digest) -> Result<Vec<BundleRecord>, PullError> {
        let found = self
            .client
            .referrers(&self.repo, signed, BUNDLE_MEDIA_TYPE, MAX_BUNDLE_REFERRERS)
            .await?;
        let mut out = Vec::new();
        for d in &found.descriptors {
            match self.fetch_bundle(signed, d).await {
                Ok(bundle) => out.push(BundleRecord {
                    signed: signed.clone(),
                    found: found.source,
                    manifest: BlobRef {
                        digest: d.digest.clone(),
                        size: d.size,
                        media_type: manifest::OCI_MANIFEST.to_string(),
                    },
                    bundle,
                    refreshed: None,
                }),
                Err(e) if e.is_integrity() => return Err(e),
                Err(e) => {
                    tracing::warn!(image = %self.key, %signed, referrer = %d.digest, error = %crate::util::error_chain(&e), "sigstore bundle referrer skipped");
                }
            }
        }
        Ok(out)
    }

    /// One bundle referrer: its manifest (checked to be a bundle of `signed`) and
    /// its bundle layer.
    async fn fetch_bundle(
        &self,
        signed: &Digest,
        referrer: &manifest::Descriptor,
    ) -> Result<BlobRef, PullError> {
        let bytes = self
            .small_blob(&referrer.digest, referrer.size, MAX_REFERRER_BYTES, true)
            .await?;
        let layer = check_referrer(&bytes, &referrer.digest, signed).map_err(|source| {
            PullError::Referrer {
                reference: self.key.clone(),
                source,
            }
        })?;
        self.small_blob(&layer.digest, layer.size, MAX_BUNDLE_SIZE as u64, false)
            .await?;
        Ok(BlobRef {
            digest: layer.digest,
            size: layer.size,
            media_type: layer.media_type,
        })
    }

    async fn fetch_signature(
        &self,
        signed: &Digest,
        tag: &str,
    ) -> Result<SignatureRecord, PullError> {
        let fetched = self.client.fetch_manifest(&self.repo, tag).await?;
        let (parsed, media_type) = self.parse(&fetched.bytes, fetched.content_type.as_deref())?;
        let Manifest::Image(m) = parsed else {
            return Err(self.invalid(format!("signature {tag} is an index, not a manifest")));
        };
        if m.layers.len() > MAX_SIGNATURE_LAYERS {
            return Err(self.invalid(format!(
                "signature {tag} has {} layers, more than {MAX_SIGNATURE_LAYERS}",
                m.layers.len()
            )));
        }
        self.store
            .write_blob(&fetched.digest, &fetched.bytes, &self.repo.target(tag))?;
        let mut blobs = Vec::new();
        let mut seen = BTreeSet::new();
        for d in std::iter::once(&m.config).chain(&m.layers) {
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            self.small_blob(&d.digest, d.size, MAX_SIGNATURE_BLOB, false)
                .await?;
            blobs.push(BlobRef {
                digest: d.digest.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
            });
        }
        Ok(SignatureRecord {
            tag: tag.to_string(),
            signed: signed.clone(),
            manifest: BlobRef {
                digest: fetched.digest,
                size: fetched.bytes.len() as u64,
                media_type,
            },
            blobs,
            refreshed: None,
        })
    }
}
