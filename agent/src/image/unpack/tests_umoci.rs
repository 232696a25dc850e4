//! The flatten mode against the reference: an image built and unpacked with `umoci`
//! (files, directories, symlinks, hard links, setuid, other owners, devices, fifos,
//! xattrs, and deletions across layers) must unpack to the same tree, entry by entry.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, chown, lchown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{CWD, FileType, Mode, XattrFlags};

use super::*;
use crate::testing::{have_root, require};

fn umoci(args: &[&str], cwd: &Path) {
    let out = Command::new("umoci")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umoci_present() -> bool {
    let found = Command::new("umoci")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    require(found, "`umoci` runnable (Debian package umoci)")
}

fn write(root: &Path, rel: &str, data: &str, mode: u32, owner: (u32, u32)) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    chown(&p, Some(owner.0), Some(owner.1)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(root: &Path, rel: &str, mode: u32, owner: (u32, u32)) {
    let p = root.join(rel);
    std::fs::create_dir_all(&p).unwrap();
    chown(&p, Some(owner.0), Some(owner.1)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn first_tree(r: &Path) {
    mkdir(r, "etc", 0o755, (0, 0));
    write(
        r,
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\n",
        0o644,
        (0, 0),
    );
    write(r, "etc/shadow", "root:*:1::::::\n", 0o640, (0, 42));
    write(r, "bin/tool", "#!/bin/sh\necho v1\n", 0o755, (0, 0));
    write(r, "bin/su", "setuid", 0o4755, (0, 0));
    write(r, "bin/wall", "setgid", 0o2755, (0, 5));
    mkdir(r, "home/alice", 0o700, (1000, 1000));
    write(r, "home/alice/.profile", "PS1=$\n", 0o600, (1000, 1000));
    write(r, "usr/lib/libx.so", "ELF", 0o755, (0, 0));
    symlink("usr/lib", r.join("lib")).unwrap();
    symlink("libx.so", r.join("usr/lib/libx.so.1")).unwrap();
    symlink("/etc/passwd", r.join("etc/passwd.link")).unwrap();
    lchown(r.join("etc/passwd.link"), Some(7), Some(8)).unwrap();
    write(r, "hard1", "linked", 0o644, (3, 3));
    std::fs::hard_link(r.join("hard1"), r.join("hard2")).unwrap();
    write(r, "srv/data/a", "a", 0o644, (0, 0));
    write(r, "srv/data/b", "b", 0o644, (0, 0));
    write(r, "opt/gone/x", "x", 0o644, (0, 0));
    write(r, "opt/gone/deeper/y", "y", 0o644, (0, 0));
    write(r, "opt/stays", "s", 0o644, (0, 0));
    mkdir(r, "tmp", 0o1777, (0, 0));
    mkdir(r, "var/empty", 0o755, (0, 0));
    mkdir(r, "dev", 0o755, (0, 0));
    rustix::fs::mknodat(
        CWD,
        r.join("dev/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    std::fs::set_permissions(r.join("dev/null"), std::fs::Permissions::from_mode(0o666)).unwrap();
    mkdir(r, "run", 0o755, (0, 0));
    rustix::fs::mknodat(
        CWD,
        r.join("run/fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    write(r, "etc/attrs", "x", 0o644, (0, 0));
    rustix::fs::lsetxattr(r.join("etc/attrs"), "user.berth", b"v", XattrFlags::empty()).unwrap();
}

/// Changes for the second layer: deletions (whiteouts), modifications, additions.
fn second_tree(r: &Path) {
    std::fs::remove_dir_all(r.join("opt/gone")).unwrap();
    std::fs::remove_file(r.join("etc/shadow")).unwrap();
    std::fs::remove_file(r.join("srv/data/b")).unwrap();
    write(r, "bin/tool", "#!/bin/sh\necho v2\n", 0o700, (0, 0));
    chown(r.join("srv/data/a"), Some(33), Some(33)).unwrap();
    write(r, "srv/data/c", "c", 0o644, (0, 0));
    std::fs::remove_file(r.join("lib")).unwrap();
    symlink("usr/lib64", r.join("lib")).unwrap();
    std::fs::remove_dir(r.join("var/empty")).unwrap();
    write(r, "var/empty", "now a file", 0o644, (0, 0));
    write(r, "new/dir/file", "new", 0o640, (2, 2));
}

/// Everything `compare` looks at for one path.
#[derive(Debug, PartialEq)]
struct Node {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    rdev: u64,
    xattr: Option<Vec<u8>>,
    /// The first path (in sorted order) sharing this inode: hard-link groups.
    inode_group: String,
}

fn scan(root: &Path) -> BTreeMap<String, Node> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    let mut groups: HashMap<u64, String> = HashMap::new();
    let mut out = BTreeMap::new();
    for p in paths {
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut buf = [0u8; 64];
        let xattr = rustix::fs::lgetxattr(&p, "user.berth", &mut buf[..])
            .ok()
            .map(|n| buf[..n].to_vec());
        let group = groups.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
        out.insert(
            rel,
            Node {
                kind: kind.to_owned(),
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                // Directory times are whatever the last child write left in umoci's tree.
                mtime: if ft.is_dir() { 0 } else { m.mtime() },
                size: if ft.is_file() { m.size() } else { 0 },
                content: ft.is_file().then(|| std::fs::read(&p).unwrap()),
                link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                rdev: m.rdev(),
                xattr,
                inode_group: group,
            },
        );
    }
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Unpacks every layer of the layout's only image into `dest`, checking diff_ids.
fn flatten_layout(layout: &Path, dest: &Path) -> usize {
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(
        layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let config = json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    let opts = UnpackOptions {
        mode: WhiteoutMode::Flatten,
        ..UnpackOptions::default()
    };
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let digest = layer["digest"].as_str().unwrap();
        let media_type = layer["mediaType"].as_str().unwrap();
        let file = std::fs::File::open(blob(layout, digest)).unwrap();
        let stats = unpack_layer(digest, media_type, file, dest, &opts).unwrap();
        verify_diff_id(digest, &stats, diff_id.as_str().unwrap()).unwrap();
    }
    layers.len()
}

#[test]
fn flatten_matches_umoci_unpack() {
    if !have_root() || !umoci_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    umoci(&["init", "--layout", "L"], t);
    umoci(&["new", "--image", "L:t"], t);
    umoci(&["unpack", "--image", "L:t", "b"], t);
    first_tree(&t.join("b/rootfs"));
    umoci(&["repack", "--image", "L:t", "b"], t);
    // umoci 0.4 repacks onto the image a bundle came from: unpack again for layer 2.
    umoci(&["unpack", "--image", "L:t", "b2"], t);
    second_tree(&t.join("b2/rootfs"));
    umoci(&["repack", "--image", "L:t", "b2"], t);
    umoci(&["unpack", "--image", "L:t", "out"], t);

    let mine = t.join("mine");
    std::fs::create_dir(&mine).unwrap();
    assert_eq!(flatten_layout(&t.join("L"), &mine), 2);

    let want = scan(&t.join("out/rootfs"));
    let got = scan(&mine);
    // The fixture really exercises what it claims to.
    assert!(!want.contains_key("opt/gone") && !want.contains_key("etc/shadow"));
    assert_eq!(want["bin/su"].mode, 0o4755);
    assert_eq!(want["dev/null"].kind, "char");
    assert_eq!(want["hard2"].inode_group, "hard1");
    assert!(!want.contains_key("srv/data/b"));
    assert_eq!(want["etc/attrs"].xattr.as_deref(), Some(&b"v"[..]));
    let names = |m: &BTreeMap<String, Node>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for (path, w) in &want {
        assert_eq!(&got[path], w, "{path} differs from umoci's");
    }
}
