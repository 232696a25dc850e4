//! Signatures between the registry and the local content store.
//!
//! - [`publish`] signs an image and pushes the signature (`berth sign`): a Sigstore
//!   bundle attached as an OCI referrer (cosign 3's layout, listed in the
//!   `sha256-<hex>` index when the registry has no referrers API), or the legacy
//!   `sha256-<hex>.sig` manifest; then [`refresh_signed`] fetches the signatures back
//!   into the record of every stored image it signs, so the store never keeps
//!   signatures older than the one just made.
//! - [`verify_pulled`] checks the signatures stored with a pulled image (`berth image
//!   verify`), fetching them from the registry first when the store has none; and
//!   [`verify_remote`] checks the registry's (`--remote`): legacy and bundles alike,
//!   judged by [`prepare::judge`].
//!
//! Every check says where it looked ([`Looked`]): the local store (and when, and by
//! what, its signature was fetched) or the registry.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;

use berth_spec::reference::{Reference, ReferenceError};

use super::referrers::{EMPTY_JSON, ReferrersError, build_referrer, merge_index};
use super::{
    BundleError, SignatureError, SigningKey, Trust, sign_bundle, sign_image, signature_tag,
};
use crate::image::digest::{Digest, DigestError};
use crate::image::manifest::{self, Descriptor, ManifestError, OCI_INDEX, OCI_MANIFEST};
use crate::image::prepare::{self, Outcomes, SignatureCheck};
use crate::image::pull::{self, PullError, Signatures};
use crate::image::registry::referrers::referrers_tag;
use crate::image::registry::{Client, RegistryError, Repository};
use crate::image::store::records::{ImageRecord, Refreshed, RefreshedBy};
use crate::image::store::{Store, StoreError};

mod registry;
pub use registry::{registry_outcomes, verify_remote};

/// Why a signature could not be published, fetched or checked.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(
        "the referrers index {tag} kept losing the new signature {referrer} to other writers; sign again"
    )]
    IndexLost { tag: String, referrer: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot fetch the signature of {reference} from the registry")]
    Fetch {
        reference: String,
        #[source]
        source: PullError,
    },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Referrers(#[from] ReferrersError),
    #[error("the image {reference} to sign")]
    Subject {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("the signature manifest names an invalid blob")]
    Digest(#[from] DigestError),
    #[error("the stored image reference `{reference}` does not parse")]
    Reference {
        reference: String,
        #[source]
        source: ReferenceError,
    },
    #[error("cannot lock the content store")]
    Lock(#[source] tokio::task::JoinError),
}

impl ExchangeError {
    /// True when content did not match its digest or is not a signature manifest:
    /// judged and found wanting, rather than a job that could not be done.
    pub fn is_integrity(&self) -> bool {
        match self {
            ExchangeError::Registry(e) => e.is_integrity(),
            ExchangeError::Store(e) => e.is_integrity(),
            ExchangeError::Fetch { source, .. } => source.is_integrity(),
            ExchangeError::Signature(e) => !e.is_transient(),
            ExchangeError::Referrers(_) => true,
            ExchangeError::Digest(_) => true,
            _ => false,
        }
    }
}

/// Where a signature check looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Looked {
    /// The signature stored with the image: fetched when it was pulled (`pulled_at`),
    /// or fetched again since.
    Store {
        pulled_at: String,
        refreshed: Option<Refreshed>,
    },
    /// The registry, asked now; `store_had_none` when the local store was looked in
    /// first and had no signature of the image.
    Registry { store_had_none: bool },
}

impl Looked {
    /// `store` or `registry`.
    pub fn place(&self) -> &'static str {
        match self {
            Looked::Store { .. } => "store",
            Looked::Registry { .. } => "registry",
        }
    }

    /// For the stored signature: what fetched it (`pull`, `sign`, `verify`) and when.
    pub fn fetched(&self) -> Option<(&'static str, &str)> {
        match self {
            Looked::Store {
                refreshed: Some(r), ..
            } => Some((
                match r.by {
                    RefreshedBy::Sign => "sign",
                    RefreshedBy::Verify => "verify",
                    RefreshedBy::Pass => "pass",
                },
                &r.at,
            )),
            Looked::Store { pulled_at, .. } => Some(("pull", pulled_at)),
            Looked::Registry { .. } => None,
        }
    }
}

impl fmt::Display for Looked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Looked::Store {
                pulled_at,
                refreshed,
            } => {
                let (how, at) = match refreshed {
                    None => ("fetched at pull time", pulled_at),
                    Some(Refreshed {
                        by: RefreshedBy::Sign,
                        at,
                    }) => ("stored by `berth sign`", at),
                    Some(Refreshed {
                        by: RefreshedBy::Verify,
                        at,
                    }) => ("fetched by `berth image verify`", at),
                    Some(Refreshed {
                        by: RefreshedBy::Pass,
                        at,
                    }) => ("fetched again by a pass", at),
                };
                write!(f, "in the local store ({how}, {})", short_time(at))
            }
            Looked::Registry {
                store_had_none: true,
            } => f.write_str("in the registry (the local store had none)"),
            Looked::Registry {
                store_had_none: false,
            } => f.write_str("in the registry"),
        }
    }
}

/// `2026-11-22T10:04:05Z` as `2026-11-22 10:04 UTC`; anything else as it is.
fn short_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(day), Some(time)) if rfc3339.ends_with('Z') => format!("{day} {time} UTC"),
        _ => rfc3339.to_string(),
    }
}

/// A signature check and where it looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedCheck {
    pub check: SignatureCheck,
    pub looked: Looked,
}

/// The layout `berth sign` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignFormat {
    /// A Sigstore bundle attached as an OCI 1.1 referrer (cosign 3's default).
    Bundle,
    /// cosign's legacy `sha256-<hex>.sig` manifest (`--legacy`).
    Legacy,
}

/// What [`publish`] pushed.
#[derive(Debug, Clone)]
pub struct Published {
    /// The digest signed (what the reference resolved to).
    pub digest: Digest,
    /// The signature manifest pushed: the legacy one (under its tag) or the referrer
    /// manifest (by its digest).
    pub manifest: Digest,
    pub how: PublishedAs,
}

/// Where [`publish`] put the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishedAs {
    /// The legacy layout, under `tag` (`sha256-<hex>.sig`).
    Legacy { tag: String },
    /// A bundle referrer. `index_tag`: the `sha256-<hex>` index it was added to, when
    /// the registry has no referrers API (`None`: the API lists it).
    Bundle { index_tag: Option<String> },
}

/// Signs what `reference` resolves to now with `key` and pushes the signature in
/// `format`, keeping the signatures already there.
pub async fn publish(
    client: &Client,
    reference: &Reference,
    key: &SigningKey,
    format: SignFormat,
) -> Result<Published, ExchangeError> {
    match format {
        SignFormat::Bundle => publish_bundle(client, reference, key).await,
        SignFormat::Legacy => publish_legacy(client, reference, key).await,
    }
}

/// The legacy layout: the signature appended to the manifest under `sha256-<hex>.sig`.
async fn publish_legacy(
    client: &Client,
    reference: &Reference,
    key: &SigningKey,
) -> Result<Published, ExchangeError> {
    let repo = Repository::of(reference);
    let digest = client
        .fetch_manifest(&repo, reference.reference())
        .await?
        .digest;
    let tag = signature_tag(digest.as_str())?;
    let existing = match client.fetch_manifest(&repo, &tag).await {
        Ok(m) => Some(m.bytes),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let artifact = sign_image(&reference.name(), digest.as_str(), key, existing.as_deref())?;
    client
        .push_blob(&repo, Bytes::from(artifact.config.bytes))
        .await?;
    client
        .push_blob(&repo, Bytes::from(artifact.payload.bytes))
        .await?;
    let manifest = client
        .push_manifest(
            &repo,
            &artifact.tag,
            artifact.manifest.media_type,
            Bytes::from(artifact.manifest.bytes),
        )
        .await?;
    Ok(Published {
        digest,
        manifest,
        how: PublishedAs::Legacy { tag: artifact.tag },
    })
}

/// A Sigstore bundle as cosign 3 attaches it: the bundle blob, the empty config, the
/// referrer manifest (pushed by digest, `subject` = the image); then, when the
/// registry has no referrers API, the `sha256-<hex>` index with the referrer added to
/// those already listed.
async fn publish_bundle(
    client: &Client,
    reference: &Reference,
    key: &SigningKey,
) -> Result<Published, ExchangeError> {
    let repo = Repository::of(reference);
    let top = client.fetch_manifest(&repo, reference.reference()).await?;
    let (_, media_type) = manifest::parse_manifest(&top.bytes, top.content_type.as_deref())
        .map_err(|source| ExchangeError::Subject {
            reference: reference.to_string(),
            source,
        })?;
    let subject = Descriptor {
        media_type,
        digest: top.digest.clone(),
        size: top.bytes.len() as u64,
        platform: None,
        urls: None,
        annotations: None,
        artifact_type: None,
    };
    // No subject name, as cosign writes none: the registry's address stays out of
    // what is signed, and the bundle holds wherever the image is copied.
    let bundle = sign_bundle("", top.digest.as_str(), key)?;
    let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let artifact = build_referrer(bundle, &subject, &created)?;
    client
        .push_blob(&repo, Bytes::from(artifact.bundle.clone()))
        .await?;
    client
        .push_blob(&repo, Bytes::from_static(EMPTY_JSON))
        .await?;
    client
        .push_manifest(
            &repo,
            artifact.digest.as_str(),
            OCI_MANIFEST,
            Bytes::from(artifact.manifest.clone()),
        )
        .await?;
    let index_tag = if client
        .referrers_api(&repo, &top.digest, None)
        .await?
        .is_some()
    {
        None
    } else {
        let tag = referrers_tag(&top.digest);
        // Read, merge, write — and read again: another signer's write between ours
        // may have dropped our entry (the registry has no compare-and-swap); merged
        // again, a few times, until the tag lists it.
        let mut tries = 0;
        loop {
            tries += 1;
            let existing = match client.fetch_manifest(&repo, &tag).await {
                Ok(m) => Some(m.bytes),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            };
            if tries > 1 && lists(existing.as_deref(), &artifact.digest) {
                break;
            }
            if tries > INDEX_TRIES {
                return Err(ExchangeError::IndexLost {
                    tag,
                    referrer: artifact.digest.as_str().to_string(),
                });
            }
            let index = merge_index(&tag, existing.as_deref(), &artifact.entry)?;
            client
                .push_manifest(&repo, &tag, OCI_INDEX, Bytes::from(index))
                .await?;
            // Give a concurrent signer's write the time to land before reading back.
            tokio::time::sleep(std::time::Duration::from_millis(50 * tries as u64)).await;
        }
        Some(tag)
    };
    Ok(Published {
        digest: top.digest,
        manifest: artifact.digest,
        how: PublishedAs::Bundle { index_tag },
    })
}

/// How many times `berth sign` writes the `sha256-<hex>` index before it gives up on
/// a tag that other writers keep changing.
const INDEX_TRIES: u32 = 5;

/// Whether the index `bytes` lists `referrer`.
fn lists(bytes: Option<&[u8]>, referrer: &Digest) -> bool {
    bytes
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| {
            v["manifests"].as_array().map(|m| {
                m.iter()
                    .any(|d| d["digest"].as_str() == Some(referrer.as_str()))
            })
        })
        .unwrap_or(false)
}

/// After `berth sign`: fetches the signatures again into the record of every image of
/// `reference`'s repository stored with `digest` (as its top or platform digest).
/// Returns the references refreshed; none when there is no store under it yet.
pub async fn refresh_signed(
    client: &Client,
    store: &Store,
    reference: &Reference,
    digest: &Digest,
) -> Result<Vec<String>, ExchangeError> {
    // `berth sign` often runs where nothing was ever pulled: no store, nothing to do.
    if !store.images_dir().is_dir() {
        return Ok(Vec::new());
    }
    let name = reference.name();
    let mut refreshed = Vec::new();
    for record in store.records()? {
        if record.name != name || (record.digest != *digest && record.manifest.digest != *digest) {
            continue;
        }
        if refresh(client, store, &record, RefreshedBy::Sign)
            .await?
            .is_some()
        {
            refreshed.push(record.reference);
        }
    }
    Ok(refreshed)
}

/// Fetches `record`'s signatures (legacy and bundles) from the registry again and
/// stores them with the record (if the reference still names the same image). Returns
/// the updated record, or `None` when the registry has no signature of it.
async fn refresh(
    client: &Client,
    store: &Store,
    record: &ImageRecord,
    by: RefreshedBy,
) -> Result<Option<ImageRecord>, ExchangeError> {
    let reference =
        Reference::parse(&record.reference).map_err(|source| ExchangeError::Reference {
            reference: record.reference.clone(),
            source,
        })?;
    // Blobs written under the shared lock, as a pull writes them: `rm` and `prune`
    // (exclusive) cannot collect them before the record names them.
    let _lock = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.lock_shared())
            .await
            .map_err(ExchangeError::Lock)??
    };
    let fetched = pull::fetch_signature_of(client, store, &reference, record)
        .await
        .map_err(|source| ExchangeError::Fetch {
            reference: record.reference.clone(),
            source,
        })?;
    if fetched.is_empty() {
        return Ok(None);
    }
    let stamp = Refreshed {
        by,
        at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    let Signatures {
        mut legacy,
        mut bundles,
    } = fetched;
    if let Some(s) = &mut legacy {
        s.refreshed = Some(stamp.clone());
    }
    for b in &mut bundles {
        b.refreshed = Some(stamp.clone());
    }
    // A pull since may have moved the reference to another image: keep that one.
    let mut current = match store.record(&record.reference)? {
        Some(r) if r.digest == record.digest => r,
        _ => return Ok(None),
    };
    current.signature = legacy;
    current.bundles = bundles;
    store.put_record(&current)?;
    Ok(Some(current))
}

/// The check of the signatures stored with `record`; when they do not verify, they are
/// fetched from the registry again (and kept) and checked again: an image signed since
/// it was pulled, or whose signatures could not be fetched at the pull (a registry
/// error), is judged on what its registry holds now — a pinned image is otherwise
/// served from the store for good. A registry that cannot be asked leaves the first
/// verdict, with a warning.
pub async fn verify_fresh(
    client: &Client,
    store: &Store,
    record: &ImageRecord,
    trust: &Trust,
) -> SignatureCheck {
    let check = prepare::verify_stored(store, record, trust);
    if matches!(check, SignatureCheck::Verified(_)) {
        return check;
    }
    let refreshed = tokio::time::timeout(
        pull::SIGNATURES_DEADLINE,
        refresh(client, store, record, RefreshedBy::Pass),
    )
    .await;
    match refreshed {
        Ok(Ok(Some(updated))) => prepare::verify_stored(store, &updated, trust),
        Ok(Ok(None)) => check,
        Err(_) => {
            tracing::warn!(image = %record.reference, "the image's signatures were not fetched again in time");
            check
        }
        Ok(Err(e)) => {
            tracing::warn!(image = %record.reference, error = %crate::util::error_chain(&e), "cannot fetch the image's signatures again");
            check
        }
    }
}

/// Checks the signatures stored with `record` against `trust`; when the store has
/// none, fetches them from the registry first (and keeps them).
pub async fn verify_pulled(
    client: &Client,
    store: &Store,
    record: &ImageRecord,
    trust: &Trust,
) -> Result<LocatedCheck, ExchangeError> {
    if record.signature.is_some() || !record.bundles.is_empty() {
        let refreshed = record
            .signature
            .iter()
            .filter_map(|s| s.refreshed.clone())
            .chain(record.bundles.iter().filter_map(|b| b.refreshed.clone()))
            .max_by(|a, b| a.at.cmp(&b.at));
        return Ok(LocatedCheck {
            check: prepare::verify_stored(store, record, trust),
            looked: Looked::Store {
                pulled_at: record.pulled_at.clone(),
                refreshed,
            },
        });
    }
    let check = match refresh(client, store, record, RefreshedBy::Verify).await? {
        Some(updated) => prepare::verify_stored(store, &updated, trust),
        None => prepare::judge(&record.digest, Outcomes::default(), trust),
    };
    Ok(LocatedCheck {
        check,
        looked: Looked::Registry {
            store_had_none: true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_is_named() {
        let pulled = "2026-11-22T10:04:05Z".to_string();
        let store = |refreshed| Looked::Store {
            pulled_at: pulled.clone(),
            refreshed,
        };
        assert_eq!(
            store(None).to_string(),
            "in the local store (fetched at pull time, 2026-11-22 10:04 UTC)"
        );
        let by = |by| {
            store(Some(Refreshed {
                by,
                at: "2026-11-23T08:15:00Z".into(),
            }))
            .to_string()
        };
        assert_eq!(
            by(RefreshedBy::Sign),
            "in the local store (stored by `berth sign`, 2026-11-23 08:15 UTC)"
        );
        assert_eq!(
            by(RefreshedBy::Verify),
            "in the local store (fetched by `berth image verify`, 2026-11-23 08:15 UTC)"
        );
        assert_eq!(
            Looked::Registry {
                store_had_none: false
            }
            .to_string(),
            "in the registry"
        );
        assert_eq!(
            Looked::Registry {
                store_had_none: true
            }
            .to_string(),
            "in the registry (the local store had none)"
        );
        assert_eq!(store(None).fetched(), Some(("pull", pulled.as_str())));
        assert_eq!(short_time("yesterday"), "yesterday");
    }
}
