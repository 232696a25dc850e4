//! Garbage collection over temporary state directories laid out as berth lays them
//! out: image records and blobs in the content store, snapshots committed through the
//! snapshot store, container records, instance directories, revision checkouts and the
//! applied-revision record.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::image::digest::Digest;
use crate::image::registry::Target;
use crate::image::snapshot::{ChainId, Prepared};
use crate::image::store::records::{self, BlobRef, LayerRecord};
use crate::runtime::render;
use crate::source::applied::{RevisionInfo, SCHEMA_VERSION as APPLIED_VERSION};
use crate::testing;

const HOUR: Duration = Duration::from_secs(3600);
const R1: &str = "1111111111111111111111111111111111111111";
const R2: &str = "2222222222222222222222222222222222222222";

/// A state directory and the clock of the collections run over it.
struct Node {
    dir: tempfile::TempDir,
    t0: SystemTime,
}

impl Node {
    fn new() -> Node {
        Node {
            dir: tempfile::tempdir().unwrap(),
            t0: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn state(&self) -> &Path {
        self.dir.path()
    }

    fn at(&self, after: Duration) -> SystemTime {
        self.t0 + after
    }

    /// A collection `after` t0, with `/proc` as the host has it.
    fn collect(&self, grace: Duration, after: Duration) -> GcReport {
        collect_locked(self.state(), grace, self.at(after)).unwrap()
    }

    fn store(&self) -> Store {
        Store::open(self.state()).unwrap()
    }

    fn blob(&self, data: &[u8]) -> BlobRef {
        let d = Digest::of(data);
        let t = Target::new("r.io", "app", d.as_str());
        self.store().write_blob(&d, data, &t).unwrap();
        BlobRef {
            digest: d,
            size: data.len() as u64,
            media_type: "x".into(),
        }
    }

    /// Pulls image `reference` as its record, blobs and snapshots (one per layer, each
    /// holding one file with the layer's bytes).
    fn image(&self, reference: &str, layers: &[&str]) -> ImageRecord {
        let manifest = self.blob(format!("manifest {reference}").as_bytes());
        let config = self.blob(format!("config {reference}").as_bytes());
        let layers: Vec<LayerRecord> = layers
            .iter()
            .map(|l| {
                let b = self.blob(l.as_bytes());
                LayerRecord {
                    digest: b.digest,
                    size: b.size,
                    media_type: "t".into(),
                    diff_id: Digest::of(format!("tar {l}").as_bytes()),
                }
            })
            .collect();
        let snapshots = SnapshotStore::open(self.state()).unwrap();
        let mut parent: Option<ChainId> = None;
        for l in &layers {
            let chain = ChainId::of(parent.as_ref(), l.diff_id.as_str()).unwrap();
            if let Prepared::New(active) = snapshots.prepare(&chain, parent.as_ref()).unwrap() {
                fs::write(active.path().join("layer"), vec![1u8; 8192]).unwrap();
                active.commit(l.diff_id.as_str()).unwrap();
            }
            parent = Some(chain);
        }
        let record = records::sample(reference, manifest, config, layers);
        self.store().put_record(&record).unwrap();
        record
    }

    /// A container record `name` running `image`, and its instance directory.
    fn container(&self, name: &str, image: &ImageRecord) -> ContainerRecord {
        let mut r = record::sample(name);
        r.image.reference = image.reference.clone();
        r.image.digest = image.digest.as_str().to_string();
        r.image.chain_ids = crate::image::prepare::chain_ids(image)
            .unwrap()
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        record::write_record(self.state(), &r).unwrap();
        self.instance(&r.instance);
        r
    }

    /// An instance directory as a create leaves it.
    fn instance(&self, id: &str) -> InstanceDirs {
        let dirs = InstanceDirs::new(self.state(), id);
        dirs.create().unwrap();
        fs::write(dirs.upper().join("written"), vec![2u8; 4096]).unwrap();
        fs::write(dirs.log(), b"hello\n").unwrap();
        dirs
    }

    fn revision(&self, commit: &str) -> PathBuf {
        let dir = self.state().join("source/revisions").join(commit);
        fs::create_dir_all(dir.join("fleet")).unwrap();
        fs::write(dir.join("fleet/web.toml"), b"[container.web]\n").unwrap();
        dir
    }

    /// `state/applied.json`: `last` applied, each container running its commit.
    fn applied(&self, last: &str, runs: &[(&str, &str)]) {
        Applied {
            schema_version: APPLIED_VERSION,
            revision: RevisionInfo {
                commit: last.into(),
                url: "file:///repo".into(),
                follows: "branch main".into(),
                path: "fleet".into(),
                author: "Ops <ops@example.com>".into(),
                time: "2026-12-04T10:00:00Z".into(),
                subject: "web".into(),
                signer: None,
                tag_object: None,
            },
            applied_at: "2026-12-04T10:00:05Z".into(),
            applied: true,
            containers: runs
                .iter()
                .map(|(c, r)| (c.to_string(), r.to_string()))
                .collect(),
            chains: Default::default(),
        }
        .store(self.state())
        .unwrap();
    }

    /// What `state/gc.json` holds: kind → ids.
    fn ledger(&self) -> BTreeMap<String, Vec<String>> {
        let text = fs::read_to_string(self.state().join("state/gc.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], 1, "{v}");
        v["unused_since"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, m)| (k.clone(), m.as_object().unwrap().keys().cloned().collect()))
            .collect()
    }

    fn snapshot_chains(&self) -> Vec<ChainId> {
        let all = SnapshotStore::open(self.state()).unwrap().list().unwrap();
        all.into_iter().map(|s| s.chain_id).collect()
    }

    fn references(&self) -> Vec<String> {
        let records = self.store().records().unwrap();
        records.into_iter().map(|r| r.reference).collect()
    }
}

/// Waits until process `pid` runs the shell (its command line is the shell's).
fn wait_for_shell(pid: u32) {
    let cmdline = format!("/proc/{pid}/cmdline");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !fs::read(&cmdline).unwrap_or_default().starts_with(b"sh\0") {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn chains(image: &ImageRecord) -> Vec<ChainId> {
    crate::image::prepare::chain_ids(image).unwrap()
}

fn removed(report: &GcReport) -> Vec<(Kind, String)> {
    report
        .removed
        .iter()
        .map(|r| (r.kind, r.id.clone()))
        .collect()
}

/// Web runs image `a` from revision R1; image `b` (sharing `a`'s base layer), an old
/// instance and revision R2 are unused.
fn node_with_garbage() -> (Node, ImageRecord, ImageRecord, ContainerRecord) {
    let node = Node::new();
    let a = node.image("r.io/app:a", &["base", "a"]);
    let b = node.image("r.io/app:b", &["base", "b"]);
    let web = node.container("web", &a);
    node.instance("web-99999999");
    node.revision(R1);
    node.revision(R2);
    node.applied(R1, &[("web", R1)]);
    (node, a, b, web)
}

#[test]
fn unused_objects_wait_for_the_grace_across_collections_then_go() {
    let (node, a, b, web) = node_with_garbage();
    let b_top = chains(&b)[1].clone();

    let first = node.collect(HOUR, Duration::ZERO);
    assert!(first.removed.is_empty(), "{first:?}");
    assert_eq!(first.kept_waiting, 4, "{first:?}");
    let waiting = BTreeMap::from([
        ("image".to_string(), vec!["r.io/app:b".to_string()]),
        ("instance".to_string(), vec!["web-99999999".to_string()]),
        ("revision".to_string(), vec![R2.to_string()]),
        ("snapshot".to_string(), vec![b_top.to_string()]),
    ]);
    assert_eq!(node.ledger(), waiting);

    // Short of the grace: still waiting, first seen at t0 still.
    let second = node.collect(HOUR, HOUR - Duration::from_secs(1));
    assert!(second.removed.is_empty(), "{second:?}");
    assert_eq!(second.kept_waiting, 4);
    assert_eq!(node.ledger(), waiting);

    let third = node.collect(HOUR, HOUR);
    assert_eq!(
        removed(&third),
        [
            (Kind::Instance, "web-99999999".to_string()),
            (Kind::Image, "r.io/app:b".to_string()),
            (Kind::Snapshot, b_top.to_string()),
            (Kind::Revision, R2.to_string()),
        ]
    );
    assert_eq!(third.kept_waiting, 0);
    assert!(third.removed.iter().all(|r| r.bytes > 0), "{third:?}");
    assert_eq!(
        third.freed_bytes,
        third.removed.iter().map(|r| r.bytes).sum::<u64>()
    );
    assert!(node.ledger().is_empty(), "{:?}", node.ledger());

    // What is in use is all there; what was not is gone, blobs of `b` but the shared
    // base layer included.
    assert_eq!(node.references(), ["r.io/app:a"]);
    assert_eq!(node.snapshot_chains(), chains(&a));
    let store = node.store();
    assert!(a.blobs().all(|d| store.has_blob(d)));
    assert!(!store.has_blob(&b.manifest.digest) && !store.has_blob(&b.config.digest));
    assert!(!store.has_blob(&b.layers[1].digest));
    assert!(
        store.has_blob(&b.layers[0].digest),
        "a still holds the base"
    );
    assert!(InstanceDirs::new(node.state(), &web.instance).root.is_dir());
    assert!(
        !InstanceDirs::new(node.state(), "web-99999999")
            .root
            .exists()
    );
    let revisions = node.state().join("source/revisions");
    assert!(revisions.join(R1).is_dir());
    assert_eq!(fs::read_dir(&revisions).unwrap().count(), 1);

    // Nothing left to collect.
    let fourth = node.collect(HOUR, 2 * HOUR);
    assert_eq!(fourth, GcReport::default());
}

#[test]
fn with_no_grace_unused_objects_go_at_once_and_what_is_used_stays() {
    let (node, a, _, _) = node_with_garbage();
    let r = node.collect(Duration::ZERO, Duration::ZERO);
    assert_eq!(r.removed.len(), 4, "{r:?}");
    assert_eq!(r.kept_waiting, 0);
    assert_eq!(node.references(), ["r.io/app:a"]);
    assert_eq!(node.snapshot_chains(), chains(&a));
    assert!(node.ledger().is_empty());
}

#[test]
fn an_object_used_again_leaves_the_ledger_and_its_grace_starts_afresh() {
    let (node, _, b, _) = node_with_garbage();
    node.collect(HOUR, Duration::ZERO);
    assert!(node.ledger()["image"].contains(&"r.io/app:b".to_string()));

    // A container runs `b` now: it, its snapshots, and the revision `db` runs are in use.
    node.container("db", &b);
    node.applied(R1, &[("web", R1), ("db", R2)]);
    let used = node.collect(HOUR, Duration::from_secs(600));
    assert!(used.removed.is_empty(), "{used:?}");
    assert_eq!(used.kept_waiting, 1, "the old instance only: {used:?}");
    assert_eq!(node.ledger().keys().collect::<Vec<_>>(), ["instance"]);

    // Unused again at +20 min: the grace counts from then, not from t0.
    record::remove_record(node.state(), "db").unwrap();
    fs::remove_dir_all(InstanceDirs::new(node.state(), "db-0123abcd").root).unwrap();
    node.applied(R1, &[("web", R1)]);
    let again = node.collect(HOUR, Duration::from_secs(1200));
    assert!(again.removed.is_empty(), "{again:?}");
    let at_one_hour = node.collect(HOUR, HOUR);
    assert_eq!(
        removed(&at_one_hour),
        [(Kind::Instance, "web-99999999".to_string())]
    );
    let later = node.collect(HOUR, HOUR + Duration::from_secs(1200));
    let kinds: Vec<Kind> = later.removed.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [Kind::Image, Kind::Snapshot, Kind::Revision],
        "{later:?}"
    );
}

#[test]
fn an_instance_whose_shim_runs_is_kept_whatever_the_records_say() {
    let node = Node::new();
    let id = "old-0123abcd";
    let dirs = node.instance(id);
    // A live process with the shim's command line for this instance.
    let mut shim = std::process::Command::new("sh")
        .args(["-c", "sleep 60; true", "berth-shim", "--id", id])
        .spawn()
        .unwrap();
    fs::write(dirs.shim_pid_file(), shim.id().to_string()).unwrap();
    wait_for_shell(shim.id());
    let kept = node.collect(Duration::ZERO, Duration::ZERO);
    assert!(kept.removed.is_empty(), "{kept:?}");
    assert_eq!(kept.kept_waiting, 0, "an instance that runs is in use");
    assert!(dirs.root.is_dir());

    // A shim that is another instance's keeps nothing of this one.
    let other = node.instance("web-0123abcd");
    fs::write(other.shim_pid_file(), shim.id().to_string()).unwrap();
    let r = node.collect(Duration::ZERO, Duration::ZERO);
    assert_eq!(removed(&r), [(Kind::Instance, "web-0123abcd".to_string())]);
    assert!(dirs.root.is_dir());
    // Nor does a live process that is no shim (a recycled pid).
    fs::write(dirs.shim_pid_file(), std::process::id().to_string()).unwrap();
    let r = node.collect(Duration::ZERO, Duration::ZERO);
    shim.kill().unwrap();
    shim.wait().unwrap();
    assert_eq!(removed(&r), [(Kind::Instance, id.to_string())]);
}

#[test]
fn an_instance_whose_init_runs_in_its_cgroup_is_kept_and_a_recycled_pid_is_not() {
    let node = Node::new();
    let id = "old-0123abcd";
    let dirs = node.instance(id);
    fs::write(dirs.pid_file(), "4242").unwrap();
    let proc = tempfile::tempdir().unwrap();
    let pid_dir = proc.path().join("4242");
    fs::create_dir_all(&pid_dir).unwrap();
    let stat = "4242 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20\n";
    fs::write(pid_dir.join("stat"), stat).unwrap();
    let cgroup = render::cgroups_path(node.state(), id);
    fs::write(pid_dir.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
    let procs = Procs {
        root: proc.path().to_path_buf(),
    };
    let run = |procs: &Procs| collect_with(node.state(), Duration::ZERO, node.t0, procs).unwrap();

    assert!(run(&procs).removed.is_empty());
    // A zombie does not run.
    fs::write(pid_dir.join("stat"), stat.replace(" S ", " Z ")).unwrap();
    let zombie = Node::new();
    let zdirs = zombie.instance(id);
    fs::write(zdirs.pid_file(), "4242").unwrap();
    let r = collect_with(zombie.state(), Duration::ZERO, zombie.t0, &procs).unwrap();
    assert_eq!(removed(&r), [(Kind::Instance, id.to_string())]);
    // A live process in another cgroup is a recycled pid.
    fs::write(pid_dir.join("stat"), stat).unwrap();
    fs::write(pid_dir.join("cgroup"), "0::/user.slice/session-1.scope\n").unwrap();
    assert_eq!(removed(&run(&procs)), [(Kind::Instance, id.to_string())]);
}

#[test]
fn only_what_berth_names_is_removed_and_no_link_is_followed() {
    let node = Node::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious"), b"keep me").unwrap();
    let instances = node.state().join("instances");
    let revisions = node.state().join("source/revisions");
    fs::create_dir_all(instances.join("Not An Id")).unwrap();
    fs::create_dir_all(instances.join("web-0123abcz")).unwrap();
    fs::create_dir_all(revisions.join("not-a-commit")).unwrap();
    fs::create_dir_all(revisions.join(".tmp-checkout-1")).unwrap();
    std::os::unix::fs::symlink(outside.path(), instances.join("evil-0123abcd")).unwrap();
    std::os::unix::fs::symlink(outside.path(), revisions.join(R2)).unwrap();
    let r = node.collect(Duration::ZERO, Duration::ZERO);
    assert_eq!(r, GcReport::default());
    assert_eq!(
        fs::read(outside.path().join("precious")).unwrap(),
        b"keep me"
    );
    for kept in [
        instances.join("Not An Id"),
        instances.join("web-0123abcz"),
        instances.join("evil-0123abcd"),
        revisions.join("not-a-commit"),
        revisions.join(".tmp-checkout-1"),
        revisions.join(R2),
    ] {
        assert!(
            fs::symlink_metadata(&kept).is_ok(),
            "{} went",
            kept.display()
        );
    }
}

#[test]
fn an_instance_still_attached_to_a_network_is_left_for_the_teardown() {
    let node = Node::new();
    let dirs = node.instance("old-0123abcd");
    let attachment = node.state().join("cni/attachments/old-0123abcd.json");
    fs::create_dir_all(attachment.parent().unwrap()).unwrap();
    fs::write(&attachment, b"{}").unwrap();
    let r = node.collect(Duration::ZERO, Duration::ZERO);
    assert!(r.removed.is_empty(), "{r:?}");
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert!(
        r.skipped[0].reason.contains("attached to a network"),
        "{r:?}"
    );
    assert!(dirs.root.is_dir());
    // Still due: the next collection tries again, from the same first sighting.
    assert_eq!(node.ledger()["instance"], ["old-0123abcd"]);
    fs::remove_file(&attachment).unwrap();
    let r = node.collect(HOUR, Duration::from_secs(60));
    assert_eq!(r.removed.len(), 0, "a grace of an hour from t0: {r:?}");
    let r = node.collect(Duration::from_secs(60), Duration::from_secs(60));
    assert_eq!(removed(&r), [(Kind::Instance, "old-0123abcd".to_string())]);
}

#[test]
fn a_mounted_rootfs_is_unmounted_first_and_a_mount_below_keeps_the_instance() {
    if !testing::have_root() {
        return;
    }
    let node = Node::new();
    let image = node.image("r.io/app:a", &["base"]);
    let lowers = SnapshotStore::open(node.state())
        .unwrap()
        .lowerdirs(&chains(&image))
        .unwrap();
    // Unused with its overlay mounted: unmounted, then removed.
    let overlaid = node.instance("old-0123abcd");
    mount::mount_rootfs(&overlaid, &lowers).unwrap();
    assert!(mount::is_overlay_mounted(&overlaid.rootfs()));
    // Unused with a host directory staged below it: left alone, the directory whole.
    let bound = node.instance("bound-0123abcd");
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("precious"), b"keep me").unwrap();
    let point = bound.root.join("binds/0");
    fs::create_dir_all(&point).unwrap();
    let flags = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some(host.path()), &point, None::<&str>, flags, None::<&str>).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = mount::unmount_all(&self.0);
        }
    }
    let _guards = (Unmount(point.clone()), Unmount(overlaid.rootfs()));

    // A third, unused too, runs with its overlay mounted (no record names it): the
    // snapshots it reads stay, though no image is kept.
    let running = node.instance("running-0123abcd");
    mount::mount_rootfs(&running, &lowers).unwrap();
    let _running = Unmount(running.rootfs());
    let mut shim = std::process::Command::new("sh")
        .args([
            "-c",
            "sleep 60; true",
            "berth-shim",
            "--id",
            "running-0123abcd",
        ])
        .spawn()
        .unwrap();
    fs::write(running.shim_pid_file(), shim.id().to_string()).unwrap();
    wait_for_shell(shim.id());

    let r = node.collect(Duration::ZERO, Duration::ZERO);
    shim.kill().unwrap();
    shim.wait().unwrap();
    assert_eq!(
        removed(&r),
        [
            (Kind::Instance, "old-0123abcd".to_string()),
            (Kind::Image, "r.io/app:a".to_string()),
        ]
    );
    assert_eq!(node.snapshot_chains(), chains(&image));
    assert!(mount::is_overlay_mounted(&running.rootfs()));
    assert!(!overlaid.root.exists());
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert_eq!(r.skipped[0].id, "bound-0123abcd");
    assert!(r.skipped[0].reason.contains("binds/0"), "{r:?}");
    assert_eq!(fs::read(host.path().join("precious")).unwrap(), b"keep me");
    assert!(bound.root.is_dir());
}

#[test]
fn collect_takes_the_lock_and_bumps_the_generation_when_it_removed_something() {
    let (node, _, _, _) = node_with_garbage();
    let before = lock::generation(node.state()).unwrap();
    let r = collect(node.state(), HOUR, node.t0).unwrap();
    assert!(r.removed.is_empty());
    assert_eq!(lock::generation(node.state()).unwrap(), before);
    let r = collect(node.state(), Duration::ZERO, node.t0).unwrap();
    assert_eq!(r.removed.len(), 4);
    assert_eq!(lock::generation(node.state()).unwrap(), before + 1);

    // Another writer holds the lock: collection waits, then gives up, transiently.
    let _held = lock::lock(node.state(), "berth apply", Duration::ZERO, &mut |_| {}).unwrap();
    let wait = Duration::from_millis(200);
    let t = std::time::Instant::now();
    let err = collect_waiting(node.state(), Duration::ZERO, node.t0, wait).unwrap_err();
    assert!(t.elapsed() >= wait);
    assert!(
        matches!(err, GcError::Lock(LockError::Timeout { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("berth apply"), "{err}");
}

#[test]
fn an_unreadable_ledger_starts_the_grace_afresh() {
    let (node, _, _, _) = node_with_garbage();
    node.collect(HOUR, Duration::ZERO);
    fs::write(node.state().join("state/gc.json"), b"{ torn").unwrap();
    let r = node.collect(HOUR, HOUR);
    assert!(r.removed.is_empty(), "{r:?}");
    assert_eq!(r.kept_waiting, 4);
    assert_eq!(node.ledger().len(), 4);
    let r = node.collect(HOUR, 2 * HOUR);
    assert_eq!(r.removed.len(), 4);
}

#[test]
fn a_clock_set_back_delays_a_removal_by_no_more_than_a_grace() {
    let (node, _, _, _) = node_with_garbage();
    // First seen a day ahead, then the clock is set back to t0.
    node.collect(HOUR, 24 * HOUR);
    let r = node.collect(HOUR, Duration::ZERO);
    assert!(r.removed.is_empty(), "{r:?}");
    let r = node.collect(HOUR, HOUR);
    assert_eq!(r.removed.len(), 4, "{r:?}");
}
