//! Pulling an image into the content store: resolve the reference, pick this host's
//! platform from an index, fetch config and layers (in parallel, verified, resumable),
//! fetch the cosign signature (legacy `.sig` tag) and Sigstore bundles (OCI referrers)
//! if there are any, and record the result.
//!
//! A digest reference whose image is already recorded (with all its blobs) never
//! touches the registry; a tag is resolved again on every pull. The returned
//! [`ImageRecord`] is what later steps need: layer blobs (`Store::blob_path`) with
//! their media types and `diff_id`s, the config digest, the platform, and the
//! signature blobs for offline verification. The caller runs unpack and verify on it.

use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};

use berth_spec::reference::Reference;

use super::digest::Digest;
use super::manifest::{
    self, ImageConfig, ImageManifest, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, Manifest, ManifestError,
};
use super::platform::{self, Platform};
use super::registry::{Client, RegistryError, Repository};
use super::signature::referrers::ReferrersError;
use super::store::records::{BlobRef, ImageRecord, LayerRecord};
use super::store::{Store, StoreError};

/// Indexes may nest (image-spec says SHOULD support); more than this is hostile.
const MAX_INDEX_DEPTH: usize = 4;
/// Layers downloaded at once: enough to fill a link, few enough not to starve the
/// disk of a small edge device (and what Docker uses).
pub const DEFAULT_PARALLEL: usize = 3;
/// How long a pull spends on an image's signatures (the legacy one and every bundle
/// referrer) at most.
pub const SIGNATURES_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Largest blob of a cosign signature (payload JSON, config); real ones are < 2 KiB.
pub(crate) const MAX_SIGNATURE_BLOB: u64 = 1 << 20;
/// Most signature layers berth stores for one image.
pub(crate) const MAX_SIGNATURE_LAYERS: usize = 64;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to select from an index (default: this host's).
    pub platform: Platform,
    /// Also fetch the `sha256-<hex>.sig` cosign signature and the Sigstore bundles.
    pub signatures: bool,
    /// Layers downloaded in parallel.
    pub parallel: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            signatures: true,
            parallel: DEFAULT_PARALLEL,
        }
    }
}

/// Progress callbacks (the CLI draws bars; the agent logs). All default to nothing.
pub trait PullProgress: Send + Sync {
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    fn blob_finished(&self, _digest: &Digest, _already_present: bool) {}
}

/// No progress output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;
impl PullProgress for Silent {}

/// A failed pull.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {reference}: {source}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("image {reference} has no manifest for platform {platform} (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error(
        "image {reference} is built for {image}, not for this host's {wanted} (use --platform to pull it anyway)"
    )]
    WrongPlatform {
        reference: String,
        image: String,
        wanted: String,
    },
    #[error("image {reference}: {detail}")]
    Invalid { reference: String, detail: String },
    #[error("image {reference}: a sigstore bundle referrer is refused")]
    Referrer {
        reference: String,
        #[source]
        source: ReferrersError,
    },
}

impl PullError {
    /// True when retrying later may help.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Registry(e) => e.is_transient(),
            PullError::Store(e) => e.is_transient(),
            _ => false,
        }
    }

    /// True when the registry served content that does not match its digest.
    pub fn is_integrity(&self) -> bool {
        match self {
            PullError::Registry(e) => e.is_integrity(),
            PullError::Store(e) => e.is_integrity(),
            _ => false,
        }
    }
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: ImageRecord,
    /// True when the store already had the image and the registry was not contacted.
    pub from_store: bool,
}

/// Pulls `reference` into `store`.
pub async fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn PullProgress,
) -> Result<Pulled, PullError> {
    let _lock = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.lock_shared())
            .await
            .map_err(|e| StoreError::Io {
                action: "lock",
                path: store.root().to_path_buf(),
                source: std::io::Error::other(e),
            })??
    };
    let key = reference.to_string();
    if let Some(record) = from_store(store, reference, opts)? {
        store.put_record(&record)?;
        return Ok(Pulled {
            record,
            from_store: true,
        });
    }
    let p = Puller {
        client,
        store,
        repo: Repository::of(reference),
        key: key.clone(),
        progress,
    };

    // Resolve: the tag (or digest), then down through indexes to one image manifest.
    let top = client
        .fetch_manifest(&p.repo, reference.reference())
        .await?;
    store.write_blob(&top.digest, &top.bytes, &p.repo.target(top.digest.as_str()))?;
    let (mut parsed, top_type) = p.parse(&top.bytes, top.content_type.as_deref())?;
    let mut indexes = Vec::new();
    let mut current = BlobRef {
        digest: top.digest.clone(),
        size: top.bytes.len() as u64,
        media_type: top_type.clone(),
    };
    let mut selected: Option<Platform> = None;
    let image: ImageManifest = loop {
        match parsed {
            Manifest::Image(m) => break *m,
            Manifest::Index(index) => {
                indexes.push(current.clone());
                if indexes.len() > MAX_INDEX_DEPTH {
                    return Err(p.invalid(format!("indexes nest more than {MAX_INDEX_DEPTH} deep")));
                }
                let platforms: Vec<Option<Platform>> = index
                    .manifests
                    .iter()
                    .map(|d| d.platform.as_ref().map(|pl| pl.normalized()))
                    .collect();
                let Some(i) = platform::select(&platforms, &opts.platform) else {
                    let available: Vec<String> = platforms
                        .iter()
                        .flatten()
                        .map(ToString::to_string)
                        .collect();
                    return Err(PullError::NoPlatform {
                        reference: key,
                        platform: opts.platform.to_string(),
                        available: if available.is_empty() {
                            "none".into()
                        } else {
                            available.join(", ")
                        },
                    });
                };
                let desc = &index.manifests[i];
                selected = platforms[i].clone().or(selected);
                let bytes = p
                    .small_blob(&desc.digest, desc.size, MAX_MANIFEST_BYTES, true)
                    .await?;
                let (m, mt) = p.parse(&bytes, Some(&desc.media_type))?;
                current = BlobRef {
                    digest: desc.digest.clone(),
                    size: desc.size,
                    media_type: mt,
                };
                parsed = m;
            }
        }
    };
    image.check_image().map_err(|source| PullError::Manifest {
        reference: key.clone(),
        source,
    })?;

    let config_bytes = p
        .small_blob(
            &image.config.digest,
            image.config.size,
            MAX_CONFIG_BYTES,
            false,
        )
        .await?;
    let config = ImageConfig::parse(&config_bytes, image.layers.len()).map_err(|source| {
        PullError::Manifest {
            reference: key.clone(),
            source,
        }
    })?;
    let platform = match (selected, config.platform()) {
        (Some(p), _) => p,
        (None, Some(image_platform)) => {
            if image_platform.rank_on(&opts.platform).is_none() {
                return Err(PullError::WrongPlatform {
                    reference: key,
                    image: image_platform.to_string(),
                    wanted: opts.platform.to_string(),
                });
            }
            image_platform
        }
        (None, None) => opts.platform.clone(),
    };

    // Layers, in parallel, each verified and resumable.
    futures_util::stream::iter(image.layers.iter())
        .map(|layer| p.layer(&layer.digest, layer.size))
        .buffer_unordered(opts.parallel.max(1))
        .try_collect::<Vec<()>>()
        .await?;

    let (signature, bundles) = if opts.signatures {
        let mut candidates = vec![top.digest.clone()];
        if current.digest != top.digest {
            candidates.push(current.digest.clone());
        }
        // One deadline for all of it: a registry stalling on each of many referrers
        // would otherwise hold the pass for an idle timeout per request. What is not
        // found in time counts as not found (a refused image's signatures are fetched
        // again before it is refused: `exchange::verify_fresh`).
        match tokio::time::timeout(SIGNATURES_DEADLINE, async {
            Ok::<_, PullError>((
                p.signature(&candidates).await?,
                p.bundles(&candidates).await?,
            ))
        })
        .await
        {
            Ok(found) => found?,
            Err(_) => {
                tracing::warn!(image = %p.key, deadline = ?SIGNATURES_DEADLINE, "the image's signatures were not fetched in time");
                (None, Vec::new())
            }
        }
    } else {
        (None, Vec::new())
    };

    let record = ImageRecord {
        reference: key,
        name: reference.name(),
        digest: top.digest,
        media_type: top_type,
        indexes,
        manifest: current,
        platform,
        config: BlobRef {
            digest: image.config.digest.clone(),
            size: image.config.size,
            media_type: image.config.media_type.clone(),
        },
        layers: image
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(l, diff_id)| LayerRecord {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: diff_id.clone(),
            })
            .collect(),
        signature,
        bundles,
        pulled_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    store.put_record(&record)?;
    Ok(Pulled {
        record,
        from_store: false,
    })
}

/// A pinned reference already recorded, with every blob present, for a compatible
/// platform: re-recorded under this reference without contacting the registry.
fn from_store(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<Option<ImageRecord>, PullError> {
    let Some(pinned) = reference.digest.as_deref() else {
        return Ok(None);
    };
    let name = reference.name();
    for r in store.records()? {
        let top = r.digest.as_str() == pinned
            && (r.indexes.is_empty() || r.platform.rank_on(&opts.platform).is_some());
        let inner = r.manifest.digest.as_str() == pinned;
        if r.name != name || !(top || inner) || !r.blobs().all(|d| store.has_blob(d)) {
            continue;
        }
        let mut record = r.clone();
        record.reference = reference.to_string();
        if inner && !top {
            record.digest = r.manifest.digest.clone();
            record.media_type = r.manifest.media_type.clone();
            record.indexes.clear();
        }
        return Ok(Some(record));
    }
    Ok(None)
}

mod signatures;
pub use signatures::{Signatures, fetch_signature_of};

/// One pull's context.
struct Puller<'a> {
    client: &'a Client,
    store: &'a Store,
    repo: Repository,
    key: String,
    progress: &'a dyn PullProgress,
}

impl Puller<'_> {
    fn invalid(&self, detail: String) -> PullError {
        PullError::Invalid {
            reference: self.key.clone(),
            detail,
        }
    }

    fn parse(
        &self,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<(Manifest, String), PullError> {
        manifest::parse_manifest(bytes, content_type).map_err(|source| PullError::Manifest {
            reference: self.key.clone(),
            source,
        })
    }

    /// A manifest or config by digest: from the store if present, else from the
    /// registry (size-capped, digest-checked) and then stored.
    async fn small_blob(
        &self,
        digest: &Digest,
        size: u64,
        limit: u64,
        is_manifest: bool,
    ) -> Result<Vec<u8>, PullError> {
        let what = if is_manifest {
            "manifest"
        } else {
            "image config"
        };
        manifest::check_size(what, size, limit).map_err(|source| PullError::Manifest {
            reference: self.key.clone(),
            source,
        })?;
        let bytes = if self.store.has_blob(digest) {
            self.store.read_blob(digest, limit)?
        } else {
            self.progress.blob_started(digest, size);
            let bytes = if is_manifest {
                self.client
                    .fetch_manifest(&self.repo, digest.as_str())
                    .await?
                    .bytes
            } else {
                self.client
                    .fetch_blob_bytes(&self.repo, digest, limit)
                    .await?
            };
            // Judged before it is stored: what its descriptor does not declare is
            // never written.
            if bytes.len() as u64 != size {
                return Err(self.invalid(format!(
                    "{what} {digest} has {} bytes, its descriptor says {size}",
                    bytes.len()
                )));
            }
            self.store
                .write_blob(digest, &bytes, &self.repo.target(digest.as_str()))?;
            self.progress.blob_advanced(digest, bytes.len() as u64);
            self.progress.blob_finished(digest, false);
            bytes
        };
        if bytes.len() as u64 != size {
            return Err(self.invalid(format!(
                "{what} {digest} has {} bytes, its descriptor says {size}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    async fn layer(&self, digest: &Digest, size: u64) -> Result<(), PullError> {
        let present = self.store.has_blob(digest);
        self.progress.blob_started(digest, size);
        if !present {
            let advance = |n: u64| self.progress.blob_advanced(digest, n);
            self.store
                .ingest(
                    &self.repo.target(digest.as_str()),
                    digest,
                    size,
                    self.client.retry_policy(),
                    |offset| self.client.open_blob(&self.repo, digest, offset),
                    &advance,
                )
                .await?;
        }
        self.progress.blob_finished(digest, present);
        Ok(())
    }
}
