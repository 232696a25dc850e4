//! The one error type of layer unpacking. Every variant names the layer (the blob
//! digest or another label the caller chose) and, where there is one, the entry path.

use std::io;

/// Which configured limit a layer exceeded (see [`super::Limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `max_entries`: too many tar entries.
    Entries,
    /// `max_path_len`: an entry name or link target too long.
    PathLength,
    /// `max_uncompressed_bytes`: the uncompressed stream grew too large.
    UncompressedBytes,
    /// `max_ratio`: the uncompressed stream grew too large for its compressed size.
    Ratio,
    /// `max_header_bytes`: PAX or GNU long-name records too large.
    HeaderBytes,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Entries => "max_entries",
            LimitKind::PathLength => "max_path_len",
            LimitKind::UncompressedBytes => "max_uncompressed_bytes",
            LimitKind::Ratio => "max_ratio",
            LimitKind::HeaderBytes => "max_header_bytes",
        })
    }
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer exceeded one of the configured limits; nothing of it may be used.
    #[error("layer {layer}: limit {limit} exceeded (limit {max})")]
    Limit {
        layer: String,
        limit: LimitKind,
        max: u64,
    },
    /// An entry name or hard-link target that would leave the root, or is malformed.
    #[error("layer {layer}: unsafe or invalid path {path:?}: {reason}")]
    UnsafePath {
        layer: String,
        path: String,
        reason: &'static str,
    },
    /// A whiteout entry that names nothing (`.wh.` alone).
    #[error("layer {layer}: invalid whiteout {path:?}")]
    InvalidWhiteout { layer: String, path: String },
    /// A tar entry type berth does not unpack (for example a GNU volume header).
    #[error("layer {layer}: unsupported tar entry type {kind:?} at {path:?}")]
    UnsupportedEntry {
        layer: String,
        path: String,
        kind: char,
    },
    /// A hard link whose target does not exist in the root or is a directory.
    #[error("layer {layer}: hard link {path:?} to {target:?}: {reason}")]
    BadHardlink {
        layer: String,
        path: String,
        target: String,
        reason: &'static str,
    },
    /// The tar stream itself is corrupt (bad header, truncated data, bad field).
    #[error("layer {layer}: malformed archive at {path:?}")]
    Archive {
        layer: String,
        path: String,
        #[source]
        source: io::Error,
    },
    /// The compressed stream could not be read or decompressed.
    #[error("layer {layer}: reading or decompressing the blob")]
    Read {
        layer: String,
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on the destination failed.
    #[error("layer {layer}: {op} {path:?}")]
    Fs {
        layer: String,
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// The uncompressed digest differs from the image config's `rootfs.diff_ids`.
    #[error("layer {layer}: diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
}
