//! Image records: what a reference resolved to when it was pulled, and every blob
//! that image needs (indexes, manifest, config, layers, its cosign signature and
//! Sigstore bundles).
//!
//! One JSON file per reference under `content/images/` (named by the SHA-256 of the
//! reference, so two pulls of different references never write the same file), each
//! written atomically. Garbage collection keeps exactly the blobs some record names.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, io, write_atomic};
use crate::image::digest::Digest;
use crate::image::platform::Platform;
use crate::image::registry::referrers::ReferrersSource;

/// A blob an image refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A layer: the compressed blob and the digest of its uncompressed tar (`diff_id`),
/// which the unpacker must verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
}

/// The legacy cosign signature stored with an image (`sha256-<hex>.sig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// The tag it was found under.
    pub tag: String,
    /// The digest it signs (the image's top digest, or its platform manifest).
    pub signed: Digest,
    pub manifest: BlobRef,
    /// Its config and layers.
    pub blobs: Vec<BlobRef>,
    /// When it was fetched again after the pull, and by what; `None` when it is the
    /// one fetched at pull time ([`ImageRecord::pulled_at`]), as in every record
    /// written before berth refreshed signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<Refreshed>,
}

/// A Sigstore bundle stored with an image (cosign 3's default layout): the referrer
/// manifest and its one bundle layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// The digest it was found for (the image's top digest, or its platform manifest).
    pub signed: Digest,
    /// How it was found: `referrers` (the registry's API) or `tag` (`sha256-<hex>`).
    pub found: ReferrersSource,
    /// The referrer manifest.
    pub manifest: BlobRef,
    /// Its layer: the bundle JSON.
    pub bundle: BlobRef,
    /// When it was fetched again after the pull, and by what (as for the legacy one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<Refreshed>,
}

/// A stored signature fetched again after the pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refreshed {
    pub by: RefreshedBy,
    /// RFC 3339 time of the fetch.
    pub at: String,
}

/// What fetched a stored signature again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshedBy {
    /// `berth sign`, right after it pushed a signature of the image.
    Sign,
    /// `berth image verify`, when the store had no signature of the image.
    Verify,
    /// A pass, when what the store held did not verify: signed since the pull, or its
    /// signatures could not be fetched then.
    Pass,
}

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The normalised reference it was pulled as (`registry/repo:tag`, `…@sha256:…`).
    pub reference: String,
    /// `registry/repository`.
    pub name: String,
    /// The digest the reference resolved to: an index, or the manifest itself.
    pub digest: Digest,
    pub media_type: String,
    /// Indexes walked to reach the manifest (empty for a single-platform image).
    #[serde(default)]
    pub indexes: Vec<BlobRef>,
    /// The image manifest for this host's platform.
    pub manifest: BlobRef,
    pub platform: Platform,
    pub config: BlobRef,
    pub layers: Vec<LayerRecord>,
    #[serde(default)]
    pub signature: Option<SignatureRecord>,
    /// Sigstore bundles of the image (none in records written before berth read them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundles: Vec<BundleRecord>,
    /// RFC 3339 time of the pull.
    pub pulled_at: String,
}

impl ImageRecord {
    /// Every blob this image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.indexes
            .iter()
            .map(|b| &b.digest)
            .chain([&self.manifest.digest, &self.config.digest])
            .chain(self.layers.iter().map(|l| &l.digest))
            .chain(self.signature.iter().flat_map(|s| {
                std::iter::once(&s.manifest.digest).chain(s.blobs.iter().map(|b| &b.digest))
            }))
            .chain(
                self.bundles
                    .iter()
                    .flat_map(|b| [&b.manifest.digest, &b.bundle.digest]),
            )
    }

    /// Compressed size of the layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub removed: Vec<Digest>,
    pub bytes: u64,
    /// Interrupted downloads discarded.
    pub partials: usize,
}

impl Store {
    fn record_path(&self, reference: &str) -> PathBuf {
        self.images_dir()
            .join(format!("{}.json", Digest::of(reference.as_bytes()).hex()))
    }

    /// Writes (or replaces) the record of `record.reference`.
    pub fn put_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.reference);
        let json = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Record {
            path: path.clone(),
            source,
        })?;
        write_atomic(&self.images_dir(), &path, &json)
    }

    /// All records, sorted by reference.
    pub fn records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.images_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
            let path = entry.map_err(io("list", &dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                // Removed by a concurrent `rm` between listing and reading.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &path)(e)),
            };
            let record = serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::Record { path, source })?;
            out.push(record);
        }
        out.sort_by(|a: &ImageRecord, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// The record stored under exactly this normalised reference.
    pub fn record(&self, reference: &str) -> Result<Option<ImageRecord>, StoreError> {
        let path = self.record_path(reference);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Record { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Deletes the record of `reference`; true if there was one.
    pub fn remove_record(&self, reference: &str) -> Result<bool, StoreError> {
        let path = self.record_path(reference);
        match std::fs::remove_file(&path) {
            Ok(()) => super::sync_dir(&path).map(|_| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Removes blobs no record refers to. With `candidates`, only those are
    /// considered (`image rm`); without, every blob and interrupted download is
    /// (`image prune`). The caller holds the exclusive lock.
    pub fn gc(&self, candidates: Option<&BTreeSet<Digest>>) -> Result<GcReport, StoreError> {
        let keep: BTreeSet<Digest> = self
            .records()?
            .iter()
            .flat_map(|r| r.blobs().cloned())
            .collect();
        let mut report = GcReport::default();
        let dir = self.blobs_dir();
        let mut names: Vec<Digest> = Vec::new();
        match candidates {
            Some(c) => names.extend(c.iter().cloned()),
            None => {
                for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
                    let name = entry.map_err(io("list", &dir))?.file_name();
                    match Digest::parse(&format!("sha256:{}", name.to_string_lossy())) {
                        Ok(d) => names.push(d),
                        Err(_) => {
                            tracing::warn!(file = %name.to_string_lossy(), "stray file in the blob store left alone")
                        }
                    }
                }
            }
        }
        names.sort();
        for digest in names.into_iter().filter(|d| !keep.contains(d)) {
            let path = self.blob_path(&digest);
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("stat", &path)(e)),
            };
            std::fs::remove_file(&path).map_err(io("remove", &path))?;
            report.bytes += size;
            report.removed.push(digest);
        }
        if candidates.is_none() {
            let ingest = self.ingest_dir();
            for entry in std::fs::read_dir(&ingest).map_err(io("list", &ingest))? {
                let path = entry.map_err(io("list", &ingest))?.path();
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                report.partials += 1;
            }
        }
        if !report.removed.is_empty() {
            super::sync_dir(&self.blob_path(&Digest::of(b"")))?;
        }
        Ok(report)
    }
}

/// A record as tests need one: `reference` with these blobs, pulled at a fixed time.
#[cfg(test)]
pub fn sample(
    reference: &str,
    manifest: BlobRef,
    config: BlobRef,
    layers: Vec<LayerRecord>,
) -> ImageRecord {
    ImageRecord {
        reference: reference.into(),
        name: "r/a".into(),
        digest: manifest.digest.clone(),
        media_type: "m".into(),
        indexes: vec![],
        manifest,
        platform: Platform::new("linux", "amd64", None),
        config,
        layers,
        signature: None,
        bundles: vec![],
        pulled_at: "2026-11-22T00:00:00Z".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::registry::Target;

    fn blob(store: &Store, data: &[u8]) -> BlobRef {
        let d = Digest::of(data);
        let t = Target::new("r", "a", &d.to_string());
        store.write_blob(&d, data, &t).unwrap();
        BlobRef {
            digest: d,
            size: data.len() as u64,
            media_type: "x".into(),
        }
    }

    fn record(store: &Store, reference: &str, layer: &[u8]) -> ImageRecord {
        let manifest = blob(store, format!("manifest {reference}").as_bytes());
        let config = blob(store, format!("config {reference}").as_bytes());
        let l = blob(store, layer);
        let layer = LayerRecord {
            digest: l.digest,
            size: l.size,
            media_type: "t".into(),
            diff_id: Digest::of(b"tar"),
        };
        sample(reference, manifest, config, vec![layer])
    }

    /// A record written before signatures were refreshed reads as fetched at pull
    /// time; a refreshed one keeps when and by what.
    #[test]
    fn signature_records_old_and_refreshed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = record(&store, "r/a:1", b"layer");
        let sig = blob(&store, b"signature manifest");
        r.signature = Some(SignatureRecord {
            tag: "sha256-x.sig".into(),
            signed: r.digest.clone(),
            manifest: sig,
            blobs: vec![],
            refreshed: None,
        });
        let mut json = serde_json::to_value(&r).unwrap();
        assert!(json["signature"].get("refreshed").is_none(), "{json}");
        json["signature"]
            .as_object_mut()
            .unwrap()
            .remove("refreshed");
        let old: ImageRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old, r);

        r.signature.as_mut().unwrap().refreshed = Some(Refreshed {
            by: RefreshedBy::Sign,
            at: "2026-11-23T08:15:00Z".into(),
        });
        store.put_record(&r).unwrap();
        let back = store.record("r/a:1").unwrap().unwrap();
        assert_eq!(back, r);
        let json = serde_json::to_value(&back).unwrap();
        assert_eq!(json["signature"]["refreshed"]["by"], "sign");
    }

    /// A record written before bundles were stored reads with none, and writes none;
    /// one with bundles keeps them, and garbage collection keeps their blobs.
    #[test]
    fn bundle_records_old_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = record(&store, "r/a:1", b"layer");
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("bundles").is_none(), "{json}");
        let old: ImageRecord = serde_json::from_value(json).unwrap();
        assert!(old.bundles.is_empty());

        let manifest = blob(&store, b"referrer manifest");
        let bundle = blob(&store, b"bundle json");
        r.bundles.push(BundleRecord {
            signed: r.digest.clone(),
            found: ReferrersSource::Tag,
            manifest: manifest.clone(),
            bundle: bundle.clone(),
            refreshed: None,
        });
        store.put_record(&r).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["bundles"][0]["found"], "tag");
        assert!(json["bundles"][0].get("refreshed").is_none(), "{json}");
        assert_eq!(store.record("r/a:1").unwrap().unwrap(), r);
        let blobs: BTreeSet<&Digest> = r.blobs().collect();
        assert!(blobs.contains(&manifest.digest) && blobs.contains(&bundle.digest));
        store.gc(None).unwrap();
        assert!(store.has_blob(&manifest.digest) && store.has_blob(&bundle.digest));
    }

    #[test]
    fn records_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = record(&store, "r/a:1", b"shared layer");
        let b = record(&store, "r/a:2", b"shared layer");
        store.put_record(&a).unwrap();
        store.put_record(&b).unwrap();
        let stray = blob(&store, b"nobody's");
        std::fs::write(store.ingest_dir().join("x.partial"), b"half").unwrap();
        assert_eq!(store.records().unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(store.record("r/a:1").unwrap(), Some(a.clone()));

        // rm of a: its own manifest and config go, the shared layer stays.
        assert!(store.remove_record("r/a:1").unwrap());
        assert!(!store.remove_record("r/a:1").unwrap());
        let own: BTreeSet<Digest> = a.blobs().cloned().collect();
        let report = store.gc(Some(&own)).unwrap();
        assert_eq!(report.removed.len(), 2);
        assert!(!store.has_blob(&a.manifest.digest) && !store.has_blob(&a.config.digest));
        assert!(store.has_blob(&a.layers[0].digest));
        assert!(
            store.has_blob(&stray.digest),
            "rm leaves unrelated blobs to prune"
        );

        // prune: the stray blob and the partial go, b's blobs stay.
        let report = store.gc(None).unwrap();
        assert_eq!(report.removed, vec![stray.digest.clone()]);
        assert_eq!(report.partials, 1);
        for d in b.blobs() {
            assert!(store.has_blob(d), "{d}");
        }
    }
}
