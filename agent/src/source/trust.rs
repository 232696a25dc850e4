//! Who the source's server is: an ssh server's host key must be listed in
//! `source.known_hosts`, and an https server's certificate must chain to a system CA or
//! to `source.ca_file`.
//!
//! libgit2 checks https certificates against the system's CAs itself; `ca_file` is an
//! extra CA for a private server, checked here (rustls' WebPKI verifier, the same code
//! that checks registry certificates) only when libgit2's own check has no answer. ssh
//! host keys are checked only here: an unknown or changed key is refused, never learnt.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use ssh_key::known_hosts::{HostPatterns, KnownHosts, Marker};
use ssh_key::{HashAlg, PublicKey};

/// How big a `known_hosts` or CA file may be.
const MAX_TRUST_FILE: u64 = 1024 * 1024;

/// Why the server's identity was not accepted, or the files saying who it is could not
/// be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {key} ({}): {reason}", .path.display())]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "the ssh server {host} offered host key {fingerprint}, which `source.known_hosts` ({}) does not list for it; refusing to connect",
        .file.display()
    )]
    UnknownHostKey {
        host: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error(
        "the ssh server {host} offered host key {fingerprint}, but `source.known_hosts` ({}) lists another key for it: the host key changed, or someone is in between; refusing to connect",
        .file.display()
    )]
    ChangedHostKey {
        host: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error(
        "the ssh server {host} offered an {offered} host key, and `source.known_hosts` ({}) lists only {listed} keys for it; add its {offered} key (`{hint}`, checked out of band)",
        .file.display()
    )]
    OtherKeyType {
        host: String,
        offered: String,
        listed: String,
        hint: String,
        file: PathBuf,
    },
    #[error(
        "the ssh server {host} offered host key {fingerprint}, which `source.known_hosts` ({}) marks @revoked",
        .file.display()
    )]
    RevokedHostKey {
        host: String,
        fingerprint: String,
        file: PathBuf,
    },
    #[error("the ssh server {host} offered a host key that cannot be decoded: {reason}")]
    BadHostKey { host: String, reason: String },
    #[error(
        "ssh URL {url}: `source.known_hosts` is not set; berth checks every ssh server's host key and learns none"
    )]
    NoKnownHosts { url: String },
    #[error("the https server {host}'s certificate is not trusted: {reason}")]
    Untrusted { host: String, reason: String },
}

/// The host keys `known_hosts` lists, read once a fetch.
#[derive(Debug)]
pub struct HostKeys {
    file: PathBuf,
    entries: Vec<(Hosts, Option<Marker>, PublicKey)>,
}

/// The hosts an entry names: patterns, or one hashed name (`|1|salt|hash`).
#[derive(Debug)]
enum Hosts {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: [u8; 20] },
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Patterns(p) => host_matches(p, name),
            Hosts::Hashed { salt, hash } => {
                use hmac::{Hmac, Mac};
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
        }
    }
}

impl HostKeys {
    /// Reads an OpenSSH `known_hosts` file, plain or hashed host names alike.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let text = read_small(path, "source.known_hosts")?;
        let mut entries = Vec::new();
        for entry in KnownHosts::new(&text) {
            let entry = entry.map_err(|e| TrustError::Unreadable {
                key: "source.known_hosts",
                path: path.to_path_buf(),
                reason: format!("not a known_hosts file: {e}"),
            })?;
            let hosts = match entry.host_patterns() {
                HostPatterns::Patterns(p) => Hosts::Patterns(p.clone()),
                HostPatterns::HashedName { salt, hash } => Hosts::Hashed {
                    salt: salt.clone(),
                    hash: *hash,
                },
            };
            entries.push((hosts, entry.marker().cloned(), entry.public_key().clone()));
        }
        Ok(Self {
            file: path.to_path_buf(),
            entries,
        })
    }

    /// Accepts `raw` (the key blob the server offered) for `host` on `port` when an
    /// entry lists it for that host; `[host]:port` for a port other than 22, as OpenSSH
    /// writes it.
    pub fn check(&self, host: &str, port: Option<u16>, raw: &[u8]) -> Result<(), TrustError> {
        let name = match port {
            Some(p) if p != 22 => format!("[{host}]:{p}"),
            _ => host.to_string(),
        };
        let offered = PublicKey::from_bytes(raw).map_err(|e| TrustError::BadHostKey {
            host: name.clone(),
            reason: e.to_string(),
        })?;
        let fingerprint = offered.fingerprint(HashAlg::Sha256).to_string();
        let mut known = false;
        // The key types listed for this host, and whether one of them is the type
        // offered (a different key of that type is a changed key).
        let mut listed_types: Vec<String> = Vec::new();
        for (hosts, marker, key) in &self.entries {
            if !hosts.matches(&name) {
                continue;
            }
            if marker.is_none() {
                listed_types.push(key.algorithm().to_string());
            }
            if key.key_data() != offered.key_data() {
                continue;
            }
            match marker {
                Some(Marker::Revoked) => {
                    return Err(TrustError::RevokedHostKey {
                        host: name,
                        fingerprint,
                        file: self.file.clone(),
                    });
                }
                // A CA key signs host certificates; a plain host key is not one.
                Some(Marker::CertAuthority) => {}
                None => known = true,
            }
        }
        let offered_type = offered.algorithm().to_string();
        if known {
            Ok(())
        } else if !listed_types.is_empty() && !listed_types.contains(&offered_type) {
            listed_types.dedup();
            Err(TrustError::OtherKeyType {
                host: name.clone(),
                offered: offered_type.clone(),
                listed: listed_types.join(", "),
                hint: match port {
                    Some(p) if p != 22 => format!("ssh-keyscan -p {p} -t {offered_type} {host}"),
                    _ => format!("ssh-keyscan -t {offered_type} {host}"),
                },
                file: self.file.clone(),
            })
        } else if !listed_types.is_empty() {
            Err(TrustError::ChangedHostKey {
                host: name,
                fingerprint,
                file: self.file.clone(),
            })
        } else {
            Err(TrustError::UnknownHostKey {
                host: name,
                fingerprint,
                file: self.file.clone(),
            })
        }
    }
}

/// Whether a known_hosts pattern list names `name`: `*` and `?` wildcards, and a
/// `!pattern` that matches refuses the entry whatever else matches (sshd(8)).
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(negated) = p.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(p, name) {
            matched = true;
        }
    }
    matched
}

/// `*`/`?` matching, case-insensitive as host names are.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    // Iterative matcher with one backtrack point (the last `*`).
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The extra CA of `source.ca_file`, as a WebPKI verifier.
#[derive(Debug)]
pub struct ExtraCa {
    verifier: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ExtraCa {
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let unreadable = |reason: String| TrustError::Unreadable {
            key: "source.ca_file",
            path: path.to_path_buf(),
            reason,
        };
        let pem = read_small(path, "source.ca_file")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| unreadable(format!("not a PEM certificate file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| unreadable(format!("not a CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(unreadable("it holds no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| unreadable(e.to_string()))?;
        Ok(Self { verifier })
    }

    /// Whether the server certificate `der` (the leaf libgit2 saw) is valid for `host`
    /// under this CA: signature chain, validity period and name.
    pub fn check(&self, host: &str, der: &[u8]) -> Result<(), TrustError> {
        let untrusted = |reason: String| TrustError::Untrusted {
            host: host.to_string(),
            reason,
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| untrusted(format!("not a server name: {e}")))?;
        self.verifier
            .verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| {
                untrusted(format!(
                    "{e} (neither a system CA nor `source.ca_file` vouches for it)"
                ))
            })
    }
}

/// A small root-owned file the node configuration names, read whole.
fn read_small(path: &Path, key: &'static str) -> Result<String, TrustError> {
    let unreadable = |reason: String| TrustError::Unreadable {
        key,
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    if meta.len() > MAX_TRUST_FILE {
        return Err(unreadable(format!(
            "{} bytes; at most {MAX_TRUST_FILE} are read",
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_as_openssh_does() {
        let pats = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert!(host_matches(&pats(&["git.example.com"]), "git.example.com"));
        assert!(host_matches(&pats(&["*.example.com"]), "git.example.com"));
        assert!(host_matches(
            &pats(&["[127.0.0.1]:2222"]),
            "[127.0.0.1]:2222"
        ));
        assert!(!host_matches(&pats(&["[127.0.0.1]:2222"]), "127.0.0.1"));
        assert!(host_matches(
            &pats(&["git?.example.com"]),
            "git1.example.com"
        ));
        assert!(!host_matches(
            &pats(&["*.example.com", "!bad.example.com"]),
            "bad.example.com"
        ));
        assert!(!host_matches(&pats(&["other"]), "git.example.com"));
        assert!(host_matches(&pats(&["GIT.example.com"]), "git.EXAMPLE.com"));
    }

    #[test]
    fn host_keys_accept_only_the_listed_key_for_the_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listed = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!("# comment\n[127.0.0.1]:2222 ssh-ed25519 {listed}\n"),
        )
        .expect("write");
        let keys = HostKeys::load(&file).expect("load");
        let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, listed)
            .expect("base64");
        keys.check("127.0.0.1", Some(2222), &raw).expect("listed");
        let err = keys
            .check("127.0.0.1", Some(22), &raw)
            .expect_err("other port");
        assert!(matches!(err, TrustError::UnknownHostKey { .. }), "{err}");
        let mut other = raw.clone();
        if let Some(last) = other.last_mut() {
            *last ^= 1;
        }
        let err = keys
            .check("127.0.0.1", Some(2222), &other)
            .expect_err("other key");
        assert!(matches!(err, TrustError::ChangedHostKey { .. }), "{err}");
        assert!(err.to_string().contains("SHA256:"), "{err}");
    }

    #[test]
    fn hashed_names_match_and_another_key_type_is_named() {
        use base64::Engine;
        use hmac::{Hmac, Mac};
        let b64 = base64::engine::general_purpose::STANDARD;
        let listed = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("mac");
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!(
                "|1|{}|{} ssh-ed25519 {listed}\n",
                b64.encode(salt),
                b64.encode(hash)
            ),
        )
        .expect("write");
        let keys = HostKeys::load(&file).expect("load");
        let raw = b64.decode(listed).expect("base64");
        keys.check("127.0.0.1", Some(2222), &raw)
            .expect("hashed entry");
        assert!(keys.check("127.0.0.2", Some(2222), &raw).is_err());
        // Only an ecdsa key listed, an ed25519 key offered: the types are named.
        let ecdsa = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=";
        std::fs::write(
            &file,
            format!("[127.0.0.1]:2222 ecdsa-sha2-nistp256 {ecdsa}\n"),
        )
        .expect("write");
        let keys = HostKeys::load(&file).expect("load");
        let err = keys
            .check("127.0.0.1", Some(2222), &raw)
            .expect_err("other type");
        assert!(matches!(err, TrustError::OtherKeyType { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("ssh-keyscan -p 2222 -t ssh-ed25519"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_ca_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "").expect("write");
        let err = ExtraCa::load(&file).expect_err("empty");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
