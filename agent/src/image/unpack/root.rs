//! Path resolution scoped to a layer root, and removal that never follows symlinks.
//!
//! Contract: every directory handed out by [`Root`] lies inside the root, whatever
//! symlinks the tree holds — an absolute symlink is resolved against the root, and
//! `..` stops at it, as if the root were `/` (what a container later sees). The kernel
//! does this with `openat2(RESOLVE_IN_ROOT)` (Linux ≥ 5.6); older kernels get the same
//! walk in user space, one `openat(O_NOFOLLOW)` per component. Callers then create or
//! replace only the last component, relative to the directory fd, without following it.
//! All syscalls go through rustix's safe wrappers, so this crate needs no `unsafe`.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How [`Root`] resolves paths: `openat2(RESOLVE_IN_ROOT)` when the kernel has it,
/// else component by component with `openat(O_NOFOLLOW)` and symlinks expanded by
/// berth (old kernels). Tests force the second to run both on any kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Resolver {
    /// The kernel's resolver when it has one, else berth's.
    #[default]
    Auto,
    /// Berth's resolver, whatever the kernel has.
    #[cfg(test)]
    Userspace,
}

/// Flags for directory fds we keep: readable (for listing, fchown, fchmod, xattrs).
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: u32 = 40;
/// Deeper trees are refused rather than removed: each level holds an open fd.
const MAX_REMOVE_DEPTH: usize = 256;
/// openat2 returns EAGAIN when a rename raced the lookup; retry a few times.
const OPENAT2_RETRIES: usize = 16;

/// An open layer root.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    kernel: bool,
}

impl Root {
    /// Opens `path` (trusted: chosen by berth or the operator) as the root.
    pub(crate) fn open(path: &Path, resolver: Resolver) -> Result<Root, Errno> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        let kernel = resolver == Resolver::Auto
            && rustix::fs::openat2(&fd, ".", DIR_FLAGS, Mode::empty(), in_root()).is_ok();
        Ok(Root { fd, kernel })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory at `comps`, following symlinks inside the root.
    pub(crate) fn open_dir(&self, comps: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        if comps.is_empty() {
            return rustix::io::dup(&self.fd);
        }
        if !self.kernel {
            return self.resolve_userspace(comps);
        }
        let path = comps.join(&b'/');
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(&self.fd, &path, DIR_FLAGS, Mode::empty(), in_root()) {
                Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// Like [`Root::open_dir`], creating missing directories (mode 0755, as containerd
    /// does for parents a layer does not list). A dangling symlink on the way is an
    /// error (ENOENT): berth does not create directories at a symlink's target.
    pub(crate) fn make_dirs(&self, comps: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        match self.open_dir(comps) {
            Err(Errno::NOENT) => {}
            other => return other,
        }
        let mut cur = rustix::io::dup(&self.fd)?;
        for i in 0..comps.len() {
            cur = match self.open_dir(&comps[..=i]) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, &comps[i], Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        // Present but unresolvable: a dangling symlink.
                        Err(Errno::EXIST) => return Err(Errno::NOENT),
                        Err(e) => return Err(e),
                    }
                    rustix::fs::openat(
                        &cur,
                        &comps[i],
                        DIR_FLAGS | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }

    fn resolve_userspace(&self, comps: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        let mut todo: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        // The directories from the root down to the current one; `..` pops.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().map_or(self.fd.as_fd(), AsFd::as_fd);
            match rustix::fs::openat(cur, &c, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => stack.push(fd),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let target = match rustix::fs::readlinkat(cur, &c, Vec::new()) {
                        Ok(t) => t.into_bytes(),
                        Err(Errno::INVAL) => return Err(Errno::NOTDIR),
                        Err(e) => return Err(e),
                    };
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::LOOP);
                    }
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    for part in target.split(|b| *b == b'/').rev() {
                        todo.push_front(part.to_vec());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => rustix::io::dup(&self.fd),
        }
    }
}

fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// The type of `name` in `dir`, not following a symlink; `None` if absent.
pub(crate) fn type_at(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Option<FileType>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in a directory, without `.` and `..`.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let mut d = Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = d.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` from `dir` and, if it is a directory, everything below it.
/// Symlinks are removed, never followed. ENOENT if `name` does not exist.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    remove_rec(dir, name, 0)
}

fn remove_rec(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        other => return other,
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(Errno::NAMETOOLONG);
    }
    let sub = rustix::fs::openat(dir, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
    for child in list_dir(sub.as_fd())? {
        remove_rec(sub.as_fd(), &child, depth + 1)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn roots(dir: &Path) -> [Root; 2] {
        [
            Root::open(dir, Resolver::Auto).unwrap(),
            Root::open(dir, Resolver::Userspace).unwrap(),
        ]
    }

    fn c(s: &str) -> Vec<Vec<u8>> {
        s.split('/').map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn kernel_resolver_is_used_here() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(Root::open(tmp.path(), Resolver::Auto).unwrap().kernel);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        symlink("/usr/lib", root.join("abs")).unwrap();
        symlink("../../../../usr", root.join("rel")).unwrap();
        symlink(tmp.path().join("outside"), root.join("out")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        for r in roots(&root) {
            let fd = r.open_dir(&c("abs")).unwrap();
            rustix::fs::mkdirat(&fd, "made-via-abs", Mode::from_raw_mode(0o755)).unwrap();
            assert!(root.join("usr/lib/made-via-abs").is_dir());
            std::fs::remove_dir(root.join("usr/lib/made-via-abs")).unwrap();
            let fd = r.open_dir(&c("rel/lib")).unwrap();
            assert_eq!(list_dir(fd.as_fd()).unwrap(), Vec::<Vec<u8>>::new());
            assert_eq!(r.open_dir(&c("out")).unwrap_err(), Errno::NOENT);
            assert_eq!(r.make_dirs(&c("out/x")).unwrap_err(), Errno::NOENT);
            assert_eq!(r.open_dir(&c("loop")).unwrap_err(), Errno::LOOP);
            assert_eq!(r.open_dir(&c("file")).unwrap_err(), Errno::NOTDIR);
            r.make_dirs(&c("new/deep/dir")).unwrap();
            assert!(root.join("new/deep/dir").is_dir());
            std::fs::remove_dir_all(root.join("new")).unwrap();
        }
        assert!(
            std::fs::read_dir(tmp.path().join("outside"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let keep = tmp.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("precious"), b"x").unwrap();
        let doomed = tmp.path().join("doomed");
        std::fs::create_dir_all(doomed.join("a/b")).unwrap();
        symlink(&keep, doomed.join("a/link")).unwrap();
        let dir = rustix::fs::open(tmp.path(), DIR_FLAGS, Mode::empty()).unwrap();
        remove_all(dir.as_fd(), b"doomed").unwrap();
        assert!(!doomed.exists());
        assert!(keep.join("precious").exists());
        assert_eq!(remove_all(dir.as_fd(), b"doomed"), Err(Errno::NOENT));
    }
}
