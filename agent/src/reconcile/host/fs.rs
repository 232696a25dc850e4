//! What the host does to the filesystem for an instance, behind two small traits so
//! that its sequencing — what is made in what order, what a failed create undoes —
//! is unit-tested with fakes: [`Mounts`] (the root filesystem, staged binds and the
//! secrets tmpfs: everything that is a mount, and lives in memory only) and
//! [`OwnedFiles`] (volumes and secret files, handed to the container's user).
//! [`LinuxFs`] is the thin real implementation of both.

use std::io;
use std::path::{Path, PathBuf};

use crate::runtime::mount::{self, MountError};
use crate::runtime::state::InstanceDirs;
use crate::storage::binds::{self, BindError};
use crate::storage::secrets::{self, Plaintext, SecretError};
use crate::storage::volumes::{self, VolumeError};

/// The mounts an instance holds on the host. Each is idempotent: mounting what is
/// mounted keeps it, unmounting what is gone is fine.
pub trait Mounts: Sync {
    /// Mounts the overlay root filesystem of `dirs` over `lowerdirs` (top-most first).
    fn mount_rootfs(&self, dirs: &InstanceDirs, lowerdirs: &[PathBuf]) -> Result<(), MountError>;
    /// Whether the root filesystem of `dirs` is mounted (a reboot unmounts it).
    fn rootfs_mounted(&self, dirs: &InstanceDirs) -> bool;
    fn unmount_rootfs(&self, dirs: &InstanceDirs) -> Result<(), MountError>;
    /// Bind-mounts the checked host path `resolved` (mount `index` of the spec, written
    /// `source_path`) under the instance's `binds/`; returns the mount point.
    fn stage_bind(
        &self,
        instance_root: &Path,
        index: usize,
        source_path: &str,
        resolved: &Path,
    ) -> Result<PathBuf, BindError>;
    /// Unmounts every staged bind of the instance.
    fn unstage_binds(&self, instance_root: &Path) -> Result<(), BindError>;
    /// Mounts a fresh tmpfs of `size` bytes at `dir`, mode 0700.
    fn mount_secrets(&self, dir: &Path, size: u64) -> Result<(), SecretError>;
    /// Unmounts and removes `dir`.
    fn unmount_secrets(&self, dir: &Path) -> Result<(), SecretError>;
}

/// Directories and files handed to a container's user.
pub trait OwnedFiles: Sync {
    /// The volume `name` under `state_dir`, made if need be and, while it is empty,
    /// owned by `owner`.
    fn ensure_volume(
        &self,
        state_dir: &Path,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<PathBuf, VolumeError>;
    /// Deletes the volume and its data.
    fn remove_volume(&self, state_dir: &Path, name: &str) -> Result<(), VolumeError>;
    /// Hands `path` to `uid:gid`.
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Writes one secret, mode 0400, owned by `uid:gid`, into the secrets tmpfs `dir`.
    fn write_secret(
        &self,
        dir: &Path,
        target: &str,
        plain: &Plaintext,
        owner: (u32, u32),
    ) -> Result<(), SecretError>;
}

/// The host's own filesystem and mounts.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxFs;

impl Mounts for LinuxFs {
    fn mount_rootfs(&self, dirs: &InstanceDirs, lowerdirs: &[PathBuf]) -> Result<(), MountError> {
        mount::mount_rootfs(dirs, lowerdirs)
    }

    fn rootfs_mounted(&self, dirs: &InstanceDirs) -> bool {
        mount::is_overlay_mounted(&dirs.rootfs())
    }

    fn unmount_rootfs(&self, dirs: &InstanceDirs) -> Result<(), MountError> {
        mount::unmount_rootfs(dirs)
    }

    fn stage_bind(
        &self,
        instance_root: &Path,
        index: usize,
        source_path: &str,
        resolved: &Path,
    ) -> Result<PathBuf, BindError> {
        binds::stage(instance_root, index, source_path, resolved)
    }

    fn unstage_binds(&self, instance_root: &Path) -> Result<(), BindError> {
        binds::unstage_all(instance_root)
    }

    fn mount_secrets(&self, dir: &Path, size: u64) -> Result<(), SecretError> {
        secrets::mount_secrets_dir(dir, size)
    }

    fn unmount_secrets(&self, dir: &Path) -> Result<(), SecretError> {
        secrets::unmount_secrets_dir(dir)
    }
}

impl OwnedFiles for LinuxFs {
    fn ensure_volume(
        &self,
        state_dir: &Path,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<PathBuf, VolumeError> {
        volumes::ensure(state_dir, name, owner)
    }

    fn remove_volume(&self, state_dir: &Path, name: &str) -> Result<(), VolumeError> {
        volumes::remove(state_dir, name)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn write_secret(
        &self,
        dir: &Path,
        target: &str,
        plain: &Plaintext,
        (uid, gid): (u32, u32),
    ) -> Result<(), SecretError> {
        secrets::write_secret(dir, target, plain, uid, gid).map(drop)
    }
}
