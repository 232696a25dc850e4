//! The receiver's judgement, pure: who signed a request and whether the signature
//! holds (constant time), whether it is a push to the followed ref (a JSON body, or a
//! form's `payload` field), and the rate limits. No I/O and no clock: the caller passes
//! the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use berth_spec::node::GitRef;
use hyper::StatusCode;
use hyper::header::HeaderMap;

use super::{FETCH_SPACING, Secret};
/// Shared with the metrics address (`telemetry::metrics_http`).
pub use crate::util::peers::{PeerConnections, peer_key};

/// Who sent a request, by the header that authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    Forgejo,
    GitLab,
}

impl Forge {
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::Forgejo => "forgejo",
            Forge::GitLab => "gitlab",
        }
    }

    /// The headers naming the event, first found wins (Forgejo sends Gitea's too).
    fn event_headers(self) -> &'static [&'static str] {
        match self {
            Forge::GitHub => &["x-github-event"],
            Forge::Gitea => &["x-gitea-event"],
            Forge::Forgejo => &["x-forgejo-event", "x-gitea-event"],
            Forge::GitLab => &["x-gitlab-event"],
        }
    }

    fn is_push(self, event: &str) -> bool {
        match self {
            Forge::GitLab => event == "Push Hook" || event == "Tag Push Hook",
            _ => event == "push",
        }
    }
}

/// What a request comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A push to the followed ref, from `forge`.
    Push {
        forge: Forge,
        git_ref: String,
    },
    /// Authentic, but nothing to fetch: why.
    Ignored(String),
    Refused {
        status: StatusCode,
        reason: String,
    },
}

fn refused(status: StatusCode, reason: impl Into<String>) -> Verdict {
    Verdict::Refused {
        status,
        reason: reason.into(),
    }
}

type HmacSha256 = hmac013::Hmac<sha2::Sha256>;

/// Whether `tag` is HMAC-SHA256(secret, body), in constant time.
fn hmac_matches(secret: &Secret, body: &[u8], tag: &[u8]) -> bool {
    use hmac013::{KeyInit, Mac};
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(&secret.0) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(tag).is_ok()
}

/// Whether `token` is the secret, in constant time: the SHA-256 of both are compared,
/// so not even the secret's length shows in the time taken.
fn token_matches(secret: &Secret, token: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (
        sha2::Sha256::digest(token),
        sha2::Sha256::digest(&*secret.0),
    );
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Who signed the request and whether the signature holds: the forge, or the refusal.
#[cfg(test)]
pub fn authenticate(headers: &HeaderMap, body: &[u8], secret: &Secret) -> Result<Forge, Verdict> {
    authenticate_either(headers, body, None, secret)
}

/// [`authenticate`], a signature holding over `body` as sent or over `payload`, a form
/// body's decoded `payload` field (GitHub signs the body as sent, Gitea and Forgejo the
/// JSON they put in the form).
fn authenticate_either(
    headers: &HeaderMap,
    body: &[u8],
    payload: Option<&[u8]>,
    secret: &Secret,
) -> Result<Forge, Verdict> {
    let unauthorized = |why: &str| refused(StatusCode::UNAUTHORIZED, why);
    let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
    if let Some(token) = header("x-gitlab-token") {
        return if token_matches(secret, token) {
            Ok(Forge::GitLab)
        } else {
            Err(unauthorized("the X-Gitlab-Token does not match"))
        };
    }
    let (forge, name, hex_tag) = if let Some(v) = header("x-forgejo-signature") {
        (Forge::Forgejo, "X-Forgejo-Signature", v)
    } else if let Some(v) = header("x-gitea-signature") {
        (Forge::Gitea, "X-Gitea-Signature", v)
    } else if let Some(v) = header("x-hub-signature-256") {
        let Some(hex_tag) = v.strip_prefix(b"sha256=") else {
            return Err(unauthorized("the X-Hub-Signature-256 is not sha256=<hex>"));
        };
        (Forge::GitHub, "X-Hub-Signature-256", hex_tag)
    } else {
        return Err(unauthorized(
            "unsigned: no X-Hub-Signature-256, X-Gitea-Signature, X-Forgejo-Signature or X-Gitlab-Token",
        ));
    };
    let Ok(tag) = hex::decode(hex_tag) else {
        return Err(unauthorized(&format!("the {name} is not hexadecimal")));
    };
    if hmac_matches(secret, body, &tag) || payload.is_some_and(|p| hmac_matches(secret, p, &tag)) {
        Ok(forge)
    } else {
        Err(unauthorized(&format!("the {name} does not match the body")))
    }
}

/// Why a push does not move what the node follows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotFollowed {
    #[error("the node is pinned to commit {0}, which never moves")]
    Pinned(String),
    #[error("a push to {pushed}, not to {want}")]
    OtherRef { pushed: String, want: String },
}

/// Whether a push to `pushed` (`refs/heads/…`, `refs/tags/…`) moves what the node
/// follows; else why not.
pub fn followed(git_ref: &GitRef, pushed: &str) -> Result<(), NotFollowed> {
    let want = match git_ref {
        GitRef::Branch(b) => format!("refs/heads/{b}"),
        GitRef::Tag(t) => format!("refs/tags/{t}"),
        GitRef::Commit(c) => return Err(NotFollowed::Pinned(c.clone())),
    };
    if pushed == want {
        Ok(())
    } else {
        Err(NotFollowed::OtherRef {
            pushed: pushed.to_string(),
            want,
        })
    }
}

/// The one field of a push event the receiver reads.
#[derive(serde::Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
}

/// Whether the body is a form (`application/x-www-form-urlencoded`, GitHub's default
/// content type and one Gitea and Forgejo offer) rather than JSON.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A form body's `payload` field, decoded: the event's JSON.
pub fn form_payload(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
}

/// What a request with this (complete) body comes to; pure.
pub fn judge(headers: &HeaderMap, body: &[u8], secret: &Secret, git_ref: &GitRef) -> Verdict {
    let form = is_form(headers);
    let payload = if form { form_payload(body) } else { None };
    let forge =
        match authenticate_either(headers, body, payload.as_deref().map(str::as_bytes), secret) {
            Ok(f) => f,
            Err(v) => return v,
        };
    let event = forge
        .event_headers()
        .iter()
        .find_map(|h| headers.get(*h))
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(event) = event else {
        return Verdict::Ignored(format!("no event header ({})", forge.name()));
    };
    if !forge.is_push(&event) {
        let shown: String = event.chars().take(64).collect();
        return Verdict::Ignored(format!("event {shown:?} ({}) is not a push", forge.name()));
    }
    let json = match (&payload, form) {
        (Some(p), _) => p.as_bytes(),
        (None, true) => {
            return refused(
                StatusCode::BAD_REQUEST,
                "a form body (application/x-www-form-urlencoded) with no `payload` field: set the webhook's content type to application/json",
            );
        }
        (None, false) => body,
    };
    let push: PushEvent = match serde_json::from_slice(json) {
        Ok(p) => p,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("the push event's body has no `ref`: {e}"),
            );
        }
    };
    match followed(git_ref, &push.git_ref) {
        Ok(()) => Verdict::Push {
            forge,
            git_ref: push.git_ref,
        },
        Err(why) => Verdict::Ignored(format!("{why} ({})", forge.name())),
    }
}

/// A token bucket: `burst` at once, then `per_second`.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(burst: u32, per_second: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            at: now,
        }
    }

    /// Gives back a token taken (up to the burst).
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A [`Bucket`] per peer ([`peer_key`]), for `capacity` peers at most: a new peer
/// beyond them takes the place of the one seen least recently, which starts with a full
/// bucket if it comes back (forgetting a peer never refuses anyone more).
#[derive(Debug)]
pub struct PeerBuckets {
    buckets: HashMap<IpAddr, Bucket>,
    capacity: usize,
    burst: u32,
    per_second: u32,
}

impl PeerBuckets {
    pub fn new(capacity: usize, burst: u32, per_second: u32) -> PeerBuckets {
        PeerBuckets {
            buckets: HashMap::new(),
            capacity: capacity.max(1),
            burst,
            per_second,
        }
    }

    /// Takes one of `peer`'s tokens if it has one; only its own requests count.
    pub fn take(&mut self, peer: IpAddr, now: Instant) -> bool {
        let key = peer_key(peer);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            // A bucket's time is when its peer was last seen.
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.buckets.remove(&oldest);
            }
        }
        let (burst, per_second) = (self.burst, self.per_second);
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(burst, per_second, now))
            .take(now)
    }

    /// Gives `peer` back the token of a request that authenticated: only the others
    /// count against it.
    pub fn refund(&mut self, peer: IpAddr) {
        if let Some(b) = self.buckets.get_mut(&peer_key(peer)) {
            b.refund();
        }
    }

    /// How many peers are tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// When a valid push's fetch may start, so that fetches are [`FETCH_SPACING`] apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Now,
    /// After this delay (it is the one pending).
    After(Duration),
    /// A fetch already waits to start, after this push: it covers it.
    Pending,
}

/// See [`Pace`].
#[derive(Debug, Default)]
pub struct Pacer {
    /// When the last fetch was, or the pending one will be, asked for.
    last: Option<Instant>,
}

impl Pacer {
    pub fn admit(&mut self, now: Instant) -> Pace {
        match self.last {
            Some(at) if at > now => Pace::Pending,
            Some(at) if now.duration_since(at) < FETCH_SPACING => {
                let next = at + FETCH_SPACING;
                self.last = Some(next);
                Pace::After(next.duration_since(now))
            }
            _ => {
                self.last = Some(now);
                Pace::Now
            }
        }
    }
}

/// Lets one log line through a second and counts the ones it holds back, so that a
/// flood of refused requests does not flood the log.
#[derive(Debug, Default)]
pub struct LogPacer {
    last: Option<Instant>,
    held: u64,
}

impl LogPacer {
    /// `Some(n)`: write a line now, saying `n` were held back since the last one;
    /// `None`: hold this one back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < Duration::from_secs(1) => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}
