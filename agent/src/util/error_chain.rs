//! An error and its causes on one line, `: `-separated: how every command and log line
//! shows an error.
//!
//! A cause whose text the line already holds is not repeated: some messages name
//! their cause themselves (`cannot read log x: {source}`) and keep it as `#[source]`
//! too, so that a caller walking the chain can still downcast it.

use std::error::Error;

/// `error: cause: cause of the cause`.
pub fn error_chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write {0}")]
    struct Outer(&'static str, #[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {0}: {1}")]
    struct Named(&'static str, #[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("pass failed")]
    struct Top(#[source] Named);

    #[test]
    fn every_cause_once_in_order() {
        let full = || io::Error::new(io::ErrorKind::StorageFull, "disk full");
        assert_eq!(
            error_chain(&Outer("a.json", full())),
            "cannot write a.json: disk full"
        );
        assert_eq!(
            error_chain(&Named("b.log", full())),
            "cannot read b.log: disk full"
        );
        assert_eq!(
            error_chain(&Top(Named("b.log", full()))),
            "pass failed: cannot read b.log: disk full"
        );
        assert_eq!(error_chain(&io::Error::other("alone")), "alone");
    }
}
