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
//!
//! It runs on a thread of its own until its [`Watch`] is dropped or the callback says
//! nobody listens any more. It reads the repository as files and links no libgit2, so
//! that `berth-agentd` can run it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_spec::node::{GitRef, SourceSection, Transport};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use rustix::event::{PollFd, PollFlags, Timespec};

/// How long a burst of events (the lock file, its rename, the reflog) is gathered
/// before the ref is read: git's update of a ref takes far less, and a fetch costs
/// more than this wait.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// How soon a directory that went while it was being watched is looked for again.
const RETRY: Duration = Duration::from_millis(200);
/// The most read of a loose ref, a `.git` file or `commondir`.
const MAX_SMALL_FILE: u64 = 4096;

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
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
    let mut w = Watcher {
        ino,
        target,
        watches: HashMap::new(),
        seen: None,
        warned: false,
    };
    let complete = w.arm()?;
    // Read after the watches are set: a move after this read is an event.
    w.seen = ref_value(&w.target);
    let (stop, peer) = UnixStream::pair().map_err(WatchError::Spawn)?;
    tracing::info!(target: "source", repository = %w.target.repo.display(), r#ref = %w.target.refname, "watching the local repository: a move of the ref is fetched at once");
    let thread = std::thread::Builder::new()
        .name("source-watch".into())
        .spawn(move || w.run(&peer, complete, on_change))
        .map_err(WatchError::Spawn)?;
    Ok(Watch {
        stop: Some(stop),
        thread: Some(thread),
    })
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
        for (dir, interest) in wanted(&self.target) {
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
        loop {
            let timeout =
                [read_at, arm_at].into_iter().flatten().min().and_then(|t| {
                    Timespec::try_from(t.saturating_duration_since(Instant::now())).ok()
                });
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
                    if !on_change(&format!("local watch: {} {what}", self.target.refname)) {
                        return;
                    }
                }
            }
        }
    }
}

/// The directories to watch for `target` as the disk is now, each with what its
/// events mean.
fn wanted(target: &Target) -> BTreeMap<PathBuf, Interest> {
    let mut want = BTreeMap::new();
    let home = refs_home(&target.repo);
    // A work tree's `.git` that appears, or a `.git` file that points elsewhere.
    put(&mut want, &target.repo, ".git", false);
    let loose = home.join(&target.refname);
    if let (Some(dir), Some(name)) = (loose.parent(), loose.file_name()) {
        put(&mut want, dir, &name.to_string_lossy(), true);
    }
    put(&mut want, &home, "packed-refs", true);
    put(&mut want, &home.join("reftable"), "tables.list", true);
    want
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
/// linked worktree's `commondir` names.
fn refs_home(repo: &Path) -> PathBuf {
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
    match read_small(&gitdir.join("commondir")) {
        Some(c) if !c.trim().is_empty() => {
            let common = gitdir.join(c.trim());
            fs::canonicalize(&common).unwrap_or(common)
        }
        _ => gitdir,
    }
}

/// The ref's value as git would read it: its loose file, else its line of
/// `packed-refs`; in the reftable format, the list of tables (any ref's update).
fn ref_value(target: &Target) -> Option<String> {
    let home = refs_home(&target.repo);
    if let Some(tables) = read_small(&home.join("reftable/tables.list")) {
        return Some(tables);
    }
    if let Some(loose) = read_small(&home.join(&target.refname)) {
        return Some(loose.trim().to_string());
    }
    let packed = fs::File::open(home.join("packed-refs")).ok()?;
    BufReader::new(packed)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let (id, name) = line.split_once(' ')?;
            (name == target.refname && !id.starts_with(['#', '^'])).then(|| id.to_string())
        })
}

/// A regular file's text, when it is one and small.
fn read_small(path: &Path) -> Option<String> {
    if !path.is_file() {
        return None;
    }
    let mut text = String::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_SMALL_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
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
