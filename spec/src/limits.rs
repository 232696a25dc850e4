//! Size limits on a spec tree, so that a hostile or mistaken commit costs every node a
//! bounded amount of work: each is reported as a located error, never a crash or a hang.
//!
//! The values leave room for any real edge fleet many times over (a node runs tens of
//! containers, a fleet's repository hundreds), while keeping `validate`, `audit` and
//! `plan` of a tree at every limit well under two seconds on a small host
//! (`bench/hostile-trees.sh`). spec/README.md ("Limits") documents them.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::diag::{Diagnostic, Kind, Location};
use crate::read::Src;

/// Bytes in one spec file: a generous hand-written file is a few KiB.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Bytes in all the spec files of a tree together.
pub const MAX_TREE_BYTES: usize = 16 << 20;
/// Objects of one kind (containers, networks, volumes, secrets) in a tree.
pub const MAX_OBJECTS: usize = 10_000;
/// Keys in one table (`env`, `labels`, …) and items in one array (`ports`, `command`,
/// `depends_on`, …). The tables listing objects (`[container.*]`, …) count under
/// [`MAX_OBJECTS`] instead.
pub const MAX_KEYS: usize = 1024;
/// `depends_on` links in a chain from a container down to one that depends on nothing:
/// a start order deeper than this is a mistake, and every pass walks it.
pub const MAX_DEPENDENCY_DEPTH: usize = 64;

/// Sizes as the messages write them (`4 MiB`).
fn mib(n: usize) -> String {
    format!("{} MiB", n >> 20)
}

fn start_of(file: &str) -> Location {
    Location {
        file: file.to_string(),
        line: 1,
        column: 1,
    }
}

/// A file over [`MAX_FILE_BYTES`]; it is not read.
pub(crate) fn file_too_large(file: &str) -> Diagnostic {
    Diagnostic::new(
        &start_of(file),
        format!(
            "spec file is larger than {}, the limit per file; it is not read",
            mib(MAX_FILE_BYTES)
        ),
    )
}

/// The first file that takes the tree over [`MAX_TREE_BYTES`]; it and those after it
/// are not read.
pub(crate) fn tree_too_large(file: &str) -> Diagnostic {
    Diagnostic::new(
        &start_of(file),
        format!(
            "the spec files add up to more than {}, the limit per tree; this file and those after it are not read",
            mib(MAX_TREE_BYTES)
        ),
    )
}

/// What the size checks of [`check_sizes`] leave to parse.
pub(crate) struct Admitted<'t> {
    pub sources: Vec<&'t crate::SourceFile>,
    pub errors: Vec<Diagnostic>,
}

/// Applies the file and tree size limits to sources in path order.
pub(crate) fn check_sizes(sorted: Vec<&crate::SourceFile>) -> Admitted<'_> {
    let mut out = Admitted {
        sources: Vec::new(),
        errors: Vec::new(),
    };
    let mut total = 0usize;
    for s in sorted {
        let len = s.text.len();
        if len > MAX_FILE_BYTES {
            out.errors.push(file_too_large(&s.path));
            continue;
        }
        total += len;
        if total > MAX_TREE_BYTES {
            out.errors.push(tree_too_large(&s.path));
            break;
        }
        out.sources.push(s);
    }
    out
}

/// One table or array met while walking a document, with its dotted path.
enum Node<'d, 'i> {
    Table(&'d mut DeTable<'i>, Vec<String>, Range<usize>),
    Array(&'d mut DeArray<'i>, Vec<String>, Range<usize>),
}

/// Caps every table at [`MAX_KEYS`] keys (the object tables at [`MAX_OBJECTS`]) and
/// every array at [`MAX_KEYS`] items, reporting each one over its limit at the table or
/// array, and keeping only its first entries (in key order for tables, written order for
/// arrays), so that no later stage works on more. The walk keeps its own stack: nesting
/// is bounded by the TOML parser, but a walk need not rely on it.
pub(crate) fn cap_tables(src: &Src<'_>, doc: &mut Spanned<DeTable<'_>>) {
    let span = doc.span();
    let mut stack = vec![Node::Table(doc.get_mut(), Vec::new(), span)];
    while let Some(node) = stack.pop() {
        match node {
            Node::Table(table, path, span) => {
                let object_table = path.len() == 1 && Kind::from_table_name(&path[0]).is_some();
                let limit = if object_table { MAX_OBJECTS } else { MAX_KEYS };
                if table.len() > limit {
                    let msg = if object_table {
                        format!(
                            "the file defines {} {}s, over the limit of {limit} per tree",
                            table.len(),
                            path[0]
                        )
                    } else {
                        format!(
                            "{} has {} keys, over the limit of {limit} keys per table",
                            describe(&path),
                            table.len()
                        )
                    };
                    src.push(over(src, &path, span.clone(), msg));
                    let kept = std::mem::take(table).into_iter().take(limit).collect();
                    *table = kept;
                }
                for (key, value) in table.iter_mut() {
                    let mut child = path.clone();
                    child.push(key.get_ref().to_string());
                    push_value(&mut stack, value, child);
                }
            }
            Node::Array(array, path, span) => {
                if array.len() > MAX_KEYS {
                    let msg = format!(
                        "{} has {} items, over the limit of {MAX_KEYS} items per array",
                        describe(&path),
                        array.len()
                    );
                    src.push(over(src, &path, span, msg));
                    let mut kept = DeArray::new();
                    for item in array.iter().take(MAX_KEYS) {
                        kept.push(item.clone());
                    }
                    *array = kept;
                }
                let last = path.last().cloned().unwrap_or_default();
                for (i, item) in array.iter_mut().enumerate() {
                    let mut child = path.clone();
                    if let Some(l) = child.last_mut() {
                        *l = format!("{last}[{i}]");
                    }
                    push_value(&mut stack, item, child);
                }
            }
        }
    }
}

fn push_value<'d, 'i>(
    stack: &mut Vec<Node<'d, 'i>>,
    value: &'d mut Spanned<DeValue<'i>>,
    path: Vec<String>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::Table(t) => stack.push(Node::Table(t, path, span)),
        DeValue::Array(a) => stack.push(Node::Array(a, path, span)),
        _ => {}
    }
}

fn describe(path: &[String]) -> String {
    if path.is_empty() {
        "the file".to_string()
    } else {
        format!("`{}`", path.join("."))
    }
}

/// An error at the table or array over its limit, naming the object it is part of.
fn over(src: &Src<'_>, path: &[String], span: Range<usize>, message: String) -> Diagnostic {
    let mut d = Diagnostic::new(&src.loc(span), message);
    if let [kind, object, rest @ ..] = path
        && let Some(kind) = Kind::from_table_name(kind)
    {
        d = d.object(kind, object);
        if !rest.is_empty() {
            d = d.key(rest.join("."));
        }
    }
    d
}

/// Objects of one kind beyond [`MAX_OBJECTS`] in a tree: one error at the first one
/// over the limit (in file and line order).
pub(crate) fn too_many_objects(kind: Kind, count: usize, first_over: &Location) -> Diagnostic {
    Diagnostic::new(
        first_over,
        format!(
            "the tree defines {count} {kind}s, over the limit of {MAX_OBJECTS}; {kind}s from here on are not read"
        ),
    )
}
