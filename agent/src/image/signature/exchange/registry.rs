//! Signature checks against the registry itself, without the local store: `berth
//! image verify --remote`, and `berth plan` before anything is pulled. What is read is
//! what a pull would store (the same candidates, caps and skipped referrers), judged
//! by [`prepare::judge`], so the words match a check from the store.

use std::collections::BTreeMap;

use berth_spec::reference::Reference;

use super::{ExchangeError, LocatedCheck, Looked};
use crate::image::digest::Digest;
use crate::image::prepare::{self, BundleOutcome, NotVerified, Outcomes};
use crate::image::pull;
use crate::image::registry::{Client, Repository};
use crate::image::signature::referrers::{MAX_BUNDLE_REFERRERS, check_referrer};
use crate::image::signature::{
    BUNDLE_MEDIA_TYPE, BoxError, BundleVerified, ImageManifest, MAX_BUNDLE_SIZE, Trust, TrustedKey,
    Voucher, signature_tag, verify_bundle, verify_signature_manifest,
};
use crate::util::error_chain;

/// Resolves `reference` in its registry and checks the signatures stored there (the
/// legacy one and the bundles), without the local store. Returns the digest checked.
pub async fn verify_remote(
    client: &Client,
    reference: &Reference,
    trust: &Trust,
) -> Result<(Digest, LocatedCheck), ExchangeError> {
    let repo = Repository::of(reference);
    let digest = client
        .fetch_manifest(&repo, reference.reference())
        .await?
        .digest;
    let outcomes =
        registry_outcomes(client, &repo, &digest, std::slice::from_ref(&digest), trust).await?;
    let check = prepare::judge(&digest, outcomes, trust);
    let looked = Looked::Registry {
        store_had_none: false,
    };
    Ok((digest, LocatedCheck { check, looked }))
}

/// What the signatures of image `digest` in the registry say, each checked for
/// `digest` with `trust`: the legacy one of the first of `candidates` (the image's
/// top and platform digests) that has one, and the bundles of the first that has any.
/// A referrer that is gone or is not a bundle of its subject is skipped, and
/// referrers that cannot be listed count as none, as a pull does; a registry that
/// cannot be asked for the legacy signature is an error.
pub async fn registry_outcomes(
    client: &Client,
    repo: &Repository,
    digest: &Digest,
    candidates: &[Digest],
    trust: &Trust,
) -> Result<Outcomes, ExchangeError> {
    let mut outcomes = Outcomes::default();
    for signed in candidates {
        if let Some(legacy) = registry_legacy(client, repo, digest, signed, &trust.keys).await? {
            outcomes.legacy = Some(legacy);
            outcomes.legacy_tag = Some(signature_tag(signed.as_str())?);
            break;
        }
    }
    for signed in candidates {
        // As a pull: referrers that cannot be listed (a `sha256-<hex>` tag that is not
        // an index, say) are no bundles, with a warning; only content that fails its
        // digest is an error.
        let found = match client
            .referrers(repo, signed, BUNDLE_MEDIA_TYPE, MAX_BUNDLE_REFERRERS)
            .await
        {
            Ok(found) => found,
            Err(e) if e.is_integrity() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(%signed, error = %error_chain(&e), "cannot list the image's sigstore bundles");
                break;
            }
        };
        for d in &found.descriptors {
            let Some(result) =
                registry_bundle(client, repo, digest, signed, &d.digest, trust).await?
            else {
                continue;
            };
            outcomes.bundles.push(BundleOutcome {
                manifest: d.digest.clone(),
                signed: signed.clone(),
                result,
            });
        }
        if !outcomes.bundles.is_empty() {
            break;
        }
    }
    Ok(outcomes)
}

/// The legacy signature of `signed` (`sha256-<hex>.sig`) checked for `digest`;
/// `None` when there is none.
async fn registry_legacy(
    client: &Client,
    repo: &Repository,
    digest: &Digest,
    signed: &Digest,
    keys: &[TrustedKey],
) -> Result<Option<Result<Vec<Voucher>, NotVerified>>, ExchangeError> {
    let tag = signature_tag(signed.as_str())?;
    let signature = match client.fetch_manifest(repo, &tag).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let manifest = match ImageManifest::parse(&signature.bytes) {
        Ok(m) => m,
        Err(e) => return Ok(Some(Err(e.into()))),
    };
    if manifest.layers.len() > pull::MAX_SIGNATURE_LAYERS {
        // A pull does not store it either: the image counts as without one.
        tracing::warn!(%tag, layers = manifest.layers.len(), max = pull::MAX_SIGNATURE_LAYERS, "signature manifest with too many layers ignored");
        return Ok(None);
    }
    let mut blobs = BTreeMap::new();
    for layer in manifest.signature_layers() {
        let d = Digest::parse(&layer.digest)?;
        let bytes = client
            .fetch_blob_bytes(repo, &d, pull::MAX_SIGNATURE_BLOB)
            .await?;
        blobs.insert(layer.digest.clone(), bytes);
    }
    let fetch = |d: &str| -> Result<Vec<u8>, BoxError> {
        blobs
            .get(d)
            .cloned()
            .ok_or_else(|| format!("blob {d} was not fetched").into())
    };
    Ok(Some(
        match verify_signature_manifest(&signature.bytes, digest.as_str(), keys, &fetch) {
            Ok(v) if !v.verified.is_empty() => {
                Ok(v.verified.iter().map(Voucher::of_legacy).collect())
            }
            Ok(_) => Err(NotVerified::NoneVerified),
            Err(e) => Err(e.into()),
        },
    ))
}

/// The bundle referrer `referrer` of `signed`, checked for `digest`; `None` (with a
/// warning) when it is gone or is not a bundle referrer of `signed`.
async fn registry_bundle(
    client: &Client,
    repo: &Repository,
    digest: &Digest,
    signed: &Digest,
    referrer: &Digest,
    trust: &Trust,
) -> Result<Option<Result<BundleVerified, NotVerified>>, ExchangeError> {
    let skipped = |e: &dyn std::error::Error| {
        tracing::warn!(%signed, %referrer, error = %error_chain(e), "sigstore bundle referrer skipped");
    };
    let fetched = match client.fetch_manifest(repo, referrer.as_str()).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => {
            skipped(&e);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let layer = match check_referrer(&fetched.bytes, referrer, signed) {
        Ok(l) => l,
        Err(e) => {
            skipped(&e);
            return Ok(None);
        }
    };
    let bundle = client
        .fetch_blob_bytes(repo, &layer.digest, MAX_BUNDLE_SIZE as u64)
        .await?;
    Ok(Some(
        verify_bundle(&bundle, digest.as_str(), trust).map_err(NotVerified::from),
    ))
}
