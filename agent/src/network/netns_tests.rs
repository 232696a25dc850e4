//! Real namespaces (root only; skipped with a note otherwise, a failure under
//! `CI=true`): create and delete are idempotent, a mount point left without its mount
//! is recovered, nothing stays in the mount table, and the netlink link deletion works
//! inside a namespace the test made.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;

use nix::sched::{CloneFlags, setns};

use super::*;
use crate::network::netlink;
use crate::testing;

fn mounted(path: &Path) -> usize {
    let needle = format!(" {} ", path.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

#[test]
fn create_and_delete_are_idempotent() {
    if !testing::have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("netns/inst-1");
    create(&ns).unwrap();
    assert!(is_netns(&ns));
    create(&ns).unwrap();
    assert_eq!(mounted(&ns), 1, "a second create does not stack mounts");
    delete(&ns).unwrap();
    assert!(!ns.exists());
    assert_eq!(mounted(&ns), 0);
    delete(&ns).unwrap();

    // A crash between creating the mount point and mounting leaves a plain file.
    std::fs::write(&ns, "").unwrap();
    assert!(!is_netns(&ns));
    create(&ns).unwrap();
    assert!(is_netns(&ns));
    delete(&ns).unwrap();
    std::fs::write(&ns, "").unwrap();
    delete(&ns).unwrap();
    assert!(!ns.exists());
}

#[test]
fn namespaces_are_distinct_and_delete_link_works_inside_one() {
    if !testing::have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    create(&a).unwrap();
    create(&b).unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_ne!(ino(&a), ino(&b));
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(format!("net:[{}]", ino(&a)), host.display().to_string());

    let have_ip = Command::new("nsenter")
        .arg(format!("--net={}", a.display()))
        .args(["ip", "link", "add", "bthtest0", "type", "bridge"])
        .status()
        .is_ok_and(|s| s.success());
    if have_ip {
        let ns = std::fs::File::open(&a).unwrap();
        let deleted = std::thread::spawn(move || {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
            (
                netlink::delete_link("bthtest0").unwrap(),
                netlink::delete_link("bthtest0").unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(deleted, (true, false));
    } else {
        testing::missing("`nsenter` and `ip link add … type bridge` (link deletion not exercised)");
    }
    delete(&a).unwrap();
    delete(&b).unwrap();
    assert_eq!(mounted(&a) + mounted(&b), 0);
}
