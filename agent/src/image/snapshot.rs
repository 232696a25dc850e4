//! Snapshots: each image layer unpacked once into `<state>/snapshots/<n>/`, an
//! overlayfs lowerdir, and shared by every image whose layer chain contains it
//! (DESIGN.md §7).
//!
//! Contract:
//! - Snapshots are keyed by chain ID (OCI image-spec config.md: `chainid(L0) =
//!   diffid(L0)`, `chainid(Ln) = sha256(chainid(Ln-1) + " " + diffid(Ln))`) and stored
//!   under a short number `n`, as containerd does, so the lowerdir option of a deep
//!   image still fits in one page.
//! - A snapshot is visible only once complete: a layer is unpacked into
//!   `snapshots/tmp-<chain hex>/`, synced, renamed to `<n>`, and only then recorded in
//!   `metadata.json` (temp file, fsync, rename, fsync of the directory).
//! - `snapshots/` and `locks/` are 0700, `metadata.json` and the lock files 0600,
//!   whatever the umask; a snapshot keeps the modes its layer gives (its root 0755).
//! - Writers of the metadata hold `snapshots/.lock`; concurrent unpacks of one chain
//!   (threads or processes) serialise on `snapshots/locks/<chain hex>.lock`, and the
//!   later one finds the earlier one's snapshot. Readers take no lock.
//! - A crash leaves at most a `tmp-*` directory or a numbered directory missing from
//!   the metadata; [`SnapshotStore::cleanup`] removes both, and the next `prepare` of
//!   the chain replaces its stale temp directory.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
#[cfg(test)]
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::unpack::UnpackError;
#[cfg(test)]
use super::unpack::{self, UnpackOptions, WhiteoutMode};
use crate::runtime::state;

/// A layer chain ID, `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(String);

impl ChainId {
    /// Validates a chain ID (or a diff_id, which is the chain ID of a base layer).
    pub fn parse(s: &str) -> Result<ChainId, SnapshotError> {
        let hex = s.strip_prefix("sha256:").unwrap_or("");
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(ChainId(s.to_owned()))
        } else {
            Err(SnapshotError::InvalidDigest(s.to_owned()))
        }
    }

    /// The chain ID of layer `diff_id` applied on top of this chain.
    pub fn child(&self, diff_id: &str) -> Result<ChainId, SnapshotError> {
        ChainId::parse(diff_id)?;
        let sum = Sha256::digest(format!("{} {}", self.0, diff_id).as_bytes());
        let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
        Ok(ChainId(format!("sha256:{hex}")))
    }

    /// The chain ID of `diff_id` on `parent` (or as a base layer).
    pub fn of(parent: Option<&ChainId>, diff_id: &str) -> Result<ChainId, SnapshotError> {
        match parent {
            Some(p) => p.child(diff_id),
            None => ChainId::parse(diff_id),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl std::fmt::Display for ChainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The chain IDs of an image's `rootfs.diff_ids`, base layer first.
pub fn chain_ids<S: AsRef<str>>(diff_ids: &[S]) -> Result<Vec<ChainId>, SnapshotError> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = ChainId::of(out.last(), d.as_ref())?;
        out.push(id);
    }
    Ok(out)
}

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex>")]
    InvalidDigest(String),
    #[error("snapshot store: {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snapshot metadata {path} is corrupt")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot {0} not found")]
    NotFound(ChainId),
    #[error("parent snapshot {parent} of {chain_id} not found")]
    ParentMissing { chain_id: ChainId, parent: ChainId },
    #[error("snapshot {chain_id} is the parent of {child}")]
    InUse { chain_id: ChainId, child: ChainId },
    #[error("diff_id {diff_id} on parent {parent:?} gives chain {actual}, not {chain_id}")]
    ChainMismatch {
        chain_id: ChainId,
        parent: Option<ChainId>,
        diff_id: String,
        actual: ChainId,
    },
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { op, path, source }
}

/// One committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub chain_id: ChainId,
    /// The short number naming its directory.
    pub id: u64,
    /// `<state>/snapshots/<id>`: the overlayfs lowerdir.
    pub path: PathBuf,
    pub parent: Option<ChainId>,
    pub diff_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    /// The number the next snapshot gets; numbers are never reused.
    next_id: u64,
    snapshots: BTreeMap<ChainKey, Record>,
}

type ChainKey = String;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    diff_id: String,
}

/// The snapshot directory of a state directory.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

/// The answer of [`SnapshotStore::prepare`].
#[derive(Debug)]
pub enum Prepared<'s> {
    /// The chain is already unpacked (perhaps by a concurrent unpack we waited for).
    Exists(Snapshot),
    /// Unpack into [`ActiveSnapshot::path`], then [`ActiveSnapshot::commit`].
    New(ActiveSnapshot<'s>),
}

/// A snapshot being filled. Holds the chain's lock; dropped without a commit, its
/// temporary directory is removed.
#[derive(Debug)]
pub struct ActiveSnapshot<'s> {
    store: &'s SnapshotStore,
    chain_id: ChainId,
    parent: Option<ChainId>,
    tmp: PathBuf,
    _lock: File,
    committed: bool,
}

const METADATA: &str = "metadata.json";

impl SnapshotStore {
    /// Opens (creating if needed) `<state_dir>/snapshots`.
    pub fn open(state_dir: &Path) -> Result<SnapshotStore, SnapshotError> {
        let dir = state_dir.join("snapshots");
        let locks = dir.join("locks");
        state::private_dir(&dir).map_err(io_err("create", &dir))?;
        state::private_dir(&locks).map_err(io_err("create", &locks))?;
        Ok(SnapshotStore { dir })
    }

    /// The snapshot store under `state_dir` for reading only (`berth plan`): nothing
    /// is created, and a store that does not exist yet has no snapshot.
    pub fn open_read_only(state_dir: &Path) -> SnapshotStore {
        SnapshotStore {
            dir: state_dir.join("snapshots"),
        }
    }

    fn lock(&self, name: &Path) -> Result<File, SnapshotError> {
        let path = self.dir.join(name);
        let f = state::open_lock_file(&path).map_err(io_err("open lock", &path))?;
        f.lock().map_err(io_err("lock", &path))?;
        Ok(f)
    }

    fn chain_lock_path(chain: &str) -> PathBuf {
        Path::new("locks").join(format!("{chain}.lock"))
    }

    fn load(&self) -> Result<Metadata, SnapshotError> {
        let path = self.dir.join(METADATA);
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|source| SnapshotError::Metadata { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Metadata {
                next_id: 1,
                ..Metadata::default()
            }),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Atomically replaces the metadata (the caller holds `.lock`).
    fn save(&self, md: &Metadata) -> Result<(), SnapshotError> {
        let path = self.dir.join(METADATA);
        let body = serde_json::to_vec_pretty(md).map_err(|source| SnapshotError::Metadata {
            path: path.clone(),
            source,
        })?;
        state::write_atomic(&path, &body).map_err(io_err("write", &path))
    }

    fn sync_dir(&self) -> Result<(), SnapshotError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync", &self.dir))
    }

    fn snapshot(&self, chain: &str, r: &Record) -> Snapshot {
        Snapshot {
            chain_id: ChainId(chain.to_owned()),
            id: r.id,
            path: self.dir.join(r.id.to_string()),
            parent: r.parent.clone().map(ChainId),
            diff_id: r.diff_id.clone(),
        }
    }

    /// The committed snapshot of `chain`, if any.
    pub fn get(&self, chain: &ChainId) -> Result<Option<Snapshot>, SnapshotError> {
        let md = self.load()?;
        Ok(md
            .snapshots
            .get(chain.as_str())
            .map(|r| self.snapshot(chain.as_str(), r)))
    }

    /// Every committed snapshot, by number (for garbage collection).
    pub fn list(&self) -> Result<Vec<Snapshot>, SnapshotError> {
        let md = self.load()?;
        let mut all: Vec<_> = md
            .snapshots
            .iter()
            .map(|(c, r)| self.snapshot(c, r))
            .collect();
        all.sort_by_key(|s| s.id);
        Ok(all)
    }

    /// The overlayfs lowerdirs of an image, given its chain IDs base first: top-most
    /// first, as `lowerdir=` wants them.
    pub fn lowerdirs(&self, chain: &[ChainId]) -> Result<Vec<PathBuf>, SnapshotError> {
        let md = self.load()?;
        chain
            .iter()
            .rev()
            .map(|c| match md.snapshots.get(c.as_str()) {
                Some(r) => Ok(self.dir.join(r.id.to_string())),
                None => Err(SnapshotError::NotFound(c.clone())),
            })
            .collect()
    }

    /// Starts a snapshot for `chain` on `parent`, or returns the existing one. Blocks
    /// while another unpack of the same chain is under way — also one this thread
    /// still holds, so drop or commit an [`ActiveSnapshot`] before preparing it again.
    pub fn prepare(
        &self,
        chain: &ChainId,
        parent: Option<&ChainId>,
    ) -> Result<Prepared<'_>, SnapshotError> {
        let lock = self.lock(&Self::chain_lock_path(chain.hex()))?;
        let md = self.load()?;
        if let Some(r) = md.snapshots.get(chain.as_str()) {
            return Ok(Prepared::Exists(self.snapshot(chain.as_str(), r)));
        }
        // The parent need not exist yet: layers of one image unpack in parallel and
        // commit in order; `commit` checks the parent.
        let tmp = self.dir.join(format!("tmp-{}", chain.hex()));
        // Left by a crashed unpack: nobody else can be using it, we hold the lock.
        match fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove stale", &tmp)(e));
            }
            _ => {}
        }
        fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &tmp))?;
        Ok(Prepared::New(ActiveSnapshot {
            store: self,
            chain_id: chain.clone(),
            parent: parent.cloned(),
            tmp,
            _lock: lock,
            committed: false,
        }))
    }

    /// Unpacks one layer as the snapshot of `parent` + `diff_id`, unless it exists.
    /// The computed diff_id must equal `diff_id`; on any error nothing is left visible.
    /// The tests' way in, a layer at a time; `prepare::unpack_snapshots` does the same
    /// for a whole image, in parallel, through [`SnapshotStore::prepare`].
    #[cfg(test)]
    pub fn unpack<R: Read>(
        &self,
        parent: Option<&ChainId>,
        diff_id: &str,
        layer: &str,
        media_type: &str,
        blob: R,
        opts: &UnpackOptions,
    ) -> Result<Snapshot, SnapshotError> {
        let chain = ChainId::of(parent, diff_id)?;
        // One layer at a time: its parent must be there before any work is done.
        if let Some(p) = parent
            && self.get(p)?.is_none()
        {
            return Err(SnapshotError::ParentMissing {
                chain_id: chain,
                parent: p.clone(),
            });
        }
        let active = match self.prepare(&chain, parent)? {
            Prepared::Exists(s) => return Ok(s),
            Prepared::New(a) => a,
        };
        let opts = UnpackOptions {
            mode: WhiteoutMode::Snapshot,
            ..opts.clone()
        };
        let stats = unpack::unpack_layer(layer, media_type, blob, active.path(), &opts)?;
        unpack::verify_diff_id(layer, &stats, diff_id)?;
        active.commit(diff_id)
    }

    /// Removes a snapshot no other snapshot builds on. `Ok(false)` if it did not exist.
    pub fn remove(&self, chain: &ChainId) -> Result<bool, SnapshotError> {
        let _lock = self.lock(Path::new(".lock"))?;
        let mut md = self.load()?;
        if let Some((child, _)) = md
            .snapshots
            .iter()
            .find(|(_, r)| r.parent.as_deref() == Some(chain.as_str()))
        {
            return Err(SnapshotError::InUse {
                chain_id: chain.clone(),
                child: ChainId(child.clone()),
            });
        }
        let Some(r) = md.snapshots.remove(chain.as_str()) else {
            return Ok(false);
        };
        // Forget first: a crash now leaves an orphan directory for `cleanup`, never a
        // recorded snapshot with half its files.
        self.save(&md)?;
        let path = self.dir.join(r.id.to_string());
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(true),
        }
    }

    /// Removes what crashes left: temp directories of unpacks no longer running and
    /// numbered directories the metadata does not know. Returns how many.
    pub fn cleanup(&self) -> Result<usize, SnapshotError> {
        let _lock = self.lock(Path::new(".lock"))?;
        let md = self.load()?;
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))? {
            let entry = entry.map_err(io_err("read", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = if let Some(hex) = name.strip_prefix("tmp-") {
                let path = self.dir.join(Self::chain_lock_path(hex));
                let f = state::open_lock_file(&path).map_err(io_err("open lock", &path))?;
                f.try_lock().is_ok()
            } else if let Ok(id) = name.parse::<u64>() {
                !md.snapshots.values().any(|r| r.id == id)
            } else {
                false
            };
            if stale {
                fs::remove_dir_all(entry.path()).map_err(io_err("remove", &entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl ActiveSnapshot<'_> {
    /// Where to unpack the layer.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Publishes the snapshot. `diff_id` must give this snapshot's chain ID on its
    /// parent (the caller verified it against the unpacked bytes).
    pub fn commit(mut self, diff_id: &str) -> Result<Snapshot, SnapshotError> {
        let actual = ChainId::of(self.parent.as_ref(), diff_id)?;
        if actual != self.chain_id {
            return Err(SnapshotError::ChainMismatch {
                chain_id: self.chain_id.clone(),
                parent: self.parent.clone(),
                diff_id: diff_id.to_owned(),
                actual,
            });
        }
        let store = self.store;
        let _lock = store.lock(Path::new(".lock"))?;
        let mut md = store.load()?;
        if let Some(p) = &self.parent
            && !md.snapshots.contains_key(p.as_str())
        {
            return Err(SnapshotError::ParentMissing {
                chain_id: self.chain_id.clone(),
                parent: p.clone(),
            });
        }
        let id = md.next_id.max(1);
        let path = store.dir.join(id.to_string());
        // A directory under an unrecorded number was renamed there by a commit that
        // crashed before saving the metadata.
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove orphan", &path)(e));
            }
            _ => {}
        }
        fs::rename(&self.tmp, &path).map_err(io_err("rename", &self.tmp))?;
        self.committed = true;
        store.sync_dir()?;
        md.next_id = id + 1;
        let record = Record {
            id,
            parent: self.parent.as_ref().map(|p| p.0.clone()),
            diff_id: diff_id.to_owned(),
        };
        md.snapshots.insert(self.chain_id.0.clone(), record.clone());
        store.save(&md)?;
        Ok(store.snapshot(self.chain_id.as_str(), &record))
    }
}

impl Drop for ActiveSnapshot<'_> {
    fn drop(&mut self) {
        if !self.committed
            && let Err(e) = fs::remove_dir_all(&self.tmp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove unfinished snapshot");
        }
    }
}

// Tests: `unpack/tests_snapshot.rs` (they drive the store through real unpacks).
