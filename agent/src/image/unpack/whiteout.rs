//! Whiteouts, in the two output modes.
//!
//! Contract:
//! - snapshot mode (each layer in its own overlayfs lowerdir): `.wh.NAME` becomes a
//!   0/0 character device NAME, and `.wh..wh..opq` the xattr
//!   `trusted.overlay.opaque=y` on its directory — what the kernel's overlayfs reads.
//! - flatten mode (layers applied in order into one tree, as `umoci unpack` does):
//!   `.wh.NAME` removes NAME (never following a symlink); `.wh..wh..opq` removes the
//!   directory's children that this layer did not write, at any depth, so the result
//!   is the same whatever the marker's place in the tar (image-spec: opaque whiteouts
//!   apply before the layer's other entries).

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

use super::WhiteoutMode;
use super::apply::Applier;
use super::error::UnpackError;
use super::path::EntryPath;
use super::root::{self, DIR_FLAGS};

/// The xattr overlayfs reads to make a directory hide its lower layers.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Nesting beyond this is refused rather than walked (each level holds an fd).
const MAX_OPAQUE_DEPTH: usize = 256;

impl Applier<'_> {
    /// `path` is the whiteout entry (`dir/.wh.NAME`), `target` is NAME.
    pub(super) fn whiteout(&mut self, path: &EntryPath, target: &[u8]) -> Result<(), UnpackError> {
        let victim = EntryPath::from_comps(path.parent().to_vec()).child(target);
        match self.mode() {
            WhiteoutMode::Snapshot => {
                let parent = self
                    .root
                    .make_dirs(path.parent())
                    .map_err(|e| self.fs_err("create parent directory of", &victim, e))?;
                self.clear_slot(parent.as_fd(), target, false, &victim)?;
                rustix::fs::mknodat(
                    &parent,
                    target,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| self.fs_err("create whiteout device", &victim, e))
            }
            WhiteoutMode::Flatten => {
                let parent = match self.root.open_dir(path.parent()) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(self.fs_err("resolve whiteout", &victim, e)),
                };
                match root::remove_all(parent.as_fd(), target) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(self.fs_err("remove whited-out", &victim, e)),
                }
            }
        }
    }

    /// `path` is the marker entry (`dir/.wh..wh..opq`).
    pub(super) fn opaque(&mut self, path: &EntryPath) -> Result<(), UnpackError> {
        let dir = EntryPath::from_comps(path.parent().to_vec());
        match self.mode() {
            WhiteoutMode::Snapshot => {
                let fd = self
                    .root
                    .make_dirs(dir.comps())
                    .map_err(|e| self.fs_err("create opaque directory", &dir, e))?;
                rustix::fs::fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|e| self.fs_err("mark opaque", &dir, e))
            }
            WhiteoutMode::Flatten => {
                let fd = match self.root.open_dir(dir.comps()) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(self.fs_err("resolve opaque directory", &dir, e)),
                };
                self.clear_lower(fd.as_fd(), &dir, 0)
                    .map_err(|(p, e)| self.fs_err("clear opaque directory", &p, e))
            }
        }
    }

    /// Removes what lies under `dir` and was not written by this layer.
    fn clear_lower(
        &self,
        fd: BorrowedFd<'_>,
        dir: &EntryPath,
        depth: usize,
    ) -> Result<(), (EntryPath, Errno)> {
        if depth > MAX_OPAQUE_DEPTH {
            return Err((dir.clone(), Errno::NAMETOOLONG));
        }
        for name in root::list_dir(fd).map_err(|e| (dir.clone(), e))? {
            let child = dir.child(&name);
            if !self.written.contains(&child.key()) {
                root::remove_all(fd, &name).map_err(|e| (child, e))?;
                continue;
            }
            if root::type_at(fd, &name).map_err(|e| (child.clone(), e))?
                == Some(FileType::Directory)
            {
                let sub =
                    rustix::fs::openat(fd, &name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
                        .map_err(|e| (child.clone(), e))?;
                self.clear_lower(sub.as_fd(), &child, depth + 1)?;
            }
        }
        Ok(())
    }
}
