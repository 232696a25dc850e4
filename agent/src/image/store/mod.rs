//! The content store: `state_dir/content/blobs/sha256/<hex>` (DESIGN.md §7), one file
//! per blob, named by the SHA-256 of its bytes.
//!
//! Modes: every directory 0700 and every file 0600 whatever the umask (blobs may be
//! private images).
//!
//! Contract: a file under `blobs/` always holds exactly the bytes its name promises.
//! Blobs are written to `ingest/` first (same filesystem), hashed and size-checked
//! while streaming, fsynced, renamed into place and the directory fsynced; a blob whose
//! bytes do not match is deleted and never appears under `blobs/`. Interrupted
//! downloads stay in `ingest/<hex>.partial` and resume with a `Range` request
//! ([`ingest`]). Image records live in `images/` ([`records`]).
//!
//! Concurrency: pulls hold a shared lock on `content/lock` from their first read until
//! their image record is written; `rm` and `prune` hold it exclusively, so they never
//! delete a blob a running pull has fetched but not yet recorded. Two pulls of the same
//! blob serialise on an exclusive lock of its `.partial` file.

pub mod ingest;
pub mod records;

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::runtime::state;

use super::digest::Digest;
use super::registry::{RegistryError, Target};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {} from repository {} on registry {} does not match its digest (the content hashes to {actual}): rejected, nothing stored", .target.reference, .target.repository, .target.registry)]
    DigestMismatch { target: Target, actual: Digest },
    #[error("blob {} from repository {} on registry {} has {actual} bytes, the manifest says {expected}: rejected, nothing stored", .target.reference, .target.repository, .target.registry)]
    SizeMismatch {
        target: Target,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} in the content store is corrupt (its content hashes to {actual})")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("blob {0} is not in the content store")]
    Missing(Digest),
    #[error("blob {digest} is {size} bytes, more than the {limit} bytes allowed here")]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("image record {} is unreadable", .path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl StoreError {
    /// True when retrying the pull later may help.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Registry(e) => e.is_transient(),
            _ => false,
        }
    }

    /// True when content did not match its digest.
    pub fn is_integrity(&self) -> bool {
        match self {
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => true,
            StoreError::Registry(e) => e.is_integrity(),
            _ => false,
        }
    }
}

pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The content store under a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held store lock (shared for pulls, exclusive for removals); released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl Store {
    /// Opens (creating as needed) the store at `state_dir/content`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: state_dir.join("content"),
        };
        let blobs = store.root.join("blobs");
        for dir in [
            store.root.clone(),
            blobs,
            store.blobs_dir(),
            store.ingest_dir(),
            store.images_dir(),
        ] {
            state::private_dir(&dir).map_err(io("create", &dir))?;
        }
        Ok(store)
    }

    /// The store under `state_dir` for reading only (`berth plan`): nothing is
    /// created. A store that does not exist yet reads as empty.
    pub fn open_read_only(state_dir: &Path) -> Store {
        Store {
            root: state_dir.join("content"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a small blob (manifest, config), refusing more than `limit` bytes, and
    /// checks its digest: a flipped bit on disk must not become a different image.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(digest.clone()));
            }
            Err(e) => return Err(io("stat", &path)(e)),
        };
        if size > limit {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
                limit,
            });
        }
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::Corrupt {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Stores bytes already in memory under their digest, which must be `digest`.
    pub fn write_blob(
        &self,
        digest: &Digest,
        bytes: &[u8],
        target: &Target,
    ) -> Result<(), StoreError> {
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                target: target.clone(),
                actual,
            });
        }
        if self.has_blob(digest) {
            return Ok(());
        }
        write_atomic(&self.ingest_dir(), &self.blob_path(digest), bytes)
    }

    fn lock_file(&self) -> Result<File, StoreError> {
        let path = self.root.join("lock");
        state::open_lock_file(&path).map_err(io("open", &path))
    }

    /// Takes the shared lock (pulls). Blocks while a removal runs.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        let file = self.lock_file()?;
        file.lock_shared().map_err(io("lock", &self.root))?;
        Ok(StoreLock { _file: file })
    }

    /// Takes the exclusive lock (rm, prune). Blocks while pulls run.
    pub fn lock_exclusive(&self) -> Result<StoreLock, StoreError> {
        let file = self.lock_file()?;
        file.lock().map_err(io("lock", &self.root))?;
        Ok(StoreLock { _file: file })
    }
}

/// Writes `bytes` to `dest` atomically, mode 0600, its temp file in `tmp_dir` (same
/// filesystem, outside the directories the store scans): `state::write_atomic_via`.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    state::write_atomic_via(tmp_dir, dest, bytes, state::PRIVATE_FILE).map_err(io("write", dest))
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    state::sync_parent(path).map_err(io("fsync the directory of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(d: &Digest) -> Target {
        Target::new("r.io", "app", &d.to_string())
    }

    #[test]
    fn write_and_read_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"config");
        store.write_blob(&d, b"config", &target(&d)).unwrap();
        assert!(store.has_blob(&d));
        assert_eq!(
            store.blob_path(&d),
            dir.path().join("content/blobs/sha256").join(d.hex())
        );
        assert_eq!(store.read_blob(&d, 100).unwrap(), b"config");
        assert!(matches!(
            store.read_blob(&d, 3),
            Err(StoreError::TooLarge { .. })
        ));

        // Wrong bytes for a digest: nothing stored, the error names the digest.
        let other = Digest::of(b"other");
        let err = store
            .write_blob(&other, b"config", &target(&other))
            .unwrap_err();
        assert!(err.to_string().contains(other.as_str()), "{err}");
        assert!(!store.has_blob(&other));
        assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);

        // Corruption on disk is noticed when read.
        std::fs::write(store.blob_path(&d), b"tampered").unwrap();
        assert!(matches!(
            store.read_blob(&d, 100),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.read_blob(&other, 100),
            Err(StoreError::Missing(_))
        ));
    }

    #[test]
    fn locks_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.lock_shared().unwrap();
        let b = store.lock_shared().unwrap();
        let f = store.lock_file().unwrap();
        assert!(
            f.try_lock().is_err(),
            "exclusive lock while shared locks are held"
        );
        drop((a, b));
        assert!(f.try_lock().is_ok());
    }
}
