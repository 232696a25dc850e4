//! Signatures between the registry and the local content store.
//!
//! - [`publish`] signs an image and pushes the signature (`berth sign`); then
//!   [`refresh_signed`] fetches it back into the record of every stored image it signs,
//!   so the store never keeps a signature older than the one just made.
//! - [`verify_pulled`] checks the signature stored with a pulled image (`berth image
//!   verify`), fetching it from the registry first when the store has none; and
//!   [`verify_remote`] checks the registry's (`--remote`).
//!
//! Every check says where it looked ([`Looked`]): the local store (and when, and by
//! what, its signature was fetched) or the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;

use berth_spec::reference::{Reference, ReferenceError};

use super::{
    BoxError, ImageManifest, SignatureError, SigningKey, TrustedKey, sign_image, signature_tag,
    verify_signature_manifest,
};
use crate::image::digest::{Digest, DigestError};
use crate::image::prepare::{self, SignatureCheck};
use crate::image::pull::{self, PullError};
use crate::image::registry::{Client, RegistryError, Repository};
use crate::image::store::records::{ImageRecord, Refreshed, RefreshedBy};
use crate::image::store::{Store, StoreError};

/// Largest signature blob read from a registry (real ones are < 2 KiB).
const MAX_SIGNATURE_BLOB: u64 = 4 << 20;

/// Why a signature could not be published, fetched or checked.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
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

/// What [`publish`] pushed.
#[derive(Debug, Clone)]
pub struct Published {
    /// The digest signed (what the reference resolved to).
    pub digest: Digest,
    /// The signature's tag, `sha256-<hex>.sig`.
    pub tag: String,
    /// The digest of the signature manifest pushed under `tag`.
    pub manifest: Digest,
}

/// Signs what `reference` resolves to now with `key` and pushes the signature in the
/// legacy layout, keeping the signatures already under its tag.
pub async fn publish(
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
        tag: artifact.tag,
        manifest,
    })
}

/// After `berth sign`: fetches the signature again into the record of every image of
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

/// Fetches `record`'s signature from the registry again and stores it with the record
/// (if the reference still names the same image). Returns the updated record, or
/// `None` when the registry has no signature of it.
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
    let Some(mut signature) = fetched else {
        return Ok(None);
    };
    signature.refreshed = Some(Refreshed {
        by,
        at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    // A pull since may have moved the reference to another image: keep that one.
    let mut current = match store.record(&record.reference)? {
        Some(r) if r.digest == record.digest => r,
        _ => return Ok(None),
    };
    current.signature = Some(signature);
    store.put_record(&current)?;
    Ok(Some(current))
}

/// Checks the signature stored with `record` against `keys`; when the store has none,
/// fetches it from the registry first (and keeps it).
pub async fn verify_pulled(
    client: &Client,
    store: &Store,
    record: &ImageRecord,
    keys: &[TrustedKey],
) -> Result<LocatedCheck, ExchangeError> {
    if let Some(signature) = &record.signature {
        return Ok(LocatedCheck {
            check: prepare::verify_stored(store, record, keys),
            looked: Looked::Store {
                pulled_at: record.pulled_at.clone(),
                refreshed: signature.refreshed.clone(),
            },
        });
    }
    let check = match refresh(client, store, record, RefreshedBy::Verify).await? {
        Some(updated) => prepare::verify_stored(store, &updated, keys),
        None => SignatureCheck::Failed(format!(
            "no signature was found (keys tried: {})",
            key_names(keys)
        )),
    };
    Ok(LocatedCheck {
        check,
        looked: Looked::Registry {
            store_had_none: true,
        },
    })
}

fn key_names(keys: &[TrustedKey]) -> String {
    keys.iter()
        .map(TrustedKey::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves `reference` in its registry and checks the signature stored there, without
/// the local store. Returns the digest checked.
pub async fn verify_remote(
    client: &Client,
    reference: &Reference,
    keys: &[TrustedKey],
) -> Result<(Digest, LocatedCheck), ExchangeError> {
    let repo = Repository::of(reference);
    let digest = client
        .fetch_manifest(&repo, reference.reference())
        .await?
        .digest;
    let looked = Looked::Registry {
        store_had_none: false,
    };
    let tag = signature_tag(digest.as_str())?;
    let signature = match client.fetch_manifest(&repo, &tag).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => {
            let check = SignatureCheck::Failed(format!(
                "no signature `{tag}` was found in {} (keys tried: {})",
                reference.name(),
                key_names(keys)
            ));
            return Ok((digest, LocatedCheck { check, looked }));
        }
        Err(e) => return Err(e.into()),
    };
    let manifest = ImageManifest::parse(&signature.bytes)?;
    let mut blobs = BTreeMap::new();
    for layer in manifest.signature_layers() {
        let d = Digest::parse(&layer.digest)?;
        let bytes = client
            .fetch_blob_bytes(&repo, &d, MAX_SIGNATURE_BLOB)
            .await?;
        blobs.insert(layer.digest.clone(), bytes);
    }
    let fetch = |d: &str| -> Result<Vec<u8>, BoxError> {
        blobs
            .get(d)
            .cloned()
            .ok_or_else(|| format!("blob {d} was not fetched").into())
    };
    let check = match verify_signature_manifest(&signature.bytes, digest.as_str(), keys, &fetch) {
        Ok(v) if !v.verified.is_empty() => {
            let mut names: Vec<String> = v.verified.iter().map(|x| x.key.clone()).collect();
            names.sort();
            names.dedup();
            SignatureCheck::Verified(names)
        }
        Ok(_) => SignatureCheck::Failed("no signature verified".into()),
        Err(e) => SignatureCheck::Failed(crate::util::error_chain(&e)),
    };
    Ok((digest, LocatedCheck { check, looked }))
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
