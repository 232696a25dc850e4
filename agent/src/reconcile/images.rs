//! Before planning, `berth apply` makes every image the node's containers need ready:
//! pulled (a pinned digest already in the store never touches the registry), its
//! signature checked against the node's trusted keys, unpacked into snapshots, and its
//! config, `/etc/passwd` and `/etc/group` read — so the policy sees the resolved user
//! and the signature outcome, and the executor renders from local data only.
//!
//! When the node's policy enforces `image-signature`, an image whose signature does not
//! verify is never unpacked; its containers are then blocked by the policy (their
//! running versions stay).

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_policy::evaluate::{Facts, SignatureFact};
use berth_spec::Container;
use berth_spec::reference::Reference;
use oci_spec::image::ImageConfiguration;

use super::gather::ImageFacts;
use crate::image::prepare::{self, SignatureCheck};
use crate::image::pull::{self, PullOptions, Silent};
use crate::image::registry::Client;
use crate::image::signature::TrustedKey;
use crate::image::snapshot::SnapshotStore;
use crate::image::store::Store;
use crate::image::store::records::ImageRecord;
use crate::runtime::user;

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_USER_DB: u64 = 1 << 20;
/// Largest image config read (the manifest module's cap).
const MAX_CONFIG: u64 = crate::image::manifest::MAX_CONFIG_BYTES;

/// An image made ready for one or more containers.
#[derive(Debug, Clone)]
pub struct ReadyImage {
    pub record: ImageRecord,
    /// Snapshot directories, top-most first (overlay's lowerdir order).
    pub lowerdirs: Vec<PathBuf>,
    pub chain_ids: Vec<String>,
    pub config: ImageConfiguration,
    pub passwd: Option<String>,
    pub group: Option<String>,
}

impl ReadyImage {
    /// The user a container runs as: its spec's `user`, else the image's `User`, else
    /// root (`0`), as Docker decides.
    pub fn user_of(&self, c: &Container) -> String {
        c.user
            .clone()
            .or_else(|| {
                self.config
                    .config()
                    .as_ref()
                    .and_then(|cfg| cfg.user().clone())
            })
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "0".to_string())
    }
}

/// What the node requires of signatures.
#[derive(Debug, Clone)]
pub struct SignaturePolicy {
    pub keys: Vec<TrustedKey>,
    /// `image-signature` at `error` in enforce mode: do not unpack what does not verify.
    pub enforced: bool,
}

/// Makes the images of `containers` ready. Returns per container the facts for the
/// planner and policy, and the ready images by container name.
pub fn prepare_all(
    containers: &[&Container],
    store: &Store,
    snapshots: &SnapshotStore,
    client: &Client,
    signatures: &SignaturePolicy,
) -> (BTreeMap<String, ImageFacts>, BTreeMap<String, ReadyImage>) {
    let mut by_ref: BTreeMap<String, Result<(ReadyImage, Option<SignatureCheck>), String>> =
        BTreeMap::new();
    let mut facts = BTreeMap::new();
    let mut ready = BTreeMap::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    for c in containers {
        let Some(reference) = &c.image_ref else {
            continue;
        };
        let key = reference.to_string();
        let result = by_ref
            .entry(key)
            .or_insert_with(|| match &rt {
                Ok(rt) => prepare_one(reference, store, snapshots, client, signatures, rt),
                Err(e) => Err(format!("cannot start the async runtime: {e}")),
            })
            .clone();
        let mut f = ImageFacts::default();
        match result {
            Ok((image, check)) => {
                f.digest = Some(image.record.digest.as_str().to_string());
                f.facts = Facts {
                    signature: match check {
                        None => SignatureFact::Unknown,
                        Some(SignatureCheck::Verified(_)) => SignatureFact::Verified,
                        Some(SignatureCheck::Failed(r)) => SignatureFact::Failed(r),
                    },
                    ..Facts::default()
                };
                // Unpacked only when the signature passed (or is not enforced).
                f.ready = !image.lowerdirs.is_empty() || image.record.layers.is_empty();
                let user_spec = image.user_of(c);
                match user::resolve(&user_spec, image.passwd.as_deref(), image.group.as_deref()) {
                    Ok(u) => {
                        f.facts.resolved_uid = Some(u.uid);
                        f.facts.resolved_gid = Some(u.gid);
                    }
                    Err(e) if f.ready => {
                        f.error = Some(format!(
                            "cannot resolve user `{user_spec}` in image {}: {e}",
                            c.image
                        ));
                    }
                    Err(_) => {}
                }
                if f.ready {
                    ready.insert(c.name.clone(), image);
                }
            }
            Err(e) => f.error = Some(e),
        }
        facts.insert(c.name.clone(), f);
    }
    (facts, ready)
}

fn prepare_one(
    reference: &Reference,
    store: &Store,
    snapshots: &SnapshotStore,
    client: &Client,
    signatures: &SignaturePolicy,
    rt: &tokio::runtime::Runtime,
) -> Result<(ReadyImage, Option<SignatureCheck>), String> {
    let opts = PullOptions::default();
    let pulled = rt
        .block_on(pull::pull(client, store, reference, &opts, &Silent))
        .map_err(|e| format!("cannot pull {reference}: {}", prepare::error_chain(&e)))?;
    let record = pulled.record;
    super::host::failpoint("after-pull");
    let check = (!signatures.keys.is_empty())
        .then(|| prepare::verify_stored(store, &record, &signatures.keys));
    let config_bytes = store
        .read_blob(&record.config.digest, MAX_CONFIG)
        .map_err(|e| format!("cannot read the config of {reference}: {e}"))?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
        .map_err(|e| format!("the config of {reference} is not an OCI image config: {e}"))?;
    let chains = prepare::chain_ids(&record).map_err(|e| prepare::error_chain(&e))?;
    let chain_ids: Vec<String> = chains.iter().map(|c| c.as_str().to_string()).collect();
    if signatures.enforced && matches!(check, Some(SignatureCheck::Failed(_))) {
        // Never unpacked: the policy blocks its containers with the reason.
        return Ok((
            ReadyImage {
                record,
                lowerdirs: Vec::new(),
                chain_ids,
                config,
                passwd: None,
                group: None,
            },
            check,
        ));
    }
    prepare::unpack_snapshots(store, snapshots, &record).map_err(|e| prepare::error_chain(&e))?;
    let lowerdirs = snapshots
        .lowerdirs(&chains)
        .map_err(|e| prepare::error_chain(&e))?;
    let read = |p: &str| {
        prepare::read_image_file(&lowerdirs, p, MAX_USER_DB)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let (passwd, group) = (read("etc/passwd"), read("etc/group"));
    Ok((
        ReadyImage {
            record,
            lowerdirs,
            chain_ids,
            config,
            passwd,
            group,
        },
        check,
    ))
}
