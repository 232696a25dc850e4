//! Small versioned JSON records of the state directory (`state/applied.json`,
//! `state/agent.json`): read within a size cap without following a link, a newer
//! `schema_version` refused rather than misread, written crash-safely.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How big such a record may be.
const MAX_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VersionedError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{}: written by a newer berth (schema version {found}; this build reads up to {supported})",
        .path.display()
    )]
    Newer {
        path: PathBuf,
        found: u64,
        supported: u32,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The record at `path`, or none when there is none; `supported` is the newest
/// `schema_version` this build reads (a record without one is version 0).
pub fn load<T: DeserializeOwned>(path: &Path, supported: u32) -> Result<Option<T>, VersionedError> {
    let bytes = match crate::runtime::state::read_small(path, MAX_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(VersionedError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let parse = |source| VersionedError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(parse)?;
    let found = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if found > u64::from(supported) {
        return Err(VersionedError::Newer {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    serde_json::from_value(value).map(Some).map_err(parse)
}

/// Writes `value` at `path` (temp file, fsync, rename, directory fsync; mode 0600).
pub fn store<T: Serialize>(path: &Path, value: &T) -> Result<(), VersionedError> {
    let write = |source| VersionedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| write(io::Error::other(e)))?;
    crate::runtime::state::write_atomic(path, &bytes).map_err(write)
}
