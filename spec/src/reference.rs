//! Image references: parsing, validation and Docker-style normalisation.
//!
//! Grammar as in the distribution reference package that Docker and containerd use:
//! `[domain[:port]/]path[:tag][@sha256:<64 hex>]`. The first component is a domain when it
//! contains `.` or `:` or is `localhost`; otherwise the image lives on Docker Hub
//! (`docker.io`), and a single-component Hub path gets `library/` (`busybox` →
//! `docker.io/library/busybox:latest`). When both a tag and a digest are given the digest
//! wins: it is what gets pulled and run; the tag is kept for display only.

use std::fmt;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Maximum length of the name part (domain + path), as the distribution spec sets it.
const MAX_NAME_LEN: usize = 255;
/// Maximum tag length (distribution spec: `[\w][\w.-]{0,127}`).
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`, `shop/web`).
    pub repository: String,
    /// Tag, if one was given (`None` with a bare digest reference).
    pub tag: Option<String>,
    /// Digest (`sha256:<64 lowercase hex>`), if one was given.
    pub digest: Option<String>,
}

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error("image name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("invalid registry host `{0}`")]
    InvalidDomain(String),
    #[error(
        "invalid repository path component `{0}`: use lowercase letters, digits and single separators `.`, `_`, `__` or `-`"
    )]
    InvalidPath(String),
    #[error(
        "invalid tag `{0}`: up to 128 characters from letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
    )]
    InvalidTag(String),
    #[error("invalid digest `{0}`: expected `sha256:` followed by 64 lowercase hex digits")]
    InvalidDigest(String),
}

impl Reference {
    /// Parses and normalises a reference.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag follows the last `:` that comes after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            validate_tag(tag)?;
        }
        if name.is_empty() {
            return Err(ReferenceError::InvalidPath(String::new()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong);
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_domain_like(first) => {
                validate_domain(first)?;
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        for component in path.split('/') {
            validate_path_component(component)?;
        }
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// True when the reference pins a digest.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The tag or digest to ask the registry for: the digest when there is one.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn is_domain_like(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

/// Checks `sha256:<64 lowercase hex>`.
pub fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidDigest(digest.to_string()))
    }
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= MAX_TAG_LEN {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_string()))
    }
}

fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidDomain(domain.to_string());
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // IPv6 literal: [addr]:port
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        (None, after.strip_prefix(':'))
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// A path component: `[a-z0-9]+` runs joined by one of `.`, `_`, `__` or any number of `-`.
fn validate_path_component(component: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidPath(component.to_string());
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        Reference::parse(s)
            .map(|r| r.to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/alpine"),
            "docker.io/library/alpine:latest"
        );
    }

    #[test]
    fn registries_ports_and_digests() {
        let r = Reference::parse(&format!("127.0.0.1:5000/shop/web:1.0@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "shop/web");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.reference(), D, "the digest wins over the tag");
        assert!(r.is_pinned());
        let r = Reference::parse(&format!("localhost/web@{D}")).unwrap();
        assert_eq!((r.registry.as_str(), r.tag), ("localhost", None));
        assert_eq!(norm("localhost:5000/a"), "localhost:5000/a:latest");
        assert_eq!(norm("[::1]:5000/a:b"), "[::1]:5000/a:b");
    }

    #[test]
    fn invalid_references() {
        assert_eq!(norm(""), "error: image reference is empty");
        assert!(norm("Web").starts_with("error: invalid repository path component `Web`"));
        assert!(norm("r.io/a//b").starts_with("error: invalid repository path"));
        assert!(norm("r.io/a--b_.c").starts_with("error: invalid repository path"));
        assert!(norm("a:-x").starts_with("error: invalid tag `-x`"));
        assert!(norm("a@sha256:abc").starts_with("error: invalid digest `sha256:abc`"));
        assert!(
            norm(&format!("a@{}", D.to_uppercase().replace("SHA", "sha")))
                .starts_with("error: invalid digest")
        );
        assert!(norm("bad_host.io:x/a").starts_with("error: invalid registry host"));
        assert!(norm(&"a".repeat(300)).starts_with("error: image name is longer"));
        assert_eq!(
            norm("a__b-d---e/f.g_h"),
            "docker.io/a__b-d---e/f.g_h:latest"
        );
        assert!(norm("a__b.c/f").starts_with("error: invalid registry host"));
    }
}
