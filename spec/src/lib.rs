//! `berth-spec`: the spec model berth reads from a Git repository, with strict parsing,
//! located errors and semantic validation, plus the node configuration.
//!
//! Everything here is pure over in-memory `(path, text)` pairs: [`check`] parses and
//! validates a [`Tree`] into a [`DesiredState`] and every [`Diagnostic`] found, sorted by
//! file and line. [`loader`] is the thin layer that reads a directory into a `Tree`.

pub mod diag;
pub mod loader;
pub mod model;
pub mod node;
mod parse;
mod read;
pub mod reference;
#[cfg(test)]
mod rule_tests;
pub mod select;
pub mod types;
mod validate;

use std::collections::BTreeSet;

pub use diag::{Diagnostic, Kind, Location};
pub use model::*;
pub use parse::{CAPABILITIES, valid_name};
pub use select::NodeIdentity;

/// One spec file: its path relative to the spec root, and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// A spec tree in memory: the `*.toml` sources, and the paths (relative, `/`-separated)
/// of every regular file under the root, for file references such as secrets.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub sources: Vec<SourceFile>,
    pub files: BTreeSet<String>,
}

impl Tree {
    /// A tree made of sources only (every source also counts as a file).
    pub fn from_sources(sources: Vec<SourceFile>) -> Tree {
        let files = sources.iter().map(|s| s.path.clone()).collect();
        Tree { sources, files }
    }
}

/// The result of checking a tree: the state (with whatever could be read) and all errors.
#[derive(Debug, Clone)]
pub struct Checked {
    pub state: DesiredState,
    pub errors: Vec<Diagnostic>,
}

impl Checked {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Parses and validates a tree. With a node, the rules that depend on where containers
/// land (port clashes, dependencies) consider only the containers targeting it.
pub fn check(tree: &Tree, node: Option<&NodeIdentity>) -> Checked {
    let mut errors = Vec::new();
    let mut sources: Vec<&SourceFile> = tree.sources.iter().collect();
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    let mut per_file = Vec::new();
    for s in sources {
        let (objs, diags) = parse::parse_file(&s.path, &s.text);
        errors.extend(diags);
        per_file.push((s.path.clone(), objs));
    }
    let state = validate::assemble(per_file, &mut errors);
    validate::validate(&state, &tree.files, node, &mut errors);
    diag::sort(&mut errors);
    Checked { state, errors }
}
