//! Deadlines against hostile loopback servers: no headers, a stalled blob, a trickled
//! manifest, a huge error body, and a slow but steady blob that must still succeed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::image::store::Store;

/// A loopback server running `handler` on each plain-http request (its request line
/// and the connection). TLS probes are refused by closing, so the client falls back
/// to http. Returns the `host:port`.
pub(super) fn serve(handler: impl Fn(String, TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let handler = handler.clone();
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if conn.peek(&mut first).is_err() || first[0] == 0x16 {
                    return;
                }
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                handler(line, conn);
            });
        }
    });
    addr
}

pub(super) fn client(connect: u64, idle: u64) -> Client {
    let timeouts = Timeouts {
        connect: Duration::from_secs(connect),
        idle: Duration::from_secs(idle),
    };
    Client::build(RegistryConfig::new(), RetryPolicy::default(), timeouts).unwrap()
}

pub(super) fn repo(addr: &str) -> Repository {
    Repository {
        registry: addr.to_string(),
        name: "hostile/app".into(),
    }
}

fn headers(conn: &mut TcpStream, status: &str, length: u64) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn no_response_headers_fails_after_the_connect_timeout_without_retrying() {
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let addr = serve(move |_, conn| {
        seen.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(30));
        drop(conn);
    });
    let started = Instant::now();
    let err = client(1, 30)
        .fetch_manifest(&repo(&addr), "v1")
        .await
        .unwrap_err();
    let took = started.elapsed();
    // The https probe (at most the connect timeout) and the request itself.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(matches!(err, RegistryError::NoHeaders { .. }), "{err:?}");
    assert!(err.is_transient() && err.is_timeout());
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("registry {addr}: no response headers within 1s")),
        "{msg}"
    );
    assert!(msg.contains("hostile/app"), "{msg}");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        1,
        "a timeout is not retried"
    );
}

#[tokio::test]
async fn a_stalled_blob_fails_after_the_idle_timeout() {
    let addr = serve(|_, mut conn| {
        let _ = headers(&mut conn, "200 OK", 1000);
        let _ = conn.write_all(b"ab");
        std::thread::sleep(Duration::from_secs(30));
    });
    let digest = Digest::of(b"whatever");
    let body = client(5, 1)
        .open_blob(&repo(&addr), &digest, 0)
        .await
        .unwrap();
    let started = Instant::now();
    let mut stream = body.stream;
    let mut got = Vec::new();
    let err = loop {
        match stream.next().await {
            Some(Ok(c)) => got.extend_from_slice(&c),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    let took = started.elapsed();
    assert_eq!(got, b"ab");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(err.is_transient() && err.is_timeout(), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "blob {digest} from registry {addr}: less than 1 KiB in 1s (repository hostile/app)"
        )
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the stall"
    );
}

/// Serves `data` in `chunk`-byte pieces, one every `every`.
fn paced(data: Vec<u8>, chunk: usize, every: Duration) -> String {
    serve(move |_, mut conn| {
        if headers(&mut conn, "200 OK", data.len() as u64).is_err() {
            return;
        }
        for piece in data.chunks(chunk) {
            std::thread::sleep(every);
            if conn.write_all(piece).and_then(|_| conn.flush()).is_err() {
                return;
            }
        }
    })
}

async fn ingest_from(addr: &str, data: &[u8], store: &Store) -> Result<(), String> {
    let digest = Digest::of(data);
    let client = client(5, 1);
    let repo = repo(addr);
    store
        .ingest(
            &repo.target(digest.as_str()),
            &digest,
            data.len() as u64,
            client.retry_policy(),
            |offset| client.open_blob(&repo, &digest, offset),
            &|_| {},
        )
        .await
        .map(drop)
        .map_err(|e| crate::util::error_chain(&e))
}

#[tokio::test]
async fn a_slow_but_steady_blob_still_downloads() {
    // 16 pieces of 600 bytes, one every 300 ms: 4.8 s in all, far past the 1 s idle
    // timeout, but never less than 1 KiB in a second.
    let data: Vec<u8> = (0..16 * 600).map(|i| (i % 251) as u8).collect();
    let addr = paced(data.clone(), 600, Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let started = Instant::now();
    ingest_from(&addr, &data, &store).await.unwrap();
    assert!(started.elapsed() > Duration::from_secs(4));
    assert_eq!(
        std::fs::read(store.blob_path(&Digest::of(&data))).unwrap(),
        data
    );
}

#[tokio::test]
async fn a_trickle_that_never_goes_quiet_still_stalls() {
    // A byte every 100 ms: never a second without data, yet 10 bytes a second would
    // hold a pull for days. Each resumed attempt stalls after about a second.
    let data: Vec<u8> = vec![7; 4096];
    let addr = paced(data.clone(), 1, Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let started = Instant::now();
    let err = ingest_from(&addr, &data, &store).await.unwrap_err();
    assert!(err.contains("less than 1 KiB in 1s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_trickled_manifest_must_arrive_whole_within_the_idle_timeout() {
    let addr = serve(|_, mut conn| {
        let _ = headers(&mut conn, "200 OK", 1000);
        for _ in 0..1000 {
            std::thread::sleep(Duration::from_millis(200));
            if conn.write_all(b" ").and_then(|_| conn.flush()).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let err = client(5, 1)
        .fetch_manifest(&repo(&addr), "v1")
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(err.is_transient() && err.is_timeout(), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "manifest v1 from registry {addr}: not received whole within 1s (repository hostile/app)"
        )
    );
}

#[tokio::test]
async fn a_huge_error_body_is_read_for_its_first_64_kib_only() {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let addr = serve(move |_, mut conn| {
        let json = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        let _ = headers(&mut conn, "404 Not Found", 300 << 20);
        let _ = conn.write_all(json);
        counter.fetch_add(json.len(), Ordering::SeqCst);
        let chunk = vec![b' '; 64 << 10];
        while conn.write_all(&chunk).is_ok() {
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    let started = Instant::now();
    let err = client(5, 30)
        .fetch_manifest(&repo(&addr), "v1")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.is_not_found(), "{err:?}");
    assert!(
        err.to_string()
            .contains("manifest_unknown manifest unknown"),
        "{err}"
    );
    // The client closed the connection: the server got rid of what the socket
    // buffers hold, nowhere near the 300 MiB it announced.
    std::thread::sleep(Duration::from_millis(300));
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 32 << 20, "{sent} bytes sent");
}

#[tokio::test]
async fn error_body_prefix_is_capped() {
    let addr = serve(|_, mut conn| {
        let _ = headers(&mut conn, "500 Internal Server Error", 1 << 20);
        let _ = conn.write_all(&vec![b'x'; 1 << 20]);
    });
    let http = reqwest::Client::new();
    let resp = http.get(format!("http://{addr}/v2/")).send().await.unwrap();
    let body = transport::read_prefix(resp, 1000, Duration::from_secs(5)).await;
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn a_blob_fed_just_fast_enough_ends_with_its_attempt() {
    // 2 KiB every 300 ms passes every 1 s window, but 128 KiB would take 19 s: the
    // attempt ends after ten windows, and is not retried within the pass.
    let data: Vec<u8> = (0..128 * 1024).map(|i| (i % 241) as u8).collect();
    let addr = paced(data.clone(), 2048, Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let started = Instant::now();
    let err = ingest_from(&addr, &data, &store).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.contains("not received whole within 10s"), "{err}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "{took:?}"
    );
}
