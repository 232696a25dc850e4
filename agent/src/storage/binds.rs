//! Bind mounts from the host, checked on the host and mounted as checked.
//!
//! The policy's `allowed-host-paths` rule is lexical: it sees the path the spec wrote.
//! A symbolic link below an allowed directory — planted by another container that can
//! write there — would otherwise take a bind anywhere on the host. So at create time:
//!
//! 1. [`resolve`] the spec's path with every symlink followed (`realpath`); the caller
//!    checks that resolved path against the allow and deny lists;
//! 2. [`stage`] walks the resolved path again from `/`, one component at a time, with
//!    `O_PATH | O_NOFOLLOW`, and refuses any symlink it meets: a link swapped in after
//!    the check cannot be followed. The walk ends holding a descriptor of exactly the
//!    checked object;
//! 3. that descriptor (through `/proc/self/fd/N`, in berth's own process) is
//!    bind-mounted onto `instances/<id>/binds/<n>`, inside the root-only instance
//!    directory, and the OCI runtime gets that path — which nobody else can change.
//!
//! [`unstage_all`] unmounts every staged bind before an instance directory is removed:
//! a directory is removed with `rmdir`, never recursively, so a bind still mounted
//! there can never have its host data deleted.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use rustix::fs::FileType;

use super::nofollow;
use crate::runtime::mount;

/// Why a bind could not be resolved or staged. Each names the paths involved.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("bind source `{source_path}` cannot be resolved on this host")]
    Resolve {
        source_path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "bind source `{source_path}`: `{}` became a symbolic link after the path was checked; refusing to follow it",
        at.display()
    )]
    Symlink { source_path: String, at: PathBuf },
    #[error("bind source `{source_path}`: cannot open `{}`", at.display())]
    Open {
        source_path: String,
        at: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bind `{source_path}`: cannot prepare the mount point `{}`", path.display())]
    Prepare {
        source_path: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bind `{source_path}`: cannot mount `{}` on `{}`", resolved.display(), path.display())]
    Mount {
        source_path: String,
        resolved: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the staged bind `{}`", path.display())]
    Unstage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Unmount(#[from] mount::MountError),
}

impl BindError {
    /// Whether trying again later may work (a full disk, a busy mount point). A bind
    /// source missing from the host stays missing until the host or the spec changes.
    pub fn is_transient(&self) -> bool {
        crate::runtime::state::chain_is_transient(self)
    }
}

/// Where an instance's binds are staged.
pub fn binds_dir(instance_root: &Path) -> PathBuf {
    instance_root.join("binds")
}

/// The staged mount point of the instance's mount number `index` (its place in the
/// spec's `mounts`).
pub fn staged_path(instance_root: &Path, index: usize) -> PathBuf {
    binds_dir(instance_root).join(index.to_string())
}

/// The spec's bind source with every symlink resolved: the path to check.
pub fn resolve(source_path: &str) -> Result<PathBuf, BindError> {
    std::fs::canonicalize(source_path).map_err(|source| BindError::Resolve {
        source_path: source_path.to_string(),
        source,
    })
}

/// Opens `resolved` (absolute, as [`resolve`] returns it) without following any
/// symlink, one component at a time. Returns the descriptor and whether it is a
/// directory.
fn open_nofollow(source_path: &str, resolved: &Path) -> Result<(OwnedFd, bool), BindError> {
    match nofollow::open_absolute(resolved) {
        Ok((fd, kind)) => Ok((fd, kind == FileType::Directory)),
        Err(nofollow::WalkError::Symlink { at }) => Err(BindError::Symlink {
            source_path: source_path.to_string(),
            at,
        }),
        Err(nofollow::WalkError::NotPlain { at }) => Err(BindError::Symlink {
            source_path: source_path.to_string(),
            at,
        }),
        Err(nofollow::WalkError::Open { at, source }) => Err(BindError::Open {
            source_path: source_path.to_string(),
            at,
            source,
        }),
    }
}

/// Bind-mounts the checked path `resolved` onto the instance's staged mount point
/// `index` and returns that point. Idempotent: a point already mounted is kept (a
/// restart of the instance, or a pass that was killed after staging).
pub fn stage(
    instance_root: &Path,
    index: usize,
    source_path: &str,
    resolved: &Path,
) -> Result<PathBuf, BindError> {
    let point = staged_path(instance_root, index);
    if !mount::mounts_at(&point).is_empty() {
        return Ok(point);
    }
    let (fd, is_dir) = open_nofollow(source_path, resolved)?;
    let prepare = |source: io::Error| BindError::Prepare {
        source_path: source_path.to_string(),
        path: point.clone(),
        source,
    };
    let dir = binds_dir(instance_root);
    crate::runtime::state::create_dir(&dir, crate::runtime::state::PRIVATE_DIR).map_err(prepare)?;
    // The mount point takes the source's kind: a directory, or an empty file.
    match std::fs::symlink_metadata(&point) {
        Ok(m) if m.is_dir() == is_dir && !m.file_type().is_symlink() => {}
        Ok(_) => {
            remove_point(&point).map_err(prepare)?;
            make_point(&point, is_dir).map_err(prepare)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_point(&point, is_dir).map_err(prepare)?
        }
        Err(e) => return Err(prepare(e)),
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mount_err = |e: nix::errno::Errno| BindError::Mount {
        source_path: source_path.to_string(),
        resolved: resolved.to_path_buf(),
        path: point.clone(),
        source: e.into(),
    };
    nix::mount::mount(
        Some(source.as_str()),
        &point,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err)?;
    // Nothing mounted later under the host's directory reaches the container through
    // this point, and nothing the container does propagates back.
    if let Err(e) = nix::mount::mount(
        None::<&str>,
        &point,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    ) {
        let _ = mount::unmount_all(&point);
        return Err(mount_err(e));
    }
    drop(fd);
    Ok(point)
}

fn make_point(point: &Path, is_dir: bool) -> io::Result<()> {
    if is_dir {
        std::fs::DirBuilder::new().mode(0o700).create(point)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(point)
            .map(drop)
    }
}

/// Removes an unmounted mount point: `rmdir` for a directory (which fails on a
/// non-empty one, so a still-mounted bind keeps its data), `unlink` for a file.
fn remove_point(point: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(point) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(point),
        Ok(_) => std::fs::remove_file(point),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Unmounts and removes every staged bind of an instance, then its `binds/`
/// directory. Nothing there is ever removed recursively.
pub fn unstage_all(instance_root: &Path) -> Result<(), BindError> {
    let dir = binds_dir(instance_root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(BindError::Unstage { path: dir, source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| BindError::Unstage {
            path: dir.clone(),
            source,
        })?;
        let point = entry.path();
        mount::unmount_all(&point)?;
        remove_point(&point).map_err(|source| BindError::Unstage {
            path: point.clone(),
            source,
        })?;
    }
    match std::fs::remove_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(BindError::Unstage {
            path: dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "binds_tests.rs"]
mod tests;
