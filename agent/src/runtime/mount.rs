//! An instance's root filesystem: an overlay of the image's snapshots (read-only
//! lowers) with the instance's own `upper/` and `work/`, mounted at
//! `instances/<id>/rootfs` with `mount(2)` (about 0.2 ms; the `mount` binary costs
//! about 8 ms of fork, exec and libmount, research/baseline.md §3).
//!
//! Both directions are idempotent, so a crash at any point converges on the next
//! pass: mounting an already mounted rootfs is a no-op, unmounting one that is not
//! mounted is too. A busy rootfs (a process still holding a file open) is detached
//! lazily, as containerd does, rather than left behind.
//!
//! The options string must fit in one page (the kernel copies one page of mount data):
//! snapshots live in short numeric directories (DESIGN.md §7), so 100+ layers fit.
//! Paths are used as they are, so they may not contain the separators `:` and `,`.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::runtime::state::{self, InstanceDirs};

/// The kernel copies at most one page of mount options.
const MAX_OPTIONS: usize = 4096;

/// Why a rootfs cannot be mounted or unmounted. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("rootfs `{}`: cannot prepare `{}`", rootfs.display(), path.display())]
    Prepare {
        rootfs: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("rootfs `{}`: path `{}` contains `:` or `,`, which overlayfs options cannot hold", rootfs.display(), path.display())]
    BadPath { rootfs: PathBuf, path: PathBuf },
    #[error("rootfs `{}`: the overlay options for {layers} layers take {len} bytes, more than a page ({MAX_OPTIONS})", rootfs.display())]
    TooLong {
        rootfs: PathBuf,
        layers: usize,
        len: usize,
    },
    #[error("rootfs `{}`: cannot mount the overlay ({options})", rootfs.display())]
    Mount {
        rootfs: PathBuf,
        options: String,
        #[source]
        source: io::Error,
    },
    #[error("rootfs `{}`: cannot unmount", rootfs.display())]
    Unmount {
        rootfs: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl MountError {
    /// Whether trying again later may work (a full disk, a busy mount).
    pub fn is_transient(&self) -> bool {
        state::chain_is_transient(self)
    }
}

/// The overlay options: `lowerdir=<top-most first>,upperdir=…,workdir=…`. Pure.
pub fn overlay_options(
    rootfs: &Path,
    lowerdirs: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, MountError> {
    for p in lowerdirs.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.as_os_str().as_encoded_bytes();
        if s.contains(&b':') || s.contains(&b',') {
            return Err(MountError::BadPath {
                rootfs: rootfs.to_path_buf(),
                path: p.to_path_buf(),
            });
        }
    }
    let lower: Vec<String> = lowerdirs.iter().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if options.len() >= MAX_OPTIONS {
        return Err(MountError::TooLong {
            rootfs: rootfs.to_path_buf(),
            layers: lowerdirs.len(),
            len: options.len(),
        });
    }
    Ok(options)
}

/// Mounts the instance's rootfs over `lowerdirs` (top-most first, as
/// `SnapshotStore::lowerdirs` returns them), creating `rootfs/`, `upper/` and `work/`
/// with their modes ([`InstanceDirs::create`]).
/// An image without layers gets an empty lower directory (`lower/`). A rootfs that is
/// already an overlay mount is left as it is: the instance id names the image, so it
/// is the same overlay.
pub fn mount_rootfs(dirs: &InstanceDirs, lowerdirs: &[PathBuf]) -> Result<(), MountError> {
    let rootfs = dirs.rootfs();
    let prepare_err = |path: PathBuf| {
        let rootfs = rootfs.clone();
        move |source| MountError::Prepare {
            rootfs,
            path,
            source,
        }
    };
    dirs.create().map_err(prepare_err(dirs.root.clone()))?;
    let (upper, work) = (dirs.upper(), dirs.work());
    let empty;
    let lowerdirs = if lowerdirs.is_empty() {
        let lower = dirs.root.join("lower");
        state::create_dir(&lower, state::PRIVATE_DIR).map_err(prepare_err(lower.clone()))?;
        empty = [lower];
        &empty[..]
    } else {
        lowerdirs
    };
    let options = overlay_options(&rootfs, lowerdirs, &upper, &work)?;
    if is_overlay_mounted(&rootfs) {
        return Ok(());
    }
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| MountError::Mount {
        rootfs: rootfs.clone(),
        options,
        source: e.into(),
    })
}

/// Unmounts the instance's rootfs (every mount stacked there), detaching lazily when
/// it is busy. Not mounted, or not there at all, is success.
pub fn unmount_rootfs(dirs: &InstanceDirs) -> Result<(), MountError> {
    unmount_all(&dirs.rootfs())
}

/// Unmounts everything mounted at `path`.
pub fn unmount_all(path: &Path) -> Result<(), MountError> {
    let err = |source: io::Error| MountError::Unmount {
        rootfs: path.to_path_buf(),
        source,
    };
    // Bounded: each round removes one mount; a hundred stacked mounts is not berth's.
    for _ in 0..100 {
        if mounts_at(path).is_empty() {
            return Ok(());
        }
        match nix::mount::umount2(path, MntFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EBUSY) => {
                tracing::warn!(path = %path.display(), "rootfs busy, detaching it lazily");
                nix::mount::umount2(path, MntFlags::MNT_DETACH).map_err(|e| err(e.into()))?;
            }
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(err(e.into())),
        }
    }
    Err(err(io::Error::other("still mounted after 100 unmounts")))
}

/// Whether an overlay is mounted at `path`.
pub fn is_overlay_mounted(path: &Path) -> bool {
    mounts_at(path).iter().any(|fs| fs == "overlay")
}

/// The filesystem types mounted at `path`, per `/proc/self/mountinfo` (which shows the
/// canonical path). Empty when nothing is, or `path` does not exist.
pub fn mounts_at(path: &Path) -> Vec<String> {
    let Ok(canonical) = path.canonicalize() else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    parse_mountinfo(&text)
        .into_iter()
        .filter(|(point, _)| Path::new(point) == canonical)
        .map(|(_, fstype)| fstype)
        .collect()
}

/// `(mount point, fs type)` of each mountinfo line, with `\040`-style escapes decoded.
pub fn parse_mountinfo(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = unescape(fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            Some((point, fields.get(sep + 1)?.to_string()))
        })
        .collect()
}

/// The lower directories of every overlay mounted on the host (in this mount
/// namespace), per `/proc/self/mountinfo`: the snapshots a mounted rootfs reads, which
/// must stay while it is mounted.
pub fn overlay_lowers() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_overlay_lowers(&text)
}

/// The `lowerdir=` directories of the overlay lines of a mountinfo text (its super
/// options, after the fs type and source).
pub fn parse_overlay_lowers(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (*fields.get(sep + 1)? == "overlay").then_some(*fields.get(sep + 3)?)
        })
        .flat_map(|options| {
            options
                .split(',')
                .filter_map(|o| o.strip_prefix("lowerdir=").or(o.strip_prefix("lowerdir+=")))
                .flat_map(|l| l.split(':'))
                .filter(|l| !l.is_empty())
                .map(|l| PathBuf::from(unescape(l)))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "mount_tests.rs"]
mod tests;
