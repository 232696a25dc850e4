//! Registry credentials and authentication challenges.
//!
//! Credentials come from docker `config.json` files: the registry's `auth_file` from
//! the node config when set, then `$DOCKER_CONFIG/config.json`, then
//! `~/.docker/config.json` — the files `docker login` writes, including `credsStore` and
//! `credHelpers` entries (read through the `docker_credential` crate). Challenges are
//! the `WWW-Authenticate` headers of a 401 (RFC 7235 syntax, Docker's token flow).
//! Parsing is pure and unit-tested; secrets never reach `Debug` output or logs.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The key Docker uses for Docker Hub in `config.json`.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A credential for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or a personal access token as the password).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// The `Authorization: Basic …` value, for Basic credentials.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read registry auth file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the credentials for {registry} in {path}: {detail}")]
    Invalid {
        registry: String,
        path: PathBuf,
        detail: String,
    },
}

/// The key under which `config.json` stores credentials for a registry host.
pub fn config_key(registry: &str) -> &str {
    if registry == berth_spec::reference::DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY
    } else {
        registry
    }
}

/// The docker config files to consult, in order: `auth_file`, then `$DOCKER_CONFIG`,
/// then `$HOME/.docker`.
pub fn config_files(auth_file: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = auth_file.map(Path::to_path_buf).into_iter().collect();
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        files.push(PathBuf::from(dir).join("config.json"));
    } else if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".docker/config.json"));
    }
    files
}

/// Looks up the credential for `registry`. An explicit `auth_file` that cannot be
/// read is an error; a missing default file or entry means anonymous access.
pub fn lookup(registry: &str, auth_file: Option<&Path>) -> Result<Option<Credential>, AuthError> {
    for path in config_files(auth_file) {
        let explicit = Some(path.as_path()) == auth_file;
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(AuthError::Read { path, source }),
        };
        if let Some(c) = lookup_in(&text, registry, &path)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Looks `registry` up in the text of one `config.json`.
pub fn lookup_in(
    text: &[u8],
    registry: &str,
    path: &Path,
) -> Result<Option<Credential>, AuthError> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    match docker_credential::get_credential_from_reader(text, config_key(registry)) {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Credential::IdentityToken(t))),
        Err(E::NoCredentialConfigured) => Ok(None),
        Err(e) => Err(AuthError::Invalid {
            registry: registry.to_string(),
            path: path.to_path_buf(),
            detail: e.to_string().to_lowercase(),
        }),
    }
}

/// One authentication challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value and returns the first challenge berth can
/// answer (Bearer with a realm, or Basic). Parameters are `key=token` or
/// `key="quoted, with \"escapes\""`; scheme and keys are case-insensitive.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut chars = header.trim().chars().peekable();
    let mut found = None;
    loop {
        // Scheme token.
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let scheme: String =
            std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != ',')).collect();
        if scheme.is_empty() {
            return found;
        }
        let mut params: Vec<(String, String)> = Vec::new();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            // Look ahead: `key=` starts a parameter, anything else a new challenge.
            let rest: String = chars.clone().collect();
            let Some(eq) = rest.find('=') else { break };
            let key = &rest[..eq];
            if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == ',' || c == '"') {
                break;
            }
            let key = key.to_ascii_lowercase();
            for _ in 0..=eq {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = std::iter::from_fn(|| chars.next_if(|c| *c != ',' && !c.is_whitespace()))
                    .collect();
            }
            params.push((key, value));
        }
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let challenge = match scheme.to_ascii_lowercase().as_str() {
            "bearer" => get("realm").map(|realm| Challenge::Bearer {
                realm,
                service: get("service"),
                scope: get("scope"),
            }),
            "basic" => Some(Challenge::Basic {
                realm: get("realm"),
            }),
            _ => None,
        };
        match (&found, challenge) {
            // Prefer Bearer when a server offers both.
            (None, Some(c))
            | (Some(Challenge::Basic { .. }), Some(c @ Challenge::Bearer { .. })) => {
                found = Some(c)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        // Commas inside quotes, spaces around separators, escapes, odd case.
        let h = r#"bearer Realm="http://127.0.0.1:9/token" , scope="repository:a/b:pull,push", service=reg, error="insufficient_scope", x="a\"b""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:9/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        // Bearer without a realm cannot be answered.
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn basic_and_multiple_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic {
                realm: Some("Registry Realm".into())
            })
        );
        assert_eq!(
            parse_challenge("Basic"),
            Some(Challenge::Basic { realm: None })
        );
        let both = r#"Basic realm="r", Bearer realm="https://t/token",service="s""#;
        assert!(matches!(
            parse_challenge(both),
            Some(Challenge::Bearer { .. })
        ));
        assert_eq!(parse_challenge(r#"Negotiate abc, Digest realm="x""#), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn docker_config_lookup() {
        let p = Path::new("config.json");
        // `auth` is base64("user:pa:ss"): the password may contain colons.
        let cfg = br#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYTpzcw=="},
            "https://index.docker.io/v1/":{"identitytoken":"refresh-me"},
            "https://reg.example.com":{"username":"u","password":"p"}}}"#;
        assert_eq!(
            lookup_in(cfg, "127.0.0.1:5000", p).unwrap(),
            Some(Credential::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            lookup_in(cfg, "docker.io", p).unwrap(),
            Some(Credential::IdentityToken("refresh-me".into()))
        );
        // Keys with a scheme match the bare host.
        assert_eq!(
            lookup_in(cfg, "reg.example.com", p).unwrap(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(lookup_in(cfg, "other.example.com", p).unwrap(), None);
        let bad = br#"{"auths":{"r.io":{"auth":"%%%"}}}"#;
        let err = lookup_in(bad, "r.io", p).unwrap_err().to_string();
        assert!(err.contains("r.io") && err.contains("config.json"), "{err}");
        let c = Credential::Basic {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.basic_header().unwrap(), "Basic dTpzZWNyZXQ=");
    }

    #[test]
    fn explicit_auth_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth.json");
        std::fs::write(&file, br#"{"auths":{"r.io":{"auth":"YTpi"}}}"#).unwrap();
        assert_eq!(
            lookup("r.io", Some(&file)).unwrap(),
            Some(Credential::Basic {
                username: "a".into(),
                password: "b".into()
            })
        );
        let missing = dir.path().join("nope.json");
        assert!(matches!(
            lookup("r.io", Some(&missing)),
            Err(AuthError::Read { .. })
        ));
    }
}
