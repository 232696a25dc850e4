//! The Git side of `berth audit`: where the audited path sits in its repository (SARIF
//! URIs are relative to the repository root, so code scanning annotates the right
//! file), and the spec tree as it was at a revision (`--since`), read in-process with
//! git2 — berth never runs `git` (DESIGN.md §1).
//!
//! The old tree is read like `loader::load_tree` reads a directory: every `*.toml` blob
//! is a source, every blob a file; hidden entries and symbolic links are skipped.

use std::path::{Path, PathBuf};

use berth_spec::{SourceFile, Tree};
use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};

/// Why the tree at a revision could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SinceError {
    #[error("cannot resolve `{rev}` to a commit: {source}")]
    Revision {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read `{path}` at `{rev}`: {source}")]
    Read {
        rev: String,
        path: String,
        #[source]
        source: git2::Error,
    },
}

/// The repository holding the audited path.
pub struct Repo {
    repo: Repository,
    /// The work tree's root, canonical.
    pub root: PathBuf,
    /// The directory of the audited specs relative to the root, `/`-separated with a
    /// trailing `/` (`""` for the root): what SARIF URIs are prefixed with.
    pub prefix: String,
    /// The audited file, relative to the root, when PATH is one file.
    file: Option<String>,
}

impl Repo {
    /// The work tree containing `path`, if any.
    pub fn discover(path: &Path) -> Option<Repo> {
        let abs = std::fs::canonicalize(path).ok()?;
        let repo = Repository::discover(&abs).ok()?;
        let root = std::fs::canonicalize(repo.workdir()?).ok()?;
        let rel: Vec<String> = abs
            .strip_prefix(&root)
            .ok()?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let (dir, file) = if abs.is_file() {
            let dir = &rel[..rel.len().saturating_sub(1)];
            (dir.to_vec(), Some(rel.join("/")))
        } else {
            (rel, None)
        };
        let mut prefix = dir.join("/");
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Some(Repo {
            repo,
            root,
            prefix,
            file,
        })
    }

    /// The audited tree as it was at `rev`. A path that did not exist then is an empty
    /// tree: everything in it is new.
    pub fn tree_at(&self, rev: &str) -> Result<Tree, SinceError> {
        let revision = |source| SinceError::Revision {
            rev: rev.to_string(),
            source,
        };
        let commit = self
            .repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(revision)?;
        let top = commit.tree().map_err(revision)?;
        let read = |path: &str| {
            let path = path.to_string();
            move |source| SinceError::Read {
                rev: rev.to_string(),
                path,
                source,
            }
        };
        let mut out = Tree::default();
        if let Some(file) = &self.file {
            let Ok(entry) = top.get_path(Path::new(file)) else {
                return Ok(out);
            };
            let blob = self.repo.find_blob(entry.id()).map_err(read(file))?;
            let name = file.rsplit('/').next().unwrap_or(file).to_string();
            out.files.insert(name.clone());
            out.sources.push(SourceFile {
                path: name,
                text: String::from_utf8_lossy(blob.content()).into_owned(),
            });
            return Ok(out);
        }
        let dir = self.prefix.trim_end_matches('/');
        let tree = if dir.is_empty() {
            top
        } else {
            match top.get_path(Path::new(dir)) {
                Ok(e) if e.kind() == Some(ObjectType::Tree) => {
                    self.repo.find_tree(e.id()).map_err(read(dir))?
                }
                _ => return Ok(out),
            }
        };
        let mut blobs = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            let name = entry.name().unwrap_or("");
            if name.starts_with('.') {
                return TreeWalkResult::Skip;
            }
            // Regular files only (0o100644/0o100755); symbolic links are 0o120000.
            if entry.kind() == Some(ObjectType::Blob) && entry.filemode() & 0o170000 == 0o100000 {
                blobs.push((format!("{parent}{name}"), entry.id()));
            }
            TreeWalkResult::Ok
        })
        .map_err(read(dir))?;
        for (path, id) in blobs {
            if path.ends_with(".toml") {
                let blob = self.repo.find_blob(id).map_err(read(&path))?;
                out.sources.push(SourceFile {
                    path: path.clone(),
                    text: String::from_utf8_lossy(blob.content()).into_owned(),
                });
            }
            out.files.insert(path);
        }
        out.sources.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}
