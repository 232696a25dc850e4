//! Gathering [`HostInfo`], the facts about this host the OCI config renderer needs,
//! once at start-up: the architecture, the kernel version, this process's hard
//! rlimits (a rendered rlimit is never above them: root here lacks
//! `CAP_SYS_RESOURCE`, DESIGN.md §8), the cgroup version, whether swap limits work, the
//! `thermal_throttle` directories Docker masks, and every device node (what a
//! privileged container gets, as Docker gives it).
//!
//! The readers take their root directories as arguments so they are tested over
//! recorded trees; [`gather`] points them at the real `/sys` and `/dev`.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::resource::{Resource, getrlimit};

use crate::runtime::render::{DeviceKind, HostDevice, HostInfo};

/// Why the host cannot be described.
#[derive(Debug, thiserror::Error)]
pub enum HostInfoError {
    #[error("host: cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("host: cannot read the hard limit of `{name}`")]
    Rlimit {
        name: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// The rlimits by the names the spec's `ulimits` use.
const RLIMITS: [(&str, Resource); 16] = [
    ("as", Resource::RLIMIT_AS),
    ("core", Resource::RLIMIT_CORE),
    ("cpu", Resource::RLIMIT_CPU),
    ("data", Resource::RLIMIT_DATA),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("locks", Resource::RLIMIT_LOCKS),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE),
    ("nice", Resource::RLIMIT_NICE),
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("rss", Resource::RLIMIT_RSS),
    ("rtprio", Resource::RLIMIT_RTPRIO),
    ("rttime", Resource::RLIMIT_RTTIME),
    ("sigpending", Resource::RLIMIT_SIGPENDING),
    ("stack", Resource::RLIMIT_STACK),
];

/// Directories under `/dev` that hold no device of the host's own, skipped as
/// containerd's `HostDevices` skips them.
const SKIP_DEV_DIRS: [&str; 7] = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Describes this host.
pub fn gather() -> Result<HostInfo, HostInfoError> {
    let release_path = Path::new("/proc/sys/kernel/osrelease");
    let release = std::fs::read_to_string(release_path).map_err(|source| HostInfoError::Read {
        path: release_path.to_path_buf(),
        source,
    })?;
    let cgroup_v2 = is_cgroup_v2(Path::new("/sys/fs/cgroup"));
    let dev = Path::new("/dev");
    Ok(HostInfo {
        arch: std::env::consts::ARCH.to_string(),
        kernel: parse_kernel(&release),
        rlimit_hard: rlimit_hard()?,
        cgroup_v2,
        swap_limit: swap_limit(Path::new("/sys/fs/cgroup"), cgroup_v2),
        extra_masked_paths: thermal_throttle_paths(Path::new("/sys/devices/system/cpu")),
        all_devices: host_devices(dev).map_err(|source| HostInfoError::Read {
            path: dev.to_path_buf(),
            source,
        })?,
    })
}

/// What [`gather`] found, kept for the life of the process: walking `/dev` on every
/// pass of a long-running agent is wasted work, since devices rarely change.
static CACHE: std::sync::Mutex<Option<std::sync::Arc<HostInfo>>> = std::sync::Mutex::new(None);

/// [`gather`], once per process. Gathered again when `needed` names a device path the
/// cached description does not list (a device plugged in since), so hot-plugged
/// devices reach the containers that ask for them.
pub fn cached(needed: &[&str]) -> Result<std::sync::Arc<HostInfo>, HostInfoError> {
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(info) = cache.as_ref()
        && lists_all(info, needed)
    {
        return Ok(info.clone());
    }
    let info = std::sync::Arc::new(gather()?);
    *cache = Some(info.clone());
    Ok(info)
}

/// Whether every path of `needed` is among `info`'s devices.
fn lists_all(info: &HostInfo, needed: &[&str]) -> bool {
    needed
        .iter()
        .all(|p| info.all_devices.iter().any(|d| d.path == *p))
}

/// `(version, major revision)` from a release string (`6.18.44-cloud-amd64`).
pub fn parse_kernel(release: &str) -> (u32, u32) {
    let mut nums = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// This process's hard limits; unlimited is `u64::MAX`, as the OCI config spells it.
pub fn rlimit_hard() -> Result<BTreeMap<String, u64>, HostInfoError> {
    RLIMITS
        .iter()
        .map(|&(name, res)| {
            let (_, hard) =
                getrlimit(res).map_err(|source| HostInfoError::Rlimit { name, source })?;
            let hard = if hard == nix::sys::resource::RLIM_INFINITY {
                u64::MAX
            } else {
                hard
            };
            Ok((name.to_string(), hard))
        })
        .collect()
}

/// Whether `root` (`/sys/fs/cgroup`) is the unified cgroup v2 hierarchy. A v1 or
/// hybrid host mounts a tmpfs there, with the v2 mount (if any) below it.
pub fn is_cgroup_v2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Whether a memory+swap limit can be set: on v1 the memory controller has
/// `memory.memsw.limit_in_bytes` (swap accounting on); on v2 the root has no
/// interface files, so any first-level cgroup with `memory.swap.max` decides.
pub fn swap_limit(root: &Path, v2: bool) -> bool {
    if !v2 {
        return root.join("memory/memory.memsw.limit_in_bytes").exists();
    }
    std::fs::read_dir(root).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("memory.swap.max").exists())
    })
}

/// The `cpu<N>/thermal_throttle` directories under `cpu_dir`
/// (`/sys/devices/system/cpu`), sorted by CPU number, as container paths.
pub fn thermal_throttle_paths(cpu_dir: &Path) -> Vec<String> {
    let mut cpus: Vec<u32> = std::fs::read_dir(cpu_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
                .filter(|n: &u32| cpu_dir.join(format!("cpu{n}/thermal_throttle")).is_dir())
                .collect()
        })
        .unwrap_or_default();
    cpus.sort_unstable();
    cpus.into_iter()
        .map(|n| format!("/sys/devices/system/cpu/cpu{n}/thermal_throttle"))
        .collect()
}

/// Every character and block device under `dev` (recursively, not following
/// symlinks, skipping [`SKIP_DEV_DIRS`] and `console`), sorted by path. Paths are
/// reported as under `/dev`, where the container sees them.
pub fn host_devices(dev: &Path) -> io::Result<Vec<HostDevice>> {
    let mut out = Vec::new();
    walk_devices(dev, Path::new("/dev"), &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk_devices(dir: &Path, shown: &Path, out: &mut Vec<HostDevice>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue; // gone meanwhile (hotplug)
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !SKIP_DEV_DIRS.iter().any(|s| name == *s) {
                walk_devices(&entry.path(), &shown.join(&name), out)?;
            }
            continue;
        }
        let kind = if ft.is_char_device() {
            DeviceKind::Char
        } else if ft.is_block_device() {
            DeviceKind::Block
        } else {
            continue;
        };
        if name == "console" {
            continue;
        }
        let rdev = meta.rdev();
        out.push(HostDevice {
            path: shown.join(&name).display().to_string(),
            kind,
            major: nix::sys::stat::major(rdev) as i64,
            minor: nix::sys::stat::minor(rdev) as i64,
            file_mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.18.44-cloud-amd64\n"), (6, 18));
        assert_eq!(parse_kernel("5.4.0"), (5, 4));
        assert_eq!(parse_kernel("garbage"), (0, 0));
    }

    #[test]
    fn swap_on_recorded_v1_and_v2_trees() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        assert!(!swap_limit(root, false));
        assert!(!swap_limit(root, true));
        std::fs::create_dir_all(root.join("memory")).unwrap();
        std::fs::write(root.join("memory/memory.memsw.limit_in_bytes"), "").unwrap();
        assert!(swap_limit(root, false));
        std::fs::create_dir_all(root.join("system.slice")).unwrap();
        assert!(!swap_limit(root, true));
        std::fs::write(root.join("system.slice/memory.swap.max"), "max\n").unwrap();
        assert!(swap_limit(root, true));
    }

    #[test]
    fn thermal_throttle_dirs_in_cpu_order() {
        let t = tempfile::tempdir().unwrap();
        for d in [
            "cpu10/thermal_throttle",
            "cpu2/thermal_throttle",
            "cpu3",
            "cpufreq",
        ] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        assert_eq!(
            thermal_throttle_paths(t.path()),
            [
                "/sys/devices/system/cpu/cpu2/thermal_throttle",
                "/sys/devices/system/cpu/cpu10/thermal_throttle"
            ]
        );
    }

    #[test]
    fn the_cache_is_gathered_again_for_a_device_it_does_not_list() {
        let first = cached(&[]).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &cached(&[]).unwrap()));
        let listed: Vec<&str> = first.all_devices.iter().map(|d| d.path.as_str()).collect();
        assert!(std::sync::Arc::ptr_eq(&first, &cached(&listed).unwrap()));
        // A path no walk of /dev lists: gathered again (and again next time).
        let again = cached(&["/dev/berth-not-plugged-in"]).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn this_host() {
        let h = gather().unwrap();
        assert_eq!(h.arch, std::env::consts::ARCH);
        assert!(h.kernel.0 >= 3, "{:?}", h.kernel);
        // getrlimit agrees with /proc/self/limits.
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let hard = line.split_whitespace().nth(4).unwrap();
        let want = if hard == "unlimited" {
            u64::MAX
        } else {
            hard.parse().unwrap()
        };
        assert_eq!(h.rlimit_hard["nofile"], want);
        assert_eq!(h.rlimit_hard.len(), 16);
        assert_eq!(
            h.cgroup_v2,
            Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        );
        let null = h
            .all_devices
            .iter()
            .find(|d| d.path == "/dev/null")
            .unwrap();
        assert_eq!(
            (null.kind, null.major, null.minor),
            (DeviceKind::Char, 1, 3)
        );
        assert!(
            h.all_devices
                .iter()
                .all(|d| !d.path.starts_with("/dev/pts/"))
        );
        assert!(h.all_devices.iter().all(|d| d.path != "/dev/console"));
    }
}
