//! The API served on a temporary socket, its controller a thread that answers
//! triggers as the real one does (no root, no runtime, no registry): routing, errors,
//! the event stream, the socket's permissions and stale sockets, and the client's
//! "no agent" against a missing or dead socket.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::http::Method;

use super::ApiError;
use super::client::{Client, ClientError};
use super::server::{ApiServer, start_with};
use super::wire::{ErrorDoc, StatusDoc, SuspendedDoc};
use crate::reconcile::agent_state;
use crate::reconcile::controller::{self, Handle, PassOutcome, Trigger};
use crate::reconcile::events::{Event, EventKind};
use crate::reconcile::rows::Row;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The name of a group the test's user may give its files to: its own.
fn own_group() -> String {
    nix::unistd::Group::from_gid(nix::unistd::getegid())
        .expect("getgrgid")
        .expect("the test's group has a name")
        .name
}

/// A controller that answers as the real one: a reconcile converges, suspend and
/// resume write and remove `state/suspended` (and emit their events).
fn fake_controller(state_dir: &Path) -> Handle {
    let (handle, rx) = controller::channel(state_dir, Default::default());
    let h = handle.clone();
    let dir = state_dir.to_path_buf();
    std::thread::spawn(move || {
        while let Ok(t) = rx.recv() {
            match t {
                Trigger::Reconcile(reply) => {
                    let _ = reply.send(Ok(PassOutcome {
                        converged: true,
                        result: "converged".into(),
                        message: None,
                        report: None,
                    }));
                }
                Trigger::Suspend(reply) => {
                    let path = agent_state::suspend_path(&dir);
                    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&path, b"").expect("suspend");
                    h.emit(Event::new(EventKind::Normal, "Suspended", "suspended"));
                    let _ = reply.send(());
                }
                Trigger::Resume(reply) => {
                    let _ = std::fs::remove_file(agent_state::suspend_path(&dir));
                    h.emit(Event::new(EventKind::Normal, "Resumed", "resumed"));
                    let _ = reply.send(());
                }
                Trigger::Exited(_)
                | Trigger::SourceChanged(_)
                | Trigger::Announced(..)
                | Trigger::HealthChanged(_)
                | Trigger::Stop => {}
            }
        }
    });
    handle
}

struct Fixture {
    _dir: tempfile::TempDir,
    state_dir: PathBuf,
    socket: PathBuf,
    handle: Handle,
    rt: tokio::runtime::Runtime,
    server: Option<ApiServer>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let handle = fake_controller(&state_dir);
        let rt = runtime();
        let socket = super::socket_path(&run_dir);
        let server = start_with(rt.handle(), handle.clone(), &socket, &own_group()).expect("start");
        Fixture {
            _dir: dir,
            state_dir,
            socket,
            handle,
            rt,
            server: Some(server),
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.rt.block_on(
            self.client()
                .json(Method::GET, path, Some(Duration::from_secs(10))),
        )
    }

    fn refused(&self, method: Method, path: &str) -> (u16, ErrorDoc) {
        let got = self.rt.block_on(self.client().json::<serde_json::Value>(
            method,
            path,
            Some(Duration::from_secs(10)),
        ));
        match got {
            Err(ClientError::Refused { status, doc }) => (status, doc),
            other => panic!("{path}: expected an error answer, got {other:?}"),
        }
    }
}

#[test]
fn status_containers_and_errors_are_json() {
    let f = Fixture::new();
    let s: StatusDoc = f.rt.block_on(f.client().status()).expect("status");
    assert_eq!(s.agent, "running");
    assert!(!s.suspended);
    assert!(s.revision.is_none());
    let kinds: Vec<&str> = s.conditions.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Ready",
            "Progressing",
            "Degraded",
            "Suspended",
            "SourceUnavailable"
        ]
    );
    assert!(s.containers.is_empty());

    // A container recorded in the state directory is listed, and found by name.
    crate::runtime::record::write_record(&f.state_dir, &crate::runtime::record::sample("web"))
        .expect("record");
    let rows: Vec<Row> = f.get("/v1/containers").expect("containers");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "web");
    assert_eq!(rows[0].kind, "container");
    let one: Row = f.get("/v1/containers/web").expect("web");
    assert_eq!(one.instance, "web-0123abcd");
    let s: StatusDoc = f.rt.block_on(f.client().status()).expect("status");
    assert_eq!(s.containers, rows);

    let (code, doc) = f.refused(Method::GET, "/v1/containers/nope");
    assert_eq!(code, 404);
    assert!(doc.error.contains("nope"), "{}", doc.error);
    let (code, doc) = f.refused(Method::GET, "/v1/nothing");
    assert_eq!(
        (code, doc.error.as_str()),
        (404, "no such endpoint: GET /v1/nothing")
    );
    let (code, doc) = f.refused(Method::GET, "/v1/reconcile");
    assert_eq!(
        (code, doc.error.as_str()),
        (405, "/v1/reconcile does not take GET")
    );
    let (code, doc) = f.refused(Method::GET, "/v1/events?since=yesterday");
    assert_eq!(code, 400);
    assert!(doc.error.contains("yesterday"), "{}", doc.error);
    // No revision applied yet: there is nothing to plan.
    let (code, doc) = f.refused(Method::GET, "/v1/plan");
    assert_eq!(code, 409);
    assert!(
        doc.error.starts_with("no revision is applied yet"),
        "{}",
        doc.error
    );
}

#[test]
fn controls_reach_the_controller_and_a_suspended_agent_refuses_to_reconcile() {
    let f = Fixture::new();
    let c = f.client();
    let o = f.rt.block_on(c.reconcile()).expect("reconcile");
    assert!(o.converged);
    assert_eq!(o.result, "converged");

    let d: SuspendedDoc = f.rt.block_on(c.suspend()).expect("suspend");
    assert!(d.suspended);
    assert!(agent_state::suspended(&f.state_dir));
    let s: StatusDoc = f.rt.block_on(c.status()).expect("status");
    assert!(s.suspended);
    match f.rt.block_on(c.reconcile()) {
        Err(ClientError::Refused { status: 409, doc }) => {
            assert_eq!(doc.error, "the agent is suspended; `berth resume` first")
        }
        other => panic!("expected 409, got {other:?}"),
    }
    let d = f.rt.block_on(c.resume()).expect("resume");
    assert!(!d.suspended);
    assert!(f.rt.block_on(c.reconcile()).expect("reconcile").converged);
}

#[test]
fn a_controller_that_ended_is_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (handle, rx) = controller::channel(dir.path(), Default::default());
    drop(rx);
    let rt = runtime();
    let socket = dir.path().join("api.sock");
    let _server = start_with(rt.handle(), handle, &socket, &own_group()).expect("start");
    match rt.block_on(Client::new(&socket).reconcile()) {
        Err(ClientError::Refused { status: 503, doc }) => {
            assert!(doc.error.contains("stopping"), "{}", doc.error)
        }
        other => panic!("expected 503, got {other:?}"),
    }
}

#[test]
fn events_are_the_history_then_live_ones_until_the_server_stops() {
    let mut f = Fixture::new();
    let mut old = Event::new(EventKind::Normal, "Fetched", "commit abc").revision("abc");
    old.time = "2026-01-01T00:00:00.000Z".into();
    f.handle.emit(old.clone());
    f.handle
        .emit(Event::new(EventKind::Warning, "NotApplied", "not applied: web").container("web"));

    // Without follow: the history, then the end.
    let all: Vec<Event> = f.rt.block_on(async {
        let mut s = f.client().events(None, false).await.expect("events");
        let mut v = Vec::new();
        while let Some(e) = s.next().await.expect("event") {
            v.push(e);
        }
        v
    });
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], old);
    // `since` leaves older ones out, whatever its form.
    let recent: Vec<Event> = f.rt.block_on(async {
        let mut s = f
            .client()
            .events(Some("2026-06-01T00:00:00+02:00"), false)
            .await
            .expect("events");
        let mut v = Vec::new();
        while let Some(e) = s.next().await.expect("event") {
            v.push(e);
        }
        v
    });
    assert_eq!(recent, all[1..]);

    // With follow: the history, then what happens, once each.
    let mut stream =
        f.rt.block_on(f.client().events(None, true))
            .expect("follow");
    for want in &all {
        let got = f.rt.block_on(stream.next()).expect("event");
        assert_eq!(got.as_ref(), Some(want));
    }
    let live = Event::new(EventKind::Normal, "Applied", "converged").revision("def");
    f.handle.emit(live.clone());
    let got =
        f.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), stream.next()).await })
            .expect("a live event in time")
            .expect("event");
    assert_eq!(got, Some(live));

    // The server stops: the stream ends, and the socket is gone.
    f.server = None;
    let end =
        f.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), stream.next()).await })
            .expect("the stream ends in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(!f.socket.exists());
}

#[test]
fn the_socket_is_the_groups_0660_or_root_only_0600() {
    let f = Fixture::new();
    let m = std::fs::metadata(&f.socket).expect("socket");
    assert_eq!(m.permissions().mode() & 0o7777, 0o660);
    assert_eq!(m.gid(), nix::unistd::getegid().as_raw());

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("api.sock");
    let (handle, _rx) = controller::channel(dir.path(), Default::default());
    let _s = start_with(f.rt.handle(), handle, &socket, "no-such-group-berth-test").expect("start");
    let m = std::fs::metadata(&socket).expect("socket");
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
}

#[test]
fn a_stale_socket_is_replaced_a_live_one_or_a_file_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let socket = dir.path().join("api.sock");
    let start = |h: Handle| start_with(rt.handle(), h, &socket, &own_group());

    // A socket file nothing listens on: no agent answers, and a new server takes it.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let no_agent = rt.block_on(Client::new(&socket).status());
    assert!(
        matches!(no_agent, Err(ClientError::NoAgent { .. })),
        "{no_agent:?}"
    );
    let (h, _rx) = controller::channel(dir.path(), Default::default());
    let first = start(h).expect("a stale socket is replaced");

    // A socket something answers on is left alone.
    let (h, _rx2) = controller::channel(dir.path(), Default::default());
    assert!(matches!(start(h), Err(ApiError::InUse { .. })));
    assert!(rt.block_on(Client::new(&socket).status()).is_ok());
    drop(first);
    assert!(!socket.exists());

    // A path that is not a socket is left alone.
    std::fs::write(&socket, b"not a socket").expect("file");
    let (h, _rx3) = controller::channel(dir.path(), Default::default());
    assert!(matches!(start(h), Err(ApiError::NotSocket { .. })));
    assert_eq!(std::fs::read(&socket).expect("kept"), b"not a socket");

    // No socket at all: no agent answers, and the error says where it looked.
    let missing = dir.path().join("missing.sock");
    let e = rt
        .block_on(Client::new(&missing).status())
        .expect_err("no socket");
    assert!(e.no_agent());
    assert!(
        e.to_string()
            .starts_with(&format!("no agent answers on {}", missing.display())),
        "{e}"
    );
}

#[test]
fn a_container_name_that_climbs_out_is_not_found_and_reads_nothing() {
    let f = Fixture::new();
    // A record outside `containers/` that the climb would reach.
    let outside = f.state_dir.join("x");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("state.json"), br#"{"spec":"SECRET-42"}"#).expect("write");
    for path in [
        "/v1/containers/..%2Fx",
        "/v1/containers/..%2F..%2Fetc",
        "/v1/containers/a%2Fb",
        "/v1/containers/..",
    ] {
        let (code, doc) = f.refused(Method::GET, path);
        assert_eq!(code, 404, "{path}: {doc:?}");
        assert!(!doc.error.contains("SECRET"), "{path}: {doc:?}");
        assert!(
            doc.error.starts_with("no container named"),
            "{path}: {doc:?}"
        );
    }
}

#[test]
fn event_streams_are_capped_and_a_closed_one_frees_its_place() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let f = Fixture::new();
    // The status line of GET /v1/events?follow=true on a connection kept open.
    let open = || {
        let mut s = UnixStream::connect(&f.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /v1/events?follow=true HTTP/1.1\r\nHost: berth\r\n\r\n")
            .expect("write");
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n") {
            s.read_exact(&mut b).expect("read");
            got.push(b[0]);
        }
        (s, String::from_utf8_lossy(&got).into_owned())
    };
    let mut held = Vec::new();
    for _ in 0..super::routes::MAX_EVENT_STREAMS {
        let (s, status) = open();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        held.push(s);
    }
    let (_, status) = open();
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    drop(held.pop());
    // The freed place is taken again (once the server has seen the close).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, status) = open();
        if status.starts_with("HTTP/1.1 200") {
            held.push(s);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /v1/audit` serves the agent's report as written, 409 before the first pass.
#[test]
fn the_audit_report_is_served_as_written() {
    let f = Fixture::new();
    let (code, doc) = f.refused(Method::GET, "/v1/audit");
    assert_eq!(code, 409);
    assert!(doc.error.contains("no audit report yet"), "{}", doc.error);
    crate::runtime::record::write_record(&f.state_dir, &crate::runtime::record::sample("web"))
        .expect("record");
    let policy = crate::node::NodePolicy {
        policy: berth_policy::policy::Policy::profile("restricted").expect("profile"),
        mode: berth_spec::node::PolicyMode::Enforce,
        host: Default::default(),
    };
    let scope = crate::trust::live::Scope {
        policy: &policy,
        node: None,
        tree: None,
    };
    let report = crate::trust::live::from_state(
        &f.state_dir,
        &scope,
        crate::trust::live::chains(&f.state_dir),
        berth_policy::report::LiveSource::Agent,
    )
    .expect("report");
    crate::trust::live::store(&f.state_dir, &report).expect("store");
    let served = f.rt.block_on(f.client().audit()).expect("audit");
    let written = std::fs::read_to_string(crate::trust::live::path(&f.state_dir)).expect("read");
    assert_eq!(served, written);
    let back = crate::trust::live::parse(&served, "the agent sent").expect("parse");
    assert_eq!(back.containers.len(), 1);
    assert_eq!(back.chains.len(), 1);
}
