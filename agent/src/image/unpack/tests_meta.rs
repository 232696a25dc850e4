//! Metadata and whiteouts, in both output modes (run as root: chown, mknod and
//! trusted.* xattrs need it).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::EntryType;

use super::tests::{Sandbox, Tar, opts, unpack};
use super::*;
use crate::testing::have_root;

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

fn owned(mut h: tar::Header, uid: u64, gid: u64) -> tar::Header {
    h.set_uid(uid);
    h.set_gid(gid);
    h
}

#[test]
fn metadata_is_restored_as_containerd_does() {
    if !have_root() {
        return;
    }
    let sb = Sandbox::new();
    let mut t = Tar::new().add(
        owned(Tar::header("srv", EntryType::Directory, 0o1777, 0), 42, 43),
        b"",
    );
    // PAX records describe the next entry only.
    t.0.append_pax_extensions([
        ("SCHILY.xattr.user.berth", &b"hello"[..]),
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("mtime", &b"1500000000.25"[..]),
    ])
    .unwrap();
    let tar = t
        .add(
            owned(
                Tar::header("srv/suid", EntryType::Regular, 0o4755, 3),
                1234,
                5678,
            ),
            b"abc",
        )
        .add(
            owned(Tar::header("srv/sgid", EntryType::Regular, 0o2711, 0), 7, 7),
            b"",
        )
        .hardlink("srv/hard", "srv/suid")
        .symlink("srv/sym", "../etc/target")
        .add(
            {
                let mut h = owned(Tar::header("dev/null", EntryType::Char, 0o666, 0), 0, 0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h
            },
            b"",
        )
        .add(
            {
                let mut h = Tar::header("dev/loop0", EntryType::Block, 0o660, 0);
                h.set_device_major(7).unwrap();
                h.set_device_minor(0).unwrap();
                h
            },
            b"",
        )
        .add(
            owned(Tar::header("run/fifo", EntryType::Fifo, 0o620, 0), 5, 6),
            b"",
        )
        .finish();
    let stats = unpack(&tar, &sb.root(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.entries, 8);
    let r = sb.root();
    let m = |p: &str| std::fs::symlink_metadata(r.join(p)).unwrap();

    let srv = m("srv");
    assert!(srv.is_dir());
    assert_eq!(
        (srv.mode() & 0o7777, srv.uid(), srv.gid()),
        (0o1777, 42, 43)
    );
    // The directory's mtime is set after its children were written.
    assert_eq!(srv.mtime(), 1_600_000_000);

    let suid = m("srv/suid");
    assert_eq!(
        (suid.mode() & 0o7777, suid.uid(), suid.gid()),
        (0o4755, 1234, 5678)
    );
    assert_eq!(std::fs::read(r.join("srv/suid")).unwrap(), b"abc");
    assert_eq!(
        (suid.mtime(), suid.mtime_nsec()),
        (1_500_000_000, 250_000_000)
    );
    assert_eq!(
        xattr(&r.join("srv/suid"), "user.berth").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(xattr(&r.join("srv/suid"), "trusted.overlay.opaque"), None);
    let sgid = m("srv/sgid");
    assert_eq!((sgid.mode() & 0o7777, sgid.uid()), (0o2711, 7));

    let hard = m("srv/hard");
    assert_eq!((hard.ino(), hard.nlink()), (suid.ino(), 2));

    assert!(m("srv/sym").file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(r.join("srv/sym")).unwrap(),
        Path::new("../etc/target")
    );

    let null = m("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = m("dev/loop0");
    assert!(lp.file_type().is_block_device());
    assert_eq!(
        (rustix::fs::major(lp.rdev()), rustix::fs::minor(lp.rdev())),
        (7, 0)
    );
    let fifo = m("run/fifo");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        (fifo.mode() & 0o7777, fifo.uid(), fifo.gid()),
        (0o620, 5, 6)
    );
    // Parents the layer did not list are created 0755, root-owned.
    assert_eq!(m("run").mode() & 0o7777, 0o755);

    // Devices can be skipped; fifos are still made.
    let sb = Sandbox::new();
    let o = UnpackOptions {
        skip_device_nodes: true,
        ..UnpackOptions::default()
    };
    unpack(&tar, &sb.root(), &o).unwrap();
    assert!(!sb.root().join("dev/null").exists());
    assert!(sb.root().join("run/fifo").exists());
}

#[test]
fn entries_replace_what_was_there() {
    let sb = Sandbox::new();
    let tar = Tar::new()
        .file("x", b"file")
        .dir("x")
        .file("x/child", b"1")
        .dir("y")
        .file("y/child", b"1")
        .file("y", b"now a file")
        .dir("keep")
        .file("keep/a", b"1")
        .dir("keep") // both directories: attributes only, children stay
        .finish();
    unpack(&tar, &sb.root(), &UnpackOptions::default()).unwrap();
    assert!(sb.root().join("x/child").is_file());
    assert_eq!(std::fs::read(sb.root().join("y")).unwrap(), b"now a file");
    assert!(sb.root().join("keep/a").is_file());
}

/// The lower layer used by the whiteout tests.
pub(super) fn lower() -> Vec<u8> {
    Tar::new()
        .dir("a")
        .file("a/f1", b"1")
        .dir("a/sub")
        .file("a/sub/g", b"g")
        .file("b", b"b")
        .file("keep", b"k")
        .dir("c")
        .file("c/x", b"x")
        .finish()
}

/// The upper layer: deletes `b` and `c/x`, makes `a` opaque after writing `a/early`,
/// and adds `a/sub/h` and `a/new`.
pub(super) fn upper() -> Vec<u8> {
    Tar::new()
        .file(".wh.b", b"")
        .file("c/.wh.x", b"")
        .file("a/early", b"e")
        .file("a/.wh..wh..opq", b"")
        .file("a/sub/h", b"h")
        .file("a/new", b"n")
        .finish()
}

pub(super) fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn whiteouts_in_flatten_mode_delete() {
    for r in [Resolver::Auto, Resolver::Userspace] {
        let sb = Sandbox::new();
        let o = opts(WhiteoutMode::Flatten, r);
        unpack(&lower(), &sb.root(), &o).unwrap();
        unpack(&upper(), &sb.root(), &o).unwrap();
        assert_eq!(
            tree(&sb.root()),
            ["a", "a/early", "a/new", "a/sub", "a/sub/h", "c", "keep"],
        );
    }
}

#[test]
fn flatten_whiteouts_never_follow_symlinks_out() {
    let sb = Sandbox::new();
    std::fs::write(sb.outside().join("secret"), b"s").unwrap();
    let out = sb.outside().display().to_string();
    let o = opts(WhiteoutMode::Flatten, Resolver::Auto);
    unpack(&Tar::new().symlink("link", &out).finish(), &sb.root(), &o).unwrap();
    let upper = Tar::new()
        .file("link/.wh.secret", b"")
        .file("link/.wh..wh..opq", b"")
        .file(".wh.link", b"")
        .finish();
    unpack(&upper, &sb.root(), &o).unwrap();
    assert!(tree(&sb.root()).is_empty());
    sb.assert_host_untouched(&["secret"]);
}

#[test]
fn whiteouts_in_snapshot_mode_are_overlayfs_markers() {
    if !have_root() {
        return;
    }
    let sb = Sandbox::new();
    unpack(&upper(), &sb.root(), &UnpackOptions::default()).unwrap();
    let r = sb.root();
    assert_eq!(
        tree(&r),
        ["a", "a/early", "a/new", "a/sub", "a/sub/h", "b", "c", "c/x"],
    );
    for wh in ["b", "c/x"] {
        let m = std::fs::symlink_metadata(r.join(wh)).unwrap();
        assert!(m.file_type().is_char_device(), "{wh}");
        assert_eq!(m.rdev(), 0, "{wh}");
    }
    assert_eq!(
        xattr(&r.join("a"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(xattr(&r.join("c"), "trusted.overlay.opaque"), None);
}

#[test]
fn invalid_whiteout_is_refused() {
    let sb = Sandbox::new();
    let r = unpack(
        &Tar::new().file("a/.wh.", b"").finish(),
        &sb.root(),
        &UnpackOptions::default(),
    );
    assert!(
        matches!(r, Err(UnpackError::InvalidWhiteout { ref path, .. }) if path == "a/.wh."),
        "{r:?}"
    );
}
