//! Parsing one spec file into objects: TOML syntax, known keys, types and per-value rules.
//!
//! Cross-object rules (references, cycles, duplicates, port clashes) are in `validate`.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, Kind, Location};
use crate::model::*;
use crate::read::{Reader, Scope, Src, collect_keys};
use crate::reference::Reference;
use crate::types::*;

const CONTAINER_KEYS: &[&str] = &[
    "image",
    "user",
    "entrypoint",
    "command",
    "workdir",
    "env",
    "hostname",
    "restart",
    "read_only",
    "cap_drop",
    "cap_add",
    "no_new_privileges",
    "privileged",
    "seccomp",
    "network_mode",
    "networks",
    "ports",
    "depends_on",
    "stop_signal",
    "stop_timeout",
    "labels",
    "nodes",
    "update",
    "update_timeout",
    "devices",
    "ulimits",
    "sysctls",
    "extra_hosts",
    "resources",
    "health",
    "mounts",
    "secrets",
];
const RESOURCE_KEYS: &[&str] = &["memory", "cpus", "pids"];
const HEALTH_KEYS: &[&str] = &[
    "exec",
    "tcp",
    "http",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
const MOUNT_KEYS: &[&str] = &["volume", "bind", "tmpfs", "target", "read_only", "size"];
const SECRET_MOUNT_KEYS: &[&str] = &["name", "target"];
const NODES_KEYS: &[&str] = &["names", "labels"];
const NETWORK_KEYS: &[&str] = &["subnet"];
const VOLUME_KEYS: &[&str] = &[];
const SECRET_KEYS: &[&str] = &["file"];
const TOP_KEYS: &[&str] = &["container", "network", "volume", "secret"];

/// Checks an object name against `^[a-z0-9][a-z0-9_.-]{0,62}$`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// The objects of one file, in the order they appear.
#[derive(Debug, Default)]
pub(crate) struct FileObjects {
    pub containers: Vec<Container>,
    pub networks: Vec<Network>,
    pub volumes: Vec<Volume>,
    pub secrets: Vec<Secret>,
}

/// Parses one spec file. Syntax errors stop at the first one (TOML cannot be read past
/// it reliably); every other problem is collected.
pub(crate) fn parse_file(file: &str, text: &str) -> (FileObjects, Vec<Diagnostic>) {
    let src = Src::new(file, text);
    let mut out = FileObjects::default();
    let mut doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let loc = src.loc(e.span().unwrap_or(0..0));
            let msg = e.message().trim().trim_end_matches('.').to_string();
            src.push(Diagnostic::new(&loc, format!("TOML syntax error: {msg}")));
            return (out, src.diags.into_inner());
        }
    };
    crate::limits::cap_tables(&src, &mut doc);
    let top = Reader::new(
        &src,
        doc.get_ref(),
        Scope::default(),
        src.loc(0..0),
        TOP_KEYS,
    );
    for kind in Kind::ALL {
        let Some((table, _)) = top.table(kind.as_str()) else {
            continue;
        };
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            let at = src.loc(key.span());
            if !valid_name(name) {
                src.push(
                    Diagnostic::new(
                        &at,
                        format!(
                            "invalid {kind} name `{name}`: names use lowercase letters, digits, `_`, `.` and `-`, start with a letter or digit, and have at most 63 characters"
                        ),
                    )
                    .object(kind, name),
                );
            }
            let DeValue::Table(body) = value.get_ref() else {
                src.push(
                    Diagnostic::new(
                        &at,
                        format!("{kind} `{name}` must be a table ([{kind}.{name}])"),
                    )
                    .object(kind, name),
                );
                continue;
            };
            match kind {
                Kind::Container => {
                    if let Some(c) = container(&src, name, body, at) {
                        out.containers.push(c);
                    }
                }
                Kind::Network => {
                    let r = Reader::new(
                        &src,
                        body,
                        Scope::object(kind, name),
                        at.clone(),
                        NETWORK_KEYS,
                    );
                    let subnet = r.string("subnet").and_then(|(s, loc)| {
                        parse_cidr(&s)
                            .map_err(|e| r.value_error(&loc, "subnet", e))
                            .ok()
                    });
                    out.networks.push(Network {
                        name: name.to_string(),
                        origin: at,
                        subnet,
                    });
                }
                Kind::Volume => {
                    Reader::new(
                        &src,
                        body,
                        Scope::object(kind, name),
                        at.clone(),
                        VOLUME_KEYS,
                    );
                    out.volumes.push(Volume {
                        name: name.to_string(),
                        origin: at,
                    });
                }
                Kind::Secret => {
                    let r = Reader::new(
                        &src,
                        body,
                        Scope::object(kind, name),
                        at.clone(),
                        SECRET_KEYS,
                    );
                    let file = r
                        .required_string("file")
                        .map(|(f, _)| f)
                        .unwrap_or_default();
                    out.secrets.push(Secret {
                        name: name.to_string(),
                        origin: at,
                        file,
                    });
                }
            }
        }
    }
    (out, src.diags.into_inner())
}

/// Applies a value parser, recording its error at the value under the key's name.
fn check<T>(
    r: &Reader<'_, '_, '_>,
    key: &str,
    v: Option<(String, Location)>,
    f: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    let (s, loc) = v?;
    match f(&s) {
        Ok(t) => Some(t),
        Err(e) => {
            r.value_error(&loc, key, e);
            None
        }
    }
}

/// An array of strings each parsed by `f`; a bad element is an error at that element.
fn parsed_list<T>(
    r: &Reader<'_, '_, '_>,
    key: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let Some((items, _)) = r.strings(key) else {
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, (s, loc))| {
            f(&s)
                .map_err(|e| r.value_error(&loc, &format!("{key}[{i}]"), e))
                .ok()
        })
        .collect()
}

fn list(r: &Reader<'_, '_, '_>, key: &str) -> Option<Vec<String>> {
    r.strings(key)
        .map(|(v, _)| v.into_iter().map(|(s, _)| s).collect())
}

fn container(src: &Src<'_>, name: &str, body: &DeTable<'_>, at: Location) -> Option<Container> {
    let r = Reader::new(
        src,
        body,
        Scope::object(Kind::Container, name),
        at.clone(),
        CONTAINER_KEYS,
    );
    let mut keys = BTreeMap::new();
    collect_keys(src, body, "", &mut keys);

    let image_raw = r.required_string("image");
    let image_ref = image_raw
        .as_ref()
        .and_then(|(s, loc)| match Reference::parse(s) {
            Ok(reference) => Some(reference),
            Err(e) => {
                r.value_error(loc, "image", format!("invalid image reference `{s}`: {e}"));
                None
            }
        });
    let user = r.string("user").and_then(|(u, loc)| {
        validate_user(&u)
            .map_err(|e| r.value_error(&loc, "user", e))
            .ok()
            .map(|()| u)
    });
    let workdir = r.string("workdir").and_then(|(w, loc)| {
        if w.starts_with('/') {
            Some(w)
        } else {
            r.error(
                &loc,
                "workdir",
                format!("`workdir` must be an absolute path, found `{w}`"),
            );
            None
        }
    });
    let hostname = r
        .string("hostname")
        .and_then(|(h, loc)| {
            let ok = !h.is_empty() && h.len() <= 63
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !h.starts_with('-');
            if ok {
                Some(h)
            } else {
                r.value_error(&loc, "hostname", format!("invalid hostname `{h}`: use letters, digits, `-` and `.`, at most 63 characters"));
                None
            }
        })
        .unwrap_or_else(|| name.to_string());

    let ports = parsed_list(&r, "ports", parse_port_spec);
    let devices = parsed_list(&r, "devices", parse_device);
    let extra_hosts = parsed_list(&r, "extra_hosts", parse_extra_host);
    let mut ulimits = BTreeMap::new();
    if let Some(map) = r.string_map("ulimits", false) {
        for (k, (v, loc)) in map {
            if !ULIMIT_NAMES.contains(&k.as_str()) {
                let hint = crate::diag::suggest(&k, ULIMIT_NAMES)
                    .map(|s| format!(", did you mean `{s}`?"))
                    .unwrap_or_else(|| format!(" (known: {})", ULIMIT_NAMES.join(", ")));
                r.error(
                    &loc,
                    &format!("ulimits.{k}"),
                    format!("unknown ulimit `{k}`{hint}"),
                );
                continue;
            }
            match parse_ulimit(&v) {
                Ok(u) => {
                    ulimits.insert(k, u);
                }
                Err(e) => r.value_error(&loc, &format!("ulimits.{k}"), e),
            }
        }
    }
    let mut sysctls = BTreeMap::new();
    if let Some(map) = r.string_map("sysctls", true) {
        for (k, (v, loc)) in map {
            let ok = k.contains('.')
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
            if ok {
                sysctls.insert(k, v);
            } else {
                r.error(
                    &loc,
                    &format!("sysctls.{k}"),
                    format!("invalid sysctl name `{k}`"),
                );
            }
        }
    }
    let env = r
        .string_map("env", true)
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, (v, loc))| {
                    let ok = !k.is_empty() && !k.contains('=') && !k.contains('\0');
                    if !ok {
                        r.error(
                            &loc,
                            &format!("env.{k}"),
                            format!("invalid environment variable name `{k}`"),
                        );
                    }
                    ok.then_some((k, v))
                })
                .collect()
        })
        .unwrap_or_default();
    let labels = r
        .string_map("labels", true)
        .map(|m| m.into_iter().map(|(k, (v, _))| (k, v)).collect())
        .unwrap_or_default();

    let cap = |key: &str| -> Vec<String> {
        let mut out = Vec::new();
        if let Some((items, _)) = r.strings(key) {
            for (i, (c, loc)) in items.into_iter().enumerate() {
                let bare = c.to_ascii_uppercase();
                let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
                if bare == "ALL" || CAPABILITIES.contains(&bare) {
                    out.push(c);
                } else {
                    let hint = crate::diag::suggest(bare, CAPABILITIES)
                        .map(|s| format!(", did you mean `{s}`?"))
                        .unwrap_or_default();
                    r.value_error(
                        &loc,
                        &format!("{key}[{i}]"),
                        format!("unknown capability `{c}`{hint}"),
                    );
                }
            }
        }
        out
    };
    let cap_drop = cap("cap_drop");
    let cap_add = cap("cap_add");

    let seccomp = match r.string("seccomp") {
        Some((s, _)) if s == "default" => Seccomp::Default,
        Some((s, _)) if s == "unconfined" => Seccomp::Unconfined,
        Some((s, _)) => Seccomp::Profile(s),
        None => Seccomp::Default,
    };

    let nodes = r.table("nodes").map(|(t, loc)| {
        let n = r.child(t, "nodes", loc, NODES_KEYS);
        let names = n
            .strings("names")
            .map(|(v, _)| {
                v.into_iter()
                    .filter_map(|(g, gloc)| match glob::Pattern::new(&g) {
                        Ok(_) => Some(g),
                        Err(e) => {
                            n.value_error(&gloc, "names", format!("invalid name glob `{g}`: {e}"));
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let labels = n
            .string_map("labels", true)
            .map(|m| m.into_iter().map(|(k, (v, _))| (k, v)).collect())
            .unwrap_or_default();
        NodeSelector { names, labels }
    });

    let resources = r
        .table("resources")
        .map(|(t, loc)| {
            let rr = r.child(t, "resources", loc, RESOURCE_KEYS);
            let memory = check(&rr, "memory", rr.string("memory"), |s| {
                let v = parse_size(s)?;
                if v < 6 << 20 {
                    return Err(format!(
                        "memory limit `{s}` is below the 6MiB minimum the OCI runtimes accept"
                    ));
                }
                Ok(v)
            });
            let cpus = rr.number("cpus").and_then(|(c, loc)| {
                if c > 0.0 && c <= 1024.0 {
                    Some(c)
                } else {
                    rr.error(
                        &loc,
                        "cpus",
                        format!(
                            "`resources.cpus` must be greater than 0 and at most 1024, found {c}"
                        ),
                    );
                    None
                }
            });
            let pids = rr.integer("pids").and_then(|(p, loc)| {
                if p >= 1 {
                    Some(p)
                } else {
                    rr.error(
                        &loc,
                        "pids",
                        format!("`resources.pids` must be at least 1, found {p}"),
                    );
                    None
                }
            });
            Resources { memory, cpus, pids }
        })
        .unwrap_or_default();

    let health = r.table("health").and_then(|(t, loc)| health(&r, t, loc));

    let mut mounts = Vec::new();
    for (i, (t, loc)) in r.tables("mounts").into_iter().enumerate() {
        if let Some(m) = mount(&r, t, loc, i) {
            mounts.push(m);
        }
    }
    let mut secrets = Vec::new();
    for (i, (t, loc)) in r.tables("secrets").into_iter().enumerate() {
        let s = r.child(t, &format!("secrets[{i}]"), loc, SECRET_MOUNT_KEYS);
        let name = s.required_string("name");
        let target = match s.string("target") {
            Some((t, tloc)) => {
                if t.is_empty() || t.contains('/') || t == "." || t == ".." || t.contains('\0') {
                    s.error(&tloc, "target", format!("secret target `{t}` must be a single file name (no `/`, not `.` or `..`); it is placed in /run/secrets/"));
                    None
                } else {
                    Some(t)
                }
            }
            None => name.as_ref().map(|(n, _)| n.clone()),
        };
        if let (Some((name, _)), Some(target)) = (name, target) {
            secrets.push(SecretMount { name, target });
        }
    }

    let network_mode = check(
        &r,
        "network_mode",
        r.string("network_mode"),
        NetworkMode::parse,
    )
    .unwrap_or_default();
    let networks = list(&r, "networks").unwrap_or_default();
    let networks = if networks.is_empty() && network_mode == NetworkMode::Bridge {
        vec![DEFAULT_NETWORK.to_string()]
    } else {
        networks
    };

    Some(Container {
        name: name.to_string(),
        origin: at,
        keys,
        image: image_raw.map(|(s, _)| s).unwrap_or_default(),
        image_ref,
        user,
        entrypoint: list(&r, "entrypoint"),
        command: list(&r, "command"),
        workdir,
        env,
        hostname,
        restart: check(&r, "restart", r.string("restart"), Restart::parse).unwrap_or_default(),
        read_only: r.bool("read_only").map(|(b, _)| b).unwrap_or(false),
        cap_drop,
        cap_add,
        no_new_privileges: r.bool("no_new_privileges").map(|(b, _)| b).unwrap_or(true),
        privileged: r.bool("privileged").map(|(b, _)| b).unwrap_or(false),
        seccomp,
        network_mode,
        networks,
        ports,
        depends_on: list(&r, "depends_on").unwrap_or_default(),
        stop_signal: check(&r, "stop_signal", r.string("stop_signal"), parse_signal)
            .unwrap_or_default(),
        stop_timeout: check(&r, "stop_timeout", r.string("stop_timeout"), parse_duration)
            .unwrap_or(std::time::Duration::from_secs(10)),
        labels,
        nodes,
        update: check(&r, "update", r.string("update"), Update::parse).unwrap_or_default(),
        update_timeout: check(&r, "update_timeout", r.string("update_timeout"), |s| {
            let d = parse_duration(s)?;
            if d < Duration::from_secs(1) {
                return Err(format!(
                    "`{s}` is shorter than 1s: an update needs time to start"
                ));
            }
            if d > UPDATE_TIMEOUT_MAX {
                return Err(format!(
                    "`{s}` is longer than {}: a pass waits for the update",
                    format_duration(UPDATE_TIMEOUT_MAX)
                ));
            }
            Ok(d)
        })
        .unwrap_or(UPDATE_TIMEOUT),
        devices,
        ulimits,
        sysctls,
        extra_hosts,
        resources,
        health,
        mounts,
        secrets,
    })
}

/// `uid[:gid]` (numbers, as runc reads them: see [`crate::user`]) or names resolved
/// later in the image's /etc/passwd and /etc/group.
fn validate_user(u: &str) -> Result<(), String> {
    let part_ok = |p: &str| match crate::user::parse_id(p) {
        Ok(crate::user::Id::Number(_)) => Ok(()),
        Ok(crate::user::Id::Name(n)) => {
            let ok = !n.is_empty()
                && n.len() <= 32
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                && !n.starts_with('-');
            if ok { Ok(()) } else { Err(None) }
        }
        Err(e) => Err(Some(e)),
    };
    let bad = || format!("invalid user `{u}`: expected `uid[:gid]` or a user name from the image");
    let parts = match u.split_once(':') {
        Some((a, b)) => [Some(a), Some(b)],
        None => [Some(u), None],
    };
    for p in parts.into_iter().flatten() {
        match part_ok(p) {
            Ok(()) => {}
            Err(Some(e)) => return Err(format!("invalid user `{u}`: {e}")),
            Err(None) => return Err(bad()),
        }
    }
    Ok(())
}

fn health(r: &Reader<'_, '_, '_>, t: &DeTable<'_>, loc: Location) -> Option<Health> {
    let h = r.child(t, "health", loc.clone(), HEALTH_KEYS);
    let mut probes = Vec::new();
    if let Some((cmd, cloc)) = h.strings("exec") {
        if cmd.is_empty() {
            h.error(&cloc, "exec", "`health.exec` must not be empty");
        }
        probes.push(HealthProbe::Exec(cmd.into_iter().map(|(s, _)| s).collect()));
    }
    if let Some((p, ploc)) = h.integer("tcp") {
        if (1..=65535).contains(&p) {
            probes.push(HealthProbe::Tcp(p as u16));
        } else {
            h.error(
                &ploc,
                "tcp",
                format!("`health.tcp` must be a port between 1 and 65535, found {p}"),
            );
            return None;
        }
    }
    if let Some((u, uloc)) = h.string("http") {
        if u.starts_with("http://") {
            probes.push(HealthProbe::Http(u));
        } else {
            h.error(
                &uloc,
                "http",
                format!("`health.http` must be an http:// URL, found `{u}`"),
            );
            return None;
        }
    }
    let probe = match probes.len() {
        1 => probes.remove(0),
        0 => {
            h.error(&loc, "", "`health` needs one of `exec`, `tcp` or `http`");
            return None;
        }
        _ => {
            h.error(
                &loc,
                "",
                "`health` takes only one of `exec`, `tcp` or `http`",
            );
            return None;
        }
    };
    // Bounded so that a check cannot hold a probe round, a wait or a pass for long,
    // nor probe in a tight loop.
    let dur = |key: &str, def, (min, max): (Duration, Duration)| {
        check(&h, key, h.string(key), |s| {
            let d = parse_duration(s)?;
            if d < min || d > max {
                return Err(format!(
                    "`{s}` is out of range: from {} to {}",
                    format_duration(min),
                    format_duration(max)
                ));
            }
            Ok(d)
        })
        .unwrap_or(def)
    };
    let retries = h
        .integer("retries")
        .and_then(|(n, nloc)| match u32::try_from(n) {
            Ok(n) if (1..=1000).contains(&n) => Some(n),
            _ => {
                h.error(
                    &nloc,
                    "retries",
                    format!("`health.retries` must be from 1 to 1000, found {n}"),
                );
                None
            }
        });
    Some(Health {
        probe,
        interval: dur("interval", HEALTH_INTERVAL, HEALTH_INTERVAL_RANGE),
        timeout: dur("timeout", HEALTH_TIMEOUT, HEALTH_TIMEOUT_RANGE),
        retries: retries.unwrap_or(HEALTH_RETRIES),
        start_period: dur(
            "start_period",
            HEALTH_START_PERIOD,
            HEALTH_START_PERIOD_RANGE,
        ),
    })
}

fn mount(r: &Reader<'_, '_, '_>, t: &DeTable<'_>, loc: Location, i: usize) -> Option<Mount> {
    let m = r.child(t, &format!("mounts[{i}]"), loc.clone(), MOUNT_KEYS);
    let volume = m.string("volume");
    let bind = m.string("bind");
    let tmpfs = m.string("tmpfs");
    let read_only = m.bool("read_only").map(|(b, _)| b).unwrap_or(false);
    let absolute = |key: &str, (p, ploc): &(String, Location)| {
        if p.starts_with('/') {
            true
        } else {
            m.error(
                ploc,
                key,
                format!(
                    "`{}` must be an absolute path, found `{p}`",
                    m.scope.key(key)
                ),
            );
            false
        }
    };
    let count = [volume.is_some(), bind.is_some(), tmpfs.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if count != 1 {
        let msg = if count == 0 {
            "a mount needs one of `volume`, `bind` or `tmpfs`"
        } else {
            "a mount takes only one of `volume`, `bind` or `tmpfs`"
        };
        m.error(&loc, "", msg);
        return None;
    }
    if let (Some(sloc), None) = (m.key_loc("size"), &tmpfs) {
        m.error(&sloc, "size", "`size` applies only to tmpfs mounts");
    }
    if let Some(t) = &tmpfs {
        if let Some(tloc) = m.key_loc("target") {
            m.error(
                &tloc,
                "target",
                "a tmpfs mount takes its target as its value (`tmpfs = \"/tmp\"`); remove `target`",
            );
        }
        if !absolute("tmpfs", t) {
            return None;
        }
        let size = check(&m, "size", m.string("size"), parse_size);
        return Some(Mount {
            source: MountSource::Tmpfs { size },
            target: t.0.clone(),
            read_only,
        });
    }
    let target = m.required_string("target")?;
    if !absolute("target", &target) {
        return None;
    }
    let source = if let Some((v, _)) = volume {
        MountSource::Volume { name: v }
    } else if let Some(b) = bind {
        if !absolute("bind", &b) {
            return None;
        }
        MountSource::Bind { path: b.0 }
    } else {
        return None;
    };
    Some(Mount {
        source,
        target: target.0,
        read_only,
    })
}

/// Linux capability names without the `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];
