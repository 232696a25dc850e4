//! The node's configuration (`/etc/berth/berth.toml`, DESIGN.md §4): who the node is,
//! where its specs come from, its policy and trust, and runtime settings.
//!
//! Parsed with the same strict reader as specs, so a typo is a located error with a
//! suggestion. Every section is optional with the documented defaults; only the agent
//! requires `[source]` ([`NodeConfig::require_source`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use toml::de::DeTable;

use crate::diag::{Diagnostic, Location};
use crate::read::{Reader, Scope, Src};
use crate::types::{Cidr, format_duration, parse_cidr, parse_duration, parse_size};

/// `[node]`: the node's identity for targeting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeSection {
    /// Default: the host name.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What a `[source]` follows: a branch, a tag or a fixed commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GitRef {
    Branch(String),
    Tag(String),
    Commit(String),
}

/// `[source.webhook]`: a receiver of push notifications (GitHub, Gitea/Forgejo,
/// GitLab) that fetches at once when the followed ref moves.
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    /// `address:port` to listen on.
    pub listen: String,
    /// The shared secret (HMAC key, or GitLab's token): required, since a receiver that
    /// takes unsigned requests would let anyone make the node fetch.
    pub secret_file: PathBuf,
}

/// `source.notify`: an MQTT topic announcing new revisions, so a fleet fetches at once
/// instead of at its next poll.
#[derive(Debug, Clone, Serialize)]
pub struct Notify {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub mqtt: String,
    pub topic: String,
    /// A fetch waits a random delay up to this, so a fleet does not fetch all at once.
    pub spread: Duration,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// An extra CA for an `mqtts` broker.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: the client certificate (PEM, with its chain) and its key.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// An MQTT broker's address, from `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broker {
    pub tls: bool,
    /// A name or an IP address (an IPv6 one without its brackets).
    pub host: String,
    pub port: u16,
}

/// Why an `mqtt` URL names no broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("must start with mqtt:// or mqtts://")]
    Scheme,
    #[error("must not hold a user or password (use `username` and `password_file`)")]
    UserInfo,
    #[error("must name a host and port only, with no path")]
    Path,
    #[error("must name a host")]
    Host,
    #[error("has a port that is not a number from 1 to 65535")]
    Port,
}

impl Broker {
    /// Parses `mqtt://host[:port][/]` or `mqtts://host[:port][/]` (ports 1883 and 8883 by
    /// default). User info is refused: a password belongs in a file, not in a URL that
    /// logs and status show.
    pub fn parse(url: &str) -> Result<Broker, BrokerError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(BrokerError::Scheme);
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(BrokerError::UserInfo);
        }
        if authority.contains(['/', '?', '#']) {
            return Err(BrokerError::Path);
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(BrokerError::Host)?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or(BrokerError::Host)?)),
            }
        } else {
            match authority.rsplit_once(':') {
                // An IPv6 address needs its brackets.
                Some((h, _)) if h.contains(':') => return Err(BrokerError::Host),
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains([' ', '[', ']']) {
            return Err(BrokerError::Host);
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or(BrokerError::Port)?,
        };
        Ok(Broker {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// `mqtt[s]://host:port`, as logs and status show it.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Notify {
    /// The broker `mqtt` names (checked when the configuration was read).
    pub fn broker(&self) -> Option<Broker> {
        Broker::parse(&self.mqtt).ok()
    }
}

/// The default of `source.notify.spread`.
pub const DEFAULT_NOTIFY_SPREAD: Duration = Duration::from_secs(2);

/// How a `source.url` is reached, by its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `https://` (or `http://`, for a lab server).
    Https,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh,
    /// `file://` or a local path.
    Local,
}

/// `[source]`: the Git repository holding the specs.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSection {
    pub url: String,
    pub transport: Transport,
    pub git_ref: GitRef,
    /// Sub-directory holding the specs ("" = the repository root).
    pub path: String,
    pub interval: Duration,
    /// The first delay before a failed fetch or pass is tried again; it doubles up to
    /// the interval (fetch) or `runtime.resync` (pass).
    pub retry_backoff: Duration,
    /// Shallow-fetch depth; 0 fetches the full history (local repositories always do).
    pub depth: u32,
    /// https: a file holding `token` or `user:password` on one line.
    pub credentials_file: Option<PathBuf>,
    /// https: an extra CA for a private server.
    pub ca_file: Option<PathBuf>,
    /// ssh: the private key.
    pub ssh_key: Option<PathBuf>,
    /// ssh: the server's host key must be listed here.
    pub known_hosts: Option<PathBuf>,
    /// If set, only commits SSH-signed by these keys are applied.
    pub allowed_signers: Option<PathBuf>,
    /// OpenPGP keys whose signatures on a commit are accepted.
    pub trusted_pgp_keys: Vec<PathBuf>,
    pub webhook: Option<Webhook>,
    pub notify: Option<Notify>,
}

/// The default of `source.depth`.
pub const DEFAULT_DEPTH: u32 = 1;
/// The default of `source.retry_backoff`.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(5);
/// The range `source.retry_backoff` must lie in.
const RETRY_BACKOFF_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// `[agent]` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// Fetch, plan and apply.
    #[default]
    Enforce,
    /// Fetch, plan and report; change nothing.
    Observe,
}

/// `[agent]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentSection {
    pub mode: AgentMode,
}

/// `[policy]` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Error-level violations are not applied.
    #[default]
    Enforce,
    /// Applied and reported.
    Audit,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Audit => "audit",
        }
    }
}

/// What happens to a running container that becomes non-compliant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnRunningViolation {
    /// It keeps running and is reported.
    #[default]
    Report,
    /// It is stopped.
    Stop,
}

/// A waiver: a rule that does not apply to some objects, until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiver {
    pub rule: String,
    /// Container names (globs allowed).
    pub objects: Vec<String>,
    pub reason: String,
    /// `YYYY-MM-DD`; the waiver applies through that day (UTC).
    pub expires: Option<String>,
    #[serde(skip)]
    pub origin: Location,
}

/// What a keyless signature's certificate must name as its subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectMatch {
    /// `subject`: exactly this.
    Exact(String),
    /// `subject_regex`: a match of this regular expression.
    Regex(String),
}

/// `[[policy.trusted_identities]]`: an OIDC issuer and subject whose keyless
/// (Sigstore) signatures are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustedIdentity {
    /// The OIDC issuer, an `https://` URL.
    pub issuer: String,
    pub subject: SubjectMatch,
}

/// `[policy]`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySection {
    /// A shipped profile name or a path to a policy file.
    pub profile: String,
    pub mode: PolicyMode,
    pub trusted_keys: Vec<PathBuf>,
    /// The Sigstore trusted root (JSON): enables keyless verification.
    pub trusted_root: Option<PathBuf>,
    pub trusted_identities: Vec<TrustedIdentity>,
    pub on_running_violation: OnRunningViolation,
    pub waivers: Vec<Waiver>,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            profile: "restricted".into(),
            mode: PolicyMode::Enforce,
            trusted_keys: Vec::new(),
            trusted_root: None,
            trusted_identities: Vec::new(),
            on_running_violation: OnRunningViolation::Report,
            waivers: Vec::new(),
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSection {
    /// "auto", "runc", "crun", or a path to a runtime binary.
    pub oci_runtime: String,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub default_subnet: Cidr,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Where `berth-shim` is; default: next to the `berth` executable.
    pub shim_path: Option<PathBuf>,
    /// How many plan steps (creates, starts, stops, removals of different containers)
    /// may run at once; 1 runs the plan strictly in order.
    pub parallel: usize,
    /// A registry request must connect and receive its response headers within this.
    pub pull_connect_timeout: Duration,
    /// A blob download that receives no byte for this long fails; small documents
    /// (manifests, configs, tokens) must arrive whole within it.
    pub pull_idle_timeout: Duration,
    /// The agent's periodic pass, whatever else wakes it.
    pub resync: Duration,
    /// Unused images, snapshots, instances and revisions are removed after this.
    pub gc_grace: Duration,
    /// Crash-loop backoff: the delay before restarting a container after its first
    /// exit; it doubles with each exit after a short run.
    pub restart_backoff: Duration,
    /// Crash-loop backoff: the longest delay; a run of twice this resets the backoff.
    pub restart_backoff_max: Duration,
}

/// The default of `runtime.parallel`.
pub const DEFAULT_PARALLEL: usize = 4;

/// The default of `runtime.pull_connect_timeout`.
pub const DEFAULT_PULL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of `runtime.pull_idle_timeout`.
pub const DEFAULT_PULL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The range both pull timeouts must lie in.
const PULL_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// The default of `runtime.resync`.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(60);
/// The default of `runtime.gc_grace`.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// The default of `runtime.restart_backoff` (kubelet's initial crash-loop delay).
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// The default of `runtime.restart_backoff_max` (kubelet's `MaxContainerBackOff`).
pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// The range `runtime.restart_backoff` must lie in (the planner counts whole seconds).
const RESTART_BACKOFF_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));
/// The range `runtime.restart_backoff_max` must lie in.
const RESTART_BACKOFF_MAX_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));

/// The default subnet of the `default` network.
pub const DEFAULT_SUBNET: Cidr = Cidr {
    addr: std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 88, 0, 0)),
    prefix: 16,
};

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            oci_runtime: "auto".into(),
            state_dir: PathBuf::from("/var/lib/berth"),
            run_dir: PathBuf::from("/run/berth"),
            default_subnet: DEFAULT_SUBNET,
            log_max_size: 10 << 20,
            log_max_files: 3,
            shim_path: None,
            parallel: DEFAULT_PARALLEL,
            pull_connect_timeout: DEFAULT_PULL_CONNECT_TIMEOUT,
            pull_idle_timeout: DEFAULT_PULL_IDLE_TIMEOUT,
            resync: DEFAULT_RESYNC,
            gc_grace: DEFAULT_GC_GRACE,
            restart_backoff: DEFAULT_RESTART_BACKOFF,
            restart_backoff_max: DEFAULT_RESTART_BACKOFF_MAX,
        }
    }
}

/// `[registries."host"]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegistrySection {
    pub auth_file: Option<PathBuf>,
    pub mirror: Option<String>,
    pub insecure: bool,
}

/// `[secrets]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SecretsSection {
    /// The node's age X25519 identity file.
    pub identity: Option<PathBuf>,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetrySection {
    /// An `http://` or `https://` OTLP/HTTP collector.
    pub otlp_endpoint: Option<String>,
    /// `address:port` of the Prometheus endpoint.
    pub metrics_listen: Option<String>,
    /// Spans buffered for export; overflow is dropped and counted.
    pub otlp_queue: usize,
}

/// The default of `telemetry.otlp_queue`.
pub const DEFAULT_OTLP_QUEUE: usize = 2048;
/// The largest `telemetry.otlp_queue`. A span is usually a few hundred bytes, at most
/// about 6 KiB (the agent cuts each of its strings at 1 KiB): the default queue holds
/// at most about 12 MiB, the largest one at most about 384 MiB in the worst case
/// (every span with a step's error of 1 KiB or more), which bounds what a dead
/// collector can make the agent hold.
const MAX_OTLP_QUEUE: i64 = 1 << 16;

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            metrics_listen: None,
            otlp_queue: DEFAULT_OTLP_QUEUE,
        }
    }
}

/// The whole node configuration, defaults applied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub agent: AgentSection,
    pub source: Option<SourceSection>,
    pub policy: PolicySection,
    pub runtime: RuntimeSection,
    pub registries: BTreeMap<String, RegistrySection>,
    pub secrets: SecretsSection,
    pub telemetry: TelemetrySection,
    /// Where each key given in the file is (`source.url`, `policy.waiver[0].rule`, …),
    /// for messages about keys that parsed but cannot be used.
    #[serde(skip)]
    pub keys: BTreeMap<String, Location>,
}

const TOP: &[&str] = &[
    "node",
    "agent",
    "source",
    "policy",
    "runtime",
    "registries",
    "secrets",
    "telemetry",
];
const NODE: &[&str] = &["name", "labels"];
const AGENT: &[&str] = &["mode"];
const SOURCE: &[&str] = &[
    "url",
    "branch",
    "tag",
    "commit",
    "path",
    "interval",
    "retry_backoff",
    "depth",
    "credentials_file",
    "ca_file",
    "ssh_key",
    "known_hosts",
    "allowed_signers",
    "trusted_pgp_keys",
    "webhook",
    "notify",
];
const WEBHOOK: &[&str] = &["listen", "secret_file"];
const NOTIFY: &[&str] = &[
    "mqtt",
    "topic",
    "spread",
    "username",
    "password_file",
    "ca_file",
    "client_cert",
    "client_key",
];
const POLICY: &[&str] = &[
    "profile",
    "mode",
    "trusted_keys",
    "trusted_root",
    "trusted_identities",
    "on_running_violation",
    "waiver",
];
const IDENTITY: &[&str] = &["issuer", "subject", "subject_regex"];
const WAIVER: &[&str] = &["rule", "objects", "reason", "expires"];
const RUNTIME: &[&str] = &[
    "oci_runtime",
    "state_dir",
    "run_dir",
    "default_subnet",
    "log_max_size",
    "log_max_files",
    "shim_path",
    "parallel",
    "pull_connect_timeout",
    "pull_idle_timeout",
    "resync",
    "gc_grace",
    "restart_backoff",
    "restart_backoff_max",
];
const REGISTRY: &[&str] = &["auth_file", "mirror", "insecure"];
const SECRETS: &[&str] = &["identity"];
const TELEMETRY: &[&str] = &["otlp_endpoint", "metrics_listen", "otlp_queue"];

impl NodeConfig {
    /// Parses a node configuration; `file` names it in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<NodeConfig, Vec<Diagnostic>> {
        let src = Src::new(file, text);
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let loc = src.loc(e.span().unwrap_or(0..0));
                let msg = e.message().trim().trim_end_matches('.').to_string();
                return Err(vec![Diagnostic::new(
                    &loc,
                    format!("TOML syntax error: {msg}"),
                )]);
            }
        };
        let top = Reader::new(&src, doc.get_ref(), Scope::default(), src.loc(0..0), TOP);
        let mut cfg = NodeConfig::default();
        crate::read::collect_keys(&src, doc.get_ref(), "", &mut cfg.keys);
        if let Some((t, at)) = top.table("node") {
            let r = top.child(t, "node", at, NODE);
            cfg.node.name = r.string("name").map(|(n, _)| n);
            cfg.node.labels = strmap(&r, "labels");
        }
        if let Some((t, at)) = top.table("agent") {
            let r = top.child(t, "agent", at, AGENT);
            if let Some((m, loc)) = r.string("mode") {
                match m.as_str() {
                    "enforce" => cfg.agent.mode = AgentMode::Enforce,
                    "observe" => cfg.agent.mode = AgentMode::Observe,
                    _ => r.value_error(
                        &loc,
                        "mode",
                        format!("invalid agent mode `{m}`: expected `enforce` or `observe`"),
                    ),
                }
            }
        }
        if let Some((t, at)) = top.table("source") {
            cfg.source = source(&top.child(t, "source", at, SOURCE));
        }
        if let Some((t, at)) = top.table("policy") {
            policy(&top.child(t, "policy", at, POLICY), &mut cfg.policy);
        }
        if let Some((t, at)) = top.table("runtime") {
            runtime(&top.child(t, "runtime", at, RUNTIME), &mut cfg.runtime);
        }
        if let Some((t, _)) = top.table("registries") {
            for (k, v) in t.iter() {
                let host: &str = k.get_ref();
                let hloc = src.loc(k.span());
                let toml::de::DeValue::Table(body) = v.get_ref() else {
                    src.push(
                        Diagnostic::new(&hloc, format!("`registries.\"{host}\"` must be a table"))
                            .key(format!("registries.{host}")),
                    );
                    continue;
                };
                let r = Reader::new(
                    &src,
                    body,
                    Scope::default().child("registries").child(host),
                    hloc,
                    REGISTRY,
                );
                cfg.registries.insert(
                    host.to_string(),
                    RegistrySection {
                        auth_file: path(&r, "auth_file"),
                        mirror: r.string("mirror").map(|(m, _)| m),
                        insecure: r.bool("insecure").map(|(b, _)| b).unwrap_or(false),
                    },
                );
            }
        }
        if let Some((t, at)) = top.table("secrets") {
            cfg.secrets.identity = path(&top.child(t, "secrets", at, SECRETS), "identity");
        }
        if let Some((t, at)) = top.table("telemetry") {
            telemetry(
                &top.child(t, "telemetry", at, TELEMETRY),
                &mut cfg.telemetry,
            );
        }
        let mut diags = src.diags.into_inner();
        if !diags.is_empty() {
            crate::diag::sort(&mut diags);
            return Err(diags);
        }
        Ok(cfg)
    }

    /// The agent needs a source: a located error when `[source]` is missing.
    pub fn require_source(&self, file: &str) -> Result<&SourceSection, Diagnostic> {
        self.source.as_ref().ok_or_else(|| {
            Diagnostic::new(
                &Location { file: file.to_string(), line: 1, column: 1 },
                "missing section `[source]`: `berth agent` needs a Git repository to follow (url, branch)",
            )
            .key("source")
        })
    }

    /// The node's identity for targeting: `node.name` (default: the host name) and labels.
    pub fn identity(&self, hostname: impl FnOnce() -> Option<String>) -> crate::NodeIdentity {
        crate::NodeIdentity {
            name: self.node.name.clone().or_else(hostname),
            labels: self.node.labels.clone(),
        }
    }
}

/// Who reads the configuration, for [`NodeConfig::unenforced`]: the agent follows Git
/// and checks images; `berth apply` and `berth plan` read a directory and check images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Agent,
    Apply,
}

/// A security key that is set, but that this build cannot enforce yet. Running without
/// enforcing it would trust what its owner meant to refuse, so the caller refuses to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{key}` is set but this build cannot {cannot} yet; refusing to run rather than not enforce it"
)]
pub struct Unenforced {
    /// The key as written (`source.allowed_signers`).
    pub key: &'static str,
    /// Where it is set, when it came from a file.
    pub at: Option<Location>,
    /// What this build lacks (`verify commit signatures`).
    pub cannot: &'static str,
}

impl Unenforced {
    /// The refusal as a located error (`FILE:LINE:COL: error: …`), as `berth validate`
    /// prints errors.
    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic::new(&self.at.clone().unwrap_or_default(), self.to_string()).key(self.key)
    }
}

/// A key that parsed and is valid but that this build does not act on yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inert {
    /// The key as written (`source.url`, `source.webhook`).
    pub key: String,
    pub at: Option<Location>,
    /// Why it has no effect (`no GitOps daemon in this build`).
    pub why: &'static str,
}

impl fmt::Display for Inert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        write!(
            f,
            "warning: `{}` has no effect in this build: {}",
            self.key, self.why
        )
    }
}

/// A key that is valid but has no effect where it is (`source.ssh_key` with an https
/// URL): `FILE:LINE:COL: warning: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The key as written (`source.ssh_key`).
    pub key: String,
    pub at: Option<Location>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        write!(f, "warning: {}", crate::diag::printable(&self.message))
    }
}

/// A file the configuration names, for checking that it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile<'a> {
    /// The key as written (`source.ssh_key`, `policy.trusted_keys[0]`).
    pub key: String,
    pub at: Option<Location>,
    pub path: &'a Path,
}

/// `n` and the noun, singular or plural: `1 error`, `2 errors`, `1 time`.
pub fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The source keys that belong to one transport: (key, transport, its name).
const TRANSPORT_KEYS: &[(&str, Transport)] = &[
    ("credentials_file", Transport::Https),
    ("ca_file", Transport::Https),
    ("ssh_key", Transport::Ssh),
    ("known_hosts", Transport::Ssh),
];

/// The security keys this build cannot enforce: (key, callers it concerns, what is missing).
/// Remove a row when the code enforcing it lands.
const UNENFORCED: &[(&str, &[Caller], &str)] = &[];

/// The keys this build reads but does not act on: (key or section prefix, why).
/// Remove a row when the code acting on it lands.
const INERT: &[(&str, &str)] = &[];

impl NodeConfig {
    /// The security keys set in this configuration that `caller` would have to enforce
    /// and this build cannot; the caller refuses to run when any is returned.
    pub fn unenforced(&self, caller: Caller) -> Vec<Unenforced> {
        // Whether `key` is set; every key of the (empty) table is enforced today.
        let set = |_key: &str| false;
        UNENFORCED
            .iter()
            .filter(|(key, callers, _)| callers.contains(&caller) && set(key))
            .map(|(key, _, cannot)| Unenforced {
                key,
                at: self.keys.get(*key).cloned(),
                cannot,
            })
            .collect()
    }

    /// Keys that are valid but have no effect where they are: a transport's credentials
    /// given with a URL of another transport, a webhook on a node pinned to a commit.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut out = self.prefix_patterns();
        out.extend(self.metrics_exposed());
        let Some(s) = &self.source else {
            return out;
        };
        let scheme = match s.transport {
            Transport::Https => "an https",
            Transport::Ssh => "an ssh",
            Transport::Local => "a local",
        };
        // Basic credentials over plain http travel in clear.
        let has_password = s.url.split_once("://").is_some_and(|(_, rest)| {
            rest.split('/')
                .next()
                .is_some_and(|auth| auth.contains('@') && auth.contains(':'))
        });
        if s.url.starts_with("http://") && (s.credentials_file.is_some() || has_password) {
            let key = "source.url".to_string();
            out.push(Warning {
                at: self.keys.get(&key).cloned(),
                message: "`source.url` is plain http and credentials are set: they would travel in clear; use https".into(),
                key,
            });
        }
        if let Some(n) = &s.notify {
            let broker = n.broker();
            let loopback = broker.as_ref().is_some_and(|b| {
                b.host == "localhost"
                    || b.host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if n.password_file.is_some() && broker.as_ref().is_some_and(|b| !b.tls) && !loopback {
                let key = "source.notify.password_file".to_string();
                out.push(Warning {
                    at: self.keys.get(&key).cloned(),
                    message: "`source.notify.mqtt` is plain mqtt:// and a password is set: it would travel in clear; use mqtts://".into(),
                    key,
                });
            }
            if let Some(name) = &self.node.name
                && name.contains(['/', '+', '#'])
            {
                let key = "node.name".to_string();
                out.push(Warning {
                    at: self.keys.get(&key).cloned(),
                    message: format!(
                        "`node.name` holds `/`, `+` or `#`, which an MQTT topic level cannot: the node's status goes to `{}/nodes/` with each of them as `_`, where another name may write too",
                        n.topic.trim_end_matches('/')
                    ),
                    key,
                });
            }
        }
        if s.webhook.is_some()
            && let GitRef::Commit(c) = &s.git_ref
        {
            let key = "source.webhook".to_string();
            out.push(Warning {
                at: self.keys.get(&key).cloned(),
                message: format!(
                    "`source.webhook` never makes the node fetch: it is pinned to commit {c} (`source.commit`), which no push moves; follow a branch or tag, or remove the webhook"
                ),
                key,
            });
        }
        out.extend(TRANSPORT_KEYS
            .iter()
            .filter(|(key, want)| *want != s.transport && self.keys.contains_key(&format!("source.{key}")))
            .map(|(key, want)| {
                let key = format!("source.{key}");
                let only = match want {
                    Transport::Ssh => "ssh",
                    _ => "https",
                };
                Warning {
                    at: self.keys.get(&key).cloned(),
                    message: format!(
                        "`{key}` has no effect with {scheme} URL (`source.url`): it is for {only} URLs"
                    ),
                    key,
                }
            })
        );
        out
    }

    /// `telemetry.metrics_listen` on an address other than loopback: whoever reaches it
    /// reads the metrics (no secret, but the node's state) and holds some of its
    /// connections; it wants a firewall that lets only the Prometheus server in.
    fn metrics_exposed(&self) -> Option<Warning> {
        let listen = self.telemetry.metrics_listen.as_deref()?;
        let addr = listen.parse::<std::net::SocketAddr>().ok()?;
        if addr.ip().is_loopback() {
            return None;
        }
        let key = "telemetry.metrics_listen".to_string();
        Some(Warning {
            at: self.keys.get(&key).cloned(),
            message: format!(
                "`telemetry.metrics_listen` `{listen}` is not a loopback address: anyone who reaches it can read the metrics and hold some of its connections; let only the Prometheus server reach it (a firewall), see docs/metrics.md"
            ),
            key,
        })
    }

    /// Each `subject_regex` written as a cosign prefix (`^https://github.com/acme/`):
    /// cosign matches such a pattern anywhere in the subject, berth matches it against
    /// the whole subject, so it trusts no subject longer than itself. Told by the
    /// pattern starting with `^` and ending neither with `$` nor with `.*` or `.+`.
    fn prefix_patterns(&self) -> Vec<Warning> {
        let mut out = Vec::new();
        for (i, id) in self.policy.trusted_identities.iter().enumerate() {
            let SubjectMatch::Regex(pattern) = &id.subject else {
                continue;
            };
            let end = pattern.strip_suffix('?').unwrap_or(pattern);
            let open_end = (end.ends_with('$') && !end.ends_with("\\$"))
                || ((end.ends_with(".*") || end.ends_with(".+"))
                    && !end.ends_with("\\.*")
                    && !end.ends_with("\\.+"));
            if !pattern.starts_with('^') || open_end {
                continue;
            }
            let key = format!("policy.trusted_identities[{i}].subject_regex");
            out.push(Warning {
                at: self.keys.get(&key).cloned(),
                message: format!(
                    "`{key}` `{pattern}` reads like a cosign prefix, but berth matches a pattern against the whole subject (as if it were `^(?:{pattern})$`): it trusts no subject longer than itself; append `.*` to trust every subject that starts so, or better name the workflow and its refs (`…/release.yml@refs/tags/v.+`)"
                ),
                key,
            });
        }
        out
    }

    /// Every file the configuration names, with the key naming it, in file order.
    pub fn files<'a>(&'a self) -> Vec<NamedFile<'a>> {
        let mut out: Vec<(String, &Path)> = Vec::new();
        fn add<'a>(out: &mut Vec<(String, &'a Path)>, key: String, path: &'a Option<PathBuf>) {
            if let Some(p) = path {
                out.push((key, p.as_path()));
            }
        }
        let mut add = |key: String, path: &'a Option<PathBuf>| add(&mut out, key, path);
        if let Some(s) = &self.source {
            add("source.credentials_file".into(), &s.credentials_file);
            add("source.ca_file".into(), &s.ca_file);
            add("source.ssh_key".into(), &s.ssh_key);
            add("source.known_hosts".into(), &s.known_hosts);
            add("source.allowed_signers".into(), &s.allowed_signers);
            if let Some(n) = &s.notify {
                add("source.notify.password_file".into(), &n.password_file);
                add("source.notify.ca_file".into(), &n.ca_file);
                add("source.notify.client_cert".into(), &n.client_cert);
                add("source.notify.client_key".into(), &n.client_key);
            }
        }
        add("policy.trusted_root".into(), &self.policy.trusted_root);
        for (host, r) in &self.registries {
            add(format!("registries.{host}.auth_file"), &r.auth_file);
        }
        add("secrets.identity".into(), &self.secrets.identity);
        if let Some(w) = self.source.as_ref().and_then(|s| s.webhook.as_ref()) {
            out.push(("source.webhook.secret_file".into(), w.secret_file.as_path()));
        }
        let mut out: Vec<NamedFile<'_>> = out
            .into_iter()
            .map(|(key, path)| NamedFile {
                at: self.keys.get(&key).cloned(),
                key,
                path,
            })
            .collect();
        let lists = self
            .source
            .iter()
            .flat_map(|s| {
                s.trusted_pgp_keys
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("source.trusted_pgp_keys[{i}]"), p))
            })
            .chain(
                self.policy
                    .trusted_keys
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("policy.trusted_keys[{i}]"), p)),
            );
        for (key, path) in lists {
            out.push(NamedFile {
                at: self.keys.get(&key).cloned(),
                key,
                path,
            });
        }
        out.sort_by(|a, b| a.at.cmp(&b.at));
        out
    }

    /// The keys given in the file that this build does not act on, in file order;
    /// nested keys are reported once, at their outermost key (`source.webhook`).
    pub fn inert(&self) -> Vec<Inert> {
        let security = |k: &str| UNENFORCED.iter().any(|(u, _, _)| *u == k);
        let mut out: Vec<Inert> = self
            .keys
            .iter()
            .filter(|(k, _)| k.matches('.').count() == 1 && !k.contains('[') && !security(k))
            .filter_map(|(k, at)| {
                let (_, why) = INERT.iter().find(|(p, _)| {
                    if p.ends_with('.') {
                        k.starts_with(p)
                    } else {
                        k == p
                    }
                })?;
                Some(Inert {
                    key: k.clone(),
                    at: Some(at.clone()),
                    why,
                })
            })
            .collect();
        out.sort_by(|a, b| a.at.cmp(&b.at));
        out
    }
}

/// Why `name` is not a branch or tag name git would take (`git check-ref-format`'s
/// rules), or none.
fn bad_ref_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("it holds a space or a control character");
    }
    if name.contains(['~', '^', ':', '?', '*', '[', '\\']) {
        return Some("it holds one of `~ ^ : ? * [ \\`");
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return Some("it holds `..`, `@{` or `//`");
    }
    if name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name
            .split('/')
            .any(|c| c.starts_with('.') || c.ends_with(".lock"))
        || name == "@"
    {
        return Some("it starts or ends a component with `.`, `/`, `-` or `.lock`");
    }
    None
}

fn strmap(r: &Reader<'_, '_, '_>, key: &str) -> BTreeMap<String, String> {
    r.string_map(key, true)
        .map(|m| m.into_iter().map(|(k, (v, _))| (k, v)).collect())
        .unwrap_or_default()
}

fn path(r: &Reader<'_, '_, '_>, key: &str) -> Option<PathBuf> {
    let (p, loc) = r.string(key)?;
    if p.is_empty() {
        r.error(
            &loc,
            key,
            format!("`{}` must not be empty", r.scope.key(key)),
        );
        return None;
    }
    Some(PathBuf::from(p))
}

/// Why `source.url` cannot be used.
#[derive(Debug, thiserror::Error)]
enum UrlError {
    #[error("`source.url` has scheme `{0}`: expected https://, ssh://, file:// or a local path")]
    Scheme(String),
    #[error("`source.url` `{0}` names no host")]
    NoHost(String),
    #[error(
        "`source.url` `{0}` is not an absolute file URL: write `file:///absolute/path` (three slashes), or a plain path (a relative one is relative to the configuration file's directory)"
    )]
    RelativeFile(String),
}

/// How `url` is reached, or why it cannot be: a scheme other than https, http, ssh or
/// file.
fn transport(url: &str) -> Result<Transport, UrlError> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let t = match scheme.to_ascii_lowercase().as_str() {
            "https" | "http" => Transport::Https,
            "ssh" => Transport::Ssh,
            "file" => Transport::Local,
            _ => {
                return Err(UrlError::Scheme(scheme.to_string()));
            }
        };
        if t != Transport::Local && rest.split('/').next().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost(url.to_string()));
        }
        // `file://repo` names a host `repo` (RFC 8089), which the fetch would take as a
        // path relative to the agent's working directory.
        if t == Transport::Local && !rest.starts_with('/') {
            return Err(UrlError::RelativeFile(url.to_string()));
        }
        return Ok(t);
    }
    // scp-like `user@host:path` (Git's rule: a colon before any slash).
    match url.split_once(':') {
        Some((host, _)) if !host.is_empty() && !host.contains('/') => Ok(Transport::Ssh),
        _ => Ok(Transport::Local),
    }
}

fn source(r: &Reader<'_, '_, '_>) -> Option<SourceSection> {
    let url = r
        .required_string("url")
        .and_then(|(u, loc)| match transport(&u) {
            Ok(t) => Some((u, t)),
            Err(e) => {
                r.error(&loc, "url", e.to_string());
                None
            }
        });
    let refs: Vec<(&str, Option<(String, Location)>)> = ["branch", "tag", "commit"]
        .into_iter()
        .map(|k| (k, r.string(k)))
        .collect();
    let given: Vec<&(&str, Option<(String, Location)>)> =
        refs.iter().filter(|(_, v)| v.is_some()).collect();
    if let Some((k, Some((_, loc)))) = given.get(1) {
        r.error(loc, k, "give only one of `branch`, `tag` or `commit`");
    }
    for (k, v) in &refs {
        if let (true, Some((name, loc))) = (*k != "commit", v)
            && let Some(why) = bad_ref_name(name)
        {
            r.error(
                loc,
                k,
                format!("`source.{k}` `{name}` is not a valid Git ref name: {why}"),
            );
        }
    }
    let git_ref = match given.first() {
        Some(("tag", Some((t, _)))) => GitRef::Tag(t.clone()),
        Some(("commit", Some((c, loc)))) => {
            if !(c.len() >= 7 && c.len() <= 40 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
                r.error(
                    loc,
                    "commit",
                    format!(
                        "`source.commit` must be a commit id (7 to 40 hexadecimal digits), found `{c}`"
                    ),
                );
            }
            GitRef::Commit(c.clone())
        }
        Some((_, Some((b, _)))) => GitRef::Branch(b.clone()),
        _ => GitRef::Branch("main".into()),
    };
    let interval = r
        .string("interval")
        .and_then(|(s, loc)| match parse_duration(&s) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                r.error(&loc, "interval", "`source.interval` must be at least 1s");
                None
            }
            Err(e) => {
                r.value_error(&loc, "interval", e);
                None
            }
        })
        .unwrap_or(Duration::from_secs(30));
    let (min, max) = RETRY_BACKOFF_RANGE;
    let retry_backoff = duration(r, "retry_backoff", min, max).unwrap_or(DEFAULT_RETRY_BACKOFF);
    let webhook = r.table("webhook").and_then(|(t, at)| {
        let w = r.child(t, "webhook", at, WEBHOOK);
        let listen = w.required_string("listen").and_then(|(l, loc)| {
            if l.parse::<std::net::SocketAddr>().is_ok() {
                Some(l)
            } else {
                w.error(
                    &loc,
                    "listen",
                    format!("`source.webhook.listen` must be an address:port, found `{l}`"),
                );
                None
            }
        })?;
        let given = |k: &str| w.table.iter().any(|(key, _)| key.get_ref() == k);
        if !given("secret_file") && !w.suggested.contains("secret_file") {
            w.error(
                &w.at,
                "secret_file",
                "`source.webhook` needs `secret_file`: the receiver acts only on requests signed with its secret (an unsigned one would let anyone make the node fetch)",
            );
            return None;
        }
        Some(Webhook {
            listen,
            secret_file: path(&w, "secret_file")?,
        })
    });
    let spec_path = r.string("path").map(|(p, loc)| {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            r.error(
                &loc,
                "path",
                format!("`source.path` must be a relative path inside the repository, found `{p}`"),
            );
        }
        p.trim_matches('/').to_string()
    });
    let depth = r.integer("depth").and_then(|(n, loc)| match u32::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            r.error(
                &loc,
                "depth",
                format!("`source.depth` must be 0 (the full history) or a positive number of commits, found {n}"),
            );
            None
        }
    });
    let trusted_pgp_keys = r
        .strings("trusted_pgp_keys")
        .map(|(keys, _)| {
            keys.into_iter()
                .filter_map(|(k, loc)| {
                    if k.is_empty() {
                        r.error(
                            &loc,
                            "trusted_pgp_keys",
                            "`source.trusted_pgp_keys` must not name an empty path",
                        );
                        None
                    } else {
                        Some(PathBuf::from(k))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let notify = r
        .table("notify")
        .and_then(|(t, at)| notify(&r.child(t, "notify", at, NOTIFY)));
    let (url, transport) = url?;
    // Credentials of one transport given for another have no effect: a warning
    // (`NodeConfig::warnings`), so that a file listing every key stays valid.
    Some(SourceSection {
        credentials_file: path(r, "credentials_file"),
        ca_file: path(r, "ca_file"),
        ssh_key: path(r, "ssh_key"),
        known_hosts: path(r, "known_hosts"),
        url,
        transport,
        git_ref,
        path: spec_path.unwrap_or_default(),
        interval,
        retry_backoff,
        depth: depth.unwrap_or(DEFAULT_DEPTH),
        allowed_signers: path(r, "allowed_signers"),
        trusted_pgp_keys,
        webhook,
        notify,
    })
}

/// `source.notify`: `mqtt` and `topic` are required.
fn notify(n: &Reader<'_, '_, '_>) -> Option<Notify> {
    let mqtt = n
        .required_string("mqtt")
        .and_then(|(u, loc)| match Broker::parse(&u) {
            Ok(b) => Some((u, b)),
            Err(why) => {
                n.error(
                    &loc,
                    "mqtt",
                    format!(
                        "`source.notify.mqtt` must be an mqtt:// or mqtts:// URL with a host: `{}` {why}",
                        without_userinfo(&u)
                    ),
                );
                None
            }
        });
    let topic = n.required_string("topic").and_then(|(t, loc)| {
        // Subscribing needs a topic name, not a filter; `#` and `+` are wildcards. A
        // topic is at most 65,535 bytes; the node's status goes below it.
        if t.is_empty() || t.contains(['#', '+', '\0']) || t.len() > 1024 {
            n.error(
                &loc,
                "topic",
                format!("`source.notify.topic` must be a topic name of at most 1024 bytes without wildcards (`#`, `+`), found `{t}`"),
            );
            None
        } else {
            Some(t)
        }
    });
    let spread = duration(n, "spread", Duration::ZERO, Duration::from_secs(3600))
        .unwrap_or(DEFAULT_NOTIFY_SPREAD);
    let username = n.string("username").map(|(u, _)| u);
    let password_file = path(n, "password_file");
    if password_file.is_some()
        && username.is_none()
        && let Some(loc) = n.key_loc("password_file")
    {
        n.error(
                &loc,
                "password_file",
                "`source.notify.password_file` needs `username` too (MQTT sends a password only with a user name)",
            );
    }
    let ca_file = path(n, "ca_file");
    let client_cert = path(n, "client_cert");
    let client_key = path(n, "client_key");
    for (key, set, other) in [
        ("client_cert", client_cert.is_some(), client_key.is_some()),
        ("client_key", client_key.is_some(), client_cert.is_some()),
    ] {
        if set
            && !other
            && let Some(loc) = n.key_loc(key)
        {
            n.error(
                &loc,
                key,
                "`source.notify.client_cert` and `client_key` go together (mutual TLS needs both)",
            );
        }
    }
    let (mqtt, broker) = mqtt?;
    for (key, set) in [
        ("ca_file", ca_file.is_some()),
        ("client_cert", client_cert.is_some()),
        ("client_key", client_key.is_some()),
    ] {
        if set
            && !broker.tls
            && let Some(loc) = n.key_loc(key)
        {
            n.error(
                &loc,
                key,
                format!("`source.notify.{key}` is for an mqtts:// broker only"),
            );
        }
    }
    Some(Notify {
        mqtt,
        topic: topic?,
        spread,
        username,
        password_file,
        ca_file,
        client_cert,
        client_key,
    })
}

/// A duration key of `r` within `min..=max`; a located error otherwise.
fn duration(r: &Reader<'_, '_, '_>, key: &str, min: Duration, max: Duration) -> Option<Duration> {
    let (s, loc) = r.string(key)?;
    match parse_duration(&s) {
        Ok(d) if (min..=max).contains(&d) => Some(d),
        Ok(_) => {
            r.error(
                &loc,
                key,
                format!(
                    "`{}` must be between {} and {}, found `{s}`",
                    r.scope.key(key),
                    format_duration(min),
                    format_duration(max)
                ),
            );
            None
        }
        Err(e) => {
            r.value_error(&loc, key, e);
            None
        }
    }
}

/// A URL of one of `schemes` (`http://host…`) with a valid host and port, as the agent
/// will parse it; the message never shows the URL's user name or password.
fn check_url(r: &Reader<'_, '_, '_>, key: &str, schemes: &[&str]) -> Option<String> {
    let (u, loc) = r.string(key)?;
    let ok = u
        .split_once("://")
        .is_some_and(|(scheme, _)| schemes.contains(&scheme));
    let parsed = if ok { Some(url::Url::parse(&u)) } else { None };
    let why = match parsed {
        Some(Ok(p)) if p.host_str().is_some_and(|h| !h.is_empty()) => return Some(u),
        Some(Ok(_)) => String::new(),
        Some(Err(e)) => format!(" ({e})"),
        None => String::new(),
    };
    let want: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
    r.error(
        &loc,
        key,
        format!(
            "`{}` must be a URL starting with {} and naming a valid host, found `{}`{why}",
            r.scope.key(key),
            want.join(" or "),
            without_userinfo(&u)
        ),
    );
    None
}

/// `u` with any `user:password@` after the scheme replaced by `***@`, for messages; also
/// for a string that is not a valid URL, so everything up to the last `@` goes.
pub fn without_userinfo(u: &str) -> String {
    match u.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => format!("{scheme}://***{}", &rest[at..]),
            None => u.to_string(),
        },
        None => match u.rfind('@') {
            Some(at) => format!("***{}", &u[at..]),
            None => u.to_string(),
        },
    }
}

fn telemetry(r: &Reader<'_, '_, '_>, t: &mut TelemetrySection) {
    t.otlp_endpoint = check_url(r, "otlp_endpoint", &["http", "https"]);
    t.metrics_listen = r.string("metrics_listen").and_then(|(l, loc)| {
        if l.parse::<std::net::SocketAddr>().is_ok() {
            Some(l)
        } else {
            r.error(
                &loc,
                "metrics_listen",
                format!("`telemetry.metrics_listen` must be an address:port, found `{l}`"),
            );
            None
        }
    });
    if let Some((n, loc)) = r.integer("otlp_queue") {
        match usize::try_from(n) {
            Ok(q) if (1..=MAX_OTLP_QUEUE).contains(&n) => t.otlp_queue = q,
            _ => r.error(
                &loc,
                "otlp_queue",
                format!("`telemetry.otlp_queue` must be between 1 and {MAX_OTLP_QUEUE}, found {n}"),
            ),
        }
    }
}

fn policy(r: &Reader<'_, '_, '_>, p: &mut PolicySection) {
    if let Some((profile, _)) = r.string("profile") {
        p.profile = profile;
    }
    if let Some((m, loc)) = r.string("mode") {
        match m.as_str() {
            "enforce" => p.mode = PolicyMode::Enforce,
            "audit" => p.mode = PolicyMode::Audit,
            _ => r.error(
                &loc,
                "mode",
                format!("invalid policy mode `{m}`: expected `enforce` or `audit`"),
            ),
        }
    }
    if let Some((keys, _)) = r.strings("trusted_keys") {
        p.trusted_keys = keys.into_iter().map(|(k, _)| PathBuf::from(k)).collect();
    }
    p.trusted_root = path(r, "trusted_root");
    let root_given = r.raw("trusted_root").is_some();
    for (i, (t, at)) in r.tables("trusted_identities").into_iter().enumerate() {
        let seg = format!("trusted_identities[{i}]");
        let id = r.child(t, &seg, at.clone(), IDENTITY);
        if let Some(trusted) = trusted_identity(&id) {
            // Only the first: one fix (a root) answers them all.
            if !root_given && p.trusted_identities.is_empty() {
                id.error(
                    &at,
                    "issuer",
                    format!(
                        "a trusted identity needs `{}` (a Sigstore trusted_root.json): without one no keyless signature can be verified, and every pass would fail",
                        r.scope.key("trusted_root")
                    ),
                );
            }
            p.trusted_identities.push(trusted);
        }
    }
    if let Some((v, loc)) = r.string("on_running_violation") {
        match v.as_str() {
            "report" => p.on_running_violation = OnRunningViolation::Report,
            "stop" => p.on_running_violation = OnRunningViolation::Stop,
            _ => r.value_error(
                &loc,
                "on_running_violation",
                format!("invalid value `{v}`: expected `report` or `stop`"),
            ),
        }
    }
    for (i, (t, at)) in r.tables("waiver").into_iter().enumerate() {
        if let Some(w) = parse_waiver(&r.child(t, &format!("waiver[{i}]"), at.clone(), WAIVER), at)
        {
            p.waivers.push(w);
        }
    }
}

/// One `[[policy.trusted_identities]]`: an https issuer and exactly one of `subject`
/// and `subject_regex`.
fn trusted_identity(r: &Reader<'_, '_, '_>) -> Option<TrustedIdentity> {
    let issuer = match r.raw("issuer") {
        Some(_) => check_url(r, "issuer", &["https"]),
        None => r.required_string("issuer").map(|(i, _)| i),
    };
    let subject = r.string("subject");
    let regex = r.string("subject_regex");
    let subject = match (subject, regex) {
        (Some((_, loc)), Some(_)) => {
            r.error(
                &loc,
                "subject",
                "give only one of `subject` and `subject_regex`",
            );
            None
        }
        (Some((s, loc)), None) if s.is_empty() => {
            r.error(&loc, "subject", "`subject` must not be empty");
            None
        }
        (None, Some((s, loc))) if s.is_empty() => {
            r.error(&loc, "subject_regex", "`subject_regex` must not be empty");
            None
        }
        (Some((s, _)), None) => Some(SubjectMatch::Exact(s)),
        (None, Some((s, loc))) => match subject_regex_error(&s) {
            Some(e) => {
                let hint = if e.contains("Unicode") {
                    " (berth's dialect, regex-lite, has no Unicode classes such as `\\p{L}`)"
                } else {
                    ""
                };
                r.error(
                    &loc,
                    "subject_regex",
                    format!("`subject_regex` is not a valid regular expression: {e}{hint}"),
                );
                None
            }
            None => Some(SubjectMatch::Regex(s)),
        },
        // A misspelt `subject` was already reported with its suggestion.
        (None, None)
            if r.suggested.contains("subject") || r.suggested.contains("subject_regex") =>
        {
            None
        }
        (None, None) => {
            r.error(
                &r.at,
                "subject",
                format!(
                    "missing key `{}` or `{}`: a keyless signature is trusted only for a named subject",
                    r.scope.key("subject"),
                    r.scope.key("subject_regex")
                ),
            );
            None
        }
    };
    Some(TrustedIdentity {
        issuer: issuer?,
        subject: subject?,
    })
}

/// Why `pattern` cannot be a `subject_regex`, as the agent compiles it: alone (a
/// pattern like `a)|(b` is valid only once wrapped), then anchored (`^(?:…)$`).
fn subject_regex_error(pattern: &str) -> Option<String> {
    regex_lite::Regex::new(pattern)
        .and_then(|_| regex_lite::Regex::new(&format!("^(?:{pattern})$")))
        .err()
        .map(|e| {
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
}

/// Reads one waiver table (`[[policy.waiver]]` here, `[[waiver]]` in policy files).
pub(crate) fn parse_waiver(w: &Reader<'_, '_, '_>, at: Location) -> Option<Waiver> {
    let rule = w.required_string("rule").map(|(r, _)| r);
    let objects = match w.strings("objects") {
        Some((o, _)) => o.into_iter().map(|(s, _)| s).collect(),
        None => {
            w.error(
                &w.at,
                "objects",
                format!("missing required key `{}`", w.scope.key("objects")),
            );
            Vec::new()
        }
    };
    let reason = w.required_string("reason").map(|(r, _)| r);
    let expires = match w.raw("expires") {
        None => None,
        Some((toml::de::DeValue::Datetime(d), _)) => Some(d.to_string()),
        Some((toml::de::DeValue::String(s), loc)) => {
            if !valid_date(s) {
                w.value_error(
                    &loc,
                    "expires",
                    format!("invalid date `{s}`: expected YYYY-MM-DD"),
                );
            }
            Some(s.to_string())
        }
        Some((v, loc)) => {
            w.error(
                &loc,
                "expires",
                format!(
                    "`expires` must be a date (YYYY-MM-DD), found {}",
                    crate::read::type_name(v)
                ),
            );
            None
        }
    };
    Some(Waiver {
        rule: rule?,
        objects,
        reason: reason?,
        expires,
        origin: at,
    })
}

/// Parses one policy-file waiver list: the `[[waiver]]` tables of `text`.
pub fn parse_waivers(file: &str, text: &str) -> Result<Vec<Waiver>, Vec<Diagnostic>> {
    let src = Src::new(file, text);
    let doc = DeTable::parse(text).map_err(|e| {
        let loc = src.loc(e.span().unwrap_or(0..0));
        vec![Diagnostic::new(
            &loc,
            format!("TOML syntax error: {}", e.message().trim()),
        )]
    })?;
    let r = Reader {
        src: &src,
        table: doc.get_ref(),
        scope: Scope::default(),
        at: src.loc(0..0),
        suggested: Default::default(),
    };
    let mut out = Vec::new();
    for (i, (t, at)) in r.tables("waiver").into_iter().enumerate() {
        if let Some(w) = parse_waiver(&r.child(t, &format!("waiver[{i}]"), at.clone(), WAIVER), at)
        {
            out.push(w);
        }
    }
    let diags = src.diags.into_inner();
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn valid_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && s[..4].parse::<u32>().is_ok()
        && s[5..7].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && s[8..].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
}

fn runtime(r: &Reader<'_, '_, '_>, rt: &mut RuntimeSection) {
    if let Some((v, _)) = r.string("oci_runtime") {
        rt.oci_runtime = v;
    }
    if let Some(p) = path(r, "state_dir") {
        rt.state_dir = p;
    }
    if let Some(p) = path(r, "run_dir") {
        rt.run_dir = p;
    }
    if let Some((s, loc)) = r.string("default_subnet") {
        match parse_cidr(&s) {
            Ok(c) => rt.default_subnet = c,
            Err(e) => r.value_error(&loc, "default_subnet", e),
        }
    }
    if let Some((s, loc)) = r.string("log_max_size") {
        match parse_size(&s) {
            Ok(n) if n >= 4096 => rt.log_max_size = n,
            Ok(_) => r.error(
                &loc,
                "log_max_size",
                "`runtime.log_max_size` must be at least 4KiB",
            ),
            Err(e) => r.value_error(&loc, "log_max_size", e),
        }
    }
    if let Some((n, loc)) = r.integer("log_max_files") {
        match u32::try_from(n) {
            Ok(n) if (1..=100).contains(&n) => rt.log_max_files = n,
            _ => r.error(
                &loc,
                "log_max_files",
                format!("`runtime.log_max_files` must be between 1 and 100, found {n}"),
            ),
        }
    }
    rt.shim_path = path(r, "shim_path");
    if let Some((n, loc)) = r.integer("parallel") {
        match usize::try_from(n) {
            Ok(n) if (1..=64).contains(&n) => rt.parallel = n,
            _ => r.error(
                &loc,
                "parallel",
                format!("`runtime.parallel` must be between 1 and 64, found {n}"),
            ),
        }
    }
    if let Some(d) = pull_timeout(r, "pull_connect_timeout") {
        rt.pull_connect_timeout = d;
    }
    if let Some(d) = pull_timeout(r, "pull_idle_timeout") {
        rt.pull_idle_timeout = d;
    }
    if let Some(d) = duration(
        r,
        "resync",
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    ) {
        rt.resync = d;
    }
    // Up to a year: longer keeps everything forever in effect, which is not a grace.
    if let Some(d) = duration(
        r,
        "gc_grace",
        Duration::ZERO,
        Duration::from_secs(365 * 86_400),
    ) {
        rt.gc_grace = d;
    }
    restart_backoff(r, rt);
}

/// `runtime.restart_backoff` and `runtime.restart_backoff_max`: each in its range, and
/// the cap at least the first delay (else an error at whichever of the two is given
/// last in the file).
fn restart_backoff(r: &Reader<'_, '_, '_>, rt: &mut RuntimeSection) {
    let (min, max) = RESTART_BACKOFF_RANGE;
    let base = duration(r, "restart_backoff", min, max);
    let (min, max) = RESTART_BACKOFF_MAX_RANGE;
    let cap = duration(r, "restart_backoff_max", min, max);
    // A key given with a bad value was reported already; absent, it is its default.
    let given = |key: &str, parsed: Option<Duration>, default: Duration| match r.raw(key) {
        None => Some((default, None)),
        Some((_, loc)) => parsed.map(|d| (d, Some(loc))),
    };
    let (Some((base, base_at)), Some((cap, cap_at))) = (
        given("restart_backoff", base, DEFAULT_RESTART_BACKOFF),
        given("restart_backoff_max", cap, DEFAULT_RESTART_BACKOFF_MAX),
    ) else {
        return;
    };
    if base <= cap {
        rt.restart_backoff = base;
        rt.restart_backoff_max = cap;
        return;
    }
    let (key, loc) = match (base_at.clone(), cap_at.clone()) {
        (Some(b), Some(c)) if b > c => ("restart_backoff", b),
        (_, Some(c)) => ("restart_backoff_max", c),
        (Some(b), None) => ("restart_backoff", b),
        (None, None) => return,
    };
    let shown = |d: Duration, at: &Option<Location>| {
        let default = if at.is_some() { "" } else { "default " };
        format!("{default}`{}`", format_duration(d))
    };
    r.error(
        &loc,
        key,
        format!(
            "`runtime.restart_backoff_max` ({}) must be at least `runtime.restart_backoff` ({})",
            shown(cap, &cap_at),
            shown(base, &base_at)
        ),
    );
}

/// `runtime.pull_*_timeout`: a duration from 1s to 1h.
fn pull_timeout(r: &Reader<'_, '_, '_>, key: &str) -> Option<Duration> {
    let (s, loc) = r.string(key)?;
    let (min, max) = PULL_TIMEOUT_RANGE;
    match parse_duration(&s) {
        Ok(d) if (min..=max).contains(&d) => Some(d),
        Ok(_) => {
            r.error(
                &loc,
                key,
                format!("`runtime.{key}` must be between 1s and 1h, found `{s}`"),
            );
            None
        }
        Err(e) => {
            r.value_error(&loc, key, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_timeouts_default_and_parse() {
        let cfg = NodeConfig::parse("berth.toml", "").unwrap();
        assert_eq!(cfg.runtime.pull_connect_timeout, Duration::from_secs(10));
        assert_eq!(cfg.runtime.pull_idle_timeout, Duration::from_secs(60));
        let cfg = NodeConfig::parse("berth.toml", "[runtime]\nparallel = 2\n").unwrap();
        assert_eq!(
            cfg.runtime.pull_connect_timeout,
            DEFAULT_PULL_CONNECT_TIMEOUT
        );
        assert_eq!(cfg.runtime.pull_idle_timeout, DEFAULT_PULL_IDLE_TIMEOUT);

        let text = "[runtime]\npull_connect_timeout = \"1s\"\npull_idle_timeout = \"2m30s\"\n";
        let cfg = NodeConfig::parse("berth.toml", text).unwrap();
        assert_eq!(cfg.runtime.pull_connect_timeout, Duration::from_secs(1));
        assert_eq!(cfg.runtime.pull_idle_timeout, Duration::from_secs(150));
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        match NodeConfig::parse("berth.toml", text) {
            Ok(cfg) => panic!("accepted: {:?}", cfg.runtime),
            Err(diags) => diags,
        }
    }

    #[test]
    fn bad_pull_timeouts_are_located_errors() {
        let diags = errors("[runtime]\nparallel = 2\npull_connect_timeout = \"soon\"\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!((d.line, d.column), (3, 24), "{d:?}");
        assert_eq!(
            d.key.as_deref(),
            Some("runtime.pull_connect_timeout"),
            "{d:?}"
        );
        assert!(
            d.message
                .starts_with("runtime.pull_connect_timeout: invalid duration `soon`"),
            "{d:?}"
        );

        let diags = errors("[runtime]\npull_idle_timeout = \"500ms\"\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].line, 2, "{diags:?}");
        assert_eq!(diags[0].key.as_deref(), Some("runtime.pull_idle_timeout"));
        assert!(
            diags[0]
                .message
                .contains("must be between 1s and 1h, found `500ms`"),
            "{diags:?}"
        );

        let diags = errors("[runtime]\npull_idle_timeout = \"2h\"\npull_connect_timeout = 10\n");
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(
            diags.iter().any(|d| d.message.contains("found `2h`")),
            "{diags:?}"
        );
        assert!(
            diags
                .iter()
                .any(|d| d.key.as_deref() == Some("runtime.pull_connect_timeout") && d.line == 3),
            "{diags:?}"
        );

        // A misspelt key is an error too (the parser is strict).
        let diags = errors("[runtime]\npull_timeout = \"5s\"\n");
        assert!(diags[0].message.contains("pull_timeout"), "{diags:?}");
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod key_tests;
