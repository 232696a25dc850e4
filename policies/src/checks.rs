//! What each rule checks on one container (policies/README.md documents each one).
//!
//! A check returns the raw results — status, key, message — and knows nothing of
//! severities, waivers or locations; [`crate::evaluate`] adds those. Messages name the
//! offending value, except for secrets: `no-secrets-in-env` names the key only.

use berth_spec::model::{Container, MountSource, Seccomp};
use berth_spec::types::NetworkMode;
use berth_spec::user::{Id, parse_id, split};

use crate::evaluate::{Facts, HostContext, SignatureFact};
use crate::finding::Status;
use crate::hostpath::{self, DenyList};
use crate::policy::RuleConfig;
use crate::rule::Rule;

/// One result of a check, before severity, waivers and location are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raw {
    pub status: Status,
    pub key: String,
    pub message: String,
    /// A remedy more specific than the rule's general one.
    pub remedy: Option<String>,
}

fn violation(key: impl Into<String>, message: impl Into<String>) -> Raw {
    Raw {
        status: Status::Violation,
        key: key.into(),
        message: message.into(),
        remedy: None,
    }
}

fn not_checked(key: impl Into<String>, message: impl Into<String>) -> Raw {
    Raw {
        status: Status::NotChecked,
        key: key.into(),
        message: message.into(),
        remedy: None,
    }
}

/// The Pod Security Standards' safe sysctls (baseline `sysctls` check, up to
/// Kubernetes 1.37): all namespaced, none able to affect other containers or the host.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_notsent_lowat",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// Substrings of env keys that name secrets (DESIGN.md §5), matched case-insensitively.
pub const SECRET_KEY_PARTS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
];

/// Runs one rule's check.
pub(crate) fn check(
    rule: Rule,
    cfg: &RuleConfig,
    c: &Container,
    facts: &Facts,
    host: &HostContext,
    deny: &DenyList,
) -> Vec<Raw> {
    match rule {
        Rule::RunAsNonRoot => run_as_non_root(c, facts).into_iter().collect(),
        Rule::NonRootGroup => non_root_group(c, facts).into_iter().collect(),
        Rule::DropAllCapabilities => {
            let all = c.cap_drop.iter().any(|d| d.eq_ignore_ascii_case("ALL"));
            (!all)
                .then(|| {
                    violation(
                        "cap_drop",
                        "`cap_drop` does not contain `ALL`: the container keeps Docker's default capabilities",
                    )
                })
                .into_iter()
                .collect()
        }
        Rule::AllowedCapabilities => allowed_capabilities(c, &cfg.allow),
        Rule::ImageDigestPinned => match &c.image_ref {
            Some(r) if r.digest.is_none() => vec![violation(
                "image",
                format!(
                    "image `{}` is not pinned by digest: its tag can move to other content",
                    c.image
                ),
            )],
            _ => Vec::new(),
        },
        Rule::AllowedRegistries => match &c.image_ref {
            Some(r) if !registry_allowed(&r.name(), &cfg.allow) => vec![violation(
                "image",
                format!(
                    "image `{}` is not from an allowed registry ({})",
                    r.name(),
                    allowed_text(&cfg.allow)
                ),
            )],
            _ => Vec::new(),
        },
        Rule::ImageSignature => image_signature(c, facts, host).into_iter().collect(),
        Rule::NoPrivileged => c
            .privileged
            .then(|| {
                violation(
                    "privileged",
                    "`privileged = true` gives the container every capability and every host device",
                )
            })
            .into_iter()
            .collect(),
        Rule::NoHostNetwork => (c.network_mode == NetworkMode::Host)
            .then(|| {
                violation(
                    "network_mode",
                    "`network_mode = \"host\"` shares the host's network namespace",
                )
            })
            .into_iter()
            .collect(),
        Rule::AllowedHostPaths => host_paths(c, &cfg.allow, deny),
        Rule::AllowedDevices => devices(c, &cfg.allow),
        Rule::SafeSysctls => sysctls(c),
        Rule::NoNewPrivileges => (!c.no_new_privileges)
            .then(|| {
                violation(
                    "no_new_privileges",
                    "`no_new_privileges = false` lets setuid programs raise privileges",
                )
            })
            .into_iter()
            .collect(),
        Rule::ResourceLimits => {
            let mut out = Vec::new();
            if c.resources.memory.is_none() {
                out.push(Raw {
                    remedy: Some("set `resources.memory`, e.g. \"128MiB\"".into()),
                    ..violation("resources.memory", "no memory limit (`resources.memory`)")
                });
            }
            if c.resources.pids.is_none() {
                out.push(Raw {
                    remedy: Some("set `resources.pids`, e.g. 256".into()),
                    ..violation("resources.pids", "no pids limit (`resources.pids`)")
                });
            }
            out
        }
        Rule::SeccompConfined => (c.seccomp == Seccomp::Unconfined)
            .then(|| {
                violation(
                    "seccomp",
                    "`seccomp = \"unconfined\"` runs the container without a syscall filter",
                )
            })
            .into_iter()
            .collect(),
        Rule::NoSecretsInEnv => c
            .env
            .iter()
            .filter(|(k, v)| is_secret_env(k, v))
            .map(|(k, _)| Raw {
                remedy: Some(format!(
                    "remove it from `env` and deliver it as a secret file (`[[container.{}.secrets]]`, read from /run/secrets/)",
                    c.name
                )),
                ..violation(
                    format!("env.{k}"),
                    format!("environment variable `{k}` holds a literal secret"),
                )
            })
            .collect(),
        Rule::ReadOnlyRootfs => (!c.read_only)
            .then(|| violation("read_only", "the root filesystem is writable"))
            .into_iter()
            .collect(),
        Rule::HostPortsBound => c
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.host_ip.is_none_or(|ip| ip.is_unspecified()))
            .map(|(i, p)| Raw {
                remedy: Some(format!(
                    "bind it to one address, e.g. `\"127.0.0.1:{}:{}/{}\"`",
                    p.host_port, p.container_port, p.protocol
                )),
                ..violation(
                    format!("ports[{i}]"),
                    format!("port `{p}` is published on every host address"),
                )
            })
            .collect(),
    }
}

/// Reads one part of `user` as the agent and runc do (`berth_spec::user`): `00`, `+0`
/// and `-0` are uid 0 like `0`; `root` is taken to be uid 0 as well.
fn id(part: &str) -> Option<Id<'_>> {
    parse_id(part).ok()
}

fn run_as_non_root(c: &Container, facts: &Facts) -> Option<Raw> {
    let Some(user) = &c.user else {
        return Some(violation(
            "user",
            "no `user`: the container runs as the image's default user, which may be root",
        ));
    };
    let (uid, _) = split(user);
    if let Some(resolved) = facts.resolved_uid {
        return (resolved == 0).then(|| {
            violation(
                "user",
                format!("`user = \"{user}\"` resolves to uid 0 (root) in the image"),
            )
        });
    }
    match id(uid) {
        Some(i) if i.is_root() => Some(violation(
            "user",
            format!("`user = \"{user}\"` runs as root (uid 0)"),
        )),
        Some(Id::Number(_)) => None,
        _ => Some(not_checked(
            "user",
            format!(
                "user `{uid}` is a name: it is resolved in the image's /etc/passwd and checked when the container is created"
            ),
        )),
    }
}

fn non_root_group(c: &Container, facts: &Facts) -> Option<Raw> {
    let user = c.user.as_deref();
    if let Some(gid) = facts.resolved_gid {
        return (gid == 0).then(|| {
            violation(
                "user",
                match user {
                    Some(u) => {
                        format!("`user = \"{u}\"` runs with primary group 0 (root) in the image")
                    }
                    None => "no `user`: the image's default user runs with primary group 0 (root)"
                        .to_string(),
                },
            )
        });
    }
    let Some(user) = user else {
        return Some(not_checked(
            "user",
            "no `user`: the primary group is the image's default, checked when the container is created",
        ));
    };
    match split(user).1.map(|g| (g, id(g))) {
        Some((_, Some(i))) if i.is_root() => Some(violation(
            "user",
            format!("`user = \"{user}\"` runs with primary group 0 (root)"),
        )),
        Some((_, Some(Id::Number(_)))) => None,
        Some((g, _)) => Some(not_checked(
            "user",
            format!(
                "group `{g}` is a name: it is resolved in the image's /etc/group when the container is created"
            ),
        )),
        None => Some(not_checked(
            "user",
            format!(
                "`user = \"{user}\"` gives no group: the primary group comes from the image's /etc/passwd (gid 0 when the user has no entry)"
            ),
        )),
    }
}

/// A capability name as the allow lists write it: upper case, without `CAP_`.
pub fn capability_name(cap: &str) -> String {
    let up = cap.to_ascii_uppercase();
    up.strip_prefix("CAP_").unwrap_or(&up).to_string()
}

fn allowed_capabilities(c: &Container, allow: &[String]) -> Vec<Raw> {
    let allow: Vec<String> = allow.iter().map(|a| capability_name(a)).collect();
    c.cap_add
        .iter()
        .enumerate()
        .filter_map(|(i, cap)| {
            let name = capability_name(cap);
            if name == "ALL" {
                Some(violation(
                    format!("cap_add[{i}]"),
                    "`cap_add` contains `ALL`: every capability is added",
                ))
            } else if allow.contains(&name) {
                None
            } else {
                Some(violation(
                    format!("cap_add[{i}]"),
                    format!(
                        "capability `{name}` is not allowed ({})",
                        allowed_text(&allow)
                    ),
                ))
            }
        })
        .collect()
}

fn allowed_text(allow: &[String]) -> String {
    if allow.is_empty() {
        "the policy allows none".to_string()
    } else {
        format!("allowed: {}", allow.join(", "))
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether a normalised `registry/repository` name is allowed: `*` allows any; a glob
/// matches the whole name; any other entry is a prefix ending at a path component
/// (`registry.example.com/shop` allows `registry.example.com/shop/web`, not
/// `registry.example.com/shopping`).
pub fn registry_allowed(name: &str, allow: &[String]) -> bool {
    allow.iter().any(|a| {
        let a = a.trim_end_matches('/');
        if is_glob(a) {
            glob::Pattern::new(a).is_ok_and(|p| p.matches(name))
        } else {
            name == a || name.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
        }
    })
}

fn image_signature(c: &Container, facts: &Facts, host: &HostContext) -> Option<Raw> {
    let name = c.image_ref.as_ref().map_or(c.image.clone(), |r| r.name());
    match &facts.signature {
        SignatureFact::Verified => None,
        SignatureFact::Failed(reason) => Some(violation(
            "image",
            format!("the signature of image `{name}` does not verify: {reason}"),
        )),
        SignatureFact::Unknown => {
            let against = match (host.trusted_keys, host.trusted_identities) {
                (false, false) => {
                    return Some(not_checked(
                        "image",
                        format!(
                            "no trusted keys are configured (`policy.trusted_keys`), nor keyless identities (`policy.trusted_identities` with `policy.trusted_root`): the signature of image `{name}` cannot be checked"
                        ),
                    ));
                }
                (true, false) => "trusted keys",
                (false, true) => "trusted keyless identities",
                (true, true) => "trusted keys and keyless identities",
            };
            Some(not_checked(
                "image",
                format!(
                    "the signature of image `{name}` is verified at pull time against the node's {against}"
                ),
            ))
        }
    }
}

fn host_paths(c: &Container, allow: &[String], deny: &DenyList) -> Vec<Raw> {
    let mut out = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let MountSource::Bind { path } = &m.source else {
            continue;
        };
        let norm = hostpath::normalize(path);
        let shown = if &norm == path {
            format!("`{path}`")
        } else {
            format!("`{path}` (`{norm}`)")
        };
        let key = format!("mounts[{i}].bind");
        if let Some(d) = deny.denies(&norm) {
            out.push(violation(
                key,
                format!("bind source {shown} is on the host-path deny list (`{d}`)"),
            ));
        } else if !hostpath::allowed(&norm, allow) {
            out.push(violation(
                key,
                format!(
                    "bind source {shown} is not inside an allowed host path ({})",
                    allowed_text(allow)
                ),
            ));
        } else {
            // Allowed as written; where symlinks lead is only known on the host.
            out.push(not_checked(
                key,
                format!(
                    "bind source {shown} is inside an allowed host path as written; symbolic links are resolved and the path checked again at apply"
                ),
            ));
        }
    }
    out
}

fn devices(c: &Container, allow: &[String]) -> Vec<Raw> {
    c.devices
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            let host = hostpath::normalize(&d.host);
            !allow.iter().any(|a| {
                if is_glob(a) {
                    glob::Pattern::new(a).is_ok_and(|p| p.matches(&host))
                } else {
                    hostpath::normalize(a) == host
                }
            })
        })
        .map(|(i, d)| {
            violation(
                format!("devices[{i}]"),
                format!(
                    "device `{}` is not allowed ({})",
                    d.host,
                    allowed_text(allow)
                ),
            )
        })
        .collect()
}

fn sysctls(c: &Container) -> Vec<Raw> {
    let mut out = Vec::new();
    for k in c.sysctls.keys() {
        let name = k.replace('/', ".");
        let key = format!("sysctls.{k}");
        if !SAFE_SYSCTLS.contains(&name.as_str()) {
            out.push(violation(
                key,
                format!("sysctl `{k}` is not in the Pod Security safe set"),
            ));
        } else if c.network_mode == NetworkMode::Host && name.starts_with("net.") {
            out.push(violation(
                key,
                format!("sysctl `{k}` would change the host: the container shares the host's network namespace"),
            ));
        }
    }
    out
}

/// Whether an env entry holds a literal secret: its key names one and its value is not
/// empty. A `*_FILE` key pointing into /run/secrets/ names a file, not a secret.
pub fn is_secret_env(key: &str, value: &str) -> bool {
    let up = key.to_ascii_uppercase();
    !value.is_empty()
        && SECRET_KEY_PARTS.iter().any(|p| up.contains(p))
        && !(up.ends_with("_FILE") && value.starts_with("/run/secrets/"))
}
