//! Helpers that belong to no domain, each the one home of its concern:
//! [`error_chain`] (an error and its causes on one line, as berth prints errors),
//! [`rfc3339`] (the timestamps of records, reports and logs), [`disk_usage`] (the
//! bytes a tree takes on disk, as garbage collection reports them), [`versioned`]
//! (the small versioned JSON records of the state directory), [`peers`] (connections
//! counted per peer) and [`read_prefix`] (the first bytes of an HTTP answer's body,
//! never more).
//!
//! The crash-safe file write lives with the modes it applies, in
//! `runtime::state::write_atomic`; sizes for display live with the rest of the
//! rendering, in `cli::human`.

mod disk_usage;
mod error_chain;
pub mod peers;
mod read_prefix;
pub mod rfc3339;
pub mod versioned;

pub use disk_usage::disk_usage;
pub use error_chain::error_chain;
pub use read_prefix::read_prefix;
