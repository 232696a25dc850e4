//! The API's endpoints (`agent/API.md`). Reads come from the state directory (the same
//! files `berth ps` and `berth status` read), on blocking threads; the controls go to
//! the controller through its [`controller::Handle`] and wait for its answer.
//!
//! Every answer is JSON but `GET /metrics`'s (OpenMetrics text); every error is `{"error": "…"}` with a status that says what
//! kind: 400 a bad query, 404 no such endpoint or container, 405 the wrong method, 409
//! the agent will not do it now (suspended, stopping, nothing applied yet), 422 the
//! applied revision's tree has errors, 500 the state could not be read, 503 the
//! controller has ended.

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_spec::diag::printable;
use futures_util::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, oneshot, watch};

use super::wire::{ErrorDoc, StatusDoc, SuspendedDoc};
use crate::reconcile::agent_state;
use crate::reconcile::controller::{self, Trigger};
use crate::reconcile::events::Event;
use crate::reconcile::rows::{self, unix_now};
use crate::reconcile::worker::{self, PlanError, PlanFailure};
use crate::runtime::status::StatusError;
use crate::source::applied::Applied;
use crate::util::{error_chain, rfc3339};

/// How many event requests (recorded or followed) are served at once; more are 503.
pub(super) const MAX_EVENT_STREAMS: usize = 32;

/// The media type of the events: one JSON object a line.
const NDJSON: &str = "application/x-ndjson";

/// How many of the recorded events a follower compares live ones with: an event
/// recorded while the history was read is also sent live, and is sent once.
const DEDUP: usize = 256;

/// What every handler shares.
#[derive(Debug, Clone)]
pub(super) struct Ctx {
    pub handle: controller::Handle,
    /// Event requests at once ([`MAX_EVENT_STREAMS`]): each holds the history it sends
    /// until its client reads it.
    pub streams: Arc<Semaphore>,
    /// One plan at a time: each is a process of the agent's own.
    pub plans: Arc<Semaphore>,
    /// Becomes true when the server stops: open event streams end.
    pub shutdown: watch::Receiver<bool>,
}

impl Ctx {
    pub(super) fn new(handle: controller::Handle, shutdown: watch::Receiver<bool>) -> Self {
        Ctx {
            handle,
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            plans: Arc::new(Semaphore::new(1)),
            shutdown,
        }
    }
}

pub(super) fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/containers", get(containers))
        .route("/v1/containers/{name}", get(container))
        .route("/v1/plan", get(plan))
        .route("/v1/audit", get(audit))
        .route("/v1/events", get(events))
        .route("/v1/reconcile", post(reconcile))
        .route("/v1/suspend", post(suspend))
        .route("/v1/resume", post(resume))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(ctx)
}

/// An error answer: its status and `{"error": …}`.
#[derive(Debug)]
pub(super) struct Failure(StatusCode, ErrorDoc);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

fn fail(code: StatusCode, error: impl Into<String>) -> Failure {
    Failure(
        code,
        ErrorDoc {
            error: error.into(),
            errors: Vec::new(),
        },
    )
}

type Answer = Result<Response, Failure>;

fn json<T: serde::Serialize>(value: T) -> Answer {
    Ok(axum::Json(value).into_response())
}

/// Runs a read of the state directory on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request's worker failed: {e}"),
        )
    })
}

fn state_failure(e: &StatusError) -> Failure {
    let code = match e {
        StatusError::Unknown { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    fail(code, error_chain(e))
}

async fn status(State(c): State<Ctx>) -> Answer {
    let dir = c.handle.state_dir().to_path_buf();
    let backoff = c.handle.backoff();
    let doc = blocking(move || StatusDoc::read(&dir, true, unix_now(), backoff)).await?;
    let mut doc = doc.map_err(|e| state_failure(&e))?;
    doc.notify = c.handle.notify_state();
    json(doc)
}

async fn containers(State(c): State<Ctx>) -> Answer {
    let dir = c.handle.state_dir().to_path_buf();
    let backoff = c.handle.backoff();
    let rows = blocking(move || rows::list(&dir, unix_now(), backoff)).await?;
    json(rows.map_err(|e| state_failure(&e))?)
}

async fn container(State(c): State<Ctx>, UrlPath(name): UrlPath<String>) -> Answer {
    // A name is a spec's name or nothing: `..%2F…` never becomes a path.
    if !berth_spec::valid_name(&name) {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!(
                "no container named `{}`",
                berth_spec::diag::printable(&name)
            ),
        ));
    }
    let dir = c.handle.state_dir().to_path_buf();
    let backoff = c.handle.backoff();
    let row = blocking(move || rows::one(&dir, &name, unix_now(), backoff)).await?;
    json(row.map_err(|e| state_failure(&e))?)
}

/// What a pass would do now on the revision applied last: made in a process of the
/// agent's own (`reconcile::worker`), which pulls what it needs from registries.
async fn plan(State(c): State<Ctx>) -> Answer {
    let dir = c.handle.state_dir().to_path_buf();
    // Plans wait for each other: a flood of requests is a queue, not a process each.
    let _one = c
        .plans
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| fail(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping"))?;
    let planned = blocking(move || {
        // Nothing applied yet: said without starting a process.
        match Applied::load(&dir) {
            Ok(None) => Err(PlanFailure::from(PlanError::NoRevision)),
            _ => worker::plan_in_child(),
        }
    })
    .await?;
    match planned {
        Ok(report) => json(report),
        Err(e @ PlanFailure::Conflict { .. }) => Err(fail(StatusCode::CONFLICT, e.to_string())),
        Err(PlanFailure::Invalid { errors }) => Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorDoc {
                error: format!(
                    "the applied revision's spec tree has {} errors",
                    errors.len()
                ),
                errors,
            },
        )),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The node's live audit report, as the agent wrote it after its last pass
/// (`trust::live`): `berth audit --format json`'s document, served as written.
async fn audit(State(c): State<Ctx>) -> Answer {
    let dir = c.handle.state_dir().to_path_buf();
    let read = blocking(move || crate::trust::live::read(&dir)).await?;
    match read {
        Ok(Some(bytes)) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
        }
        Ok(None) => Err(fail(
            StatusCode::CONFLICT,
            "the agent has written no audit report yet: it writes one after each pass",
        )),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e))),
    }
}

/// The query of `GET /v1/events`.
#[derive(Debug, Default, PartialEq, Eq)]
struct EventsQuery {
    /// Only events at or after it: RFC 3339, as the event log writes times.
    since: Option<String>,
    follow: bool,
}

/// A query `GET /v1/events` does not take; each says which parameter and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum QueryError {
    #[error("unknown query parameter `{0}`: /v1/events takes since and follow")]
    Unknown(String),
    #[error("{0}: given more than once")]
    Twice(&'static str),
    #[error("follow: `{0}` is not true or false")]
    Follow(String),
    #[error("since: `{0}` is not an RFC 3339 time")]
    Since(String),
}

impl EventsQuery {
    /// The query's decoded pairs, checked: known names, each once, valid values.
    fn parse(pairs: &[(String, String)]) -> Result<EventsQuery, QueryError> {
        let shown = |v: &str| printable(v).into_owned();
        let mut q = EventsQuery::default();
        let (mut since, mut follow) = (false, false);
        for (key, value) in pairs {
            match key.as_str() {
                "since" if since => return Err(QueryError::Twice("since")),
                "follow" if follow => return Err(QueryError::Twice("follow")),
                "since" => {
                    since = true;
                    let at = normalise(value).ok_or_else(|| QueryError::Since(shown(value)))?;
                    q.since = Some(at);
                }
                "follow" => {
                    follow = true;
                    q.follow = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(QueryError::Follow(shown(value))),
                    };
                }
                _ => return Err(QueryError::Unknown(shown(key))),
            }
        }
        Ok(q)
    }
}

/// The recorded events as JSON lines, then (with `follow`) each new one as it happens.
async fn events(
    State(c): State<Ctx>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Answer {
    let Query(pairs) = query.map_err(|_| {
        fail(
            StatusCode::BAD_REQUEST,
            "the query is not a form-encoded list of name=value pairs",
        )
    })?;
    let q = EventsQuery::parse(&pairs).map_err(|e| fail(StatusCode::BAD_REQUEST, e.to_string()))?;
    let permit = c.streams.clone().try_acquire_owned().map_err(|_| {
        fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_EVENT_STREAMS} event requests are served already; try again later"),
        )
    })?;
    let since = q.since;
    // Subscribed before the history is read, so nothing falls between the two.
    let live = q.follow.then(|| c.handle.subscribe());
    let handle = c.handle.clone();
    let recorded = blocking(move || handle.recorded(since.as_deref())).await?;
    let mut head = Vec::new();
    for e in &recorded {
        head.extend_from_slice(&line(e));
    }
    let Some(rx) = live else {
        // The whole history is in the answer; its permit goes once it is handed over.
        drop(permit);
        return Ok(([(header::CONTENT_TYPE, NDJSON)], head).into_response());
    };
    let seen = recorded[recorded.len().saturating_sub(DEDUP)..].to_vec();
    let body = Body::from_stream(follow(Follow {
        head: Some(head),
        rx,
        seen,
        shutdown: c.shutdown.clone(),
        _permit: permit,
    }));
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

/// An RFC 3339 time as the event log writes times (UTC, milliseconds), so that the
/// log's comparison of texts orders them as times.
fn normalise(s: &str) -> Option<String> {
    let (secs, nanos) = rfc3339::parse(s)?;
    let secs = u64::try_from(secs).unwrap_or(0);
    Some(rfc3339::format_millis(std::time::Duration::new(
        secs, nanos,
    )))
}

fn line(e: &Event) -> Vec<u8> {
    let mut l = serde_json::to_vec(e).unwrap_or_default();
    l.push(b'\n');
    l
}

/// A follower's stream: the history, then live events until the server stops.
struct Follow {
    head: Option<Vec<u8>>,
    rx: broadcast::Receiver<Event>,
    /// The newest recorded events, each skipped once when it also arrives live.
    seen: Vec<Event>,
    shutdown: watch::Receiver<bool>,
    /// Held while the stream lives.
    _permit: OwnedSemaphorePermit,
}

fn follow(f: Follow) -> impl Stream<Item = Result<Bytes, io::Error>> + Send {
    futures_util::stream::unfold(f, |mut f| async move {
        if let Some(head) = f.head.take().filter(|h| !h.is_empty()) {
            return Some((Ok(Bytes::from(head)), f));
        }
        loop {
            // Events first: those sent before the server stops (the agent's last) are
            // still delivered.
            let got = tokio::select! {
                biased;
                got = f.rx.recv() => got,
                _ = f.shutdown.wait_for(|s| *s) => return None,
            };
            match got {
                Ok(e) => {
                    if let Some(i) = f.seen.iter().position(|s| *s == e) {
                        f.seen.remove(i);
                        continue;
                    }
                    return Some((Ok(Bytes::from(line(&e))), f));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(target: "api", lost = n, "an event follower fell behind; events were not sent to it");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn gone() -> Failure {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent's controller has ended: the agent is stopping",
    )
}

/// Fetches now and runs a pass; answers when it has run.
async fn reconcile(State(c): State<Ctx>) -> Answer {
    if agent_state::suspended(c.handle.state_dir()) {
        return Err(fail(
            StatusCode::CONFLICT,
            "the agent is suspended; `berth resume` first",
        ));
    }
    let (tx, rx) = oneshot::channel();
    if !c.handle.send(Trigger::Reconcile(tx)) {
        return Err(gone());
    }
    match rx.await {
        Ok(Ok(outcome)) => json(outcome),
        Ok(Err(why)) => Err(fail(StatusCode::CONFLICT, why.to_string())),
        Err(_) => Err(gone()),
    }
}

/// The agent's Prometheus metrics, OpenMetrics text (`docs/metrics.md`).
async fn metrics(State(c): State<Ctx>) -> Answer {
    let body = crate::telemetry::metrics_http::scrape(&c.handle)
        .await
        .ok_or_else(|| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be gathered",
            )
        })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}

async fn suspend(State(c): State<Ctx>) -> Answer {
    control(&c, true).await
}

async fn resume(State(c): State<Ctx>) -> Answer {
    control(&c, false).await
}

/// Suspends or resumes; answers once the controller has done it (after the pass in
/// flight, if one runs) with whether passes are suspended now.
async fn control(c: &Ctx, suspend: bool) -> Answer {
    let (tx, rx) = oneshot::channel();
    let t = if suspend {
        Trigger::Suspend(tx)
    } else {
        Trigger::Resume(tx)
    };
    if !c.handle.send(t) {
        return Err(gone());
    }
    rx.await.map_err(|_| gone())?;
    let now = agent_state::suspended(c.handle.state_dir());
    if now != suspend {
        return Err(fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the agent could not record that passes are {} (see its log)",
                if suspend { "suspended" } else { "resumed" }
            ),
        ));
    }
    json(SuspendedDoc { suspended: now })
}

async fn not_found(method: Method, uri: Uri) -> Failure {
    fail(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn not_allowed(method: Method, uri: Uri) -> Failure {
    fail(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

#[cfg(test)]
mod events_query_tests {
    use axum::http::Uri;

    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        let uri: Uri = format!("/v1/events?{query}").parse().expect("uri");
        Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .expect("pairs")
            .0
    }

    #[test]
    fn a_query_is_checked_a_parameter_at_a_time() {
        let q = EventsQuery::parse(&pairs("since=2026-06-01T00:00:00%2B02:00&follow=true"));
        assert_eq!(
            q,
            Ok(EventsQuery {
                since: Some("2026-05-31T22:00:00.000Z".into()),
                follow: true,
            })
        );
        assert_eq!(EventsQuery::parse(&pairs("")), Ok(EventsQuery::default()));
        for (query, error) in [
            ("follow=yes", "follow: `yes` is not true or false"),
            ("follow", "follow: `` is not true or false"),
            (
                "since=yesterday",
                "since: `yesterday` is not an RFC 3339 time",
            ),
            ("since=10m", "since: `10m` is not an RFC 3339 time"),
            (
                "limit=5",
                "unknown query parameter `limit`: /v1/events takes since and follow",
            ),
            ("follow=true&follow=false", "follow: given more than once"),
            (
                "follow=%1B%5B31m",
                "follow: `\\u{1b}[31m` is not true or false",
            ),
        ] {
            let got = EventsQuery::parse(&pairs(query)).map_err(|e| e.to_string());
            assert_eq!(got, Err(error.to_string()), "{query}");
        }
    }

    /// The handler answers a bad query 400 with the project's one-sentence JSON.
    #[test]
    fn a_bad_query_is_a_json_400() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (handle, _rx) = controller::channel(dir.path(), Default::default());
        let (_stop, shutdown) = watch::channel(false);
        let ctx = Ctx::new(handle, shutdown);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let answer = |query: &str| {
            let uri: Uri = format!("/v1/events?{query}").parse().expect("uri");
            let query = Query::try_from_uri(&uri);
            let resp = match rt.block_on(events(State(ctx.clone()), query)) {
                Ok(r) => r,
                Err(f) => f.into_response(),
            };
            let status = resp.status();
            let body = rt
                .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
                .expect("body");
            (status, String::from_utf8_lossy(&body).into_owned())
        };
        let (status, body) = answer("follow=yes");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let doc: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(
            doc,
            serde_json::json!({"error": "follow: `yes` is not true or false"})
        );
        let (status, body) = answer("since=nope");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body.contains("since: `nope` is not an RFC 3339 time"),
            "{body}"
        );
        let (status, body) = answer("follow=false");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}
