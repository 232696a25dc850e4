//! Running containers: OCI bundle generation, the shim, the runc/crun driver, cgroup
//! stats and the scan of what runs.
//!
//! The pure parts come first: [`render`] turns a container spec and its image config
//! into the OCI runtime config, [`user`] resolves users against the image's
//! `/etc/passwd`, and [`spec_hash`] computes the hash that names an instance. None of
//! them does I/O; the side effects (writing the bundle, calling the runtime) live behind
//! their own trait.
//!
//! The side effects: [`host`] gathers the facts the renderer needs, [`mount`] mounts an
//! instance's overlay rootfs, [`oci`] drives runc or crun (and picks one at start-up),
//! and [`instance`] runs an instance's lifecycle through the shim behind the
//! `InstanceRuntime` trait.

pub mod cgroup;
pub mod health;
pub mod health_file;
pub mod history;
pub mod host;
pub mod instance;
pub mod lock;
pub mod logs;
pub mod logs_follow;
pub mod mount;
pub mod oci;
pub mod record;
pub mod render;
pub mod rollback;
pub mod shim_cgroup;
pub mod spec_hash;
pub mod state;
pub mod status;
pub mod user;
