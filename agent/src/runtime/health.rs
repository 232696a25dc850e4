//! Health checks (Docker's semantics): `exec` runs a command in the container, `tcp`
//! connects to a port and `http` sends a GET, both from inside the container's network
//! namespace — so `http://127.0.0.1:8080/` means the container's own loopback, as it
//! does for Docker's in-container checks.
//!
//! The probes take the namespace as a path and enter it on a short-lived thread of
//! their own (`setns` changes only the calling thread), so the agent's other threads
//! never leave the host namespace. [`wait_healthy`] implements `start_period`,
//! `interval` and `retries`; the clock and the sleeping are passed in, so it is
//! unit-tested without waiting.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::{Health, HealthProbe};

/// Where a probe runs.
#[derive(Debug, Clone)]
pub enum ProbeNet {
    /// The host's network namespace (`network_mode = "host"`).
    Host,
    /// A network namespace file (`<run_dir>/netns/<instance>`).
    Netns(PathBuf),
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Healthy,
    Unhealthy(String),
}

/// Why an exec probe could not run its command, as the caller's runtime says.
pub type ExecError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `argv` in the container and returns its exit code (the runtime's `exec`).
pub type ExecFn<'a> = dyn Fn(&[String], Duration) -> Result<i32, ExecError> + 'a;

/// Why a probe thread could not enter the container's network namespace.
#[derive(Debug, thiserror::Error)]
enum NetnsError {
    #[error(transparent)]
    Open(#[from] std::io::Error),
    #[error(transparent)]
    Enter(#[from] nix::errno::Errno),
}

/// Runs one probe with its timeout.
pub fn probe(
    check: &HealthProbe,
    net: &ProbeNet,
    timeout: Duration,
    exec: &ExecFn<'_>,
) -> ProbeResult {
    match check {
        HealthProbe::Exec(argv) => match exec(argv, timeout) {
            Ok(0) => ProbeResult::Healthy,
            Ok(code) => ProbeResult::Unhealthy(format!("`{}` exited with {code}", argv.join(" "))),
            Err(e) => ProbeResult::Unhealthy(crate::image::prepare::error_chain(&*e)),
        },
        HealthProbe::Tcp(port) => in_netns(net, {
            let port = *port;
            move || {
                let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
                TcpStream::connect_timeout(&addr, timeout)
                    .map(|_| ProbeResult::Healthy)
                    .unwrap_or_else(|e| ProbeResult::Unhealthy(format!("tcp port {port}: {e}")))
            }
        }),
        HealthProbe::Http(url) => in_netns(net, {
            let url = url.clone();
            move || http_get(&url, timeout)
        }),
    }
}

/// Runs `f` on a thread that has entered `net`.
fn in_netns<F>(net: &ProbeNet, f: F) -> ProbeResult
where
    F: FnOnce() -> ProbeResult + Send + 'static,
{
    let path = match net {
        ProbeNet::Host => return f(),
        ProbeNet::Netns(p) => p.clone(),
    };
    let handle = std::thread::spawn(move || {
        if let Err(e) = enter_netns(&path) {
            return ProbeResult::Unhealthy(format!(
                "cannot enter network namespace {}: {e}",
                path.display()
            ));
        }
        f()
    });
    handle
        .join()
        .unwrap_or_else(|_| ProbeResult::Unhealthy("the probe thread panicked".into()))
}

fn enter_netns(path: &Path) -> Result<(), NetnsError> {
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// A minimal HTTP/1.0 GET: 2xx and 3xx are healthy.
fn http_get(url: &str, timeout: Duration) -> ProbeResult {
    let Some(rest) = url.strip_prefix("http://") else {
        return ProbeResult::Unhealthy(format!("{url}: only http:// is supported"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = match host_port.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => return ProbeResult::Unhealthy(format!("{url}: cannot resolve {authority}")),
    };
    let attempt = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: berth-health\r\n\r\n");
        s.write_all(request.as_bytes())?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match attempt() {
        Ok(head) => {
            let status: Option<u16> = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            match status {
                Some(code) if (200..400).contains(&code) => ProbeResult::Healthy,
                Some(code) => ProbeResult::Unhealthy(format!("{url} answered {code}")),
                None => ProbeResult::Unhealthy(format!("{url}: not an HTTP answer")),
            }
        }
        Err(e) => ProbeResult::Unhealthy(format!("{url}: {e}")),
    }
}

/// The longest `berth apply` waits for a dependency: start_period + retries × interval
/// (plus one timeout for the last probe).
pub fn max_wait(h: &Health) -> Duration {
    h.start_period
        .saturating_add(h.interval.saturating_mul(h.retries))
        .saturating_add(h.timeout)
}

/// Probes until healthy or until `retries` consecutive failures after `start_period`.
/// `elapsed` reads the time since the container started; `sleep` waits.
pub fn wait_healthy(
    h: &Health,
    run: &mut dyn FnMut() -> ProbeResult,
    elapsed: &dyn Fn() -> Duration,
    sleep: &mut dyn FnMut(Duration),
) -> ProbeResult {
    let mut failures = 0;
    loop {
        match run() {
            ProbeResult::Healthy => return ProbeResult::Healthy,
            ProbeResult::Unhealthy(why) => {
                // Failures during the start period do not count (Docker).
                if elapsed() >= h.start_period {
                    failures += 1;
                }
                if failures >= h.retries {
                    return ProbeResult::Unhealthy(format!(
                        "{why} ({failures} consecutive failures)"
                    ));
                }
                if elapsed() > max_wait(h) {
                    return ProbeResult::Unhealthy(format!(
                        "{why} (gave up after {:?})",
                        max_wait(h)
                    ));
                }
            }
        }
        sleep(h.interval);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::TcpListener;

    use super::*;

    fn health(probe: HealthProbe) -> Health {
        Health {
            probe,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            retries: 3,
            start_period: Duration::from_secs(5),
        }
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let h = health(HealthProbe::Tcp(1));
        let now = Cell::new(Duration::ZERO);
        let calls = Cell::new(0);
        // Unhealthy for the first 4 probes (t = 0, 2, 4, 6), then healthy.
        let mut run = || {
            calls.set(calls.get() + 1);
            if calls.get() <= 4 {
                ProbeResult::Unhealthy("refused".into())
            } else {
                ProbeResult::Healthy
            }
        };
        let r = wait_healthy(&h, &mut run, &|| now.get(), &mut |d| now.set(now.get() + d));
        assert_eq!(r, ProbeResult::Healthy);
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn retries_consecutive_failures_make_it_unhealthy() {
        let h = health(HealthProbe::Tcp(1));
        let now = Cell::new(Duration::ZERO);
        let mut run = || ProbeResult::Unhealthy("refused".into());
        let r = wait_healthy(&h, &mut run, &|| now.get(), &mut |d| now.set(now.get() + d));
        assert!(
            matches!(r, ProbeResult::Unhealthy(ref m) if m.contains("3 consecutive")),
            "{r:?}"
        );
        assert!(now.get() <= max_wait(&h), "{:?}", now.get());
        assert_eq!(max_wait(&h), Duration::from_secs(5 + 6 + 1));
    }

    #[test]
    fn tcp_and_http_probes_on_the_host_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut req = String::new();
                let mut buf = [0u8; 512];
                while !req.contains("\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
                let answer = if req.starts_with("GET /ok ") {
                    "HTTP/1.0 200 OK\r\n\r\n"
                } else {
                    "HTTP/1.0 503 Busy\r\n\r\n"
                };
                let _ = s.write_all(answer.as_bytes());
            }
        });
        let t = Duration::from_secs(2);
        let no_exec =
            |_: &[String], _: Duration| -> Result<i32, ExecError> { Err("no exec".into()) };
        assert_eq!(
            probe(&HealthProbe::Tcp(port), &ProbeNet::Host, t, &no_exec),
            ProbeResult::Healthy
        );
        let ok = format!("http://127.0.0.1:{port}/ok");
        assert_eq!(
            probe(&HealthProbe::Http(ok), &ProbeNet::Host, t, &no_exec),
            ProbeResult::Healthy
        );
        let busy = format!("http://127.0.0.1:{port}/busy");
        let r = probe(&HealthProbe::Http(busy), &ProbeNet::Host, t, &no_exec);
        assert!(
            matches!(r, ProbeResult::Unhealthy(ref m) if m.contains("503")),
            "{r:?}"
        );
        let exec = |argv: &[String], _: Duration| -> Result<i32, ExecError> {
            Ok(if argv[0] == "true" { 0 } else { 1 })
        };
        assert_eq!(
            probe(
                &HealthProbe::Exec(vec!["true".into()]),
                &ProbeNet::Host,
                t,
                &exec
            ),
            ProbeResult::Healthy
        );
        assert!(matches!(
            probe(
                &HealthProbe::Exec(vec!["false".into()]),
                &ProbeNet::Host,
                t,
                &exec
            ),
            ProbeResult::Unhealthy(_)
        ));
    }
}
