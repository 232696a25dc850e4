use std::path::{Path, PathBuf};

use super::*;
use crate::runtime::state::InstanceDirs;
use crate::testing;

#[test]
fn options_list_lowers_top_most_first() {
    let lowers = [
        PathBuf::from("/s/snapshots/12"),
        PathBuf::from("/s/snapshots/3"),
    ];
    let o = overlay_options(
        Path::new("/s/i/rootfs"),
        &lowers,
        Path::new("/s/i/upper"),
        Path::new("/s/i/work"),
    )
    .unwrap();
    assert_eq!(
        o,
        "lowerdir=/s/snapshots/12:/s/snapshots/3,upperdir=/s/i/upper,workdir=/s/i/work"
    );
}

#[test]
fn options_refuse_separators_and_more_than_a_page() {
    let r = Path::new("/r");
    let bad = overlay_options(
        r,
        &[PathBuf::from("/a:b")],
        Path::new("/u"),
        Path::new("/w"),
    );
    assert!(matches!(bad, Err(MountError::BadPath { .. })), "{bad:?}");
    let bad = overlay_options(
        r,
        &[PathBuf::from("/a")],
        Path::new("/u,x"),
        Path::new("/w"),
    );
    assert!(matches!(bad, Err(MountError::BadPath { .. })));

    // 130 layers of `/var/lib/berth/snapshots/NNN` fit; 200 do not.
    let lowers = |n: usize| -> Vec<PathBuf> {
        (0..n)
            .map(|i| PathBuf::from(format!("/var/lib/berth/snapshots/{i}")))
            .collect()
    };
    let (u, w) = (
        Path::new("/var/lib/berth/instances/x/upper"),
        Path::new("/w"),
    );
    assert!(overlay_options(r, &lowers(130), u, w).is_ok());
    let e = overlay_options(r, &lowers(200), u, w).unwrap_err();
    assert!(e.to_string().contains("200 layers"), "{e}");
}

#[test]
fn mountinfo_is_parsed_with_escapes() {
    let text = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 0:32 / /var/lib/berth/instances/a\\040b/rootfs rw,relatime - overlay overlay rw,lowerdir=/x
40 22 0:33 / /run/x rw shared:5 master:2 - tmpfs tmpfs rw
";
    assert_eq!(
        parse_mountinfo(text),
        vec![
            ("/".to_string(), "ext4".to_string()),
            (
                "/var/lib/berth/instances/a b/rootfs".to_string(),
                "overlay".to_string()
            ),
            ("/run/x".to_string(), "tmpfs".to_string()),
        ]
    );
}

#[test]
fn overlay_lowers_are_read_from_the_super_options() {
    let text = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 0:32 / /s/instances/a/rootfs rw,relatime - overlay overlay rw,lowerdir=/s/snapshots/12:/s/snapshots/3,upperdir=/s/instances/a/upper,workdir=/s/instances/a/work,uuid=on
37 22 0:34 / /s/instances/b/rootfs rw - overlay overlay rw,lowerdir=/s/snap\\040x/1,upperdir=/u,workdir=/w
";
    assert_eq!(
        parse_overlay_lowers(text),
        vec![
            PathBuf::from("/s/snapshots/12"),
            PathBuf::from("/s/snapshots/3"),
            PathBuf::from("/s/snap x/1"),
        ]
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn overlay_of_two_layers_mounts_and_unmounts_idempotently() {
    if !testing::have_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, top) = (tmp.path().join("snap/1"), tmp.path().join("snap/2"));
    write(&base.join("etc/os"), "base\n");
    write(&base.join("etc/only-base"), "b\n");
    write(&top.join("etc/os"), "top\n");
    let dirs = InstanceDirs::new(tmp.path(), "web-0123abcd");

    mount_rootfs(&dirs, &[top.clone(), base.clone()]).unwrap();
    let rootfs = dirs.rootfs();
    assert!(is_overlay_mounted(&rootfs));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/os")).unwrap(),
        "top\n"
    );
    assert!(rootfs.join("etc/only-base").exists());
    // Writes land in upper/, never in a snapshot.
    std::fs::write(rootfs.join("etc/new"), "n").unwrap();
    assert!(dirs.upper().join("etc/new").exists());
    assert!(!top.join("etc/new").exists());

    // Again (a crash after mounting): still one mount.
    mount_rootfs(&dirs, &[top.clone(), base.clone()]).unwrap();
    assert_eq!(mounts_at(&rootfs), vec!["overlay".to_string()]);

    unmount_rootfs(&dirs).unwrap();
    assert!(mounts_at(&rootfs).is_empty());
    unmount_rootfs(&dirs).unwrap();
    // A rootfs that was never created.
    unmount_rootfs(&InstanceDirs::new(tmp.path(), "gone-00000000")).unwrap();
}

#[test]
fn single_layer_and_layerless_images_mount() {
    if !testing::have_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let only = tmp.path().join("snap/1");
    write(&only.join("bin/x"), "x");
    let one = InstanceDirs::new(tmp.path(), "one-00000001");
    mount_rootfs(&one, std::slice::from_ref(&only)).unwrap();
    assert!(one.rootfs().join("bin/x").exists());
    let none = InstanceDirs::new(tmp.path(), "none-00000002");
    mount_rootfs(&none, &[]).unwrap();
    assert!(is_overlay_mounted(&none.rootfs()));
    assert_eq!(std::fs::read_dir(none.rootfs()).unwrap().count(), 0);
    unmount_rootfs(&one).unwrap();
    unmount_rootfs(&none).unwrap();
    assert!(mounts_at(&one.rootfs()).is_empty() && mounts_at(&none.rootfs()).is_empty());
}

#[test]
fn a_busy_rootfs_is_detached() {
    if !testing::have_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let only = tmp.path().join("snap/1");
    write(&only.join("f"), "x");
    let dirs = InstanceDirs::new(tmp.path(), "busy-00000003");
    mount_rootfs(&dirs, std::slice::from_ref(&only)).unwrap();
    // A process whose working directory is inside keeps the mount busy.
    let mut holder = std::process::Command::new("/bin/sleep")
        .arg("30")
        .current_dir(dirs.rootfs())
        .spawn()
        .unwrap();
    let r = unmount_rootfs(&dirs);
    holder.kill().unwrap();
    holder.wait().unwrap();
    r.unwrap();
    assert!(mounts_at(&dirs.rootfs()).is_empty());
}
