//! Opening paths without following symbolic links, one component at a time, from a
//! directory berth trusts. A link met on the way is refused, never followed, so what is
//! opened is exactly the path that was checked: bind sources (`binds`) and files the
//! spec tree refers to (`treefile`) are opened this way.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

/// Why a walk stopped. Each names the path reached.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("`{}` is a symbolic link", at.display())]
    Symlink { at: PathBuf },
    #[error("`{}` holds `..`, `.` or a root after its start", at.display())]
    NotPlain { at: PathBuf },
    #[error("cannot open `{}`", at.display())]
    Open {
        at: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl WalkError {
    fn open(at: &Path) -> impl FnOnce(rustix::io::Errno) -> WalkError + '_ {
        move |e| WalkError::Open {
            at: at.to_path_buf(),
            source: e.into(),
        }
    }
}

/// Opens `start` (followed as given: the caller trusts it) with `O_PATH`.
pub fn open_start(start: &Path) -> Result<OwnedFd, WalkError> {
    rustix::fs::open(
        start,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(WalkError::open(start))
}

/// Walks `rel` (plain names only) from the directory `dir` (whose path is `start`, for
/// messages) with `O_PATH | O_NOFOLLOW`, refusing any symlink. Returns the descriptor
/// of the last component, its type and its path.
pub fn walk(
    dir: OwnedFd,
    start: &Path,
    rel: &Path,
) -> Result<(OwnedFd, FileType, PathBuf), WalkError> {
    let mut fd = dir;
    let mut at = start.to_path_buf();
    let mut kind = FileType::Directory;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(WalkError::NotPlain { at: at.join(rel) });
        };
        at.push(name);
        if kind != FileType::Directory {
            return Err(WalkError::open(&at)(rustix::io::Errno::NOTDIR));
        }
        let next = rustix::fs::openat(
            fd.as_fd(),
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(WalkError::open(&at))?;
        let st = rustix::fs::fstat(&next).map_err(WalkError::open(&at))?;
        kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Symlink {
            return Err(WalkError::Symlink { at });
        }
        fd = next;
    }
    Ok((fd, kind, at))
}

/// An absolute, canonical path opened from `/` without following links.
pub fn open_absolute(path: &Path) -> Result<(OwnedFd, FileType), WalkError> {
    let root = Path::new("/");
    let rel = path.strip_prefix(root).map_err(|_| WalkError::NotPlain {
        at: path.to_path_buf(),
    })?;
    let (fd, kind, _) = walk(open_start(root)?, root, rel)?;
    Ok((fd, kind))
}
