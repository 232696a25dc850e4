//! Cross-object validation: duplicate names, references, dependency cycles, host-port
//! clashes, network mode rules and file references. Works on the assembled state, so
//! every rule sees the whole tree; each problem is one located diagnostic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::diag::{Diagnostic, Kind, Location, suggest};
use crate::limits::{MAX_OBJECTS, too_many_objects};
use crate::model::*;
use crate::parse::FileObjects;
use crate::select::NodeIdentity;
use crate::types::{Cidr, NetworkMode, PortSpec, Protocol, Update};

/// Merges the objects of every file; a second definition of a name is an error at the
/// second one, naming the first. Of a kind with more objects than the limit, only the
/// first ones are kept; the flag returned is false then.
pub(crate) fn assemble(
    files: Vec<(String, FileObjects)>,
    diags: &mut Vec<Diagnostic>,
) -> (DesiredState, bool) {
    let mut state = DesiredState::default();
    // Files arrive sorted by path; objects within a file in key order, so sort by
    // location to make "first" mean first in file and line order.
    let mut all = FileObjects::default();
    for (path, objs) in files {
        state.files.push(path);
        all.containers.extend(objs.containers);
        all.networks.extend(objs.networks);
        all.volumes.extend(objs.volumes);
        all.secrets.extend(objs.secrets);
    }
    let mut complete = true;
    complete &= merge(
        Kind::Container,
        all.containers,
        |c| (&c.name, &c.origin),
        &mut state.containers,
        diags,
    );
    complete &= merge(
        Kind::Network,
        all.networks,
        |n| (&n.name, &n.origin),
        &mut state.networks,
        diags,
    );
    complete &= merge(
        Kind::Volume,
        all.volumes,
        |v| (&v.name, &v.origin),
        &mut state.volumes,
        diags,
    );
    complete &= merge(
        Kind::Secret,
        all.secrets,
        |s| (&s.name, &s.origin),
        &mut state.secrets,
        diags,
    );
    (state, complete)
}

/// Inserts objects by name in location order; a second definition is an error at the
/// second one, naming the first. Returns false when there were more than the limit.
fn merge<T>(
    kind: Kind,
    mut items: Vec<T>,
    id: impl Fn(&T) -> (&String, &Location),
    into: &mut BTreeMap<String, T>,
    diags: &mut Vec<Diagnostic>,
) -> bool {
    items.sort_by(|a, b| id(a).1.cmp(id(b).1));
    let complete = items.len() <= MAX_OBJECTS;
    if !complete {
        diags.push(too_many_objects(
            kind,
            items.len(),
            id(&items[MAX_OBJECTS]).1,
        ));
        items.truncate(MAX_OBJECTS);
    }
    for item in items {
        let (name, origin) = id(&item);
        if let Some(first) = into.get(name) {
            let first = id(first).1;
            diags.push(
                Diagnostic::new(
                    origin,
                    format!(
                        "{kind} `{name}` is defined twice: first defined at {}:{}",
                        first.file, first.line
                    ),
                )
                .object(kind, name),
            );
        } else {
            into.insert(name.clone(), item);
        }
    }
    complete
}

fn err(c: &Container, key: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic::new(
        c.key_location(key),
        format!("container `{}`: {}", c.name, message.into()),
    )
    .object(Kind::Container, &c.name)
    .key(key)
}

fn undefined(what: Kind, name: &str, defined: &[&str]) -> String {
    let hint = suggest(name, defined)
        .map(|s| format!(", did you mean `{s}`?"))
        .unwrap_or_default();
    format!("{what} `{name}` is not defined{hint}")
}

/// Runs every cross-object rule. `tree_files` holds the paths of all regular files under
/// the spec root (relative), for file references.
pub(crate) fn validate(
    state: &DesiredState,
    tree_files: &BTreeSet<String>,
    node: Option<&NodeIdentity>,
    diags: &mut Vec<Diagnostic>,
) {
    let networks: Vec<&str> = state.networks.keys().map(String::as_str).collect();
    let volumes: Vec<&str> = state.volumes.keys().map(String::as_str).collect();
    let secrets: Vec<&str> = state.secrets.keys().map(String::as_str).collect();
    let containers: Vec<&str> = state.containers.keys().map(String::as_str).collect();

    for c in state.containers.values() {
        let explicit_networks = c.keys.contains_key("networks");
        if explicit_networks {
            for (i, n) in c.networks.iter().enumerate() {
                if n != DEFAULT_NETWORK && !state.networks.contains_key(n) {
                    diags.push(err(
                        c,
                        &format!("networks[{i}]"),
                        undefined(Kind::Network, n, &networks),
                    ));
                }
            }
        }
        if c.network_mode != NetworkMode::Bridge {
            if !c.ports.is_empty() {
                diags.push(err(
                    c,
                    "ports",
                    if c.network_mode == NetworkMode::Host {
                        "`ports` cannot be used with network_mode = \"host\": the container shares the host's network, so its ports are the host's already".to_string()
                    } else {
                        format!("`ports` cannot be used with network_mode = \"{}\": the container has only loopback, so there is nothing to publish", c.network_mode)
                    },
                ));
            }
            if explicit_networks {
                diags.push(err(
                    c,
                    "networks",
                    format!(
                        "`networks` cannot be used with network_mode = \"{}\"",
                        c.network_mode
                    ),
                ));
            }
        }
        if c.update == Update::StartFirst && !c.ports.is_empty() {
            diags.push(err(
                c,
                "update",
                "update = \"start-first\" cannot be used with host `ports`: the old and new instances would need the same host port; use \"stop-first\"",
            ));
        }
        let mut mount_targets: BTreeMap<String, usize> = BTreeMap::new();
        for (i, m) in c.mounts.iter().enumerate() {
            let target = crate::types::normalize_path(&m.target);
            // A tmpfs mount names its target as its value.
            let key = if matches!(m.source, MountSource::Tmpfs { .. }) {
                format!("mounts[{i}].tmpfs")
            } else {
                format!("mounts[{i}].target")
            };
            if target == "/" {
                diags.push(err(
                    c,
                    &key,
                    "a mount cannot replace the container's root filesystem (`/`); mount it on a directory such as `/data`",
                ));
            } else if let Some(&first) = mount_targets.get(&target) {
                diags.push(err(
                    c,
                    &key,
                    format!("mount target `{target}` is used twice (also mounts[{first}]); the later mount would hide the earlier"),
                ));
            } else {
                mount_targets.insert(target, i);
            }
        }
        for (i, m) in c.mounts.iter().enumerate() {
            if let MountSource::Volume { name } = &m.source
                && !state.volumes.contains_key(name)
            {
                diags.push(err(
                    c,
                    &format!("mounts[{i}].volume"),
                    undefined(Kind::Volume, name, &volumes),
                ));
            }
        }
        let mut targets = BTreeMap::new();
        for (i, s) in c.secrets.iter().enumerate() {
            if !state.secrets.contains_key(&s.name) {
                diags.push(err(
                    c,
                    &format!("secrets[{i}].name"),
                    undefined(Kind::Secret, &s.name, &secrets),
                ));
            }
            if let Some(first) = targets.insert(s.target.clone(), i) {
                diags.push(err(
                    c,
                    &format!("secrets[{i}]"),
                    format!(
                        "secret target `{}` is used twice (also secrets[{first}])",
                        s.target
                    ),
                ));
            }
        }
        for (i, d) in c.depends_on.iter().enumerate() {
            if !state.containers.contains_key(d) {
                diags.push(err(
                    c,
                    &format!("depends_on[{i}]"),
                    undefined(Kind::Container, d, &containers),
                ));
            } else if let Some(node) = node
                && c.targets(node)
                && state
                    .containers
                    .get(d)
                    .is_some_and(|dep| !dep.targets(node))
            {
                diags.push(err(
                    c,
                    &format!("depends_on[{i}]"),
                    format!("depends on `{d}`, which does not target this node; `{}` would not start here", c.name),
                ));
            }
        }
        if let Seccomp::Profile(file) = &c.seccomp
            && let Err(e) = check_file_ref(file, tree_files)
        {
            diags.push(err(c, "seccomp", format!("seccomp profile {e}")));
        }
    }
    for s in state.secrets.values() {
        if s.file.is_empty() {
            continue;
        }
        if let Err(e) = check_file_ref(&s.file, tree_files) {
            diags.push(
                Diagnostic::new(&s.origin, format!("secret `{}`: file {e}", s.name))
                    .object(Kind::Secret, &s.name)
                    .key("file"),
            );
        }
    }
    crate::graph::check(state, diags);
    port_clashes(state, node, diags);
    subnet_overlaps(state, diags);
}

/// A file reference must stay inside the spec root and name an existing file.
fn check_file_ref(file: &str, tree_files: &BTreeSet<String>) -> Result<(), String> {
    if file.starts_with('/') {
        return Err(format!(
            "`{file}` must be a path relative to the spec root, not absolute"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for comp in file.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{file}` escapes the spec root"));
                }
            }
            c => parts.push(c),
        }
    }
    let norm = parts.join("/");
    if tree_files.contains(&norm) {
        Ok(())
    } else {
        Err(format!("`{file}` does not exist in the spec tree"))
    }
}

/// Host-port clashes between containers that can land on the same node: with a node
/// given, those targeting it; without, those whose `nodes` are identical. Each port
/// that clashes is reported once, naming the first container (in file and line order)
/// that already publishes it. Ports are grouped by selector, protocol and host port, so
/// the check is linear in the number of ports.
fn port_clashes(state: &DesiredState, node: Option<&NodeIdentity>, diags: &mut Vec<Diagnostic>) {
    /// The first earlier port of a group on any address, on every address, and per
    /// address.
    #[derive(Default)]
    struct Published<'a> {
        any: Option<(&'a Container, &'a PortSpec)>,
        every: Option<(&'a Container, &'a PortSpec)>,
        by_ip: HashMap<IpAddr, (&'a Container, &'a PortSpec)>,
    }
    let mut order: Vec<&Container> = state
        .containers
        .values()
        .filter(|c| node.is_none_or(|n| c.targets(n)))
        .collect();
    order.sort_by(|a, b| a.origin.cmp(&b.origin));
    let mut groups: HashMap<(Option<&NodeSelector>, Protocol, u16), Published<'_>> = HashMap::new();
    let every_address = |p: &PortSpec| p.host_ip.is_none_or(|ip| ip.is_unspecified());
    for later in order {
        // With a node, every container here lands on it: one group for all selectors.
        let selector = if node.is_none() {
            later.nodes.as_ref()
        } else {
            None
        };
        for (pi, p) in later.ports.iter().enumerate() {
            let Some(g) = groups.get(&(selector, p.protocol, p.host_port)) else {
                continue;
            };
            let earlier = if every_address(p) {
                g.any
            } else {
                let same = p.host_ip.and_then(|ip| g.by_ip.get(&ip).copied());
                [g.every, same]
                    .into_iter()
                    .flatten()
                    .min_by(|a, b| a.0.origin.cmp(&b.0.origin))
            };
            let Some((earlier, q)) = earlier.filter(|(_, q)| q.clashes_with(p)) else {
                continue;
            };
            diags.push(err(
                later,
                &format!("ports[{pi}]"),
                format!(
                    "host port {}/{} is already published by container `{}` ({q}, {}:{})",
                    p.host_port,
                    p.protocol,
                    earlier.name,
                    earlier.origin.file,
                    earlier.key_location("ports").line
                ),
            ));
        }
        // Only then this container's own ports: it does not clash with itself.
        for p in &later.ports {
            let g = groups
                .entry((selector, p.protocol, p.host_port))
                .or_default();
            g.any.get_or_insert((later, p));
            if every_address(p) {
                g.every.get_or_insert((later, p));
            } else if let Some(ip) = p.host_ip {
                g.by_ip.entry(ip).or_insert((later, p));
            }
        }
    }
}

/// Overlapping subnets: a network whose subnet overlaps one defined before it (in file
/// and line order) is reported once, naming the first such network. Two subnets overlap
/// when one contains the other, so instead of comparing every pair each subnet visits
/// its (at most 129) enclosing prefixes: linear in the number of networks.
fn subnet_overlaps(state: &DesiredState, diags: &mut Vec<Diagnostic>) {
    let mut nets: Vec<(&Network, Cidr)> = state
        .networks
        .values()
        .filter_map(|n| Some((n, n.subnet?)))
        .collect();
    nets.sort_by(|a, b| a.0.origin.cmp(&b.0.origin));
    // Per subnet: the first network with exactly it, and the first strictly inside it.
    let mut first_exact: HashMap<Cidr, &Network> = HashMap::new();
    let mut first_inside: HashMap<Cidr, &Network> = HashMap::new();
    for &(n, subnet) in &nets {
        first_exact.entry(subnet.network()).or_insert(n);
        for prefix in 0..subnet.prefix {
            first_inside.entry(subnet.with_prefix(prefix)).or_insert(n);
        }
    }
    for &(n, subnet) in &nets {
        let inside = first_inside.get(&subnet.network()).copied();
        let around =
            (0..=subnet.prefix).filter_map(|p| first_exact.get(&subnet.with_prefix(p)).copied());
        let Some(earlier) = around
            .chain(inside)
            .filter(|e| e.origin < n.origin)
            .min_by(|a, b| a.origin.cmp(&b.origin))
        else {
            continue;
        };
        if let Some(a) = earlier.subnet {
            diags.push(
                Diagnostic::new(
                    &n.origin,
                    format!(
                        "network `{}`: subnet {subnet} overlaps network `{}` ({a})",
                        n.name, earlier.name
                    ),
                )
                .object(Kind::Network, &n.name)
                .key("subnet"),
            );
        }
    }
}
