//! What `berth plan` may ask a registry: the manifest a reference resolves to (down
//! through indexes to this host's platform), the image config, and the cosign
//! signatures (legacy and Sigstore bundles) — all small, size-capped, digest-checked by the client, and kept in
//! memory. Never a layer, and nothing is written to the store.

use berth_spec::reference::Reference;
use oci_spec::image::ImageConfiguration;

use crate::image::digest::Digest;
use crate::image::manifest::{self, Manifest};
use crate::image::platform::{self, Platform};
use crate::image::prepare::{self, Outcomes, SignatureCheck};
use crate::image::registry::{Client, RegistryError, Repository};
use crate::image::signature::{Trust, exchange};
use crate::util::error_chain;

/// Indexes nested deeper than this are refused (as `pull` refuses them).
const MAX_INDEX_DEPTH: usize = 4;

/// Why the registry could not say.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("image {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: manifest::ManifestError,
    },
    #[error("image {reference}: {detail}")]
    Invalid { reference: String, detail: String },
}

impl RemoteError {
    /// True when asking again later may succeed (the registry unreachable, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Registry(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// What the registry says of one reference.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The digest the reference resolves to (the top manifest's, as `pull` records).
    pub digest: String,
    pub config: Option<ImageConfiguration>,
    /// `None` when the node trusts no key.
    pub check: Option<SignatureCheck>,
}

/// Resolves `reference` and checks its signature against `trust`.
pub async fn inspect(
    client: &Client,
    reference: &Reference,
    trust: &Trust,
) -> Result<Remote, RemoteError> {
    let key = reference.to_string();
    let repo = Repository::of(reference);
    let parse = |bytes: &[u8], ct: Option<&str>| {
        manifest::parse_manifest(bytes, ct).map_err(|source| RemoteError::Manifest {
            reference: key.clone(),
            source,
        })
    };
    let top = client.fetch_manifest(&repo, reference.reference()).await?;
    let mut current = top.digest.clone();
    let (mut parsed, _) = parse(&top.bytes, top.content_type.as_deref())?;
    let mut depth = 0;
    let image = loop {
        match parsed {
            Manifest::Image(m) => break m,
            Manifest::Index(index) => {
                depth += 1;
                if depth > MAX_INDEX_DEPTH {
                    return Err(RemoteError::Invalid {
                        reference: key,
                        detail: format!("indexes nest more than {MAX_INDEX_DEPTH} deep"),
                    });
                }
                let platforms: Vec<Option<Platform>> = index
                    .manifests
                    .iter()
                    .map(|d| d.platform.as_ref().map(|p| p.normalized()))
                    .collect();
                let host = Platform::host();
                let Some(i) = platform::select(&platforms, &host) else {
                    return Err(RemoteError::Invalid {
                        reference: key,
                        detail: format!("no manifest for platform {host}"),
                    });
                };
                let inner = client
                    .fetch_manifest(&repo, index.manifests[i].digest.as_str())
                    .await?;
                current = inner.digest.clone();
                parsed = parse(&inner.bytes, inner.content_type.as_deref())?.0;
            }
        }
    };
    let config_bytes = client
        .fetch_blob_bytes(&repo, &image.config.digest, manifest::MAX_CONFIG_BYTES)
        .await?;
    let config = serde_json::from_slice(&config_bytes).ok();
    let check = if trust.is_empty() {
        None
    } else {
        let mut candidates = vec![top.digest.clone()];
        if current != top.digest {
            candidates.push(current);
        }
        Some(signature_check(client, &repo, &top.digest, &candidates, trust).await)
    };
    Ok(Remote {
        digest: top.digest.as_str().to_string(),
        config,
        check,
    })
}

/// The image's signatures in the registry — the legacy cosign signature
/// (`sha256-<hex>.sig`) and the Sigstore bundles of the first candidate that has them —
/// judged as `prepare::verify_stored` judges a pulled one's, with the same words, so
/// that `plan` and `apply` give the same reason.
async fn signature_check(
    client: &Client,
    repo: &Repository,
    image: &Digest,
    candidates: &[Digest],
    trust: &Trust,
) -> SignatureCheck {
    match exchange::registry_outcomes(client, repo, image, candidates, trust).await {
        Ok(outcomes) => prepare::judge(image, outcomes, trust),
        Err(e) => {
            // `pull` stores the image unsigned then, and the check says so.
            tracing::warn!(%image, error = %error_chain(&e), "cannot fetch the image signatures");
            prepare::judge(image, Outcomes::default(), trust)
        }
    }
}
