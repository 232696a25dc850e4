//! The local watch: when `source.url` is a repository on this host (`file://` or a
//! path), a move of the followed ref is seen at once with inotify, and the agent
//! fetches then rather than at its next poll.
//!
//! - Git moves a ref by writing `<ref>.lock` and renaming it over the ref; `git
//!   pack-refs` and `git gc` rewrite `packed-refs` the same way. So the watch is on the
//!   directory holding the ref's loose file (`refs/heads/`, and the directories of a
//!   branch name with slashes), on the git directory (`packed-refs`), and on
//!   `reftable/` (`tables.list`) for a repository in the reftable format.
//! - A burst of events is gathered for [`DEBOUNCE`]; then the ref is read (its loose
//!   file, else its line of `packed-refs`) and reported only when it changed: another
//!   branch, a `git gc` or an update that was abandoned reports nothing. In the
//!   reftable format any ref's update is reported (the tables are not read here).
//! - A directory that is not there yet (a repository still to be made, `refs/heads/
//!   release/` before the first `release/…` branch) is waited for from its nearest
//!   ancestor that is; a directory deleted or replaced is watched again.
//! - Bare and non-bare repositories, a `.git` file (`gitdir: …`) and a linked worktree
//!   (`commondir`) are followed to where the refs are.
//! - A pinned commit cannot move and is not watched; network URLs are not watched
//!   (webhooks and polling are theirs).
//! - Reports are paced: at most one each [`PACE`]; a move in the quiet time after a
//!   report is reported once at its end, never dropped.
//!
//! The agent runs as root and the repository may belong to a user of the host, so:
//! - a repository whose work tree or git directory (the one a `.git` file or
//!   `commondir` names too) is owned by neither root nor the agent's user is not read
//!   nor watched, as libgit2 would not fetch from it ([`WatchError::NotOwned`]);
//! - a file is opened without following a symbolic link in its last component (under
//!   the git directory: in any component), without waiting (a FIFO), and read only
//!   when it is a regular file, at most so many bytes ([`MAX_SMALL_FILE`],
//!   [`MAX_PACKED_REFS`] in lines of at most [`MAX_LINE`]);
//! - everything that touches the repository runs on the watch's thread, and the agent
//!   waits for that thread a bounded time only (to start: [`READY_WITHIN`]; to stop:
//!   [`STOP_WITHIN`]).
//!
//! It runs on a thread of its own until its [`Watch`] is dropped or the callback says
//! nobody listens any more. It reads the repository as files and links no libgit2, so
//! that `berth-agentd` can run it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_spec::node::{GitRef, SourceSection, Transport};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// How long a burst of events (the lock file, its rename, the reflog) is gathered
/// before the ref is read: git's update of a ref takes far less, and a fetch costs
/// more than this wait.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// How soon a directory that went while it was being watched is looked for again.
const RETRY: Duration = Duration::from_millis(200);
/// The most read of a loose ref, a `.git` file, `commondir` or `tables.list`.
pub const MAX_SMALL_FILE: u64 = 4096;
/// The most read of `packed-refs` (about 270 000 refs), a line at a time.
pub const MAX_PACKED_REFS: u64 = 16 << 20;
/// The longest line of `packed-refs` read: an id and a ref name are far shorter; a
/// longer line ends the read (it is not git's file).
pub const MAX_LINE: u64 = 4096;
/// The least time between two reports.
pub const PACE: Duration = Duration::from_secs(1);
/// How long [`start`] waits for the thread's first look at the repository; past it,
/// the watch starts when the repository answers.
pub const READY_WITHIN: Duration = Duration::from_secs(2);
/// How long dropping a [`Watch`] waits for its thread to end; past it, the thread is
/// left to end on its own.
pub const STOP_WITHIN: Duration = Duration::from_secs(1);

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start inotify")]
    Init(#[source] std::io::Error),
    #[error("cannot watch {}", .path.display())]
    Add {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the watch's thread")]
    Spawn(#[source] std::io::Error),
    #[error("the watch's thread ended before it started")]
    Ended,
    #[error(
        "{} is owned by uid {owner}, neither root nor the agent's user: it is not read (libgit2 does not fetch from it either)",
        .path.display()
    )]
    NotOwned { path: PathBuf, owner: u32 },
}

/// What is watched: a ref of a repository on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The repository as `source.url` names it: a work tree or a bare repository.
    pub repo: PathBuf,
    /// `refs/heads/<branch>` or `refs/tags/<tag>`.
    pub refname: String,
}

impl Target {
    /// The local repository and ref `section` follows; none for a network URL or a
    /// pinned commit. A relative path is relative to `base` (the node configuration's
    /// directory; the current one when none), as the fetch takes it.
    pub fn of(section: &SourceSection, base: Option<&Path>) -> Option<Target> {
        if section.transport != Transport::Local {
            return None;
        }
        let refname = match &section.git_ref {
            GitRef::Branch(b) => format!("refs/heads/{b}"),
            GitRef::Tag(t) => format!("refs/tags/{t}"),
            GitRef::Commit(_) => return None,
        };
        Some(Target {
            repo: local_path(&section.url, base),
            refname,
        })
    }
}

/// The watch's thread; dropping this ends it.
#[derive(Debug)]
pub struct Watch {
    /// Closed on drop: the thread sees its peer hang up.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.stop.take());
        let Some(t) = self.thread.take() else {
            return;
        };
        let until = Instant::now() + STOP_WITHIN;
        while !t.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            // Stuck in the file system (the thread never waits otherwise): it ends
            // when the file system answers, or with the process.
            tracing::warn!(target: "source", "the local watch's thread does not end; it is left behind");
        }
    }
}

/// Watches `target` and calls `on_change` with what moved (`local watch: refs/heads/main
/// moved`) each time the ref changes; it stops when `on_change` returns false. An
/// error when nothing can be watched (no inotify, no permission): polling then does
/// the work. Once started, a directory that cannot be watched is said once in the log.
pub fn start<F>(target: Target, on_change: F) -> Result<Watch, WatchError>
where
    F: FnMut(&str) -> bool + Send + 'static,
{
    let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| WatchError::Init(e.into()))?;
    let (repo, refname) = (target.repo.clone(), target.refname.clone());
    let mut w = Watcher {
        ino,
        target,
        watches: HashMap::new(),
        seen: None,
        warned: false,
    };
    let (stop, peer) = UnixStream::pair().map_err(WatchError::Spawn)?;
    let (ready, started) = mpsc::channel();
    // The repository is touched on the thread only: a file system that does not
    // answer keeps the agent waiting READY_WITHIN at most.
    let thread = std::thread::Builder::new()
        .name("source-watch".into())
        .spawn(move || {
            // Read after the watches are set: a move after this read is an event.
            let first = w.arm();
            if first.is_ok() {
                w.seen = ref_value(&w.target);
            }
            match first {
                Ok(complete) => {
                    let _ = ready.send(Ok(()));
                    w.run(&peer, complete, on_change);
                }
                Err(e) => {
                    if let Err(mpsc::SendError(Err(e))) = ready.send(Err(e)) {
                        tracing::warn!(target: "source", error = %crate::util::error_chain(&e), "the local repository is not watched; it is polled every source.interval");
                    }
                }
            }
        })
        .map_err(WatchError::Spawn)?;
    match started.recv_timeout(READY_WITHIN) {
        Ok(Ok(())) => {
            tracing::info!(target: "source", repository = %repo.display(), r#ref = %refname, "watching the local repository: a move of the ref is fetched at once");
        }
        Ok(Err(e)) => return Err(e),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::warn!(target: "source", repository = %repo.display(), "the local repository does not answer; it is watched once it does");
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => return Err(WatchError::Ended),
    }
    Ok(Watch {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Reports at most one each [`PACE`]: one offered in the quiet time after a report
/// waits for its end, the latest of several in its place.
#[derive(Debug, Default)]
struct Pacer {
    /// When the last report went.
    last: Option<Instant>,
    pending: Option<String>,
}

impl Pacer {
    fn offer(&mut self, why: String) {
        self.pending = Some(why);
    }

    /// When the pending report is due; none without one.
    fn due(&self, now: Instant) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(self.last.map_or(now, |l| (l + PACE).max(now)))
    }

    /// The report to send at `now`, if one is due.
    fn take(&mut self, now: Instant) -> Option<String> {
        if self.due(now)? > now {
            return None;
        }
        self.last = Some(now);
        self.pending.take()
    }
}

/// What one watched directory's events mean.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Interest {
    /// Names whose change may have moved the ref: it is read.
    read: Vec<OsString>,
    /// Names whose appearance changes what must be watched: everything is watched
    /// again.
    rearm: Vec<OsString>,
}

impl Interest {
    fn merge(&mut self, other: Interest) {
        for n in other.read {
            if !self.read.contains(&n) {
                self.read.push(n);
            }
        }
        for n in other.rearm {
            if !self.rearm.contains(&n) {
                self.rearm.push(n);
            }
        }
    }
}

/// Created, renamed into, written; the directory itself deleted or moved (its watch
/// then ends: `IN_IGNORED` comes on its own).
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

struct Watcher {
    ino: Inotify,
    target: Target,
    watches: HashMap<WatchDescriptor, Interest>,
    /// The ref's value when last read.
    seen: Option<String>,
    /// A directory that could not be watched was said in the log already.
    warned: bool,
}

impl Watcher {
    /// Watches what [`wanted`] says now, in place of what was watched. False when a
    /// directory went before it could be watched (try again soon). A directory that
    /// cannot be watched (permission, the watch limit) is an error once the others are
    /// watched.
    fn arm(&mut self) -> Result<bool, WatchError> {
        for (wd, _) in self.watches.drain() {
            let _ = self.ino.rm_watch(wd);
        }
        let (mut complete, mut failed) = (true, None);
        for (dir, interest) in wanted(&self.target)? {
            match self.ino.add_watch(&dir, mask()) {
                // Two paths to one directory (a symbolic link) share a watch.
                Ok(wd) => self.watches.entry(wd).or_default().merge(interest),
                Err(Errno::ENOENT | Errno::ENOTDIR) => complete = false,
                Err(e) => {
                    failed.get_or_insert(WatchError::Add {
                        path: dir,
                        source: e.into(),
                    });
                }
            }
        }
        failed.map_or(Ok(complete), Err)
    }

    /// Whether `events` ask for a read of the ref, and for watching again.
    fn consider(&self, events: &[InotifyEvent]) -> (bool, bool) {
        let (mut read, mut rearm) = (false, false);
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                return (true, true);
            }
            let Some(interest) = self.watches.get(&ev.wd) else {
                continue;
            };
            let gone = AddWatchFlags::IN_IGNORED
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF;
            if ev.mask.intersects(gone) {
                rearm = true;
            } else if let Some(name) = &ev.name {
                rearm |= interest.rearm.contains(name);
                read |= interest.read.contains(name);
            }
        }
        (read, rearm)
    }

    fn warn_once(&mut self, e: &WatchError) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(target: "source", error = %crate::util::error_chain(e), "the local watch misses a directory; polling covers it");
        }
    }

    /// The thread's loop: until `stop`'s peer hangs up or `on_change` returns false.
    fn run<F>(mut self, stop: &UnixStream, complete: bool, mut on_change: F)
    where
        F: FnMut(&str) -> bool,
    {
        // When to read the ref, and when to watch again.
        let mut read_at: Option<Instant> = None;
        let mut arm_at: Option<Instant> = (!complete).then(|| Instant::now() + RETRY);
        let mut pacer = Pacer::default();
        loop {
            let now = Instant::now();
            let timeout = [read_at, arm_at, pacer.due(now)]
                .into_iter()
                .flatten()
                .min()
                .and_then(|t| Timespec::try_from(t.saturating_duration_since(now)).ok());
            let mut fds = [
                PollFd::new(&self.ino, PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!(target: "source", error = %e, "the local watch ends; polling covers it");
                    return;
                }
            }
            if !fds[1].revents().is_empty() {
                return;
            }
            let readable = fds[0].revents().contains(PollFlags::IN);
            let now = Instant::now();
            if readable {
                match self.ino.read_events() {
                    Ok(events) => {
                        let (read, rearm) = self.consider(&events);
                        if rearm {
                            arm_at.get_or_insert(now);
                        }
                        if read {
                            read_at.get_or_insert(now + DEBOUNCE);
                        }
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(e) => {
                        tracing::warn!(target: "source", error = %e, "the local watch ends; polling covers it");
                        return;
                    }
                }
            }
            if arm_at.is_some_and(|t| t <= now) {
                arm_at = match self.arm() {
                    Ok(true) => None,
                    Ok(false) => Some(now + RETRY),
                    Err(e @ WatchError::NotOwned { .. }) => {
                        tracing::warn!(target: "source", error = %crate::util::error_chain(&e), "the local watch ends; the repository is polled every source.interval");
                        return;
                    }
                    Err(e) => {
                        self.warn_once(&e);
                        None
                    }
                };
                tracing::debug!(target: "source", watches = self.watches.len(), "the local watch follows the repository's directories again");
                // What appeared meanwhile may be the ref itself.
                read_at.get_or_insert(now + DEBOUNCE);
            }
            if read_at.is_some_and(|t| t <= now) {
                read_at = None;
                let value = ref_value(&self.target);
                if value != self.seen {
                    let what = if value.is_some() {
                        "moved"
                    } else {
                        "was deleted"
                    };
                    self.seen = value;
                    pacer.offer(format!("local watch: {} {what}", self.target.refname));
                }
            }
            if let Some(why) = pacer.take(now)
                && !on_change(&why)
            {
                return;
            }
        }
    }
}

/// The directories to watch for `target` as the disk is now, each with what its
/// events mean.
fn wanted(target: &Target) -> Result<BTreeMap<PathBuf, Interest>, WatchError> {
    let mut want = BTreeMap::new();
    let home = refs_home(&target.repo)?;
    // A work tree's `.git` that appears, or a `.git` file that points elsewhere.
    put(&mut want, &target.repo, ".git", false);
    let loose = home.join(&target.refname);
    if let (Some(dir), Some(name)) = (loose.parent(), loose.file_name()) {
        put(&mut want, dir, &name.to_string_lossy(), true);
    }
    put(&mut want, &home, "packed-refs", true);
    put(&mut want, &home.join("reftable"), "tables.list", true);
    Ok(want)
}

/// Adds `name` in `dir` to `want`; a `dir` not there yet is waited for from its
/// nearest ancestor that is.
fn put(want: &mut BTreeMap<PathBuf, Interest>, dir: &Path, name: &str, read: bool) {
    let (mut dir, mut name, mut read) = (dir.to_path_buf(), OsString::from(name), read);
    while !dir.is_dir() {
        let (Some(parent), Some(base)) = (dir.parent(), dir.file_name()) else {
            return;
        };
        name = base.to_os_string();
        read = false;
        dir = parent.to_path_buf();
    }
    let mut interest = Interest::default();
    if read {
        interest.read.push(name);
    } else {
        interest.rearm.push(name);
    }
    want.entry(dir).or_default().merge(interest);
}

/// Where `repo` keeps its refs: its git directory (`.git`, what a `.git` file's
/// `gitdir:` names, or `repo` itself when it is bare), or the common directory a
/// linked worktree's `commondir` names. Each directory on the way that is there must
/// be owned by root or the agent's user ([`owned`]).
fn refs_home(repo: &Path) -> Result<PathBuf, WatchError> {
    owned(repo)?;
    let dotgit = repo.join(".git");
    let gitdir = if dotgit.is_dir() {
        dotgit
    } else if let Some(text) = read_small(&dotgit)
        && let Some(dir) = text.lines().next().and_then(|l| l.strip_prefix("gitdir:"))
    {
        let dir = repo.join(dir.trim());
        fs::canonicalize(&dir).unwrap_or(dir)
    } else {
        repo.to_path_buf()
    };
    owned(&gitdir)?;
    let home = match read_small(&gitdir.join("commondir")) {
        Some(c) if !c.trim().is_empty() => {
            let common = gitdir.join(c.trim());
            fs::canonicalize(&common).unwrap_or(common)
        }
        _ => gitdir,
    };
    owned(&home)?;
    Ok(home)
}

/// Whether `uid` may own what the agent reads: root or the agent's user (libgit2's
/// rule for a repository it fetches from).
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// `path` owned by a [`trusted`] user, or not there (nothing to read yet).
fn owned(path: &Path) -> Result<(), WatchError> {
    match fs::metadata(path) {
        Ok(m) if !trusted(m.uid()) => Err(WatchError::NotOwned {
            path: path.to_path_buf(),
            owner: m.uid(),
        }),
        _ => Ok(()),
    }
}

/// The ref's value as git would read it: its loose file, else its line of
/// `packed-refs`; in the reftable format, the list of tables (any ref's update).
/// Everything is read under the git directory opened once (owned by a [`trusted`]
/// user), through no symbolic link.
fn ref_value(target: &Target) -> Option<String> {
    let home = refs_home(&target.repo).ok()?;
    let dir = rustix::fs::open(
        &home,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if !trusted(rustix::fs::fstat(&dir).ok()?.st_uid) {
        return None;
    }
    if let Some(tables) = open_regular(Some(&dir), Path::new("reftable/tables.list"))
        .and_then(|f| read_text(f, MAX_SMALL_FILE))
    {
        return Some(tables);
    }
    if let Some(loose) = open_regular(Some(&dir), Path::new(&target.refname))
        .and_then(|f| read_text(f, MAX_SMALL_FILE))
    {
        return Some(loose.trim().to_string());
    }
    packed_ref(
        open_regular(Some(&dir), Path::new("packed-refs"))?,
        &target.refname,
    )
}

/// `refname`'s id in `packed-refs`: at most [`MAX_PACKED_REFS`] bytes read, in lines
/// of at most [`MAX_LINE`].
fn packed_ref(packed: impl Read, refname: &str) -> Option<String> {
    let mut reader = BufReader::new(packed.take(MAX_PACKED_REFS));
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .ok()?;
        if n == 0 || (line.last() != Some(&b'\n') && n as u64 >= MAX_LINE) {
            return None;
        }
        let text = String::from_utf8_lossy(&line);
        if let Some((id, name)) = text.trim_end().split_once(' ')
            && name == refname
            && !id.starts_with(['#', '^'])
        {
            return Some(id.to_string());
        }
    }
}

/// A regular file's text, when it is one; at most [`MAX_SMALL_FILE`] bytes.
fn read_small(path: &Path) -> Option<String> {
    read_text(open_regular(None, path)?, MAX_SMALL_FILE)
}

/// At most `max` bytes of `file` as text.
fn read_text(file: fs::File, max: u64) -> Option<String> {
    let mut text = String::new();
    file.take(max).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `path` opened for reading when it is a regular file: never through a symbolic link
/// in its last component, nor in any component under `dir` when given (`path` is then
/// relative to it and stays beneath it); never waiting (a FIFO is opened without a
/// writer, then refused).
fn open_regular(dir: Option<&OwnedFd>, path: &Path) -> Option<fs::File> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match dir {
        None => rustix::fs::open(path, flags, Mode::empty()),
        Some(dir) => {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(dir.as_fd(), path, flags, Mode::empty(), resolve) {
                // A kernel without openat2 (before 5.6): the last component only.
                Err(rustix::io::Errno::NOSYS) => {
                    rustix::fs::openat(dir.as_fd(), path, flags, Mode::empty())
                }
                r => r,
            }
        }
    }
    .ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    (FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile).then(|| fs::File::from(fd))
}

/// The directory a local `source.url` names, as the fetch reads it (`fetch::Remote`):
/// a `file://` URL percent-decoded, a relative path from `base` or the current
/// directory.
fn local_path(url: &str, base: Option<&Path>) -> PathBuf {
    if let Some(rest) = url.strip_prefix("file://") {
        return PathBuf::from(OsString::from_vec(percent_decode(rest)));
    }
    let p = Path::new(url);
    if p.is_relative() {
        let base = base
            .map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_default();
        base.join(p)
    } else {
        p.to_path_buf()
    }
}

/// `%XX` escapes decoded to their bytes; anything else kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            // Two hex digits: at most 0xff.
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
