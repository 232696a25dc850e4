//! The chains the follower records with a revision: after an applied pass, each
//! container whose running instance is the one the pass wanted at the revision gets its
//! chain anew (the revision's signer as verified now, the digest it runs, the image's
//! vouchers checked now against the node's keys and identities) — a container left
//! unchanged too, so that a rotated key, a record written before chains were kept or a
//! failed image link is vouched for again. One that keeps running an older revision
//! (last-known-good, blocked, rolled back) keeps that revision's chain while its
//! instance runs.

use std::collections::BTreeMap;
use std::path::Path;

use berth_spec::node::{PolicySection, SourceSection};

use super::{Chain, CommitLink, ImageLink, Running};
use crate::image::prepare::{self, SignatureCheck};
use crate::image::store::Store;
use crate::source::applied::Signer;

/// What the pass wanted, for [`chains`].
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The commit of the revision applied.
    pub commit: &'a str,
    /// The annotated tag object followed, when its signature vouched.
    pub tag_object: Option<&'a str>,
    /// The commit's link as verified by this pass.
    pub signer: &'a CommitLink,
    /// Per container desired here: the spec hash of the instance the pass wanted.
    pub desired: &'a BTreeMap<String, String>,
}

/// The chains after a pass: `containers` is, per container, the commit it runs (as
/// the record will say), `running` the instance each container's record runs, `before`
/// the chains recorded before. A container at the pass's commit whose running spec
/// hash is the one the pass wanted gets a new chain, checking each image once with
/// `image`; another keeps a chain recorded before for its commit and running instance;
/// the rest have none (what runs is not what the pass made). Pure but for `image`.
pub fn chains(
    before: &BTreeMap<String, Chain>,
    containers: &BTreeMap<String, String>,
    running: &BTreeMap<String, Running>,
    wanted: &Wanted<'_>,
    now: &str,
    image: &mut dyn FnMut(&str) -> ImageLink,
) -> BTreeMap<String, Chain> {
    let mut checked: BTreeMap<String, ImageLink> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, commit) in containers {
        let Some(r) = running.get(name) else {
            continue;
        };
        if commit == wanted.commit && wanted.desired.get(name) == Some(&r.spec_hash) {
            let link = checked
                .entry(r.digest.clone())
                .or_insert_with(|| image(&r.digest))
                .clone();
            out.insert(
                name.clone(),
                Chain {
                    commit: Some(commit.clone()),
                    tag_object: wanted.tag_object.map(str::to_string),
                    commit_signer: wanted.signer.clone(),
                    digest: r.digest.clone(),
                    image_signature: link,
                    instance: Some(r.instance.clone()),
                    spec_hash: Some(r.spec_hash.clone()),
                    checked_at: Some(now.to_string()),
                },
            );
        } else if let Some(c) = before.get(name)
            && c.commit.as_ref() == Some(commit)
            && c.describes(r)
        {
            out.insert(name.clone(), c.clone());
        }
    }
    out
}

/// The commit's link to record for a revision whose signer the follower holds as
/// `signer`: verified only when the node requires a signature (`source`'s keys), so
/// that a revision applied again without that check (a node without `[source]`, or
/// that no longer requires signatures) is not said to be vouched for by the signer it
/// was recorded with.
pub fn commit_link(source: Option<&SourceSection>, signer: Option<&Signer>) -> CommitLink {
    match signer {
        Some(s) if source.is_some_and(crate::source::signature::required) => {
            CommitLink::Verified(s.clone())
        }
        _ => CommitLink::NotRequired,
    }
}

/// Whether the node requires image signatures (some key or identity is trusted).
pub fn image_required(policy: &PolicySection) -> bool {
    !policy.trusted_keys.is_empty() || !policy.trusted_identities.is_empty()
}

/// An image's link checked now, or why it could not be checked (a key file that
/// cannot be read, a store that cannot be listed, an image no longer in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCheck {
    Link(ImageLink),
    CannotCheck(String),
}

impl ImageCheck {
    /// The link to record: one that could not be checked is recorded as failed.
    pub fn into_link(self) -> ImageLink {
        match self {
            ImageCheck::Link(l) => l,
            ImageCheck::CannotCheck(why) => ImageLink::failed(&why),
        }
    }
}

/// The image link of `digest` now: verified from the signatures kept in the local
/// image store (those the pull found) against the node's trusted keys and identities
/// (`Trust::from_policy`), as the pass verifies them; not required without any. The
/// registry is not asked.
pub fn image_check(state_dir: &Path, policy: &PolicySection, digest: &str) -> ImageCheck {
    if !image_required(policy) {
        return ImageCheck::Link(ImageLink::NotRequired);
    }
    let trust = match crate::image::signature::Trust::from_policy(policy) {
        Ok(t) => t,
        Err(e) => return ImageCheck::CannotCheck(crate::util::error_chain(&e)),
    };
    let store = Store::open_read_only(state_dir);
    let record = match store.records() {
        Ok(rs) => rs
            .into_iter()
            .find(|r| r.digest.as_str() == digest || r.manifest.digest.as_str() == digest),
        Err(e) => return ImageCheck::CannotCheck(crate::util::error_chain(&e)),
    };
    let Some(record) = record else {
        return ImageCheck::CannotCheck(format!(
            "image {digest} is not in the local image store, whose signatures are checked (the registry is not asked)"
        ));
    };
    if record.signature.is_none() && record.bundles.is_empty() {
        return ImageCheck::Link(ImageLink::failed(&format!(
            "the local image store keeps no signature for image {digest} (neither a `.sig` signature nor a sigstore bundle was found when it was pulled; the registry is not asked); {}",
            trust.tried()
        )));
    }
    ImageCheck::Link(match prepare::verify_stored(&store, &record, &trust) {
        SignatureCheck::Verified(v) => ImageLink::Verified {
            vouchers: v.vouchers,
        },
        SignatureCheck::Failed(reason) => ImageLink::failed(&reason),
    })
}

/// The image link of `digest` to record now (see [`image_check`]).
pub fn image_link(state_dir: &Path, policy: &PolicySection, digest: &str) -> ImageLink {
    image_check(state_dir, policy, digest).into_link()
}

/// The chains to record after an applied pass (see [`chains`]), the images checked
/// against `policy` in the store under `state_dir`.
pub fn after_pass(
    state_dir: &Path,
    policy: &PolicySection,
    before: &BTreeMap<String, Chain>,
    containers: &BTreeMap<String, String>,
    running: &BTreeMap<String, Running>,
    wanted: &Wanted<'_>,
) -> BTreeMap<String, Chain> {
    let now = crate::util::rfc3339::now();
    chains(before, containers, running, wanted, &now, &mut |digest| {
        image_link(state_dir, policy, digest)
    })
}

/// The running instance of every container of the state directory.
pub fn running(
    state_dir: &Path,
) -> Result<BTreeMap<String, Running>, crate::runtime::record::RecordError> {
    Ok(crate::runtime::record::read_records(state_dir)?
        .into_iter()
        .map(|(name, r)| {
            let running = Running::of(&r);
            (name, running)
        })
        .collect())
}
