//! Named volumes: directories under `<state>/volumes/<name>/`, created on first use,
//! owned by the user of the first container that mounts them (as Docker does for an
//! empty volume), and kept across container recreation. berth removes a volume only
//! when asked (`berth apply --prune-volumes`): data is never deleted implicitly.
//!
//! `volumes/` is 0700, so no local user but root reaches a volume's data. A volume's
//! own directory is 0755, as Docker's `_data`: it is the mount's root inside the
//! container, where the container's users need it (runc bind-mounts it as root, before
//! it switches to the container's user, so nobody in the container walks `volumes/`).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::runtime::state;

/// A volume's directory (the root of the mount in the container).
const VOLUME_DIR: u32 = 0o755;

/// Why a volume could not be prepared or removed.
#[derive(Debug, thiserror::Error)]
#[error("volume `{name}`: cannot {op} {}", path.display())]
pub struct VolumeError {
    pub name: String,
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl VolumeError {
    /// Whether trying again later may work (a full disk or quota).
    pub fn is_transient(&self) -> bool {
        state::io_is_transient(&self.source)
    }
}

/// The directory of volume `name`.
pub fn volume_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("volumes").join(name)
}

/// Creates the volume if needed and, while it is still empty and root-owned, hands it
/// to `uid:gid` so a non-root container can write to it. Returns its path.
pub fn ensure(
    state_dir: &Path,
    name: &str,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, VolumeError> {
    let path = volume_path(state_dir, name);
    let err = |op: &'static str, path: &Path| {
        let (name, path) = (name.to_string(), path.to_path_buf());
        move |source| VolumeError {
            name,
            op,
            path,
            source,
        }
    };
    let parent = state_dir.join("volumes");
    state::private_dir(&parent).map_err(err("create", &parent))?;
    state::create_dir(&path, VOLUME_DIR).map_err(err("create", &path))?;
    if let Some((uid, gid)) = owner {
        let meta = fs::metadata(&path).map_err(err("stat", &path))?;
        let empty = fs::read_dir(&path)
            .map_err(err("read", &path))?
            .next()
            .is_none();
        if empty && meta.uid() == 0 && meta.gid() == 0 && (uid, gid) != (0, 0) {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(err("chown", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(VOLUME_DIR))
                .map_err(err("chmod", &path))?;
        }
    }
    Ok(path)
}

/// The volumes that exist, by name.
pub fn list(state_dir: &Path) -> io::Result<Vec<String>> {
    let dir = state_dir.join("volumes");
    let mut out = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                if e.file_type()?.is_dir() {
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Deletes a volume and its data (only for `--prune-volumes`).
pub fn remove(state_dir: &Path, name: &str) -> Result<(), VolumeError> {
    let path = volume_path(state_dir, name);
    match fs::remove_dir_all(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VolumeError {
            name: name.to_string(),
            op: "remove",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn ensure_creates_a_volume_once_and_keeps_its_data() {
        let state = tempfile::tempdir().unwrap();
        let p = ensure(state.path(), "data", None).unwrap();
        assert!(p.is_dir());
        fs::write(p.join("keep"), "x").unwrap();
        assert_eq!(ensure(state.path(), "data", None).unwrap(), p);
        assert_eq!(fs::read_to_string(p.join("keep")).unwrap(), "x");
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&state.path().join("volumes")), 0o700);
        assert_eq!(mode(&p), 0o755);
        assert_eq!(list(state.path()).unwrap(), vec!["data"]);
        remove(state.path(), "data").unwrap();
        remove(state.path(), "data").unwrap();
        assert!(list(state.path()).unwrap().is_empty());
    }

    /// Handing a volume over needs `chown`, so root (a failure under `CI=true`).
    #[test]
    fn the_first_owner_takes_an_empty_volume_and_a_second_does_not() {
        if !testing::have_root() {
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let p = ensure(state.path(), "data", Some((10001, 10001))).unwrap();
        let owner = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(owner(&p), (10001, 10001, 0o755));
        fs::write(p.join("keep"), "x").unwrap();
        // A second container with another user does not take it over, and data stays.
        ensure(state.path(), "data", Some((20002, 20002))).unwrap();
        assert_eq!(owner(&p), (10001, 10001, 0o755));
        assert_eq!(fs::read_to_string(p.join("keep")).unwrap(), "x");
        // An empty volume already handed over is not taken over either.
        let q = ensure(state.path(), "empty", Some((10001, 10001))).unwrap();
        ensure(state.path(), "empty", Some((20002, 20002))).unwrap();
        assert_eq!(owner(&q), (10001, 10001, 0o755));
    }
}
