//! The node's signature check on a fetched revision (`source.allowed_signers`), as the
//! follower applies it: a signed annotated tag (when following a tag) or the commit
//! must be signed by a listed key for namespace `git` (`verify::verify_revision`).
//!
//! Every reason not to apply the revision is a refusal, with its sentence: a bad
//! signature, and also an allowed signers file that cannot be read or is invalid (no
//! revision can be vouched for, so none is applied; what runs keeps running). Only a
//! clone that cannot be read is an error.

use std::path::Path;

use git2::{Oid, Repository};

use super::applied::Signer;
use super::signers::AllowedSigners;
use super::verify::{self, Refusal};

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The clone could not be read to check the signature.
    #[error("cannot check the signature of commit {commit}: {refusal}")]
    Unreadable { commit: Oid, refusal: Box<Refusal> },
}

/// Who signed the revision (`Ok(Ok(signer))`), why it is refused (`Ok(Err(reason))`),
/// or why it could not be checked.
pub fn check(
    allowed_signers: &Path,
    repo: &Repository,
    commit: Oid,
    tag: Option<Oid>,
) -> Result<Result<Signer, String>, SignatureError> {
    let signers = match AllowedSigners::load(allowed_signers) {
        Ok(s) => s,
        Err(e) => return Ok(Err(format!("no revision can be verified: {e}"))),
    };
    match verify::verify_revision(repo, commit, tag, &signers) {
        Ok(v) => Ok(Ok(Signer {
            principal: v.principal,
            key: v.key_fingerprint,
            object: v.object.as_str().to_string(),
        })),
        Err(refusal) if refusal.is_judgement() => Ok(Err(refusal.to_string())),
        Err(refusal) => Err(SignatureError::Unreadable {
            commit,
            refusal: Box::new(refusal),
        }),
    }
}
