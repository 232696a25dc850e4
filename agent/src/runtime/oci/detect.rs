//! Choosing the OCI runtime (`runtime.oci_runtime`: `auto`, `runc`, `crun` or a path).
//!
//! A runtime is *probed* before it is chosen: berth creates and deletes a tiny
//! container with it (an empty executable as the process, never started, a private
//! `--root`). `--version` or `features` would not do: crun 1.8 runs, and prints its
//! features, on a cgroup v1 *hybrid* host, yet refuses every `create` there ("cgroups
//! in hybrid mode not supported", research/baseline.md §1). `auto` prefers crun (about
//! a third faster to start a container) and falls back to runc, logging why. berth
//! does not work around the host's layout.
//!
//! The verdict is cached in `<run_dir>/runtime.json`, keyed by the binary's path,
//! mtime and size, the boot id and the mount namespace (a probe's answer holds for one
//! boot and one view of `/sys/fs/cgroup`), so later commands pay nothing. Failures are
//! cached too: `auto` on such a host does not retry crun on every command.
//!
//! Each runtime keeps its containers under its own `--root`, `<run_dir>/runc` or
//! `<run_dir>/crun`: their state formats differ, and a container stays with the
//! runtime that created it (its record names both).

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Runtime, RuntimeKind, error_text, run_captured};
use crate::runtime::state::{self, write_atomic};

/// Why no runtime could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "oci runtime `{0}`: expected \"auto\", \"runc\", \"crun\" or an absolute path to a runtime binary"
    )]
    BadChoice(String),
    #[error("oci runtime `{0}`: not found on PATH")]
    NotFound(String),
    #[error("oci runtime `{}` does not work on this host: {reason}", binary.display())]
    Unusable { binary: PathBuf, reason: String },
    #[error("no working oci runtime: {0}")]
    NoneWorks(String),
    #[error("oci runtime probe: cannot prepare `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a runtime failed its probe. Cached as text ([`ProbeRecord::error`]) and shown
/// as the reason it is unusable, so each variant says all of it.
#[derive(Debug, thiserror::Error)]
enum ProbeFailure {
    #[error("cannot run `{op}`: {error}")]
    Spawn {
        op: &'static str,
        error: std::io::Error,
    },
    #[error("`--version` did not answer")]
    NoVersion,
    #[error("`--version` failed ({status}): {stderr}")]
    Version {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`create` did not finish within {PROBE_TIMEOUT:?}")]
    CreateTimeout,
    /// The runtime's own message.
    #[error("{0}")]
    Create(String),
}

/// How long a probe's `create` may take (first runs after boot can be slow).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The cache file, relative to the run directory.
pub const CACHE_FILE: &str = "runtime.json";

/// Picks the runtime for `choice` and returns it with its `--root` under `run_dir`.
pub fn detect(choice: &str, run_dir: &Path) -> Result<Runtime, DetectError> {
    let found = |kind: RuntimeKind| {
        find_in_path(kind.name()).ok_or_else(|| DetectError::NotFound(kind.name().to_string()))
    };
    let choose = |binary: PathBuf| -> Result<Runtime, DetectError> {
        let verdict = probe_cached(&binary, run_dir)?;
        match verdict.error {
            None => Ok(runtime(binary, verdict.kind, run_dir)),
            Some(reason) => Err(DetectError::Unusable { binary, reason }),
        }
    };
    match choice {
        "auto" => {
            let crun_error = match found(RuntimeKind::Crun) {
                Ok(crun) => match choose(crun) {
                    Ok(rt) => return Ok(rt),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            let runc = found(RuntimeKind::Runc)
                .and_then(choose)
                .map_err(|e| DetectError::NoneWorks(format!("{crun_error}; {e}")))?;
            // Said once per boot: the agent detects the runtime in every pass's
            // process; a marker in the run directory (a tmpfs, /run) remembers it.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) && first_in_boot(run_dir) {
                tracing::info!(runtime = %runc.binary.display(), reason = %crun_error, "oci runtime: crun is not usable here, using runc");
            }
            Ok(runc)
        }
        "runc" => choose(found(RuntimeKind::Runc)?),
        "crun" => choose(found(RuntimeKind::Crun)?),
        path if path.starts_with('/') => {
            let p = PathBuf::from(path);
            if !p.is_file() {
                return Err(DetectError::NotFound(path.to_string()));
            }
            choose(p)
        }
        other => Err(DetectError::BadChoice(other.to_string())),
    }
}

/// The marker of the note that crun is not usable, under the run directory.
const CRUN_NOTE: &str = "crun-unusable.noted";

/// Whether the note is due: true the first time this boot (the marker is made now),
/// and when the marker cannot be made (better said twice than never).
fn first_in_boot(run_dir: &Path) -> bool {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(run_dir.join(CRUN_NOTE))
    {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AlreadyExists,
    }
}

fn runtime(binary: PathBuf, kind: RuntimeKind, run_dir: &Path) -> Runtime {
    Runtime {
        binary,
        kind,
        root: run_dir.join(kind.name()),
    }
}

/// `name` on `$PATH`, else in the usual system directories (a service's PATH can be
/// minimal).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// One probe's verdict, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub binary: PathBuf,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub size: u64,
    pub kind: RuntimeKind,
    /// First line of `--version`.
    pub version: String,
    /// Why the runtime cannot create a container here; `None`: it works.
    pub error: Option<String>,
    /// What the probe cost.
    pub probe_ms: u64,
}

/// `<run_dir>/runtime.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProbeCache {
    pub boot_id: String,
    pub mount_ns: String,
    pub probes: Vec<ProbeRecord>,
}

fn environment() -> (String, String) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/mnt").unwrap_or_default();
    (boot.trim().to_string(), ns.display().to_string())
}

/// The cached verdict for `binary`, probing (and caching) it when there is none.
pub fn probe_cached(binary: &Path, run_dir: &Path) -> Result<ProbeRecord, DetectError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DetectError::Io { path, source }
    };
    let binary = binary.canonicalize().map_err(io(binary))?;
    let meta = binary.metadata().map_err(io(&binary))?;
    let (boot_id, mount_ns) = environment();
    // The first of berth's steps to touch the run directory: it is berth's own, 0700,
    // or 0711 while an agent lets the `berth` group through to its API socket.
    let traversable = std::fs::metadata(run_dir)
        .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777 == 0o711);
    state::trusted_dir(run_dir).map_err(io(run_dir))?;
    if traversable {
        std::fs::set_permissions(run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .map_err(io(run_dir))?;
    }
    let cache_path = run_dir.join(CACHE_FILE);
    let mut cache: ProbeCache = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &ProbeCache| c.boot_id == boot_id && c.mount_ns == mount_ns)
        .unwrap_or_default();
    let same = |r: &ProbeRecord| {
        r.binary == binary
            && r.mtime_sec == meta.mtime()
            && r.mtime_nsec == meta.mtime_nsec()
            && r.size == meta.len()
    };
    if let Some(hit) = cache.probes.iter().find(|r| same(r)) {
        tracing::debug!(runtime = %binary.display(), ok = hit.error.is_none(), "oci runtime: cached probe");
        return Ok(hit.clone());
    }

    let started = Instant::now();
    let (kind, version, verdict) = match version(&binary) {
        Ok(v) => {
            let kind = RuntimeKind::from_version(&v);
            (kind, v, probe(&binary, kind, run_dir)?)
        }
        Err(e) => (RuntimeKind::from_binary(&binary), String::new(), Err(e)),
    };
    let record = ProbeRecord {
        binary: binary.clone(),
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        size: meta.len(),
        kind,
        version,
        error: verdict.err().map(|e| e.to_string()),
        probe_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    tracing::info!(runtime = %binary.display(), ok = record.error.is_none(), ms = record.probe_ms, "oci runtime: probed");
    cache.boot_id = boot_id;
    cache.mount_ns = mount_ns;
    cache.probes.retain(|r| r.binary != binary);
    cache.probes.push(record.clone());
    if let Ok(bytes) = serde_json::to_vec_pretty(&cache) {
        // A cache that cannot be written only costs a probe next time.
        if let Err(e) = write_atomic(&cache_path, &bytes) {
            tracing::warn!(path = %cache_path.display(), error = %e, "oci runtime: cannot cache the probe");
        }
    }
    Ok(record)
}

/// The first line of `BINARY --version`, or why it could not run.
fn version(binary: &Path) -> Result<String, ProbeFailure> {
    let out = run_captured(
        std::process::Command::new(binary).arg("--version"),
        PROBE_TIMEOUT,
    )
    .map_err(|error| ProbeFailure::Spawn {
        op: "--version",
        error,
    })?
    .ok_or(ProbeFailure::NoVersion)?;
    if !out.status.success() {
        return Err(ProbeFailure::Version {
            status: out.status,
            stderr: error_text(&out.stderr),
        });
    }
    Ok(out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Creates and deletes a container that is never started: what fails on a host the
/// runtime cannot drive (cgroup layout, namespaces, seccomp, rlimits) fails here.
/// `Err(reason)` is the runtime's own message; `DetectError` is a local I/O problem.
fn probe(
    binary: &Path,
    kind: RuntimeKind,
    run_dir: &Path,
) -> Result<Result<(), ProbeFailure>, DetectError> {
    let id = format!(
        "berth-probe-{}-{}-{}",
        kind.name(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let base = run_dir.join("probe");
    let dir = base.join(&id);
    let rt = Runtime {
        binary: binary.to_path_buf(),
        kind,
        // Its own root, so a probe never shows among berth's containers.
        root: base.join(format!("{}-root", kind.name())),
    };
    let prepared = write_bundle(&dir, &id);
    let verdict = match prepared {
        Ok(()) => {
            let verdict = create_and_delete(&rt, &id, &dir);
            // The probe's own `/berth/<hash>` parent, now empty.
            crate::runtime::cgroup::remove_empty_parent(
                Path::new(crate::runtime::cgroup::CGROUP_ROOT),
                &crate::runtime::render::cgroups_path(&dir, &id),
            );
            verdict
        }
        Err(source) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(DetectError::Io { path: dir, source });
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(verdict)
}

fn write_bundle(dir: &Path, id: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    state::private_dir(dir)?;
    let rootfs = dir.join("rootfs");
    state::create_dir(&rootfs, 0o755)?;
    for sub in ["proc", "dev"] {
        state::create_dir(&rootfs.join(sub), 0o755)?;
    }
    // Never executed (the container is not started), but runc and crun look the
    // process up at create time, so it must be an executable file.
    state::write_atomic_mode(&rootfs.join("probe"), b"", 0o755)?;
    let config = serde_json::json!({
        "ociVersion": crate::runtime::render::OCI_VERSION,
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/probe"],
            "env": ["PATH=/"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth-probe",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=64k"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "mount"}, {"type": "network"}],
            "cgroupsPath": crate::runtime::render::cgroups_path(dir, id),
            "resources": {"devices": [{"allow": false, "access": "rwm"}]}
        }
    });
    write_atomic(&dir.join("config.json"), config.to_string().as_bytes())
}

fn create_and_delete(rt: &Runtime, id: &str, dir: &Path) -> Result<(), ProbeFailure> {
    let argv = rt.create_argv(id, dir, &dir.join("pid"));
    let created = run_captured(&mut rt.command(&argv), PROBE_TIMEOUT);
    let outcome = match created {
        Err(error) => Err(ProbeFailure::Spawn {
            op: "create",
            error,
        }),
        Ok(None) => Err(ProbeFailure::CreateTimeout),
        Ok(Some(out)) if !out.status.success() => {
            Err(ProbeFailure::Create(error_text(&out.stderr)))
        }
        Ok(Some(_)) => Ok(()),
    };
    cleanup(rt, id);
    outcome
}

/// Removes the probe container. Its init was never started, and its parent is not
/// this process (it was re-parented when `create` exited), so there is no exit file
/// to wait for: crun's `delete --force` is quick; runc's polls for 100 ms, so runc
/// gets SIGKILL and `state` polls until it reports `stopped` (runc counts a zombie
/// as stopped) before a plain `delete`.
fn cleanup(rt: &Runtime, id: &str) {
    if rt.kind == RuntimeKind::Runc {
        let _ = rt.run("kill", id, &rt.kill_argv(id, 9));
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match rt.state(id) {
                Ok(Some(s)) if s.status != super::RuntimeStatus::Stopped => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => break,
            }
        }
        if rt.run("delete", id, &rt.delete_argv(id, false)).is_ok() {
            return;
        }
    }
    let argv: Vec<OsString> = rt.delete_argv(id, true);
    let _ = rt.run("delete", id, &argv);
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn the_crun_note_is_due_once_per_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(first_in_boot(dir.path()));
        assert!(!first_in_boot(dir.path()), "the marker remembers it");
        assert!(dir.path().join(CRUN_NOTE).is_file());
        // No marker can be made: said rather than never.
        assert!(first_in_boot(&dir.path().join("missing")));
    }
}
