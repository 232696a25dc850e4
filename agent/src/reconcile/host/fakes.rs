//! Test doubles for the host's seams: the mounts and owned files ([`FakeFs`]) and the
//! OCI runtime ([`FakeRuntime`]), writing one shared [`Log`] of their side effects in
//! the order they happened, so a test reads the host's sequencing off it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::instance::{
    Created, ExecIo, ExecOutcome, ExecRequest, InstanceError, InstanceRuntime, InstanceStatus,
    RuntimeInstance,
};
use crate::runtime::mount::MountError;
use crate::runtime::state::{ExitStatus, InstanceDirs};
use crate::storage::binds::BindError;
use crate::storage::secrets::{Plaintext, SecretError};
use crate::storage::volumes::VolumeError;

use super::fs::{Mounts, OwnedFiles};

/// Every side effect of the fakes, in order (`mount rootfs web-1`, `runtime start web-1`).
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    /// What happened so far, and a fresh start.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The last component of `path`: an instance id, a volume, a file name.
fn last(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Mounts kept in memory, and volumes and secret files made in the test's directory
/// (owners logged, not set).
#[derive(Debug, Default)]
pub struct FakeFs {
    pub log: Log,
    /// Mounted paths: root filesystems (by instance directory) and secrets dirs.
    mounted: Mutex<BTreeSet<PathBuf>>,
}

impl FakeFs {
    pub fn new(log: Log) -> FakeFs {
        FakeFs {
            log,
            mounted: Mutex::default(),
        }
    }

    /// Forgets every mount, as a reboot does.
    pub fn reboot(&self) {
        self.mounted.lock().unwrap().clear();
    }

    fn mounted(&self, path: &Path, now: bool) {
        let mut m = self.mounted.lock().unwrap();
        if now {
            m.insert(path.to_path_buf());
        } else {
            m.remove(path);
        }
    }
}

impl Mounts for FakeFs {
    fn mount_rootfs(&self, dirs: &InstanceDirs, _: &[PathBuf]) -> Result<(), MountError> {
        self.log.push(format!("mount rootfs {}", last(&dirs.root)));
        self.mounted(&dirs.root, true);
        Ok(())
    }

    fn rootfs_mounted(&self, dirs: &InstanceDirs) -> bool {
        self.mounted.lock().unwrap().contains(&dirs.root)
    }

    fn unmount_rootfs(&self, dirs: &InstanceDirs) -> Result<(), MountError> {
        self.log
            .push(format!("unmount rootfs {}", last(&dirs.root)));
        self.mounted(&dirs.root, false);
        Ok(())
    }

    fn stage_bind(
        &self,
        instance_root: &Path,
        index: usize,
        _: &str,
        _: &Path,
    ) -> Result<PathBuf, BindError> {
        self.log
            .push(format!("stage bind {index} {}", last(instance_root)));
        Ok(crate::storage::binds::staged_path(instance_root, index))
    }

    fn unstage_binds(&self, instance_root: &Path) -> Result<(), BindError> {
        self.log
            .push(format!("unstage binds {}", last(instance_root)));
        Ok(())
    }

    fn mount_secrets(&self, dir: &Path, _: u64) -> Result<(), SecretError> {
        self.log.push(format!("mount secrets {}", last(dir)));
        std::fs::create_dir_all(dir).unwrap();
        self.mounted(dir, true);
        Ok(())
    }

    fn unmount_secrets(&self, dir: &Path) -> Result<(), SecretError> {
        self.log.push(format!("unmount secrets {}", last(dir)));
        self.mounted(dir, false);
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => panic!("{e}"),
            _ => Ok(()),
        }
    }
}

impl OwnedFiles for FakeFs {
    fn ensure_volume(
        &self,
        state_dir: &Path,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<PathBuf, VolumeError> {
        let owner = owner.map_or("root".to_string(), |(u, g)| format!("{u}:{g}"));
        self.log.push(format!("volume {name} for {owner}"));
        let path = crate::storage::volumes::volume_path(state_dir, name);
        std::fs::create_dir_all(&path).unwrap();
        Ok(path)
    }

    fn remove_volume(&self, state_dir: &Path, name: &str) -> Result<(), VolumeError> {
        self.log.push(format!("remove volume {name}"));
        let _ = std::fs::remove_dir_all(crate::storage::volumes::volume_path(state_dir, name));
        Ok(())
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.log.push(format!("chown {} {uid}:{gid}", last(path)));
        Ok(())
    }

    fn write_secret(
        &self,
        dir: &Path,
        target: &str,
        plain: &Plaintext,
        (uid, gid): (u32, u32),
    ) -> Result<(), SecretError> {
        self.log.push(format!("secret {target} for {uid}:{gid}"));
        std::fs::write(dir.join(target), plain.as_bytes()).unwrap();
        Ok(())
    }
}

/// An OCI runtime that only logs, answers `status` with what the test set, and fails
/// the creates it was told to, as runc refuses a bundle.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    pub log: Log,
    /// Where the records are: each create notes whether the instance had one yet.
    pub state_dir: PathBuf,
    pub fail_create: Mutex<BTreeSet<String>>,
    pub status: Mutex<BTreeMap<String, InstanceStatus>>,
}

impl FakeRuntime {
    /// Instance `id` now is `status`, as the runtime would say.
    pub fn set(&self, id: &str, status: InstanceStatus) {
        self.status.lock().unwrap().insert(id.to_string(), status);
    }

    /// The init of instance `id` exited with `code`.
    pub fn exited(&self, id: &str, code: i32) {
        self.set(
            id,
            InstanceStatus::Exited(ExitStatus {
                exit_code: code,
                signal: None,
                finished_at: crate::util::rfc3339::now(),
            }),
        );
    }
}

impl InstanceRuntime for FakeRuntime {
    fn create(&self, inst: &RuntimeInstance) -> Result<Created, InstanceError> {
        let recorded = crate::runtime::record::read_records(&self.state_dir)
            .unwrap()
            .values()
            .any(|r| r.instance == inst.id);
        self.log.push(format!(
            "runtime create {}{}",
            inst.id,
            if recorded { " (recorded)" } else { "" }
        ));
        if self.fail_create.lock().unwrap().contains(&inst.id) {
            return Err(InstanceError::Create {
                id: inst.id.clone(),
                runtime: "/usr/bin/runc".into(),
                stderr: "exec: \"/nonexistent\": no such file or directory".into(),
            });
        }
        self.set(&inst.id, InstanceStatus::Created { pid: 4242 });
        Ok(Created {
            pid: 4242,
            shim_pid: 4241,
        })
    }

    fn start(&self, inst: &RuntimeInstance) -> Result<(), InstanceError> {
        self.log.push(format!("runtime start {}", inst.id));
        self.set(&inst.id, InstanceStatus::Running { pid: 4242 });
        Ok(())
    }

    fn stop(
        &self,
        inst: &RuntimeInstance,
        signal: i32,
        _: Duration,
    ) -> Result<Option<ExitStatus>, InstanceError> {
        self.log.push(format!("runtime stop {} {signal}", inst.id));
        self.set(&inst.id, InstanceStatus::Missing);
        Ok(None)
    }

    fn delete(&self, inst: &RuntimeInstance) -> Result<(), InstanceError> {
        self.log.push(format!("runtime delete {}", inst.id));
        self.set(&inst.id, InstanceStatus::Missing);
        Ok(())
    }

    fn status(&self, inst: &RuntimeInstance) -> Result<InstanceStatus, InstanceError> {
        Ok(self
            .status
            .lock()
            .unwrap()
            .get(&inst.id)
            .cloned()
            .unwrap_or(InstanceStatus::Missing))
    }

    fn exec(
        &self,
        _: &RuntimeInstance,
        _: &ExecRequest,
        _: ExecIo,
    ) -> Result<ExecOutcome, InstanceError> {
        Ok(ExecOutcome {
            exit_code: 0,
            runtime_error: None,
        })
    }
}
