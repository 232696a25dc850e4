use std::sync::Mutex;

use bytes::Bytes;
use futures_util::stream;

use super::*;
use crate::image::registry::RegistryError;

/// A fake registry blob endpoint: serves `data`, optionally breaking the first
/// response after `cut` bytes, optionally ignoring Range; records requested offsets.
struct Fake {
    data: Vec<u8>,
    cut: Mutex<Option<usize>>,
    honour_range: bool,
    offsets: Mutex<Vec<u64>>,
}

impl Fake {
    fn new(data: &[u8]) -> Fake {
        Fake {
            data: data.to_vec(),
            cut: Mutex::new(None),
            honour_range: true,
            offsets: Mutex::default(),
        }
    }

    async fn open(&self, offset: u64) -> Result<BlobBody, RegistryError> {
        self.offsets.lock().unwrap().push(offset);
        let (partial, start) = if offset > 0 && self.honour_range {
            (true, offset as usize)
        } else {
            (false, 0)
        };
        let body = self.data[start..].to_vec();
        let cut = self.cut.lock().unwrap().take();
        let mut items: Vec<Result<Bytes, RegistryError>> = body
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if let Some(cut) = cut {
            items.truncate(cut / 7);
            items.push(Err(RegistryError::Status {
                target: target(),
                status: 503,
                detail: String::new(),
            }));
        }
        Ok(BlobBody {
            partial,
            stream: stream::iter(items).boxed(),
        })
    }
}

fn target() -> Target {
    Target::new("127.0.0.1:5000", "app", "blob")
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        base_delay: std::time::Duration::from_millis(1),
        ..RetryPolicy::default()
    }
}

const DATA: &[u8] = b"the quick brown fox jumps over the lazy dog, many times over: 0123456789";

fn setup() -> (tempfile::TempDir, Store, Digest) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store, Digest::of(DATA))
}

fn no_progress() -> impl Fn(u64) + Send + Sync {
    |_| {}
}

#[tokio::test]
async fn fresh_download_verifies_and_commits() {
    let (_d, store, digest) = setup();
    let fake = Fake::new(DATA);
    let got = store
        .ingest(
            &target(),
            &digest,
            DATA.len() as u64,
            fast(),
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(got, Ingested::Downloaded { resumed_from: 0 });
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), DATA);
    assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    let again = store
        .ingest(
            &target(),
            &digest,
            DATA.len() as u64,
            fast(),
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(again, Ingested::Present);
    assert_eq!(*fake.offsets.lock().unwrap(), vec![0]);
}

#[tokio::test]
async fn broken_connection_resumes_with_range() {
    let (_d, store, digest) = setup();
    let fake = Fake::new(DATA);
    *fake.cut.lock().unwrap() = Some(28);
    let total = std::sync::atomic::AtomicU64::new(0);
    let progress = |n: u64| {
        total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    };
    store
        .ingest(
            &target(),
            &digest,
            DATA.len() as u64,
            fast(),
            |o| fake.open(o),
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(*fake.offsets.lock().unwrap(), vec![0, 28]);
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), DATA);
    assert_eq!(total.into_inner(), DATA.len() as u64);
}

#[tokio::test]
async fn server_ignoring_range_restarts() {
    let (_d, store, digest) = setup();
    let mut fake = Fake::new(DATA);
    fake.honour_range = false;
    *fake.cut.lock().unwrap() = Some(14);
    store
        .ingest(
            &target(),
            &digest,
            DATA.len() as u64,
            fast(),
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(*fake.offsets.lock().unwrap(), vec![0, 14]);
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), DATA);
}

#[tokio::test]
async fn partial_file_from_an_earlier_pull_is_reused() {
    let (_d, store, digest) = setup();
    let partial = store.ingest_dir().join(format!("{}.partial", digest.hex()));
    std::fs::write(&partial, &DATA[..30]).unwrap();
    let fake = Fake::new(DATA);
    let got = store
        .ingest(
            &target(),
            &digest,
            DATA.len() as u64,
            fast(),
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(got, Ingested::Downloaded { resumed_from: 30 });
    assert_eq!(*fake.offsets.lock().unwrap(), vec![30]);
    assert!(!partial.exists());
}

#[tokio::test]
async fn corrupt_partial_is_refetched_from_zero() {
    let (_d, store, digest) = setup();
    let partial = store.ingest_dir().join(format!("{}.partial", digest.hex()));
    std::fs::write(&partial, b"garbage garbage garbage").unwrap();
    let fake = Fake::new(DATA);
    store
        .ingest(
            &target(),
            &digest,
            DATA.len() as u64,
            fast(),
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(*fake.offsets.lock().unwrap(), vec![23, 0]);
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), DATA);
}

#[tokio::test]
async fn wrong_bytes_are_rejected_and_nothing_is_stored() {
    let (_d, store, _) = setup();
    let claimed = Digest::of(b"what the manifest promised");
    let fake = Fake::new(DATA);
    let t = Target::new("127.0.0.1:5000", "app", claimed.as_str());
    let err = store
        .ingest(
            &t,
            &claimed,
            DATA.len() as u64,
            fast(),
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert!(err.is_integrity());
    let msg = err.to_string();
    assert!(
        msg.contains(claimed.as_str()) && msg.contains("127.0.0.1:5000"),
        "{msg}"
    );
    assert!(!store.has_blob(&claimed));
    assert_eq!(std::fs::read_dir(store.ingest_dir()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(store.blobs_dir()).unwrap().count(), 0);

    // More bytes than the descriptor says: rejected as soon as they arrive.
    let digest = Digest::of(DATA);
    let err = store
        .ingest(
            &target(),
            &digest,
            10,
            fast(),
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SizeMismatch { expected: 10, .. }),
        "{err}"
    );
    assert!(!store.has_blob(&digest));
}

#[tokio::test]
async fn gives_up_after_the_retry_budget_and_keeps_the_partial() {
    let (_d, store, digest) = setup();
    let fake = Fake::new(DATA);
    let policy = RetryPolicy {
        attempts: 1,
        ..fast()
    };
    *fake.cut.lock().unwrap() = Some(21);
    let err = store
        .ingest(
            &target(),
            &digest,
            DATA.len() as u64,
            policy,
            |o| fake.open(o),
            &no_progress(),
        )
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let partial = store.ingest_dir().join(format!("{}.partial", digest.hex()));
    assert_eq!(std::fs::read(&partial).unwrap(), &DATA[..21]);
}
