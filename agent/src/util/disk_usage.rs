//! How many bytes a directory tree takes on disk, as `du -sx` counts them: allocated
//! blocks, each hard-linked file once, symbolic links never followed, and nothing on
//! another filesystem (a mount below the tree) counted or entered. What garbage
//! collection reports as freed.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The bytes `path` (a file or a directory tree) takes on disk. Best effort: an entry
/// that cannot be read (or vanished meanwhile) counts as nothing; a missing `path` is 0.
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let dev = top.dev();
    let mut seen: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut total = 0u64;
    let mut count = |m: &std::fs::Metadata| {
        if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
            return;
        }
        total = total.saturating_add(m.blocks().saturating_mul(512));
    };
    count(&top);
    if !top.is_dir() {
        return total;
    }
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            count(&m);
            if m.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_once_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let empty = disk_usage(&root);
        std::fs::write(root.join("a/b/data"), vec![7u8; 64 * 1024]).unwrap();
        let with_data = disk_usage(&root);
        assert!(with_data >= empty + 64 * 1024, "{empty} {with_data}");
        // A second name of the same file, and a link to a big tree outside: no more.
        std::fs::hard_link(root.join("a/b/data"), root.join("a/again")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![1u8; 1024 * 1024]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let linked = disk_usage(&root);
        assert!(linked < with_data + 64 * 1024, "{with_data} {linked}");
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
        assert!(disk_usage(&root.join("a/b/data")) >= 64 * 1024);
    }
}
