//! MQTT revision notifications and node status (#20), end to end as root: a real
//! `mosquitto` on loopback ports of its own (TLS from a test CA, a password file,
//! optionally mutual TLS; `berth_e2e::mosquitto`), a real git repository served over
//! smart HTTP on loopback (not a local path, whose watch would fetch on its own), the
//! busybox image from a loopback registry, runc and CNI on 10.251.112.0/24. The tests
//! publish with `berth notify`, as a CI step would, and with `mosquitto_pub`:
//! - with `source.interval = "5m"` and `spread = "0s"`, a push announced by
//!   `berth notify` (explicit revision, and the defaults: the work clone's HEAD and
//!   branch) is applied within seconds; the node's retained status message on
//!   `<topic>/nodes/<node>` carries the contract's fields and follows each pass;
//!   `berth status --format json` and the metrics show the channel connected;
//!   `berth notify` refuses a server of another CA (exit 3) and bad input (exit 2);
//! - with the broker stopped, `berth notify` exits 3, the agent says the connection
//!   is lost and still converges on its interval (3 s); once the broker is back on
//!   the same port, the agent reconnects, publishes its status again, and a
//!   notification is taken again;
//! - a node locked out of the broker when a push is announced (the broker reloads its
//!   password file) fetches it from the retained message once it is let in again;
//! - a notification for another ref, bad JSON and an oversized message fetch nothing;
//!   one naming a commit that does not exist, or an unsigned commit when
//!   `source.allowed_signers` requires signatures, changes nothing (the applied
//!   revision stays, the container keeps its process); a signed one then runs;
//! - 200 notifications in a burst run at most two passes beyond the one that applies;
//! - mutual TLS (the node's and the publisher's client certificates, the CN as user
//!   name) works, and a publisher without a certificate is refused;
//! - a wrong password leaves the channel disconnected with a clear `last_error`, and
//!   the password shows nowhere.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::agentd::{Agent, poll, sleeping};
use berth_e2e::git::{CommitOptions, GitHttpServer, GitRepo, HttpOptions, SshKey};
use berth_e2e::git::{allowed_signer, ssh_keygen};
use berth_e2e::live::LiveNode;
use berth_e2e::mosquitto::{Broker, BrokerOptions, Credentials, random_hex};
use berth_e2e::{Run, api_get, berth, have_tools};
use serde_json::Value;

/// Audit mode: the tests are about the source, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
/// The topic revisions are announced on.
const TOPIC: &str = "berth/fleet";
/// The node's name (`LiveNode`'s), hence its status topic's last level.
const NODE: &str = "edge-test";
/// The followed ref.
const MAIN: &str = "refs/heads/main";
/// The agent's start and first pass (an image pull for the container test).
const FIRST: Duration = Duration::from_secs(60);
/// How long an announced push may take to be applied: a fetch and a pass, on a loaded
/// CI machine; far below the 5-minute interval. The latency itself is the bench's.
const SOON: Duration = Duration::from_secs(20);
/// How long the agent may take to (re)connect: its backoff after a lost connection.
const RECONNECTS_WITHIN: Duration = Duration::from_secs(90);
/// What `sleep` the container runs: numbers no other test's container runs.
const SECS: u32 = 2_720_000;

/// Which user the node connects as.
enum As {
    /// The node's own user and password.
    Node,
    /// The node's user name with a password the broker refuses.
    WrongPassword,
    /// No user name (the client certificate names it).
    Certificate,
}

/// The node, its repository behind a Git HTTP server, the broker and the agent.
/// Fields drop in order: the agent first; the node last removes every container.
struct Fleet {
    agent: Option<Agent>,
    server: GitHttpServer,
    repo: GitRepo,
    broker: Broker,
    node: LiveNode,
    /// What the node's password file holds (never to be shown).
    password: String,
}

impl Fleet {
    /// A node following `main` (its `fleet/`) over HTTP every `interval`, notified on
    /// [`TOPIC`] with `spread = "0s"` by a broker as `opts` says; `source_extra` adds
    /// `[source]` keys. `None` when a prerequisite is missing outside CI.
    fn new(opts: BrokerOptions, who: As, interval: &str, source_extra: &str) -> Option<Fleet> {
        if !have_tools(&["git", "curl"]) {
            return None;
        }
        let node = LiveNode::start(POLICY, "default_subnet = \"10.251.112.0/24\"\n")?;
        let broker = Broker::start(opts)?;
        let repo = GitRepo::new()?;
        let server = GitHttpServer::start(repo.root(), &HttpOptions::default())?;
        let creds: Option<&Credentials> = match who {
            As::Node => Some(&broker.node),
            As::WrongPassword => Some(&broker.wrong),
            As::Certificate => None,
        };
        let password = creds.map_or_else(String::new, |c| c.password.clone());
        let mut text = std::fs::read_to_string(&node.config).unwrap();
        text.push_str(&format!(
            "\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"fleet\"\ninterval = \"{interval}\"\n\
             {source_extra}{}",
            server.url("repo.git"),
            broker.notify_toml(TOPIC, "0s", creds),
        ));
        std::fs::write(&node.config, text).unwrap();
        Some(Fleet {
            agent: None,
            server,
            repo,
            broker,
            node,
            password,
        })
    }

    /// Starts the agent.
    fn start(&mut self) {
        self.agent = Some(Agent::start(&self.node, None));
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent runs")
    }

    /// A commit changing only `fleet/README.md` (no containers), pushed.
    fn push_notes(&self, what: &str) -> String {
        self.repo.write("fleet/README.md", &format!("# {what}\n"));
        let c = self.repo.commit(what);
        self.repo.push();
        c
    }

    /// `fleet/web.toml` running `sleep SECS`, committed (signed with `key` if given),
    /// pushed: the commit.
    fn push_web(&self, secs: u32, key: Option<&SshKey>) -> String {
        self.repo.write(
            "fleet/web.toml",
            &format!(
                "[container.web]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
                 command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n",
                self.node.image
            ),
        );
        let opts = CommitOptions {
            sign_with: key.map(|k| k.private.as_path()),
            date: None,
        };
        let c = self.repo.commit_with(&format!("web: sleep {secs}"), &opts);
        self.repo.push();
        c
    }

    /// `web`'s pid, when it runs.
    fn web_pid(&self) -> Option<u64> {
        let ps = self.node.ps();
        let c = ps.as_array()?.iter().find(|c| c["name"] == "web")?;
        (c["state"] == "running").then(|| c["pid"].as_u64())?
    }

    /// A file of the agent's state (`<state>/state/NAME`), parsed.
    fn state_file(&self, name: &str) -> Value {
        std::fs::read_to_string(self.node.state().join("state").join(name))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The commit recorded as applied.
    fn applied(&self) -> Option<String> {
        self.state_file("applied.json")["revision"]["commit"]
            .as_str()
            .map(str::to_string)
    }

    /// `last_fetch` of the agent's state.
    fn last_fetch(&self) -> Value {
        self.state_file("agent.json")["last_fetch"].clone()
    }

    /// The policy violations of the last judged pass: its findings (agent state) of
    /// severity `error` with status `violation` (a warning is not counted).
    fn violations(&self) -> u64 {
        let state = self.state_file("agent.json");
        let findings = state["findings"].as_object().cloned().unwrap_or_default();
        findings
            .values()
            .flat_map(|f| f.as_array().cloned().unwrap_or_default())
            .filter(|f| f["status"] == "violation" && f["severity"] == "error")
            .count() as u64
    }

    /// Whether a pass runs now.
    fn in_pass(&self) -> bool {
        !self.state_file("agent.json")["pass_since"].is_null()
    }

    /// Waits until `commit` is recorded as applied.
    #[track_caller]
    fn wait_applied(&self, commit: &str, within: Duration) {
        poll(
            &format!("{commit} applied"),
            within,
            || (self.applied().as_deref() == Some(commit)).then_some(()),
            || self.context(),
        );
    }

    /// The fetches the Git server has served (each starts with `GET info/refs`).
    fn fetches(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains("/info/refs?service=git-upload-pack"))
            .count()
    }

    /// `berth status --json`'s `notify` object (the agent runs).
    fn notify_status(&self) -> Value {
        let r = self.node.berth(&["status", "--format", "json"]);
        assert_eq!(
            r.code, 0,
            "berth status --format json: {}{}",
            r.stdout, r.stderr
        );
        let v: Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("berth status --format json: {e}: {}", r.stdout));
        v["notify"].clone()
    }

    /// Waits until the channel's state is `state`; the `notify` object then.
    #[track_caller]
    fn wait_notify_state(&self, state: &str, within: Duration) -> Value {
        poll(
            &format!("notify.state {state}"),
            within,
            || {
                let n = self.notify_status();
                (n["state"] == state).then_some(n)
            },
            || self.context(),
        )
    }

    /// The agent's metrics (OpenMetrics text from the API socket).
    fn metrics(&self) -> String {
        api_get(&self.node.run_dir().join("api.sock"), "/metrics").1
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum_samples(&self.metrics(), name, labels)
    }

    /// `berth notify` as the CI user with `extra` arguments, run in `cwd`.
    fn notify_in(&self, cwd: &Path, extra: &[&str]) -> Run {
        let out = berth()
            .current_dir(cwd)
            .args(self.broker.notify_args(TOPIC))
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("run berth notify: {e}"));
        Run::from(out)
    }

    /// `berth notify --revision COMMIT --ref REF`, which must succeed and say so.
    #[track_caller]
    fn notify(&self, commit: &str, git_ref: &str) {
        let dir = tempfile::tempdir().unwrap();
        let r = self.notify_in(dir.path(), &["--revision", commit, "--ref", git_ref]);
        assert_eq!(
            r.code,
            0,
            "berth notify: {}{}\n{}",
            r.stdout,
            r.stderr,
            self.context()
        );
        assert_eq!(
            r.stdout.trim(),
            format!("notified {TOPIC}: {git_ref} at {commit}"),
            "{}",
            r.stderr
        );
    }

    /// The node's retained status message, parsed.
    fn node_status(&self) -> Option<Value> {
        let text = self.broker.retained(&format!("{TOPIC}/nodes/{NODE}"))?;
        Some(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the node's status is not JSON: {e}: {text}")),
        )
    }

    /// Waits until the node's retained status names `commit`; the status then.
    #[track_caller]
    fn wait_node_status(&self, commit: &str, within: Duration) -> Value {
        poll(
            &format!("the node's retained status naming {commit}"),
            within,
            || self.node_status().filter(|s| s["commit"] == commit),
            || self.context(),
        )
    }

    /// Waits until no pass runs and `passes` (the metric's sum) stayed the same for
    /// `quiet`; that sum.
    fn settle(&self, quiet: Duration) -> f64 {
        let mut last = (self.passes(), Instant::now());
        let deadline = Instant::now() + FIRST;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.passes();
            if now != last.0 || self.in_pass() {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the agent never went quiet\n{}",
                self.context()
            );
        }
    }

    /// Every pass the agent ran (`berth_reconcile_passes_total`, all labels).
    fn passes(&self) -> f64 {
        self.metric("berth_reconcile_passes_total", &[])
    }

    fn context(&self) -> String {
        let log = self.agent.as_ref().map(Agent::log).unwrap_or_default();
        let chars: Vec<char> = log.chars().collect();
        let tail: String = chars[chars.len().saturating_sub(8000)..].iter().collect();
        format!(
            "--- agent output (tail)\n{tail}\n--- broker log (tail)\n{}\n\
             --- git server requests\n{}\n--- last_fetch {}",
            self.broker.log_tail(4000),
            self.server.requests().join("\n"),
            self.last_fetch()
        )
    }
}

/// `berth ARGS` in an empty directory (outside any repository, so that `berth notify`
/// resolves no revision there).
fn berth_outside(args: &[String]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = berth()
        .current_dir(dir.path())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run berth: {e}"));
    Run::from(out)
}

/// Whether the agent's log says a message announced `commit` on the followed ref
/// (`mqtt: … at <commit, 12 digits or more> announced…`).
fn announced(log: &str, commit: &str) -> bool {
    log.lines().any(|l| {
        l.contains("mqtt: ")
            && l.contains(&format!(" at {}", &commit[..12]))
            && l.contains("announced")
    })
}

/// The sum of the samples of `name` in an exposition whose labels include `labels`.
fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labelset, value) = if let Some(r) = rest.strip_prefix('{') {
                r.split_once("} ")?
            } else {
                ("", rest.strip_prefix(' ')?)
            };
            labels
                .iter()
                .all(|(k, v)| labelset.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// TLS with the test CA and a password file: the reference setup.
fn tls() -> BrokerOptions {
    BrokerOptions {
        tls: true,
        ..BrokerOptions::default()
    }
}

/// Checks the node's status message against the contract
/// (/work/notes/mqtt-interface.md, docs/fleet.md).
#[track_caller]
/// `violations` is checked when given (a node without containers has none).
fn assert_node_status(s: &Value, commit: &str, violations: Option<u64>) {
    assert_eq!(s["node"], NODE, "{s}");
    assert_eq!(s["commit"], commit, "{s}");
    assert_eq!(s["applied"], commit, "{s}");
    assert_eq!(s["mode"], "enforce", "{s}");
    assert_eq!(s["result"], "converged", "{s}");
    assert!(s["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{s}");
    let conditions = s["conditions"].as_array().unwrap_or_else(|| panic!("{s}"));
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == true),
        "{s}"
    );
    assert!(s["containers"].is_object(), "{s}");
    assert!(s["violations"].is_u64(), "{s}");
    if let Some(v) = violations {
        assert_eq!(s["violations"].as_u64(), Some(v), "{s}");
    }
}

#[test]
fn a_notified_push_is_applied_at_once_and_the_node_publishes_its_status() {
    let Some(mut f) = Fleet::new(tls(), As::Node, "5m", "") else {
        return;
    };
    let c1 = f.push_notes("one");
    f.start();
    f.wait_applied(&c1, FIRST);
    poll(
        "the agent to connect",
        FIRST,
        || {
            f.agent()
                .log()
                .contains(&format!("mqtt: connected to {}", f.broker.url()))
                .then_some(())
        },
        || f.context(),
    );
    let n = f.wait_notify_state("connected", SOON);
    assert_eq!(n["broker"], f.broker.url(), "{n}");
    assert_eq!(n["topic"], TOPIC, "{n}");
    assert!(n["since"].is_string(), "{n}");
    let text = f.node.berth(&["status"]);
    assert!(
        text.stdout.lines().any(|l| l.starts_with("notify:")
            && l.contains(&format!("connected to {}", f.broker.url()))
            && l.contains(TOPIC)),
        "{}",
        text.stdout
    );

    // The status of the first pass is retained for the fleet owner.
    let s = f.wait_node_status(&c1, SOON);
    assert_node_status(&s, &c1, Some(0));
    assert_eq!(s["containers"]["running"].as_u64().unwrap_or(0), 0, "{s}");

    // A push alone waits for the interval, 5 minutes away.
    let c2 = f.push_notes("two");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(f.applied().as_deref(), Some(c1.as_str()), "{}", f.context());
    let sent = Instant::now();
    f.notify(&c2, MAIN);
    f.wait_applied(&c2, SOON);
    eprintln!(
        "mqtt: berth notify to applied (source.interval 5m, spread 0s): {:?}",
        sent.elapsed()
    );
    let retained: Value = serde_json::from_str(&f.broker.retained(TOPIC).unwrap()).unwrap();
    assert_eq!(retained["ref"], MAIN, "{retained}");
    assert_eq!(retained["commit"], c2, "{retained}");
    assert!(announced(&f.agent().log(), &c2), "{}", f.context());
    assert_node_status(&f.wait_node_status(&c2, SOON), &c2, Some(0));

    // `berth notify`'s defaults: the work clone's HEAD and branch.
    let c3 = f.push_notes("three");
    let r = f.notify_in(&f.repo.work(), &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.trim(),
        format!("notified {TOPIC}: {MAIN} at {c3}"),
        "{}",
        r.stderr
    );
    f.wait_applied(&c3, SOON);
    f.wait_node_status(&c3, SOON);

    let n = f.notify_status();
    assert_eq!(n["state"], "connected", "{n}");
    assert!(n["messages"].as_u64().is_some_and(|m| m >= 2), "{n}");
    assert_eq!(n["last_commit"], c3, "{n}");
    let m = f.metrics();
    assert_eq!(sum_samples(&m, "berth_mqtt_connected", &[]), 1.0, "{m}");
    assert!(
        sum_samples(&m, "berth_mqtt_connections_total", &[]) >= 1.0,
        "{m}"
    );
    assert!(
        sum_samples(&m, "berth_mqtt_messages_total", &[("result", "fetch")]) >= 2.0,
        "{m}"
    );
    assert!(
        sum_samples(&m, "berth_mqtt_status_published_total", &[]) >= 3.0,
        "{m}"
    );
    let log = f.agent().log();
    assert!(!log.contains(&f.password), "the log shows the password");

    // Client ids: the node's is `berth-<node>`, each publisher's its own.
    let broker_log = f.broker.log();
    assert!(
        broker_log.contains(&format!(" as berth-{NODE} ")),
        "{broker_log}"
    );
    assert!(
        broker_log.matches(" as berth-notify-").count() >= 2,
        "{broker_log}"
    );

    // A server certificate of another CA: the publisher refuses it, exit 3.
    let other = berth_e2e::git::TestCa::new("untrusted CA").unwrap();
    let mut args = f.broker.notify_args(TOPIC);
    let at = args.iter().position(|a| a == "--ca-file").unwrap();
    args[at + 1] = other.ca.display().to_string();
    args.extend(["--revision".into(), c3.clone(), "--ref".into(), MAIN.into()]);
    let r = berth_outside(&args);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    eprintln!(
        "mqtt: berth notify trusting another CA: {}",
        r.stderr.trim()
    );

    // Usage and input errors: exit 2, nothing published.
    let args = f.broker.notify_args(TOPIC);
    let usage: [(&str, Vec<String>); 3] = [
        (
            "not a commit id",
            [&args[..], &["--revision".into(), "not-a-commit".into()]].concat(),
        ),
        (
            "an https:// broker",
            vec![
                "notify".into(),
                "--mqtt".into(),
                "https://127.0.0.1:1".into(),
                "--topic".into(),
                TOPIC.into(),
                "--revision".into(),
                c1.clone(),
            ],
        ),
        (
            "a password without a user name",
            vec![
                "notify".into(),
                "--mqtt".into(),
                f.broker.url(),
                "--topic".into(),
                TOPIC.into(),
                "--revision".into(),
                c1.clone(),
                "--password-file".into(),
                f.broker.ci.password_file.display().to_string(),
            ],
        ),
    ];
    for (what, args) in usage {
        let r = berth_outside(&args);
        assert_eq!(r.code, 2, "{what}: {}{}", r.stdout, r.stderr);
    }
    let retained: Value = serde_json::from_str(&f.broker.retained(TOPIC).unwrap()).unwrap();
    assert_eq!(retained["commit"], c3, "{retained}");
}

#[test]
fn with_the_broker_down_the_agent_polls_and_reconnects_when_it_returns() {
    let Some(mut f) = Fleet::new(tls(), As::Node, "3s", "") else {
        return;
    };
    let c1 = f.push_notes("one");
    f.start();
    f.wait_applied(&c1, FIRST);
    f.wait_notify_state("connected", FIRST);
    f.wait_node_status(&c1, SOON);

    f.broker.stop();
    let lost = format!("mqtt: connection to {} lost", f.broker.url());
    poll(
        "the agent to see the connection lost",
        SOON,
        || f.agent().log().contains(&lost).then_some(()),
        || f.context(),
    );
    let n = poll(
        "notify.state not connected",
        SOON,
        || {
            let n = f.notify_status();
            (n["state"] != "connected").then_some(n)
        },
        || f.context(),
    );
    assert!(
        n["state"] == "disconnected" || n["state"] == "connecting",
        "{n}"
    );
    assert!(
        n["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{n}"
    );
    assert_eq!(f.metric("berth_mqtt_connected", &[]), 0.0);

    // The publisher cannot reach the broker: exit 3, saying why.
    let dir = tempfile::tempdir().unwrap();
    let r = f.notify_in(dir.path(), &["--revision", &c1, "--ref", MAIN]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.trim().is_empty(), "berth notify said nothing");
    eprintln!(
        "mqtt: berth notify with the broker down: {}",
        r.stderr.trim()
    );

    // The interval still applies pushes.
    let c2 = f.push_notes("two");
    f.wait_applied(&c2, SOON);

    // The broker returns on the same port, without the retained messages (no
    // persistence): the agent reconnects (with its backoff), publishes its status
    // again, and takes notifications.
    let connections = f.metric("berth_mqtt_connections_total", &[]);
    f.broker.restart();
    let n = f.wait_notify_state("connected", RECONNECTS_WITHIN);
    assert!(n["since"].is_string(), "{n}");
    let connected = format!("mqtt: connected to {}", f.broker.url());
    assert!(
        f.agent().log().matches(&connected).count() >= 2,
        "{}",
        f.context()
    );
    assert!(f.metric("berth_mqtt_connections_total", &[]) > connections);
    assert_eq!(f.metric("berth_mqtt_connected", &[]), 1.0);
    let s = poll(
        "the node's status published again after the reconnection",
        SOON,
        || f.node_status(),
        || f.context(),
    );
    assert_eq!(s["node"], NODE, "{s}");
    let c3 = f.push_notes("three");
    f.notify(&c3, MAIN);
    poll(
        "the notification taken after the reconnection",
        SOON,
        || announced(&f.agent().log(), &c3).then_some(()),
        || f.context(),
    );
    f.wait_applied(&c3, SOON);
    f.wait_node_status(&c3, SOON);
}

/// The revision message is retained: a node that was away when it was published
/// (locked out of the broker, so certainly not connected) fetches on its return.
#[test]
fn a_node_back_on_the_broker_catches_up_from_the_retained_revision_message() {
    let Some(mut f) = Fleet::new(tls(), As::Node, "5m", "") else {
        return;
    };
    let c1 = f.push_notes("one");
    f.start();
    f.wait_applied(&c1, FIRST);
    f.wait_notify_state("connected", FIRST);

    // The broker drops the node and refuses it from now on.
    f.broker.lock_out(&f.broker.node);
    let n = poll(
        "the node refused by the broker",
        RECONNECTS_WITHIN,
        || {
            let n = f.notify_status();
            (n["state"] != "connected"
                && n["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not authorised")))
            .then_some(n)
        },
        || f.context(),
    );
    assert_eq!(f.metric("berth_mqtt_connected", &[]), 0.0, "{n}");

    // Meanwhile a push is announced; the node hears nothing of it.
    let c2 = f.push_notes("two");
    f.notify(&c2, MAIN);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(f.applied().as_deref(), Some(c1.as_str()), "{}", f.context());
    assert!(!announced(&f.agent().log(), &c2), "{}", f.context());

    // Let in again, at its next attempt it gets the retained message and fetches.
    f.broker.let_in(&f.broker.node);
    f.wait_notify_state("connected", RECONNECTS_WITHIN);
    f.wait_applied(&c2, SOON);
    assert!(announced(&f.agent().log(), &c2), "{}", f.context());
    f.wait_node_status(&c2, SOON);
}

#[test]
fn a_notification_cannot_apply_a_missing_or_unsigned_commit_or_fetch_for_another_ref() {
    if !have_tools(&["ssh-keygen"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let ops = ssh_keygen(keys.path(), "ops");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(
        &signers,
        allowed_signer("ops@berth.example", "namespaces=\"git\"", &ops),
    )
    .unwrap();
    let extra = format!("allowed_signers = {signers:?}\n");
    let Some(mut f) = Fleet::new(tls(), As::Node, "5m", &extra) else {
        return;
    };
    let c1 = f.push_web(SECS, Some(&ops));
    f.start();
    f.wait_applied(&c1, FIRST);
    f.wait_notify_state("connected", FIRST);
    let pid = poll("web to run", FIRST, || f.web_pid(), || f.context());
    assert!(sleeping(SECS));
    let s = f.wait_node_status(&c1, SOON);
    assert_node_status(&s, &c1, None);
    assert_eq!(s["containers"]["running"], 1, "{s}");
    // The restricted profile in audit mode: web's errors are violations, counted.
    let violations = f.violations();
    assert!(violations > 0, "{}", f.state_file("agent.json"));
    assert_eq!(s["violations"].as_u64(), Some(violations), "{s}");
    f.settle(Duration::from_secs(1));

    // Another ref, bad JSON, an oversized message: ignored, nothing fetched.
    let fetches = f.fetches();
    let ignored = f.metric("berth_mqtt_messages_total", &[("result", "ignored")]);
    f.notify(&c1, "refs/heads/other");
    f.notify(&c1, "refs/tags/v1");
    f.broker
        .publish(TOPIC, "{\"ref\": \"refs/heads/main\"", true);
    let big = format!(
        "{{\"ref\":\"{MAIN}\",\"commit\":\"{c1}\",\"pad\":\"{}\"}}",
        "x".repeat(5000)
    );
    f.broker.publish(TOPIC, &big, true);
    poll(
        "four messages ignored",
        SOON,
        || {
            (f.metric("berth_mqtt_messages_total", &[("result", "ignored")]) >= ignored + 4.0)
                .then_some(())
        },
        || format!("{}\n{}", f.metrics(), f.context()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        f.fetches(),
        fetches,
        "an ignored message fetched\n{}",
        f.context()
    );

    // A commit that does not exist: the fetch brings main as it is, nothing changes.
    let fetched_at = f.last_fetch()["at"].clone();
    let ghost = random_hex().repeat(3)[..40].to_string();
    f.notify(&ghost, MAIN);
    poll(
        "a fetch for the missing commit",
        SOON,
        || (f.fetches() > fetches && f.last_fetch()["at"] != fetched_at).then_some(()),
        || f.context(),
    );
    f.settle(Duration::from_secs(1));
    assert_eq!(f.applied().as_deref(), Some(c1.as_str()), "{}", f.context());
    assert_eq!(f.web_pid(), Some(pid), "web was touched\n{}", f.context());
    assert!(announced(&f.agent().log(), &ghost), "{}", f.context());

    // An unsigned commit on main, announced: fetched, refused, nothing changes.
    let unsigned = f.push_web(SECS + 1, None);
    f.notify(&unsigned, MAIN);
    let refused = poll(
        "the unsigned commit refused",
        SOON,
        || {
            let l = f.last_fetch();
            (l["commit"] == unsigned && l["refused"].is_string()).then_some(l)
        },
        || f.context(),
    );
    eprintln!("mqtt: unsigned commit: {refused}");
    f.settle(Duration::from_secs(1));
    assert_eq!(f.applied().as_deref(), Some(c1.as_str()), "{}", f.context());
    assert_eq!(f.web_pid(), Some(pid), "web was touched\n{}", f.context());
    assert!(sleeping(SECS) && !sleeping(SECS + 1));

    // A signed commit, announced, runs: the channel works for what is trusted.
    let signed = f.push_web(SECS + 2, Some(&ops));
    f.notify(&signed, MAIN);
    f.wait_applied(&signed, SOON);
    poll(
        "web to run the signed commit",
        SOON,
        || sleeping(SECS + 2).then_some(()),
        || f.context(),
    );
    assert_ne!(f.web_pid(), Some(pid));
}

#[test]
fn a_burst_of_two_hundred_notifications_runs_at_most_two_more_passes() {
    let Some(mut f) = Fleet::new(tls(), As::Node, "5m", "") else {
        return;
    };
    let c1 = f.push_notes("one");
    f.start();
    f.wait_applied(&c1, FIRST);
    f.wait_notify_state("connected", FIRST);
    let before = f.settle(Duration::from_secs(1));
    let fetches = f.fetches();
    let messages = f.metric("berth_mqtt_messages_total", &[]);

    let c2 = f.push_notes("two");
    let burst: Vec<String> = (0..200)
        .map(|_| format!("{{\"ref\":\"{MAIN}\",\"commit\":\"{c2}\"}}"))
        .collect();
    let sent = Instant::now();
    f.broker.publish_burst(TOPIC, &burst, true);
    let published = sent.elapsed();
    f.wait_applied(&c2, SOON);
    let applied = sent.elapsed();
    poll(
        "the 200 messages received",
        SOON,
        || (f.metric("berth_mqtt_messages_total", &[]) >= messages + 200.0).then_some(()),
        || format!("{}\n{}", f.metrics(), f.context()),
    );
    let after = f.settle(Duration::from_secs(3));
    let passes = after - before;
    let fetched = f.fetches() - fetches;
    eprintln!(
        "mqtt: a burst of 200 (published in {published:?}): {passes} passes, {fetched} fetches, applied after {applied:?}"
    );
    assert!(
        (1.0..=3.0).contains(&passes),
        "{passes} passes for a burst of 200 (at most one in flight and one queued)\n{}",
        f.context()
    );
    assert!(
        fetched <= 3,
        "{fetched} fetches for a burst of 200 (at most one in flight and one queued)\n{}",
        f.context()
    );
}

#[test]
fn mutual_tls_with_client_certificates_works_and_a_publisher_without_one_is_refused() {
    let opts = BrokerOptions {
        tls: true,
        require_certificate: true,
        use_identity_as_username: true,
    };
    let Some(mut f) = Fleet::new(opts, As::Certificate, "5m", "") else {
        return;
    };
    let c1 = f.push_notes("one");
    f.start();
    f.wait_applied(&c1, FIRST);
    f.wait_notify_state("connected", FIRST);
    f.wait_node_status(&c1, SOON);

    let c2 = f.push_notes("two");
    f.notify(&c2, MAIN);
    f.wait_applied(&c2, SOON);

    // Without its client certificate, the publisher is refused: exit 3.
    let args = f.broker.notify_args(TOPIC);
    let cut = args
        .iter()
        .position(|a| a == "--client-cert")
        .expect("--client-cert");
    let without = [
        &args[..cut],
        &args[cut + 4..],
        &["--revision".into(), c2.clone(), "--ref".into(), MAIN.into()],
    ]
    .concat();
    let r = berth_outside(&without);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(!r.stderr.trim().is_empty(), "berth notify said nothing");
    eprintln!(
        "mqtt: berth notify without its certificate: {}",
        r.stderr.trim()
    );
}

#[test]
fn a_wrong_password_leaves_the_channel_disconnected_and_is_never_shown() {
    let Some(mut f) = Fleet::new(tls(), As::WrongPassword, "5m", "") else {
        return;
    };
    let c1 = f.push_notes("one");
    f.start();
    // The source is polled as usual.
    f.wait_applied(&c1, FIRST);
    let n = poll(
        "notify.state disconnected with an error",
        FIRST,
        || {
            let n = f.notify_status();
            (n["state"] == "disconnected" && n["last_error"].is_string()).then_some(n)
        },
        || f.context(),
    );
    eprintln!("mqtt: a wrong password: {n}");
    let error = n["last_error"].as_str().unwrap().to_lowercase();
    assert!(
        ["not authori", "bad user name or password", "refused"]
            .iter()
            .any(|w| error.contains(w)),
        "an unclear error: {n}"
    );
    assert_eq!(f.metric("berth_mqtt_connected", &[]), 0.0);
    // A while later, it still is not connected, and says the password nowhere.
    std::thread::sleep(Duration::from_secs(3));
    let n = f.notify_status();
    assert_ne!(n["state"], "connected", "{n}");
    let status = f.node.berth(&["status"]);
    let events = f.node.berth(&["events"]);
    for (what, text) in [
        ("the agent's log", f.agent().log()),
        ("berth status --json", n.to_string()),
        ("berth status", status.stdout + &status.stderr),
        ("berth events", events.stdout + &events.stderr),
        ("the metrics", f.metrics()),
    ] {
        assert!(
            !text.contains(&f.password),
            "{what} shows the password:\n{text}"
        );
    }
    assert!(
        f.broker.log().contains("not authorised"),
        "the broker did not refuse it:\n{}",
        f.broker.log_tail(4000)
    );
}
