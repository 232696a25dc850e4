//! Where the shims live: `/berth/shims`, a cgroup of its own at the root of every
//! mounted hierarchy (cgroup v1 controllers, named ones such as `name=systemd`, and the
//! unified or cgroup2 one), outside the agent's cgroups.
//!
//! A service manager stops a daemon by killing every process in its cgroups (systemd's
//! `KillMode=control-group` and `mixed`, on `systemctl restart` or after a crash). The
//! containers already run in cgroups of their own (`/berth/<hash>/<id>`,
//! `runtime::render::cgroups_path`), but a shim forked by a pass starts in the agent's
//! cgroups, and its runtime's `create` with it. So the agent makes `/berth/shims` in
//! each hierarchy and hands the shim each one's `cgroup.procs` (`--cgroup-procs`); the
//! shim's daemon writes its pid there before it does anything else, and the runtime and
//! the container's init start from there.
//!
//! Why this path: `/berth` holds no process itself (the containers are in
//! `/berth/<hash>/<id>`, the shims in `/berth/shims`, both leaves), which cgroup v2's
//! rule that only leaves hold processes when controllers are enabled needs; `shims` is
//! never a state directory's hash (hex), so [`super::cgroup::remove_empty_parent`],
//! which removes `/berth/<hash>` once empty, never touches it. One shims cgroup serves
//! every state directory on the host; it is made once and left in place (an empty
//! cgroup costs nothing). The shims carry no limits: their controllers' values are
//! the root's (a new v1 `cpuset` cgroup is given its parent's CPUs and memory nodes,
//! without which no process can join it).
//!
//! A hierarchy where the cgroup cannot be made is a warning, never an error: a host
//! without cgroup write access still runs containers, only without this protection.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The shims' cgroup, relative to each hierarchy's root (its mount point).
pub const SHIMS: &str = "berth/shims";

/// The mount point of each cgroup hierarchy in a mountinfo text, once per hierarchy (a
/// hierarchy mounted twice is the same device, listed once).
pub fn hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some(m) = super::cgroup::parse_mountinfo(line).into_iter().next() else {
            continue;
        };
        let device = line.split(' ').nth(2).unwrap_or_default().to_string();
        if !seen.contains(&device) {
            seen.push(device);
            out.push(m.mount_point);
        }
    }
    out
}

/// Makes `<mount point>/berth/shims` (and `berth`) when missing, and returns its
/// `cgroup.procs`.
pub fn ensure(mount_point: &Path) -> io::Result<PathBuf> {
    let mut dir = mount_point.to_path_buf();
    for part in Path::new(SHIMS).components() {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        inherit_cpuset(&parent, &dir)?;
    }
    let procs = dir.join("cgroup.procs");
    if procs.is_file() {
        Ok(procs)
    } else {
        Err(io::Error::other(format!(
            "{} is not a cgroup",
            dir.display()
        )))
    }
}

/// cgroup v1's `cpuset`: a new cgroup has no CPUs and no memory nodes (unless its
/// parent has `cgroup.clone_children`), and no process can join it until it has
/// some: it gets its parent's, as runc does for the containers'.
/// cgroup v2 (a `cgroup.controllers` file in every cgroup) needs nothing: an empty
/// cpuset there means the parent's, and its root has no `cpuset.cpus` at all.
fn inherit_cpuset(parent: &Path, dir: &Path) -> io::Result<()> {
    if dir.join("cgroup.controllers").exists() {
        return Ok(());
    }
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        let Ok(value) = std::fs::read_to_string(&own) else {
            continue;
        };
        if value.trim().is_empty() {
            let Ok(theirs) = std::fs::read_to_string(parent.join(file)) else {
                continue;
            };
            std::fs::write(&own, theirs.trim())?;
        }
    }
    Ok(())
}

/// The `cgroup.procs` of the shims' cgroup in every hierarchy of this host, made on
/// first use (once per process); a hierarchy where it cannot be made is warned about
/// then, and left out.
pub fn procs() -> &'static [PathBuf] {
    static PROCS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    PROCS.get_or_init(|| {
        let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/self/mountinfo: the shims stay in the agent's cgroups");
                return Vec::new();
            }
        };
        hierarchies(&mountinfo)
            .into_iter()
            .filter_map(|mount| match ensure(&mount) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(hierarchy = %mount.display(), error = %e, "cannot make the shims' cgroup /{SHIMS}: shims stay in the agent's cgroup of this hierarchy, and die with it");
                    None
                }
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(version: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/runtime/testdata/cgroup")
            .join(version)
            .join("mountinfo");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn every_hierarchy_once_named_and_unified_ones_included() {
        let v1 = hierarchies(&recorded("v1"));
        let names: Vec<String> = v1
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "unified",
                "systemd",
                "memory",
                "cpu,cpuacct",
                "pids",
                "blkio",
                "net_cls,net_prio",
                "freezer",
                "devices"
            ]
        );
        assert_eq!(
            hierarchies(&recorded("v2")),
            [PathBuf::from("/sys/fs/cgroup")]
        );
        // The same hierarchy mounted again (a bind mount) is one.
        let twice = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                     90 80 0:29 / /mnt/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(hierarchies(twice), [PathBuf::from("/sys/fs/cgroup/cpu")]);
    }

    #[test]
    fn on_cgroup_v2_an_empty_cpuset_is_left_to_mean_the_parents() {
        // runc enables cpuset in the root's and /berth's subtree_control: /berth and
        // /berth/shims show an empty cpuset.cpus, and the root has none.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu\n").unwrap();
        std::fs::write(root.path().join("cpuset.cpus.effective"), "0-1\n").unwrap();
        let shims = root.path().join("berth/shims");
        std::fs::create_dir_all(&shims).unwrap();
        for d in [root.path().join("berth"), shims.clone()] {
            std::fs::write(d.join("cgroup.controllers"), "cpuset\n").unwrap();
            std::fs::write(d.join("cpuset.cpus"), "\n").unwrap();
        }
        std::fs::write(shims.join("cgroup.procs"), "").unwrap();
        assert_eq!(ensure(root.path()).unwrap(), shims.join("cgroup.procs"));
        assert_eq!(
            std::fs::read_to_string(shims.join("cpuset.cpus")).unwrap(),
            "\n"
        );
    }

    #[test]
    fn ensure_makes_the_path_and_gives_a_new_cpuset_its_parents_cpus() {
        // A directory standing in for a hierarchy: cgroupfs makes the files itself, so
        // here they are written first (an empty cpuset, as the kernel makes one).
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(root.path().join("cpuset.mems"), "0\n").unwrap();
        let berth = root.path().join("berth");
        std::fs::create_dir(&berth).unwrap();
        std::fs::write(berth.join("cpuset.cpus"), "\n").unwrap();
        std::fs::write(berth.join("cpuset.mems"), "").unwrap();
        let err = ensure(root.path()).unwrap_err();
        assert!(err.to_string().contains("is not a cgroup"), "{err}");
        assert_eq!(
            std::fs::read_to_string(berth.join("cpuset.cpus")).unwrap(),
            "0-1"
        );
        assert_eq!(
            std::fs::read_to_string(berth.join("cpuset.mems")).unwrap(),
            "0"
        );
        let shims = berth.join("shims");
        assert!(shims.is_dir());
        std::fs::write(shims.join("cgroup.procs"), "").unwrap();
        assert_eq!(ensure(root.path()).unwrap(), shims.join("cgroup.procs"));
    }

    #[test]
    fn the_shims_cgroup_is_never_taken_for_a_state_directorys_parent() {
        let root = tempfile::tempdir().unwrap();
        let shims = root.path().join(SHIMS);
        std::fs::create_dir_all(&shims).unwrap();
        let hash = root.path().join("berth/0123abcd");
        std::fs::create_dir_all(&hash).unwrap();
        let removed =
            super::super::cgroup::remove_empty_parent(root.path(), "/berth/0123abcd/web-1");
        assert_eq!(removed, [hash]);
        assert!(shims.is_dir());
    }
}
