//! What the network module keeps on disk, and how it is written.
//!
//! ```text
//! <state_dir>/cni/<network>.conflist        one CNI conflist per berth network
//! <state_dir>/cni/ipam/<cni name>/          host-local's allocations
//! <state_dir>/cni/attachments/<id>.json     per instance: netns, per network the exact
//!                                           list used for ADD, its result and address
//! <state_dir>/instances/<id>/{hosts,resolv.conf}
//! <run_dir>/netns/<id>                      the namespace (nsfs bind mount)
//! ```
//!
//! The attachment record is what makes DEL work after an agent restart: DEL must get
//! the same config and the ADD result (`prevResult`) that ADD produced, as libcni's
//! result cache provides. It is written before the first ADD, so a crash at any point
//! leaves a record from which detach can clean up. Files are written atomically
//! (`runtime::state::write_atomic`: temp file, fsync, rename, fsync of the directory) — except a hosts file that already
//! exists: it is bind-mounted into a running container, which keeps the inode, so it
//! is rewritten in place, as Docker and Podman do. Records are 0600 and directories
//! 0700; `hosts` and `resolv.conf` 0644, as a container's users read them.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::runtime::state::{self, InstanceDirs};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The paths of one state/run directory pair.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Paths {
    pub fn cni_dir(&self) -> PathBuf {
        self.state_dir.join("cni")
    }
    pub fn conflist(&self, network: &str) -> PathBuf {
        self.cni_dir().join(format!("{network}.conflist"))
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.cni_dir().join("ipam")
    }
    pub fn attachments_dir(&self) -> PathBuf {
        self.cni_dir().join("attachments")
    }
    pub fn attachment(&self, id: &str) -> PathBuf {
        self.attachments_dir().join(format!("{id}.json"))
    }
    pub fn netns(&self, id: &str) -> PathBuf {
        self.run_dir.join("netns").join(id)
    }
    /// `hosts` in the instance's directory (laid out by `runtime::state`).
    pub fn hosts(&self, id: &str) -> PathBuf {
        InstanceDirs::new(&self.state_dir, id).hosts()
    }
    /// `resolv.conf` in the instance's directory.
    pub fn resolv_conf(&self, id: &str) -> PathBuf {
        InstanceDirs::new(&self.state_dir, id).resolv_conf()
    }
}

/// Whether `s` can name a file in one of the directories above.
pub fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An instance's attachment to one network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetAttachment {
    pub network: String,
    pub ifname: String,
    /// The container's first network: default route and published ports.
    pub primary: bool,
    /// The exact list ADD ran with; DEL runs it again.
    pub config: Value,
    /// Capability values given to ADD (`portMappings`); DEL needs them too.
    pub runtime: Value,
    /// The ADD result, once ADD succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<u8>,
}

/// An `extra_hosts` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostAlias {
    pub host: String,
    pub ip: IpAddr,
}

/// Everything the network module did for one instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttachmentRecord {
    pub instance_id: String,
    pub container: String,
    pub hostname: String,
    pub netns: PathBuf,
    #[serde(default)]
    pub extra_hosts: Vec<HostAlias>,
    /// The loopback plugin's ADD ran.
    #[serde(default)]
    pub loopback: bool,
    /// Every ADD succeeded.
    #[serde(default)]
    pub complete: bool,
    pub networks: Vec<NetAttachment>,
}

/// Writes a file that may be bind-mounted into a running container: in place when it
/// exists (same inode, so the container sees the change), atomically when it does not.
/// Mode 0644 either way, whatever the umask: the container's users read it.
pub fn write_shared(path: &Path, data: &[u8]) -> io::Result<()> {
    match OpenOptions::new().write(true).truncate(true).open(path) {
        Ok(mut f) => {
            f.set_permissions(Permissions::from_mode(state::CONTAINER_FILE))?;
            f.write_all(data)?;
            f.sync_all()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            state::write_atomic_mode(path, data, state::CONTAINER_FILE)
        }
        Err(e) => Err(e),
    }
}

/// Removes a file; a missing one is fine.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir_all(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The stems of the files in `dir` ending in `ext`, sorted; none when `dir` is missing.
pub fn stems(dir: &Path, ext: &str) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(ext)
            && safe_component(stem)
        {
            out.push(stem.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a file; `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn shared_files_keep_their_inode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inst/hosts");
        write_shared(&p, b"one\n").unwrap();
        let ino = fs::metadata(&p).unwrap().ino();
        write_shared(&p, b"two, longer\n").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
        assert_eq!(fs::read_to_string(&p).unwrap(), "two, longer\n");
        write_shared(&p, b"3\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "3\n");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
        // A placeholder written private first is readable once shared.
        let q = dir.path().join("inst/resolv.conf");
        state::write_atomic(&q, b"").unwrap();
        assert_eq!(fs::metadata(&q).unwrap().mode() & 0o7777, 0o600);
        write_shared(&q, b"nameserver 192.0.2.1\n").unwrap();
        assert_eq!(fs::metadata(&q).unwrap().mode() & 0o7777, 0o644);
    }

    #[test]
    fn atomic_writes_replace_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        state::write_atomic(&p, b"1").unwrap();
        state::write_atomic(&p, b"2").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "2");
        assert_eq!(fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
        assert_eq!(stems(&dir.path().join("a"), ".json").unwrap(), ["b"]);
        assert!(
            stems(&dir.path().join("missing"), ".json")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn only_plain_names_are_file_names() {
        assert!(safe_component("web-0123abcd"));
        assert!(safe_component("my_net.v2"));
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "x\0"] {
            assert!(!safe_component(bad), "{bad:?}");
        }
    }
}
