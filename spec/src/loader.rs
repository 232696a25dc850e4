//! Reads a spec directory into a [`Tree`]: every `*.toml` file (recursively, in path
//! order) as a source, and every regular file's relative path for file references.
//!
//! Hidden entries (`.git`, `.github`, …) are skipped. Symbolic links are not followed:
//! a file reference must name a real file inside the tree.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{SourceFile, Tree};

/// Why a tree could not be read (an operational failure, not invalid input).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Reads the tree rooted at `root` (a directory, or a single `.toml` file).
pub fn load_tree(root: &Path) -> Result<Tree, LoadError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError { path, source }
    };
    let meta = fs::metadata(root).map_err(err(root))?;
    if meta.is_file() {
        let text = fs::read_to_string(root).map_err(err(root))?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Tree::from_sources(vec![SourceFile { path: name, text }]));
    }
    let mut tree = Tree {
        sources: Vec::new(),
        files: BTreeSet::new(),
    };
    walk(root, root, &mut tree)?;
    tree.sources.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(tree)
}

fn walk(root: &Path, dir: &Path, tree: &mut Tree) -> Result<(), LoadError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|source| LoadError {
            path: dir.to_path_buf(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| LoadError {
            path: dir.to_path_buf(),
            source,
        })?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| LoadError {
            path: path.clone(),
            source,
        })?;
        if ft.is_dir() {
            walk(root, &path, tree)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if rel.ends_with(".toml") {
                let text = fs::read_to_string(&path).map_err(|source| LoadError {
                    path: path.clone(),
                    source,
                })?;
                tree.sources.push(SourceFile {
                    path: rel.clone(),
                    text,
                });
            }
            tree.files.insert(rel);
        }
    }
    Ok(())
}
