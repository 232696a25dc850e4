//! The host's sequencing over fakes (`fakes.rs`): what a create makes and in what
//! order, what a failed create undoes, how an exited instance and one a reboot took
//! are started again, and what a remove takes down. Each test names the end-to-end
//! test (tests/e2e) that shows the same behaviour with runc, overlayfs and CNI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_spec::{DesiredState, Secret};

use super::fakes::{FakeFs, FakeRuntime, Log};
use super::*;
use crate::network::cni::CniExec;
use crate::network::fake::{FakeCni, FakeHost};
use crate::reconcile::bindcheck::BindCheck;
use crate::reconcile::executor::FailureKind;
use crate::reconcile::images::ReadyImage;
use crate::reconcile::model::DesiredContainer;
use crate::runtime::render::fixtures;
use crate::runtime::spec_hash::SpecHash;
use crate::storage::secrets::AgeIdentity;

const ID: &str = "app-abababab";

/// A container with a volume and a secret, off any bridge (its CNI side is tested in
/// `network`).
const APP: &str = r#"
[container.app]
image = "registry.example.com/shop/app:1"
user = "10001:10001"
command = ["/bin/app"]
network_mode = "none"

[[container.app.mounts]]
volume = "web-data"
target = "/data"

[[container.app.secrets]]
name = "db-password"
target = "db-password"
"#;

/// Bind sources are all allowed here.
struct AnyBind;

impl BindCheck for AnyBind {
    fn refuse(&self, _: &berth_spec::Container, _: usize, _: &Path) -> Option<String> {
        None
    }
}

/// One node: a spec root with the encrypted secret, state and run directories, and
/// the fakes, sharing one log.
struct Lab {
    dir: tempfile::TempDir,
    spec: DesiredState,
    desired: Desired,
    images: BTreeMap<String, ReadyImage>,
    networks: Networks,
    runtime: FakeRuntime,
    fs: FakeFs,
    identity: AgeIdentity,
    info: HostInfo,
    log: Log,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let identity = AgeIdentity::generate();
        let recipients: Vec<_> = identity
            .recipients()
            .iter()
            .map(|r| crate::storage::secrets::parse_recipient(r).unwrap())
            .collect();
        let sealed = crate::storage::secrets::encrypt(&recipients, b"hunter2", false).unwrap();
        let root = dir.path().join("spec");
        std::fs::create_dir_all(root.join("secrets")).unwrap();
        std::fs::write(root.join("secrets/db-password.age"), sealed).unwrap();

        let spec = DesiredState {
            secrets: BTreeMap::from([(
                "db-password".to_string(),
                Secret {
                    name: "db-password".into(),
                    origin: Default::default(),
                    file: "secrets/db-password.age".into(),
                },
            )]),
            ..DesiredState::default()
        };
        let c = fixtures::container(APP, "app");
        let mut desired = Desired::default();
        desired.containers.insert(
            "app".into(),
            DesiredContainer {
                spec: c,
                hash: SpecHash::parse(&"ab".repeat(32)).unwrap(),
                instance: ID.into(),
                image: "registry.example.com/shop/app".into(),
                digest: fixtures::DIGEST.into(),
                image_ready: true,
            },
        );
        let images = BTreeMap::from([("app".to_string(), image(dir.path()))]);
        let log = Log::default();
        let cni: Box<dyn CniExec> = Box::new(FakeCni::default());
        let networks = Networks::with_backends(
            &dir.path().join("state"),
            &dir.path().join("run"),
            berth_spec::types::parse_cidr("10.88.0.0/16").unwrap(),
            cni,
            Box::new(FakeHost::default()),
        );
        Lab {
            runtime: FakeRuntime {
                log: log.clone(),
                state_dir: dir.path().join("state"),
                ..FakeRuntime::default()
            },
            fs: FakeFs::new(log.clone()),
            dir,
            spec,
            desired,
            images,
            networks,
            identity,
            info: fixtures::host(),
            log,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn host(&self) -> ContainerHost<'_> {
        ContainerHost {
            state_dir: self.state_dir(),
            run_dir: self.dir.path().join("run"),
            root: self.dir.path().join("spec"),
            spec: &self.spec,
            desired: &self.desired,
            images: &self.images,
            networks: &self.networks,
            runtime: &self.runtime,
            runtime_binary: "/usr/bin/runc".into(),
            runtime_root: self.dir.path().join("run/runc"),
            host: &self.info,
            identity: Some(&self.identity),
            mounts: &self.fs,
            files: &self.fs,
            binds: &AnyBind,
            touched: Default::default(),
            created: Default::default(),
            stopped: Default::default(),
            health: HealthProbes::new(1),
        }
    }

    fn record(&self) -> Option<ContainerRecord> {
        crate::runtime::record::read_record(&self.state_dir(), "app").unwrap()
    }

    fn instance_dir(&self) -> PathBuf {
        self.state_dir().join("instances").join(ID)
    }
}

/// busybox's config, one snapshot directory, and a user database with the app's user.
fn image(dir: &Path) -> ReadyImage {
    let digest = fixtures::DIGEST;
    let blob = serde_json::json!({"digest": digest, "size": 1, "media_type": "application/json"});
    let record = serde_json::from_value(serde_json::json!({
        "reference": "registry.example.com/shop/app:1",
        "name": "registry.example.com/shop/app",
        "digest": digest,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "manifest": blob,
        "platform": {"os": "linux", "architecture": "amd64"},
        "config": blob,
        "layers": [],
        "pulled_at": "2026-11-22T10:00:00Z",
    }))
    .unwrap();
    ReadyImage {
        record,
        lowerdirs: vec![dir.join("snapshots/1/fs")],
        chain_ids: vec![],
        config: fixtures::busybox(),
        passwd: Some("root:x:0:0::/root:/bin/sh\napp:x:10001:10001::/:/bin/sh\n".into()),
        group: Some("root:x:0:\napp:x:10001:\n".into()),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What a create makes before the runtime's create, in order.
const MADE: [&str; 5] = [
    "mount rootfs app-abababab",
    "volume web-data for 10001:10001",
    "mount secrets app-abababab",
    "chown app-abababab 10001:10001",
    "secret db-password for 10001:10001",
];

/// What taking the instance down releases, in order, after the runtime's delete.
const RELEASED: [&str; 3] = [
    "unstage binds app-abababab",
    "unmount secrets app-abababab",
    "unmount rootfs app-abababab",
];

// e2e: apply::apply_brings_up_the_webapp (volume, secret, runc; the record's cgroup).
#[test]
fn a_create_makes_its_parts_in_order_and_records_the_instance_after_the_runtime_create() {
    let lab = Lab::new();
    let host = lab.host();
    host.create("app", ID).unwrap();
    let mut want = strings(&MADE);
    want.push(format!("runtime create {ID}"));
    assert_eq!(
        lab.log.take(),
        want,
        "the record came before the runtime's create"
    );
    let record = lab.record().expect("no record");
    assert_eq!(record.instance, ID);
    assert_eq!(record.started_at, None);
    assert_eq!((record.uid, record.gid), (Some(10001), Some(10001)));
    let dir = lab.instance_dir();
    assert!(dir.join("bundle/config.json").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        "app\n"
    );
    let secret = lab
        .dir
        .path()
        .join("run/secrets")
        .join(ID)
        .join("db-password");
    assert_eq!(std::fs::read(secret).unwrap(), b"hunter2");
}

// e2e: outcome::a_failed_create_is_not_applied_next_to_a_created_container (runc
// refuses the create; nothing of it stays mounted, and no record).
#[test]
fn a_failed_runtime_create_undoes_what_the_create_made_and_writes_no_record() {
    let lab = Lab::new();
    lab.runtime.fail_create.lock().unwrap().insert(ID.into());
    let err = lab.host().create("app", ID).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Permanent);
    assert!(err.to_string().contains("/nonexistent"), "{err}");
    let mut want = strings(&MADE);
    want.push(format!("runtime create {ID}"));
    want.push(format!("runtime delete {ID}"));
    want.extend(strings(&RELEASED));
    assert_eq!(lab.log.take(), want);
    assert!(lab.record().is_none());
    assert!(!lab.instance_dir().exists(), "the instance directory stays");
    assert!(!lab.dir.path().join("run/secrets").join(ID).exists());
}

// e2e: crash::an_exited_container_is_restarted_per_its_policy_on_the_next_apply.
#[test]
fn an_exited_instance_is_restarted_in_place() {
    let lab = Lab::new();
    let host = lab.host();
    host.create("app", ID).unwrap();
    host.start("app", ID).unwrap();
    lab.log.take();
    lab.runtime.exited(ID, 1);
    host.start("app", ID).unwrap();
    // The same mounts and bundle: no mount, no render, a fresh runtime container.
    assert_eq!(
        lab.log.take(),
        strings(&[
            "runtime delete app-abababab",
            "runtime create app-abababab (recorded)",
            "runtime start app-abababab",
        ])
    );
    let record = lab.record().unwrap();
    assert_eq!(record.restarts, 1);
    assert!(record.started_at.is_some());
}

// e2e: crash::a_reboot_that_took_the_mounts_is_made_good_by_the_next_apply.
#[test]
fn after_a_reboot_a_start_makes_the_instance_again_on_its_writable_layer() {
    let lab = Lab::new();
    let host = lab.host();
    host.create("app", ID).unwrap();
    host.start("app", ID).unwrap();
    lab.runtime.exited(ID, 0);
    host.start("app", ID).unwrap();
    let kept = lab.instance_dir().join("upper/kept");
    std::fs::write(&kept, "written by the container").unwrap();
    lab.log.take();
    // The mounts and the runtime's state lived in memory.
    lab.fs.reboot();
    lab.runtime.status.lock().unwrap().clear();
    host.start("app", ID).unwrap();
    let mut want = strings(&["runtime delete app-abababab"]);
    want.extend(strings(&RELEASED));
    want.extend(strings(&MADE));
    want.extend(strings(&[
        "runtime create app-abababab (recorded)",
        "runtime start app-abababab",
    ]));
    assert_eq!(lab.log.take(), want);
    assert!(kept.is_file(), "the writable layer was not kept");
    // Its restarts are counted on: made again, it is the same container.
    assert_eq!(lab.record().unwrap().restarts, 2);
}

// e2e: crash::fifty_create_remove_cycles_leave_nothing_behind.
#[test]
fn a_stop_then_remove_releases_everything_and_asks_the_runtime_once() {
    let lab = Lab::new();
    let host = lab.host();
    host.create("app", ID).unwrap();
    host.start("app", ID).unwrap();
    lab.log.take();
    host.stop("app", ID, "SIGQUIT", std::time::Duration::from_secs(1))
        .unwrap();
    host.remove("app", ID).unwrap();
    host.forget("app").unwrap();
    // The stop ended with the runtime's delete: the removal does not ask again.
    let mut want = strings(&["runtime stop app-abababab 3"]);
    want.extend(strings(&RELEASED));
    assert_eq!(lab.log.take(), want);
    assert!(!lab.instance_dir().exists());
    assert!(lab.record().is_none());
}
