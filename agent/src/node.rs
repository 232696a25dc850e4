//! The node's configuration (DESIGN.md §4) as every caller of the reconcile pass reads
//! it — the CLI, and later the agent: finding and parsing the file (`--config` or
//! `$BERTH_CONFIG` must exist; the default `/etc/berth/berth.toml` may be missing, which
//! means all defaults; `--state-dir`/`--run-dir` override it), the policy in force, the
//! node's identity, its registries and its networks.

use std::path::{Path, PathBuf};

use berth_policy::evaluate::{Date, HostContext};
use berth_policy::policy::{Policy, check_waivers};
use berth_spec::node::{Caller, NodeConfig, PolicyMode, Unenforced};
use berth_spec::{Diagnostic, NodeIdentity};

use crate::image::registry::{RegistryConfig, Timeouts};
use crate::network::Networks;
use crate::network::exec::{DEFAULT_CNI_PATH, split_path};

pub const DEFAULT_CONFIG: &str = "/etc/berth/berth.toml";

/// Why a node configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read node configuration {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "node configuration {} is invalid ({})",
        path.display(),
        berth_spec::node::counted(diags.len(), "error", "errors")
    )]
    Invalid {
        path: PathBuf,
        diags: Vec<Diagnostic>,
    },
    #[error("cannot read policy file {}", path.display())]
    PolicyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The policy in force on this node, as the agent, `apply` and `audit` use it.
#[derive(Debug, Clone)]
pub struct NodePolicy {
    pub policy: Policy,
    pub mode: PolicyMode,
    pub host: HostContext,
}

/// The node's policy: `explicit` (`--policy`: a profile name or a file) if given, else
/// the node configuration's profile or file (relative to the configuration), else
/// `restricted`. The configuration's waivers are merged in; the mode is the
/// configuration's, or `enforce` without one.
pub fn node_policy(loaded: &Loaded, explicit: Option<&str>) -> Result<NodePolicy, ConfigError> {
    let cfg = &loaded.config;
    let cfg_dir = loaded
        .path
        .as_ref()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut policy = match (explicit, &loaded.path) {
        (Some(p), _) => load_policy(p, Path::new(""))?,
        (None, Some(_)) => load_policy(&cfg.policy.profile, &cfg_dir)?,
        (None, None) => load_policy(berth_policy::DEFAULT_PROFILE, Path::new(""))?,
    };
    let mode = if loaded.path.is_some() {
        cfg.policy.mode
    } else {
        PolicyMode::Enforce
    };
    let waiver_errors = check_waivers(&cfg.policy.waivers);
    if !waiver_errors.is_empty() {
        return Err(ConfigError::Invalid {
            path: loaded.path.clone().unwrap_or_default(),
            diags: waiver_errors,
        });
    }
    policy.waivers.extend(cfg.policy.waivers.iter().cloned());
    let host = HostContext {
        state_dir: cfg.runtime.state_dir.display().to_string(),
        run_dir: cfg.runtime.run_dir.display().to_string(),
        trusted_keys: !cfg.policy.trusted_keys.is_empty(),
        trusted_identities: cfg.policy.trusted_root.is_some()
            && !cfg.policy.trusted_identities.is_empty(),
    };
    Ok(NodePolicy { policy, mode, host })
}

/// A shipped profile by name, else a policy file (relative to `base`).
fn load_policy(spec: &str, base: &Path) -> Result<Policy, ConfigError> {
    if let Some(p) = Policy::profile(spec) {
        return Ok(p);
    }
    let path = base.join(spec);
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::PolicyRead {
        path: path.clone(),
        source,
    })?;
    Policy::parse(&path.display().to_string(), &text)
        .map_err(|diags| ConfigError::Invalid { path, diags })
}

/// Today's date (UTC), for waiver expiry.
pub fn today() -> Date {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Date::from_unix_days((secs / 86_400) as i64)
}

/// The configuration in effect and the file it came from (`None`: built-in defaults).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: NodeConfig,
    pub path: Option<PathBuf>,
}

/// Reads the node configuration `config` (it must exist), or the default one (it may
/// be missing); `state_dir` and `run_dir` override the file's.
pub fn load(
    config: Option<&Path>,
    state_dir: Option<&Path>,
    run_dir: Option<&Path>,
) -> Result<Loaded, ConfigError> {
    let (path, explicit) = match config {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut loaded = match std::fs::read_to_string(&path) {
        Ok(text) => Loaded {
            config: parse(&path, &text)?,
            path: Some(path),
        },
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Loaded {
            config: NodeConfig::default(),
            path: None,
        },
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    if let Some(dir) = state_dir {
        loaded.config.runtime.state_dir = dir.to_path_buf();
    }
    if let Some(dir) = run_dir {
        loaded.config.runtime.run_dir = dir.to_path_buf();
    }
    Ok(loaded)
}

/// Parses a configuration text; diagnostics name the file as given.
pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(&path.display().to_string(), text).map_err(|diags| ConfigError::Invalid {
        path: path.to_path_buf(),
        diags,
    })
}

/// Every file the configuration names (`NodeConfig::files`) that cannot be opened for
/// reading, or is not a regular file: one located error each, for `berth agent
/// --check`. Relative paths are taken as every reader opens them: from the working
/// directory.
pub fn unreadable_files(loaded: &Loaded) -> Vec<Diagnostic> {
    let shown = loaded
        .path
        .as_ref()
        .map_or_else(|| DEFAULT_CONFIG.to_string(), |p| p.display().to_string());
    let mut out = Vec::new();
    for f in loaded.config.files() {
        // The type first: opening a FIFO for reading would block.
        let problem = match std::fs::metadata(f.path) {
            Ok(m) if !m.is_file() => "is not a regular file".to_string(),
            Ok(_) => match std::fs::File::open(f.path) {
                Ok(_) => continue,
                Err(e) => format!("cannot be read: {e}"),
            },
            Err(e) => format!("cannot be read: {e}"),
        };
        let at = f.at.clone().unwrap_or_else(|| berth_spec::Location {
            file: shown.clone(),
            line: 1,
            column: 1,
        });
        out.push(
            Diagnostic::new(
                &at,
                format!("`{}` names {}, which {problem}", f.key, f.path.display()),
            )
            .key(f.key.clone()),
        );
    }
    out
}

/// The trusted root the configuration names (`policy.trusted_root`) when it is a
/// readable file but not a usable Sigstore trusted root (a TUF `root.json`, a bundle,
/// an empty file), or, with trusted identities set, one that lists no certificate
/// authority or no transparency log (every keyless signature needs both): a located
/// error for `berth agent --check`, which every pass would otherwise hit. An
/// unreadable one is [`unreadable_files`]' to report.
pub fn unusable_trusted_root(loaded: &Loaded) -> Option<Diagnostic> {
    let files = loaded.config.files();
    let f = files.iter().find(|f| f.key == "policy.trusted_root")?;
    if !std::fs::metadata(f.path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let identities = !loaded.config.policy.trusted_identities.is_empty();
    let problem = match crate::image::signature::keyless::TrustedRoot::load(f.path) {
        Err(error) => format!("cannot be used: {}", crate::util::error_chain(&error)),
        Ok(root) if identities && (root.cas.is_empty() || root.tlogs.is_empty()) => format!(
            "lists no {}, so no signature of `policy.trusted_identities` can verify with it \
             (a keyless signature chains to a Fulcio certificate authority and carries an entry of a listed log)",
            if root.cas.is_empty() {
                "certificate authority (`certificateAuthorities` is empty)"
            } else {
                "transparency log (`tlogs` is empty)"
            }
        ),
        Ok(_) => return None,
    };
    let shown = loaded
        .path
        .as_ref()
        .map_or_else(|| DEFAULT_CONFIG.to_string(), |p| p.display().to_string());
    let at = f.at.clone().unwrap_or(berth_spec::Location {
        file: shown,
        line: 1,
        column: 1,
    });
    Some(Diagnostic::new(&at, format!("`policy.trusted_root` {problem}")).key(f.key.clone()))
}

/// The source's signing keys the configuration names when they are readable files
/// that the agent cannot use (`source.allowed_signers` that does not parse or lists no
/// signer; `source.trusted_pgp_keys` holding a secret key, garbage or a revocation of
/// no trusted key): located errors for `berth agent --check`, since the agent would
/// refuse every revision. They are loaded as the agent loads them (the OpenPGP files
/// together: a revocation in one file revokes a key of another). A file that is not
/// there or not readable is [`unreadable_files`]' to report (a warning), and then the
/// OpenPGP files are not judged together.
pub fn unusable_signing_keys(loaded: &Loaded) -> Vec<Diagnostic> {
    let Some(source) = &loaded.config.source else {
        return Vec::new();
    };
    let shown = loaded
        .path
        .as_ref()
        .map_or_else(|| DEFAULT_CONFIG.to_string(), |p| p.display().to_string());
    let files = loaded.config.files();
    let at = |key: &str| {
        files
            .iter()
            .find(|f| f.key == key)
            .and_then(|f| f.at.clone())
            .or_else(|| {
                // `source.trusted_pgp_keys[1]`, else the list's key.
                let list = key.split_once('[').map_or(key, |(k, _)| k);
                loaded.config.keys.get(list).cloned()
            })
            .unwrap_or_else(|| berth_spec::Location {
                file: shown.clone(),
                line: 1,
                column: 1,
            })
    };
    let regular = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file()) && std::fs::File::open(p).is_ok()
    };
    let mut out = Vec::new();
    if let Some(p) = source.allowed_signers.as_deref().filter(|p| regular(p))
        && let Err(e) = crate::source::signers::AllowedSigners::load(p)
    {
        let key = "source.allowed_signers";
        out.push(
            Diagnostic::new(
                &at(key),
                format!(
                    "`{key}` names {}, which cannot be used: {}",
                    p.display(),
                    crate::util::error_chain(&e)
                ),
            )
            .key(key),
        );
    }
    let pgp = &source.trusted_pgp_keys;
    if !pgp.is_empty()
        && pgp.iter().all(|p| regular(p))
        && let Err(e) = crate::source::pgp::TrustedPgpKeys::load(pgp)
    {
        let why = crate::util::error_chain(&e);
        // The file the error names (the longest path it contains), else the first.
        let i = pgp
            .iter()
            .enumerate()
            .filter(|(_, p)| why.contains(&p.display().to_string()))
            .max_by_key(|(_, p)| p.as_os_str().len())
            .map_or(0, |(i, _)| i);
        let key = format!("source.trusted_pgp_keys[{i}]");
        out.push(
            Diagnostic::new(
                &at(&key),
                format!(
                    "`source.trusted_pgp_keys` names {}, which cannot be used: {why}",
                    pgp[i].display()
                ),
            )
            .key(key),
        );
    }
    out
}

/// The security keys set in the configuration that `caller` would have to enforce and
/// this build cannot (`NodeConfig::unenforced`): the caller refuses to run when the
/// list is not empty, rather than run without the check the node's owner asked for.
pub fn refused(loaded: &Loaded, caller: Caller) -> Result<(), Vec<Unenforced>> {
    let refused = loaded.config.unenforced(caller);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused)
    }
}

/// The host name, for the node's default name.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The node's identity: `flags` (`--node`, `--label`) first, then the node
/// configuration, then the host name.
pub fn identity(loaded: &Loaded, flags: Option<NodeIdentity>) -> NodeIdentity {
    let mut id = loaded.config.identity(hostname);
    if let Some(flags) = flags {
        if flags.name.is_some() {
            id.name = flags.name;
        }
        if !flags.labels.is_empty() {
            id.labels = flags.labels;
        }
    }
    id
}

/// The node's registries (`[registries."host"]`), for the registry client.
pub fn registries_of(node: &NodeConfig) -> RegistryConfig {
    let mut cfg = RegistryConfig::new();
    for (host, r) in &node.registries {
        let e = cfg.entry(host.clone()).or_default();
        e.auth_file = r.auth_file.clone();
        e.mirror = r.mirror.clone();
        e.insecure = r.insecure;
    }
    cfg
}

/// The node's pull deadlines (`runtime.pull_connect_timeout`, `pull_idle_timeout`).
pub fn pull_timeouts(node: &NodeConfig) -> Timeouts {
    Timeouts {
        connect: node.runtime.pull_connect_timeout,
        idle: node.runtime.pull_idle_timeout,
    }
}

/// Opens the node's networks: under its state and run directories, with the CNI
/// plugins of `$BERTH_CNI_PATH` (default: the distribution's directories). Not
/// `reconcile::facts::networks_of`, the networks a container joins.
pub fn open_networks(loaded: &Loaded) -> Networks {
    let rt = &loaded.config.runtime;
    let cni = std::env::var("BERTH_CNI_PATH").unwrap_or_else(|_| DEFAULT_CNI_PATH.to_string());
    Networks::new(
        &rt.state_dir,
        &rt.run_dir,
        rt.default_subnet,
        split_path(&cni),
    )
}
