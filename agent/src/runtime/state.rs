//! The state berth keeps on disk for each container (DESIGN.md §7), shared by the
//! executor (writer), the scan (reader) and the operator commands (`ps`, `inspect`,
//! `logs`, `stats`, `stop`/`start`), which read it directly so they work while the agent
//! is down.
//!
//! Layout under the state directory:
//! - `containers/<name>/state.json` — the container's record (`runtime::record`): the
//!   current instance, the spec it was created from, image, network addresses,
//!   counters, operator mark.
//! - `instances/<id>/` — [`InstanceDirs`]: `bundle/config.json`, `rootfs/` (overlay
//!   mount point), `upper/`, `work/`, `ctr.log` (+ rotations), `exit.json` (written by
//!   the shim when the container's init exits), `pid` (by the runtime), `shim.pid`,
//!   `hosts`, `resolv.conf`, `hostname`.
//!
//! Every write is atomic: temp file, fsync, rename, fsync of the directory.
//!
//! Modes are explicit, never left to the umask (docs/layout.md): directories berth
//! creates under the state and run directories are 0700 and files 0600, except what a
//! container sees through a bind mount or as its root (`hosts`, `resolv.conf`,
//! `hostname` 0644; `upper/` 0755). [`create_dir`], [`private_dir`] and
//! [`write_atomic_mode`] are the one place that creates them.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The exit status the shim records, `instances/<id>/exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + signal when a signal ended the process.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at: String,
}

/// Paths of one instance's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDirs {
    pub root: PathBuf,
}

impl InstanceDirs {
    pub fn new(state_dir: &Path, instance: &str) -> Self {
        InstanceDirs {
            root: state_dir.join("instances").join(instance),
        }
    }
    pub fn bundle(&self) -> PathBuf {
        self.root.join("bundle")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("bundle/config.json")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.root.join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("ctr.log")
    }
    pub fn exit_file(&self) -> PathBuf {
        self.root.join("exit.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("pid")
    }
    pub fn shim_pid_file(&self) -> PathBuf {
        self.root.join("shim.pid")
    }
    pub fn hosts(&self) -> PathBuf {
        self.root.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
    pub fn hostname(&self) -> PathBuf {
        self.root.join("hostname")
    }

    /// Creates the instance's directories with their modes: `instances/`, the instance
    /// directory, `bundle/` and `work/` 0700 (also when they exist), `rootfs/` (a mount point)
    /// 0700 and `upper/` 0755 when they are made. `upper/` is the container's `/` once
    /// the overlay is mounted, so its mode is what the container's users see there; an
    /// existing one is set again only while it is empty (never used by a container).
    pub fn create(&self) -> io::Result<()> {
        if let Some(instances) = self.root.parent() {
            private_dir(instances)?;
        }
        private_dir(&self.root)?;
        private_dir(&self.bundle())?;
        private_dir(&self.work())?;
        create_dir(&self.rootfs(), PRIVATE_DIR)?;
        let upper = self.upper();
        if !create_dir(&upper, CONTAINER_ROOT_DIR)? && fs::read_dir(&upper)?.next().is_none() {
            fs::set_permissions(&upper, Permissions::from_mode(CONTAINER_ROOT_DIR))?;
        }
        Ok(())
    }

    /// The recorded exit status, if the container's init has exited.
    pub fn exit_status(&self) -> io::Result<Option<ExitStatus>> {
        match fs::read(self.exit_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The container's init pid as the runtime recorded it.
    pub fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Instance ids that have a directory under `instances/`.
pub fn instance_ids(state_dir: &Path) -> io::Result<Vec<String>> {
    let dir = state_dir.join("instances");
    let mut out = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries {
                out.push(e?.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Directories of berth's own under the state and run directories.
pub const PRIVATE_DIR: u32 = 0o700;
/// Files of berth's own: records, blobs, bundles, locks.
pub const PRIVATE_FILE: u32 = 0o600;
/// Files a container reads through a bind mount as any user (`/etc/hostname`,
/// `/etc/hosts`, `/etc/resolv.conf`), as Docker makes them.
pub const CONTAINER_FILE: u32 = 0o644;
/// An instance's `upper/`, the root directory of its container.
pub const CONTAINER_ROOT_DIR: u32 = 0o755;

/// Creates the directory `path` with exactly `mode` whatever the umask, and its
/// missing parents 0700. An existing directory is left as it is. Returns whether it
/// was created. (`mkdir(2)` masks its mode with the umask, so the mode is set again
/// after; until then it is at most as open as `mode`.)
pub fn create_dir(path: &Path, mode: u32) -> io::Result<bool> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(parent)?;
    }
    match DirBuilder::new().mode(mode & PRIVATE_DIR).create(path) {
        Ok(()) => {
            fs::set_permissions(path, Permissions::from_mode(mode))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the directory `path` (and missing parents) 0700, and sets an existing one
/// to 0700 too: for directories that are berth's alone (the state and run directories,
/// stores, an instance's directory and bundle).
pub fn private_dir(path: &Path) -> io::Result<()> {
    if !create_dir(path, PRIVATE_DIR)? && fs::metadata(path)?.mode() & 0o7777 != PRIVATE_DIR {
        fs::set_permissions(path, Permissions::from_mode(PRIVATE_DIR))?;
    }
    Ok(())
}

/// [`private_dir`] for the state and run directories themselves, which must also be
/// safe from other local users all the way up (as sshd's `StrictModes` checks a home
/// directory): the directory and every ancestor of its real path owned by root (or by
/// the user berth runs as), and none writable by others unless sticky (`/tmp`), where
/// others cannot rename or remove what is not theirs. A state directory a local user
/// made, or one below a directory they can write, would let them swap a bundle's
/// `config.json` before the OCI runtime reads it as root.
pub fn trusted_dir(path: &Path) -> io::Result<()> {
    // Before anything is created or chmod'ed through it: a symbolic link on the way
    // that another user could make or swap would send root's writes where they say.
    trusted_links(path)?;
    private_dir(path)?;
    let real = fs::canonicalize(path)?;
    let me = rustix::process::geteuid().as_raw();
    for dir in real.ancestors() {
        let m = fs::symlink_metadata(dir)?;
        let refuse = |why: String| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not safe for berth's state: {why}",
                    if dir == real {
                        dir.display().to_string()
                    } else {
                        format!("{} (above {})", dir.display(), real.display())
                    }
                ),
            )
        };
        if m.uid() != 0 && m.uid() != me {
            return Err(refuse(format!("it is owned by uid {}", m.uid())));
        }
        let mode = m.mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(refuse(format!(
                "others can write to it (mode {:o}) and it is not sticky",
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// Every symbolic link on `path` as given (not only where it leads) is owned by root or
/// by this user, in a directory likewise owned that no one else can write to unless it
/// is sticky: no other user can have made the link, or swap it later.
fn trusted_links(path: &Path) -> io::Result<()> {
    let me = rustix::process::geteuid().as_raw();
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut at = PathBuf::new();
    for part in abs.components() {
        at.push(part);
        let m = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            // Below here nothing exists yet: berth creates it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !m.file_type().is_symlink() {
            continue;
        }
        let refuse = |why: String| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not safe for berth's state: the symbolic link {} {why}",
                    path.display(),
                    at.display()
                ),
            )
        };
        if m.uid() != 0 && m.uid() != me {
            return Err(refuse(format!("is owned by uid {}", m.uid())));
        }
        let parent = at.parent().unwrap_or(Path::new("/"));
        let p = fs::metadata(parent)?;
        if p.uid() != 0 && p.uid() != me {
            return Err(refuse(format!(
                "is in a directory owned by uid {}",
                p.uid()
            )));
        }
        if p.mode() & 0o022 != 0 && p.mode() & 0o1000 == 0 {
            return Err(refuse(format!(
                "is in a directory others can write to (mode {:o})",
                p.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Reads a small file of berth's own state: not through a symlink, never blocking on a
/// FIFO, a regular file of at most `max` bytes (`InvalidData` past it). Whatever was
/// planted there, a reader's memory and time stay bounded.
pub fn read_small(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// `open(2)` flags for [`read_small`].
mod libc_flags {
    pub const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    pub const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;
}

/// Writes `bytes` to `path` atomically, mode 0600: a temp file in the same directory,
/// fsync, rename, fsync of the directory. Creates missing parent directories 0700.
/// The one crash-safe write of the agent: a crash leaves the old file or the new one,
/// never a torn one, and a completed write survives a power loss.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, PRIVATE_FILE)
}

/// [`write_atomic`] with the file's mode `mode`, whatever the umask.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() {
        DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(dir)?;
    }
    write_atomic_via(dir, path, bytes, mode)
}

/// [`write_atomic_mode`] with the temp file in `tmp_dir`, which must be on `path`'s
/// filesystem (a content store keeps temp files out of the directory it scans).
pub fn write_atomic_via(tmp_dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .permissions(Permissions::from_mode(mode & PRIVATE_FILE))
        .tempfile_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_parent(path)
}

/// Fsyncs the directory holding `path`, which makes a rename into it durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

/// Opens (creating it 0600 if needed) a lock file, for `flock`; never through a
/// symbolic link planted at its path.
pub fn open_lock_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Whether an I/O failure may clear up by itself, so that trying the same thing again
/// later can work: the disk or a quota is full, memory or a resource is short for now,
/// something timed out or was interrupted. Anything else (a missing file, a permission,
/// an invalid argument) stays until the input or the host's setup changes.
pub fn io_is_transient(err: &io::Error) -> bool {
    use nix::errno::Errno;
    const TRANSIENT: [Errno; 9] = [
        Errno::ENOSPC,
        Errno::EDQUOT,
        Errno::ENOMEM,
        Errno::EAGAIN,
        Errno::EBUSY,
        Errno::EINTR,
        Errno::ETIMEDOUT,
        Errno::EMFILE,
        Errno::ENFILE,
    ];
    if let Some(code) = err.raw_os_error() {
        return TRANSIENT.iter().any(|e| *e as i32 == code);
    }
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ResourceBusy
    )
}

/// Whether an error's cause chain holds a transient I/O failure ([`io_is_transient`]):
/// how the errors of modules whose only retryable causes are I/O classify themselves.
pub fn chain_is_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io_is_transient(io)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dir_others_could_tamper_with_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        trusted_dir(&base.join("state")).unwrap();
        // Below a directory others can write (and not sticky): refused, naming it.
        fs::set_permissions(&base, Permissions::from_mode(0o777)).unwrap();
        let e = trusted_dir(&base.join("state")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("others can write"), "{e}");
        // Sticky, as /tmp is: others cannot rename what is not theirs.
        fs::set_permissions(&base, Permissions::from_mode(0o1777)).unwrap();
        trusted_dir(&base.join("state")).unwrap();
        // A directory a local user made is theirs to swap: refused (needs root to chown).
        if crate::testing::have_root() {
            let theirs = base.join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = trusted_dir(&theirs).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn a_full_disk_is_transient_and_a_missing_file_is_not() {
        let os = |e: nix::errno::Errno| io::Error::from_raw_os_error(e as i32);
        assert!(io_is_transient(&os(nix::errno::Errno::ENOSPC)));
        assert!(io_is_transient(&os(nix::errno::Errno::ETIMEDOUT)));
        assert!(io_is_transient(&io::Error::from(io::ErrorKind::TimedOut)));
        assert!(!io_is_transient(&os(nix::errno::Errno::ENOENT)));
        assert!(!io_is_transient(&os(nix::errno::Errno::EACCES)));
        assert!(!io_is_transient(&io::Error::other("bad")));
    }

    #[test]
    fn a_transient_cause_is_found_deep_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner(#[source] io::Error);
        let full = Outer(Inner(io::Error::from_raw_os_error(
            nix::errno::Errno::ENOSPC as i32,
        )));
        assert!(chain_is_transient(&full));
        let missing = Outer(Inner(io::Error::from(io::ErrorKind::NotFound)));
        assert!(!chain_is_transient(&missing));
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn files_and_directories_get_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("containers/web/state.json");
        write_atomic(&rec, b"{}").unwrap();
        assert_eq!(mode(&rec), 0o600);
        assert_eq!(mode(&dir.path().join("containers")), 0o700);
        assert_eq!(mode(&dir.path().join("containers/web")), 0o700);
        let host = dir.path().join("inst/hostname");
        write_atomic_mode(&host, b"web\n", CONTAINER_FILE).unwrap();
        assert_eq!(mode(&host), 0o644);
        // Replacing keeps the mode asked for, not the old file's.
        write_atomic(&host, b"web\n").unwrap();
        assert_eq!(mode(&host), 0o600);

        let d = dir.path().join("a/b");
        assert!(create_dir(&d, 0o755).unwrap());
        assert_eq!((mode(&dir.path().join("a")), mode(&d)), (0o700, 0o755));
        fs::set_permissions(&d, Permissions::from_mode(0o711)).unwrap();
        assert!(!create_dir(&d, 0o755).unwrap());
        assert_eq!(mode(&d), 0o711, "an existing directory is left alone");
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700, "a private one is set again");
        fs::write(dir.path().join("file"), b"").unwrap();
        assert!(create_dir(&dir.path().join("file"), 0o700).is_err());
    }

    #[test]
    fn instance_directories_are_private_but_upper() {
        let state = tempfile::tempdir().unwrap();
        let dirs = InstanceDirs::new(state.path(), "web-0123abcd");
        // As an older berth (or a umask of 000) left them.
        for d in [dirs.bundle(), dirs.upper()] {
            fs::create_dir_all(&d).unwrap();
            fs::set_permissions(&d, Permissions::from_mode(0o777)).unwrap();
        }
        dirs.create().unwrap();
        assert_eq!(mode(&state.path().join("instances")), 0o700);
        for d in [dirs.root.clone(), dirs.bundle(), dirs.work(), dirs.rootfs()] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&dirs.upper()), 0o755);
        // An upper the container has written to keeps the mode the container gave /.
        fs::write(dirs.upper().join("x"), b"").unwrap();
        fs::set_permissions(dirs.upper(), Permissions::from_mode(0o750)).unwrap();
        dirs.create().unwrap();
        assert_eq!(mode(&dirs.upper()), 0o750);
    }

    #[test]
    fn a_state_dir_through_a_link_another_user_could_make_or_swap_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        fs::set_permissions(base, Permissions::from_mode(0o755)).expect("chmod");
        let victim = base.join("victim");
        fs::create_dir(&victim).expect("mkdir");
        fs::set_permissions(&victim, Permissions::from_mode(0o755)).expect("chmod");
        // A link in a directory everyone can write to (not sticky): refused, and the
        // directory it points at is left as it was.
        let open = base.join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, Permissions::from_mode(0o777)).expect("chmod");
        std::os::unix::fs::symlink(&victim, open.join("state")).expect("link");
        let e = trusted_dir(&open.join("state")).expect_err("refused");
        assert!(e.to_string().contains("others can write"), "{e}");
        assert_eq!(
            fs::metadata(&victim).expect("victim").mode() & 0o7777,
            0o755
        );
        // A link this user made in a directory only it can write: followed.
        let own = base.join("own");
        fs::create_dir(&own).expect("mkdir");
        fs::set_permissions(&own, Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(&victim, own.join("state")).expect("link");
        trusted_links(&own.join("state")).expect("own link");
        // In a sticky directory, a link another user owns (root only: lchown).
        if rustix::process::geteuid().is_root() {
            let sticky = base.join("sticky");
            fs::create_dir(&sticky).expect("mkdir");
            fs::set_permissions(&sticky, Permissions::from_mode(0o1777)).expect("chmod");
            let link = sticky.join("state");
            std::os::unix::fs::symlink(&victim, &link).expect("link");
            trusted_links(&link).expect("root's own link in a sticky directory");
            std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
            let e = trusted_links(&link).expect_err("a link nobody owns");
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }
}
