//! Applying one tar entry to the destination root.
//!
//! Contract (OCI image-spec layer.md "Applying changesets"): the parent directory is
//! resolved inside the root (missing parents are created 0755); if the entry and the
//! existing path are both directories only the attributes change, otherwise the
//! existing path is removed and the entry created with `O_EXCL`/`O_NOFOLLOW`, so no
//! write ever goes through a symlink's final component. Hard-link targets are resolved
//! inside the root and must exist and not be directories. Directory times are set at
//! the end of the layer, since writing children changes them.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec};
use rustix::io::Errno;
use tar::EntryType;

use super::error::{LimitKind, UnpackError};
use super::meta::{self, Meta};
use super::path::{EntryPath, Whiteout, classify};
use super::root::{self, DIR_FLAGS, Root};
use super::{UnpackOptions, WhiteoutMode};

/// Applies the entries of one layer, in order.
pub(crate) struct Applier<'a> {
    pub(super) root: &'a Root,
    pub(super) layer: &'a str,
    pub(super) opts: &'a UnpackOptions,
    /// Directories whose times are set by `finish`, in tar order.
    dir_times: Vec<(EntryPath, Timespec)>,
    /// Flatten mode: keys of the paths this layer wrote, and of their ancestors —
    /// what an opaque whiteout must keep.
    pub(super) written: HashSet<Vec<u8>>,
    /// Sum of regular file sizes: a sparse entry expands far beyond its tar bytes.
    file_bytes: u64,
    buf: Vec<u8>,
}

const COPY_BUF: usize = 128 * 1024;

impl<'a> Applier<'a> {
    pub(crate) fn new(root: &'a Root, layer: &'a str, opts: &'a UnpackOptions) -> Self {
        Applier {
            root,
            layer,
            opts,
            dir_times: Vec::new(),
            written: HashSet::new(),
            file_bytes: 0,
            buf: vec![0; COPY_BUF],
        }
    }

    pub(super) fn fs_err(&self, op: &'static str, path: &EntryPath, e: Errno) -> UnpackError {
        UnpackError::Fs {
            layer: self.layer.to_owned(),
            op,
            path: path.display(),
            source: e.into(),
        }
    }

    fn archive_err(&self, path: &EntryPath, source: std::io::Error) -> UnpackError {
        UnpackError::Archive {
            layer: self.layer.to_owned(),
            path: path.display(),
            source,
        }
    }

    fn check_len(&self, raw: &[u8]) -> Result<(), UnpackError> {
        let max = self.opts.limits.max_path_len;
        if raw.len() > max {
            return Err(UnpackError::Limit {
                layer: self.layer.to_owned(),
                limit: LimitKind::PathLength,
                max: max as u64,
            });
        }
        Ok(())
    }

    pub(crate) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        self.check_len(&raw)?;
        let path = EntryPath::parse(&raw).map_err(|r| UnpackError::UnsafePath {
            layer: self.layer.to_owned(),
            path: String::from_utf8_lossy(&raw).into_owned(),
            reason: r.reason(),
        })?;
        let Some(name) = path.name().map(<[u8]>::to_vec) else {
            // containerd ignores entries that resolve to the root: a layer built from
            // a mktemp directory would otherwise make `/` mode 0700.
            if kind != EntryType::Directory {
                return Err(UnpackError::UnsafePath {
                    layer: self.layer.to_owned(),
                    path: path.display(),
                    reason: "the root entry is not a directory",
                });
            }
            return Ok(());
        };
        if path.comps()[0].starts_with(b".wh..wh.") && path.comps().len() > 1 {
            return Ok(()); // inside an AUFS metadata directory
        }
        match classify(&name) {
            Whiteout::None => {}
            Whiteout::AufsMeta => return Ok(()),
            Whiteout::Invalid => {
                return Err(UnpackError::InvalidWhiteout {
                    layer: self.layer.to_owned(),
                    path: path.display(),
                });
            }
            Whiteout::Delete(target) => {
                let target = target.to_vec();
                return self.whiteout(&path, &target);
            }
            Whiteout::Opaque => return self.opaque(&path),
        }
        let meta = Meta::read(entry).map_err(|e| self.archive_err(&path, e))?;
        if self.opts.mode == WhiteoutMode::Flatten {
            self.written.extend(path.ancestor_keys());
            self.written.insert(path.key());
        }
        let parent = self
            .root
            .make_dirs(path.parent())
            .map_err(|e| self.fs_err("create parent directory of", &path, e))?;
        let parent = parent.as_fd();
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, parent, &name, &path, &meta)
            }
            EntryType::Directory => self.dir(parent, &name, &path, &meta),
            EntryType::Symlink => self.symlink(entry, parent, &name, &path, &meta),
            EntryType::Link => self.hardlink(entry, parent, &name, &path),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(entry, kind, parent, &name, &path, &meta)
            }
            other => Err(UnpackError::UnsupportedEntry {
                layer: self.layer.to_owned(),
                path: path.display(),
                kind: char::from(other.as_byte()),
            }),
        }
    }

    /// Removes whatever is at `name` unless it is a directory and `keep_dir` is set.
    /// Returns whether a directory was kept.
    pub(super) fn clear_slot(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
        path: &EntryPath,
    ) -> Result<bool, UnpackError> {
        match root::type_at(parent, name).map_err(|e| self.fs_err("inspect", path, e))? {
            None => Ok(false),
            Some(FileType::Directory) if keep_dir => Ok(true),
            Some(_) => root::remove_all(parent, name)
                .map(|()| false)
                .map_err(|e| self.fs_err("remove existing", path, e)),
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &EntryPath,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        self.file_bytes = self.file_bytes.saturating_add(entry.size());
        let max = self.opts.limits.max_uncompressed_bytes;
        if self.file_bytes > max {
            return Err(UnpackError::Limit {
                layer: self.layer.to_owned(),
                limit: LimitKind::UncompressedBytes,
                max,
            });
        }
        self.clear_slot(parent, name, false, path)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.fs_err("create file", path, e))?;
        let mut file = File::from(fd);
        let mut written: u64 = 0;
        loop {
            let n = entry
                .read(&mut self.buf)
                .map_err(|e| self.archive_err(path, e))?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n])
                .map_err(|e| UnpackError::Fs {
                    layer: self.layer.to_owned(),
                    op: "write file",
                    path: path.display(),
                    source: e,
                })?;
            written += n as u64;
        }
        if written != entry.size() {
            let msg = format!("file data truncated: {written} of {} bytes", entry.size());
            return Err(self.archive_err(
                path,
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, msg),
            ));
        }
        meta.apply_fd(file.as_fd(), true)
            .map_err(|(op, e)| self.fs_err(op, path, e))
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &EntryPath,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if !self.clear_slot(parent, name, true, path)? {
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                .map_err(|e| self.fs_err("create directory", path, e))?;
        }
        let fd: OwnedFd =
            rustix::fs::openat(parent, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
                .map_err(|e| self.fs_err("open directory", path, e))?;
        meta.apply_fd(fd.as_fd(), false)
            .map_err(|(op, e)| self.fs_err(op, path, e))?;
        self.dir_times.push((path.clone(), meta.mtime));
        Ok(())
    }

    fn link_target<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        path: &EntryPath,
    ) -> Result<Vec<u8>, UnpackError> {
        let target = entry
            .link_name_bytes()
            .map(|t| t.into_owned())
            .unwrap_or_default();
        self.check_len(&target)?;
        if target.is_empty() {
            return Err(self.archive_err(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "link without a target"),
            ));
        }
        Ok(target)
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &EntryPath,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        // Stored verbatim: it is only ever resolved inside the root (here and by the
        // container), so an absolute or `..` target cannot reach the host.
        let target = self.link_target(entry, path)?;
        self.clear_slot(parent, name, false, path)?;
        rustix::fs::symlinkat(target.as_slice(), parent, name)
            .map_err(|e| self.fs_err("create symlink", path, e))?;
        meta.apply_at(parent, name, true)
            .map_err(|(op, e)| self.fs_err(op, path, e))
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &EntryPath,
    ) -> Result<(), UnpackError> {
        let raw = self.link_target(entry, path)?;
        let bad = |reason| UnpackError::BadHardlink {
            layer: self.layer.to_owned(),
            path: path.display(),
            target: String::from_utf8_lossy(&raw).into_owned(),
            reason,
        };
        let target = EntryPath::parse(&raw).map_err(|r| bad(r.reason()))?;
        let Some(tname) = target.name() else {
            return Err(bad("target is the root"));
        };
        let tdir = match self.root.open_dir(target.parent()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => return Err(bad("target does not exist")),
            Err(e) => return Err(self.fs_err("resolve hard link target of", path, e)),
        };
        match root::type_at(tdir.as_fd(), tname)
            .map_err(|e| self.fs_err("inspect hard link target of", path, e))?
        {
            None => return Err(bad("target does not exist")),
            Some(FileType::Directory) => return Err(bad("target is a directory")),
            Some(_) => {}
        }
        self.clear_slot(parent, name, false, path)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink, as tar does.
        rustix::fs::linkat(tdir.as_fd(), tname, parent, name, AtFlags::empty())
            .map_err(|e| self.fs_err("create hard link", path, e))
    }

    fn special<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        kind: EntryType,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &EntryPath,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let (ft, dev) = match kind {
            EntryType::Fifo => (FileType::Fifo, 0),
            _ if self.opts.skip_device_nodes => {
                tracing::debug!(layer = self.layer, path = %path.display(), "skipping device node");
                return Ok(());
            }
            _ => {
                let h = entry.header();
                let major = h
                    .device_major()
                    .map_err(|e| self.archive_err(path, e))?
                    .unwrap_or(0);
                let minor = h
                    .device_minor()
                    .map_err(|e| self.archive_err(path, e))?
                    .unwrap_or(0);
                let ft = if kind == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major, minor))
            }
        };
        self.clear_slot(parent, name, false, path)?;
        rustix::fs::mknodat(parent, name, ft, Mode::from_raw_mode(0o600), dev)
            .map_err(|e| self.fs_err("create device node or fifo", path, e))?;
        meta.apply_at(parent, name, false)
            .map_err(|(op, e)| self.fs_err(op, path, e))
    }

    /// Sets the deferred directory times, innermost last-written first.
    pub(crate) fn finish(self) -> Result<(), UnpackError> {
        for (path, mtime) in self.dir_times.iter().rev() {
            let Some(name) = path.name() else { continue };
            // A later entry may have removed the directory or its parent.
            let Ok(parent) = self.root.open_dir(path.parent()) else {
                continue;
            };
            match meta::set_dir_times(parent.as_fd(), name, *mtime) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(self.fs_err("set times of", path, e)),
            }
        }
        Ok(())
    }

    pub(super) fn mode(&self) -> WhiteoutMode {
        self.opts.mode
    }
}
