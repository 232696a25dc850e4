//! The `linux` section: namespaces, devices and the device cgroup, cgroup resources,
//! masked and read-only paths, sysctls, the cgroup path and seccomp.
//!
//! Decisions, following Docker unless said otherwise:
//! - Namespaces: pid, ipc, uts, mount, and network — joined at berth's netns path in
//!   bridge mode, absent (the host's) in host mode, and fresh (loopback only) in
//!   `none` mode. On cgroup v2 the container also gets a cgroup namespace, Docker's
//!   default there. The UTS namespace is always private, so the hostname is the spec's
//!   even in host network mode (where Docker would show the host's).
//! - Devices: runc always creates `/dev/null`, `zero`, `full`, `random`, `urandom`,
//!   `tty`, `console` and `ptmx`; the device cgroup denies everything and then allows
//!   those (plus `/dev/pts/*`) and the spec's devices with their permissions. A
//!   privileged container gets every host device and an allow-all device cgroup.
//! - Resources: memory limit with swap equal to it (no swap beyond the memory limit,
//!   when the host can limit swap at all), CPU quota over a 100 ms period, pids limit.
//! - Sysctls: only namespaced ones (Docker's list: IPC `kernel.msg*`, `kernel.sem`,
//!   `kernel.shm*`, `fs.mqueue.*`, and `net.*` unless the container shares the host's
//!   network namespace). Whether a sysctl is *safe* is the policy's question.

use std::collections::HashMap;

use oci_spec::runtime::{
    Linux, LinuxBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
};

use berth_spec::Container;
use berth_spec::types::NetworkMode;

use super::{DeviceKind, HostDevice, RenderError, RenderInput, cgroups_path, oci_err, seccomp};

/// CFS period for the CPU quota: 100 ms, Docker's `--cpus` period.
const CPU_PERIOD: u64 = 100_000;

/// Docker's masked paths (`daemon/pkg/oci/defaults.go`), before the per-CPU
/// `thermal_throttle` directories that the host adds.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Docker's read-only `/proc` paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device cgroup allow rules for the devices every container has:
/// `(major, minor, what)` of character devices, `None` minor meaning all.
const DEFAULT_DEVICE_RULES: &[(i64, Option<i64>, &str)] = &[
    (1, Some(3), "null"),
    (1, Some(5), "zero"),
    (1, Some(7), "full"),
    (1, Some(8), "random"),
    (1, Some(9), "urandom"),
    (5, Some(0), "tty"),
    (5, Some(1), "console"),
    (5, Some(2), "ptmx"),
    (136, None, "pts"),
];

/// IPC sysctls that are namespaced (Docker's `ValidateSysctl`).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

pub(super) fn render(
    input: &RenderInput<'_>,
    instance_id: &str,
    caps: &std::collections::BTreeSet<String>,
) -> Result<Linux, RenderError> {
    let c = input.container;
    let (devices, device_rules) = devices(input)?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input)?)
        .devices(devices)
        .resources(resources(input, device_rules)?)
        .cgroups_path(cgroups_path(input.state_dir, instance_id))
        .build()
        .map_err(oci_err(c))?;
    let sysctls = sysctls(c)?;
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));
    if c.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        let masked = MASKED_PATHS
            .iter()
            .map(|p| p.to_string())
            .chain(input.host.extra_masked_paths.iter().cloned())
            .collect();
        linux.set_masked_paths(Some(masked));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()));
    }
    linux.set_seccomp(seccomp::render(input, caps)?);
    Ok(linux)
}

fn namespace(
    c: &Container,
    typ: LinuxNamespaceType,
    path: Option<&std::path::Path>,
) -> Result<LinuxNamespace, RenderError> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    let b = match path {
        Some(p) => b.path(p),
        None => b,
    };
    b.build().map_err(oci_err(c))
}

fn namespaces(input: &RenderInput<'_>) -> Result<Vec<LinuxNamespace>, RenderError> {
    let c = input.container;
    let mut out = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        out.push(namespace(c, typ, None)?);
    }
    match c.network_mode {
        NetworkMode::Bridge => {
            let path = input
                .paths
                .netns
                .as_deref()
                .ok_or_else(|| RenderError::missing(c, "the network namespace"))?;
            out.push(namespace(c, LinuxNamespaceType::Network, Some(path))?);
        }
        NetworkMode::None => out.push(namespace(c, LinuxNamespaceType::Network, None)?),
        NetworkMode::Host => {}
    }
    if input.host.cgroup_v2 {
        out.push(namespace(c, LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(out)
}

fn device_type(kind: DeviceKind) -> LinuxDeviceType {
    match kind {
        DeviceKind::Char => LinuxDeviceType::C,
        DeviceKind::Block => LinuxDeviceType::B,
    }
}

fn device(c: &Container, d: &HostDevice, path: &str) -> Result<LinuxDevice, RenderError> {
    LinuxDeviceBuilder::default()
        .path(path)
        .typ(device_type(d.kind))
        .major(d.major)
        .minor(d.minor)
        .file_mode(d.file_mode)
        .uid(d.uid)
        .gid(d.gid)
        .build()
        .map_err(oci_err(c))
}

fn rule(
    c: &Container,
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, RenderError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access(access);
    if let Some(t) = typ {
        b = b.typ(t);
    }
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().map_err(oci_err(c))
}

type Devices = (Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>);

fn devices(input: &RenderInput<'_>) -> Result<Devices, RenderError> {
    let c = input.container;
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    if c.privileged {
        for d in &input.host.all_devices {
            nodes.push(device(c, d, &d.path)?);
        }
        rules.push(rule(c, true, None, None, None, "rwm")?);
    } else {
        rules.push(rule(c, false, None, None, None, "rwm")?);
        for (major, minor, _) in DEFAULT_DEVICE_RULES {
            rules.push(rule(
                c,
                true,
                Some(LinuxDeviceType::C),
                Some(*major),
                *minor,
                "rwm",
            )?);
        }
    }
    for spec in &c.devices {
        let d = input
            .devices
            .iter()
            .find(|d| d.path == spec.host)
            .ok_or_else(|| RenderError::missing(c, format!("device `{}`", spec.host)))?;
        nodes.retain(|n: &LinuxDevice| n.path().to_str() != Some(spec.container.as_str()));
        nodes.push(device(c, d, &spec.container)?);
        if !c.privileged {
            rules.push(rule(
                c,
                true,
                Some(device_type(d.kind)),
                Some(d.major),
                Some(d.minor),
                &spec.permissions,
            )?);
        }
    }
    Ok((nodes, rules))
}

fn resources(
    input: &RenderInput<'_>,
    device_rules: Vec<LinuxDeviceCgroup>,
) -> Result<oci_spec::runtime::LinuxResources, RenderError> {
    let c = input.container;
    let r = &c.resources;
    let mut b = LinuxResourcesBuilder::default().devices(device_rules);
    if let Some(mem) = r.memory {
        let limit = i64::try_from(mem).unwrap_or(i64::MAX);
        let mut m = LinuxMemoryBuilder::default().limit(limit);
        if input.host.swap_limit {
            m = m.swap(limit);
        }
        b = b.memory(m.build().map_err(oci_err(c))?);
    }
    if let Some(cpus) = r.cpus {
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        b = b.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD)
                .build()
                .map_err(oci_err(c))?,
        );
    }
    if let Some(pids) = r.pids {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(pids)
                .build()
                .map_err(oci_err(c))?,
        );
    }
    b.build().map_err(oci_err(c))
}

/// The `linux.sysctl` map: key to value.
type Sysctls = HashMap<String, String>;

fn sysctls(c: &Container) -> Result<Sysctls, RenderError> {
    let err = |name: &str, reason| RenderError::Sysctl {
        container: c.name.clone(),
        name: name.to_string(),
        reason,
    };
    for name in c.sysctls.keys() {
        if name.starts_with("net.") {
            if c.network_mode == NetworkMode::Host {
                return Err(err(
                    name,
                    "cannot be set with network_mode = \"host\": it would change the host",
                ));
            }
        } else if !(IPC_SYSCTLS.contains(&name.as_str()) || name.starts_with("fs.mqueue.")) {
            return Err(err(
                name,
                "is not namespaced: only net.*, fs.mqueue.* and the IPC kernel.msg*, kernel.sem and kernel.shm* sysctls can be set per container",
            ));
        }
    }
    Ok(c.sysctls
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}
