//! The state directory's lock: one writer at a time (`berth apply`, the operator
//! commands, later each pass of the agent), held for the length of one pass.
//!
//! Contract:
//! - the lock is an `flock` on `<state_dir>/lock` (0600, in the 0700 state directory);
//! - while it holds the lock, a writer keeps its pid, its command and the time it took
//!   the lock in that file, one JSON object, so that a waiter can name it;
//! - a waiter says once who it waits for, and gives up after its timeout with the same
//!   sentence: an agent on a node nobody logs into must not hang forever behind a stuck
//!   operator command;
//! - every writer bumps the state directory's generation (`<state_dir>/generation`, a
//!   decimal u64 written atomically) once, under the lock, at the end of its changes: a
//!   plan made from an older generation was made before another writer's changes, and
//!   is not executed (`reconcile::pass` plans again).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::runtime::state::{open_lock_file, trusted_dir};

/// How often a waiter tries the lock again: short next to a pass, long next to a
/// syscall.
const POLL: Duration = Duration::from_millis(50);

/// The writer holding the lock, as it wrote itself into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// The command line that took the lock (`berth apply`).
    pub command: String,
    /// When it took the lock, in seconds since the epoch.
    pub since: u64,
}

impl Holder {
    /// This process, taking the lock now for `command`.
    pub fn me(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            command: command.to_string(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// Who holds the lock, in words: "another berth (pid 1234, `berth apply`) holds the
/// state directory since 12:03:04 UTC". `None`: the holder did not say (an older berth,
/// or it is between taking the lock and writing its name).
pub fn describe(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => {
            let stamp = crate::util::rfc3339::format(h.since);
            // `YYYY-MM-DDTHH:MM:SSZ`: the time of day is what a waiting operator needs.
            let time = stamp.get(11..19).unwrap_or(&stamp);
            format!(
                "another berth (pid {}, `{}`) holds the state directory since {time} UTC",
                h.pid, h.command
            )
        }
        None => "another berth holds the state directory".to_string(),
    }
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create state directory {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The holder kept it past the waiter's timeout.
    #[error("{}; gave up after {}", describe(holder.as_ref()), humantime::format_duration(*waited))]
    Timeout {
        holder: Option<Holder>,
        waited: Duration,
    },
}

/// The held lock; released when dropped (the holder's name is cleared first).
#[derive(Debug)]
pub struct StateLock {
    file: File,
    state_dir: PathBuf,
}

impl StateLock {
    /// Bumps the state directory's generation, once per writer at the end of its
    /// changes; returns the new one. Only a holder of the lock can.
    pub fn bump_generation(&self) -> io::Result<u64> {
        let next = generation(&self.state_dir)?.wrapping_add(1);
        super::state::write_atomic(
            &generation_path(&self.state_dir),
            next.to_string().as_bytes(),
        )?;
        Ok(next)
    }
}

fn generation_path(state_dir: &Path) -> PathBuf {
    state_dir.join("generation")
}

/// The state directory's generation: how many times writers changed it (0 before the
/// first). A file that does not parse is an error, not a silent 0: a plan compared
/// against it would be taken as current.
pub fn generation(state_dir: &Path) -> io::Result<u64> {
    let path = generation_path(state_dir);
    match crate::runtime::state::read_small(&path, 64)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
    {
        Ok(text) => text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a generation: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // A stale name would mislead the next waiter's message; the flock itself goes
        // with the file descriptor.
        let _ = self.file.set_len(0);
    }
}

/// Takes the lock of `state_dir` (created 0700 if missing) for `command`. When another
/// writer holds it, calls `waiting` once with who that is, then waits at most
/// `timeout`.
pub fn lock(
    state_dir: &Path,
    command: &str,
    timeout: Duration,
    waiting: &mut dyn FnMut(&str),
) -> Result<StateLock, LockError> {
    trusted_dir(state_dir).map_err(|source| LockError::Dir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join("lock");
    let lock_err = |source| LockError::Lock {
        path: path.clone(),
        source,
    };
    let file = open_lock_file(&path).map_err(lock_err)?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        let holder = read_holder(&path);
        // Between taking the lock and writing its name, a holder is anonymous for a
        // moment: give it a few polls to say who it is.
        if !told && (holder.is_some() || start.elapsed() >= POLL * 4) {
            waiting(&format!("{}; waiting", describe(holder.as_ref())));
            told = true;
        }
        if start.elapsed() >= timeout {
            return Err(LockError::Timeout {
                holder,
                waited: timeout,
            });
        }
        std::thread::sleep(POLL.min(timeout.saturating_sub(start.elapsed())));
    }
    let me = serde_json::to_vec(&Holder::me(command)).unwrap_or_default();
    file.set_len(0).map_err(lock_err)?;
    file.write_all_at(&me, 0).map_err(lock_err)?;
    Ok(StateLock {
        file,
        state_dir: state_dir.to_path_buf(),
    })
}

/// The holder named in the lock file at `path`, if it named itself.
pub fn read_holder(path: &Path) -> Option<Holder> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_holder_names_itself_and_clears_its_name_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let l = lock(&state, "berth apply", Duration::from_secs(1), &mut |_| {
            panic!("nobody holds it")
        })
        .unwrap();
        let h = read_holder(&state.join("lock")).unwrap();
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.command, "berth apply");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("lock")), 0o600);
        drop(l);
        assert_eq!(read_holder(&state.join("lock")), None);
    }

    #[test]
    fn a_waiter_names_the_holder_once_and_gives_up_after_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock(dir.path(), "berth stop web", Duration::ZERO, &mut |_| {}).unwrap();
        // A second open file description of the same file: flock conflicts as between
        // two processes.
        let mut said = Vec::new();
        let t = Instant::now();
        let err = lock(
            dir.path(),
            "berth apply",
            Duration::from_millis(300),
            &mut |s| said.push(s.to_string()),
        )
        .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert_eq!(said.len(), 1, "{said:?}");
        let want = format!(
            "another berth (pid {}, `berth stop web`) holds the state directory since ",
            std::process::id()
        );
        assert!(said[0].starts_with(&want), "{}", said[0]);
        assert!(said[0].ends_with(" UTC; waiting"), "{}", said[0]);
        let msg = err.to_string();
        assert!(msg.starts_with(&want), "{msg}");
        assert!(msg.ends_with("; gave up after 300ms"), "{msg}");
    }

    #[test]
    fn a_waiter_proceeds_when_the_holder_releases() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path(), "berth apply", Duration::ZERO, &mut |_| {}).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let mut said = 0;
        let l = lock(
            dir.path(),
            "berth rm web",
            Duration::from_secs(10),
            &mut |_| said += 1,
        );
        release.join().unwrap();
        assert!(l.is_ok());
        assert_eq!(said, 1);
    }

    #[test]
    fn each_bump_raises_the_generation_by_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(generation(dir.path()).unwrap(), 0);
        let l = lock(dir.path(), "berth apply", Duration::ZERO, &mut |_| {}).unwrap();
        assert_eq!(l.bump_generation().unwrap(), 1);
        assert_eq!(l.bump_generation().unwrap(), 2);
        drop(l);
        assert_eq!(generation(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join("generation"), "two").unwrap();
        assert_eq!(
            generation(dir.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn the_time_of_day_is_utc() {
        let h = Holder {
            pid: 1234,
            command: "berth apply".into(),
            since: 43_384, // 1970-01-01T12:03:04Z
        };
        assert_eq!(
            describe(Some(&h)),
            "another berth (pid 1234, `berth apply`) holds the state directory since 12:03:04 UTC"
        );
    }
}
