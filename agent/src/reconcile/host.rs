//! The real [`HostOps`]: what each plan step does on this machine — overlay rootfs,
//! volumes, secrets on a tmpfs, CNI attachment, the rendered OCI bundle, the shim and
//! the OCI runtime, and the container's record in the state directory.
//!
//! Crash safety: every step is idempotent (mounting a mounted rootfs, attaching an
//! attached instance, deleting what is gone are all fine), the record is written
//! once the runtime's create worked (an instance a killed pass left without a record
//! is an orphan the next pass removes), a failed create tears down whatever it made
//! (mounts, namespace, staged binds), and named failpoints (the `failpoints` feature)
//! let the crash tests stop the process between side effects.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use berth_spec::types::NetworkMode;
use berth_spec::{DesiredState, MountSource};

pub use self::error::HostError;
use self::error::at;
use super::bindcheck::BindCheck;
use super::executor::{HostOps, StepError};
use super::images::ReadyImage;
use super::model::Desired;
use crate::image::prepare::error_chain;
use crate::network::{AttachRequest, Networks};
use crate::runtime::health::{self, ProbeNet, ProbeResult};
use crate::runtime::health_file;
use crate::runtime::instance::{
    ExecIo, ExecOutcome, ExecRequest, Instance, InstanceRuntime, InstanceStatus,
};
use crate::runtime::mount;
use crate::runtime::render::{self, DeviceKind, HostDevice, HostInfo, InstancePaths, RenderInput};
use crate::runtime::state::{self, ContainerRecord, ImageRef, InstanceDirs};
use crate::runtime::user;
use crate::storage::{binds, secrets, treefile, volumes};

pub mod error;

/// Size of each instance's secrets tmpfs.
const SECRETS_TMPFS: u64 = 1 << 20;

/// Stops the process at a named point when the `failpoints` feature is on and
/// `BERTH_FAILPOINT` names it (the crash tests' SIGKILL stand-in).
pub fn failpoint(name: &str) {
    if cfg!(feature = "failpoints") && std::env::var("BERTH_FAILPOINT").as_deref() == Ok(name) {
        eprintln!("failpoint {name}: exiting");
        std::process::exit(137);
    }
}

/// Everything the host operations work with.
pub struct RealHost<'a> {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The spec root (secret and seccomp files).
    pub root: PathBuf,
    pub spec: &'a DesiredState,
    pub desired: &'a Desired,
    pub images: &'a BTreeMap<String, ReadyImage>,
    pub networks: &'a Networks,
    pub runtime: &'a (dyn InstanceRuntime + Sync),
    /// The OCI runtime binary and root recorded with each container.
    pub runtime_binary: PathBuf,
    pub runtime_root: PathBuf,
    pub host: &'a HostInfo,
    pub identity: Option<&'a secrets::NodeIdentity>,
    /// The policy's judgement of bind sources once resolved on this host.
    pub binds: &'a dyn BindCheck,
    /// Networks whose members changed in this pass: their peers' hosts files are
    /// rewritten once at the end, not after every start.
    pub touched: Mutex<BTreeSet<String>>,
    /// Instances this pass created: known to be in the `created` state, so starting
    /// them needs no `state` call to the runtime.
    pub created: Mutex<BTreeSet<String>>,
    /// Instances this pass stopped, which also deleted them from the runtime.
    pub stopped: Mutex<BTreeSet<String>>,
    /// The health probes' bookkeeping.
    pub health: HealthProbes,
}

/// What the health probes of a pass need beyond the host: how many the end of the pass
/// runs at once, and when this pass started each instance (the record's start time is
/// in whole seconds, too coarse to tell a probe right after the start from one an
/// interval later).
#[derive(Debug, Default)]
pub struct HealthProbes {
    pub parallel: usize,
    started: Mutex<BTreeMap<String, Instant>>,
}

impl HealthProbes {
    /// `parallel` probes at once at the end of the pass (`runtime.parallel`).
    pub fn new(parallel: usize) -> Self {
        HealthProbes {
            parallel,
            started: Mutex::default(),
        }
    }

    fn started(&self, id: &str) {
        self.lock().insert(id.to_string(), Instant::now());
    }

    /// The time since instance `id` started: measured when this pass started it, else
    /// from its record's start time.
    fn since_start(&self, id: &str, started_at: Option<&str>) -> Duration {
        self.lock()
            .get(id)
            .map_or_else(|| health_file::since(started_at), Instant::elapsed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instant>> {
        self.started.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for RealHost<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealHost")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl RealHost<'_> {
    fn lock_touched(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.touched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Present while some peers' hosts files may be stale: from the first change of a
    /// pass's network membership until its end-of-pass refresh.
    fn peers_marker(&self) -> PathBuf {
        self.state_dir.join("cni").join("peers-stale")
    }

    /// Notes networks whose members changed; the first note of a pass leaves the marker.
    fn touch(&self, networks: impl IntoIterator<Item = String>) {
        let mut touched = self.lock_touched();
        if touched.is_empty() {
            let marker = self.peers_marker();
            if let Err(err) = state::write_atomic(&marker, b"") {
                tracing::warn!("cannot write {}: {err}", marker.display());
            }
        }
        touched.extend(networks);
    }

    /// A container of `name` joined its networks' membership.
    fn touch_networks_of(&self, name: &str) {
        if let Some(d) = self.desired.containers.get(name)
            && d.spec.network_mode == NetworkMode::Bridge
        {
            self.touch(d.spec.networks.iter().cloned());
        }
    }

    fn lock_stopped(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_created(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.created.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn instance(&self, id: &str) -> Instance {
        Instance::new(&self.state_dir, id)
    }

    /// Binds: each source resolved on the host, judged again by the policy, and
    /// mounted as checked (`storage::binds`). Already staged binds are kept.
    fn stage_binds(
        &self,
        c: &berth_spec::Container,
        instance_root: &Path,
    ) -> Result<BTreeMap<usize, PathBuf>, StepError> {
        let mut staged = BTreeMap::new();
        for (i, m) in c.mounts.iter().enumerate() {
            if let MountSource::Bind { path } = &m.source {
                let resolved = binds::resolve(path).map_err(at("bind"))?;
                if let Some(why) = self.binds.refuse(c, i, &resolved) {
                    return Err(StepError::Refused(why));
                }
                let point = binds::stage(instance_root, i, path, &resolved).map_err(at("bind"))?;
                staged.insert(i, point);
            }
        }
        Ok(staged)
    }

    /// Creates everything of a new instance up to the runtime's `create`. With
    /// `deferred_attach` set, the CNI ADD is still to run (see [`Self::create`]).
    fn materialise(&self, name: &str, id: &str) -> Result<(ContainerRecord, bool), StepError> {
        let dc = self
            .desired
            .containers
            .get(name)
            .ok_or_else(|| HostError::NotDesired(name.to_string()))?;
        let c = &dc.spec;
        let image = self
            .images
            .get(name)
            .ok_or_else(|| HostError::ImageNotReady(name.to_string()))?;
        let dirs = InstanceDirs::new(&self.state_dir, id);
        dirs.create()
            .map_err(at(format!("create {}", dirs.root.display())))?;
        mount::mount_rootfs(&dirs, &image.lowerdirs).map_err(at("mount the root filesystem"))?;

        let user_spec = image.user_of(c);
        let who = user::resolve(&user_spec, image.passwd.as_deref(), image.group.as_deref())
            .map_err(at(format!("resolve user `{user_spec}`")))?;

        let mut volume_paths = BTreeMap::new();
        for m in &c.mounts {
            if let MountSource::Volume { name: v } = &m.source {
                let p = volumes::ensure(&self.state_dir, v, Some((who.uid, who.gid)))
                    .map_err(at("volume"))?;
                volume_paths.insert(v.clone(), p);
            }
        }

        let bind_paths = self.stage_binds(c, &dirs.root)?;

        let secrets_dir = if c.secrets.is_empty() {
            None
        } else {
            let identity = self.identity.ok_or(HostError::NoIdentity)?;
            let dir = secrets::secrets_dir(&self.run_dir, id);
            secrets::mount_secrets_dir(&dir, SECRETS_TMPFS).map_err(at("secrets tmpfs"))?;
            // The tmpfs is 0700: hand it to the container's user, and nobody else.
            std::os::unix::fs::chown(&dir, Some(who.uid), Some(who.gid))
                .map_err(at("secrets tmpfs"))?;
            for s in &c.secrets {
                let secret = self
                    .spec
                    .secrets
                    .get(&s.name)
                    .ok_or_else(|| HostError::UndefinedSecret(s.name.clone()))?;
                let plain = secrets::decrypt_tree_file(identity, &self.root, &secret.file)
                    .map_err(at(format!("secret `{}`", s.name)))?;
                secrets::write_secret(&dir, &s.target, &plain, who.uid, who.gid)
                    .map_err(at(format!("secret `{}`", s.name)))?;
            }
            Some(dir)
        };

        // A bridge container's CNI ADD runs alongside the runtime's create when nothing
        // at create time needs its interfaces (`net.*` sysctls do): the namespace and
        // the hosts and resolv.conf files the bundle mounts are made first, and ADD
        // rewrites those files in place.
        let bridge = c.network_mode == NetworkMode::Bridge;
        let overlap = bridge && !c.sysctls.keys().any(|k| k.starts_with("net."));
        let (netns, hosts, resolv, addresses) = if overlap {
            let p = self.networks.prepare(id).map_err(at("network attach"))?;
            (
                Some(p.netns_path),
                Some(p.hosts),
                Some(p.resolv_conf),
                BTreeMap::new(),
            )
        } else if bridge {
            // The plan's create-network steps made the networks (`default` on demand).
            let a = self
                .networks
                .attach(&AttachRequest::for_container(id, c))
                .map_err(at("network attach"))?;
            failpoint("after-cni-add");
            let addrs = a
                .addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            (
                Some(a.netns_path),
                Some(a.hosts),
                Some(a.resolv_conf),
                addrs,
            )
        } else {
            // `none` and `host`: no attachment, but the same files in the same place.
            let (hosts, resolv) = self
                .networks
                .standalone_files(id, c)
                .map_err(at("network files"))?;
            (None, Some(hosts), Some(resolv), BTreeMap::new())
        };
        state::write_atomic_mode(
            &dirs.hostname(),
            format!("{}\n", c.hostname).as_bytes(),
            state::CONTAINER_FILE,
        )
        .map_err(at("write hostname"))?;

        let seccomp = match &c.seccomp {
            berth_spec::Seccomp::Profile(f) => Some(
                String::from_utf8_lossy(
                    &treefile::read(&self.root, f, treefile::MAX_SECCOMP_PROFILE)
                        .map_err(at("seccomp profile"))?,
                )
                .into_owned(),
            ),
            _ => None,
        };
        let devices = stat_devices(c).map_err(at("device"))?;
        let paths = InstancePaths {
            rootfs: dirs.rootfs(),
            volumes: volume_paths,
            binds: bind_paths,
            secrets_dir,
            hosts,
            resolv_conf: resolv,
            hostname: Some(dirs.hostname()),
            netns,
        };
        let input = RenderInput {
            container: c,
            image: &image.config,
            spec_hash: &dc.hash,
            paths: &paths,
            state_dir: &self.state_dir,
            host: self.host,
            passwd: image.passwd.as_deref(),
            group: image.group.as_deref(),
            seccomp_profile: seccomp.as_deref(),
            devices: &devices,
        };
        let config = render::render(&input).map_err(at("render"))?;
        let json = render::to_json(&config).map_err(at("render"))?;
        state::write_atomic(&dirs.config(), json.as_bytes()).map_err(at("write the bundle"))?;
        failpoint("after-bundle");

        let record = ContainerRecord {
            name: name.to_string(),
            instance: id.to_string(),
            spec_hash: dc.hash.as_str().to_string(),
            spec: serde_json::to_value(c).map_err(at("record"))?,
            image: ImageRef {
                reference: c.image.clone(),
                digest: dc.digest.clone(),
                chain_ids: image.chain_ids.clone(),
            },
            runtime: self.runtime_binary.display().to_string(),
            runtime_root: self.runtime_root.clone(),
            created_at: state::now_rfc3339(),
            started_at: None,
            restarts: 0,
            operator_stopped: false,
            addresses,
            ports: c.ports.iter().map(|p| p.to_string()).collect(),
            cgroup_path: render::cgroups_path(&self.state_dir, id),
            uid: Some(who.uid),
            gid: Some(who.gid),
        };
        Ok((record, overlap))
    }

    fn teardown(&self, id: &str) -> Result<(), HostError> {
        let stopped = self.lock_stopped().remove(id);
        let runtime: &dyn InstanceRuntime = self.runtime;
        teardown(
            &self.state_dir,
            &self.run_dir,
            self.networks,
            (!stopped).then_some(runtime),
            id,
        )
    }

    /// Takes down what an instance holds on the host — runtime container, network
    /// attachment, staged binds, secrets tmpfs, rootfs mount — but keeps its directory
    /// and writable layer, for [`HostOps::create`] to make it again.
    fn teardown_keeping_upper(&self, id: &str) -> Result<(), HostError> {
        self.lock_stopped().remove(id);
        let inst = self.instance(id);
        release(&self.run_dir, self.networks, &inst)
    }

    /// Whether the instance lost what only lives in memory — its overlay mount, its
    /// network namespace — as after a reboot.
    fn lost_host_state(&self, name: &str, inst: &Instance) -> bool {
        if !mount::is_overlay_mounted(&inst.dirs.rootfs()) {
            return true;
        }
        let bridge = self
            .desired
            .containers
            .get(name)
            .is_some_and(|d| d.spec.network_mode == NetworkMode::Bridge);
        bridge
            && !matches!(self.networks.attachment(&inst.id), Ok(Some(a)) if crate::network::netns::is_netns(&a.netns_path))
    }

    /// Tears down what a failed create made, and returns its error.
    fn failed_create(&self, id: &str, err: HostError) -> StepError {
        if let Err(cleanup) = self.teardown(id) {
            tracing::warn!(
                instance = id,
                "cleanup after a failed create: {}",
                error_chain(&cleanup)
            );
        }
        err.into()
    }

    fn record(&self, name: &str) -> Result<Option<ContainerRecord>, HostError> {
        state::read_record(&self.state_dir, name).map_err(at("read the container record"))
    }
}

/// Tears down an instance: runtime delete, network, secrets, rootfs, directory. Every
/// part tolerates being gone already, so a crash in the middle is finished next time.
/// `runtime` is `None` when the caller has just stopped the instance, which deleted it
/// from the runtime: asking again would cost a `state` call for nothing.
pub fn teardown(
    state_dir: &Path,
    run_dir: &Path,
    networks: &Networks,
    runtime: Option<&dyn InstanceRuntime>,
    id: &str,
) -> Result<(), HostError> {
    let inst = Instance::new(state_dir, id);
    if let Some(runtime) = runtime {
        runtime.delete(&inst).map_err(at("runtime delete"))?;
    }
    // This state directory's `/berth/<hash>` parent, once its last instance is gone
    // (a stop already deleted the runtime container).
    crate::runtime::cgroup::remove_empty_parent(
        Path::new(crate::runtime::cgroup::CGROUP_ROOT),
        &render::cgroups_path(state_dir, id),
    );
    failpoint("mid-removal");
    release(run_dir, networks, &inst)?;
    match std::fs::remove_dir_all(&inst.dirs.root) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(at("remove the instance directory")(err))
        }
        _ => Ok(()),
    }
}

/// Releases what an instance holds on the host besides its runtime container: its
/// network attachment, staged binds (before anything under its directory may be
/// removed), secrets tmpfs and rootfs mount.
fn release(run_dir: &Path, networks: &Networks, inst: &Instance) -> Result<(), HostError> {
    let id = &inst.id;
    networks.detach(id).map_err(at("network detach"))?;
    binds::unstage_all(&inst.dirs.root).map_err(at("binds"))?;
    secrets::unmount_secrets_dir(&secrets::secrets_dir(run_dir, id)).map_err(at("secrets"))?;
    mount::unmount_rootfs(&inst.dirs).map_err(at("unmount"))
}

/// Stats the host devices a container asks for.
fn stat_devices(c: &berth_spec::Container) -> std::io::Result<Vec<HostDevice>> {
    c.devices
        .iter()
        .map(|d| {
            let m = std::fs::metadata(&d.host)?;
            let kind = if m.file_type().is_block_device() {
                DeviceKind::Block
            } else {
                DeviceKind::Char
            };
            let rdev = m.rdev();
            Ok(HostDevice {
                path: d.host.clone(),
                kind,
                major: i64::from(nix::sys::stat::major(rdev) as u32),
                minor: i64::from(nix::sys::stat::minor(rdev) as u32),
                file_mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            })
        })
        .collect()
}

/// Signal number of a stop signal name (`SIGTERM`).
fn signal_number(name: &str) -> i32 {
    berth_spec::types::parse_signal(name).map_or(15, |s| s.number)
}

impl RealHost<'_> {
    /// Runs `h`'s probe once against instance `id`: in its network namespace, and
    /// through the runtime's exec.
    fn probe(&self, id: &str, h: &berth_spec::Health) -> ProbeResult {
        let net = match self.networks.attachment(id) {
            Ok(Some(a)) => ProbeNet::Netns(a.netns_path),
            _ => ProbeNet::Host,
        };
        let inst = self.instance(id);
        let runtime = self.runtime;
        let exec = move |argv: &[String], t: Duration| -> Result<ExecOutcome, health::ExecError> {
            let req = ExecRequest {
                args: argv.to_vec(),
                timeout: Some(t),
                ..ExecRequest::default()
            };
            let io = ExecIo {
                stdin: std::process::Stdio::null(),
                stdout: std::process::Stdio::null(),
                stderr: std::process::Stdio::null(),
            };
            runtime
                .exec(&inst, &req, io)
                .map_err(|err| -> health::ExecError { Box::new(at("exec")(err)) })
        };
        health::probe(&h.probe, &net, h.timeout, &exec)
    }
}

impl HostOps for RealHost<'_> {
    fn pull(&self, image: &str, digest: &str) -> Result<(), StepError> {
        // `berth apply` makes images ready before it plans; a pull step left in the
        // plan means that failed, and the reason is the container's report.
        Err(HostError::NotPulled {
            image: image.to_string(),
            digest: digest.to_string(),
        }
        .into())
    }

    fn create_network(&self, name: &str) -> Result<(), StepError> {
        match self.spec.networks.get(name) {
            Some(def) => self.networks.ensure(def).map(drop),
            None => self.networks.ensure_network(name, None).map(drop),
        }
        .map_err(|err| at(format!("network `{name}`"))(err).into())
    }

    fn create_volume(&self, name: &str) -> Result<(), StepError> {
        volumes::ensure(&self.state_dir, name, None)
            .map(drop)
            .map_err(|err| at("volume")(err).into())
    }

    fn create(&self, name: &str, id: &str) -> Result<(), StepError> {
        let (mut record, deferred_attach) = match self.materialise(name, id) {
            Ok(made) => made,
            Err(err) => {
                // Nothing of a half-made instance stays until the next pass: the rootfs
                // and secrets mounts, the namespace, the directories.
                if let Err(cleanup) = self.teardown(id) {
                    tracing::warn!(
                        instance = id,
                        "cleanup after a failed create: {}",
                        error_chain(&cleanup)
                    );
                }
                return Err(err);
            }
        };
        if !deferred_attach {
            // As below: the record once the runtime's create worked; a failure tears
            // the instance down at once, and a pass killed in between leaves an orphan.
            if let Err(err) = self.runtime.create(&self.instance(id)) {
                return Err(self.failed_create(id, HostError::Create(err)));
            }
            state::write_record(&self.state_dir, &record)
                .map_err(at("write the container record"))?;
            failpoint("after-create");
            self.lock_created().insert(id.to_string());
            return Ok(());
        }
        // CNI ADD and the runtime's create side by side. The record is written once
        // both have worked: a pass killed in between leaves an instance no record
        // accounts for, which the next pass removes as an orphan and creates afresh.
        let c = &self
            .desired
            .containers
            .get(name)
            .ok_or_else(|| HostError::NotDesired(name.to_string()))?
            .spec;
        let inst = self.instance(id);
        let (attached, created) = std::thread::scope(|s| {
            let add = s.spawn(|| {
                let a = self
                    .networks
                    .attach(&AttachRequest::for_container(id, c))
                    .map_err(at("network attach"));
                if a.is_ok() {
                    failpoint("after-cni-add");
                }
                a
            });
            let created = self
                .runtime
                .create(&inst)
                .map(drop)
                .map_err(HostError::Create);
            let attached = add.join().unwrap_or(Err(HostError::AttachPanicked));
            (attached, created)
        });
        let a = match (created, attached) {
            (Ok(()), Ok(a)) => a,
            (Err(create), Err(attach)) => {
                return Err(self.failed_create(
                    id,
                    HostError::CreateAndAttach {
                        create: Box::new(create),
                        attach: Box::new(attach),
                    },
                ));
            }
            (Err(err), Ok(_)) | (Ok(()), Err(err)) => return Err(self.failed_create(id, err)),
        };
        record.addresses = a
            .addresses
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        state::write_record(&self.state_dir, &record).map_err(at("write the container record"))?;
        failpoint("after-create");
        self.lock_created().insert(id.to_string());
        Ok(())
    }

    fn start(&self, name: &str, id: &str) -> Result<(), StepError> {
        let inst = self.instance(id);
        let mut record = self
            .record(name)?
            .ok_or_else(|| HostError::NoRecord(name.to_string()))?;
        // Started again: the runtime holds it once more.
        self.lock_stopped().remove(id);
        let status = if self.lock_created().remove(id) {
            InstanceStatus::Created { pid: 0 }
        } else {
            self.runtime.status(&inst).map_err(at("status"))?
        };
        match status {
            InstanceStatus::Created { .. } => {}
            InstanceStatus::Running { .. } => {
                // Started by a pass killed before it could record so: record it now,
                // or every later pass would plan this start again.
                if record.started_at.is_none() || record.instance != id {
                    record.started_at = Some(state::now_rfc3339());
                    record.instance = id.to_string();
                    state::write_record(&self.state_dir, &record)
                        .map_err(at("write the container record"))?;
                }
                self.touch_networks_of(name);
                return Ok(());
            }
            InstanceStatus::Exited(_) | InstanceStatus::Stopped | InstanceStatus::Missing => {
                // The exit goes into the restart history before its exit file goes.
                crate::runtime::history::record_exit_of(
                    &self.state_dir,
                    name,
                    &inst.dirs,
                    record.started_at.as_deref(),
                );
                // A restart: the same bundle and writable layer, a fresh runtime container.
                self.runtime.delete(&inst).map_err(at("runtime delete"))?;
                let _ = std::fs::remove_file(inst.dirs.exit_file());
                if record.started_at.is_some() {
                    record.restarts += 1;
                }
                if self.lost_host_state(name, &inst) {
                    // A reboot took its overlay mount and namespace (they live in memory):
                    // make the instance again, on the same writable layer.
                    tracing::info!(
                        instance = id,
                        "its root filesystem or network namespace is gone; making it again"
                    );
                    self.teardown_keeping_upper(id)?;
                    let restarts = record.restarts;
                    self.create(name, id)?;
                    self.lock_created().remove(id);
                    record = self
                        .record(name)?
                        .ok_or_else(|| HostError::NoRecord(name.to_string()))?;
                    record.restarts = restarts;
                } else {
                    // The bundle names the staged binds: stage any that are gone.
                    if let Some(dc) = self.desired.containers.get(name)
                        && dc
                            .spec
                            .mounts
                            .iter()
                            .any(|m| matches!(m.source, MountSource::Bind { .. }))
                    {
                        self.stage_binds(&dc.spec, &inst.dirs.root)?;
                    }
                    self.runtime.create(&inst).map_err(at("create"))?;
                }
            }
        }
        if self.networks.defers_peers()
            && let Err(err) = self.networks.refresh_own(id)
        {
            tracing::warn!(
                instance = id,
                "cannot update its hosts file: {}",
                error_chain(&err)
            );
        }
        self.runtime.start(&inst).map_err(at("start"))?;
        self.health.started(id);
        record.started_at = Some(state::now_rfc3339());
        record.instance = id.to_string();
        state::write_record(&self.state_dir, &record).map_err(at("write the container record"))?;
        failpoint("after-start");
        self.touch_networks_of(name);
        // One probe right away, so the scan sees a result from this run: it races the
        // application's start, and a failure leaves it `starting` (`health_file::next`).
        if let Some(h) = self
            .desired
            .containers
            .get(name)
            .and_then(|d| d.spec.health.as_ref())
        {
            let root = &inst.dirs.root;
            let since = self.health.since_start(id, record.started_at.as_deref());
            health_file::probe_and_record(root, h, None, since, || self.probe(id, h));
        }
        Ok(())
    }

    fn stop(
        &self,
        _name: &str,
        id: &str,
        signal: &str,
        timeout: Duration,
    ) -> Result<(), StepError> {
        self.runtime
            .stop(&self.instance(id), signal_number(signal), timeout)
            .map_err(at("stop"))?;
        // A stop ends with the runtime's delete.
        self.lock_stopped().insert(id.to_string());
        Ok(())
    }

    fn remove(&self, _name: &str, id: &str) -> Result<(), StepError> {
        if let Ok(Some(a)) = self.networks.attachment(id) {
            self.touch(a.addresses.keys().cloned());
        }
        Ok(self.teardown(id)?)
    }

    fn forget(&self, name: &str) -> Result<(), StepError> {
        state::remove_record(&self.state_dir, name)
            .map_err(|err| at("remove the container record")(err).into())
    }

    fn wait_healthy(&self, name: &str, id: &str, timeout: Duration) -> Result<(), StepError> {
        let dc = self
            .desired
            .containers
            .get(name)
            .ok_or_else(|| HostError::NotDesired(name.to_string()))?;
        let Some(h) = &dc.spec.health else {
            return Ok(());
        };
        // Each probe is recorded in the instance's health file, after what is there.
        let root = self.instance(id).dirs.root;
        let started_at = self.record(name).ok().flatten().and_then(|r| r.started_at);
        let mut prev = health_file::read_fresh(&root, started_at.as_deref());
        let started = Instant::now();
        let mut run = || {
            let since = self.health.since_start(id, started_at.as_deref());
            let (_, record) =
                health_file::probe_and_record(&root, h, prev.as_ref(), since, || self.probe(id, h));
            prev = Some(record.clone());
            record
        };
        let mut sleep = |d: Duration| std::thread::sleep(d);
        health::wait_healthy(h, timeout, &mut run, &|| started.elapsed(), &mut sleep).map_err(
            |end| {
                HostError::Unhealthy {
                    name: name.to_string(),
                    why: end.why().to_string(),
                }
                .into()
            },
        )
    }

    fn remove_network(&self, name: &str) -> Result<(), StepError> {
        self.networks
            .remove_network(name)
            .map(drop)
            .map_err(|err| at(format!("network `{name}`"))(err).into())
    }

    fn remove_volume(&self, name: &str) -> Result<(), StepError> {
        volumes::remove(&self.state_dir, name).map_err(|err| at("volume")(err).into())
    }

    fn finish(&self) {
        self.refresh_peers();
        self.probe_due();
    }
}

impl RealHost<'_> {
    /// Rewrites the peers' hosts files of the networks whose members changed.
    fn refresh_peers(&self) {
        let marker = self.peers_marker();
        let mut networks = std::mem::take(&mut *self.lock_touched());
        if networks.is_empty() && !marker.exists() {
            return;
        }
        // Also every network of a desired container: a pass killed between a start and
        // this point left the marker and its peers' files stale. Only files that read
        // wrong are written.
        for d in self.desired.containers.values() {
            if d.spec.network_mode == NetworkMode::Bridge {
                networks.extend(d.spec.networks.iter().cloned());
            }
        }
        let networks: Vec<String> = networks.into_iter().collect();
        match self.networks.refresh_peers("", &networks) {
            Ok(()) => {
                let _ = std::fs::remove_file(&marker);
            }
            Err(err) => tracing::warn!(
                "cannot update the peers' hosts files: {}",
                error_chain(&err)
            ),
        }
    }

    /// Once per pass, after its steps: one probe of each running instance of a desired
    /// container with a health check whose last probe is at least `interval` old
    /// (`health_file::due`), up to `parallel` at once, each bounded by its check's
    /// timeout. Without a daemon, this is what makes `ps` converge to the truth.
    fn probe_due(&self) {
        let now = health_file::now();
        let stopped = self.lock_stopped().clone();
        let due: Vec<(&berth_spec::Health, String, Option<String>)> = self
            .desired
            .containers
            .iter()
            .filter_map(|(name, d)| {
                let h = d.spec.health.as_ref()?;
                let record = self.record(name).ok().flatten()?;
                // Only the desired instance, running: its check is the desired one.
                let running = record.instance == d.instance
                    && record.started_at.is_some()
                    && !record.operator_stopped
                    && !stopped.contains(&record.instance)
                    && !self.instance(&record.instance).dirs.exit_file().exists();
                if !running {
                    return None;
                }
                let root = self.instance(&record.instance).dirs.root;
                let last = health_file::read_fresh(&root, record.started_at.as_deref());
                health_file::due(last.as_ref(), h, now).then_some((
                    h,
                    record.instance,
                    record.started_at,
                ))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let one = |(h, id, started_at): &(&berth_spec::Health, String, Option<String>)| {
            let root = self.instance(id).dirs.root;
            // Read again: a probe of this pass may have written it since.
            let prev = health_file::read_fresh(&root, started_at.as_deref());
            let since = self.health.since_start(id, started_at.as_deref());
            health_file::probe_and_record(&root, h, prev.as_ref(), since, || self.probe(id, h));
        };
        std::thread::scope(|s| {
            for _ in 0..self.health.parallel.clamp(1, due.len()) {
                s.spawn(|| {
                    while let Some(item) =
                        due.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        one(item);
                    }
                });
            }
        });
    }
}
