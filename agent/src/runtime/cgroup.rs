//! Reading a container's resource usage from its cgroup (`berth stats`): CPU time,
//! memory in use and its limit, process count and its limit, for cgroup v1 and v2.
//!
//! The agent never writes cgroup files: runc/crun apply the limits rendered into the
//! OCI config (DESIGN.md §9). For reading, this is a small reader of our own rather
//! than youki's `libcgroups` or `cgroups-rs`: berth needs five files per hierarchy, and
//! the reader keeps the build lean (research/crates.md measured cgroups-rs at +194 s
//! of CI build; libcgroups adds 8 crates for a `Stats` struct we would only partly use).
//!
//! Layout: v2 when `/sys/fs/cgroup/cgroup.controllers` exists (the unified hierarchy is
//! mounted there); otherwise v1, with each controller's mount point taken from
//! `/proc/self/mountinfo` (a hybrid host's `unified` mount has no controllers, so it is
//! v1 for stats). A container's directory is its `cgroup_path` under the mount, less
//! the mount's root when the hierarchy is mounted from a subtree (cgroup namespaces).
//! systemd-driver paths (`slice:prefix:name`) are not supported.
//!
//! What is read, as Docker computes it:
//! - CPU: v1 `cpuacct.usage` (ns), v2 `cpu.stat` `usage_usec`; the percentage is the
//!   delta of two samples over the wall time between them (100% = one CPU).
//! - Memory: v1 `memory.usage_in_bytes` less `memory.stat` `total_inactive_file`, limit
//!   `memory.limit_in_bytes`; v2 `memory.current` less `inactive_file`, limit
//!   `memory.max`. Page cache that can be dropped is not counted as used.
//! - Processes: `pids.current`, `pids.max` (both versions).
//!
//! Every parser is pure over a root path, so the unit tests run against recorded trees
//! under `testdata/cgroup/{v1,v2}`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// v1 reports "no limit" as the largest page-aligned counter (`PAGE_COUNTER_MAX *
/// PAGE_SIZE`, 0x7FFFFFFFFFFFF000 with 4 KiB pages; a little less with 64 KiB pages).
/// Anything at or above 2^62 bytes is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The standard mount point of the cgroup filesystem.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Why a cgroup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("no cgroup directory {}", path.display())]
    Missing { path: PathBuf },
}

/// Which cgroup version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// v2 when the root of the cgroup filesystem is the unified hierarchy.
pub fn detect_version(cgroup_root: &Path) -> Version {
    if cgroup_root.join("cgroup.controllers").is_file() {
        Version::V2
    } else {
        Version::V1
    }
}

/// One cgroup mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub version: Version,
    pub mount_point: PathBuf,
    /// The hierarchy path mounted there (`/` unless a subtree is).
    pub root: String,
    /// v1 controllers (`memory`, `cpuacct`, …); empty for v2.
    pub controllers: Vec<String>,
}

/// The cgroup mounts listed in a mountinfo text (`proc(5)`).
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let _source = post.next()?;
            let super_opts = post.next().unwrap_or("");
            let version = match fstype {
                "cgroup" => Version::V1,
                "cgroup2" => Version::V2,
                _ => return None,
            };
            let controllers = match version {
                Version::V1 => super_opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(str::to_string)
                    .collect(),
                Version::V2 => Vec::new(),
            };
            Some(CgroupMount {
                version,
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                root: unescape(pre.get(3)?),
                controllers,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// After an instance's cgroup went (runc and crun remove the leaf on delete), removes
/// its per-state-directory parent (`/berth/<hash>` of `/berth/<hash>/<id>`, see
/// `runtime::render::cgroups_path`) from each hierarchy under `cgroup_root` when no
/// cgroup is left in it, so state directories that come and go (tests, re-installs)
/// leave nothing behind. `rmdir` fails on a cgroup that still has children, so a
/// parent in use stays; records of earlier releases (`/berth/<id>`) have no such parent.
/// Returns the directories removed.
pub fn remove_empty_parent(cgroup_root: &Path, cgroup_path: &str) -> Vec<PathBuf> {
    let rel = Path::new(cgroup_path.trim_start_matches('/'));
    let Some(parent) = rel.parent() else {
        return Vec::new();
    };
    if parent.components().count() < 2 {
        return Vec::new();
    }
    let mut hierarchies = vec![cgroup_root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(cgroup_root) {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    hierarchies
        .into_iter()
        .map(|h| h.join(parent))
        .filter(|d| d.is_dir() && !d.join(rel.file_name().unwrap_or_default()).exists())
        .filter(|d| std::fs::remove_dir(d).is_ok())
        .collect()
}

/// Where the hierarchies a stats reader needs are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Controller name → mount.
    V1(BTreeMap<String, CgroupMount>),
    /// The unified hierarchy's mount point and mounted root.
    V2 { mount_point: PathBuf, root: String },
}

impl Layout {
    /// This host's layout.
    pub fn host() -> Result<Layout, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Layout::from_mounts(
            detect_version(Path::new(CGROUP_ROOT)),
            &parse_mountinfo(&text),
            Path::new(CGROUP_ROOT),
        ))
    }

    /// The layout for `version` from the mounts; v2 falls back to `cgroup_root` when
    /// no cgroup2 mount is listed.
    pub fn from_mounts(version: Version, mounts: &[CgroupMount], cgroup_root: &Path) -> Layout {
        match version {
            Version::V2 => {
                let m = mounts
                    .iter()
                    .find(|m| m.version == Version::V2 && m.mount_point == cgroup_root)
                    .or_else(|| mounts.iter().find(|m| m.version == Version::V2));
                Layout::V2 {
                    mount_point: m
                        .map_or_else(|| cgroup_root.to_path_buf(), |m| m.mount_point.clone()),
                    root: m.map_or_else(|| "/".to_string(), |m| m.root.clone()),
                }
            }
            Version::V1 => {
                let mut map = BTreeMap::new();
                for m in mounts.iter().filter(|m| m.version == Version::V1) {
                    for c in &m.controllers {
                        map.entry(c.clone()).or_insert_with(|| m.clone());
                    }
                }
                Layout::V1(map)
            }
        }
    }

    /// The same layout with every mount point moved under `prefix` (recorded trees).
    #[cfg(test)]
    pub fn rebased(self, prefix: &Path) -> Layout {
        let under = |p: &Path| prefix.join(p.strip_prefix("/").unwrap_or(p));
        match self {
            Layout::V1(map) => Layout::V1(
                map.into_iter()
                    .map(|(c, mut m)| {
                        m.mount_point = under(&m.mount_point);
                        (c, m)
                    })
                    .collect(),
            ),
            Layout::V2 { mount_point, root } => Layout::V2 {
                mount_point: under(&mount_point),
                root,
            },
        }
    }

    /// A container's directories, from the `cgroup_path` given to the runtime.
    pub fn locate(&self, cgroup_path: &str) -> CgroupDirs {
        match self {
            Layout::V1(map) => {
                let dir = |c: &str| {
                    map.get(c)
                        .map(|m| join(&m.mount_point, &m.root, cgroup_path))
                };
                CgroupDirs::V1 {
                    memory: dir("memory"),
                    cpuacct: dir("cpuacct"),
                    pids: dir("pids"),
                }
            }
            Layout::V2 { mount_point, root } => {
                CgroupDirs::V2(join(mount_point, root, cgroup_path))
            }
        }
    }
}

/// `cgroup_path` under a mount of the hierarchy subtree `root`.
fn join(mount_point: &Path, root: &str, cgroup_path: &str) -> PathBuf {
    let root = root.trim_end_matches('/');
    let rel = match cgroup_path.strip_prefix(root) {
        Some(rest) if !root.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => cgroup_path,
    };
    mount_point.join(rel.trim_start_matches('/'))
}

/// A container's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirs {
    /// Per controller; `None` when the controller is not mounted.
    V1 {
        memory: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
    V2(PathBuf),
}

/// Memory in use (reclaimable page cache excluded) and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub usage: u64,
    /// `None`: no limit.
    pub limit: Option<u64>,
}

/// Processes in the cgroup and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pids {
    pub current: u64,
    pub limit: Option<u64>,
}

/// One reading of a container's cgroup. A field is `None` when its controller is not
/// available on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Total CPU time used, in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory: Option<Memory>,
    pub pids: Option<Pids>,
}

/// Reads the container's counters.
pub fn read_sample(dirs: &CgroupDirs) -> Result<Sample, CgroupError> {
    match dirs {
        CgroupDirs::V1 {
            memory,
            cpuacct,
            pids,
        } => Ok(Sample {
            cpu_ns: cpuacct
                .as_deref()
                .map(|d| read_u64(&in_dir(d)?.join("cpuacct.usage")))
                .transpose()?,
            memory: memory.as_deref().map(read_memory_v1).transpose()?,
            pids: pids.as_deref().map(read_pids).transpose()?,
        }),
        CgroupDirs::V2(dir) => {
            let dir = in_dir(dir)?;
            let cpu_stat = read_keyed(&dir.join("cpu.stat"))?;
            let usec = key(&cpu_stat, "usage_usec", &dir.join("cpu.stat"))?;
            let current = read_u64(&dir.join("memory.current"))?;
            let stat = read_keyed(&dir.join("memory.stat"))?;
            let inactive = stat.get("inactive_file").copied().unwrap_or(0);
            Ok(Sample {
                cpu_ns: Some(usec.saturating_mul(1000)),
                memory: Some(Memory {
                    usage: current.saturating_sub(inactive),
                    limit: read_max(&dir.join("memory.max"))?,
                }),
                pids: Some(read_pids(dir)?),
            })
        }
    }
}

/// CPU use between two samples as a percentage of one CPU.
pub fn cpu_percent(before_ns: u64, after_ns: u64, elapsed: Duration) -> f64 {
    let wall = elapsed.as_nanos() as f64;
    if wall <= 0.0 {
        return 0.0;
    }
    after_ns.saturating_sub(before_ns) as f64 / wall * 100.0
}

fn in_dir(dir: &Path) -> Result<&Path, CgroupError> {
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(CgroupError::Missing {
            path: dir.to_path_buf(),
        })
    }
}

fn read_memory_v1(dir: &Path) -> Result<Memory, CgroupError> {
    let dir = in_dir(dir)?;
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat = read_keyed(&dir.join("memory.stat"))?;
    let inactive = stat
        .get("total_inactive_file")
        .or_else(|| stat.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    let limit = read_u64(&dir.join("memory.limit_in_bytes"))?;
    Ok(Memory {
        usage: usage.saturating_sub(inactive),
        limit: (limit < V1_UNLIMITED).then_some(limit),
    })
}

fn read_pids(dir: &Path) -> Result<Pids, CgroupError> {
    let dir = in_dir(dir)?;
    Ok(Pids {
        current: read_u64(&dir.join("pids.current"))?,
        limit: read_max(&dir.join("pids.max"))?,
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_err(path: &Path, reason: impl Into<String>) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(&read(path)?).ok_or_else(|| parse_err(path, "expected an unsigned integer"))
}

fn read_max(path: &Path) -> Result<Option<u64>, CgroupError> {
    parse_max(&read(path)?).ok_or_else(|| parse_err(path, "expected an unsigned integer or max"))
}

fn read_keyed(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    parse_keyed(&read(path)?).map_err(|e| parse_err(path, e.to_string()))
}

fn key(map: &BTreeMap<String, u64>, k: &str, path: &Path) -> Result<u64, CgroupError> {
    map.get(k)
        .copied()
        .ok_or_else(|| parse_err(path, format!("no {k} key")))
}

/// A single-value file (`memory.current`, `cpuacct.usage`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A limit file: a number, or `max` for none (`Some(None)`).
pub fn parse_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        t => t.parse().ok().map(Some),
    }
}

/// Why a flat-keyed file does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyedError {
    #[error("line {line}: expected `key value`")]
    Shape { line: usize },
    #[error("line {line}: {key}: expected an unsigned integer")]
    Value { line: usize, key: String },
}

/// A flat-keyed file (`memory.stat`, `cpu.stat`): `key value` lines.
pub fn parse_keyed(text: &str) -> Result<BTreeMap<String, u64>, KeyedError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(k), Some(v), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyedError::Shape { line: i + 1 });
        };
        let v = v.parse().map_err(|_| KeyedError::Value {
            line: i + 1,
            key: k.to_string(),
        })?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
