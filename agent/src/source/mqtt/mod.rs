//! Revision notifications and node status over MQTT (`source.notify`, docs/fleet.md).
//!
//! The agent subscribes to `source.notify.topic` (QoS 1) as `berth-<node name>`. A
//! revision message (`{"ref": "refs/heads/main", "commit": "<sha>"}`, published retained
//! by `berth notify` so that a node coming online catches up) about the followed ref
//! makes it fetch after a random delay below `spread`, so that a fleet does not reach
//! the Git server in the same millisecond. A message only ever starts a fetch: what is
//! applied is verified as any fetched revision. While a fetch waits for its delay, more
//! messages join it; the controller gathers what comes during a pass into one more, so a
//! flood makes at most one pass in flight and one queued.
//!
//! After every pass the agent publishes the node's status, retained, on
//! `<topic>/nodes/<node name>` (`message::NodeStatus`), and again after each
//! reconnection, so that a fleet owner sees every node from the broker alone.
//!
//! With the broker down the agent polls as before (`source.interval`) and connects again
//! with a backoff from 1 s doubling to 60 s; `berth status` and the metrics
//! (`berth_mqtt_connected`) show the channel's state. It runs on the agent's async
//! runtime in `berth-agentd`.

pub mod conn;
pub mod message;
pub mod publish;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_spec::node::{GitRef, Notify};
use berth_spec::{Diagnostic, Location};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::reconcile::backoff::RestartBackoff;
use crate::reconcile::controller::{Handle, Trigger};
pub use conn::{ConnError, Settings};
use message::{NodeStatus, Verdict};

/// The first delay before connecting again; it doubles up to [`RECONNECT_MAX`].
pub const RECONNECT_FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two connection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// A connection that lasted this long starts the backoff afresh when it ends; one that
/// ends sooner (a broker or a twin client that drops it right after CONNACK, a packet
/// too large) counts as another failure, so the delay keeps growing.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Ignored messages are logged at most once in this time (the others counted in the
/// next line), so that a flood on the topic does not flood the log.
pub const IGNORED_LOG_EVERY: Duration = Duration::from_secs(10);

/// The channel's state, as `berth status` and `GET /v1/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// `mqtt[s]://host:port`.
    pub broker: String,
    pub topic: String,
    /// `connecting`, `connected` or `disconnected`.
    pub state: String,
    /// Since when, RFC 3339.
    pub since: String,
    /// Why the last connection failed or ended (never a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Revision messages received since the agent started.
    pub messages: u64,
    /// The commit the last message about the followed ref named: announced by whoever
    /// may publish on the topic, never verified (the fetch decides what is applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<String>,
}

/// The running subscription: it ends when dropped.
#[derive(Debug)]
pub struct Channel {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Who this node is, for the client id and its status.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// `enforce` or `observe`.
    pub mode: &'static str,
}

/// Subscribes to `notify` on `rt`; messages about `git_ref` send
/// [`Trigger::Announced`] to `handle`. The files (password, CA, client certificate
/// and key) are read at each connection attempt: one that cannot be used leaves the
/// channel disconnected, saying why, and is read again at the next attempt, as a
/// broker that does not answer is tried again; the agent polls meanwhile.
pub fn start(
    rt: &tokio::runtime::Handle,
    handle: Handle,
    notify: &Notify,
    git_ref: &GitRef,
    node: Node,
) -> Result<Channel, ConnError> {
    let settings = Settings::of(notify)?;
    let client_id = format!("berth-{}", message::level(&node.name));
    let broker = settings.broker.url();
    let state = Arc::new(Mutex::new(ChannelState {
        broker: broker.clone(),
        topic: notify.topic.clone(),
        state: "connecting".into(),
        since: crate::util::rfc3339::now(),
        last_error: None,
        messages: 0,
        last_commit: None,
    }));
    handle.set_notify(state.clone());
    // The request queue holds a subscription and a status or two; a status that finds
    // it full is dropped (the next pass sends a newer one).
    let (client, eventloop) = AsyncClient::new(settings.base_options(&client_id), 8);
    let (tx, rx) = mpsc::channel(64);
    let poller = rt.spawn(poll(eventloop, tx, settings, client_id));
    let worker = rt.spawn(serve(Serve {
        client,
        rx,
        handle,
        state,
        topic: notify.topic.clone(),
        spread: notify.spread,
        git_ref: git_ref.clone(),
        node,
    }));
    Ok(Channel {
        tasks: vec![poller, worker],
    })
}

/// What the connection reports to [`serve`].
#[derive(Debug)]
enum Report {
    Connected,
    Lost {
        error: String,
        retry_in: Duration,
    },
    Message {
        topic: String,
        payload: Vec<u8>,
        /// The broker sent it from its store (a retained message, at subscription).
        retained: bool,
    },
    SubscribeRefused,
}

/// Drives the connection: rumqttc connects again at the next poll after an error; the
/// delay between attempts doubles from [`RECONNECT_FIRST`] to [`RECONNECT_MAX`]. The
/// files are read again before each attempt (a password or a certificate fixed or
/// rotated is used from the next one).
async fn poll(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Report>,
    settings: Settings,
    client_id: String,
) {
    eventloop
        .network_options
        .set_connection_timeout(conn::CONNECT_WITHIN.as_secs());
    let broker = settings.broker.url();
    let mut failures: u32 = 0;
    let mut connected_at: Option<Instant> = None;
    // Before the first attempt and after each failure: the options read anew.
    let mut stale = true;
    loop {
        if stale {
            match settings.options(&client_id) {
                Ok(o) => {
                    eventloop.mqtt_options = o;
                    stale = false;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry_in = reconnect_delay(failures);
                    let error = format!(
                        "{} (read again at the next attempt)",
                        crate::util::error_chain(&e)
                    );
                    if tx.send(Report::Lost { error, retry_in }).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(retry_in).await;
                    continue;
                }
            }
        }
        let report = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                Some(Report::Connected)
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Some(Report::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retained: p.retain,
            }),
            Ok(Event::Incoming(Packet::SubAck(ack))) => ack
                .return_codes
                .iter()
                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                .then_some(Report::SubscribeRefused),
            Ok(_) => None,
            Err(e) => {
                let lasted = connected_at.take().map(|at| at.elapsed());
                if lasted.is_some_and(|d| d >= STABLE_AFTER) {
                    failures = 0;
                }
                failures = failures.saturating_add(1);
                let retry_in = reconnect_delay(failures);
                let mut error = connection_error(&e, &broker);
                if let Some(d) = lasted.filter(|d| *d < STABLE_AFTER) {
                    error.push_str(&format!(
                        " (the connection lasted {}s: another client with the id `{client_id}`? node names must be unique on a broker)",
                        d.as_secs()
                    ));
                }
                stale = true;
                if tx.send(Report::Lost { error, retry_in }).await.is_err() {
                    return;
                }
                tokio::time::sleep(retry_in).await;
                None
            }
        };
        if let Some(r) = report
            && tx.send(r).await.is_err()
        {
            return;
        }
    }
}

/// The delay before the `n`th attempt after a failure: 1 s doubling to 60 s, less up to
/// a fifth at random so that a fleet does not reconnect in step.
fn reconnect_delay(n: u32) -> Duration {
    let d = RECONNECT_FIRST
        .saturating_mul(1u32 << n.saturating_sub(1).min(6))
        .min(RECONNECT_MAX);
    d - random_below(d / 5)
}

/// A connection error in words, naming the broker; a refusal says what it means.
fn connection_error(e: &rumqttc::ConnectionError, broker: &str) -> String {
    use rumqttc::ConnectReturnCode as C;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(C::BadUserNamePassword) => {
            format!("{broker} refused the user name or password")
        }
        rumqttc::ConnectionError::ConnectionRefused(C::NotAuthorized) => {
            format!("{broker} refused the connection: not authorised")
        }
        rumqttc::ConnectionError::ConnectionRefused(C::BadClientId) => {
            format!("{broker} refused the client id")
        }
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            format!("{broker} refused the connection ({code:?})")
        }
        rumqttc::ConnectionError::NetworkTimeout => {
            format!(
                "{broker} did not answer within {}s",
                conn::CONNECT_WITHIN.as_secs()
            )
        }
        _ => {
            let chain = crate::util::error_chain(e);
            // What a TLS alert or a refused certificate means, in the words of the
            // node's configuration.
            let tls = broker.starts_with("mqtts://");
            let hint = if chain.contains("payload size limit exceeded") {
                "; a message larger than the 64 KiB berth takes (a retained one on the topic? clear it: mosquitto_pub -r -n -t TOPIC)"
            } else if !tls
                && (chain.contains("Connection reset by peer") || chain.contains("serialization"))
            {
                "; is it a TLS port? (mqtts://)"
            } else if tls
                && (chain.contains("InvalidContentType")
                    || chain.contains("corrupt message")
                    || chain.contains("Connection reset by peer"))
            {
                "; is it a plain MQTT port? (mqtt://), or does the broker refuse this node's TLS?"
            } else if chain.contains("NotValidForName") {
                "; its certificate does not name the host of `mqtt`"
            } else if chain.contains("CertificateRequired") {
                "; the broker asks for a client certificate (client_cert and client_key)"
            } else if chain.contains("UnknownIssuer") || chain.contains("invalid peer certificate")
            {
                "; its certificate is not signed by a CA this node trusts (ca_file, or the system's CAs)"
            } else if chain.contains("BadCertificate") || chain.contains("UnknownCA") {
                "; it refused this node's client certificate"
            } else {
                ""
            };
            format!("cannot talk to {broker}: {chain}{hint}")
        }
    }
}

/// A random duration in `[0, d)`.
fn random_below(d: Duration) -> Duration {
    let nanos = d.as_nanos() as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.write_u32(std::process::id());
    Duration::from_nanos(h.finish() % nanos)
}

struct Serve {
    client: AsyncClient,
    rx: mpsc::Receiver<Report>,
    handle: Handle,
    state: Arc<Mutex<ChannelState>>,
    topic: String,
    spread: Duration,
    git_ref: GitRef,
    node: Node,
}

/// Acts on what the connection reports and on each pass's end.
async fn serve(mut s: Serve) {
    let mut passes = s.handle.passes();
    let status_topic = message::status_topic(&s.topic, &s.node.name);
    // The status published last, sent again after a reconnection (a broker without
    // persistence forgets retained messages when it restarts).
    let mut last_status: Option<Vec<u8>> = None;
    // When the fetch a message asked for is due; one at a time.
    // When the fetch a message asked for is due, why, and the commit announced last
    // (none: a message named none), which the fetch is skipped for when a pass
    // fetched it meanwhile (at the agent's start, or by polling).
    let mut fetch_at: Option<(tokio::time::Instant, String, Option<String>)> = None;
    let metrics = s.handle.metrics().clone();
    let mut connected = false;
    let mut ever_connected = false;
    let mut lost_said = false;
    // The commit fetched last (read again after each pass), and the last message
    // that asked for a fetch: the same one replayed from the broker's store at a
    // reconnection asks for nothing new.
    let mut fetched = {
        let dir = s.handle.state_dir().to_path_buf();
        tokio::task::spawn_blocking(move || fetched_commit(&dir))
            .await
            .ok()
            .flatten()
    };
    let mut last_fetching: Option<Vec<u8>> = None;
    // Ignored messages: when one was last logged, and how many were not since.
    let mut ignored_said: Option<Instant> = None;
    let mut ignored_quiet: u64 = 0;
    loop {
        let due = fetch_at.as_ref().map(|(at, _, _)| *at);
        tokio::select! {
            report = s.rx.recv() => {
                let Some(report) = report else { return };
                match report {
                    Report::Connected => {
                        connected = true;
                        ever_connected = true;
                        lost_said = false;
                        metrics.mqtt_connected(true);
                        tracing::info!(target: "agent", "mqtt: connected to {}", s.state_broker());
                        s.set_state("connected", None);
                        if let Ok(mut st) = s.state.lock() {
                            st.last_error = None;
                        }
                        if let Err(e) = s.client.try_subscribe(s.topic.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(target: "agent", error = %e, "mqtt: cannot subscribe");
                        }
                        if let Some(body) = &last_status {
                            publish_status(&s.client, &status_topic, body, &metrics);
                        }
                    }
                    Report::Lost { error, retry_in } => {
                        if connected || !lost_said {
                            let what = if connected {
                                "connection to {} lost"
                            } else if ever_connected {
                                "cannot connect again to {}"
                            } else {
                                "cannot connect to {}"
                            }
                            .replace("{}", &s.state_broker());
                            tracing::warn!(target: "agent", "mqtt: {what}: {error}; retrying in {}s (polling every source.interval meanwhile)", retry_in.as_secs().max(1));
                            lost_said = true;
                        } else {
                            tracing::debug!(target: "agent", "mqtt: {error}; retrying in {}s", retry_in.as_secs().max(1));
                        }
                        if connected {
                            metrics.mqtt_connected(false);
                        }
                        connected = false;
                        s.set_state("disconnected", Some(error));
                    }
                    Report::SubscribeRefused => {
                        tracing::warn!(target: "agent", "mqtt: {} refused the subscription to `{}` (its access control?); polling every source.interval", s.state_broker(), s.topic);
                        s.set_state("connected", Some(format!("the subscription to `{}` was refused", s.topic)));
                    }
                    Report::Message { topic, payload, retained } => {
                        if topic != s.topic {
                            continue;
                        }
                        let verdict = if retained && last_fetching.as_deref() == Some(payload.as_slice()) {
                            Verdict::Ignore("the retained message already acted on".into())
                        } else {
                            message::judge(&payload, &s.git_ref, fetched.as_deref())
                        };
                        metrics.mqtt_message(matches!(verdict, Verdict::Fetch { .. }));
                        if let Ok(mut st) = s.state.lock() {
                            st.messages += 1;
                            if let Verdict::Fetch { commit: Some(c) } = &verdict {
                                st.last_commit = Some(c.clone());
                            }
                        }
                        match verdict {
                            Verdict::Ignore(why) => {
                                if ignored_said.is_some_and(|at| at.elapsed() < IGNORED_LOG_EVERY) {
                                    ignored_quiet += 1;
                                    tracing::debug!(target: "agent", "mqtt: a message on `{}` ignored: {why}", s.topic);
                                    continue;
                                }
                                let more = match std::mem::take(&mut ignored_quiet) {
                                    0 => String::new(),
                                    n => format!(" ({n} more ignored before it, not logged)"),
                                };
                                tracing::info!(target: "agent", "mqtt: a message on `{}` ignored: {why}{more}", s.topic);
                                ignored_said = Some(Instant::now());
                            }
                            Verdict::Fetch { commit } => {
                                last_fetching = Some(payload);
                                let at = commit.as_deref().map_or_else(String::new, |c| format!(" at {}", message::short(c)));
                                if let Some((_, _, due_commit)) = &mut fetch_at {
                                    tracing::debug!(target: "agent", "mqtt: the followed ref{at} announced; a fetch is already due");
                                    *due_commit = commit;
                                    continue;
                                }
                                let delay = random_below(s.spread);
                                tracing::info!(target: "agent", "mqtt: the followed ref{at} announced: fetching in {:.1}s", delay.as_secs_f64());
                                fetch_at = Some((tokio::time::Instant::now() + delay, format!("mqtt: the followed ref{at} announced"), commit));
                            }
                        }
                    }
                }
            }
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() => {
                if let Some((_, why, commit)) = fetch_at.take() {
                    // The controller skips it when a pass fetched the commit meanwhile
                    // (the agent's first pass, a poll), also one that runs now.
                    s.handle.send(Trigger::Announced(why, commit));
                }
            }
            changed = passes.changed() => {
                if changed.is_err() {
                    return;
                }
                let dir = s.handle.state_dir().to_path_buf();
                let backoff = s.handle.backoff();
                let node = s.node.clone();
                let read = tokio::task::spawn_blocking(move || (node_status(&dir, &node, backoff), fetched_commit(&dir))).await;
                let Ok((status, now_fetched)) = read else { continue };
                fetched = now_fetched;
                match serde_json::to_vec(&status) {
                    Ok(body) => {
                        if connected {
                            publish_status(&s.client, &status_topic, &body, &metrics);
                        }
                        last_status = Some(body);
                    }
                    Err(e) => tracing::warn!(target: "agent", error = %e, "mqtt: cannot encode the node status"),
                }
            }
        }
    }
}

impl Serve {
    fn state_broker(&self) -> String {
        self.state
            .lock()
            .map(|s| s.broker.clone())
            .unwrap_or_default()
    }

    fn set_state(&self, state: &str, error: Option<String>) {
        if let Ok(mut st) = self.state.lock() {
            if st.state != state {
                st.since = crate::util::rfc3339::now();
            }
            st.state = state.to_string();
            if error.is_some() {
                st.last_error = error;
            }
        }
    }
}

/// Hands the status to the client (retained, QoS 1); a full queue drops it (a newer
/// one comes with the next pass).
fn publish_status(
    client: &AsyncClient,
    topic: &str,
    body: &[u8],
    metrics: &crate::telemetry::metrics::Metrics,
) {
    match client.try_publish(topic, QoS::AtLeastOnce, true, body.to_vec()) {
        Ok(()) => metrics.mqtt_status_published(),
        Err(e) => {
            tracing::warn!(target: "agent", error = %e, "mqtt: the node status is not published")
        }
    }
}

/// The commit the agent fetched last, from its state.
fn fetched_commit(state_dir: &Path) -> Option<String> {
    crate::reconcile::agent_state::AgentState::load(state_dir)
        .ok()
        .flatten()
        .and_then(|s| s.last_fetch)
        .and_then(|f| f.commit)
}

/// The node's status from its state directory, as published after a pass.
pub fn node_status(state_dir: &Path, node: &Node, backoff: RestartBackoff) -> NodeStatus {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let view = crate::reconcile::agent_state::view(state_dir, true);
    let mut containers = std::collections::BTreeMap::new();
    for row in crate::reconcile::rows::list(state_dir, now, backoff).unwrap_or_default() {
        *containers.entry(row.state).or_insert(0u32) += 1;
    }
    let violations = view
        .findings
        .values()
        .flatten()
        .filter(|f| f.severity == "error" && f.status == "violation")
        .count();
    NodeStatus {
        node: node.name.clone(),
        time: crate::util::rfc3339::now(),
        mode: node.mode.to_string(),
        result: view.last_pass.as_ref().map(|p| p.result.clone()),
        commit: view.last_pass.as_ref().and_then(|p| p.revision.clone()),
        applied: view.revision.as_ref().map(|r| r.commit.clone()),
        conditions: view
            .conditions
            .iter()
            .map(|c| message::Condition {
                kind: c.kind.to_string(),
                status: c.status,
                reason: c.reason.clone(),
            })
            .collect(),
        containers,
        violations: u32::try_from(violations).unwrap_or(u32::MAX),
        planned: view
            .last_pass
            .as_ref()
            .filter(|p| p.result == "observed")
            .and_then(|p| p.planned),
    }
}

/// `berth agent --check`: the files of `source.notify` loaded as the agent loads them;
/// each one that is there and unusable is an error located at its key (a missing one
/// is a warning elsewhere, as every file the configuration names). The agent itself
/// starts with either, its channel disconnected, saying why, until the file is fixed.
pub fn check_files(config: &berth_spec::node::NodeConfig, shown: &str) -> Vec<Diagnostic> {
    let Some(notify) = config.source.as_ref().and_then(|s| s.notify.as_ref()) else {
        return Vec::new();
    };
    let Ok(settings) = Settings::of(notify) else {
        return Vec::new();
    };
    match settings.options("berth-check") {
        Ok(_) => Vec::new(),
        Err(ConnError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => {
            let key: &'static str = match &e {
                ConnError::Read { key, .. } | ConnError::Unusable { key, .. } => key,
                _ => "source.notify",
            };
            let at = config.keys.get(key).cloned().unwrap_or_else(|| Location {
                file: shown.to_string(),
                line: 1,
                column: 1,
            });
            vec![
                Diagnostic::new(
                    &at,
                    format!(
                        "{}; the agent's MQTT channel stays disconnected until it is fixed (the agent polls meanwhile)",
                        crate::util::error_chain(&e)
                    ),
                )
                .key(key),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnections_back_off_from_one_second_to_a_minute() {
        for n in 1..20 {
            let d = reconnect_delay(n);
            let full = Duration::from_secs(1u64 << (n - 1).min(6)).min(RECONNECT_MAX);
            assert!(d <= full && d >= full - full / 5, "attempt {n}: {d:?}");
        }
        assert!(reconnect_delay(u32::MAX) <= RECONNECT_MAX);
    }

    /// The serving half, fed reports as the connection would send them; what it sends
    /// the controller comes out of the returned receiver.
    fn serving(
        dir: &Path,
    ) -> (
        tokio::runtime::Runtime,
        mpsc::Sender<Report>,
        std::sync::mpsc::Receiver<Trigger>,
        Handle,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (handle, triggers) = crate::reconcile::controller::channel(dir, Default::default());
        let (client, eventloop) =
            AsyncClient::new(rumqttc::MqttOptions::new("berth-test", "127.0.0.1", 9), 8);
        // The event loop is never polled: nothing connects.
        std::mem::forget(eventloop);
        let (tx, rx) = mpsc::channel(1024);
        let state = Arc::new(Mutex::new(ChannelState {
            broker: "mqtt://127.0.0.1:9".into(),
            topic: "fleet".into(),
            state: "connecting".into(),
            since: String::new(),
            last_error: None,
            messages: 0,
            last_commit: None,
        }));
        handle.set_notify(state.clone());
        rt.spawn(serve(Serve {
            client,
            rx,
            handle: handle.clone(),
            state,
            topic: "fleet".into(),
            spread: Duration::ZERO,
            git_ref: GitRef::Branch("main".into()),
            node: Node {
                name: "edge-1".into(),
                mode: "enforce",
            },
        }));
        (rt, tx, triggers, handle)
    }

    fn fetches(triggers: &std::sync::mpsc::Receiver<Trigger>) -> usize {
        triggers
            .try_iter()
            .filter(|t| matches!(t, Trigger::Announced(..)))
            .count()
    }

    #[test]
    fn a_flood_of_messages_makes_one_fetch_due_at_a_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let (rt, tx, triggers, handle) = serving(dir.path());
        let msg = |r: &str| Report::Message {
            topic: "fleet".into(),
            payload: format!(r#"{{"ref": "{r}"}}"#).into_bytes(),
            retained: false,
        };
        rt.block_on(async {
            tx.send(Report::Connected).await.expect("send");
            for _ in 0..200 {
                tx.send(msg("refs/heads/main")).await.expect("send");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        // The first fetch fires at once (spread 0); the others that came while it was
        // due joined it, and the controller gathers the rest into one more pass.
        let n = fetches(&triggers);
        assert!((1..=2).contains(&n), "{n} fetches for 200 messages");
        let st = handle.notify_state().expect("state");
        assert_eq!((st.state.as_str(), st.messages), ("connected", 200));

        // Another ref, another topic, garbage: nothing.
        rt.block_on(async {
            tx.send(msg("refs/heads/dev")).await.expect("send");
            tx.send(Report::Message {
                topic: "other".into(),
                payload: br#"{"ref": "refs/heads/main"}"#.to_vec(),
                retained: false,
            })
            .await
            .expect("send");
            tx.send(Report::Message {
                topic: "fleet".into(),
                payload: vec![0xff; 10],
                retained: false,
            })
            .await
            .expect("send");
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        assert_eq!(fetches(&triggers), 0);
        let text = handle.metrics().encode();
        assert!(
            text.contains("berth_mqtt_messages_total{result=\"fetch\"} 200"),
            "{text}"
        );
        assert!(
            text.contains("berth_mqtt_messages_total{result=\"ignored\"} 2"),
            "{text}"
        );
        assert!(text.contains("berth_mqtt_connected 1"), "{text}");

        // A message after the fetch fired makes the next one.
        rt.block_on(async {
            tx.send(msg("main")).await.expect("send");
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        assert_eq!(fetches(&triggers), 1);

        // The message the broker replays from its store at each reconnection asks
        // for nothing new once acted on (a twin client or a broker dropping the
        // connection cannot make the node fetch at each reconnection); another does.
        let replay = |r: &str| Report::Message {
            topic: "fleet".into(),
            payload: format!(r#"{{"ref": "refs/heads/main", "x": "{r}"}}"#).into_bytes(),
            retained: true,
        };
        rt.block_on(async {
            tx.send(replay("a")).await.expect("send");
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        assert_eq!(fetches(&triggers), 1);
        rt.block_on(async {
            for _ in 0..5 {
                tx.send(Report::Connected).await.expect("send");
                tx.send(replay("a")).await.expect("send");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        assert_eq!(fetches(&triggers), 0);
        rt.block_on(async {
            tx.send(replay("b")).await.expect("send");
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        assert_eq!(fetches(&triggers), 1);

        // A lost connection is shown with its error and counted down.
        rt.block_on(async {
            tx.send(Report::Lost {
                error: "mqtt://127.0.0.1:9 refused the user name or password".into(),
                retry_in: Duration::from_secs(1),
            })
            .await
            .expect("send");
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let st = handle.notify_state().expect("state");
        assert_eq!(st.state, "disconnected");
        assert!(
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains("refused")),
            "{st:?}"
        );
        assert!(handle.metrics().encode().contains("berth_mqtt_connected 0"));
    }

    #[test]
    fn a_random_delay_stays_below_its_bound() {
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
        let spread = Duration::from_secs(2);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = random_below(spread);
            assert!(d < spread, "{d:?}");
            seen.insert(d.as_millis() / 200);
        }
        // Spread over the interval, not one value.
        assert!(seen.len() >= 5, "{seen:?}");
    }
}
