//! Garbage collection on unattended nodes: the instances, images, snapshots and source
//! revisions that nothing uses any more are removed once they have been unused for
//! `runtime.gc_grace` (default `"1h"`), so the disk use of a node that follows its
//! repository for months stays bounded. `berth agent` collects after every pass it
//! applies (`reconcile::follow`), and so does `berth agent --once`, run from cron.
//!
//! What is in use is read from the state directory itself, nothing else:
//! - an **instance** (`instances/<id>/`) is used when a container record names it, or
//!   while it runs — its init alive in the instance's cgroup, or its shim alive: one
//!   that runs is never removed, whatever the records say;
//! - an **image** (`content/images/`) when a container record runs its digest, as
//!   `berth image rm` decides ([`crate::image::usage::users`]); its blobs go with it,
//!   except those another image still holds;
//! - a **snapshot** when the layer chain of an image a container runs, or of a
//!   container record, holds it ([`crate::image::usage::chains_in_use`]); it is unused
//!   from when its images are, but stays while an image still waiting holds it or a
//!   mounted overlay reads it; children go before their parents;
//! - a **revision** (`source/revisions/<commit>/`) when `state/applied.json` names it
//!   (the last one applied, and the one each container runs).
//!
//! Grace: the first time an object is seen unused is kept in `state/gc.json` (written
//! crash-safely); it is removed at the first collection at least `grace` later, and an
//! object in use again is dropped from the file. With a grace of `0s` an unused object
//! goes at once. A crash between a removal and the write of the file is harmless: an
//! object that is no longer there is no longer listed.
//!
//! Safety: every path is an entry of a directory listing of berth's own state
//! directory, and its name must be what berth names such entries (an instance id, a
//! chain ID in the snapshot metadata, a commit id); anything else is left alone with a
//! warning. Symbolic links are never followed: an entry that is not a directory is left
//! alone, and `remove_dir_all` removes links without following them. An instance's
//! rootfs overlay is unmounted first; an instance that still has anything else mounted
//! below it (a staged bind of a host path) or is still attached to a network is left
//! for the pass's teardown, with a warning. A revision is renamed out of the way before
//! it is removed, so a follower never sees half of one.
//!
//! Locking: [`collect`] takes the state lock for its length and bumps the state
//! generation when it removed something; [`collect_locked`] is for a caller that holds
//! the lock already (and bumps the generation at the end of its own changes). Image
//! removals also hold the content store's exclusive lock, as `berth image rm` does, so
//! a `berth image pull` in flight keeps its blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::image::snapshot::{SnapshotError, SnapshotStore};
use crate::image::store::records::ImageRecord;
use crate::image::store::{Store, StoreError};
use crate::image::usage::{self, UsageError};
use crate::runtime::lock::{self, LockError};
use crate::runtime::mount;
use crate::runtime::record::{self, ContainerRecord, RecordError};
use crate::runtime::state::InstanceDirs;
use crate::source::applied::{Applied, AppliedError};
use crate::source::checkout::Revisions;
use crate::util::disk_usage;

mod ledger;
mod liveness;

use ledger::Ledger;
use liveness::Procs;

/// How long [`collect`] waits for the state lock: collection is not worth holding a
/// pass up for, and the next one collects what this one could not.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a collection failed. Each names what it could not read or remove.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Applied(#[from] AppliedError),
    #[error("cannot list {}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the garbage collection record {}", path.display())]
    ReadLedger {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the garbage collection record {}", path.display())]
    WriteLedger {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bump the generation of state directory {}", state_dir.display())]
    Generation {
        state_dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a collection looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Instance,
    Image,
    Snapshot,
    Revision,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Instance => "instance",
            Kind::Image => "image",
            Kind::Snapshot => "snapshot",
            Kind::Revision => "revision",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object removed: an instance id, an image reference, a chain ID or a commit, and
/// the bytes it held (an image: its blobs no other image holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub kind: Kind,
    pub id: String,
    pub bytes: u64,
}

/// An unused object whose grace has passed, left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub kind: Kind,
    pub id: String,
    pub reason: String,
}

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// In the order they were removed.
    pub removed: Vec<Removed>,
    /// Unused objects whose grace has not passed yet.
    pub kept_waiting: usize,
    /// The bytes of everything removed.
    pub freed_bytes: u64,
    /// Unused objects it was not safe to remove now; tried again next time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

impl GcReport {
    fn removed(&mut self, kind: Kind, id: &str, bytes: u64) {
        tracing::info!(target: "gc", kind = kind.as_str(), id, bytes, "removed");
        self.freed_bytes = self.freed_bytes.saturating_add(bytes);
        self.removed.push(Removed {
            kind,
            id: id.to_string(),
            bytes,
        });
    }

    fn skipped(&mut self, kind: Kind, id: &str, reason: String) {
        tracing::warn!(target: "gc", kind = kind.as_str(), id, %reason, "not removed");
        self.skipped.push(Skipped {
            kind,
            id: id.to_string(),
            reason,
        });
    }
}

/// Collects under the state lock, which it takes (waiting at most [`LOCK_TIMEOUT`]);
/// bumps the state generation when it removed something.
pub fn collect(state_dir: &Path, grace: Duration, now: SystemTime) -> Result<GcReport, GcError> {
    collect_waiting(state_dir, grace, now, LOCK_TIMEOUT)
}

/// [`collect`], waiting at most `timeout` for the lock.
fn collect_waiting(
    state_dir: &Path,
    grace: Duration,
    now: SystemTime,
    timeout: Duration,
) -> Result<GcReport, GcError> {
    let held = lock::lock(
        state_dir,
        "berth agent (garbage collection)",
        timeout,
        &mut |who| tracing::info!(target: "gc", "{who}"),
    )?;
    let report = collect_locked(state_dir, grace, now)?;
    if !report.removed.is_empty() {
        held.bump_generation()
            .map_err(|source| GcError::Generation {
                state_dir: state_dir.to_path_buf(),
                source,
            })?;
    }
    Ok(report)
}

/// Collects; the caller holds the state lock (`runtime::lock`) and bumps the
/// generation at the end of its changes.
pub fn collect_locked(
    state_dir: &Path,
    grace: Duration,
    now: SystemTime,
) -> Result<GcReport, GcError> {
    collect_with(state_dir, grace, now, &Procs::host())
}

fn collect_with(
    state_dir: &Path,
    grace: Duration,
    now: SystemTime,
    procs: &Procs,
) -> Result<GcReport, GcError> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut ledger = Ledger::load(state_dir, grace, now)?;
    let mut report = GcReport::default();
    let containers = record::read_records(state_dir)?;
    instances(state_dir, &containers, procs, &mut ledger, &mut report)?;
    let kept = images(state_dir, &containers, &mut ledger, &mut report)?;
    snapshots(state_dir, &kept, &containers, &mut ledger, &mut report)?;
    revisions(state_dir, &mut ledger, &mut report)?;
    report.kept_waiting = ledger.waiting;
    ledger.store(state_dir)?;
    Ok(report)
}

/// Instance directories no record names and that do not run.
fn instances(
    state_dir: &Path,
    containers: &BTreeMap<String, ContainerRecord>,
    procs: &Procs,
    ledger: &mut Ledger,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let named: BTreeSet<&str> = containers.values().map(|c| c.instance.as_str()).collect();
    let dir = state_dir.join("instances");
    for id in list(&dir)? {
        if named.contains(id.as_str()) {
            continue;
        }
        if !is_instance_id(&id) || !is_real_dir(&dir.join(&id)) {
            tracing::warn!(target: "gc", entry = %dir.join(&id).display(), "not an instance directory berth made: left alone");
            continue;
        }
        if let Some(why) = procs.runs(state_dir, &id) {
            tracing::debug!(target: "gc", instance = %id, "no record names it, but {why}: kept");
            continue;
        }
        if !ledger.due(Kind::Instance, &id) {
            continue;
        }
        let dirs = InstanceDirs::new(state_dir, &id);
        if let Some(why) = not_removable(state_dir, &id, &dirs) {
            report.skipped(Kind::Instance, &id, why);
            continue;
        }
        let bytes = disk_usage(&dirs.root);
        match std::fs::remove_dir_all(&dirs.root) {
            Ok(()) => {
                ledger.forget(Kind::Instance, &id);
                report.removed(Kind::Instance, &id, bytes);
            }
            Err(e) => report.skipped(Kind::Instance, &id, cannot_remove(&dirs.root, &e)),
        }
    }
    Ok(())
}

/// Why a removal failed: the next collection tries again.
fn cannot_remove(path: &Path, e: &io::Error) -> String {
    format!("cannot remove {}: {e}", path.display())
}

/// Why an unused instance cannot be removed now: it is still attached to a network,
/// or something other than its rootfs is mounted below it (its rootfs is unmounted
/// here). `None` when it can.
fn not_removable(state_dir: &Path, id: &str, dirs: &InstanceDirs) -> Option<String> {
    let paths = crate::network::store::Paths {
        state_dir: state_dir.to_path_buf(),
        run_dir: PathBuf::new(),
    };
    if std::fs::symlink_metadata(paths.attachment(id)).is_ok() {
        return Some(
            "it is still attached to a network: the next pass's teardown detaches it".into(),
        );
    }
    if let Err(e) = mount::unmount_rootfs(dirs) {
        return Some(format!(
            "its rootfs cannot be unmounted: {}",
            crate::util::error_chain(&e)
        ));
    }
    let below = mounts_below(&dirs.root);
    if !below.is_empty() {
        return Some(format!(
            "{} still mounted below it: the next pass's teardown unmounts it",
            below.join(", ")
        ));
    }
    None
}

/// Mount points at or below `dir`, per `/proc/self/mountinfo` (which shows canonical
/// paths).
fn mounts_below(dir: &Path) -> Vec<String> {
    let Ok(canonical) = dir.canonicalize() else {
        return Vec::new();
    };
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount::parse_mountinfo(&text)
        .into_iter()
        .map(|(point, _)| point)
        .filter(|point| Path::new(point).starts_with(&canonical))
        .collect()
}

/// The image records a collection keeps.
#[derive(Debug, Default)]
struct KeptImages {
    /// Those a container runs.
    used: Vec<ImageRecord>,
    /// Those unused whose grace has not passed (or that could not go).
    waiting: Vec<ImageRecord>,
}

/// Image records no container runs.
fn images(
    state_dir: &Path,
    containers: &BTreeMap<String, ContainerRecord>,
    ledger: &mut Ledger,
    report: &mut GcReport,
) -> Result<KeptImages, GcError> {
    let store = Store::open(state_dir)?;
    let _exclusive = store.lock_exclusive()?;
    let mut kept = KeptImages::default();
    for image in store.records()? {
        if !usage::users(&image, containers).is_empty() {
            kept.used.push(image);
            continue;
        }
        if !ledger.due(Kind::Image, &image.reference) {
            kept.waiting.push(image);
            continue;
        }
        store.remove_record(&image.reference)?;
        let blobs = image.blobs().cloned().collect();
        let freed = store.gc(Some(&blobs))?;
        tracing::debug!(target: "gc", image = %image.reference, digest = %image.digest, blobs = freed.removed.len(), "blobs removed with the image");
        ledger.forget(Kind::Image, &image.reference);
        report.removed(Kind::Image, &image.reference, freed.bytes);
    }
    Ok(kept)
}

/// Snapshots no used image and no container record uses. One is unused from the
/// moment its images are, so it is due with them; it stays while an image still
/// waiting holds it, or while a mounted rootfs reads it.
fn snapshots(
    state_dir: &Path,
    kept: &KeptImages,
    containers: &BTreeMap<String, ContainerRecord>,
    ledger: &mut Ledger,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let store = SnapshotStore::open(state_dir)?;
    let used = usage::chains_in_use(&kept.used, containers)?;
    let mut keep = usage::chains_in_use(&kept.waiting, &BTreeMap::new())?;
    // Whoever mounted it: an instance that runs with no record naming it.
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let mounted: BTreeSet<PathBuf> = mount::overlay_lowers()
        .iter()
        .map(|p| canonical(p))
        .collect();
    for s in store.list()? {
        let in_use = used.contains(&s.chain_id) || mounted.contains(&canonical(&s.path));
        if in_use || !ledger.due(Kind::Snapshot, s.chain_id.as_str()) {
            keep.insert(s.chain_id);
        }
    }
    for s in usage::remove_snapshots(&store, &keep)? {
        ledger.forget(Kind::Snapshot, s.chain_id.as_str());
        report.removed(Kind::Snapshot, s.chain_id.as_str(), s.bytes);
    }
    let leftovers = store.cleanup()?;
    if leftovers > 0 {
        tracing::info!(target: "gc", leftovers, "snapshot directories crashed unpacks left removed");
    }
    Ok(())
}

/// Revision directories `state/applied.json` does not name.
fn revisions(state_dir: &Path, ledger: &mut Ledger, report: &mut GcReport) -> Result<(), GcError> {
    let in_use = Applied::load(state_dir)?
        .map(|a| a.in_use())
        .unwrap_or_default();
    let revisions = Revisions::new(&state_dir.join("source"));
    for commit in list(&revisions.dir)? {
        // The checkout's temporary directories are its own (its prune removes them).
        if commit.starts_with('.') || in_use.contains(&commit) {
            continue;
        }
        let path = revisions.path_of(&commit);
        if !is_commit_id(&commit) || !is_real_dir(&path) {
            tracing::warn!(target: "gc", entry = %path.display(), "not a revision directory berth made: left alone");
            continue;
        }
        if !ledger.due(Kind::Revision, &commit) {
            continue;
        }
        // Out of the way first: a follower finds the whole revision or none. What a
        // failed removal leaves aside, the checkout's prune removes.
        let aside = revisions.dir.join(format!(".gc-{commit}"));
        if let Err(e) = std::fs::rename(&path, &aside) {
            report.skipped(Kind::Revision, &commit, cannot_remove(&path, &e));
            continue;
        }
        let bytes = disk_usage(&aside);
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            tracing::warn!(target: "gc", path = %aside.display(), error = %e, "revision set aside but not removed");
        }
        ledger.forget(Kind::Revision, &commit);
        report.removed(Kind::Revision, &commit, bytes);
    }
    Ok(())
}

/// The names in `dir`, sorted; none when it does not exist.
fn list(dir: &Path) -> Result<Vec<String>, GcError> {
    let err = |source| GcError::List {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(
            entry
                .map_err(err)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

/// A directory itself, not a link to one.
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// `<container name>-<8 lowercase hex>`, as `runtime::spec_hash` names instances.
fn is_instance_id(id: &str) -> bool {
    id.rsplit_once('-').is_some_and(|(name, hash)| {
        berth_spec::valid_name(name) && hash.len() == 8 && is_lower_hex(hash)
    })
}

/// A Git object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_commit_id(name: &str) -> bool {
    matches!(name.len(), 40 | 64) && is_lower_hex(name)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
