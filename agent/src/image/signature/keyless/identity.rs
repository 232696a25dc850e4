//! Trusted identities (`[[policy.trusted_identities]]`): an OIDC issuer, compared
//! exactly, and a subject, compared exactly or matched by a regular expression.
//!
//! A `subject_regex` must match the WHOLE subject: berth anchors it (`^(?:…)$`).
//! cosign's `--certificate-identity-regexp` is unanchored, so that
//! `https://github.com/acme/` there also trusts `https://github.com/acme/../evil`-like
//! subjects that merely contain it; here the same pattern trusts nothing but itself.

use std::fmt;

use berth_spec::node::{SubjectMatch, TrustedIdentity};

use super::KeylessError;

/// One trusted identity, ready to match.
#[derive(Debug, Clone)]
pub struct IdentityMatcher {
    issuer: String,
    subject: Subject,
}

#[derive(Debug, Clone)]
enum Subject {
    Exact(String),
    Regex {
        pattern: String,
        anchored: regex_lite::Regex,
    },
}

impl IdentityMatcher {
    /// The identity `subject` exactly, issued by `issuer`.
    pub fn exact(issuer: impl Into<String>, subject: impl Into<String>) -> Self {
        IdentityMatcher {
            issuer: issuer.into(),
            subject: Subject::Exact(subject.into()),
        }
    }

    /// Any subject the whole of which `pattern` matches, issued by `issuer`.
    pub fn regex(issuer: impl Into<String>, pattern: &str) -> Result<Self, KeylessError> {
        let invalid = |source| KeylessError::Regex {
            pattern: pattern.to_string(),
            source,
        };
        // The bare pattern first: `a)|(b` is invalid alone but valid once wrapped, and
        // would then match far more than anchored `a` or `b`.
        regex_lite::Regex::new(pattern).map_err(invalid)?;
        let anchored = regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)?;
        Ok(IdentityMatcher {
            issuer: issuer.into(),
            subject: Subject::Regex {
                pattern: pattern.to_string(),
                anchored,
            },
        })
    }

    /// A `[[policy.trusted_identities]]` entry.
    pub fn from_config(id: &TrustedIdentity) -> Result<Self, KeylessError> {
        match &id.subject {
            SubjectMatch::Exact(s) => Ok(IdentityMatcher::exact(&id.issuer, s)),
            SubjectMatch::Regex(r) => IdentityMatcher::regex(&id.issuer, r),
        }
    }

    /// Whether a certificate of `issuer` naming `subject` is this identity.
    pub fn matches(&self, issuer: &str, subject: &str) -> bool {
        issuer == self.issuer
            && match &self.subject {
                Subject::Exact(s) => s == subject,
                Subject::Regex { anchored, .. } => anchored.is_match(subject),
            }
    }
}

impl fmt::Display for IdentityMatcher {
    /// `issuer=subject`, or `issuer=~pattern` (anchored) for a regular expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Exact(s) => write!(f, "{}={s}", self.issuer),
            Subject::Regex { pattern, .. } => write!(f, "{}=~^(?:{pattern})$", self.issuer),
        }
    }
}
