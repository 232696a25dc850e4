//! The `depends_on` graph: cycles and chain depth, by walks that keep their own stack,
//! so no tree — a 60,000-long cycle, a chain as long as the object limit allows — can
//! overflow the thread's stack. Both walks are linear in containers plus edges.

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Kind};
use crate::limits::MAX_DEPENDENCY_DEPTH;
use crate::model::{Container, DesiredState};

/// Names shown in a message about a chain or cycle before it is shortened.
const SHOWN: usize = 8;

/// The containers as numbered nodes, each with the nodes it depends on (edges to names
/// outside the tree are left out: another rule reports them).
struct Graph<'a> {
    nodes: Vec<&'a Container>,
    edges: Vec<Vec<usize>>,
}

impl<'a> Graph<'a> {
    fn new(state: &'a DesiredState) -> Self {
        let nodes: Vec<&Container> = state.containers.values().collect();
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let edges = nodes
            .iter()
            .map(|c| {
                let mut e: Vec<usize> = c
                    .depends_on
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect();
                e.sort_unstable();
                e.dedup();
                e
            })
            .collect();
        Graph { nodes, edges }
    }

    /// Strongly connected components (Tarjan's algorithm with an explicit stack), as
    /// lists of nodes; a component is a cycle when it has two nodes or more, or one
    /// that depends on itself.
    fn cyclic_components(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.nodes.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        let mut next = 0;
        let mut out = Vec::new();
        // (node, position of the next edge to follow)
        let mut calls: Vec<(usize, usize)> = Vec::new();
        for root in 0..n {
            if index[root] != UNSEEN {
                continue;
            }
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            calls.push((root, 0));
            while let Some(&mut (v, ref mut edge)) = calls.last_mut() {
                if let Some(&w) = self.edges[v].get(*edge) {
                    *edge += 1;
                    if index[w] == UNSEEN {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 || self.edges[v].contains(&v) {
                        out.push(component);
                    }
                }
            }
        }
        out
    }

    /// A shortest cycle through `start` inside `component` (breadth first), as the
    /// nodes from `start` round to the last one before `start` again.
    fn cycle_through(&self, start: usize, component: &[usize]) -> Vec<usize> {
        let mut inside = vec![false; self.nodes.len()];
        for &c in component {
            inside[c] = true;
        }
        let mut parent = vec![usize::MAX; self.nodes.len()];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = start;
        'search: while let Some(v) = queue.pop_front() {
            for &w in &self.edges[v] {
                if w == start {
                    last = v;
                    break 'search;
                }
                if inside[w] && parent[w] == usize::MAX {
                    parent[w] = v;
                    queue.push_back(w);
                }
            }
        }
        let mut path = vec![last];
        while let Some(&v) = path.last() {
            if v == start || parent[v] == usize::MAX {
                break;
            }
            path.push(parent[v]);
        }
        path.reverse();
        path
    }
}

/// `a -> b -> c`, with the middle left out of long lists.
fn chain(names: &[&str]) -> String {
    if names.len() <= SHOWN + 2 {
        return names.join(" -> ");
    }
    format!(
        "{} -> … ({} more) -> {}",
        names[..SHOWN].join(" -> "),
        names.len() - SHOWN - 1,
        names[names.len() - 1]
    )
}

fn at_depends_on(c: &Container, message: String) -> Diagnostic {
    Diagnostic::new(
        c.key_location("depends_on"),
        format!("container `{}`: {message}", c.name),
    )
    .object(Kind::Container, &c.name)
    .key("depends_on")
}

/// Reports each dependency cycle once — each set of containers that depend on each
/// other round a loop — at the `depends_on` of its member defined first (in file and
/// line order), naming a cycle through that member. Then reports chains deeper than
/// [`MAX_DEPENDENCY_DEPTH`] at the container where one first crosses the limit.
pub(crate) fn check(state: &DesiredState, diags: &mut Vec<Diagnostic>) {
    let g = Graph::new(state);
    let mut in_cycle = vec![false; g.nodes.len()];
    let mut found = Vec::new();
    for component in g.cyclic_components() {
        for &c in &component {
            in_cycle[c] = true;
        }
        let Some(&first) = component.iter().min_by(|a, b| {
            let (a, b) = (g.nodes[**a], g.nodes[**b]);
            a.origin.cmp(&b.origin)
        }) else {
            continue;
        };
        let cycle = g.cycle_through(first, &component);
        let mut names: Vec<&str> = cycle.iter().map(|&i| g.nodes[i].name.as_str()).collect();
        names.push(&g.nodes[first].name);
        let message = if cycle.len() > SHOWN {
            format!(
                "dependency cycle of {} containers: {}",
                cycle.len(),
                chain(&names)
            )
        } else {
            format!("dependency cycle: {}", chain(&names))
        };
        found.push(at_depends_on(g.nodes[first], message));
    }
    diags.extend(found);
    depth(&g, &in_cycle, diags);
}

/// Longest chains, dependencies first (Kahn's algorithm); containers in a cycle, and
/// those that depend on one, have no depth and are left to the cycle's error.
fn depth(g: &Graph<'_>, in_cycle: &[bool], diags: &mut Vec<Diagnostic>) {
    let n = g.nodes.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (v, deps) in g.edges.iter().enumerate() {
        pending[v] = deps.len();
        for &d in deps {
            dependents[d].push(v);
        }
    }
    let mut depth = vec![0usize; n];
    // The dependency a node's depth comes through, to show the chain.
    let mut via = vec![usize::MAX; n];
    let mut ready: Vec<usize> = (0..n)
        .filter(|&v| pending[v] == 0 && !in_cycle[v])
        .collect();
    while let Some(v) = ready.pop() {
        if depth[v] == MAX_DEPENDENCY_DEPTH + 1 {
            let mut names = vec![g.nodes[v].name.as_str()];
            let mut at = v;
            while via[at] != usize::MAX {
                at = via[at];
                names.push(&g.nodes[at].name);
            }
            diags.push(at_depends_on(
                g.nodes[v],
                format!(
                    "its `depends_on` chain is {} links deep, over the limit of {MAX_DEPENDENCY_DEPTH}: {}",
                    depth[v],
                    chain(&names)
                ),
            ));
        }
        for &w in &dependents[v] {
            if depth[v] + 1 > depth[w] {
                depth[w] = depth[v] + 1;
                via[w] = v;
            }
            pending[w] -= 1;
            if pending[w] == 0 && !in_cycle[w] {
                ready.push(w);
            }
        }
    }
}
