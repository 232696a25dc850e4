//! The webhook receiver of `berth agent` (`source.webhook`), end to end as root: a real
//! git repository served over smart HTTP on loopback (not a local path, so that only
//! the webhook or the 5-minute poll can make the agent fetch), the busybox image from
//! a loopback registry, runc and CNI on 10.252.N.0/24. The test signs its requests with
//! `openssl dgst -hmac`, as a Git server would, and sends them with `curl`:
//! - a listen address already taken ends the agent's start, naming it;
//! - forged, unsigned, a wrong GitLab token, oversized: 401/401/401/413, a ping and a
//!   push to another branch: 200 ignored; none fetches (the Git server saw no request),
//!   the old revision stays applied and the container keeps running;
//! - another address (127.0.0.2) flooding with forged pushes is refused 429 once its
//!   burst of 10 is spent, and the signed pushes that follow are not;
//! - a GitHub-signed push runs the new container within seconds (the time is printed);
//!   a Gitea-signed push, a GitLab-token push and a GitHub push with its default content
//!   type (a form, `payload=…`) do too.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::agentd::{Agent, poll};
use berth_e2e::git::{GitHttpServer, GitRepo, HttpOptions};
use berth_e2e::have_tools;
use berth_e2e::live::LiveNode;

/// Audit mode: the test is about the receiver, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
const SECRET: &str = "webhook-e2e-s3cret";
/// How long a push announced by a webhook may take to run: a fetch and a pass that
/// replaces one container, on a loaded CI machine.
const RUNS_WITHIN: Duration = Duration::from_secs(20);
/// The first pass: the image is pulled from the loopback registry.
const FIRST_PASS: Duration = Duration::from_secs(60);

/// The node, its repository behind a Git HTTP server, and the agent. Fields drop in
/// order: the agent first, then the server; the node then removes every container.
struct Hooked {
    agent: Option<Agent>,
    server: GitHttpServer,
    repo: GitRepo,
    node: LiveNode,
    hook: SocketAddr,
}

impl Hooked {
    /// A node on 10.252.`net`.0/24 following `main` over HTTP every 5 minutes, with a
    /// webhook receiver on a free loopback port; `None` when a prerequisite is missing
    /// outside CI.
    fn new(net: u8) -> Option<Hooked> {
        if !have_tools(&["openssl", "git", "curl"]) {
            return None;
        }
        let node = LiveNode::start(POLICY, &format!("default_subnet = \"10.252.{net}.0/24\"\n"))?;
        let repo = GitRepo::new()?;
        let server = GitHttpServer::start(repo.root(), &HttpOptions::default())?;
        let hook = free_port();
        let secret = node.dir.path().join("webhook.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let mut text = std::fs::read_to_string(&node.config).unwrap();
        text.push_str(&format!(
            "\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"fleet\"\ninterval = \"5m\"\n\
             webhook = {{ listen = \"{hook}\", secret_file = {secret:?} }}\n",
            server.url("repo.git"),
        ));
        std::fs::write(&node.config, text).unwrap();
        Some(Hooked {
            agent: None,
            server,
            repo,
            node,
            hook,
        })
    }

    /// `fleet/web.toml` running `sleep SECS`, committed and pushed: the commit.
    fn push_web(&self, secs: u32) -> String {
        self.repo.write(
            "fleet/web.toml",
            &format!(
                "[container.web]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
                 command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n",
                self.node.image
            ),
        );
        let c = self.repo.commit(&format!("web: sleep {secs}"));
        self.repo.push();
        c
    }

    /// `web`'s pid and the `N` of its `sleep N`, when it runs.
    fn web(&self) -> Option<(u32, u32)> {
        let ps = self.node.ps();
        let c = ps.as_array()?.iter().find(|c| c["name"] == "web")?;
        let pid = (c["state"] == "running").then(|| c["pid"].as_u64())?? as u32;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let secs = std::str::from_utf8(args.get(1)?).ok()?.parse().ok()?;
        Some((pid, secs))
    }

    /// The commit of `state/applied.json`.
    fn applied(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.node.state().join("state/applied.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["revision"]["commit"].as_str().map(str::to_string)
    }

    /// Waits until `commit` is recorded as applied (the pass that runs it ended), so
    /// that the next push is not held behind it.
    #[track_caller]
    fn wait_applied(&self, commit: &str, within: Duration) {
        poll(
            &format!("{commit} applied"),
            within,
            || (self.applied().as_deref() == Some(commit)).then_some(()),
            || self.context(),
        );
    }

    /// `last_fetch` of `state/agent.json`.
    fn last_fetch(&self) -> serde_json::Value {
        std::fs::read_to_string(self.node.state().join("state/agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["last_fetch"].clone())
            .unwrap_or_default()
    }

    /// The fetches the Git server has served (`git-upload-pack` requests).
    fn fetches(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.contains("git-upload-pack"))
            .count()
    }

    /// Waits until `web` runs `sleep SECS`; the time it took from `since`.
    #[track_caller]
    fn wait_web(&self, secs: u32, within: Duration, since: Instant) -> Duration {
        poll(
            &format!("web to run sleep {secs}"),
            within,
            || (self.web().map(|w| w.1) == Some(secs)).then_some(()),
            || self.context(),
        );
        since.elapsed()
    }

    fn context(&self) -> String {
        let log =
            std::fs::read_to_string(self.node.dir.path().join("agent.log")).unwrap_or_default();
        let chars: Vec<char> = log.chars().collect();
        let tail: String = chars[chars.len().saturating_sub(8000)..].iter().collect();
        format!(
            "--- agent output (tail)\n{tail}\n--- git server requests\n{}\n--- last_fetch {}",
            self.server.requests().join("\n"),
            self.last_fetch()
        )
    }

    /// POSTs `body` to the receiver with `headers`: the status and the answer.
    fn post(&self, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
        post(self.hook, "/v1/webhook", headers, body)
    }
}

/// A loopback address no one listens on now.
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `curl -X POST` of `body` to `http://ADDR/PATH` with `headers` (`Content-Type:
/// application/json` unless they give one): the status and the answer's body.
fn post(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    post_from(None, addr, path, headers, body)
}

/// [`post`], from the local address `from`.
fn post_from(
    from: Option<&str>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    if let Some(from) = from {
        cmd.args(["--interface", from]);
    }
    let typed = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
    ])
    .args(["--data-binary", "@-"]);
    if !typed {
        cmd.args(["-H", "Content-Type: application/json"]);
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = fed(cmd.arg(format!("http://{addr}{path}")), body);
    let text = String::from_utf8_lossy(&out.stdout);
    let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    assert_ne!(code, 0, "curl: {}", String::from_utf8_lossy(&out.stderr));
    (code, answer.to_string())
}

/// What `cmd` prints with `input` on its stdin.
fn fed(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// hex HMAC-SHA256(`key`, `body`), by openssl.
fn hmac(key: &str, body: &[u8]) -> String {
    let out = fed(
        Command::new("openssl").args(["dgst", "-sha256", "-hmac", key]),
        body,
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.rsplit("= ").next().unwrap().trim().to_string();
    assert_eq!(hex.len(), 64, "openssl said {text:?}");
    hex
}

/// A push event as the forges send it (the fields berth reads, and a few more).
fn push_event(git_ref: &str, after: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": after,
        "repository": {"full_name": "acme/fleet"},
        "pusher": {"name": "ops"},
    })
    .to_string()
    .into_bytes()
}

/// `payload=<body, urlencoded>`: a form body, GitHub's default content type.
fn form(body: &[u8]) -> Vec<u8> {
    let mut out = b"payload=".to_vec();
    for b in body {
        if b.is_ascii_alphanumeric() {
            out.push(*b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Request headers: (name, value).
type Headers = Vec<(&'static str, String)>;
/// The headers a forge sends with a push event, and the body it sends it as.
type Signer = fn(&[u8]) -> (Headers, Vec<u8>);

fn github(event: &str, body: &[u8], key: &str) -> Headers {
    vec![
        ("X-GitHub-Event", event.to_string()),
        (
            "X-GitHub-Delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
        ),
        ("X-Hub-Signature-256", format!("sha256={}", hmac(key, body))),
    ]
}

#[test]
fn signed_pushes_run_at_once_and_forged_unsigned_or_oversized_webhooks_fetch_nothing() {
    let Some(mut h) = Hooked::new(1) else {
        return;
    };
    let c1 = h.push_web(1000);

    // The listen address taken: the agent does not start, and says which address.
    let taken = TcpListener::bind(h.hook).unwrap();
    let mut refused = Agent::start(&h.node, None);
    let status = refused.wait(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "the agent ran with its webhook address taken:\n{}",
            refused.log()
        )
    });
    assert!(!status.success(), "{}", refused.log());
    assert!(
        refused
            .log()
            .contains(&format!("cannot listen for webhooks on {}", h.hook)),
        "{}",
        refused.log()
    );
    drop(refused);
    drop(taken);

    h.agent = Some(Agent::start(&h.node, None));
    let started = Instant::now();
    h.wait_web(1000, FIRST_PASS, started);
    h.wait_applied(&c1, FIRST_PASS);
    let (web_pid, _) = h.web().unwrap();

    // A commit is pushed; nothing announces it but requests that must not count.
    let c2 = h.push_web(1001);
    let fetches = h.fetches();
    assert!(
        fetches > 0,
        "the server's log shows no fetch\n{}",
        h.context()
    );
    let fetched_at = h.last_fetch()["at"].clone();
    let body = push_event("refs/heads/main", &c2);
    let forged = github("push", &body, "not-the-secret");
    let unsigned = vec![("X-GitHub-Event", "push".to_string())];
    let gitlab_wrong = vec![
        ("X-Gitlab-Event", "Push Hook".to_string()),
        ("X-Gitlab-Token", "webhook-e2e-guess".to_string()),
    ];
    // Signed right, but over the cap: refused by its length before it is read.
    let big = [&body[..], &vec![b' '; 2 * 1024 * 1024]].concat();
    let oversized = github("push", &big, SECRET);
    let cases: [(&str, Headers, &[u8], u16); 4] = [
        ("forged", forged, &body, 401),
        ("unsigned", unsigned, &body, 401),
        ("a wrong GitLab token", gitlab_wrong, &body, 401),
        ("oversized", oversized, &big, 413),
    ];
    for (what, headers, body, want) in cases {
        let (status, answer) = h.post(&headers, body);
        assert_eq!(status, want, "{what}: {answer}");
        assert!(answer.contains("\"refused\""), "{what}: {answer}");
    }
    // Signed, but nothing to fetch: a ping, a push to another branch.
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let (status, answer) = h.post(&github("ping", ping, SECRET), ping);
    assert_eq!(
        (status, answer.contains("\"ignored\"")),
        (200, true),
        "{answer}"
    );
    let other = push_event("refs/heads/feature", &c2);
    let (status, answer) = h.post(&github("push", &other, SECRET), &other);
    assert_eq!(
        (status, answer.contains("\"ignored\"")),
        (200, true),
        "{answer}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        h.fetches(),
        fetches,
        "a refused webhook fetched\n{}",
        h.context()
    );
    assert_eq!(h.last_fetch()["at"], fetched_at, "{}", h.context());
    assert_eq!(h.applied().as_deref(), Some(c1.as_str()), "{}", h.context());
    assert_eq!(
        h.web(),
        Some((web_pid, 1000)),
        "web did not keep running\n{}",
        h.context()
    );
    let log = h.agent.as_ref().unwrap().log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("webhook refused"))
        .collect();
    assert_eq!(refusals.len(), 4, "one line per refusal:\n{log}");
    for l in &refusals {
        assert!(l.contains("127.0.0.1:"), "no peer address: {l}");
    }
    let forged_sig = hmac("not-the-secret", &body);
    for hidden in [SECRET, "webhook-e2e-guess", &forged_sig[..16]] {
        assert!(!log.contains(hidden), "the log shows {hidden}:\n{log}");
    }

    // Another address floods the receiver with forged pushes: refused for its rate
    // once its burst is spent, and the pushes below are not.
    let flood: Vec<u16> = (0..15)
        .map(|_| {
            let forged = github("push", &body, "not-the-secret");
            post_from(Some("127.0.0.2"), h.hook, "/v1/webhook", &forged, &body).0
        })
        .collect();
    assert_eq!(flood[..10], [401; 10], "{flood:?}");
    assert_eq!(flood[10..], [429; 5], "{flood:?}");

    // Signed as each forge signs, a push runs at once: GitHub (c2, refused above
    // when forged), Gitea (the bare hex HMAC), GitLab (the token itself), GitHub with
    // its default content type (a form, signed as sent).
    let forges: [(&str, Signer); 4] = [
        ("github", |b| (github("push", b, SECRET), b.to_vec())),
        ("gitea", |b| {
            let headers = vec![
                ("X-Gitea-Event", "push".to_string()),
                ("X-Gitea-Signature", hmac(SECRET, b)),
            ];
            (headers, b.to_vec())
        }),
        ("gitlab", |b| {
            let headers = vec![
                ("X-Gitlab-Event", "Push Hook".to_string()),
                ("X-Gitlab-Token", SECRET.to_string()),
            ];
            (headers, b.to_vec())
        }),
        ("github form", |b| {
            let body = form(b);
            let mut headers = github("push", &body, SECRET);
            headers.push((
                "Content-Type",
                "application/x-www-form-urlencoded".to_string(),
            ));
            (headers, body)
        }),
    ];
    let mut latencies = Vec::new();
    for (i, (forge, headers)) in forges.iter().enumerate() {
        let secs = 1001 + i as u32;
        let commit = if i == 0 { c2.clone() } else { h.push_web(secs) };
        let (headers, body) = headers(&push_event("refs/heads/main", &commit));
        let sent = Instant::now();
        let (status, answer) = h.post(&headers, &body);
        assert_eq!(status, 202, "{forge}: {answer}");
        latencies.push((*forge, h.wait_web(secs, RUNS_WITHIN, sent)));
        assert_ne!(h.web().unwrap().0, web_pid);
        // The pass that runs it ends before the next push, which it would hold up.
        h.wait_applied(&commit, RUNS_WITHIN);
    }
    eprintln!("webhook: push to running (source.interval 5m): {latencies:?}");
    for (forge, l) in latencies {
        assert!(
            l < Duration::from_secs(10),
            "{forge}: slow: {l:?}\n{}",
            h.context()
        );
    }

    // The agent's metrics count the requests by how they were answered (docs/metrics.md):
    // at least the four accepted pushes, the ten forged ones, the five throttled.
    let (_, text) = berth_e2e::api_get(&h.node.run_dir().join("api.sock"), "/metrics");
    let count = |result: &str| -> f64 {
        let series = format!("berth_webhook_requests_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(count("accepted") >= 4.0, "{text}");
    assert!(count("unauthorized") >= 10.0, "{text}");
    assert!(count("throttled") >= 5.0, "{text}");
    assert!(count("refused") >= 1.0, "{text}");
}
