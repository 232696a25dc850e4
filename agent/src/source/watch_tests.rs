//! The local watch against real `git` repositories in temporary directories: what
//! moves the followed ref is reported, and nothing else is.

use std::process::Command;
use std::sync::mpsc;

use super::*;

/// How long a move may take to be reported (the debounce and a loaded machine).
const REPORTED_WITHIN: Duration = Duration::from_secs(5);
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

#[test]
fn a_git_file_and_a_tag_are_followed() {
    let Some((dir, _)) = work_tree() else {
        return;
    };
    // A work tree whose `.git` is a file naming its git directory.
    let work = dir.path().join("split");
    let gitdir = dir.path().join("elsewhere.git");
    git(
        dir.path(),
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
        refs_home(&linked),
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
    let want = wanted(&target);
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
    let want = wanted(&target);
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
