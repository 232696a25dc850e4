//! The Sigstore trusted root (`trusted_root.json`, media type
//! `application/vnd.dev.sigstore.trustedroot+json;version=0.1` or `0.2`, required: a
//! TUF `root.json` or a bundle is refused by name, as is a root with neither logs nor
//! certificate authorities): the transparency logs'
//! keys, the Fulcio certificate authorities and the timestamp authorities, each with the
//! time range it is trusted for (`validFor`). Certificate-transparency logs (`ctlogs`)
//! are read past: SCTs are not checked.
//!
//! Errors name the file and the key (`tlogs[0].publicKey.rawBytes`); a JSON syntax
//! error names its line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::rfc3339;
use super::x509::Cert;

/// The media types of a trusted root berth reads.
pub const TRUSTED_ROOT_V01: &str = "application/vnd.dev.sigstore.trustedroot+json;version=0.1";
pub const TRUSTED_ROOT_V02: &str = "application/vnd.dev.sigstore.trustedroot+json;version=0.2";

/// The largest trusted root read (the public-good one is under 8 KiB).
pub const MAX_TRUSTED_ROOT: u64 = 1 << 20;

/// Why a trusted root could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot read the trusted root {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the trusted root {path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("the trusted root {name} is not JSON")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the trusted root {name}: `{key}` {problem}")]
    Invalid {
        name: String,
        key: String,
        problem: String,
    },
    #[error("the trusted root {name}: `{key}` is not a valid certificate")]
    Certificate {
        name: String,
        key: String,
        #[source]
        source: Box<super::KeylessError>,
    },
}

/// A time range, seconds since the epoch, both ends included; no end is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidFor {
    pub start: u64,
    pub end: Option<u64>,
}

impl ValidFor {
    pub fn contains(&self, t: u64) -> bool {
        t >= self.start && self.end.is_none_or(|e| t <= e)
    }
}

impl fmt::Display for ValidFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(e) => write!(f, "{} to {}", rfc3339(self.start), rfc3339(e)),
            None => write!(f, "from {}", rfc3339(self.start)),
        }
    }
}

/// A transparency log: its id (SHA-256 of its key's DER), its key when the root gives
/// one, and when that key is trusted.
#[derive(Debug, Clone)]
pub struct LogKey {
    pub base_url: String,
    pub key_id: Vec<u8>,
    /// DER SubjectPublicKeyInfo.
    pub spki: Option<Vec<u8>>,
    /// `keyDetails` as written (`PKIX_ECDSA_P256_SHA_256`, `PKIX_ED25519`).
    pub details: String,
    pub valid_for: ValidFor,
}

/// A certificate authority (Fulcio) or timestamp authority: its chain, issuer-most
/// last, and when it is trusted.
#[derive(Debug, Clone)]
pub struct CertAuthority {
    pub uri: String,
    pub chain: Vec<Cert>,
    pub valid_for: ValidFor,
}

impl CertAuthority {
    /// How messages name the authority: its URI and place in the root.
    pub fn name(&self, index: usize) -> String {
        match self.chain.first() {
            Some(c) => format!("{index} ({}, {})", self.uri, c.subject_name()),
            None => format!("{index} ({})", self.uri),
        }
    }
}

/// A parsed trusted root.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    pub tlogs: Vec<LogKey>,
    pub cas: Vec<CertAuthority>,
    pub tsas: Vec<CertAuthority>,
}

impl TrustedRoot {
    /// Reads and parses the trusted root at `path` (at most [`MAX_TRUSTED_ROOT`] bytes).
    pub fn load(path: &Path) -> Result<TrustedRoot, RootError> {
        use std::io::Read;
        let read = |source| RootError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(read)?
            .take(MAX_TRUSTED_ROOT + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() as u64 > MAX_TRUSTED_ROOT {
            return Err(RootError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_TRUSTED_ROOT,
            });
        }
        TrustedRoot::parse(&path.display().to_string(), &bytes)
    }

    /// Parses trusted-root JSON; `name` labels it in messages.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<TrustedRoot, RootError> {
        let json: Value = serde_json::from_slice(bytes).map_err(|source| RootError::Json {
            name: name.to_string(),
            source,
        })?;
        let r = Reader { name };
        match json.get("mediaType").and_then(Value::as_str) {
            Some(TRUSTED_ROOT_V01 | TRUSTED_ROOT_V02) => {}
            Some(other) => {
                return Err(r.invalid(
                    "mediaType".into(),
                    format!(
                        "is `{}`, not `{TRUSTED_ROOT_V01}` (or version=0.2): not a Sigstore trusted root",
                        super::shown(other)
                    ),
                ));
            }
            None => {
                return Err(r.invalid(
                    "mediaType".into(),
                    format!(
                        "is missing: not a Sigstore trusted root (`{TRUSTED_ROOT_V01}`; a TUF root.json or a bundle is not one)"
                    ),
                ));
            }
        }
        let mut tlogs = Vec::new();
        for (i, t) in r.array(&json, "tlogs")?.iter().enumerate() {
            let at = format!("tlogs[{i}]");
            let pk = r.field(t, &at, "publicKey")?;
            let pk_at = format!("{at}.publicKey");
            let spki = match pk.get("rawBytes") {
                Some(_) => Some(r.base64(pk, &pk_at, "rawBytes")?),
                None => None,
            };
            tlogs.push(LogKey {
                base_url: r.opt_str(t, "baseUrl").unwrap_or_default(),
                key_id: r.base64(r.field(t, &at, "logId")?, &format!("{at}.logId"), "keyId")?,
                spki,
                details: r.opt_str(pk, "keyDetails").unwrap_or_default(),
                valid_for: r.valid_for(pk, &pk_at)?,
            });
        }
        let root = TrustedRoot {
            tlogs,
            cas: r.authorities(&json, "certificateAuthorities")?,
            tsas: r.authorities(&json, "timestampAuthorities")?,
        };
        if root.tlogs.is_empty() && root.cas.is_empty() {
            return Err(r.invalid(
                "tlogs".into(),
                "and `certificateAuthorities` are both empty: the root trusts nothing",
            ));
        }
        Ok(root)
    }
}

/// Reads fields, naming the file and key of what is wrong.
struct Reader<'a> {
    name: &'a str,
}

impl Reader<'_> {
    fn invalid(&self, key: String, problem: impl Into<String>) -> RootError {
        RootError::Invalid {
            name: self.name.to_string(),
            key,
            problem: problem.into(),
        }
    }

    fn field<'v>(&self, v: &'v Value, at: &str, key: &str) -> Result<&'v Value, RootError> {
        v.get(key)
            .ok_or_else(|| self.invalid(join(at, key), "is missing"))
    }

    fn str<'v>(&self, v: &'v Value, at: &str, key: &str) -> Result<&'v str, RootError> {
        self.field(v, at, key)?
            .as_str()
            .ok_or_else(|| self.invalid(join(at, key), "is not a string"))
    }

    fn opt_str(&self, v: &Value, key: &str) -> Option<String> {
        v.get(key).and_then(Value::as_str).map(str::to_string)
    }

    fn array<'v>(&self, v: &'v Value, key: &str) -> Result<&'v Vec<Value>, RootError> {
        match v.get(key) {
            None => Ok(empty()),
            Some(a) => a
                .as_array()
                .ok_or_else(|| self.invalid(key.to_string(), "is not a list")),
        }
    }

    fn base64(&self, v: &Value, at: &str, key: &str) -> Result<Vec<u8>, RootError> {
        STANDARD
            .decode(self.str(v, at, key)?)
            .map_err(|e| self.invalid(join(at, key), format!("is not valid base64 ({e})")))
    }

    fn time(&self, v: &Value, at: &str, key: &str) -> Result<u64, RootError> {
        let text = self.str(v, at, key)?;
        humantime::parse_rfc3339(text)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| self.invalid(join(at, key), "is not an RFC 3339 UTC time"))
    }

    fn valid_for(&self, v: &Value, at: &str) -> Result<ValidFor, RootError> {
        let vf = self.field(v, at, "validFor")?;
        let at = join(at, "validFor");
        Ok(ValidFor {
            start: self.time(vf, &at, "start")?,
            end: match vf.get("end") {
                Some(_) => Some(self.time(vf, &at, "end")?),
                None => None,
            },
        })
    }

    fn authorities(&self, json: &Value, key: &str) -> Result<Vec<CertAuthority>, RootError> {
        let mut out = Vec::new();
        for (i, c) in self.array(json, key)?.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let chain_at = format!("{at}.certChain");
            let certs = self.field(c, &at, "certChain")?;
            let list = self.field(certs, &chain_at, "certificates")?;
            let list = list.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
                self.invalid(join(&chain_at, "certificates"), "is not a non-empty list")
            })?;
            let mut chain = Vec::new();
            for (j, cert) in list.iter().enumerate() {
                let cert_at = format!("{chain_at}.certificates[{j}]");
                let der = self.base64(cert, &cert_at, "rawBytes")?;
                let parsed =
                    Cert::parse(der, "certificate").map_err(|source| RootError::Certificate {
                        name: self.name.to_string(),
                        key: join(&cert_at, "rawBytes"),
                        source: Box::new(source),
                    })?;
                chain.push(parsed);
            }
            out.push(CertAuthority {
                uri: self.opt_str(c, "uri").unwrap_or_default(),
                chain,
                valid_for: self.valid_for(c, &at)?,
            });
        }
        Ok(out)
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn empty() -> &'static Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    &EMPTY
}
