//! The Docker token flow: on a `Bearer realm=…,service=…,scope=…` challenge, ask the
//! realm for a token (with Basic credentials when there are some, or an OAuth2
//! refresh-token grant for an `identitytoken`), and cache it per host and repository
//! scope until it expires.

use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use super::error::{RegistryError, Target};
use super::transport::{Endpoint, Inner, SmallReadError, is_loopback, read_small};
use crate::image::auth::Credential;

/// Tokens without `expires_in` live 60 s (the token spec's default and minimum).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Token responses are small JSON; anything larger is not a token server.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub(super) struct Token {
    pub value: String,
    pub expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub fn expired(&self) -> bool {
        Instant::now() >= self.expires
    }
}

/// The scope an operation on `repository` needs.
pub(super) fn scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

/// The longest a token is reused, whatever the registry says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Parses a token response: `token` or `access_token`, and the lifetime. A token is
/// renewed 10 s before it expires so a long pull does not race its expiry.
pub(super) fn parse_response(body: &[u8]) -> Result<(String, Duration), String> {
    #[derive(serde::Deserialize)]
    struct Resp {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let r: Resp =
        serde_json::from_slice(body).map_err(|e| format!("invalid token response: {e}"))?;
    let token = r
        .token
        .or(r.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("token response has no token")?;
    let lifetime = r
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .max(DEFAULT_TOKEN_LIFETIME)
        // The server's number: a huge one would overflow the clock.
        .min(MAX_TOKEN_LIFETIME);
    Ok((token, lifetime.saturating_sub(Duration::from_secs(10))))
}

/// Fetches a token for `scope` from `realm`.
pub(super) async fn fetch(
    inner: &Inner,
    ep: &Endpoint,
    target: &Target,
    realm: &str,
    service: Option<&str>,
    scope: &str,
) -> Result<Token, RegistryError> {
    let err = |detail: String, transient: bool| RegistryError::Token {
        target: target.clone(),
        realm: realm.to_string(),
        detail,
        transient,
    };
    let mut url = Url::parse(realm).map_err(|e| err(format!("invalid realm: {e}"), false))?;
    let realm_host = url.host_str().unwrap_or("").to_string();
    let plain_ok = ep.insecure || is_loopback(&realm_host);
    match url.scheme() {
        "https" => {}
        "http" if plain_ok => {}
        _ => {
            return Err(RegistryError::Insecure {
                registry: target.registry.clone(),
                url: realm.to_string(),
            });
        }
    }
    let client = if url.scheme() == "https" && plain_ok {
        &inner.http_insecure
    } else {
        &inner.http
    };
    let credential = inner.credential(ep)?;
    let req = match &credential {
        Some(Credential::IdentityToken(refresh)) => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("client_id", "berth")
                .append_pair("refresh_token", refresh)
                .append_pair("scope", scope);
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.finish())
        }
        other => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scope.split(' ').filter(|s| !s.is_empty()) {
                    q.append_pair("scope", s);
                }
            }
            let mut req = client.get(url.clone());
            if let Some(h) = other.as_ref().and_then(Credential::basic_header) {
                req = req.header(AUTHORIZATION, h);
            }
            req
        }
    };
    let timeouts = inner.timeouts;
    let no_headers = || {
        let after = humantime::format_duration(timeouts.connect);
        err(format!("no response headers within {after}"), true)
    };
    let resp = match tokio::time::timeout(timeouts.connect, req.send()).await {
        Err(_) => return Err(no_headers()),
        Ok(Err(e)) if e.is_timeout() => return Err(no_headers()),
        Ok(Err(e)) => return Err(err(format!("unreachable: {e}"), true)),
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(match credential {
            None => RegistryError::NoCredentials {
                target: target.clone(),
            },
            Some(_) => RegistryError::Unauthorized {
                target: target.clone(),
                detail: format!(": the token server {realm} refused them ({status})"),
            },
        });
    }
    if !resp.status().is_success() {
        return Err(err(
            format!("answered {status}"),
            super::retry::is_transient_status(status),
        ));
    }
    let body = read_small(resp, MAX_TOKEN_RESPONSE, timeouts.idle)
        .await
        .map_err(|e| match e {
            SmallReadError::TooLarge(_) => err("response too large".into(), false),
            SmallReadError::Broken(e) => err(format!("broken response: {e}"), true),
            SmallReadError::TooSlow => {
                let after = humantime::format_duration(timeouts.idle);
                err(format!("response not received whole within {after}"), true)
            }
        })?;
    let (value, lifetime) = parse_response(&body).map_err(|d| err(d, false))?;
    tracing::debug!(registry = %target.registry, scope, "got registry token");
    Ok(Token {
        value,
        expires: Instant::now() + lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_responses() {
        let (t, life) = parse_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), life), ("abc", Duration::from_secs(290)));
        let (t, life) = parse_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!((t.as_str(), life), ("xyz", Duration::from_secs(50)));
        // A lifetime past the clock's range is cut to a day.
        let (_, life) =
            parse_response(br#"{"token":"abc","expires_in":18446744073709551615}"#).unwrap();
        assert_eq!(life, MAX_TOKEN_LIFETIME - Duration::from_secs(10));
        // A lifetime below the minimum is raised to it.
        let (_, life) = parse_response(br#"{"token":"a","expires_in":5}"#).unwrap();
        assert_eq!(life, Duration::from_secs(50));
        assert!(parse_response(br#"{"token":""}"#).is_err());
        assert!(parse_response(b"nope").is_err());
        assert_eq!(scope("shop/web", false), "repository:shop/web:pull");
        assert_eq!(scope("shop/web", true), "repository:shop/web:pull,push");
    }
}
