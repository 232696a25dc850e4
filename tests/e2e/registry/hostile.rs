//! A hostile or dying registry: one that accepts connections and never answers, one
//! that trickles a blob, one that answers an error with a 300 MB body. With the node's
//! `runtime.pull_connect_timeout = "1s"` and `pull_idle_timeout = "2s"`, `berth image
//! pull` fails within the documented deadlines (spec/README.md, "The node
//! configuration"), names the registry and what timed out, and stays small.
//!
//! The server is written here (std::net, a thread per connection): it needs no
//! `docker-registry` and runs everywhere.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_e2e::{Run, berth};
use sha2::{Digest, Sha256};

const CONNECT: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(2);
/// Process start-up, scheduling on a loaded CI machine.
const SLACK: Duration = Duration::from_secs(4);
/// Attempts of one blob download (the retry policy: the first and four resumes) and
/// the most their backoff adds (0.25 + 0.5 + 1 + 2 s).
const BLOB_ATTEMPTS: u32 = 5;
const BLOB_BACKOFF: Duration = Duration::from_millis(3750);

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// How the server treats a plain-http request (method and path).
type Handler = dyn Fn(&str, &mut TcpStream) + Send + Sync;

/// Starts the server; returns its `127.0.0.1:port`. `tls_silent`: a TLS probe gets no
/// answer at all (else the connection is closed, and the client falls back to http).
fn serve(tls_silent: bool, handler: Arc<Handler>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let handler = handler.clone();
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if conn.peek(&mut first).is_err() {
                    return;
                }
                if first[0] == 0x16 {
                    if tls_silent {
                        std::thread::sleep(Duration::from_secs(120));
                    }
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
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or("").to_string();
                handler(&line, &mut conn);
            });
        }
    });
    addr
}

fn respond(conn: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(body);
}

/// What one `berth image pull` did: its output, how long it took, and its peak RSS
/// (`VmHWM`, sampled from /proc while it runs).
struct Pull {
    run: Run,
    took: Duration,
    max_rss_kib: u64,
}

fn pull(state: &Path, addr: &str) -> Pull {
    let node = state.join("node.toml");
    std::fs::write(
        &node,
        format!(
            "[runtime]\npull_connect_timeout = \"{}s\"\npull_idle_timeout = \"{}s\"\n",
            CONNECT.as_secs(),
            IDLE.as_secs()
        ),
    )
    .unwrap();
    let reference = format!("{addr}/hostile/app:v1");
    let started = Instant::now();
    let child = berth()
        .current_dir(state)
        .env("DOCKER_CONFIG", state.join("no-docker-config"))
        .env_remove("HOME")
        .arg("--config")
        .arg(&node)
        .arg("--state-dir")
        .arg(state)
        .args(["image", "pull", &reference, "--platform", "linux/amd64"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let mut max_rss_kib = 0;
    while !waiter.is_finished() {
        if let Ok(text) = std::fs::read_to_string(&status) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            if let Some(kib) = hwm {
                max_rss_kib = max_rss_kib.max(kib);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the pull hangs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = waiter.join().unwrap().unwrap();
    Pull {
        run: Run::from(out),
        took: started.elapsed(),
        max_rss_kib,
    }
}

fn assert_failed_naming(p: &Pull, needles: &[&str]) {
    assert_eq!(
        p.run.code, 3,
        "stdout: {}\nstderr: {}",
        p.run.stdout, p.run.stderr
    );
    for needle in needles {
        assert!(
            p.run.stderr.contains(needle),
            "missing `{needle}` in: {}",
            p.run.stderr
        );
    }
}

#[test]
fn hostile_registry_that_never_sends_headers() {
    let state = tempfile::tempdir().unwrap();
    let handler: Arc<Handler> = Arc::new(|_, _| std::thread::sleep(Duration::from_secs(120)));
    let addr = serve(true, handler);
    let p = pull(state.path(), &addr);
    eprintln!("no headers: failed after {:?}: {}", p.took, p.run.stderr);
    assert_failed_naming(
        &p,
        &[
            &format!("registry {addr}: no response headers within 1s"),
            "hostile/app",
            "this looks temporary",
        ],
    );
    // The https probe (at most the connect timeout) and the request; no retries.
    assert!(p.took >= CONNECT, "{:?}", p.took);
    assert!(p.took < 2 * CONNECT + SLACK, "{:?}", p.took);
}

#[test]
fn hostile_registry_that_trickles_a_blob() {
    let state = tempfile::tempdir().unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#.to_vec();
    let layer = vec![b'x'; 4096];
    let (config_digest, layer_digest) = (sha256(&config), sha256(&layer));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let (cd, ld) = (config_digest.clone(), layer_digest.clone());
    let handler: Arc<Handler> = Arc::new(move |line, conn| {
        let path = line.split(' ').nth(1).unwrap_or("");
        if path == "/v2/hostile/app/manifests/v1" {
            let mt = "application/vnd.oci.image.manifest.v1+json";
            respond(conn, "200 OK", mt, manifest.as_bytes());
        } else if path == format!("/v2/hostile/app/blobs/{cd}") {
            respond(conn, "200 OK", "application/octet-stream", &config);
        } else if path == format!("/v2/hostile/app/blobs/{ld}") {
            // Headers at once, then one byte every 3 s: progress, but never within
            // the idle timeout.
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                layer.len()
            );
            for b in &layer {
                if conn.write_all(&[*b]).and_then(|_| conn.flush()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(3));
            }
        } else {
            respond(conn, "404 Not Found", "application/json", b"{}");
        }
    });
    let addr = serve(false, handler);
    let p = pull(state.path(), &addr);
    eprintln!("trickled blob: failed after {:?}: {}", p.took, p.run.stderr);
    assert_failed_naming(
        &p,
        &[
            &format!("blob {layer_digest} from registry {addr}: less than 1 KiB in 2s"),
            "hostile/app",
        ],
    );
    let deadline = IDLE * BLOB_ATTEMPTS + BLOB_BACKOFF + SLACK;
    assert!(p.took >= IDLE, "{:?}", p.took);
    assert!(p.took < deadline, "{:?} (deadline {deadline:?})", p.took);
}

#[test]
fn hostile_registry_with_a_huge_error_body() {
    let state = tempfile::tempdir().unwrap();
    let handler: Arc<Handler> = Arc::new(|line, conn| {
        if !line.contains("/manifests/") {
            respond(conn, "404 Not Found", "application/json", b"{}");
            return;
        }
        // 300 MB announced and streamed lazily, never allocated: the same 64 KiB
        // again and again until the client hangs up.
        let total: u64 = 300 << 20;
        let _ = write!(
            conn,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
        );
        let chunk = vec![b' '; 64 << 10];
        let mut sent = 0;
        while sent < total && conn.write_all(&chunk).is_ok() {
            sent += chunk.len() as u64;
        }
    });
    let addr = serve(false, handler);
    let p = pull(state.path(), &addr);
    eprintln!(
        "huge error body: failed after {:?}, max RSS {} KiB: {}",
        p.took, p.max_rss_kib, p.run.stderr
    );
    assert_failed_naming(
        &p,
        &[&format!("registry {addr} answered 500"), "hostile/app"],
    );
    // Five attempts (500 is retried) with their backoff, each reading at most 64 KiB.
    assert!(p.took < BLOB_BACKOFF + SLACK, "{:?}", p.took);
    assert!(p.max_rss_kib > 0, "no RSS sample");
    assert!(
        p.max_rss_kib < 64 << 10,
        "berth peaked at {} KiB",
        p.max_rss_kib
    );
}
