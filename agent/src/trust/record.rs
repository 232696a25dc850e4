//! The chains the follower records with a revision: after an applied pass, each
//! container that runs the revision now gets its chain (the revision's signer, the
//! digest it runs, the image's vouchers checked now against the node's keys and
//! identities); one that keeps running an older revision (last-known-good) keeps that
//! revision's chain.

use std::collections::BTreeMap;
use std::path::Path;

use berth_spec::node::PolicySection;

use super::{Chain, CommitLink, ImageLink};
use crate::image::prepare::{self, SignatureCheck};
use crate::image::store::Store;
use crate::source::applied::RevisionInfo;

/// The chains after a pass: `containers` is, per container, the commit it runs (as
/// the record will say), `running` the digest each container's record runs, `before`
/// the chains recorded before. A kept chain names the same commit and digest; a new
/// one is made for the containers that run `info`'s commit, checking each image once
/// with `image`. Pure but for `image`.
pub fn chains(
    before: &BTreeMap<String, Chain>,
    containers: &BTreeMap<String, String>,
    running: &BTreeMap<String, String>,
    info: &RevisionInfo,
    now: &str,
    image: &mut dyn FnMut(&str) -> ImageLink,
) -> BTreeMap<String, Chain> {
    let mut checked: BTreeMap<String, ImageLink> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, commit) in containers {
        let Some(digest) = running.get(name) else {
            continue;
        };
        if let Some(c) = before.get(name)
            && c.commit.as_ref() == Some(commit)
            && &c.digest == digest
        {
            out.insert(name.clone(), c.clone());
            continue;
        }
        if *commit != info.commit {
            continue;
        }
        let link = checked
            .entry(digest.clone())
            .or_insert_with(|| image(digest))
            .clone();
        out.insert(
            name.clone(),
            Chain {
                commit: Some(commit.clone()),
                tag_object: info.tag_object.clone(),
                commit_signer: info
                    .signer
                    .clone()
                    .map_or(CommitLink::NotRequired, CommitLink::Verified),
                digest: digest.clone(),
                image_signature: link,
                checked_at: Some(now.to_string()),
            },
        );
    }
    out
}

/// Whether the node requires image signatures (some key or identity is trusted).
pub fn image_required(policy: &PolicySection) -> bool {
    !policy.trusted_keys.is_empty() || !policy.trusted_identities.is_empty()
}

/// The image link of `digest` now: verified from the signatures in the store against
/// the node's trusted keys and identities (`Trust::from_policy`), as the pass verifies
/// them; not required without any.
pub fn image_link(state_dir: &Path, policy: &PolicySection, digest: &str) -> ImageLink {
    if !image_required(policy) {
        return ImageLink::NotRequired;
    }
    let trust = match crate::image::signature::Trust::from_policy(policy) {
        Ok(t) => t,
        Err(e) => {
            return ImageLink::Failed {
                reason: crate::util::error_chain(&e),
            };
        }
    };
    let store = Store::open_read_only(state_dir);
    let record = match store.records() {
        Ok(rs) => rs
            .into_iter()
            .find(|r| r.digest.as_str() == digest || r.manifest.digest.as_str() == digest),
        Err(e) => {
            return ImageLink::Failed {
                reason: crate::util::error_chain(&e),
            };
        }
    };
    let Some(record) = record else {
        return ImageLink::Failed {
            reason: format!("image {digest} is not in the store"),
        };
    };
    match prepare::verify_stored(&store, &record, &trust) {
        SignatureCheck::Verified(v) => ImageLink::Verified {
            vouchers: v.vouchers,
        },
        SignatureCheck::Failed(reason) => ImageLink::Failed { reason },
    }
}

/// The chains to record after an applied pass of `info` (see [`chains`]), the images
/// checked against `policy` in the store under `state_dir`. When the container records
/// cannot be read, the chains recorded before are kept for the containers that still
/// run the same commit.
pub fn after_pass(
    state_dir: &Path,
    policy: &PolicySection,
    before: &BTreeMap<String, Chain>,
    containers: &BTreeMap<String, String>,
    info: &RevisionInfo,
) -> BTreeMap<String, Chain> {
    let running: BTreeMap<String, String> = match crate::runtime::record::read_records(state_dir) {
        Ok(records) => records
            .into_iter()
            .map(|(name, r)| (name, r.image.digest))
            .collect(),
        Err(e) => {
            tracing::warn!(target: "source", error = %crate::util::error_chain(&e), "cannot read the container records; the trust chains recorded before are kept");
            before
                .iter()
                .map(|(name, c)| (name.clone(), c.digest.clone()))
                .collect()
        }
    };
    let now = crate::util::rfc3339::now();
    chains(before, containers, &running, info, &now, &mut |digest| {
        image_link(state_dir, policy, digest)
    })
}
