//! Helpers that belong to no domain, each the one home of its concern:
//! [`error_chain`] (an error and its causes on one line, as berth prints errors) and
//! [`rfc3339`] (the timestamps of records, reports and logs).
//!
//! The crash-safe file write lives with the modes it applies, in
//! `runtime::state::write_atomic`; sizes for display live with the rest of the
//! rendering, in `cli::human`.

mod error_chain;
pub mod rfc3339;

pub use error_chain::error_chain;
