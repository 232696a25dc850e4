//! The mount list: Docker's default filesystems, then the spec's mounts, then the files
//! berth prepares per instance (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
//! `/run/secrets`).
//!
//! Decisions, following Docker:
//! - Defaults: `/proc`, `/dev` (tmpfs), `/dev/pts`, `/dev/shm` (64 MiB, Docker's
//!   `--shm-size` default), `/dev/mqueue`, `/sys` and `/sys/fs/cgroup` read-only —
//!   writable only for privileged containers.
//! - The spec's mounts are ordered parents first (by path depth, stable), as Docker's
//!   `sortMounts` does, so `/data` is mounted before `/data/cache`. A spec mount on a
//!   default destination (say a tmpfs on `/dev/shm`) replaces the default.
//! - Volumes and binds are `rbind` with private propagation; `read_only` adds `ro`.
//! - A tmpfs gets `nosuid,nodev,noexec,mode=1777` (Docker's `--tmpfs` defaults) and
//!   its `size`.
//! - The network files are read-only when the root filesystem is (as Docker does);
//!   the secrets directory is always read-only, `nosuid,nodev,noexec`.

use oci_spec::runtime::{Mount, MountBuilder};

use berth_spec::{Container, MountSource};

use super::{RenderError, RenderInput, oci_err};

/// `/dev/shm` size: Docker's default `--shm-size` (64 MiB).
const SHM_SIZE: u64 = 64 << 20;

/// Where secrets appear in the container.
pub const SECRETS_TARGET: &str = "/run/secrets";

fn mount(
    c: &Container,
    dest: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, RenderError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci_err(c))
}

fn bind(c: &Container, dest: &str, source: &str, read_only: bool) -> Result<Mount, RenderError> {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    mount(c, dest, "bind", source, &options)
}

fn defaults(c: &Container) -> Result<Vec<Mount>, RenderError> {
    let sys_ro = if c.privileged { "rw" } else { "ro" };
    let shm_size = format!("size={SHM_SIZE}");
    Ok(vec![
        mount(c, "/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            c,
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            c,
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            c,
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_ro],
        )?,
        mount(
            c,
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[sys_ro, "nosuid", "noexec", "nodev"],
        )?,
        mount(
            c,
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            c,
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        )?,
    ])
}

/// Number of components of a clean absolute path (`/` is 0).
fn depth(path: &str) -> usize {
    path.split('/').filter(|p| !p.is_empty()).count()
}

fn spec_mounts(input: &RenderInput<'_>) -> Result<Vec<Mount>, RenderError> {
    let c = input.container;
    let mut ordered: Vec<(usize, &berth_spec::Mount)> = c.mounts.iter().enumerate().collect();
    ordered.sort_by_key(|(_, m)| depth(&m.target));
    ordered
        .into_iter()
        .map(|(i, m)| match &m.source {
            MountSource::Volume { name } => {
                let dir = input.paths.volumes.get(name).ok_or_else(|| {
                    RenderError::missing(c, format!("the directory of volume `{name}`"))
                })?;
                bind(c, &m.target, &dir.to_string_lossy(), m.read_only)
            }
            MountSource::Bind { path } => {
                let staged = input.paths.binds.get(&i).ok_or_else(|| {
                    RenderError::missing(c, format!("the checked mount of bind `{path}`"))
                })?;
                bind(c, &m.target, &staged.to_string_lossy(), m.read_only)
            }
            MountSource::Tmpfs { size } => {
                let mut options = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    "noexec".to_string(),
                    "mode=1777".to_string(),
                ];
                if let Some(size) = size {
                    options.push(format!("size={size}"));
                }
                if m.read_only {
                    options.push("ro".to_string());
                }
                let opts: Vec<&str> = options.iter().map(String::as_str).collect();
                mount(c, &m.target, "tmpfs", "tmpfs", &opts)
            }
        })
        .collect()
}

fn instance_files(input: &RenderInput<'_>) -> Result<Vec<Mount>, RenderError> {
    let c = input.container;
    let p = input.paths;
    let mut out = Vec::new();
    for (dest, path, what) in [
        ("/etc/hostname", &p.hostname, "the hostname file"),
        ("/etc/hosts", &p.hosts, "the hosts file"),
        ("/etc/resolv.conf", &p.resolv_conf, "the resolv.conf file"),
    ] {
        let path = path.as_ref().ok_or_else(|| RenderError::missing(c, what))?;
        out.push(bind(c, dest, &path.to_string_lossy(), c.read_only)?);
    }
    if !c.secrets.is_empty() {
        let dir = p
            .secrets_dir
            .as_ref()
            .ok_or_else(|| RenderError::missing(c, "the secrets directory"))?;
        out.push(mount(
            c,
            SECRETS_TARGET,
            "bind",
            &dir.to_string_lossy(),
            &["rbind", "rprivate", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    Ok(out)
}

pub(super) fn render(input: &RenderInput<'_>) -> Result<Vec<Mount>, RenderError> {
    let user = spec_mounts(input)?;
    let taken = |dest: &std::path::Path| user.iter().any(|m| m.destination() == dest);
    let mut out: Vec<Mount> = defaults(input.container)?
        .into_iter()
        .filter(|m| !taken(m.destination()))
        .collect();
    let files: Vec<Mount> = instance_files(input)?
        .into_iter()
        .filter(|m| !taken(m.destination()))
        .collect();
    out.extend(user);
    out.extend(files);
    Ok(out)
}
