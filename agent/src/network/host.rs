//! The host side effects that are not CNI calls, behind [`NetHost`]: network
//! namespaces ([`super::netns`]) and the bridge links CNI leaves behind
//! ([`super::netlink`]). [`LinuxNet`] is a thin pass-through; tests use the in-memory
//! fake.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{netlink, netns};

/// A failed host operation, naming its object.
#[derive(Debug, thiserror::Error)]
pub enum NetHostError {
    #[error("cannot create network namespace {}: {step}", path.display())]
    CreateNetns {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot delete network namespace {}: {step}", path.display())]
    DeleteNetns {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot delete link `{name}`")]
    DeleteLink {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Namespaces and links.
pub trait NetHost: fmt::Debug + Send + Sync {
    /// Creates a named namespace at `path`; an existing one is kept.
    fn create_netns(&self, path: &Path) -> Result<(), NetHostError>;
    /// Unmounts and removes `path`; a missing one is fine.
    fn delete_netns(&self, path: &Path) -> Result<(), NetHostError>;
    /// Whether `path` is a mounted network namespace.
    fn netns_exists(&self, path: &Path) -> bool;
    /// Whether a link of that name exists in the host's namespace.
    fn link_exists(&self, name: &str) -> bool;
    /// Deletes a link; `false` when there was none.
    fn delete_link(&self, name: &str) -> Result<bool, NetHostError>;
    /// How many interfaces are enslaved to the bridge `name` (0 when it is missing).
    fn bridge_members(&self, name: &str) -> usize;
    /// Waits, at most `timeout`, until no CNI plugin runs for `container_id`: a pass
    /// killed mid-ADD leaves its plugin running, and a DEL before it ends would leave
    /// what it adds afterwards behind. Whether none runs any more.
    fn wait_plugins_done(&self, _container_id: &str, _timeout: std::time::Duration) -> bool {
        true
    }
}

/// Whether a process runs with `CNI_CONTAINERID=<id>` in its environment (a plugin of
/// that container, from this or an earlier berth process).
fn plugin_running(container_id: &str) -> bool {
    let needle = format!("CNI_CONTAINERID={container_id}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let name = p.file_name();
        let is_pid = name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read(p.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
    })
}

/// The host itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxNet;

impl NetHost for LinuxNet {
    fn create_netns(&self, path: &Path) -> Result<(), NetHostError> {
        netns::create(path).map_err(|(step, source)| NetHostError::CreateNetns {
            path: path.to_path_buf(),
            step,
            source,
        })
    }

    fn delete_netns(&self, path: &Path) -> Result<(), NetHostError> {
        netns::delete(path).map_err(|(step, source)| NetHostError::DeleteNetns {
            path: path.to_path_buf(),
            step,
            source,
        })
    }

    fn netns_exists(&self, path: &Path) -> bool {
        netns::is_netns(path)
    }

    fn link_exists(&self, name: &str) -> bool {
        !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
    }

    fn bridge_members(&self, name: &str) -> usize {
        if name.contains('/') {
            return 0;
        }
        std::fs::read_dir(Path::new("/sys/class/net").join(name).join("brif"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn delete_link(&self, name: &str) -> Result<bool, NetHostError> {
        netlink::delete_link(name).map_err(|source| NetHostError::DeleteLink {
            name: name.to_string(),
            source,
        })
    }

    fn wait_plugins_done(&self, container_id: &str, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if !plugin_running(container_id) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
