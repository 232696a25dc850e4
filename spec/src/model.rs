//! The validated spec model: what a tree of spec files asks a node to run.
//!
//! Every object keeps where it was defined ([`Origin`]) and where each of its keys was
//! written (`keys`, by dotted path such as `resources.memory` or `mounts[1].bind`), so
//! that later stages — policy findings, plans — can point at the exact line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diag::{Kind, Location};
use crate::reference::Reference;
use crate::types::{
    Cidr, DeviceSpec, ExtraHost, NetworkMode, PortSpec, Restart, Signal, Ulimit, Update,
};

/// Where an object was defined: the location of its name in the table header.
pub type Origin = Location;

/// Everything a spec tree defines, keyed by name (ordered, so output is deterministic).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DesiredState {
    pub containers: BTreeMap<String, Container>,
    pub networks: BTreeMap<String, Network>,
    pub volumes: BTreeMap<String, Volume>,
    pub secrets: BTreeMap<String, Secret>,
    /// The spec files read, relative to the spec root.
    pub files: Vec<String>,
}

impl DesiredState {
    /// Where an object was defined, if it exists.
    pub fn origin(&self, kind: Kind, name: &str) -> Option<&Origin> {
        match kind {
            Kind::Container => self.containers.get(name).map(|c| &c.origin),
            Kind::Network => self.networks.get(name).map(|n| &n.origin),
            Kind::Volume => self.volumes.get(name).map(|v| &v.origin),
            Kind::Secret => self.secrets.get(name).map(|s| &s.origin),
        }
    }
}

/// How a container's seccomp filter is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "file")]
pub enum Seccomp {
    /// Docker's default profile.
    Default,
    /// No filter.
    Unconfined,
    /// A profile file in the repository, relative to the spec root.
    Profile(String),
}

/// Which nodes a container targets: any name glob matches AND all labels match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct NodeSelector {
    /// Globs (`edge-*`); empty means any name.
    pub names: Vec<String>,
    /// Labels that must all be equal; empty means any labels.
    pub labels: BTreeMap<String, String>,
}

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU quota in CPUs (0.5 = half a CPU).
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// What a health check runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthProbe {
    /// A command run inside the container; exit 0 is healthy.
    Exec(Vec<String>),
    /// A TCP connect to this container port.
    Tcp(u16),
    /// An HTTP GET answered with 2xx or 3xx.
    Http(String),
}

/// A container health check (Docker's semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub probe: HealthProbe,
    #[serde(with = "duration_text")]
    pub interval: Duration,
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "duration_text")]
    pub start_period: Duration,
}

/// Health check defaults (Docker's, except a 10 s interval suited to small hosts).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
pub const HEALTH_RETRIES: u32 = 3;
pub const HEALTH_START_PERIOD: Duration = Duration::from_secs(0);
/// What each health key may be: a probe at most every second, one probe at most two
/// minutes (a probe round is cut after five), a start period of at most an hour.
pub const HEALTH_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));
pub const HEALTH_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(120));
pub const HEALTH_START_PERIOD_RANGE: (Duration, Duration) =
    (Duration::ZERO, Duration::from_secs(3600));
/// The longest `update_timeout`: the pass waits for the update's verification.
pub const UPDATE_TIMEOUT_MAX: Duration = Duration::from_secs(1800);

/// The default of `update_timeout`.
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(120);

fn default_update_timeout() -> Duration {
    UPDATE_TIMEOUT
}

fn is_default_update_timeout(d: &Duration) -> bool {
    *d == UPDATE_TIMEOUT
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum MountSource {
    /// A named volume (`[volume.*]`).
    Volume { name: String },
    /// A host path; the node's policy must allow it.
    Bind { path: String },
    /// A tmpfs, with an optional size in bytes.
    Tmpfs { size: Option<u64> },
}

/// One entry of `[[container.*.mounts]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// One entry of `[[container.*.secrets]]`: a file at `/run/secrets/<target>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMount {
    pub name: String,
    pub target: String,
}

/// A container: what to run and how (DESIGN.md §3). Defaults are applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    #[serde(skip)]
    pub origin: Origin,
    /// Where each key was written, by dotted path.
    #[serde(skip)]
    pub keys: BTreeMap<String, Location>,
    /// The image reference as written.
    pub image: String,
    /// The parsed, normalised reference (absent only when the image key was invalid).
    #[serde(skip)]
    pub image_ref: Option<Reference>,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub hostname: String,
    pub restart: Restart,
    pub read_only: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub privileged: bool,
    pub seccomp: Seccomp,
    pub network_mode: NetworkMode,
    /// Networks joined in bridge mode; `["default"]` when none are listed.
    pub networks: Vec<String>,
    pub ports: Vec<PortSpec>,
    pub depends_on: Vec<String>,
    pub stop_signal: Signal,
    #[serde(with = "duration_text")]
    pub stop_timeout: Duration,
    pub labels: BTreeMap<String, String>,
    pub nodes: Option<NodeSelector>,
    pub update: Update,
    /// An update whose new instance is not running (and healthy, with a health check)
    /// by then is rolled back to the last known good instance. Hashed only when not the
    /// default, so that instances created before the key existed keep their ids.
    #[serde(
        with = "duration_text",
        default = "default_update_timeout",
        skip_serializing_if = "is_default_update_timeout"
    )]
    pub update_timeout: Duration,
    pub devices: Vec<DeviceSpec>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub sysctls: BTreeMap<String, String>,
    pub extra_hosts: Vec<ExtraHost>,
    pub resources: Resources,
    pub health: Option<Health>,
    pub mounts: Vec<Mount>,
    pub secrets: Vec<SecretMount>,
}

impl Container {
    /// Location of a key (dotted path), falling back to the object's header.
    pub fn key_location(&self, key: &str) -> &Location {
        self.keys.get(key).unwrap_or(&self.origin)
    }
}

/// The network every bridge-mode container without `networks` joins.
pub const DEFAULT_NETWORK: &str = "default";

/// A bridge network (`[network.*]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(skip)]
    pub origin: Origin,
    /// The subnet; `None` lets the node pick one.
    pub subnet: Option<Cidr>,
}

/// A named volume (`[volume.*]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    #[serde(skip)]
    pub origin: Origin,
}

/// An age-encrypted secret (`[secret.*]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
    #[serde(skip)]
    pub origin: Origin,
    /// The encrypted file, relative to the spec root.
    pub file: String,
}

/// Durations as humantime text (`10s`), the form users write.
mod duration_text {
    use std::time::Duration;

    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::types::format_duration(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::types::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
