//! `state/gc.json`: when each unused object was first seen unused, so that an object
//! goes only once it has been unused for the grace, across collections and restarts.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{GcError, Kind};
use crate::runtime::state;
use crate::util::rfc3339;

/// The format of `state/gc.json`.
const SCHEMA_VERSION: u32 = 1;

/// When each unused object was first seen unused: `state/gc.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    schema_version: u32,
    /// RFC 3339 times, per kind and id.
    #[serde(default)]
    unused_since: BTreeMap<Kind, BTreeMap<String, String>>,
}

/// The ledger of one collection: what the last one saw unused, and what this one does.
#[derive(Debug)]
pub(super) struct Ledger {
    before: BTreeMap<Kind, BTreeMap<String, String>>,
    now_unused: BTreeMap<Kind, BTreeMap<String, String>>,
    grace: Duration,
    now: u64,
    /// Unused objects whose grace has not passed.
    pub(super) waiting: usize,
}

impl Ledger {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state").join("gc.json")
    }

    /// The ledger as the last collection left it. One that does not parse (or is of a
    /// newer berth) starts afresh, with a warning: that only delays removals.
    pub(super) fn load(state_dir: &Path, grace: Duration, now: u64) -> Result<Ledger, GcError> {
        let path = Self::path(state_dir);
        let before = match state::read_small(&path, 16 << 20) {
            Ok(bytes) => match serde_json::from_slice::<LedgerFile>(&bytes) {
                Ok(f) if f.schema_version <= SCHEMA_VERSION => f.unused_since,
                Ok(f) => {
                    tracing::warn!(target: "gc", path = %path.display(), version = f.schema_version, "written by a newer berth: grace starts afresh");
                    BTreeMap::new()
                }
                Err(e) => {
                    tracing::warn!(target: "gc", path = %path.display(), error = %e, "unreadable: grace starts afresh");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(GcError::ReadLedger { path, source }),
        };
        Ok(Ledger {
            before,
            now_unused: BTreeMap::new(),
            grace,
            now,
            waiting: 0,
        })
    }

    /// Notes `id` unused now; whether its grace has passed. A first sighting later than
    /// now (the clock was set back) counts as now, so nothing waits longer than a grace.
    pub(super) fn due(&mut self, kind: Kind, id: &str) -> bool {
        let since = self
            .before
            .get(&kind)
            .and_then(|m| m.get(id))
            .and_then(|t| rfc3339::parse_secs(t))
            .map_or(self.now, |t| t.min(self.now));
        self.now_unused
            .entry(kind)
            .or_default()
            .insert(id.to_string(), rfc3339::format(since));
        let due = Duration::from_secs(self.now.saturating_sub(since)) >= self.grace;
        if !due {
            self.waiting += 1;
        }
        due
    }

    /// `id` was removed.
    pub(super) fn forget(&mut self, kind: Kind, id: &str) {
        if let Some(m) = self.now_unused.get_mut(&kind) {
            m.remove(id);
        }
    }

    /// Writes what is unused now; what is in use again, or gone, is no longer in it.
    pub(super) fn store(mut self, state_dir: &Path) -> Result<(), GcError> {
        self.now_unused.retain(|_, m| !m.is_empty());
        let path = Self::path(state_dir);
        let file = LedgerFile {
            schema_version: SCHEMA_VERSION,
            unused_since: self.now_unused,
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| GcError::WriteLedger {
            path: path.clone(),
            source: e.into(),
        })?;
        state::write_atomic(&path, &bytes).map_err(|source| GcError::WriteLedger { path, source })
    }
}
