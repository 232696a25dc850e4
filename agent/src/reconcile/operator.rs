//! Operator actions on one container, for debugging (DESIGN.md §6): stop (marked
//! operator-stopped: apply and the agent leave it stopped until start), start, restart,
//! rm (the next pass creates it again if the repository still wants it).
//!
//! Each is a writer: it takes the state lock for its one action, and reads the
//! container's record only under it, so that it never acts on a record a concurrent
//! pass has just replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::{Loaded, open_networks};
use crate::reconcile::host::{LinuxFs, teardown};
use crate::runtime::instance::{
    InstanceRuntime, InstanceStatus, OciInstances, Ready, RecreateError, RuntimeInstance,
    StopParams, find_shim, recreate,
};
use crate::runtime::lock::{self, LockError};
use crate::runtime::oci::Runtime;
use crate::runtime::record::{self, ContainerRecord, RecordError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Stop,
    Start,
    Restart,
    Rm,
}

impl Op {
    /// The subcommand's name.
    pub fn verb(self) -> &'static str {
        match self {
            Op::Stop => "stop",
            Op::Start => "start",
            Op::Restart => "restart",
            Op::Rm => "rm",
        }
    }
}

/// Why an operator action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The input was wanting (exit 1): no such container.
    #[error("no container `{name}` under {}", state_dir.display())]
    NoSuchContainer { name: String, state_dir: PathBuf },
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Its record cannot be read, or is of a newer berth (the error names the file).
    #[error(transparent)]
    Record(RecordError),
    /// The action was done (or failed half-way) but the state directory's generation
    /// could not be bumped.
    #[error("cannot bump the generation of {}", state_dir.display())]
    Generation {
        state_dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The instance lost what only lives in memory (its overlay mount, a staged bind:
    /// a reboot); only a pass, which checks and mounts them again, may start it.
    #[error(
        "{name}: its {what} is no longer mounted (after a reboot?); `berth apply` makes the instance again"
    )]
    Lost { name: String, what: &'static str },
    /// A runtime, shim or teardown step failed.
    #[error("{name}: cannot {action}")]
    Step {
        name: String,
        action: &'static str,
        #[source]
        source: BoxError,
    },
}

/// Does `op` to the container `name`, under the state lock (named `berth <op> <name>`,
/// waiting at most `lock_timeout`; `waiting` is told once who holds it), then bumps the
/// state directory's generation.
pub fn run(
    loaded: &Loaded,
    op: Op,
    name: &str,
    lock_timeout: Duration,
    waiting: &mut dyn FnMut(&str),
) -> Result<(), OperatorError> {
    let rt = &loaded.config.runtime;
    let state_dir = &rt.state_dir;
    let command = format!("berth {} {name}", op.verb());
    let lock = lock::lock(state_dir, &command, lock_timeout, waiting)?;
    let record = read(state_dir, name)?;
    let done = act(loaded, op, name, record);
    // Once, at the end, whatever happened: a failed action may have changed the state
    // half-way, and a plan made before it must not be executed.
    let bumped = lock
        .bump_generation()
        .map_err(|source| OperatorError::Generation {
            state_dir: state_dir.clone(),
            source,
        });
    done?;
    bumped.map(drop)
}

/// Does `op` to the container of `record`; the caller holds the state lock.
fn act(
    loaded: &Loaded,
    op: Op,
    name: &str,
    mut record: ContainerRecord,
) -> Result<(), OperatorError> {
    let rt = &loaded.config.runtime;
    let state_dir = &rt.state_dir;
    let step = |action: &'static str| {
        move |e: BoxError| OperatorError::Step {
            name: name.to_string(),
            action,
            source: e,
        }
    };
    let runtime = Runtime::from_record(Path::new(&record.runtime), &record.runtime_root);
    let shim =
        find_shim(rt.shim_path.as_deref()).map_err(|e| step("find the shim")(Box::new(e)))?;
    let instances = OciInstances::new(runtime, shim, rt.log_max_size, rt.log_max_files);
    let inst = RuntimeInstance::new(state_dir, &record.instance);
    let how = StopParams::of(Some(&record.spec), None);
    let write = |record: &ContainerRecord| {
        record::write_record(state_dir, record).map_err(|e| step("write its record")(Box::new(e)))
    };
    let stop = || {
        instances
            .stop(&inst, how.signal.number, how.timeout)
            .map(drop)
            .map_err(|e| step("stop")(Box::new(e)))
    };
    let start = |record: &mut ContainerRecord| -> Result<(), OperatorError> {
        let status = instances
            .status(&inst)
            .map_err(|e| step("read its status")(Box::new(e)))?;
        match status {
            InstanceStatus::Running { .. } => return Ok(()),
            InstanceStatus::Created { .. } => {}
            _ => {
                // Never start over an empty mount point: the runtime would give the
                // container an empty directory where its root or a bind should be.
                let ready = || match lost(&inst) {
                    Some(what) => Err(OperatorError::Lost {
                        name: name.to_string(),
                        what,
                    }),
                    None => Ok(Ready::InPlace),
                };
                let started_at = record.started_at.as_deref();
                recreate(&instances, state_dir, name, &inst, started_at, ready).map_err(
                    |e| match e {
                        RecreateError::Delete(e) => step("delete")(Box::new(e)),
                        RecreateError::Ready(e) => e,
                        RecreateError::Create(e) => step("create")(Box::new(e)),
                    },
                )?;
            }
        }
        instances
            .start(&inst)
            .map_err(|e| step("start")(Box::new(e)))?;
        record.started_at = Some(crate::util::rfc3339::now());
        Ok(())
    };
    match op {
        Op::Stop => {
            record.operator_stopped = true;
            write(&record)?;
            stop()?;
        }
        Op::Start => {
            record.operator_stopped = false;
            start(&mut record)?;
            write(&record)?;
        }
        Op::Restart => {
            stop()?;
            start(&mut record)?;
            record.restarts += 1;
            write(&record)?;
        }
        Op::Rm => {
            stop()?;
            let networks = open_networks(loaded);
            teardown(
                state_dir,
                &rt.run_dir,
                &networks,
                &LinuxFs,
                Some(&instances as &dyn InstanceRuntime),
                &record.instance,
            )
            // The cause chain is kept whatever the error type.
            .map_err(|e| step("tear it down")(BoxError::from(e)))?;
            record::remove_record(state_dir, &record.name)
                .map_err(|e| step("remove its record")(Box::new(e)))?;
        }
    }
    Ok(())
}

/// The record of `name`.
pub fn read(state_dir: &Path, name: &str) -> Result<ContainerRecord, OperatorError> {
    match record::read_record(state_dir, name) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(OperatorError::NoSuchContainer {
            name: name.to_string(),
            state_dir: state_dir.to_path_buf(),
        }),
        Err(source) => Err(OperatorError::Record(source)),
    }
}

/// What of the instance's mounts is gone (a reboot unmounts them), if any.
fn lost(inst: &RuntimeInstance) -> Option<&'static str> {
    if !crate::runtime::mount::is_overlay_mounted(&inst.dirs.rootfs()) {
        return Some("root filesystem");
    }
    let points = std::fs::read_dir(crate::storage::binds::binds_dir(&inst.dirs.root)).ok()?;
    points
        .flatten()
        .any(|p| crate::runtime::mount::mounts_at(&p.path()).is_empty())
        .then_some("bind mount")
}
