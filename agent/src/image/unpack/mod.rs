//! Unpacking OCI/Docker image layers into a directory, safely and as containerd does.
//!
//! Contract:
//! - [`unpack_layer`] streams one layer blob (gzip, zstd or plain tar, chosen by
//!   media type or, for unknown types, by magic bytes), hashes the uncompressed bytes
//!   and returns the diff_id with counts in [`LayerStats`]; the caller compares it to
//!   the config's `rootfs.diff_ids` (or uses [`verify_diff_id`]).
//! - Nothing is written outside the destination: every path is resolved inside it
//!   (`openat2(RESOLVE_IN_ROOT)`, see `root.rs`), `..` and absolute names are refused,
//!   hard links must point inside, and final components are never followed.
//! - Metadata follows containerd: numeric owner, then mode (setuid survives), xattrs
//!   (`user.*`, `security.capability`), mtimes; devices, fifos, symlinks, hard links.
//! - Whiteouts per [`WhiteoutMode`]: overlayfs format for snapshots, or applied
//!   (deleting) for a flattened rootfs identical to `umoci unpack`'s.
//! - [`Limits`] bound entries, path length, expansion and header sizes; crossing one
//!   fails with [`UnpackError::Limit`] naming the limit and the layer. The destination
//!   may then hold a partial tree: unpack into a temporary directory and rename on
//!   success (`image::snapshot` does).
//! - The destination's filesystem is synced once per layer (`syncfs`), not per file.
//!
//! `tar` is used only to read the archive; its `unpack` resolves paths against the
//! host and must not be used for image layers.

mod apply;
mod error;
mod meta;
mod path;
mod root;
mod stream;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_meta;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_snapshot;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_umoci;
mod whiteout;

use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

pub use error::{LimitKind, UnpackError};
pub use root::Resolver;
pub use stream::Compression;

use apply::Applier;
use stream::{LayerStream, Meter};

/// How whiteout entries are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// One layer per directory, for overlayfs lowerdirs: `.wh.NAME` becomes a 0/0
    /// character device, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y`.
    #[default]
    Snapshot,
    /// Layers applied in order into one directory: whiteouts delete.
    Flatten,
}

/// Bounds on what one layer may do. Crossing any fails the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most tar entries (headers of files, directories, links, whiteouts …) in one
    /// layer. Large distribution images hold around 100k files.
    pub max_entries: u64,
    /// Longest entry name or link target, in bytes (Linux `PATH_MAX` is 4096).
    pub max_path_len: usize,
    /// Most uncompressed bytes of one layer: of the tar stream, and of the files it
    /// writes (a GNU sparse entry writes more than the stream holds).
    pub max_uncompressed_bytes: u64,
    /// Most uncompressed bytes per compressed byte, once past `ratio_grace_bytes`.
    /// Real layers compress 2–10×; only long runs of one byte reach the hundreds.
    pub max_ratio: u64,
    /// Uncompressed bytes allowed before `max_ratio` applies, so small layers of
    /// zeros pass.
    pub ratio_grace_bytes: u64,
    /// Most bytes of PAX records and GNU long names read for one entry (they are
    /// held in memory).
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_path_len: 4096,
            max_uncompressed_bytes: 32 << 30,
            max_ratio: 500,
            ratio_grace_bytes: 64 << 20,
            max_header_bytes: 1 << 20,
        }
    }
}

/// Options of [`unpack_layer`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Snapshot (overlayfs) or flatten whiteouts.
    pub mode: WhiteoutMode,
    pub limits: Limits,
    /// Skip character and block devices (restricted hosts: the runtime provides
    /// `/dev`). Fifos are still created.
    pub skip_device_nodes: bool,
    /// Path resolver; [`Resolver::Auto`] except on kernels without `openat2` or in tests.
    pub resolver: Resolver,
}

/// What unpacking one layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    pub compression: Compression,
    /// Tar entries read (extension headers such as PAX records not counted).
    pub entries: u64,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
}

/// Unpacks one layer blob into `dest`, an existing directory. `layer` names the layer
/// in errors (its blob digest). See the module documentation for the guarantees.
pub fn unpack_layer<R: Read>(
    layer: &str,
    media_type: &str,
    blob: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let meter = Rc::new(Meter::default());
    let read_err = |source: io::Error, meter: &Meter| match meter.hit() {
        Some(limit) => limit_err(layer, limit, &opts.limits),
        None => UnpackError::Read {
            layer: layer.to_owned(),
            source,
        },
    };
    let stream = LayerStream::open(blob, media_type, opts.limits, meter.clone())
        .map_err(|e| read_err(e, &meter))?;
    let root = root::Root::open(dest, opts.resolver).map_err(|e| UnpackError::Fs {
        layer: layer.to_owned(),
        op: "open destination",
        path: dest.display().to_string(),
        source: e.into(),
    })?;
    let mut applier = Applier::new(&root, layer, opts);
    let mut archive = tar::Archive::new(stream);
    let mut count: u64 = 0;
    // Some writers (umoci's `insert`) end a layer right after the last entry's data,
    // without padding or end-of-archive blocks. Such an error at the very end of the
    // stream is accepted; the diff_id still covers every byte.
    let mut truncated_trailer = None;
    {
        let mut entries = archive.entries().map_err(|e| read_err(e, &meter))?;
        let mut last = String::from("(start of archive)");
        let mut end_of_data = 0;
        loop {
            meter.begin_header();
            let next = entries.next();
            meter.end_header();
            let mut entry = match next {
                None => break,
                Some(Ok(entry)) => entry,
                Some(Err(source)) => {
                    let err = match meter.hit() {
                        Some(limit) => return Err(limit_err(layer, limit, &opts.limits)),
                        None => UnpackError::Archive {
                            layer: layer.to_owned(),
                            path: format!("after {last}"),
                            source,
                        },
                    };
                    // Accepted only when nothing at all followed the last entry's data.
                    if count == 0 || meter.uncompressed() != end_of_data {
                        return Err(err);
                    }
                    truncated_trailer = Some(err);
                    break;
                }
            };
            count += 1;
            if count > opts.limits.max_entries {
                return Err(limit_err(layer, LimitKind::Entries, &opts.limits));
            }
            last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let applied = applier.apply(&mut entry).and_then(|()| {
                // Read what the entry left (data of links, skipped devices), so the
                // next header read holds only headers.
                io::copy(&mut entry, &mut io::sink())
                    .map(drop)
                    .map_err(|source| UnpackError::Archive {
                        layer: layer.to_owned(),
                        path: last.clone(),
                        source,
                    })
            });
            if let Err(e) = applied {
                return Err(match meter.hit() {
                    Some(limit) => limit_err(layer, limit, &opts.limits),
                    None => e,
                });
            }
            end_of_data = meter.uncompressed();
        }
    }
    // The diff_id covers the whole stream, including what follows the end-of-archive
    // blocks.
    let mut stream = archive.into_inner();
    let rest = io::copy(&mut stream, &mut io::sink()).map_err(|e| read_err(e, &meter))?;
    if let Some(err) = truncated_trailer
        && rest > 0
    {
        return Err(err);
    }
    applier.finish()?;
    rustix::fs::syncfs(root.fd()).map_err(|e| UnpackError::Fs {
        layer: layer.to_owned(),
        op: "sync",
        path: dest.display().to_string(),
        source: e.into(),
    })?;
    Ok(LayerStats {
        diff_id: stream.digest(),
        compression: stream.compression(),
        entries: count,
        compressed_bytes: meter.compressed(),
        uncompressed_bytes: meter.uncompressed(),
    })
}

/// Checks a layer's computed diff_id against the image config's.
pub fn verify_diff_id(layer: &str, stats: &LayerStats, expected: &str) -> Result<(), UnpackError> {
    if stats.diff_id == expected {
        Ok(())
    } else {
        Err(UnpackError::DiffIdMismatch {
            layer: layer.to_owned(),
            expected: expected.to_owned(),
            actual: stats.diff_id.clone(),
        })
    }
}

fn limit_err(layer: &str, limit: LimitKind, limits: &Limits) -> UnpackError {
    let max = match limit {
        LimitKind::Entries => limits.max_entries,
        LimitKind::PathLength => limits.max_path_len as u64,
        LimitKind::UncompressedBytes => limits.max_uncompressed_bytes,
        LimitKind::Ratio => limits.max_ratio,
        LimitKind::HeaderBytes => limits.max_header_bytes,
    };
    UnpackError::Limit {
        layer: layer.to_owned(),
        limit,
        max,
    }
}
