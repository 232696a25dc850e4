//! What the containers of a state directory use of the images and snapshots it holds,
//! and removing the snapshots nothing uses: the one home of the decisions of
//! `berth image rm` and `berth image prune`, which the agent's garbage collection
//! (`reconcile::gc`) makes too.
//!
//! - A container uses an image when its record runs the image's digest: the digest its
//!   reference resolved to (an index, or the manifest itself) or that of its platform
//!   manifest.
//! - A snapshot is used when the layer chain of a kept image, or the chain a container's
//!   record names, holds it: a container whose image record went keeps its layers.
//! - Snapshots go children first: one that another snapshot builds on stays while that
//!   one does.

use std::collections::{BTreeMap, BTreeSet};

use super::prepare::{self, PrepareError};
use super::snapshot::{ChainId, SnapshotError, SnapshotStore};
use super::store::records::ImageRecord;
use crate::runtime::record::ContainerRecord;

/// Why what is in use could not be told.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// An image record whose layers give no chain.
    #[error(transparent)]
    Image(#[from] PrepareError),
    #[error("container {name}: its record names an invalid layer chain")]
    Container {
        name: String,
        #[source]
        source: SnapshotError,
    },
}

/// The containers that run `image`, by name.
pub fn users<'c>(
    image: &ImageRecord,
    containers: &'c BTreeMap<String, ContainerRecord>,
) -> Vec<&'c str> {
    containers
        .values()
        .filter(|c| {
            c.image.digest == image.digest.as_str()
                || c.image.digest == image.manifest.digest.as_str()
        })
        .map(|c| c.name.as_str())
        .collect()
}

/// The snapshots in use: every layer chain of `images` (those kept) and of the
/// containers' records.
pub fn chains_in_use(
    images: &[ImageRecord],
    containers: &BTreeMap<String, ContainerRecord>,
) -> Result<BTreeSet<ChainId>, UsageError> {
    let mut keep = BTreeSet::new();
    for image in images {
        keep.extend(prepare::chain_ids(image)?);
    }
    for c in containers.values() {
        for chain in &c.image.chain_ids {
            keep.insert(
                ChainId::parse(chain).map_err(|source| UsageError::Container {
                    name: c.name.clone(),
                    source,
                })?,
            );
        }
    }
    Ok(keep)
}

/// A snapshot removed, and the bytes it held on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSnapshot {
    pub chain_id: ChainId,
    pub bytes: u64,
}

/// Removes every snapshot not in `keep`, children before their parents; one that a
/// kept snapshot builds on stays. Returns what was removed, in order.
pub fn remove_snapshots(
    snapshots: &SnapshotStore,
    keep: &BTreeSet<ChainId>,
) -> Result<Vec<RemovedSnapshot>, SnapshotError> {
    let mut removed = Vec::new();
    loop {
        let all = snapshots.list()?;
        let parents: BTreeSet<&ChainId> = all.iter().filter_map(|s| s.parent.as_ref()).collect();
        let leaves: Vec<_> = all
            .iter()
            .filter(|s| !keep.contains(&s.chain_id) && !parents.contains(&s.chain_id))
            .collect();
        if leaves.is_empty() {
            return Ok(removed);
        }
        for s in leaves {
            let bytes = crate::util::disk_usage(&s.path);
            if snapshots.remove(&s.chain_id)? {
                removed.push(RemovedSnapshot {
                    chain_id: s.chain_id.clone(),
                    bytes,
                });
            }
        }
    }
}
