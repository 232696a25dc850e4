//! The API server: binds `<run_dir>/api.sock` and serves [`super::routes`] on the
//! process's async runtime for as long as the [`ApiServer`] lives.
//!
//! The socket is root:berth 0660 when the group `berth` exists (its members may read
//! the status and control the agent), else 0600: root only. The group and mode are set
//! before the first connection is accepted, and a socket whose permissions cannot be
//! set is removed rather than served. A socket file left by an agent that died is
//! replaced, but only when nothing answers on it; the caller holds the agent's
//! single-instance lock, so no second agent can be starting meanwhile.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::watch;

use super::routes::{self, Ctx};
use super::{ApiError, GROUP};
use crate::reconcile::controller;

/// The socket's mode when the group exists: its members may connect.
const GROUP_MODE: u32 = 0o660;
/// The socket's mode without the group: root only.
const ROOT_MODE: u32 = 0o600;
/// How long dropping the server waits for the answers in flight to be sent (an event
/// follower gets the agent's last events and the end of its stream) before the
/// process goes on, and may exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The API being served; dropping it stops serving (open event streams send what is
/// pending and end), waits a moment for that, and removes the socket.
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    /// The socket's device and inode, so that only this server's socket is removed.
    id: (u64, u64),
    shutdown: watch::Sender<bool>,
    /// Told when the server has stopped.
    stopped: mpsc::Receiver<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.stopped.recv_timeout(SHUTDOWN_GRACE);
        if fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds `socket` and serves the API on `rt` until the returned server is dropped.
pub fn start(
    rt: &tokio::runtime::Handle,
    handle: controller::Handle,
    socket: &Path,
) -> Result<ApiServer, ApiError> {
    start_with(rt, handle, socket, GROUP)
}

/// [`start`], with the socket's group named (tests use one that exists everywhere).
pub(super) fn start_with(
    rt: &tokio::runtime::Handle,
    handle: controller::Handle,
    socket: &Path,
    group: &str,
) -> Result<ApiServer, ApiError> {
    let (listener, shown) = bind(socket, group)?;
    let bind_err = |source| ApiError::Bind {
        path: socket.to_path_buf(),
        source,
    };
    let id = fs::symlink_metadata(socket)
        .map(|m| (m.dev(), m.ino()))
        .map_err(bind_err)?;
    let listener = {
        let _guard = rt.enter();
        tokio::net::UnixListener::from_std(listener).map_err(bind_err)?
    };
    let (shutdown, stopped) = watch::channel(false);
    let app = routes::router(Ctx::new(handle, stopped.clone()));
    let mut stop = stopped;
    let (done, stopped) = mpsc::channel();
    rt.spawn(async move {
        let listener = super::conn::Bounded::new(
            listener,
            super::conn::MAX_CONNECTIONS,
            super::conn::FIRST_BYTE,
        );
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(target: "api", error = %e, "the API stopped serving");
        }
        let _ = done.send(());
    });
    tracing::info!(target: "api", socket = %socket.display(), permissions = %shown, "serving the API");
    Ok(ApiServer {
        path: socket.to_path_buf(),
        id,
        shutdown,
        stopped,
    })
}

/// Binds the socket with its group and mode set; returns them as shown in the log
/// (`root:berth 0660`, `root only 0600`).
fn bind(path: &Path, group: &str) -> Result<(UnixListener, String), ApiError> {
    clear_stale(path)?;
    let bind_err = |source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    // Until the mode is set the socket has the umask's (0755 under berth's 022): no
    // one but its owner can connect to it meanwhile.
    let shown = match restrict(path, group) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(path);
            return Err(e);
        }
    };
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok((listener, shown))
}

/// Removes a socket file nothing answers on (an agent that died left it); refuses
/// when something answers, or when the path is not a socket.
fn clear_stale(path: &Path) -> Result<(), ApiError> {
    let stale = |source| ApiError::Stale {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(stale(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ApiError::NotSocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ApiError::InUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(stale(e)),
                _ => Ok(()),
            }
        }
        Err(e) => Err(stale(e)),
    }
}

/// Gives the socket to `group` with mode 0660 when the group exists, else mode 0600.
fn restrict(path: &Path, group: &str) -> Result<String, ApiError> {
    let perms = |source| ApiError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    let gid = nix::unistd::Group::from_name(group)
        .map_err(|source| ApiError::Group {
            group: group.to_string(),
            source,
        })?
        .map(|g| g.gid.as_raw());
    let owner = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
    match gid {
        Some(gid) => {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(perms)?;
            fs::set_permissions(path, fs::Permissions::from_mode(GROUP_MODE)).map_err(perms)?;
            Ok(format!("{owner}:{group} {GROUP_MODE:04o}"))
        }
        None => {
            fs::set_permissions(path, fs::Permissions::from_mode(ROOT_MODE)).map_err(perms)?;
            Ok(format!("{owner} only {ROOT_MODE:04o}"))
        }
    }
}
