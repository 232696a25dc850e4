//! Dependency order: containers start in `depends_on` order and stop in reverse.
//!
//! Kahn's algorithm with the ready set kept sorted by name, so the order is stable: two
//! containers with no path between them always come out alphabetically. Dependencies on
//! names outside the graph are ignored (the planner reports them). Validation rejects
//! cycles before planning; should one reach here anyway, its members are appended in
//! name order rather than looping or dropping them.

use std::collections::{BTreeMap, BTreeSet};

/// Orders `graph` (name → the names it depends on) so every name comes after its
/// dependencies.
pub fn topological(graph: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    // Number of unmet dependencies per node, and who waits on each node.
    let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, deps) in graph {
        let deps: BTreeSet<&str> = deps
            .iter()
            .map(String::as_str)
            .filter(|d| graph.contains_key(*d) && *d != name)
            .collect();
        pending.insert(name, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(name);
        }
    }
    let mut ready: BTreeSet<&str> = pending
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(name, _)| *name)
        .collect();
    let mut out = Vec::with_capacity(graph.len());
    while let Some(name) = ready.pop_first() {
        out.push(name.to_string());
        for d in dependents.get(name).into_iter().flatten() {
            if let Some(n) = pending.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.insert(d);
                }
            }
        }
    }
    // Members of a cycle (and what depends on them) never became ready.
    let placed: BTreeSet<String> = out.iter().cloned().collect();
    out.extend(graph.keys().filter(|k| !placed.contains(*k)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn dependencies_first_then_by_name() {
        let g = graph(&[
            ("web", &["api"]),
            ("api", &["db", "cache"]),
            ("db", &[]),
            ("cache", &[]),
            ("metrics", &[]),
        ]);
        assert_eq!(topological(&g), ["cache", "db", "api", "metrics", "web"]);
    }

    #[test]
    fn stable_under_input_order_of_dependencies() {
        let a = graph(&[("x", &["b", "a"]), ("a", &[]), ("b", &[])]);
        let b = graph(&[("x", &["a", "b"]), ("b", &[]), ("a", &[])]);
        assert_eq!(topological(&a), topological(&b));
        assert_eq!(topological(&a), ["a", "b", "x"]);
    }

    #[test]
    fn unknown_dependencies_and_duplicates_are_ignored() {
        let g = graph(&[("web", &["gone", "db", "db", "web"]), ("db", &[])]);
        assert_eq!(topological(&g), ["db", "web"]);
    }

    #[test]
    fn cycles_terminate_and_keep_every_name() {
        let g = graph(&[("a", &["b"]), ("b", &["a"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(topological(&g), ["d", "a", "b", "c"]);
    }

    #[test]
    fn empty() {
        assert!(topological(&BTreeMap::new()).is_empty());
    }
}
