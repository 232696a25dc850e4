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
use std::sync::Arc;

use berth_policy::evaluate::{Facts, SignatureFact};
use berth_spec::Container;
use berth_spec::reference::Reference;
use oci_spec::image::ImageConfiguration;

mod remote;
mod source;

pub use source::{ImageSource, Registry};

use super::executor::FailureKind;
use super::gather::ImageFacts;
use crate::image::prepare::{self, PrepareError, SignatureCheck};
use crate::image::pull::PullError;
use crate::image::registry::Client;
use crate::image::signature::Trust;
use crate::image::snapshot::{SnapshotError, SnapshotStore};
use crate::image::store::records::ImageRecord;
use crate::image::store::{Store, StoreError};
use crate::runtime::user;
use crate::telemetry::metrics::PullLog;

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_USER_DB: u64 = 1 << 20;
/// Largest image config read (the manifest module's cap).
pub(super) const MAX_CONFIG: u64 = crate::image::manifest::MAX_CONFIG_BYTES;

/// Why an image could not be made ready (`apply`) or learned about (`plan`). Clones
/// share the cause: one image's error is reported for each of its containers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("cannot pull {reference}")]
    Pull {
        reference: String,
        #[source]
        source: Arc<PullError>,
    },
    #[error("cannot read the config of {reference}")]
    ReadConfig {
        reference: String,
        #[source]
        source: Arc<StoreError>,
    },
    #[error("the config of {reference} is not an OCI image config")]
    Config {
        reference: String,
        #[source]
        source: Arc<serde_json::Error>,
    },
    #[error(transparent)]
    Prepare(Arc<PrepareError>),
    #[error(transparent)]
    Snapshot(Arc<SnapshotError>),
    #[error("cannot ask the registry about {reference}")]
    Registry {
        reference: String,
        #[source]
        source: Arc<remote::RemoteError>,
    },
    #[error("image {reference} is not pinned by digest and not in the store, and {why_not}")]
    Unresolved { reference: String, why_not: String },
}

impl ImageError {
    /// Whether a later pass may succeed with the same input (the registry unreachable)
    /// or not until it changes (the image missing, a corrupt config).
    pub fn kind(&self) -> FailureKind {
        FailureKind::of(match self {
            ImageError::Pull { source, .. } => source.is_transient(),
            ImageError::ReadConfig { source, .. } => source.is_transient(),
            ImageError::Registry { source, .. } => source.is_transient(),
            _ => false,
        })
    }

    /// The reason its containers are not evaluated, as the report says it: the error
    /// and its causes. Its kind is reported apart ([`ImageError::kind`]).
    pub fn reason(&self) -> String {
        crate::util::error_chain(self)
    }
}

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
    /// The keys, trusted root and identities signatures are verified against.
    pub trust: Trust,
    /// `image-signature` at `error` in enforce mode: do not unpack what does not verify.
    pub enforced: bool,
}

/// What [`prepare_all`] made of the images: per container the facts for the planner
/// and policy, the ready images, and the kind of each image error.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    pub facts: BTreeMap<String, ImageFacts>,
    pub ready: BTreeMap<String, ReadyImage>,
    /// Per container whose image could not be made ready: whether a later pass may
    /// succeed with the same input.
    pub kinds: BTreeMap<String, FailureKind>,
}

/// Makes the images of `containers` ready. Returns per container the facts for the
/// planner and policy, and the ready images by container name. `rt` is the process's
/// async runtime; this blocks on it, so it must not be called from one of its tasks
/// (from `spawn_blocking`, it may). The pulls that reach a registry are recorded in
/// `pulls`, when given.
pub fn prepare_all(
    containers: &[&Container],
    store: &Store,
    snapshots: &SnapshotStore,
    client: &Client,
    signatures: &SignaturePolicy,
    rt: &tokio::runtime::Handle,
    pulls: Option<&PullLog>,
) -> Prepared {
    let registry = Registry {
        store,
        snapshots,
        client,
        rt,
        pulls,
    };
    prepare_from(containers, &registry, signatures)
}

/// [`prepare_all`] from `source`: each reference once, for all its containers.
fn prepare_from(
    containers: &[&Container],
    source: &dyn ImageSource,
    signatures: &SignaturePolicy,
) -> Prepared {
    let mut by_ref: BTreeMap<String, Result<(ReadyImage, Option<SignatureCheck>), ImageError>> =
        BTreeMap::new();
    let mut out = Prepared::default();
    for c in containers {
        let Some(reference) = &c.image_ref else {
            continue;
        };
        let key = reference.to_string();
        let result = by_ref
            .entry(key)
            .or_insert_with(|| prepare_one(reference, source, signatures))
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
                note_user(
                    &mut f,
                    c,
                    &user_spec,
                    image.passwd.as_deref(),
                    image.group.as_deref(),
                );
                if f.ready {
                    out.ready.insert(c.name.clone(), image);
                }
            }
            Err(e) => {
                f.error = Some(e.reason());
                out.kinds.insert(c.name.clone(), e.kind());
            }
        }
        out.facts.insert(c.name.clone(), f);
    }
    out
}

fn prepare_one(
    reference: &Reference,
    source: &dyn ImageSource,
    signatures: &SignaturePolicy,
) -> Result<(ReadyImage, Option<SignatureCheck>), ImageError> {
    let record = source.pull(reference)?;
    super::host::failpoint("after-pull");
    let check = (!signatures.trust.is_empty()).then(|| source.verify(&record, &signatures.trust));
    let config = source.config(reference, &record)?;
    let chains = prepare::chain_ids(&record).map_err(|e| ImageError::Prepare(Arc::new(e)))?;
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
    let lowerdirs = source.unpack(&record, &chains)?;
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

/// Whether an image with this digest is in the store and all its layers are unpacked.
pub fn image_ready(store: &Store, snapshots: &SnapshotStore, digest: &str) -> bool {
    let Ok(records) = store.records() else {
        return false;
    };
    records
        .iter()
        .filter(|r| r.digest.as_str() == digest || r.manifest.digest.as_str() == digest)
        .any(|r| {
            prepare::chain_ids(r).ok().is_some_and(|chains| {
                chains
                    .iter()
                    .all(|c| snapshots.get(c).ok().flatten().is_some())
            })
        })
}

/// What `berth plan` learned of the images, without pulling a layer or writing to the
/// state directory: per container the facts for the planner and policy, and each fact
/// it could not know (offline, the registry unreachable, layers not pulled) in words.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub facts: BTreeMap<String, ImageFacts>,
    pub unknown: BTreeMap<String, Vec<String>>,
    /// Per container, the facts it could not know that decide what `apply` would do
    /// (a signature under enforce, the user, what a tag points to), joined: the plan
    /// reports the container as unknown instead of planning its create and start.
    pub undecided: BTreeMap<String, String>,
    /// Per container whose image could not be inspected: the error's kind.
    pub kinds: BTreeMap<String, FailureKind>,
}

/// A fact `plan` could not know, and whether it decides what `apply` would do.
#[derive(Debug, Clone)]
struct Unknown {
    what: String,
    deciding: bool,
}

fn deciding(what: String) -> Unknown {
    Unknown {
        what,
        deciding: true,
    }
}

/// What one reference resolved to.
#[derive(Debug, Clone, Default)]
struct Looked {
    digest: Option<String>,
    /// The stored image with that digest, if the store has it.
    record: Option<ImageRecord>,
    config: Option<ImageConfiguration>,
    check: Option<SignatureCheck>,
    unknown: Vec<Unknown>,
    /// Why the registry was not asked, or did not answer, when it matters.
    why_not: String,
}

/// Learns what `prepare_all` would, the way `berth plan` may: from the store, and from
/// the registry when `registry` is given (manifests, configs and signatures, never
/// layers; nothing is stored). `None` is `--offline`.
pub fn inspect_all(
    containers: &[&Container],
    store: &Store,
    snapshots: &SnapshotStore,
    registry: Option<&Client>,
    signatures: &SignaturePolicy,
    rt: &tokio::runtime::Handle,
) -> Inspection {
    let mut by_ref: BTreeMap<String, Result<Looked, ImageError>> = BTreeMap::new();
    let mut out = Inspection::default();
    for c in containers {
        let Some(reference) = &c.image_ref else {
            continue;
        };
        let looked = by_ref
            .entry(reference.to_string())
            .or_insert_with(|| look(reference, store, registry, signatures, rt))
            .clone();
        let (f, unknown) = match looked {
            Ok(looked) => facts_of(c, looked, store, snapshots),
            // Offline, a tag not in the store: what it points to cannot be known.
            Err(e @ ImageError::Unresolved { .. }) => {
                (ImageFacts::default(), vec![deciding(e.to_string())])
            }
            Err(e) => {
                out.kinds.insert(c.name.clone(), e.kind());
                let f = ImageFacts {
                    error: Some(e.reason()),
                    ..ImageFacts::default()
                };
                (f, Vec::new())
            }
        };
        let undecided: Vec<&str> = unknown
            .iter()
            .filter(|u| u.deciding)
            .map(|u| u.what.as_str())
            .collect();
        if !undecided.is_empty() {
            out.undecided.insert(c.name.clone(), undecided.join("; "));
        }
        if !unknown.is_empty() {
            let all = unknown.into_iter().map(|u| u.what).collect();
            out.unknown.insert(c.name.clone(), all);
        }
        out.facts.insert(c.name.clone(), f);
    }
    out
}

/// One container's facts from what its reference resolved to.
fn facts_of(
    c: &Container,
    looked: Looked,
    store: &Store,
    snapshots: &SnapshotStore,
) -> (ImageFacts, Vec<Unknown>) {
    let mut unknown = looked.unknown;
    let mut f = ImageFacts {
        digest: looked.digest.clone(),
        ..ImageFacts::default()
    };
    f.facts.signature = match looked.check {
        None => SignatureFact::Unknown,
        Some(SignatureCheck::Verified(_)) => SignatureFact::Verified,
        Some(SignatureCheck::Failed(r)) => SignatureFact::Failed(r),
    };
    f.ready = looked
        .digest
        .as_deref()
        .is_some_and(|d| image_ready(store, snapshots, d));
    let user_spec = c.user.clone().or_else(|| {
        looked
            .config
            .as_ref()
            .and_then(|cfg| cfg.config().as_ref().and_then(|cc| cc.user().clone()))
    });
    let Some(user_spec) = user_spec.filter(|u| !u.is_empty()).or_else(|| {
        // Without a config, the image's own user is not known (root is only the
        // default when the config names none).
        looked.config.is_some().then(|| "0".to_string())
    }) else {
        unknown.push(deciding(format!(
            "the user of image {}: its config is not in the store and {}",
            c.image, looked.why_not
        )));
        return (f, unknown);
    };
    // The user databases come from the unpacked layers, when they are.
    let (passwd, group) = match (&looked.record, f.ready) {
        (Some(record), true) => user_dbs(record, snapshots),
        _ => (None, None),
    };
    if !note_user(&mut f, c, &user_spec, passwd.as_deref(), group.as_deref()) && !f.ready {
        unknown.push(deciding(format!(
            "user `{user_spec}`: it is resolved in the /etc/passwd of image {}, whose layers are not pulled",
            c.image
        )));
    }
    (f, unknown)
}

/// Notes in `f` whom `user_spec` resolves to in the image's user databases; a user
/// that does not resolve in a ready image is its error. Whether it resolved.
fn note_user(
    f: &mut ImageFacts,
    c: &Container,
    user_spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> bool {
    match user::resolve(user_spec, passwd, group) {
        Ok(u) => {
            f.facts.resolved_uid = Some(u.uid);
            f.facts.resolved_gid = Some(u.gid);
            true
        }
        Err(e) => {
            if f.ready {
                f.error = Some(format!(
                    "cannot resolve user `{user_spec}` in image {}: {e}",
                    c.image
                ));
            }
            false
        }
    }
}

/// `/etc/passwd` and `/etc/group` of an unpacked image.
fn user_dbs(record: &ImageRecord, snapshots: &SnapshotStore) -> (Option<String>, Option<String>) {
    let Some(lowerdirs) = prepare::chain_ids(record)
        .ok()
        .and_then(|chains| snapshots.lowerdirs(&chains).ok())
    else {
        return (None, None);
    };
    let read = |p: &str| {
        prepare::read_image_file(&lowerdirs, p, MAX_USER_DB)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    (read("etc/passwd"), read("etc/group"))
}

/// The stored image a reference names: a pinned digest's (with every blob present),
/// else the tag's record.
fn stored(store: &Store, reference: &Reference) -> Option<ImageRecord> {
    match reference.digest.as_deref() {
        Some(pinned) => store.records().ok()?.into_iter().find(|r| {
            r.name == reference.name()
                && (r.digest.as_str() == pinned || r.manifest.digest.as_str() == pinned)
                && r.blobs().all(|d| store.has_blob(d))
        }),
        None => store.record(&reference.to_string()).ok().flatten(),
    }
}

/// Resolves one reference as `pull` would, read-only. An `Err` is why its containers
/// cannot be evaluated.
fn look(
    reference: &Reference,
    store: &Store,
    registry: Option<&Client>,
    signatures: &SignaturePolicy,
    rt: &tokio::runtime::Handle,
) -> Result<Looked, ImageError> {
    let trust = &signatures.trust;
    let local = stored(store, reference);
    let read_config = |r: &ImageRecord| {
        store
            .read_blob(&r.config.digest, MAX_CONFIG)
            .ok()
            .and_then(|b| serde_json::from_slice::<ImageConfiguration>(&b).ok())
    };
    // A pinned image in the store: `pull` does not ask the registry either.
    let local_first = reference.digest.is_some() && local.is_some();
    let mut unknown = Vec::new();
    let why_not: String = match registry {
        Some(client) if !local_first => {
            match rt.block_on(remote::inspect(client, reference, trust)) {
                Ok(remote) => {
                    let record = local
                        .filter(|r| r.digest.as_str() == remote.digest)
                        .or_else(|| {
                            // The same image stored under another reference.
                            store.records().ok()?.into_iter().find(|r| {
                                r.digest.as_str() == remote.digest && r.name == reference.name()
                            })
                        });
                    return Ok(Looked {
                        digest: Some(remote.digest),
                        record,
                        config: remote.config,
                        check: remote.check,
                        unknown,
                        why_not: String::new(),
                    });
                }
                Err(e) => {
                    let why = format!(
                        "its registry did not answer ({})",
                        crate::util::error_chain(&e)
                    );
                    if local.is_none() && reference.digest.is_none() {
                        return Err(ImageError::Registry {
                            reference: reference.to_string(),
                            source: Arc::new(e),
                        });
                    }
                    if reference.digest.is_none() {
                        // The tag may have moved since it was pulled.
                        unknown.push(deciding(format!(
                            "what tag {reference} points to now: {why}"
                        )));
                    }
                    why
                }
            }
        }
        Some(_) => "it is pinned and stored".to_string(),
        None => "--offline forbids asking its registry".to_string(),
    };
    match (local, &reference.digest) {
        (Some(record), _) => {
            let check = (!trust.is_empty()).then(|| prepare::verify_stored(store, &record, trust));
            Ok(Looked {
                digest: Some(record.digest.as_str().to_string()),
                config: read_config(&record),
                record: Some(record),
                check,
                unknown,
                why_not,
            })
        }
        (None, Some(d)) => {
            if !trust.is_empty() {
                // It decides only when the policy blocks what does not verify.
                unknown.push(Unknown {
                    what: format!(
                        "the signature of image {reference}: it is not in the store and {why_not}"
                    ),
                    deciding: signatures.enforced,
                });
            }
            Ok(Looked {
                digest: Some(d.clone()),
                unknown,
                why_not,
                ..Looked::default()
            })
        }
        (None, None) => Err(ImageError::Unresolved {
            reference: reference.to_string(),
            why_not,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::image::signature::SigningKey;
    use crate::image::snapshot::ChainId;

    /// An image source that logs each call and answers from memory: every image's
    /// signature fails to verify.
    #[derive(Default)]
    struct Unsigned {
        log: Mutex<Vec<String>>,
    }

    impl Unsigned {
        fn push(&self, what: String) {
            self.log.lock().unwrap().push(what);
        }
    }

    impl ImageSource for Unsigned {
        fn pull(&self, reference: &Reference) -> Result<ImageRecord, ImageError> {
            self.push(format!("pull {reference}"));
            let blob = serde_json::json!({
                "digest": crate::runtime::render::fixtures::DIGEST,
                "size": 1,
                "media_type": "application/json",
            });
            Ok(serde_json::from_value(serde_json::json!({
                "reference": reference.to_string(),
                "name": reference.to_string(),
                "digest": crate::runtime::render::fixtures::DIGEST,
                "media_type": "application/vnd.oci.image.manifest.v1+json",
                "manifest": blob,
                "platform": {"os": "linux", "architecture": "amd64"},
                "config": blob,
                "layers": [{
                    "digest": format!("sha256:{}", "1".repeat(64)),
                    "size": 1,
                    "media_type": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "diff_id": format!("sha256:{}", "2".repeat(64)),
                }],
                "pulled_at": "2026-11-22T10:00:00Z",
            }))
            .unwrap())
        }

        fn verify(&self, record: &ImageRecord, _: &Trust) -> SignatureCheck {
            self.push(format!("verify {}", record.reference));
            SignatureCheck::Failed("no signature was found in the registry".into())
        }

        fn config(&self, r: &Reference, _: &ImageRecord) -> Result<ImageConfiguration, ImageError> {
            self.push(format!("config {r}"));
            Ok(crate::runtime::render::fixtures::busybox())
        }

        fn unpack(&self, record: &ImageRecord, _: &[ChainId]) -> Result<Vec<PathBuf>, ImageError> {
            self.push(format!("unpack {}", record.reference));
            Ok(vec![PathBuf::from("/nonexistent/snapshot")])
        }
    }

    fn policy(enforced: bool) -> SignaturePolicy {
        let key = SigningKey::generate("release.key").unwrap();
        SignaturePolicy {
            trust: Trust::keys(vec![key.public_key().unwrap()]),
            enforced,
        }
    }

    const WEB: &str = r#"
[container.web]
image = "registry.example.com/shop/web:1"
[container.worker]
image = "registry.example.com/shop/web:1"
"#;

    // e2e: pass::plan_agrees_with_apply_on_an_unsigned_image_under_enforce (apply
    // blocks the container; the image is pulled, never unpacked).
    #[test]
    fn an_image_whose_signature_fails_under_enforce_is_pulled_once_and_never_unpacked() {
        let web = crate::runtime::render::fixtures::container(WEB, "web");
        let worker = crate::runtime::render::fixtures::container(WEB, "worker");
        let source = Unsigned::default();
        let prepared = prepare_from(&[&web, &worker], &source, &policy(true));
        let reference = "registry.example.com/shop/web:1";
        assert_eq!(
            *source.log.lock().unwrap(),
            [
                format!("pull {reference}"),
                format!("verify {reference}"),
                format!("config {reference}"),
            ],
            "one pull for both containers, and no unpack"
        );
        assert!(prepared.ready.is_empty());
        for name in ["web", "worker"] {
            let f = &prepared.facts[name];
            assert!(!f.ready, "{name}");
            assert!(
                matches!(&f.facts.signature, SignatureFact::Failed(why) if why.contains("no signature")),
                "{name}: {:?}",
                f.facts.signature
            );
        }

        // Not enforced: the same image is unpacked, and its containers are ready.
        let source = Unsigned::default();
        let prepared = prepare_from(&[&web], &source, &policy(false));
        assert_eq!(
            source.log.lock().unwrap().last().map(String::as_str),
            Some(format!("unpack {reference}").as_str())
        );
        assert!(prepared.facts["web"].ready);
        assert!(prepared.ready.contains_key("web"));
    }
}
