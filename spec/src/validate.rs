//! Cross-object validation: duplicate names, references, dependency cycles, host-port
//! clashes, network mode rules and file references. Works on the assembled state, so
//! every rule sees the whole tree; each problem is one located diagnostic.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Diagnostic, Kind, Location, suggest};
use crate::model::*;
use crate::parse::FileObjects;
use crate::select::NodeIdentity;
use crate::types::{NetworkMode, Update};

/// Merges the objects of every file; a second definition of a name is an error at the
/// second one, naming the first.
pub(crate) fn assemble(
    files: Vec<(String, FileObjects)>,
    diags: &mut Vec<Diagnostic>,
) -> DesiredState {
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
    merge(
        Kind::Container,
        all.containers,
        |c| (&c.name, &c.origin),
        &mut state.containers,
        diags,
    );
    merge(
        Kind::Network,
        all.networks,
        |n| (&n.name, &n.origin),
        &mut state.networks,
        diags,
    );
    merge(
        Kind::Volume,
        all.volumes,
        |v| (&v.name, &v.origin),
        &mut state.volumes,
        diags,
    );
    merge(
        Kind::Secret,
        all.secrets,
        |s| (&s.name, &s.origin),
        &mut state.secrets,
        diags,
    );
    state
}

/// Inserts objects by name in location order; a second definition is an error at the
/// second one, naming the first.
fn merge<T>(
    kind: Kind,
    mut items: Vec<T>,
    id: impl Fn(&T) -> (&String, &Location),
    into: &mut BTreeMap<String, T>,
    diags: &mut Vec<Diagnostic>,
) {
    items.sort_by(|a, b| id(a).1.cmp(id(b).1));
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
                    format!("`ports` cannot be used with network_mode = \"{}\": the container has no network namespace of its own to publish from", c.network_mode),
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
    cycles(state, diags);
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

/// Reports each dependency cycle once, at the first `depends_on` (in file and line
/// order) among the containers of the cycle, naming the whole cycle.
fn cycles(state: &DesiredState, diags: &mut Vec<Diagnostic>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = state
        .containers
        .keys()
        .map(|k| (k.as_str(), Mark::New))
        .collect();
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut order: Vec<&Container> = state.containers.values().collect();
    order.sort_by(|a, b| a.origin.cmp(&b.origin));

    fn visit<'a>(
        state: &'a DesiredState,
        name: &'a str,
        stack: &mut Vec<&'a str>,
        marks: &mut BTreeMap<&'a str, Mark>,
        found: &mut Vec<Vec<&'a str>>,
    ) {
        marks.insert(name, Mark::Active);
        stack.push(name);
        if let Some(c) = state.containers.get(name) {
            for d in &c.depends_on {
                let Some((dname, _)) = state.containers.get_key_value(d) else {
                    continue;
                };
                match marks.get(dname.as_str()).copied() {
                    Some(Mark::Active) => {
                        if let Some(pos) = stack.iter().position(|s| *s == dname) {
                            found.push(stack[pos..].to_vec());
                        }
                    }
                    Some(Mark::New) => visit(state, dname, stack, marks, found),
                    _ => {}
                }
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
    }

    for c in &order {
        if marks.get(c.name.as_str()).copied() != Some(Mark::New) {
            continue;
        }
        let mut found = Vec::new();
        visit(state, &c.name, &mut Vec::new(), &mut marks, &mut found);
        for cycle in found {
            let mut key: Vec<String> = cycle.iter().map(|s| s.to_string()).collect();
            key.sort();
            if !seen.insert(key) {
                continue;
            }
            // Start the cycle at its member defined first.
            let Some(first) = cycle
                .iter()
                .filter_map(|n| state.containers.get(*n))
                .min_by(|a, b| a.origin.cmp(&b.origin))
            else {
                continue;
            };
            let start = cycle.iter().position(|n| *n == first.name).unwrap_or(0);
            let mut path: Vec<&str> = cycle[start..]
                .iter()
                .chain(cycle[..start].iter())
                .copied()
                .collect();
            path.push(&first.name);
            diags.push(err(
                first,
                "depends_on",
                format!("dependency cycle: {}", path.join(" -> ")),
            ));
        }
    }
}

/// Host-port clashes between containers that can land on the same node: with a node
/// given, those targeting it; without, those whose `nodes` are identical.
fn port_clashes(state: &DesiredState, node: Option<&NodeIdentity>, diags: &mut Vec<Diagnostic>) {
    let mut order: Vec<&Container> = state
        .containers
        .values()
        .filter(|c| node.is_none_or(|n| c.targets(n)))
        .collect();
    order.sort_by(|a, b| a.origin.cmp(&b.origin));
    for (j, later) in order.iter().enumerate() {
        for earlier in &order[..j] {
            if node.is_none() && earlier.nodes != later.nodes {
                continue;
            }
            for (pi, p) in later.ports.iter().enumerate() {
                if let Some(q) = earlier.ports.iter().find(|q| q.clashes_with(p)) {
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
            }
        }
    }
}

fn subnet_overlaps(state: &DesiredState, diags: &mut Vec<Diagnostic>) {
    let mut nets: Vec<&Network> = state
        .networks
        .values()
        .filter(|n| n.subnet.is_some())
        .collect();
    nets.sort_by(|a, b| a.origin.cmp(&b.origin));
    for (j, later) in nets.iter().enumerate() {
        for earlier in &nets[..j] {
            if let (Some(a), Some(b)) = (earlier.subnet, later.subnet)
                && a.overlaps(&b)
            {
                diags.push(
                    Diagnostic::new(
                        &later.origin,
                        format!(
                            "network `{}`: subnet {b} overlaps network `{}` ({a})",
                            later.name, earlier.name
                        ),
                    )
                    .object(Kind::Network, &later.name)
                    .key("subnet"),
                );
            }
        }
    }
}
