//! Named network namespaces, made the way `ip netns add` makes them: a namespace held
//! open by bind-mounting its nsfs file onto `<run_dir>/netns/<instance id>`.
//!
//! A short-lived dedicated thread calls `unshare(CLONE_NEWNET)` — which moves only that
//! thread into a new namespace — and bind-mounts `/proc/thread-self/ns/net` onto the
//! target; the thread then ends and the mount keeps the namespace alive. No `unsafe`,
//! no fork. Delete is a lazy unmount plus unlink. Both are idempotent, which is what
//! crash recovery needs: an existing namespace is kept, a missing one is not an error,
//! and a mount point file left without its mount (a crash between the two steps) is
//! mounted over or removed.
//!
//! Unlike `ip netns`, berth does not turn the netns directory into a shared mount
//! point: runc detaches the host's mounts from container mount namespaces, and a
//! leftover self-bind of the directory would itself be a mount to clean up.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statfs::{NSFS_MAGIC, statfs};

/// The failing step and its cause.
pub type StepError = (&'static str, io::Error);

/// Whether `path` is a mounted network namespace (an nsfs file).
pub fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates the namespace file at `path`; an existing namespace is kept.
pub fn create(path: &Path) -> Result<(), StepError> {
    if is_netns(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::runtime::state::create_dir(dir, crate::runtime::state::PRIVATE_DIR)
            .map_err(|e| ("create the directory", e))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .open(path)
        .map_err(|e| ("create the mount point", e))?;
    let target = path.to_path_buf();
    let joined = std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || -> Result<(), StepError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare", io::Error::from(e)))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ("bind mount", io::Error::from(e)))
        })
        .map_err(|e| ("start the namespace thread", e))?
        .join()
        .unwrap_or_else(|_| Err(("namespace thread", io::Error::other("panicked"))));
    if joined.is_err() {
        let _ = fs::remove_file(path);
    }
    joined
}

/// Unmounts and removes the namespace file at `path`; a missing one is fine.
pub fn delete(path: &Path) -> Result<(), StepError> {
    // A mount point can hold stacked mounts (two creates racing); peel them all.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(e) => return Err(("unmount", io::Error::from(e))),
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(("remove the file", e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "netns_tests.rs"]
mod tests;
