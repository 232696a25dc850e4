//! The snapshot store (`image::snapshot`) driven through real unpacks: chain IDs,
//! lowerdir order, persistence, no partial snapshot after a failure, concurrency,
//! removal and crash leftovers.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::tests::Tar;
use super::*;
use crate::image::snapshot::{ChainId, Prepared, SnapshotError, SnapshotStore, chain_ids};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn diff_id(tar: &[u8]) -> String {
    use sha2::Digest;
    let sum = sha2::Sha256::digest(tar);
    format!(
        "sha256:{}",
        sum.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Everything under `snapshots/` except the lock files and the metadata.
fn dirs(state: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !matches!(n.as_str(), "locks" | ".lock" | "metadata.json"))
        .collect();
    names.sort();
    names
}

#[test]
fn chain_ids_follow_the_image_spec() {
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let ids = chain_ids(&[&a, &b]).unwrap();
    assert_eq!(ids[0].as_str(), a);
    // python3: sha256(("sha256:" + "a"*64 + " sha256:" + "b"*64).encode())
    assert_eq!(
        ids[1].as_str(),
        "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c"
    );
    for bad in [
        "sha256:ABC",
        "sha512:aa",
        &a[..70],
        &format!("sha256:{}", "A".repeat(64)),
    ] {
        assert!(
            matches!(ChainId::parse(bad), Err(SnapshotError::InvalidDigest(_))),
            "{bad}"
        );
    }
}

#[test]
fn layers_become_numbered_lowerdirs_top_first() {
    let state = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(state.path()).unwrap();
    let l0 = Tar::new().dir("etc").file("etc/os", b"base").finish();
    let l1 = Tar::new()
        .file("etc/.wh.os", b"")
        .file("app", b"app")
        .finish();
    let opts = UnpackOptions::default();
    let s0 = store
        .unpack(None, &diff_id(&l0), "sha256:l0", TAR, &l0[..], &opts)
        .unwrap();
    let s1 = store
        .unpack(
            Some(&s0.chain_id),
            &diff_id(&l1),
            "sha256:l1",
            TAR,
            &l1[..],
            &opts,
        )
        .unwrap();
    assert_eq!((s0.id, s1.id), (1, 2));
    assert_eq!(std::fs::read(s0.path.join("etc/os")).unwrap(), b"base");
    assert!(s1.path.join("app").is_file());
    let chain = chain_ids(&[diff_id(&l0), diff_id(&l1)]).unwrap();
    assert_eq!(chain[1], s1.chain_id);

    // Reopened (a restart): the same answers; an existing chain is not unpacked again.
    let store = SnapshotStore::open(state.path()).unwrap();
    assert_eq!(
        store.lowerdirs(&chain).unwrap(),
        [s1.path.clone(), s0.path.clone()]
    );
    assert_eq!(store.get(&chain[0]).unwrap(), Some(s0.clone()));
    let again = store
        .unpack(
            None,
            &diff_id(&l0),
            "sha256:l0",
            TAR,
            &b"not read"[..],
            &opts,
        )
        .unwrap();
    assert_eq!(again, s0);
    assert_eq!(store.list().unwrap(), [s0, s1]);
    assert_eq!(dirs(state.path()), ["1", "2"]);
}

#[test]
fn a_failed_unpack_leaves_no_snapshot() {
    let state = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(state.path()).unwrap();
    let mut t = Tar::new();
    for i in 0..20 {
        t = t.file(&format!("f{i}"), b"x");
    }
    let tar = t.finish();
    let mut opts = UnpackOptions::default();
    opts.limits.max_entries = 10;
    let err = store
        .unpack(None, &diff_id(&tar), "sha256:big", TAR, &tar[..], &opts)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer sha256:big: limit max_entries exceeded (limit 10)"
    );
    // A wrong diff_id (a tampered or mislabelled blob) fails the same way.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = store
        .unpack(
            None,
            &wrong,
            "sha256:big",
            TAR,
            &tar[..],
            &UnpackOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Unpack(UnpackError::DiffIdMismatch { .. })
        ),
        "{err:?}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(dirs(state.path()).is_empty());
    // A parent must exist first.
    let orphan = ChainId::parse(&wrong).unwrap();
    let err = store
        .unpack(
            Some(&orphan),
            &diff_id(&tar),
            "sha256:x",
            TAR,
            &tar[..],
            &opts,
        )
        .unwrap_err();
    assert!(
        matches!(err, SnapshotError::ParentMissing { .. }),
        "{err:?}"
    );
}

#[test]
fn concurrent_unpacks_of_one_chain_unpack_once() {
    let state = tempfile::tempdir().unwrap();
    let tar = Tar::new().file("f", b"1").finish();
    let chain = ChainId::parse(&diff_id(&tar)).unwrap();
    let started = Arc::new(Barrier::new(2));
    let first = {
        let (state, chain, started, d) = (
            state.path().to_owned(),
            chain.clone(),
            started.clone(),
            diff_id(&tar),
        );
        let tar = tar.clone();
        std::thread::spawn(move || {
            let store = SnapshotStore::open(&state).unwrap();
            let Prepared::New(active) = store.prepare(&chain, None).unwrap() else {
                panic!("first must unpack")
            };
            started.wait();
            std::thread::sleep(Duration::from_millis(200));
            unpack_layer(
                "sha256:f",
                TAR,
                &tar[..],
                active.path(),
                &UnpackOptions::default(),
            )
            .unwrap();
            active.commit(&d).unwrap()
        })
    };
    started.wait();
    // Another store, as another process would have: waits for the first, then finds it.
    let store = SnapshotStore::open(state.path()).unwrap();
    let second = match store.prepare(&chain, None).unwrap() {
        Prepared::Exists(s) => s,
        Prepared::New(_) => panic!("second prepare must find the first's snapshot"),
    };
    assert_eq!(first.join().unwrap(), second);
    assert_eq!(dirs(state.path()), ["1"]);
}

#[test]
fn remove_refuses_parents_and_cleanup_takes_crash_leftovers() {
    let state = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(state.path()).unwrap();
    let l0 = Tar::new().file("a", b"0").finish();
    let l1 = Tar::new().file("b", b"1").finish();
    let opts = UnpackOptions::default();
    let s0 = store
        .unpack(None, &diff_id(&l0), "l0", TAR, &l0[..], &opts)
        .unwrap();
    let s1 = store
        .unpack(Some(&s0.chain_id), &diff_id(&l1), "l1", TAR, &l1[..], &opts)
        .unwrap();
    assert!(matches!(
        store.remove(&s0.chain_id),
        Err(SnapshotError::InUse { .. })
    ));
    assert!(store.remove(&s1.chain_id).unwrap());
    assert!(!store.remove(&s1.chain_id).unwrap());
    assert!(store.remove(&s0.chain_id).unwrap());
    assert!(store.list().unwrap().is_empty() && dirs(state.path()).is_empty());

    // A live unpack's temp dir survives cleanup; a dead one's and an orphan number do not.
    let live = ChainId::parse(&diff_id(&l0)).unwrap();
    let Prepared::New(active) = store.prepare(&live, None).unwrap() else {
        panic!("expected new")
    };
    let snaps = state.path().join("snapshots");
    std::fs::create_dir_all(snaps.join(format!("tmp-{}", "c".repeat(64))).join("half")).unwrap();
    std::fs::create_dir(snaps.join("7")).unwrap();
    assert_eq!(store.cleanup().unwrap(), 2);
    assert_eq!(dirs(state.path()), [format!("tmp-{}", &live.as_str()[7..])]);
    drop(active);
    assert!(dirs(state.path()).is_empty());
    // Numbers are not reused after removal.
    let s = store
        .unpack(None, &diff_id(&l0), "l0", TAR, &l0[..], &opts)
        .unwrap();
    assert_eq!(s.id, 3);
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn snapshots_under_overlayfs_show_the_flattened_tree() {
    if !crate::testing::have_root() {
        return;
    }
    use super::tests_meta::{lower, tree, upper};
    let state = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(state.path()).unwrap();
    let (l0, l1) = (lower(), upper());
    let opts = UnpackOptions::default();
    let s0 = store
        .unpack(None, &diff_id(&l0), "l0", TAR, &l0[..], &opts)
        .unwrap();
    let s1 = store
        .unpack(Some(&s0.chain_id), &diff_id(&l1), "l1", TAR, &l1[..], &opts)
        .unwrap();
    let lowers = store.lowerdirs(&[s0.chain_id, s1.chain_id]).unwrap();
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();

    let merged = state.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", lowerdir.join(":")))
        .arg(&merged)
        .status();
    if !crate::testing::require(status.is_ok_and(|s| s.success()), "an overlayfs mount") {
        return;
    }
    let _mounted = Mounted(merged.clone());

    let flat = state.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    let flatten = UnpackOptions {
        mode: WhiteoutMode::Flatten,
        ..UnpackOptions::default()
    };
    for l in [&l0, &l1] {
        unpack_layer("l", TAR, &l[..], &flat, &flatten).unwrap();
    }
    assert_eq!(tree(&merged), tree(&flat));
    assert_eq!(
        tree(&merged),
        ["a", "a/early", "a/new", "a/sub", "a/sub/h", "c", "keep"]
    );
}
