//! Starting an instance again in place, once its init exited (or the runtime lost
//! it): the same bundle and writable layer, a fresh runtime container. One sequence
//! for the pass's start step and for `berth start` / `berth restart`:
//! 1. the runtime's delete of what is left of the old container;
//! 2. its exit into the restart history, before its exit file goes
//!    (`runtime::history`; recording one exit twice keeps one);
//! 3. the caller's check of what the instance holds on the host, which lives in
//!    memory only (its overlay mount, staged binds, namespace): it may restore it, make
//!    the instance again itself, or refuse;
//! 4. in place: the old exit file removed, and the runtime's create.

use std::path::Path;

use super::{InstanceError, InstanceRuntime, RuntimeInstance};

/// What the caller's check found ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// What the instance holds is there (or was restored): create it in place.
    InPlace,
    /// The caller made the instance again itself (after a reboot, on the same
    /// writable layer): nothing is left to do.
    Remade,
}

/// Which part of [`recreate`] failed.
#[derive(Debug)]
pub enum RecreateError<E> {
    /// The runtime's delete of the old container.
    Delete(InstanceError),
    /// The caller's check refused, or could not restore what the instance needs.
    Ready(E),
    /// The runtime's create.
    Create(InstanceError),
}

/// Makes `inst` of container `name`, no longer running, ready to start again (see the
/// module docs), and says how. `started_at` is its record's start time, for the history.
pub fn recreate<E>(
    runtime: &dyn InstanceRuntime,
    state_dir: &Path,
    name: &str,
    inst: &RuntimeInstance,
    started_at: Option<&str>,
    ready: impl FnOnce() -> Result<Ready, E>,
) -> Result<Ready, RecreateError<E>> {
    runtime.delete(inst).map_err(RecreateError::Delete)?;
    crate::runtime::history::record_exit_of(state_dir, name, &inst.dirs, started_at);
    let ready = ready().map_err(RecreateError::Ready)?;
    if ready == Ready::InPlace {
        let _ = std::fs::remove_file(inst.dirs.exit_file());
        runtime.create(inst).map_err(RecreateError::Create)?;
    }
    Ok(ready)
}
