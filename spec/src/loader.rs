//! Reads a spec directory into a [`Tree`]: every `*.toml` file (recursively, in path
//! order) as a source, and every regular file's relative path for file references.
//!
//! Hidden entries (`.git`, `.github`, …) are skipped. Symbolic links are not followed:
//! a file reference must name a real file inside the tree.
//!
//! A spec file that is not UTF-8, or over the size limits (`limits`), is not an
//! operational failure but invalid input: it becomes a located error in the tree, and
//! no more of it than the limit is ever read into memory.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::Tree;
use crate::limits::{MAX_FILE_BYTES, MAX_TREE_BYTES, tree_too_large};

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
    let mut tree = Tree::default();
    if meta.is_file() {
        let bytes = read_capped(root).map_err(err(root))?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tree.add_source(name, bytes);
        return Ok(tree);
    }
    let mut total = 0;
    walk(root, root, &mut tree, &mut total)?;
    tree.sources.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(tree)
}

/// Reads a file, but never more than one byte over [`MAX_FILE_BYTES`]: enough to tell
/// that it is over the limit.
fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Walks `dir`; `total` counts the spec bytes read so far, and once it passes
/// [`MAX_TREE_BYTES`] no further spec file is read (the first one over is reported).
fn walk(root: &Path, dir: &Path, tree: &mut Tree, total: &mut usize) -> Result<(), LoadError> {
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
            walk(root, &path, tree, total)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if rel.ends_with(".toml") && *total <= MAX_TREE_BYTES {
                let bytes = read_capped(&path).map_err(|source| LoadError {
                    path: path.clone(),
                    source,
                })?;
                if bytes.len() <= MAX_FILE_BYTES {
                    *total += bytes.len();
                }
                if *total > MAX_TREE_BYTES {
                    tree.unreadable.push(tree_too_large(&rel));
                } else {
                    tree.add_source(rel.clone(), bytes);
                }
            }
            tree.files.insert(rel);
        }
    }
    Ok(())
}
