//! Storage on the host: named volumes, bind mounts and secrets. Secrets are age files
//! from the repository, decrypted in memory with the node's identity and delivered on a
//! per-instance tmpfs (`secrets`).

pub mod binds;
pub mod nofollow;
pub mod secrets;
pub mod treefile;
// Used by the executor (`berth apply`), which lands next.
#[allow(dead_code)]
pub mod volumes;
