//! Entry metadata — owner, mode, mtime, xattrs — read from a tar header and applied
//! in containerd's order: owner first, then the mode (chown clears setuid/setgid),
//! then xattrs, then times.
//!
//! Contract: numeric ids only (`uname`/`gname` are ignored, as the image spec says);
//! xattrs come from PAX `SCHILY.xattr.*` and only `user.*` and `security.capability`
//! are applied — `trusted.*` would let a layer forge overlayfs metadata, and other
//! `security.*` labels belong to the host's policy. A filesystem refusing an xattr
//! (EPERM, EOPNOTSUPP) is logged and skipped, as containerd does.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

/// A failed metadata syscall: what was attempted, and the errno.
pub(crate) type MetaError = (&'static str, Errno);

#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub(crate) mode: u32,
    pub(crate) mtime: Timespec,
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

const XATTR_PREFIX: &str = "SCHILY.xattr.";

fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

impl Meta {
    pub(crate) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
        let h = entry.header();
        let uid = u32::try_from(h.uid()?).map_err(|_| invalid("uid out of range"))?;
        let gid = u32::try_from(h.gid()?).map_err(|_| invalid("gid out of range"))?;
        let mode = h.mode()? & 0o7777;
        let secs = i64::try_from(h.mtime()?).map_err(|_| invalid("mtime out of range"))?;
        let mut mtime = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                    if xattr_allowed(name.as_bytes()) {
                        xattrs.push((name.as_bytes().to_vec(), ext.value_bytes().to_vec()));
                    } else {
                        tracing::debug!(xattr = name, "skipping xattr outside the allow list");
                    }
                } else if key == "mtime"
                    && let Some(t) = ext.value().ok().and_then(parse_pax_time)
                {
                    mtime = t;
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }

    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }

    /// Owner, mode and xattrs of an open regular file or directory; its times too
    /// unless `times` is false (directories get theirs once the layer is done).
    pub(crate) fn apply_fd(&self, fd: BorrowedFd<'_>, times: bool) -> Result<(), MetaError> {
        let (u, g) = self.owner();
        rustix::fs::fchown(fd, u, g).map_err(|e| ("chown", e))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(self.mode)).map_err(|e| ("chmod", e))?;
        for (name, value) in &self.xattrs {
            tolerate(
                rustix::fs::fsetxattr(fd, name.as_slice(), value, XattrFlags::empty()),
                name,
            )?;
        }
        if times {
            rustix::fs::futimens(fd, &self.times()).map_err(|e| ("set times of", e))?;
        }
        Ok(())
    }

    /// Owner, mode (unless a symlink), xattrs and times of `name` in `dir`, which
    /// the caller just created as a symlink, device node or fifo.
    pub(crate) fn apply_at(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        symlink: bool,
    ) -> Result<(), MetaError> {
        let (u, g) = self.owner();
        rustix::fs::chownat(dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ("chown", e))?;
        if !symlink {
            // fchmodat follows a final symlink, but `name` is the node we just made.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(self.mode), AtFlags::empty())
                .map_err(|e| ("chmod", e))?;
        }
        if !self.xattrs.is_empty() {
            // No fd-relative lsetxattr before Linux 6.13: name the node through our
            // own directory fd; lsetxattr does not follow the final component.
            let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            path.push(OsStr::from_bytes(name));
            for (xname, value) in &self.xattrs {
                tolerate(
                    rustix::fs::lsetxattr(&path, xname.as_slice(), value, XattrFlags::empty()),
                    xname,
                )?;
            }
        }
        rustix::fs::utimensat(dir, name, &self.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| ("set times of", e))
    }
}

/// Sets a directory's times once its children are written (see `Applier::finish`).
pub(crate) fn set_dir_times(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mtime: Timespec,
) -> Result<(), Errno> {
    let times = Timestamps {
        last_access: mtime,
        last_modification: mtime,
    };
    let name: &[u8] = if name.is_empty() { b"." } else { name };
    rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
}

fn tolerate(r: Result<(), Errno>, name: &[u8]) -> Result<(), MetaError> {
    match r {
        Err(Errno::PERM | Errno::NOTSUP) => {
            tracing::warn!(
                xattr = %String::from_utf8_lossy(name),
                "filesystem refused xattr; skipped"
            );
            Ok(())
        }
        r => r.map_err(|e| ("set xattr on", e)),
    }
}

/// A PAX time, `secs[.fraction]`.
fn parse_pax_time(s: &str) -> Option<Timespec> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    if frac.is_empty() {
        return Some(Timespec { tv_sec, tv_nsec: 0 });
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut tv_nsec: i64 = digits.parse().ok()?;
    if tv_sec < 0 {
        tv_nsec = -tv_nsec;
    }
    Some(normalise(Timespec { tv_sec, tv_nsec }))
}

fn normalise(t: Timespec) -> Timespec {
    if t.tv_nsec < 0 {
        Timespec {
            tv_sec: t.tv_sec - 1,
            tv_nsec: t.tv_nsec + 1_000_000_000,
        }
    } else {
        t
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_pax_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        let t = parse_pax_time("-1.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 750_000_000));
        assert!(parse_pax_time("1.2x").is_none());
        assert!(parse_pax_time("x").is_none());
    }

    #[test]
    fn xattr_allow_list() {
        assert!(xattr_allowed(b"user.foo"));
        assert!(xattr_allowed(b"security.capability"));
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"security.selinux"));
    }
}
