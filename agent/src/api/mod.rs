//! The agent's API: JSON over HTTP/1.1 on `<run_dir>/api.sock` (DESIGN.md §6;
//! `agent/API.md` lists every endpoint with examples).
//!
//! - [`server`] binds the socket (root:berth 0660 when the group `berth` exists, else
//!   root only 0600) and serves the controller's state and controls with axum on the
//!   process's async runtime.
//! - [`client`] is the CLI's side: `berth status`, `events`, `reconcile`, `suspend` and
//!   `resume` are its clients. A socket with nothing behind it is a typed
//!   [`client::ClientError::NoAgent`], so the read-only commands can fall back to the
//!   state directory.
//! - [`wire`] holds the documents both sides exchange, so the server writes and the
//!   client reads one type.
//!
//! The socket's permissions are the only access control: whoever may connect may
//! suspend the node. Nothing the API answers holds a secret (records hold no secret
//! values, errors never carry credentials).

pub mod client;
mod conn;
mod routes;
pub mod server;
pub mod wire;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

/// The socket's file name under the run directory.
pub const SOCKET: &str = "api.sock";

/// The group whose members may use the socket, when it exists.
pub const GROUP: &str = "berth";

/// The API socket of a run directory.
pub fn socket_path(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join(SOCKET)
}

/// Why the API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Something answers on the socket already: another agent for this run directory.
    #[error("another process answers on {}", path.display())]
    InUse { path: PathBuf },
    /// The path exists and is not a socket: it is left alone.
    #[error("{} exists and is not a socket", path.display())]
    NotSocket { path: PathBuf },
    #[error("cannot remove the stale socket {}", path.display())]
    Stale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The socket's group or mode could not be set: it is removed rather than served
    /// with the wrong permissions.
    #[error("cannot set the owner and mode of {}", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot look up the group {group}")]
    Group {
        group: String,
        #[source]
        source: nix::Error,
    },
}
