//! Each revision checked out into its own immutable directory,
//! `<state_dir>/source/revisions/<commit>/`, written from the clone's objects (not by a
//! work tree): only the spec sub-directory (`source.path`) is written, into a fresh
//! temporary directory that is renamed into place when complete, so a revision
//! directory that exists is whole. `source/current` points at the one applied last and
//! is switched by a rename.
//!
//! Nothing from the repository can reach outside its directory: symbolic links and
//! submodules are not checked out (the spec tree may not use them; a warning names
//! each), entry names are checked (no `.`, `..`, `/` or NUL), and a tree is refused
//! past [`MAX_BYTES`], [`MAX_ENTRIES`] or [`MAX_DEPTH`].

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

/// The most bytes one revision's spec directory may hold.
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The most files and directories it may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// How deep its directories may nest.
pub const MAX_DEPTH: usize = 64;
/// Written last into a revision directory: the `source.path` it holds.
const MARKER: &str = ".berth-revision";

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("commit {commit}: `source.path` `{path}` is not a directory in it")]
    NoPath { commit: Oid, path: String },
    #[error("commit {commit}: {reason}")]
    Refused { commit: Oid, reason: String },
    #[error("commit {commit}: cannot read the clone: {reason}")]
    Objects { commit: Oid, reason: String },
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The revisions directory, `<state_dir>/source/revisions`.
#[derive(Debug, Clone)]
pub struct Revisions {
    pub dir: PathBuf,
}

/// A revision on disk.
#[derive(Debug, Clone)]
pub struct CheckedOut {
    /// The spec root inside it (`dir/<source.path>`).
    pub spec_root: PathBuf,
    /// Entries not checked out (links, submodules), as `path (why)`.
    pub skipped: Vec<String>,
}

impl Revisions {
    pub fn new(source_dir: &Path) -> Self {
        Self {
            dir: source_dir.join("revisions"),
        }
    }

    /// The directory of `commit`, whether or not it exists.
    pub fn path_of(&self, commit: &str) -> PathBuf {
        self.dir.join(commit)
    }

    /// The revision `commit` checked out with `spec_path`, written if it is not yet.
    pub fn checkout(
        &self,
        repo: &Repository,
        commit: Oid,
        spec_path: &str,
    ) -> Result<CheckedOut, CheckoutError> {
        // `./fleet`, `fleet/`, `fleet//x` name what `fleet` and `fleet/x` name.
        let normal: Vec<&str> = spec_path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let spec_path = &*normal.join("/");
        let dir = self.path_of(&commit.to_string());
        let spec_root = if spec_path.is_empty() {
            dir.clone()
        } else {
            dir.join(spec_path)
        };
        if fs::read_to_string(dir.join(MARKER)).is_ok_and(|p| p == spec_path) {
            return Ok(CheckedOut {
                spec_root,
                skipped: Vec::new(),
            });
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckoutError::Io { path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        let objects = |e: git2::Error| CheckoutError::Objects {
            commit,
            reason: e.message().to_string(),
        };
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(objects)?;
        let subtree = if spec_path.is_empty() {
            tree
        } else {
            let entry = tree
                .get_path(Path::new(spec_path))
                .map_err(|_| CheckoutError::NoPath {
                    commit,
                    path: spec_path.to_string(),
                })?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(CheckoutError::NoPath {
                    commit,
                    path: spec_path.to_string(),
                });
            }
            repo.find_tree(entry.id()).map_err(objects)?
        };
        let tmp = self
            .dir
            .join(format!(".tmp-{commit}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let target = if spec_path.is_empty() {
            tmp.clone()
        } else {
            tmp.join(spec_path)
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&target)
            .map_err(io(&target))?;
        let mut writer = Writer {
            repo,
            commit,
            bytes: 0,
            entries: 0,
            skipped: Vec::new(),
        };
        let written = writer
            .write_tree(&subtree, &target, Path::new(spec_path), 0)
            .and_then(|()| {
                let marker = tmp.join(MARKER);
                fs::write(&marker, spec_path).map_err(io(&marker))?;
                sync_dir_tree(&tmp).map_err(io(&tmp))
            });
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // An earlier checkout with another `source.path` is replaced.
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir).map_err(io(&dir))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(CheckedOut {
            spec_root,
            skipped: writer.skipped,
        })
    }

    /// Points `<source>/current` at `commit`'s directory (a symlink replaced by rename).
    pub fn switch_current(&self, commit: &str) -> Result<(), CheckoutError> {
        let Some(source) = self.dir.parent() else {
            return Ok(());
        };
        let link = source.join("current");
        let tmp = source.join(format!(".current-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let io = |source_err| CheckoutError::Io {
            path: link.clone(),
            source: source_err,
        };
        std::os::unix::fs::symlink(Path::new("revisions").join(commit), &tmp).map_err(io)?;
        fs::rename(&tmp, &link).map_err(io)
    }

    /// Removes every revision directory not in `keep` (and any temporary one left by a
    /// crash); returns the commits removed.
    pub fn prune(&self, keep: &BTreeSet<String>) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let own_tmp = format!("-{}", std::process::id());
            if name.starts_with(".tmp-") && name.ends_with(&own_tmp) {
                continue;
            }
            if fs::remove_dir_all(entry.path()).is_ok() && !name.starts_with('.') {
                removed.push(name);
            }
        }
        removed.sort();
        removed
    }
}

struct Writer<'r> {
    repo: &'r Repository,
    commit: Oid,
    bytes: u64,
    entries: usize,
    skipped: Vec<String>,
}

impl Writer<'_> {
    fn refused(&self, reason: String) -> CheckoutError {
        CheckoutError::Refused {
            commit: self.commit,
            reason,
        }
    }

    /// A write that failed because the name exists already (a tree that lists a name
    /// twice) refuses the revision; any other failure is the host's.
    fn io_or_duplicate(&self, shown: &Path, path: &Path, source: std::io::Error) -> CheckoutError {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            self.refused(format!("{} is listed twice in its tree", shown.display()))
        } else {
            CheckoutError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    fn write_tree(
        &mut self,
        tree: &Tree<'_>,
        dir: &Path,
        shown: &Path,
        depth: usize,
    ) -> Result<(), CheckoutError> {
        if depth > MAX_DEPTH {
            return Err(self.refused(format!(
                "{} nests deeper than {MAX_DEPTH} directories",
                shown.display()
            )));
        }
        for entry in tree {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(self.refused(format!(
                    "the spec directory holds more than {MAX_ENTRIES} entries"
                )));
            }
            let name = entry
                .name()
                .ok()
                .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(['/', '\0']))
                .ok_or_else(|| {
                    self.refused(format!(
                        "{} holds an entry with an invalid name",
                        shown.display()
                    ))
                })?
                .to_string();
            let path = dir.join(&name);
            let shown_path = shown.join(&name);
            let mode = entry.filemode();
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(|source| self.io_or_duplicate(&shown_path, &path, source))?;
                    let sub =
                        self.repo
                            .find_tree(entry.id())
                            .map_err(|e| CheckoutError::Objects {
                                commit: self.commit,
                                reason: e.message().to_string(),
                            })?;
                    self.write_tree(&sub, &path, &shown_path, depth + 1)?;
                }
                Some(ObjectType::Blob) if mode == 0o120000 => {
                    self.skipped
                        .push(format!("{} (a symbolic link)", shown_path.display()));
                }
                Some(ObjectType::Blob) => {
                    // The size from the object's header first: a blob that inflates
                    // past the cap is refused before it is read into memory.
                    let objects = |e: git2::Error| CheckoutError::Objects {
                        commit: self.commit,
                        reason: e.message().to_string(),
                    };
                    let (size, _) = self
                        .repo
                        .odb()
                        .and_then(|odb| odb.read_header(entry.id()))
                        .map_err(objects)?;
                    self.bytes = self.bytes.saturating_add(size as u64);
                    if self.bytes > MAX_BYTES {
                        return Err(self.refused(format!(
                            "the spec directory holds more than {MAX_BYTES} bytes"
                        )));
                    }
                    let blob = self.repo.find_blob(entry.id()).map_err(objects)?;
                    let file_mode = if mode & 0o111 != 0 { 0o700 } else { 0o600 };
                    let mut f = fs::File::options()
                        .write(true)
                        .create_new(true)
                        .mode(file_mode)
                        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                        .open(&path)
                        .map_err(|source| self.io_or_duplicate(&shown_path, &path, source))?;
                    f.write_all(blob.content())
                        .map_err(|source| CheckoutError::Io {
                            path: path.clone(),
                            source,
                        })?;
                }
                Some(ObjectType::Commit) => {
                    self.skipped
                        .push(format!("{} (a submodule)", shown_path.display()));
                }
                _ => {
                    self.skipped.push(format!(
                        "{} (not a file or directory)",
                        shown_path.display()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Flushes a freshly written directory tree to disk (one `syncfs` for the file system
/// that holds it).
fn sync_dir_tree(dir: &Path) -> std::io::Result<()> {
    let d = fs::File::open(dir)?;
    rustix::fs::syncfs(&d).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(files: &[(&str, &[u8], i32)]) -> (tempfile::TempDir, Repository, Oid) {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path().join("r.git")).expect("init");
        let mut root = std::collections::BTreeMap::<String, Vec<(String, Oid, i32)>>::new();
        for (path, content, mode) in files {
            let blob = repo.blob(content).expect("blob");
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            root.entry(parent.to_string())
                .or_default()
                .push((name.to_string(), blob, *mode));
        }
        // One level of sub-directories is enough for these tests.
        let mut top = repo.treebuilder(None).expect("tb");
        for (parent, entries) in &root {
            let mut tb = repo.treebuilder(None).expect("tb");
            for (name, id, mode) in entries {
                tb.insert(name, *id, *mode).expect("insert");
            }
            let tid = tb.write().expect("write");
            if parent.is_empty() {
                let t = repo.find_tree(tid).expect("tree");
                for e in t.iter() {
                    top.insert(e.name().expect("name"), e.id(), e.filemode())
                        .expect("insert");
                }
            } else {
                top.insert(parent, tid, 0o040000).expect("insert");
            }
        }
        let tid = top.write().expect("write");
        drop(top);
        let tree = repo.find_tree(tid).expect("tree");
        let sig = git2::Signature::now("t", "t@example.com").expect("sig");
        let c = repo
            .commit(None, &sig, &sig, "m", &tree, &[])
            .expect("commit");
        drop(tree);
        (dir, repo, c)
    }

    #[test]
    fn checks_out_the_spec_path_and_skips_links() {
        let (dir, repo, c) = repo_with(&[
            ("fleet/web.toml", b"[container.web]\n", 0o100644),
            ("fleet/run.sh", b"#!/bin/sh\n", 0o100755),
            ("fleet/evil", b"/etc/shadow", 0o120000),
            ("other/x.toml", b"x", 0o100644),
        ]);
        let revs = Revisions::new(dir.path());
        let out = revs.checkout(&repo, c, "fleet").expect("checkout");
        assert_eq!(out.spec_root, revs.path_of(&c.to_string()).join("fleet"));
        assert_eq!(
            fs::read_to_string(out.spec_root.join("web.toml")).expect("read"),
            "[container.web]\n"
        );
        assert!(out.spec_root.join("evil").symlink_metadata().is_err());
        assert!(!revs.path_of(&c.to_string()).join("other").exists());
        assert_eq!(
            out.skipped,
            vec!["fleet/evil (a symbolic link)".to_string()]
        );
        // Again: the whole directory is reused.
        let again = revs.checkout(&repo, c, "fleet").expect("again");
        assert!(again.skipped.is_empty());
        // A path that is not in the commit.
        let err = revs.checkout(&repo, c, "nope").expect_err("no path");
        assert!(matches!(err, CheckoutError::NoPath { .. }), "{err}");
    }

    #[test]
    fn prune_keeps_what_is_named() {
        let (dir, repo, c) = repo_with(&[("a.toml", b"", 0o100644)]);
        let revs = Revisions::new(dir.path());
        revs.checkout(&repo, c, "").expect("checkout");
        fs::create_dir_all(revs.path_of("0123")).expect("mkdir");
        let keep = BTreeSet::from([c.to_string()]);
        assert_eq!(revs.prune(&keep), vec!["0123".to_string()]);
        assert!(revs.path_of(&c.to_string()).exists());
        revs.switch_current(&c.to_string()).expect("switch");
        assert_eq!(
            fs::read_link(dir.path().join("current")).expect("link"),
            Path::new("revisions").join(c.to_string())
        );
    }
}
