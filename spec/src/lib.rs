//! `berth-spec`: the spec model berth reads from a Git repository, with strict parsing,
//! located errors and semantic validation, plus the node configuration.
//!
//! Everything here is pure over in-memory `(path, text)` pairs: [`check`] parses and
//! validates a [`Tree`] into a [`DesiredState`] and every [`Diagnostic`] found, sorted by
//! file and line. [`loader`] is the thin layer that reads a directory into a `Tree`.

pub mod diag;
mod graph;
#[cfg(test)]
mod limit_tests;
pub mod limits;
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
pub mod user;
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
    /// Spec files that could be read but not taken as text (bytes that are not UTF-8, a
    /// file over the size limit): located errors, which [`check`] reports with the rest.
    pub unreadable: Vec<Diagnostic>,
}

impl Tree {
    /// A tree made of sources only (every source also counts as a file).
    pub fn from_sources(sources: Vec<SourceFile>) -> Tree {
        let files = sources.iter().map(|s| s.path.clone()).collect();
        Tree {
            sources,
            files,
            unreadable: Vec::new(),
        }
    }

    /// Adds a spec file read as bytes: as a source when it is UTF-8 text within the
    /// file size limit, else as a located error (the first byte that is not UTF-8, or
    /// the start of the file). It counts as a file either way.
    pub fn add_source(&mut self, path: String, bytes: Vec<u8>) {
        self.files.insert(path.clone());
        if bytes.len() > limits::MAX_FILE_BYTES {
            self.unreadable.push(limits::file_too_large(&path));
            return;
        }
        match String::from_utf8(bytes) {
            Ok(text) => self.sources.push(SourceFile { path, text }),
            Err(e) => {
                let (line, column, byte) =
                    diag::invalid_utf8_position(e.as_bytes()).unwrap_or((1, 1, 0));
                let at = Location {
                    file: path,
                    line,
                    column,
                };
                self.unreadable.push(Diagnostic::new(
                    &at,
                    format!(
                        "byte 0x{byte:02x} is not UTF-8: spec files must be UTF-8 text (in comments too)"
                    ),
                ));
            }
        }
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
    let mut errors = tree.unreadable.clone();
    let mut sources: Vec<&SourceFile> = tree.sources.iter().collect();
    sources.sort_by(|a, b| a.path.cmp(&b.path));
    let admitted = limits::check_sizes(sources);
    errors.extend(admitted.errors);
    let mut per_file = Vec::new();
    for s in admitted.sources {
        let (objs, diags) = parse::parse_file(&s.path, &s.text);
        errors.extend(diags);
        per_file.push((s.path.clone(), objs));
    }
    let (state, complete) = validate::assemble(per_file, &mut errors);
    // Over the object limit, the rules across objects would only add noise about the
    // objects left out.
    if complete {
        validate::validate(&state, &tree.files, node, &mut errors);
    }
    diag::sort(&mut errors);
    Checked { state, errors }
}
