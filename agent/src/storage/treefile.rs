//! Files the spec tree refers to — secret ciphertexts, seccomp profiles — read as the
//! validator checked them.
//!
//! The validator checks a reference lexically against the tree's regular files (the
//! loader lists no symlinks), so `x/../zero` passes as `zero`. Opening the reference as
//! written would let the kernel follow `x` — a link a committer added — anywhere on the
//! host: `/dev/zero` would be read until memory runs out. So a reference is normalised
//! the same way, then opened from the spec root one component at a time without
//! following any link, non-blocking (a FIFO never hangs a pass), must be a regular
//! file, and is read up to a size limit.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use super::nofollow::{self, WalkError};

/// The largest secret file read (its plaintext must fit the 1 MiB secrets tmpfs).
pub const MAX_SECRET_FILE: u64 = 2 << 20;
/// The largest seccomp profile read (Docker's default profile is about 20 KiB).
pub const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

/// Why a referenced file could not be read. Each names the reference as written.
#[derive(Debug, thiserror::Error)]
pub enum TreeFileError {
    #[error("`{reference}` leaves the spec root")]
    Escapes { reference: String },
    #[error("`{reference}`: `{}` is a symbolic link; file references do not follow links", at.display())]
    Symlink { reference: String, at: PathBuf },
    #[error("`{reference}` is not a regular file")]
    NotRegular { reference: String },
    #[error("`{reference}` is larger than {max} bytes")]
    TooLarge { reference: String, max: u64 },
    #[error("cannot read `{reference}`")]
    Io {
        reference: String,
        #[source]
        source: io::Error,
    },
}

impl TreeFileError {
    /// Whether reading again later may work: only an I/O failure that may pass.
    pub fn is_transient(&self) -> bool {
        matches!(self, TreeFileError::Io { source, .. } if crate::runtime::state::io_is_transient(source))
    }
}

/// `reference` without `.` and with `..` applied, as the validator reads it; `None`
/// when it is absolute or climbs above the root.
fn normalise(reference: &str) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(reference).components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.iter().collect())
}

/// Reads the file `reference` (relative to the spec root `root`), at most `max` bytes.
pub fn read(root: &Path, reference: &str, max: u64) -> Result<Vec<u8>, TreeFileError> {
    let escapes = || TreeFileError::Escapes {
        reference: reference.to_string(),
    };
    let rel = normalise(reference).ok_or_else(escapes)?;
    let walk_err = |e: WalkError| match e {
        WalkError::Symlink { at } => TreeFileError::Symlink {
            reference: reference.to_string(),
            at,
        },
        WalkError::NotPlain { .. } => escapes(),
        WalkError::Open { source, .. } => TreeFileError::Io {
            reference: reference.to_string(),
            source,
        },
    };
    let io_err = |e: rustix::io::Errno| TreeFileError::Io {
        reference: reference.to_string(),
        source: e.into(),
    };
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err(escapes()),
    };
    let start = nofollow::open_start(root).map_err(walk_err)?;
    let (dir, kind, at) = nofollow::walk(start, root, parent).map_err(walk_err)?;
    if kind != FileType::Directory {
        return Err(io_err(rustix::io::Errno::NOTDIR));
    }
    let fd = match rustix::fs::openat(
        dir.as_fd(),
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            return Err(TreeFileError::Symlink {
                reference: reference.to_string(),
                at: at.join(name),
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(io_err)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(TreeFileError::NotRegular {
            reference: reference.to_string(),
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TreeFileError::Io {
            reference: reference.to_string(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(TreeFileError::TooLarge {
            reference: reference.to_string(),
            max,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_validator_checked_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("profiles")).unwrap();
        std::fs::write(root.join("profiles/p.json"), "{}").unwrap();
        std::fs::write(root.join("zero"), "tree file").unwrap();
        std::os::unix::fs::symlink("/dev/shm", root.join("x")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("profiles/link.json")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        assert_eq!(read(root, "profiles/p.json", 10).unwrap(), b"{}");
        assert_eq!(
            read(root, "./profiles/../profiles/p.json", 10).unwrap(),
            b"{}"
        );
        // `x/../zero` is `zero` in the tree, never `/dev/shm/../zero` = `/dev/zero`.
        assert_eq!(read(root, "x/../zero", 100).unwrap(), b"tree file");
        let e = read(root, "x/zero", 100).unwrap_err();
        assert!(matches!(e, TreeFileError::Symlink { .. }), "{e:?}");
        let e = read(root, "profiles/link.json", 100).unwrap_err();
        assert!(matches!(e, TreeFileError::Symlink { .. }), "{e:?}");
        assert!(e.to_string().contains("profiles/link.json"), "{e}");
        for escaping in ["../etc/passwd", "/etc/passwd", "a/../../x", ".."] {
            let e = read(root, escaping, 100).unwrap_err();
            assert!(
                matches!(e, TreeFileError::Escapes { .. }),
                "{escaping}: {e:?}"
            );
        }
        // A FIFO does not hang; a directory is not a file; size is capped.
        let e = read(root, "fifo", 100).unwrap_err();
        assert!(matches!(e, TreeFileError::NotRegular { .. }), "{e:?}");
        let e = read(root, "profiles", 100).unwrap_err();
        assert!(matches!(e, TreeFileError::NotRegular { .. }), "{e:?}");
        let e = read(root, "zero", 4).unwrap_err();
        assert!(matches!(e, TreeFileError::TooLarge { max: 4, .. }), "{e:?}");
        let e = read(root, "missing", 4).unwrap_err();
        assert!(matches!(e, TreeFileError::Io { .. }), "{e:?}");
    }
}
