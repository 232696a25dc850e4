//! Where `berth apply` gets its images, behind [`ImageSource`] so that the order of an
//! image's preparation — pull, signature, config, unpack — and what is skipped when a
//! step says no is unit-tested with a fake. [`Registry`] is the real one: the registry
//! through the content store, and the store's snapshots.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_spec::reference::Reference;
use oci_spec::image::ImageConfiguration;

use super::{ImageError, MAX_CONFIG};
use crate::image::prepare::{self, SignatureCheck};
use crate::image::pull::{self, PullOptions, PullProgress};
use crate::image::registry::Client;
use crate::image::signature::Trust;
use crate::image::signature::exchange;
use crate::image::snapshot::{ChainId, SnapshotStore};
use crate::image::store::Store;
use crate::image::store::records::ImageRecord;
use crate::telemetry::metrics::{PullLog, PullSample};

/// Counts the blob bytes a pull downloads.
#[derive(Debug, Default)]
struct Downloaded(AtomicU64);

impl PullProgress for Downloaded {
    fn blob_advanced(&self, _: &crate::image::digest::Digest, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The registry and store operations of making an image ready.
pub trait ImageSource {
    /// Pulls `reference` into the store; a pinned digest already there never touches
    /// the registry.
    fn pull(&self, reference: &Reference) -> Result<ImageRecord, ImageError>;
    /// Checks the signature stored with the image (fetched at pull time) against `trust`.
    fn verify(&self, record: &ImageRecord, trust: &Trust) -> SignatureCheck;
    /// The image's config, from the store.
    fn config(
        &self,
        reference: &Reference,
        record: &ImageRecord,
    ) -> Result<ImageConfiguration, ImageError>;
    /// Unpacks the image's layers into snapshots; returns the overlay's lower
    /// directories for `chains`, top-most first.
    fn unpack(&self, record: &ImageRecord, chains: &[ChainId]) -> Result<Vec<PathBuf>, ImageError>;
}

/// The registry, through this node's content store and snapshots. `rt` is the
/// process's async runtime, blocked on for the pull.
pub struct Registry<'a> {
    pub store: &'a Store,
    pub snapshots: &'a SnapshotStore,
    pub client: &'a Client,
    pub rt: &'a tokio::runtime::Handle,
    /// Where each pull attempt is recorded (the agent's metrics), a failed one too,
    /// even when the registry could not be reached.
    pub pulls: Option<&'a PullLog>,
}

impl ImageSource for Registry<'_> {
    fn pull(&self, reference: &Reference) -> Result<ImageRecord, ImageError> {
        let opts = PullOptions::default();
        let bytes = Downloaded::default();
        let began = std::time::Instant::now();
        let pulled = self.rt.block_on(pull::pull(
            self.client,
            self.store,
            reference,
            &opts,
            &bytes,
        ));
        // A pinned image already in the store is not an attempt: not counted.
        if let Some(log) = self.pulls
            && !pulled.as_ref().is_ok_and(|p| p.from_store)
        {
            log.record(PullSample {
                ok: pulled.is_ok(),
                bytes: bytes.0.load(Ordering::Relaxed),
                seconds: began.elapsed().as_secs_f64(),
            });
        }
        pulled
            .map(|pulled| pulled.record)
            .map_err(|e| ImageError::Pull {
                reference: reference.to_string(),
                source: Arc::new(e),
            })
    }

    fn verify(&self, record: &ImageRecord, trust: &Trust) -> SignatureCheck {
        self.rt.block_on(exchange::verify_fresh(
            self.client,
            self.store,
            record,
            trust,
        ))
    }

    fn config(
        &self,
        reference: &Reference,
        record: &ImageRecord,
    ) -> Result<ImageConfiguration, ImageError> {
        let bytes = self
            .store
            .read_blob(&record.config.digest, MAX_CONFIG)
            .map_err(|e| ImageError::ReadConfig {
                reference: reference.to_string(),
                source: Arc::new(e),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Config {
            reference: reference.to_string(),
            source: Arc::new(e),
        })
    }

    fn unpack(&self, record: &ImageRecord, chains: &[ChainId]) -> Result<Vec<PathBuf>, ImageError> {
        prepare::unpack_snapshots(self.store, self.snapshots, record)
            .map_err(|e| ImageError::Prepare(Arc::new(e)))?;
        self.snapshots
            .lowerdirs(chains)
            .map_err(|e| ImageError::Snapshot(Arc::new(e)))
    }
}
