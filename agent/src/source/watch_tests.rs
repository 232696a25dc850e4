//! The local watch against real `git` repositories in temporary directories: what
//! moves the followed ref is reported, and nothing else is.

use std::process::Command;
use std::sync::mpsc;

use super::*;

/// How long a move may take to be reported at most (the debounce, and a loaded CI
/// machine running the other unit tests beside it: 5 s once proved too short).
const REPORTED_WITHIN: Duration = Duration::from_secs(20);
/// How long nothing must be reported after what must not be.
const QUIET_FOR: Duration = Duration::from_millis(400);

/// `git ARGS` in `dir`, isolated from the machine's configuration; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Berth Test")
        .env("GIT_AUTHOR_EMAIL", "test@berth.example")
        .env("GIT_COMMITTER_NAME", "Berth Test")
        .env("GIT_COMMITTER_EMAIL", "test@berth.example")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(dir: &Path, message: &str) -> String {
    git(
        dir,
        &[
            "commit",
            "-q",
            "--allow-empty",
            "--no-gpg-sign",
            "-m",
            message,
        ],
    );
    git(dir, &["rev-parse", "HEAD"])
}

/// `f()` on a thread of its own, which must end within `within`.
#[track_caller]
fn within<T: Send + 'static>(
    within: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what} did not end within {within:?}"))
}

/// A watch whose reports land in a channel.
struct Seen {
    rx: mpsc::Receiver<String>,
    watch: Option<Watch>,
}

impl Seen {
    fn start(repo: &Path, refname: &str) -> Seen {
        let (tx, rx) = mpsc::channel();
        let target = Target {
            repo: repo.to_path_buf(),
            refname: refname.to_string(),
        };
        let watch = start(target, move |why| tx.send(why.to_string()).is_ok()).expect("watch");
        Seen {
            rx,
            watch: Some(watch),
        }
    }

    /// The next report, which must come.
    #[track_caller]
    fn reported(&self, after: &str) -> String {
        self.rx
            .recv_timeout(REPORTED_WITHIN)
            .unwrap_or_else(|_| panic!("nothing reported after {after}"))
    }

    /// No report for a while.
    #[track_caller]
    fn quiet(&self, after: &str) {
        if let Ok(why) = self.rx.recv_timeout(QUIET_FOR) {
            panic!("reported after {after}: {why}");
        }
    }
}

/// A new work tree at `repo`, its directories made (branch `main`, no commit).
fn init_at(repo: &Path) {
    fs::create_dir_all(repo).expect("mkdir");
    git(repo, &["init", "-q", "-b", "main"]);
}

/// A temporary directory with a work tree `work` (branch `main`, one commit), or
/// `None` without `git`.
fn work_tree() -> Option<(tempfile::TempDir, PathBuf)> {
    crate::testing::tool("git")?;
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    git(dir.path(), &["init", "-q", "-b", "main", "work"]);
    commit(&work, "first");
    Some((dir, work))
}

#[test]
fn a_commit_on_the_followed_branch_is_reported_and_another_branch_or_a_gc_is_not() {
    let Some((_dir, work)) = work_tree() else {
        return;
    };
    let seen = Seen::start(&work, "refs/heads/main");
    seen.quiet("nothing");
    let started = Instant::now();
    commit(&work, "second");
    assert_eq!(
        seen.reported("a commit on main"),
        "local watch: refs/heads/main moved"
    );
    eprintln!("reported {:?} after the commit began", started.elapsed());
    seen.quiet("one commit, reported once");

    git(&work, &["checkout", "-q", "-b", "other"]);
    commit(&work, "elsewhere");
    git(&work, &["tag", "v1"]);
    seen.quiet("a commit on another branch, and a tag");
    git(&work, &["checkout", "-q", "main"]);
    seen.quiet("a checkout");

    // Packing moves no ref; a move of the packed ref alone is seen in packed-refs.
    git(&work, &["pack-refs", "--all"]);
    git(&work, &["gc", "-q"]);
    seen.quiet("pack-refs and gc");
    assert!(!work.join(".git/refs/heads/main").exists());
    let other = git(&work, &["rev-parse", "other"]);
    let packed = fs::read_to_string(work.join(".git/packed-refs")).expect("packed-refs");
    let main = git(&work, &["rev-parse", "main"]);
    let moved = packed.replace(
        &format!("{main} refs/heads/main"),
        &format!("{other} refs/heads/main"),
    );
    assert_ne!(moved, packed);
    fs::write(work.join(".git/packed-refs.lock"), moved).expect("write");
    fs::rename(
        work.join(".git/packed-refs.lock"),
        work.join(".git/packed-refs"),
    )
    .expect("rename");
    seen.reported("main moved in packed-refs");
    assert_eq!(git(&work, &["rev-parse", "main"]), other);

    // Back to a loose ref.
    git(&work, &["reset", "-q", "--hard", &main]);
    seen.reported("a reset of main");
}

#[test]
fn a_push_to_a_bare_repository_is_reported_and_dropping_the_watch_ends_it() {
    let Some((dir, work)) = work_tree() else {
        return;
    };
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "repo.git"],
    );
    let bare = dir.path().join("repo.git");
    let seen = Seen::start(&bare, "refs/heads/main");
    git(
        &work,
        &[
            "push",
            "-q",
            bare.to_str().expect("utf-8"),
            "HEAD:refs/heads/main",
        ],
    );
    seen.reported("the first push");
    commit(&work, "second");
    git(
        &work,
        &[
            "push",
            "-q",
            bare.to_str().expect("utf-8"),
            "HEAD:refs/heads/feature",
        ],
    );
    seen.quiet("a push to another branch");
    git(
        &work,
        &[
            "push",
            "-q",
            bare.to_str().expect("utf-8"),
            "HEAD:refs/heads/main",
        ],
    );
    seen.reported("a second push");

    let Seen { rx, mut watch } = seen;
    let stopping = Instant::now();
    drop(watch.take());
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "{:?}",
        stopping.elapsed()
    );
    // The thread ended: its callback (and the sender in it) is gone.
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(1)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn a_branch_with_slashes_is_waited_for_and_followed_through_deletion_and_recreation() {
    let Some((_dir, work)) = work_tree() else {
        return;
    };
    let refs = work.join(".git/refs/heads/release");
    assert!(!refs.exists());
    let seen = Seen::start(&work, "refs/heads/release/v1");
    git(&work, &["branch", "release/v0"]);
    seen.quiet("another branch in the same directory");
    git(&work, &["branch", "-D", "release/v0"]);
    seen.quiet("its deletion");
    git(&work, &["branch", "release/v1"]);
    assert_eq!(
        seen.reported("the branch made"),
        "local watch: refs/heads/release/v1 moved"
    );
    git(&work, &["branch", "-D", "release/v1"]);
    assert_eq!(
        seen.reported("the branch deleted"),
        "local watch: refs/heads/release/v1 was deleted"
    );
    assert!(!refs.exists(), "git left {}", refs.display());
    commit(&work, "second");
    git(&work, &["branch", "release/v1"]);
    seen.reported("the branch made again");
    commit(&work, "third");
    git(&work, &["branch", "-f", "release/v1"]);
    seen.reported("the branch moved");
}

#[test]
fn a_repository_made_after_the_watch_and_made_again_is_followed() {
    let Some((dir, _)) = work_tree() else {
        return;
    };
    let repo = dir.path().join("later/repo");
    let seen = Seen::start(&repo, "refs/heads/main");
    init_at(&repo);
    seen.quiet("an empty repository");
    commit(&repo, "first");
    seen.reported("the first commit");
    fs::remove_dir_all(dir.path().join("later")).expect("rm");
    seen.reported("the repository deleted");
    init_at(&repo);
    commit(&repo, "first again");
    seen.reported("a commit in the new repository");
}

/// A work tree `split` in `dir` whose `.git` is a file naming its git directory
/// `elsewhere.git`; one commit on `main`.
fn split(dir: &Path) -> (PathBuf, PathBuf) {
    let (work, gitdir) = (dir.join("split"), dir.join("elsewhere.git"));
    git(
        dir,
        &[
            "init",
            "-q",
            "-b",
            "main",
            "--separate-git-dir",
            gitdir.to_str().expect("utf-8"),
            "split",
        ],
    );
    assert!(work.join(".git").is_file());
    commit(&work, "first");
    (work, gitdir)
}

#[test]
fn a_git_file_and_a_tag_are_followed() {
    let Some((dir, _)) = work_tree() else {
        return;
    };
    let (work, gitdir) = split(dir.path());
    let seen = Seen::start(&work, "refs/tags/v1");
    commit(&work, "second");
    seen.quiet("a commit on main");
    git(&work, &["tag", "-a", "-m", "one", "v1"]);
    assert_eq!(
        seen.reported("the tag made"),
        "local watch: refs/tags/v1 moved"
    );
    git(&work, &["tag", "-f", "v1", "HEAD~"]);
    seen.reported("the tag moved");

    // A linked worktree of it shares its refs.
    let linked = dir.path().join("linked");
    git(
        &work,
        &[
            "worktree",
            "add",
            "-q",
            linked.to_str().expect("utf-8"),
            "HEAD",
        ],
    );
    assert_eq!(
        refs_home(&linked).expect("owned"),
        fs::canonicalize(&gitdir).expect("canonical")
    );
}

#[test]
fn a_reftable_repository_is_followed() {
    let Some((dir, _)) = work_tree() else {
        return;
    };
    // Older git has no reftable format, and so no such repositories.
    let made = Command::new("git")
        .current_dir(dir.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["init", "-q", "-b", "main", "--ref-format=reftable", "rt"])
        .status()
        .expect("git");
    if !made.success() {
        eprintln!("this git has no reftable format");
        return;
    }
    let repo = dir.path().join("rt");
    commit(&repo, "first");
    let seen = Seen::start(&repo, "refs/heads/main");
    commit(&repo, "second");
    seen.reported("a commit");
}

#[test]
fn what_is_watched_for_a_repository_and_a_branch_not_made_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bare = dir.path().join("repo.git");
    fs::create_dir_all(bare.join("refs/heads")).expect("mkdir");
    let target = Target {
        repo: bare.clone(),
        refname: "refs/heads/team/web".into(),
    };
    let want = wanted(&target).expect("owned");
    let names = |v: &[OsString]| -> Vec<String> {
        v.iter().map(|n| n.to_string_lossy().into_owned()).collect()
    };
    let at = |p: &Path| want.get(p).cloned().unwrap_or_default();
    // The git directory: packed-refs, and reftable/ and .git should they appear.
    assert_eq!(names(&at(&bare).read), ["packed-refs"]);
    assert_eq!(names(&at(&bare).rearm), [".git", "reftable"]);
    // refs/heads/team/ is not there yet: refs/heads/ is watched for it.
    assert_eq!(names(&at(&bare.join("refs/heads")).rearm), ["team"]);
    assert_eq!(want.len(), 2, "{want:?}");
    fs::create_dir_all(bare.join("refs/heads/team")).expect("mkdir");
    let want = wanted(&target).expect("owned");
    assert_eq!(names(&want[&bare.join("refs/heads/team")].read), ["web"]);
}

#[test]
fn a_local_source_is_watched_a_network_one_or_a_pinned_commit_is_not() {
    let target = |source: &str| {
        let text = format!("[source]\n{source}\n");
        let cfg = berth_spec::node::NodeConfig::parse("node.toml", &text)
            .unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let section = cfg.source.expect("[source]");
        Target::of(&section, Some(Path::new("/etc/berth")))
    };
    let t = target("url = \"file:///srv/git/my%20fleet.git\"").expect("file://");
    assert_eq!(t.repo, PathBuf::from("/srv/git/my fleet.git"));
    assert_eq!(t.refname, "refs/heads/main");
    let t = target("url = \"./fleet\"\nbranch = \"release/v2\"").expect("relative");
    assert_eq!(t.repo, PathBuf::from("/etc/berth/./fleet"));
    assert_eq!(t.refname, "refs/heads/release/v2");
    let t = target("url = \"/srv/git/fleet\"\ntag = \"prod\"").expect("tag");
    assert_eq!(t.refname, "refs/tags/prod");
    assert_eq!(
        target("url = \"/srv/git/fleet\"\ncommit = \"0123456789abcdef\""),
        None
    );
    assert_eq!(target("url = \"https://git.example.com/fleet.git\""), None);
    assert_eq!(target("url = \"git@git.example.com:fleet.git\""), None);
}

#[test]
fn percent_escapes_are_decoded_and_a_stray_percent_kept() {
    assert_eq!(percent_decode("/a%20b%2fc"), b"/a b/c");
    assert_eq!(percent_decode("/100%"), b"/100%");
    assert_eq!(percent_decode("/%zz%4"), b"/%zz%4");
    assert_eq!(percent_decode("/%+1"), b"/%+1");
}

/// A work tree whose `main` is in `packed-refs` only, `packed-refs` then replaced by
/// what `replace` makes in its place; and `main`'s id.
fn packed_then(replace: impl FnOnce(&Path)) -> Option<(tempfile::TempDir, PathBuf, String)> {
    let (dir, work) = work_tree()?;
    git(&work, &["pack-refs", "--all"]);
    let main = git(&work, &["rev-parse", "main"]);
    let packed = work.join(".git/packed-refs");
    assert!(!work.join(".git/refs/heads/main").exists());
    fs::remove_file(&packed).expect("rm packed-refs");
    replace(&packed);
    Some((dir, work, main))
}

/// A watch on `work`'s main that must start, see `main` written as a loose ref (as
/// git does, without git: git itself would read the `packed-refs` in place) and stop,
/// each in bounded time.
fn started_reported_and_stopped(work: &Path, main: &str) {
    let repo = work.to_path_buf();
    let started = Instant::now();
    let seen = within(READY_WITHIN + REPORTED_WITHIN, "start", move || {
        Seen::start(&repo, "refs/heads/main")
    });
    assert!(started.elapsed() < READY_WITHIN, "{:?}", started.elapsed());
    let loose = work.join(".git/refs/heads/main");
    fs::write(loose.with_extension("lock"), format!("{main}\n")).expect("write");
    fs::rename(loose.with_extension("lock"), &loose).expect("rename");
    seen.reported("main written");
    let Seen { rx, mut watch } = seen;
    let stopping = Instant::now();
    drop(watch.take());
    assert!(stopping.elapsed() < STOP_WITHIN, "{:?}", stopping.elapsed());
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(1)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    ));
}

/// `refname` of `work` is not read, and reading it ends within seconds.
#[track_caller]
fn unread(work: &Path, refname: &str) {
    let target = Target {
        repo: work.to_path_buf(),
        refname: refname.into(),
    };
    let value = within(Duration::from_secs(5), "reading the ref", move || {
        ref_value(&target)
    });
    assert_eq!(value, None, "{refname}");
}

#[test]
fn a_packed_refs_linked_to_dev_zero_is_not_read() {
    let Some((_dir, work, main)) = packed_then(|p| {
        std::os::unix::fs::symlink("/dev/zero", p).expect("symlink");
    }) else {
        return;
    };
    unread(&work, "refs/heads/main");
    // A regular packed-refs linked to is not followed either.
    let elsewhere = work.join("packed-elsewhere");
    fs::write(
        &elsewhere,
        "0123456789abcdef0123456789abcdef01234567 refs/heads/main\n",
    )
    .expect("write");
    let packed = work.join(".git/packed-refs");
    fs::remove_file(&packed).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, &packed).expect("symlink");
    unread(&work, "refs/heads/main");
    started_reported_and_stopped(&work, &main);
}

#[test]
fn a_fifo_packed_refs_or_loose_ref_does_not_block_the_watch() {
    let Some((_dir, work, main)) = packed_then(|p| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    }) else {
        return;
    };
    unread(&work, "refs/heads/main");
    // A FIFO as the loose ref too.
    let loose = work.join(".git/refs/heads/other");
    nix::unistd::mkfifo(&loose, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    unread(&work, "refs/heads/other");
    started_reported_and_stopped(&work, &main);
}

#[test]
fn a_long_line_or_a_big_packed_refs_is_read_no_further() {
    let id = "0123456789abcdef0123456789abcdef01234567";
    let good = format!("# pack-refs with: peeled\n{id} refs/heads/main\n");
    assert_eq!(
        packed_ref(good.as_bytes(), "refs/heads/main").as_deref(),
        Some(id)
    );
    assert_eq!(packed_ref(good.as_bytes(), "refs/heads/other"), None);
    let long = format!("{} refs/heads/x\n{id} refs/heads/main\n", "a".repeat(5000));
    assert_eq!(packed_ref(long.as_bytes(), "refs/heads/main"), None);
    // An endless file: read up to the cap, then no more.
    assert_eq!(packed_ref(std::io::repeat(b'\n'), "refs/heads/main"), None);
}

/// Changes the owner of everything under `path` to `nobody` (uid 65534).
fn chown_nobody(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(path)
        .status()
        .expect("chown");
    assert!(st.success());
}

#[test]
fn a_repository_owned_by_another_user_is_not_watched_nor_read() {
    if !crate::testing::have_root() {
        return;
    }
    let Some((dir, work)) = work_tree() else {
        return;
    };
    chown_nobody(&work);
    let target = Target {
        repo: work.clone(),
        refname: "refs/heads/main".into(),
    };
    assert_eq!(ref_value(&target), None);
    match start(target, |_| true) {
        Err(WatchError::NotOwned { path, owner }) => {
            assert_eq!((path, owner), (work.clone(), 65534));
        }
        other => panic!("{other:?}"),
    }

    // A work tree of root's whose `.git` file or `commondir` names a directory of
    // another user's.
    let (split, gitdir) = split(dir.path());
    let target = Target {
        repo: split.clone(),
        refname: "refs/heads/main".into(),
    };
    assert!(ref_value(&target).is_some());
    chown_nobody(&gitdir);
    assert_eq!(ref_value(&target), None);
    assert!(
        matches!(&start(target.clone(), |_| true), Err(WatchError::NotOwned { path, .. }) if *path == gitdir),
    );

    let linked = dir.path().join("linked.git");
    fs::create_dir(&linked).expect("mkdir");
    fs::write(linked.join("commondir"), work.to_str().expect("utf-8")).expect("write");
    assert!(matches!(
        refs_home(&linked),
        Err(WatchError::NotOwned { owner: 65534, .. })
    ));
}

#[test]
fn reports_are_paced_and_a_move_meanwhile_is_reported_at_the_end() {
    let t0 = Instant::now();
    let mut p = Pacer::default();
    assert_eq!(p.due(t0), None);
    p.offer("one".into());
    assert_eq!(p.take(t0).as_deref(), Some("one"));
    let t1 = t0 + PACE / 4;
    p.offer("two".into());
    p.offer("three".into());
    assert_eq!(p.due(t1), Some(t0 + PACE));
    assert_eq!(p.take(t1), None);
    assert_eq!(p.take(t0 + PACE).as_deref(), Some("three"));
    assert_eq!(p.take(t0 + PACE * 3), None);
    // Long after: at once.
    let t2 = t0 + PACE * 5;
    p.offer("four".into());
    assert_eq!(p.take(t2).as_deref(), Some("four"));

    let Some((_dir, work)) = work_tree() else {
        return;
    };
    let seen = Seen::start(&work, "refs/heads/main");
    let first = commit(&work, "second");
    seen.reported("the first move");
    let at = Instant::now();
    // Moves in the quiet second after a report: one report at its end.
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(60));
        commit(&work, &format!("more {i}"));
    }
    git(&work, &["reset", "-q", "--hard", &first]);
    assert!(
        at.elapsed() < PACE / 2,
        "too slow to test: {:?}",
        at.elapsed()
    );
    seen.reported("moves in the quiet second");
    let gap = at.elapsed();
    assert!(gap >= PACE - Duration::from_millis(150), "{gap:?}");
    seen.quiet("the moves, reported once");
}
