//! The node's configuration (`/etc/berth/berth.toml`, DESIGN.md §4): who the node is,
//! where its specs come from, its policy and trust, and runtime settings.
//!
//! Parsed with the same strict reader as specs, so a typo is a located error with a
//! suggestion. Every section is optional with the documented defaults; only the agent
//! requires `[source]` ([`NodeConfig::require_source`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use toml::de::DeTable;

use crate::diag::{Diagnostic, Location};
use crate::read::{Reader, Scope, Src};
use crate::types::{Cidr, parse_cidr, parse_duration, parse_size};

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

/// `[source.webhook]`.
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    pub listen: String,
    pub secret_file: Option<PathBuf>,
}

/// `[source]`: the Git repository holding the specs.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSection {
    pub url: String,
    pub git_ref: GitRef,
    /// Sub-directory holding the specs ("" = the repository root).
    pub path: String,
    pub interval: Duration,
    pub allowed_signers: Option<PathBuf>,
    pub webhook: Option<Webhook>,
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

/// `[policy]`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySection {
    /// A shipped profile name or a path to a policy file.
    pub profile: String,
    pub mode: PolicyMode,
    pub trusted_keys: Vec<PathBuf>,
    pub on_running_violation: OnRunningViolation,
    pub waivers: Vec<Waiver>,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            profile: "restricted".into(),
            mode: PolicyMode::Enforce,
            trusted_keys: Vec::new(),
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct TelemetrySection {
    pub otlp_endpoint: Option<String>,
    pub metrics_listen: Option<String>,
}

/// The whole node configuration, defaults applied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub source: Option<SourceSection>,
    pub policy: PolicySection,
    pub runtime: RuntimeSection,
    pub registries: BTreeMap<String, RegistrySection>,
    pub secrets: SecretsSection,
    pub telemetry: TelemetrySection,
}

const TOP: &[&str] = &[
    "node",
    "source",
    "policy",
    "runtime",
    "registries",
    "secrets",
    "telemetry",
];
const NODE: &[&str] = &["name", "labels"];
const SOURCE: &[&str] = &[
    "url",
    "branch",
    "tag",
    "commit",
    "path",
    "interval",
    "allowed_signers",
    "webhook",
];
const WEBHOOK: &[&str] = &["listen", "secret_file"];
const POLICY: &[&str] = &[
    "profile",
    "mode",
    "trusted_keys",
    "on_running_violation",
    "waiver",
];
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
];
const REGISTRY: &[&str] = &["auth_file", "mirror", "insecure"];
const SECRETS: &[&str] = &["identity"];
const TELEMETRY: &[&str] = &["otlp_endpoint", "metrics_listen"];

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
        if let Some((t, at)) = top.table("node") {
            let r = top.child(t, "node", at, NODE);
            cfg.node.name = r.string("name").map(|(n, _)| n);
            cfg.node.labels = strmap(&r, "labels");
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
            let r = top.child(t, "telemetry", at, TELEMETRY);
            cfg.telemetry.otlp_endpoint = r.string("otlp_endpoint").map(|(s, _)| s);
            cfg.telemetry.metrics_listen = r.string("metrics_listen").map(|(s, _)| s);
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

fn source(r: &Reader<'_, '_, '_>) -> Option<SourceSection> {
    let url = r.required_string("url").map(|(u, _)| u);
    let refs: Vec<(&str, Option<(String, Location)>)> = ["branch", "tag", "commit"]
        .into_iter()
        .map(|k| (k, r.string(k)))
        .collect();
    let given: Vec<&(&str, Option<(String, Location)>)> =
        refs.iter().filter(|(_, v)| v.is_some()).collect();
    if let Some((k, Some((_, loc)))) = given.get(1) {
        r.error(loc, k, "give only one of `branch`, `tag` or `commit`");
    }
    let git_ref = match given.first() {
        Some(("tag", Some((t, _)))) => GitRef::Tag(t.clone()),
        Some(("commit", Some((c, loc)))) => {
            if !(c.len() >= 7 && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
                r.error(
                    loc,
                    "commit",
                    format!("`source.commit` must be a hexadecimal commit id, found `{c}`"),
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
                r.error(&loc, "interval", e);
                None
            }
        })
        .unwrap_or(Duration::from_secs(30));
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
        Some(Webhook {
            listen,
            secret_file: path(&w, "secret_file"),
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
    Some(SourceSection {
        url: url?,
        git_ref,
        path: spec_path.unwrap_or_default(),
        interval,
        allowed_signers: path(r, "allowed_signers"),
        webhook,
    })
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
    if let Some((v, loc)) = r.string("on_running_violation") {
        match v.as_str() {
            "report" => p.on_running_violation = OnRunningViolation::Report,
            "stop" => p.on_running_violation = OnRunningViolation::Stop,
            _ => r.error(
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
                w.error(
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
            Err(e) => r.error(&loc, "default_subnet", e),
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
            Err(e) => r.error(&loc, "log_max_size", e),
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
            r.error(&loc, key, e);
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
        assert!(d.message.contains("invalid duration `soon`"), "{d:?}");

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
