//! Health checks (Docker's semantics): `exec` runs a command in the container, `tcp`
//! connects to a port and `http` sends a GET, both from inside the container's network
//! namespace — so `http://127.0.0.1:8080/` means the container's own loopback, as it
//! does for Docker's in-container checks.
//!
//! The probes take the namespace as a path and enter it on a short-lived thread of
//! their own (`setns` changes only the calling thread), so the agent's other threads
//! never leave the host namespace. [`wait_healthy`] probes every `interval` until the
//! health record (`health_file::next`, which implements `start_period` and `retries`)
//! is healthy or unhealthy, or the step's limit runs out; the clock and the sleeping are
//! passed in, so it is unit-tested without waiting.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::{Health, HealthProbe};

use super::health_file::{HealthRecord, HealthStatus};
use super::instance::ExecOutcome;

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

/// Runs `argv` in the container within a timeout (the runtime's `exec`): its exit code,
/// and the runtime's error when it could not run it or killed it at the timeout.
pub type ExecFn<'a> = dyn Fn(&[String], Duration) -> Result<ExecOutcome, ExecError> + 'a;

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
        HealthProbe::Exec(argv) => {
            let began = std::time::Instant::now();
            let command = argv.join(" ");
            match exec(argv, timeout) {
                // Killed at the timeout: its exit code (137) is not the check's answer.
                Ok(ExecOutcome {
                    runtime_error: Some(_),
                    ..
                }) if began.elapsed() >= timeout => ProbeResult::Unhealthy(format!(
                    "`{command}` timed out after {}",
                    humantime::format_duration(timeout)
                )),
                Ok(ExecOutcome {
                    runtime_error: Some(e),
                    ..
                }) => ProbeResult::Unhealthy(e),
                Ok(ExecOutcome { exit_code: 0, .. }) => ProbeResult::Healthy,
                Ok(ExecOutcome { exit_code, .. }) => {
                    ProbeResult::Unhealthy(format!("`{command}` exited with {exit_code}"))
                }
                Err(e) => ProbeResult::Unhealthy(crate::util::error_chain(&*e)),
            }
        }
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

/// How the sentence of a wait cut by its limit begins.
pub const CUT: &str = "still starting";

/// How a wait for health ended when it did not end healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitEnd {
    /// `retries` failures counted: the record says `unhealthy`.
    Unhealthy(String),
    /// The step's limit ran out while the record still says `starting` (or it was
    /// healthy and is failing, not yet `retries` times).
    Cut(String),
}

impl WaitEnd {
    /// The health status the record was left in, as `ps` shows it.
    #[cfg(test)]
    pub fn status(&self) -> &'static str {
        match self {
            WaitEnd::Unhealthy(_) => "unhealthy",
            WaitEnd::Cut(_) => "starting",
        }
    }

    /// What happened, in a sentence.
    pub fn why(&self) -> &str {
        match self {
            WaitEnd::Unhealthy(w) | WaitEnd::Cut(w) => w,
        }
    }
}

/// Probes until the health record (`run` probes once and returns the record after it,
/// [`super::health_file::next`]) says healthy or unhealthy, or until `limit` has passed:
/// the wait ends in the state the record is in, so the text and the file agree.
/// `elapsed` reads the time since the wait began; `sleep` waits.
pub fn wait_healthy(
    h: &Health,
    limit: Duration,
    run: &mut dyn FnMut() -> HealthRecord,
    elapsed: &dyn Fn() -> Duration,
    sleep: &mut dyn FnMut(Duration),
) -> Result<(), WaitEnd> {
    loop {
        let record = run();
        match record.status {
            HealthStatus::Healthy => return Ok(()),
            HealthStatus::Unhealthy => {
                return Err(WaitEnd::Unhealthy(format!(
                    "{} ({} consecutive failures)",
                    record.output, record.failing_streak
                )));
            }
            HealthStatus::Starting => {}
        }
        let spent = elapsed();
        if spent >= limit {
            return Err(WaitEnd::Cut(format!(
                "{CUT} when the step's limit of {} ran out (waited {}); last probe: {}",
                humantime::format_duration(limit),
                humantime::format_duration(Duration::from_secs(spent.as_secs())),
                record.output
            )));
        }
        sleep(h.interval.min(limit.saturating_sub(spent)));
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

    /// Waits with a fake clock: `answers` says whether the probe at time `t` succeeds.
    fn wait(
        h: &Health,
        limit: Duration,
        answers: impl Fn(Duration) -> bool,
    ) -> (Result<(), WaitEnd>, Duration, u32, HealthRecord) {
        let now = Cell::new(Duration::ZERO);
        let calls = Cell::new(0);
        let mut prev: Option<HealthRecord> = None;
        let mut run = || {
            calls.set(calls.get() + 1);
            let result = if answers(now.get()) {
                ProbeResult::Healthy
            } else {
                ProbeResult::Unhealthy("refused".into())
            };
            let r =
                super::super::health_file::next(prev.as_ref(), h, &result, now.get(), "t".into());
            prev = Some(r.clone());
            r
        };
        let r = wait_healthy(h, limit, &mut run, &|| now.get(), &mut |d| {
            now.set(now.get() + d)
        });
        let last = prev.unwrap_or_else(HealthRecord::starting);
        (r, now.get(), calls.get(), last)
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let h = health(HealthProbe::Tcp(1));
        // Unhealthy for the probes at t = 0, 2, 4, 6, then healthy.
        let (r, _, calls, last) = wait(&h, Duration::from_secs(60), |t| t.as_secs() >= 8);
        assert_eq!(r, Ok(()));
        assert_eq!(calls, 5);
        assert_eq!(last.status, HealthStatus::Healthy);
    }

    #[test]
    fn retries_counted_failures_make_it_unhealthy_and_the_file_agrees() {
        let h = health(HealthProbe::Tcp(1));
        let (r, at, _, last) = wait(&h, Duration::from_secs(60), |_| false);
        // Excused at 0, 2, 4 (start period 5 s); counted at 6, 8, 10.
        let Err(end) = r else {
            panic!("healthy");
        };
        assert!(
            matches!(end, WaitEnd::Unhealthy(ref m) if m.contains("3 consecutive")),
            "{end:?}"
        );
        assert_eq!(at, Duration::from_secs(10));
        assert_eq!(
            (last.status, last.failing_streak),
            (HealthStatus::Unhealthy, 3)
        );
        assert_eq!(end.status(), last.status.as_str());
    }

    #[test]
    fn a_wait_cut_by_the_step_limit_says_so_and_leaves_it_starting() {
        let h = health(HealthProbe::Tcp(1));
        let (r, at, _, last) = wait(&h, Duration::from_secs(7), |_| false);
        let Err(end) = r else {
            panic!("healthy");
        };
        assert!(
            matches!(end, WaitEnd::Cut(ref m) if m.contains("limit of 7s") && m.contains("waited 7s")),
            "{end:?}"
        );
        assert_eq!(at, Duration::from_secs(7));
        assert_eq!(last.status, HealthStatus::Starting);
        assert_eq!(end.status(), last.status.as_str());
    }

    #[test]
    fn a_timed_out_exec_probe_says_so() {
        let t = Duration::from_millis(20);
        let exec = |_: &[String], t: Duration| -> Result<ExecOutcome, ExecError> {
            std::thread::sleep(t);
            Ok(ExecOutcome {
                exit_code: 137,
                runtime_error: Some("`sleep 100` did not finish within 20ms".into()),
            })
        };
        let check = HealthProbe::Exec(vec!["sleep".into(), "100".into()]);
        let r = probe(&check, &ProbeNet::Host, t, &exec);
        assert_eq!(
            r,
            ProbeResult::Unhealthy("`sleep 100` timed out after 20ms".into())
        );
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
            |_: &[String], _: Duration| -> Result<ExecOutcome, ExecError> { Err("no exec".into()) };
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
        let exec = |argv: &[String], _: Duration| -> Result<ExecOutcome, ExecError> {
            Ok(ExecOutcome {
                exit_code: if argv[0] == "true" { 0 } else { 1 },
                runtime_error: None,
            })
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
