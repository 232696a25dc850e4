//! The `user` key, `user[:group]`: the one place that decides which forms are numeric
//! ids, so that offline validation, the policy's `run-as-non-root` and `non-root-group`
//! rules and the agent's resolution against the image (`runtime/user.rs`) agree.
//!
//! A part is numeric exactly when runc (and so Docker) reads it as a number: runc's
//! `GetExecUser` tries Go's `strconv.Atoi` first, which takes an optional `+` or `-`
//! sign and any number of leading zeros. So `00`, `+0` and `-0` are all uid 0, and a
//! numeric part is always an id, never looked up as a name. Ids run from 0 to
//! 2147483647 (runc's bounds); anything else numeric is out of range. Every other part
//! is a name, resolved in the image's `/etc/passwd` or `/etc/group`.

/// The highest uid or gid accepted (runc's `maxID`, `1 << 31 - 1`).
pub const MAX_ID: u32 = i32::MAX as u32;

/// One part of a `user` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id<'a> {
    /// A numeric id, as runc reads it.
    Number(u32),
    /// A name, resolved in the image.
    Name(&'a str),
}

impl Id<'_> {
    /// Whether this part certainly means id 0 (root) without looking at the image:
    /// any numeric form of 0, or the name `root`.
    pub fn is_root(&self) -> bool {
        matches!(self, Id::Number(0) | Id::Name("root"))
    }
}

/// A numeric part outside 0..=[`MAX_ID`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("uid or gid `{0}` is out of range (0 to {MAX_ID})")]
pub struct OutOfRange(pub String);

/// Reads one part: a number when it is an optional sign followed by ASCII digits.
pub fn parse_id(part: &str) -> Result<Id<'_>, OutOfRange> {
    let (negative, digits) = match part.as_bytes().first() {
        Some(b'+') => (false, &part[1..]),
        Some(b'-') => (true, &part[1..]),
        _ => (false, part),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Id::Name(part));
    }
    let out_of_range = || OutOfRange(part.to_string());
    // Leading zeros are free (`0000000000000000001` is 1), as for Go's Atoi.
    let significant = digits.trim_start_matches('0');
    if significant.is_empty() {
        return Ok(Id::Number(0));
    }
    if negative {
        return Err(out_of_range());
    }
    match significant.parse::<u64>() {
        Ok(n) if n <= u64::from(MAX_ID) => Ok(Id::Number(n as u32)),
        _ => Err(out_of_range()),
    }
}

/// Splits `user[:group]` at the first `:`; an empty group counts as none.
pub fn split(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((u, g)) => (u, (!g.is_empty()).then_some(g)),
        None => (spec, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_forms_follow_go_atoi() {
        for zero in ["0", "00", "+0", "-0", "+00", "0000000000000000000000000"] {
            assert_eq!(parse_id(zero), Ok(Id::Number(0)), "{zero}");
            assert!(parse_id(zero).is_ok_and(|id| id.is_root()), "{zero}");
        }
        assert_eq!(parse_id("+10001"), Ok(Id::Number(10001)));
        assert_eq!(parse_id("010001"), Ok(Id::Number(10001)));
        assert_eq!(parse_id("2147483647"), Ok(Id::Number(MAX_ID)));
        assert_eq!(parse_id("2147483648"), Err(OutOfRange("2147483648".into())));
        assert_eq!(parse_id("-1"), Err(OutOfRange("-1".into())));
        assert_eq!(
            parse_id("99999999999999999999999"),
            Err(OutOfRange("99999999999999999999999".into()))
        );
    }

    #[test]
    fn names() {
        for name in ["app", "root", "+", "-", "+a1", "1a", "0x10", " 0", "0 ", ""] {
            assert_eq!(parse_id(name), Ok(Id::Name(name)), "{name:?}");
        }
        assert!(Id::Name("root").is_root());
        assert!(!Id::Name("app").is_root());
        assert!(!Id::Number(1).is_root());
    }

    #[test]
    fn splitting() {
        assert_eq!(split("a:b"), ("a", Some("b")));
        assert_eq!(split("a:"), ("a", None));
        assert_eq!(split("a"), ("a", None));
        assert_eq!(split("a:b:c"), ("a", Some("b:c")));
    }
}
