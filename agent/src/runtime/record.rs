//! The record of one container, `containers/<name>/state.json` (DESIGN.md §7): its
//! current instance, the spec that instance was created from — typed, the spec crate's
//! own model — its image, addresses, counters and the operator's mark. The executor
//! writes it; the scan, `ps`, `inspect`, `logs`, `stats` and the operator commands read
//! it, directly, so they work while the agent is down.
//!
//! Records are versioned ([`SCHEMA_VERSION`]). A record without `schema_version` was
//! written before the field was kept, in the same format: it is version 1. A record of
//! a newer version is refused, naming the file and both versions, rather than read
//! wrongly. A change to the record's shape — a field of `berth_spec::Container` added
//! without a default is one — bumps the version and adds its migration to
//! [`upgrade`], which turns what an older berth wrote into the current form.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_spec::Container;
use serde::{Deserialize, Serialize};

use super::state;

/// The version of the records this berth writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The record of one container, `containers/<name>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The record's format: [`SCHEMA_VERSION`] when written by this berth.
    pub schema_version: u32,
    pub name: String,
    /// The current instance, `<name>-<8 hex of the spec hash>`.
    pub instance: String,
    pub spec_hash: String,
    /// The container spec the instance was created from (defaults applied), so a
    /// later change can be named ("env LOG_LEVEL changed") and the instance is
    /// stopped, probed and shown as it was made, whatever the repository says now.
    pub spec: Container,
    pub image: ImageRef,
    /// The OCI runtime binary that created the instance (`/usr/bin/runc`).
    pub runtime: String,
    /// The runtime's `--root` directory.
    pub runtime_root: PathBuf,
    /// RFC 3339 UTC times.
    pub created_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    /// How many times berth started the container again after it exited.
    #[serde(default)]
    pub restarts: u32,
    /// Set by `berth stop`, cleared by `berth start`: apply leaves it stopped.
    #[serde(default)]
    pub operator_stopped: bool,
    /// Addresses per network (bridge mode).
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
    /// Published ports as written (`127.0.0.1:8080:8080/tcp`).
    #[serde(default)]
    pub ports: Vec<String>,
    /// The cgroup path given to the runtime (`/berth/<instance>`).
    pub cgroup_path: String,
    /// The uid/gid the process runs as (resolved in the image).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

/// The image an instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The reference as written in the spec.
    pub reference: String,
    /// The digest that was pulled and verified.
    pub digest: String,
    /// The snapshot chain IDs, base first.
    pub chain_ids: Vec<String>,
}

/// Why a record could not be read or written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read container record {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container record {} cannot be read as a record of schema version {version}", path.display())]
    Parse {
        path: PathBuf,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "container record {} has schema version {found}, newer than the version {supported} this berth reads: it was written by a newer berth",
        path.display()
    )]
    Newer {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A record whose names do not hold together: it is not berth's, and nothing
    /// it names is touched.
    #[error("container record {} is malformed: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot write container record {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the container records in {}", dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the container record of `{name}` in {}", dir.display())]
    Remove {
        name: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RecordError {
    /// Whether trying again later may work: a full disk, a busy file. A record that
    /// does not parse, or is of a newer version, stays so until it is replaced.
    pub fn is_transient(&self) -> bool {
        match self {
            RecordError::Read { source, .. }
            | RecordError::Write { source, .. }
            | RecordError::List { source, .. }
            | RecordError::Remove { source, .. } => state::io_is_transient(source),
            RecordError::Parse { .. }
            | RecordError::Newer { .. }
            | RecordError::Malformed { .. } => false,
        }
    }
}

/// `containers/<name>/state.json`.
pub fn record_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("containers").join(name).join("state.json")
}

/// The version a record says it has: none is version 1.
#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    schema_version: Option<u32>,
}

/// A record of an older `version` in the current form. Version 1 is the current form.
fn upgrade(
    version: u32,
    raw: serde_json::Value,
) -> Result<serde_json::Value, (u32, serde_json::Error)> {
    debug_assert!(version <= SCHEMA_VERSION);
    Ok(raw)
}

/// Parses the record at `path` (named in errors) from `bytes`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<ContainerRecord, RecordError> {
    let parse_err = |version: u32| {
        let path = path.to_path_buf();
        move |source| RecordError::Parse {
            path,
            version,
            source,
        }
    };
    let version = serde_json::from_slice::<Version>(bytes)
        .map_err(parse_err(1))?
        .schema_version
        .unwrap_or(1);
    if version > SCHEMA_VERSION {
        return Err(RecordError::Newer {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let mut raw: serde_json::Value = serde_json::from_slice(bytes).map_err(parse_err(version))?;
    if let Some(fields) = raw.as_object_mut() {
        fields.insert("schema_version".into(), version.into());
    }
    let raw = upgrade(version, raw).map_err(|(v, e)| parse_err(v)(e))?;
    let mut record: ContainerRecord = serde_json::from_value(raw).map_err(parse_err(version))?;
    record.schema_version = SCHEMA_VERSION;
    Ok(record)
}

/// The most bytes a record may hold (its spec is within the spec limits).
const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a container's record; `None` if berth has none. The file is read without
/// following a link and within [`MAX_RECORD_BYTES`], and its names must hold together:
/// the container's name is its directory's, its instance is `<name>-<8 hex>`, its
/// cgroup is an absolute path that climbs nowhere.
pub fn read_record(state_dir: &Path, name: &str) -> Result<Option<ContainerRecord>, RecordError> {
    read_at(record_path(state_dir, name), name)
}

/// `containers/<name>/previous.json`: the record of the instance an update replaced,
/// kept until the new instance is verified so that a failed update can be rolled back
/// to it (`update_timeout`).
pub fn previous_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir
        .join("containers")
        .join(name)
        .join("previous.json")
}

/// The record of the instance an update of `name` replaced, if one is kept; read as
/// [`read_record`] reads the current one.
pub fn read_previous(state_dir: &Path, name: &str) -> Result<Option<ContainerRecord>, RecordError> {
    read_at(previous_path(state_dir, name), name)
}

/// Keeps `record` as the previous instance of its container.
pub fn write_previous(state_dir: &Path, record: &ContainerRecord) -> Result<(), RecordError> {
    write_at(previous_path(state_dir, &record.name), record)
}

/// Forgets the previous instance of `name`; none is fine.
pub fn remove_previous(state_dir: &Path, name: &str) -> Result<(), RecordError> {
    let path = previous_path(state_dir, name);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(RecordError::Write { path, source: e })
        }
        _ => Ok(()),
    }
}

fn read_at(path: PathBuf, name: &str) -> Result<Option<ContainerRecord>, RecordError> {
    let record = match state::read_small(&path, MAX_RECORD_BYTES) {
        Ok(bytes) => parse(&path, &bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Read { path, source }),
    };
    let malformed = |reason: String| RecordError::Malformed {
        path: path.clone(),
        reason,
    };
    if record.name != name {
        return Err(malformed(format!(
            "it names container `{}`, not `{name}`",
            record.name
        )));
    }
    let hash = record
        .instance
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or("");
    if hash.len() != 8 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(format!(
            "its instance `{}` is not `{name}-` and 8 hex digits",
            record.instance
        )));
    }
    if !record.cgroup_path.starts_with('/')
        || record.cgroup_path.split('/').any(|c| c == ".." || c == ".")
    {
        return Err(malformed(format!(
            "its cgroup `{}` is not an absolute path without `.` or `..`",
            record.cgroup_path
        )));
    }
    Ok(Some(record))
}

/// Every container record, by name.
pub fn read_records(state_dir: &Path) -> Result<BTreeMap<String, ContainerRecord>, RecordError> {
    let dir = state_dir.join("containers");
    let list = |source| RecordError::List {
        dir: dir.clone(),
        source,
    };
    let mut out = BTreeMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(list(e)),
    };
    for entry in entries {
        let name = entry
            .map_err(list)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(r) = read_record(state_dir, &name)? {
            out.insert(name, r);
        }
    }
    Ok(out)
}

/// Writes a container's record atomically, in the current version.
pub fn write_record(state_dir: &Path, record: &ContainerRecord) -> Result<(), RecordError> {
    write_at(record_path(state_dir, &record.name), record)
}

fn write_at(path: PathBuf, record: &ContainerRecord) -> Result<(), RecordError> {
    let record = ContainerRecord {
        schema_version: SCHEMA_VERSION,
        ..record.clone()
    };
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| RecordError::Write {
        path: path.clone(),
        source: e.into(),
    })?;
    state::write_atomic(&path, &bytes).map_err(|source| RecordError::Write { path, source })
}

/// Removes a container's record (and its directory).
pub fn remove_record(state_dir: &Path, name: &str) -> Result<(), RecordError> {
    let dir = state_dir.join("containers").join(name);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RecordError::Remove {
            name: name.to_string(),
            dir,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A record as the tests of other modules need one: container `name`, running
/// busybox's `sh`, created and started at fixed times.
#[cfg(test)]
pub fn sample(name: &str) -> ContainerRecord {
    let mut r = parse(Path::new("state.json"), tests::VERSION_1.as_bytes()).unwrap();
    r.name = name.to_string();
    r.spec.name = name.to_string();
    r.spec.hostname = name.to_string();
    r.instance = format!("{name}-0123abcd");
    r.cgroup_path = format!("/berth/{name}-0123abcd");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as berth wrote it before records carried a version: version 1.
    pub(super) const VERSION_1: &str = r#"{
  "name": "web",
  "instance": "web-0123abcd",
  "spec_hash": "0123abcd",
  "spec": {
    "name": "web",
    "image": "registry.example.com/shop/web:1.0",
    "user": "10001:10001",
    "entrypoint": null,
    "command": ["/bin/httpd", "-f", "-p", "8080"],
    "workdir": null,
    "env": {"LOG_LEVEL": "info"},
    "hostname": "web",
    "restart": "always",
    "read_only": true,
    "cap_drop": ["ALL"],
    "cap_add": [],
    "no_new_privileges": true,
    "privileged": false,
    "seccomp": {"type": "default"},
    "network_mode": "bridge",
    "networks": ["front"],
    "ports": [{"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 8080, "protocol": "tcp"}],
    "depends_on": [],
    "stop_signal": {"name": "SIGQUIT", "number": 3},
    "stop_timeout": "5s",
    "labels": {},
    "nodes": null,
    "update": "stop-first",
    "devices": [],
    "ulimits": {},
    "sysctls": {},
    "extra_hosts": [],
    "resources": {"memory": 67108864, "cpus": 0.5, "pids": 64},
    "health": {"probe": {"tcp": 8080}, "interval": "2s", "timeout": "1s", "retries": 5, "start_period": "1s"},
    "mounts": [
      {"source": {"type": "volume", "name": "web-data"}, "target": "/data", "read_only": false},
      {"source": {"type": "tmpfs", "size": 16777216}, "target": "/tmp", "read_only": false}
    ],
    "secrets": [{"name": "db-password", "target": "db-password"}]
  },
  "image": {
    "reference": "registry.example.com/shop/web:1.0",
    "digest": "sha256:00",
    "chain_ids": []
  },
  "runtime": "/usr/bin/runc",
  "runtime_root": "/run/berth/runc",
  "created_at": "2026-11-22T10:00:00Z",
  "started_at": "2026-11-22T10:00:01Z",
  "restarts": 2,
  "operator_stopped": false,
  "addresses": {"front": "10.89.1.2"},
  "ports": ["127.0.0.1:8080:8080/tcp"],
  "cgroup_path": "/berth/web-0123abcd",
  "uid": 10001,
  "gid": 10001
}"#;

    fn write(state: &Path, name: &str, text: &str) {
        let dir = state.join("containers").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("state.json"), text).unwrap();
    }

    #[test]
    fn a_record_of_the_old_format_is_read_typed_and_written_back_versioned() {
        let state = tempfile::tempdir().unwrap();
        write(state.path(), "web", VERSION_1);
        let r = read_record(state.path(), "web").unwrap().unwrap();
        assert_eq!(r.schema_version, SCHEMA_VERSION);
        assert_eq!(r.instance, "web-0123abcd");
        assert_eq!(r.restarts, 2);
        assert_eq!(r.spec.stop_signal.number, 3);
        assert_eq!(r.spec.stop_timeout, std::time::Duration::from_secs(5));
        assert_eq!(r.spec.resources.memory, Some(64 << 20));
        assert_eq!(r.spec.health.as_ref().map(|h| h.retries), Some(5));
        assert_eq!(r.spec.mounts.len(), 2);
        assert_eq!(r.spec.env["LOG_LEVEL"], "info");

        // Written back: the current version, and the same record read again.
        write_record(state.path(), &r).unwrap();
        let text = fs::read_to_string(record_path(state.path(), "web")).unwrap();
        let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(raw["schema_version"], SCHEMA_VERSION);
        let old: serde_json::Value = serde_json::from_str(VERSION_1).unwrap();
        assert_eq!(raw["spec"], old["spec"], "the spec changed on the way");
        let again = read_record(state.path(), "web").unwrap().unwrap();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&r).unwrap()
        );
        assert_eq!(read_records(state.path()).unwrap().len(), 1);
        remove_record(state.path(), "web").unwrap();
        assert!(read_record(state.path(), "web").unwrap().is_none());
        remove_record(state.path(), "web").unwrap();
    }

    #[test]
    fn a_record_of_a_newer_version_is_refused_naming_the_file_and_both_versions() {
        let state = tempfile::tempdir().unwrap();
        // A newer berth may have changed any field: only the version is read.
        write(
            state.path(),
            "web",
            r#"{"schema_version": 2, "name": "web", "spec": {"a": "shape of the future"}}"#,
        );
        let err = read_record(state.path(), "web").unwrap_err();
        let path = record_path(state.path(), "web");
        assert!(
            matches!(&err, RecordError::Newer { found: 2, supported: 1, path: p } if *p == path),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("schema version 2"), "{text}");
        assert!(text.contains("version 1 this berth reads"), "{text}");
        assert!(!err.is_transient());
        // One such record makes the whole listing fail, rather than hide a container.
        assert!(matches!(
            read_records(state.path()),
            Err(RecordError::Newer { .. })
        ));
    }

    #[test]
    fn a_record_whose_names_do_not_hold_together_is_refused() {
        let state = tempfile::tempdir().unwrap();
        // Another container's name.
        write(state.path(), "db", VERSION_1);
        let err = read_record(state.path(), "db").unwrap_err();
        assert!(matches!(err, RecordError::Malformed { .. }), "{err}");
        assert!(err.to_string().contains("not `db`"), "{err}");
        // An instance that would reach outside the instances directory.
        let evil = VERSION_1.replace(
            "\"instance\": \"web-0123abcd\"",
            "\"instance\": \"../../victim\"",
        );
        write(state.path(), "web", &evil);
        let err = read_record(state.path(), "web").unwrap_err();
        assert!(err.to_string().contains("../../victim"), "{err}");
        // A link is not followed.
        let path = record_path(state.path(), "web");
        fs::remove_file(&path).unwrap();
        let target = state.path().join("elsewhere.json");
        fs::write(&target, VERSION_1).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(
            read_record(state.path(), "web"),
            Err(RecordError::Read { .. })
        ));
    }

    #[test]
    fn a_record_that_is_not_one_names_its_file() {
        let state = tempfile::tempdir().unwrap();
        write(state.path(), "web", r#"{"name": "web", "spec": {}}"#);
        let err = read_record(state.path(), "web").unwrap_err();
        assert!(
            matches!(err, RecordError::Parse { version: 1, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&record_path(state.path(), "web").display().to_string()),
            "{err}"
        );
    }
}
