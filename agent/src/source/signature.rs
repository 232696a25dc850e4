//! The node's signature check on a fetched revision (`source.allowed_signers`,
//! `source.trusted_pgp_keys`), as the follower applies it: a signed annotated tag (when
//! following a tag) or the commit must be signed by a listed SSH key for namespace
//! `git` or by a trusted OpenPGP key (`verify::verify_revision`); with both kinds of
//! keys configured, either signature is enough.
//!
//! Every reason not to apply the revision is a refusal, with its sentence: a bad
//! signature, and also a key file that cannot be read or is invalid (no revision can
//! be vouched for, so none is applied; what runs keeps running). Only a clone that
//! cannot be read is an error.

use berth_spec::node::SourceSection;
use git2::{Oid, Repository};

use super::applied::Signer;
use super::pgp::TrustedPgpKeys;
use super::signers::AllowedSigners;
use super::verify::{self, Refusal, TrustedKeys, Verified};

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The clone could not be read to check the signature.
    #[error("cannot check the signature of commit {commit}: {refusal}")]
    Unreadable { commit: Oid, refusal: Box<Refusal> },
}

/// Whether the node asks for signed revisions (some key of either kind is set).
pub fn required(section: &SourceSection) -> bool {
    section.allowed_signers.is_some() || !section.trusted_pgp_keys.is_empty()
}

/// Who signed the revision (`Ok(Ok(signer))`), why it is refused (`Ok(Err(reason))`),
/// or why it could not be checked.
pub fn check(
    section: &SourceSection,
    repo: &Repository,
    commit: Oid,
    tag: Option<Oid>,
) -> Result<Result<Signer, String>, SignatureError> {
    let signers = match section.allowed_signers.as_deref().map(AllowedSigners::load) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Ok(Err(format!("no revision can be verified: {e}"))),
    };
    let pgp = if section.trusted_pgp_keys.is_empty() {
        None
    } else {
        match TrustedPgpKeys::load(&section.trusted_pgp_keys) {
            Ok(k) => Some(k),
            Err(e) => return Ok(Err(format!("no revision can be verified: {e}"))),
        }
    };
    let keys = TrustedKeys {
        ssh: signers.as_ref(),
        pgp: pgp.as_ref(),
    };
    match verify::verify_revision(repo, commit, tag, keys) {
        Ok(v) => Ok(Ok(signer(v))),
        Err(refusal) if refusal.is_judgement() => Ok(Err(refusal.to_string())),
        Err(refusal) => Err(SignatureError::Unreadable {
            commit,
            refusal: Box::new(refusal),
        }),
    }
}

/// The record of a verified signature.
pub fn signer(v: Verified) -> Signer {
    Signer {
        principal: v.principal,
        key: v.key_fingerprint,
        object: v.object.as_str().to_string(),
        kind: v.format.as_str().to_string(),
        primary_key: v.primary_key,
    }
}
