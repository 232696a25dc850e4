//! Streaming a blob into the store with verification and resume.
//!
//! The body is written to `ingest/<hex>.partial` while SHA-256 and the byte count are
//! computed; only a body of exactly the descriptor's size and digest is renamed into
//! `blobs/`. A connection that breaks mid-body keeps the partial file; the next attempt
//! (in this pull, after a backoff, or in a later pull) re-hashes what is there and asks
//! for the rest with `Range: bytes=<len>-`. A `200` reply instead of `206` means the
//! server ignored the range: the file is truncated and the download restarts. The
//! digest is always computed over the whole blob, so a resumed download is verified
//! exactly like a fresh one; if a resumed blob does not verify, it is fetched once more
//! from byte 0 before the mismatch is reported.

use std::future::Future;
use std::io::SeekFrom;
use std::os::unix::fs::OpenOptionsExt;

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{Store, StoreError, io, sync_dir};
use crate::image::digest::Digest;
use crate::image::registry::retry::{RetryPolicy, jitter_seed};
use crate::image::registry::{BlobBody, RegistryError, Target};

/// How a blob got into the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// It was there already.
    Present,
    /// It was downloaded (`resumed_from` > 0 when an earlier partial copy was reused).
    Downloaded { resumed_from: u64 },
}

impl Store {
    /// Downloads the blob `target.reference` of `size` bytes, calling `open(offset)`
    /// for each request and `progress(bytes)` as bytes arrive (including bytes found
    /// in a partial file).
    pub async fn ingest<F, Fut>(
        &self,
        target: &Target,
        digest: &Digest,
        size: u64,
        retry: RetryPolicy,
        open: F,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Ingested, StoreError>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<BlobBody, RegistryError>>,
    {
        if self.has_blob(digest) {
            return Ok(Ingested::Present);
        }
        let path = self.ingest_dir().join(format!("{}.partial", digest.hex()));
        let file = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(crate::runtime::state::PRIVATE_FILE)
                    .open(&p)?;
                // Another pull of the same blob finishes first; then we find it stored.
                f.lock()?;
                Ok::<_, std::io::Error>(f)
            })
            .await
            .map_err(|e| io("lock", &path)(std::io::Error::other(e)))?
            .map_err(io("open", &path))?
        };
        if self.has_blob(digest) {
            let _ = std::fs::remove_file(&path);
            return Ok(Ingested::Present);
        }
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut offset = file.metadata().await.map_err(io("stat", &path))?.len();
        if offset > size {
            offset = 0;
            file.set_len(0).await.map_err(io("truncate", &path))?;
        }
        // Re-hash what an earlier attempt left behind.
        if offset > 0 {
            let mut buf = vec![0u8; 1 << 16];
            let mut left = offset;
            while left > 0 {
                let n = file.read(&mut buf).await.map_err(io("read", &path))?;
                if n == 0 {
                    break;
                }
                let n = n.min(left as usize);
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            progress(offset);
            tracing::info!(%digest, offset, "resuming an interrupted download");
        }
        let resumed_from = offset;
        let mut ranged = offset > 0;
        let mut refetched = false;
        let mut breaks = 0u32;
        loop {
            let body = open(offset).await?;
            if offset > 0 && !body.partial {
                tracing::debug!(%digest, "server ignored the range request, starting over");
                offset = 0;
                hasher = Sha256::new();
                file.set_len(0).await.map_err(io("truncate", &path))?;
            }
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(io("seek", &path))?;
            let mut stream = body.stream;
            let mut broken = None;
            while let Some(item) = stream.next().await {
                let chunk = match item {
                    Ok(c) => c,
                    // The registry had its time (`runtime.pull_idle_timeout`): keep what
                    // arrived for the next pass to resume, and let this pass move on.
                    Err(e) if e.is_timeout() => {
                        file.flush().await.map_err(io("write", &path))?;
                        return Err(e.into());
                    }
                    Err(e) if e.is_transient() => {
                        broken = Some(e);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                };
                let len = chunk.len() as u64;
                if offset + len > size {
                    drop(file);
                    let _ = std::fs::remove_file(&path);
                    return Err(StoreError::SizeMismatch {
                        target: target.clone(),
                        expected: size,
                        actual: offset + len,
                    });
                }
                file.write_all(&chunk).await.map_err(io("write", &path))?;
                hasher.update(&chunk);
                offset += len;
                progress(len);
            }
            if let Some(e) = broken {
                file.flush().await.map_err(io("write", &path))?;
                breaks += 1;
                if breaks >= retry.attempts {
                    return Err(e.into());
                }
                let delay = retry.delay(breaks - 1, None, jitter_seed());
                tracing::warn!(%digest, offset, ?delay, error = %e, "download interrupted, resuming");
                tokio::time::sleep(delay).await;
                ranged = true;
                continue;
            }
            if offset != size {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(StoreError::SizeMismatch {
                    target: target.clone(),
                    expected: size,
                    actual: offset,
                });
            }
            let actual = Digest::from_hasher(std::mem::take(&mut hasher));
            if actual != *digest {
                if ranged && !refetched {
                    tracing::warn!(%digest, "resumed download does not verify, fetching it again from the start");
                    refetched = true;
                    ranged = false;
                    offset = 0;
                    file.set_len(0).await.map_err(io("truncate", &path))?;
                    continue;
                }
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(StoreError::DigestMismatch {
                    target: target.clone(),
                    actual,
                });
            }
            file.sync_all().await.map_err(io("fsync", &path))?;
            let dest = self.blob_path(digest);
            tokio::fs::rename(&path, &dest)
                .await
                .map_err(io("rename into", &dest))?;
            sync_dir(&dest)?;
            return Ok(Ingested::Downloaded { resumed_from });
        }
    }
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod tests;
