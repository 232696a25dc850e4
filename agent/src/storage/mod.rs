//! Storage on the host: named volumes, bind mounts and secrets. Secrets are age files
//! from the repository, decrypted in memory with the node's identity and delivered on a
//! per-instance tmpfs (`secrets`).

pub mod binds;
pub mod nofollow;
pub mod secrets;
pub mod treefile;
pub mod volumes;
