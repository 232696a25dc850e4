//! The container process: command line, environment, working directory, user,
//! capabilities, rlimits and `noNewPrivileges`, merged from the spec and the image
//! config by Docker's rules.
//!
//! - Command: the spec's `entrypoint` replaces the image's Entrypoint *and* drops the
//!   image's Cmd; the spec's `command` replaces Cmd. An empty `entrypoint = []` clears
//!   the image's, like `docker run --entrypoint ""`. The process runs
//!   `entrypoint ++ cmd`, which must not be empty.
//! - Env: `PATH` (Docker's default) and `HOSTNAME` first, then the image's variables,
//!   then the spec's; a later value replaces an earlier one with the same key in place.
//! - Workdir: the spec's, else the image's `WorkingDir` (made absolute), else `/`.
//! - User: the spec's, else the image's `User`, else root; resolved by [`crate::runtime::user`].
//! - Capabilities: Docker's default set, minus `cap_drop`, plus `cap_add` (`ALL` in
//!   either means every capability); `privileged` gives all. They go to the bounding,
//!   effective and permitted sets; inheritable and ambient stay empty, as Docker does.
//! - Rlimits: the spec's `ulimits`, clamped to the host's hard limits.

use std::collections::BTreeSet;

use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilitiesBuilder, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Process, ProcessBuilder, UserBuilder,
};

use berth_spec::Container;

use super::{RenderError, RenderInput, oci_err};
use crate::runtime::user::{self, ResolvedUser};

/// `PATH` when neither the image nor the spec sets one (Docker's `DefaultPathEnv`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (`moby/moby:daemon/pkg/oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// RLIM_INFINITY, how the OCI config spells "unlimited".
const RLIM_INFINITY: u64 = u64::MAX;

pub(super) fn render(input: &RenderInput<'_>) -> Result<Process, RenderError> {
    let c = input.container;
    let image = input.image.config().as_ref();
    let resolved = resolve_user(input)?;
    let caps: Capabilities = capability_names(c)?
        .iter()
        .map(|name| to_capability(c, name))
        .collect::<Result<_, _>>()?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(oci_err(c))?;
    let mut user = UserBuilder::default()
        .uid(resolved.uid)
        .gid(resolved.gid)
        .build()
        .map_err(oci_err(c))?;
    if !resolved.additional_gids.is_empty() {
        user.set_additional_gids(Some(resolved.additional_gids.clone()));
    }

    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(args(c, image)?)
        .env(env(c, image))
        .cwd(workdir(c, image))
        .capabilities(capabilities)
        .no_new_privileges(c.no_new_privileges)
        .build()
        .map_err(oci_err(c))?;
    let rlimits = rlimits(input)?;
    process.set_rlimits((!rlimits.is_empty()).then_some(rlimits));
    Ok(process)
}

/// Resolves the user the container runs as: the spec's `user`, else the image's `User`,
/// else root, against the image's `/etc/passwd` and `/etc/group`.
pub(super) fn resolve_user(input: &RenderInput<'_>) -> Result<ResolvedUser, RenderError> {
    let c = input.container;
    let spec = c.user.as_deref().or_else(|| {
        input
            .image
            .config()
            .as_ref()
            .and_then(|cfg| cfg.user().as_deref())
    });
    user::resolve(spec.unwrap_or(""), input.passwd, input.group).map_err(|source| {
        RenderError::User {
            container: c.name.clone(),
            image: c.image.clone(),
            source,
        }
    })
}

/// The command line: Docker's entrypoint/cmd merge.
pub(super) fn args(c: &Container, image: Option<&ImageConfig>) -> Result<Vec<String>, RenderError> {
    let image_entrypoint = image.and_then(|i| i.entrypoint().clone());
    let image_cmd = image.and_then(|i| i.cmd().clone());
    let (entrypoint, cmd) = match (&c.entrypoint, &c.command) {
        (Some(ep), Some(cmd)) => (ep.clone(), cmd.clone()),
        (Some(ep), None) => (ep.clone(), Vec::new()),
        (None, Some(cmd)) => (image_entrypoint.unwrap_or_default(), cmd.clone()),
        (None, None) => (
            image_entrypoint.unwrap_or_default(),
            image_cmd.unwrap_or_default(),
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(RenderError::NoCommand {
            container: c.name.clone(),
            image: c.image.clone(),
        });
    }
    Ok(args)
}

/// Sets `KEY=value` in `env`, replacing an entry with the same key in place.
fn replace_or_append(env: &mut Vec<String>, entry: String) {
    let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
    let pos = env
        .iter()
        .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
    match pos {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
}

pub(super) fn env(c: &Container, image: Option<&ImageConfig>) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", c.hostname),
    ];
    for e in image.and_then(|i| i.env().as_ref()).into_iter().flatten() {
        replace_or_append(&mut env, e.clone());
    }
    for (k, v) in &c.env {
        replace_or_append(&mut env, format!("{k}={v}"));
    }
    env
}

pub(super) fn workdir(c: &Container, image: Option<&ImageConfig>) -> String {
    let dir = c
        .workdir
        .clone()
        .or_else(|| image.and_then(|i| i.working_dir().clone()))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if dir.starts_with('/') {
        dir
    } else {
        format!("/{dir}")
    }
}

/// Normalises a capability name: upper case, without the `CAP_` prefix.
fn bare(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_string()
}

/// The container's capabilities as bare names (`CHOWN`), sorted.
pub(super) fn capability_names(c: &Container) -> Result<BTreeSet<String>, RenderError> {
    let all = || berth_spec::CAPABILITIES.iter().map(|s| s.to_string());
    if c.privileged {
        return Ok(all().collect());
    }
    let drop: BTreeSet<String> = c.cap_drop.iter().map(|s| bare(s)).collect();
    let add: BTreeSet<String> = c.cap_add.iter().map(|s| bare(s)).collect();
    for name in drop.iter().chain(&add).filter(|n| *n != "ALL") {
        if !berth_spec::CAPABILITIES.contains(&name.as_str()) {
            return Err(RenderError::Capability {
                container: c.name.clone(),
                capability: name.clone(),
            });
        }
    }
    // Docker's TweakCapabilities: `cap_add = ["ALL"]` wins over a dropped ALL.
    let caps = if add.contains("ALL") {
        all().filter(|n| !drop.contains(n)).collect()
    } else if drop.contains("ALL") {
        add
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .filter(|n| !drop.contains(n))
            .chain(add)
            .collect()
    };
    Ok(caps)
}

fn to_capability(c: &Container, name: &str) -> Result<Capability, RenderError> {
    name.parse().map_err(|_| RenderError::Capability {
        container: c.name.clone(),
        capability: name.to_string(),
    })
}

fn rlimit_type(name: &str) -> Option<PosixRlimitType> {
    Some(match name {
        "as" => PosixRlimitType::RlimitAs,
        "core" => PosixRlimitType::RlimitCore,
        "cpu" => PosixRlimitType::RlimitCpu,
        "data" => PosixRlimitType::RlimitData,
        "fsize" => PosixRlimitType::RlimitFsize,
        "locks" => PosixRlimitType::RlimitLocks,
        "memlock" => PosixRlimitType::RlimitMemlock,
        "msgqueue" => PosixRlimitType::RlimitMsgqueue,
        "nice" => PosixRlimitType::RlimitNice,
        "nofile" => PosixRlimitType::RlimitNofile,
        "nproc" => PosixRlimitType::RlimitNproc,
        "rss" => PosixRlimitType::RlimitRss,
        "rtprio" => PosixRlimitType::RlimitRtprio,
        "rttime" => PosixRlimitType::RlimitRttime,
        "sigpending" => PosixRlimitType::RlimitSigpending,
        "stack" => PosixRlimitType::RlimitStack,
        _ => return None,
    })
}

/// Clamps `soft:hard` (`None` = unlimited) to the host's hard limit, keeping soft ≤ hard.
pub(super) fn clamp(soft: Option<u64>, hard: Option<u64>, host_hard: Option<u64>) -> (u64, u64) {
    let cap = host_hard.unwrap_or(RLIM_INFINITY);
    let hard = hard.unwrap_or(RLIM_INFINITY).min(cap);
    let soft = soft.unwrap_or(RLIM_INFINITY).min(hard);
    (soft, hard)
}

fn rlimits(input: &RenderInput<'_>) -> Result<Vec<PosixRlimit>, RenderError> {
    let c = input.container;
    c.ulimits
        .iter()
        .map(|(name, u)| {
            let typ = rlimit_type(name).ok_or_else(|| RenderError::Ulimit {
                container: c.name.clone(),
                name: name.clone(),
            })?;
            let (soft, hard) = clamp(u.soft, u.hard, input.host.rlimit_hard.get(name).copied());
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(soft)
                .hard(hard)
                .build()
                .map_err(oci_err(c))
        })
        .collect()
}
