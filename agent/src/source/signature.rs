//! The node's signature check on a fetched revision (`source.allowed_signers`), as the
//! agent applies it: a signed annotated tag (when following a tag) or the commit must
//! be signed by a listed key for namespace `git`. The verification itself is
//! `verify`; this is what the follower asks of it.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::applied::Signer;

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "{}: commit signatures cannot be verified by this build",
        .path.display()
    )]
    Unsupported { path: PathBuf },
}

/// The allowed signers, loaded.
#[derive(Debug)]
pub struct SignatureCheck {
    _path: PathBuf,
}

impl SignatureCheck {
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        Err(SignatureError::Unsupported {
            path: path.to_path_buf(),
        })
    }

    /// Who signed the revision, or why it is refused.
    pub fn revision(
        &self,
        _repo: &Repository,
        _commit: Oid,
        _tag: Option<Oid>,
    ) -> Result<Option<Signer>, String> {
        Err("commit signatures cannot be verified by this build".into())
    }
}
