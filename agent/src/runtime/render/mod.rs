//! Rendering a container's OCI runtime config (`config.json`): a pure function.
//!
//! [`render`] turns the spec model, the image config and facts gathered beforehand
//! (paths, the host's limits, the image's `/etc/passwd`) into an
//! [`oci_spec::runtime::Spec`]. It does no I/O and reads no clock: everything it needs
//! is in [`RenderInput`], so it is golden-tested, and the policy can check the rendered
//! config — what runc actually runs — rather than the spec alone.
//!
//! The result follows Docker's defaults and merge rules (see `research/security.md` §2),
//! split by concept: [`process`] (command, env, user, capabilities, rlimits),
//! [`mounts`], [`linux`] (namespaces, devices, cgroup resources, masked paths, sysctls)
//! and [`seccomp`]. Use [`to_json`] to write the config: it orders the sets and maps
//! that `oci-spec` keeps in hash containers, so the same input always gives the same
//! bytes.

pub mod linux;
pub mod mounts;
pub mod process;
pub mod seccomp;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod runc_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{RootBuilder, Spec, SpecBuilder};

use berth_spec::Container;

use crate::runtime::spec_hash::SpecHash;
use crate::runtime::user::UserError;

/// The OCI runtime-spec version the config declares (what runc 1.1 and crun support).
pub const OCI_VERSION: &str = "1.0.2";

/// Annotation keys berth sets, so `runtime::scan` can tell its containers apart.
pub const ANNOTATION_CONTAINER: &str = "io.berth.container";
pub const ANNOTATION_INSTANCE: &str = "io.berth.instance";
pub const ANNOTATION_SPEC_HASH: &str = "io.berth.spec-hash";
pub const ANNOTATION_IMAGE: &str = "io.berth.image";

/// Hex digits of the state directory's hash in a cgroup path: 48 bits, so two state
/// directories on one host collide with odds of about one in 10^14.
pub const CGROUP_HASH_LEN: usize = 12;

/// The cgroup of an instance, for the cgroupfs driver:
/// `/berth/<12 hex digits of the state directory's hash>/<instance id>`.
///
/// The instance id derives from the spec alone, so two state directories applying the
/// same spec (two agents, tests side by side) have the same ids; the state directory's
/// hash, as bridge names use it (`network::naming::state_hash`), keeps their cgroups
/// apart. Absolute, so it sits at the root of each hierarchy
/// (`/sys/fs/cgroup/<controller>/berth/…` on v1) and not under the agent's own cgroup,
/// which on cgroup v2 holds processes and so could not have children with controllers
/// enabled. Records keep the path they were created with (`ContainerRecord.cgroup_path`),
/// so instances of earlier releases (`/berth/<id>`) are still found.
pub fn cgroups_path(state_dir: &Path, instance_id: &str) -> String {
    let hash = crate::network::naming::state_hash(state_dir, None);
    format!("/berth/{}/{instance_id}", &hash[..CGROUP_HASH_LEN])
}

/// A device node on the host, as `stat` saw it (gathered by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The path on the host (`/dev/ttyUSB0`).
    pub path: String,
    pub kind: DeviceKind,
    pub major: i64,
    pub minor: i64,
    /// Permission bits of the node (`0o660`).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Character or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// Facts about the host, gathered once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// The CPU architecture, as Rust names it (`std::env::consts::ARCH`: `x86_64`,
    /// `aarch64`, `arm`, ...); it selects the seccomp architectures and rules.
    pub arch: String,
    /// The running kernel's `(version, major revision)`, for seccomp `minKernel` rules.
    pub kernel: (u32, u32),
    /// The host's hard limits by ulimit name (`nofile`, `nproc`, ...); a rendered
    /// rlimit is never above them (DESIGN.md §8). Absent names are not clamped.
    pub rlimit_hard: BTreeMap<String, u64>,
    /// Whether the unified cgroup v2 hierarchy is in use (else v1 or hybrid).
    pub cgroup_v2: bool,
    /// Whether a swap limit can be set (v1: `memory.memsw.*` exists; v2: `memory.swap.max`).
    pub swap_limit: bool,
    /// Paths masked in addition to Docker's fixed list: the
    /// `/sys/devices/system/cpu/cpu<N>/thermal_throttle` directories that exist.
    pub extra_masked_paths: Vec<String>,
    /// Every device node of the host, for privileged containers (Docker gives them all).
    pub all_devices: Vec<HostDevice>,
}

/// Host paths prepared for one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstancePaths {
    /// The unpacked (overlay-mounted) root filesystem.
    pub rootfs: PathBuf,
    /// Named volume directories, by volume name.
    pub volumes: BTreeMap<String, PathBuf>,
    /// Each bind's staged mount point (`storage::binds`), by its index in the spec's
    /// `mounts`: the runtime mounts what berth checked, never the spec's path itself.
    pub binds: BTreeMap<usize, PathBuf>,
    /// The per-instance tmpfs holding decrypted secrets, bound to `/run/secrets`.
    pub secrets_dir: Option<PathBuf>,
    /// Files bound to `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    /// The network namespace berth set up (bridge mode); unused in host and none mode.
    pub netns: Option<PathBuf>,
}

/// Everything [`render`] needs.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub container: &'a Container,
    /// The image's config blob.
    pub image: &'a ImageConfiguration,
    /// The container's spec hash; the instance id derives from it.
    pub spec_hash: &'a SpecHash,
    pub paths: &'a InstancePaths,
    /// The state directory, whose hash goes into the cgroup path ([`cgroups_path`]).
    pub state_dir: &'a Path,
    pub host: &'a HostInfo,
    /// The image's `/etc/passwd` and `/etc/group`, when the rootfs has them.
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
    /// The profile file's text for `seccomp = "<file>"` (Docker's JSON format).
    pub seccomp_profile: Option<&'a str>,
    /// The host devices named in the spec's `devices`, stat-ed by the caller.
    pub devices: &'a [HostDevice],
}

impl RenderInput<'_> {
    pub fn instance_id(&self) -> String {
        self.spec_hash.instance_id(&self.container.name)
    }
}

/// Why a config cannot be rendered. Each names the container.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("container `{container}`: cannot resolve its user in image `{image}`")]
    User {
        container: String,
        image: String,
        #[source]
        source: UserError,
    },
    #[error(
        "container `{container}`: no command to run: neither the spec nor image `{image}` sets an entrypoint or command"
    )]
    NoCommand { container: String, image: String },
    #[error("container `{container}`: unknown capability `{capability}`")]
    Capability {
        container: String,
        capability: String,
    },
    #[error("container `{container}`: unknown ulimit `{name}`")]
    Ulimit { container: String, name: String },
    #[error("container `{container}`: sysctl `{name}` {reason}")]
    Sysctl {
        container: String,
        name: String,
        reason: &'static str,
    },
    #[error("container `{container}`: {what} was not prepared")]
    Missing { container: String, what: String },
    #[error("container `{container}`: seccomp profile `{profile}`: {reason}")]
    Seccomp {
        container: String,
        profile: String,
        reason: String,
    },
    #[error("container `{container}`: cannot build the OCI config")]
    Oci {
        container: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

impl RenderError {
    fn missing(c: &Container, what: impl Into<String>) -> RenderError {
        RenderError::Missing {
            container: c.name.clone(),
            what: what.into(),
        }
    }
}

/// Maps builder errors (which only arise from missing required fields, a bug here).
pub(crate) fn oci_err(c: &Container) -> impl Fn(oci_spec::OciSpecError) -> RenderError + '_ {
    move |source| RenderError::Oci {
        container: c.name.clone(),
        source,
    }
}

/// Renders the OCI runtime config of one instance.
pub fn render(input: &RenderInput<'_>) -> Result<Spec, RenderError> {
    let c = input.container;
    let instance_id = input.instance_id();
    let process = process::render(input)?;
    let caps = process::capability_names(c)?;
    let mounts = mounts::render(input)?;
    let linux = linux::render(input, &instance_id, &caps)?;

    let annotations: HashMap<String, String> = [
        (ANNOTATION_CONTAINER, c.name.clone()),
        (ANNOTATION_INSTANCE, instance_id.clone()),
        (ANNOTATION_SPEC_HASH, input.spec_hash.to_string()),
        (ANNOTATION_IMAGE, c.image.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(input.paths.rootfs.clone())
                .readonly(c.read_only)
                .build()
                .map_err(oci_err(c))?,
        )
        .hostname(c.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(oci_err(c))
}

/// Serialises a config as pretty JSON with every object's keys sorted and the
/// capability sets sorted, so equal configs are equal bytes (oci-spec keeps those in
/// hash containers, whose order changes from run to run).
pub fn to_json(spec: &Spec) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(spec)?;
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(|v| v.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&sorted(value))?;
    text.push('\n');
    Ok(text)
}

/// Rebuilds objects with sorted keys (whether or not serde_json preserves order).
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(list) => Value::Array(list.into_iter().map(sorted).collect()),
        other => other,
    }
}
