//! `berth-spec`: the spec model berth reads from a Git repository, with strict parsing,
//! located errors and semantic validation, plus the node configuration.
//!
//! Everything here is pure over in-memory `(path, text)` pairs; [`loader`] is the thin
//! layer that reads a directory tree.

pub mod reference;
