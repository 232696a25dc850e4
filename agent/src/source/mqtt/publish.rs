//! `berth notify`'s side: one revision message, published retained with QoS 1, and
//! the broker's acknowledgement awaited. The client id is unique per run
//! (`berth-notify-<random>`), so that it never takes the session of an agent on the
//! same host (a broker ends the older of two connections with one id).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};

use super::conn::{ConnError, Settings};
use super::message::Revision;

/// Why a revision message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Settings(#[from] ConnError),
    #[error("not delivered: {why}")]
    Connect { why: String },
    #[error("not delivered: {broker} did not acknowledge the message within {}s", .within.as_secs())]
    Timeout { broker: String, within: Duration },
    #[error("cannot encode the message")]
    Encode(#[source] serde_json::Error),
    #[error("cannot hand the message to the client")]
    Client(#[source] rumqttc::ClientError),
}

/// Publishes `revision` on `topic`, retained, QoS 1, and waits for the broker's PUBACK
/// (all within `within`); then disconnects.
pub async fn publish(
    settings: &Settings,
    topic: &str,
    revision: &Revision,
    within: Duration,
) -> Result<(), PublishError> {
    let id = format!("berth-notify-{:016x}", random());
    let options = settings.options(&id)?;
    let broker = settings.broker.url();
    let body = serde_json::to_vec(revision).map_err(PublishError::Encode)?;
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    eventloop
        .network_options
        .set_connection_timeout(super::conn::CONNECT_WITHIN.as_secs());
    client
        .try_publish(topic, QoS::AtLeastOnce, true, body)
        .map_err(PublishError::Client)?;
    let delivered = async {
        let mut sent = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(Event::Outgoing(Outgoing::Publish(_))) => sent = true,
                Ok(_) => {}
                Err(e) => {
                    let why = super::connection_error(&e, &broker);
                    let why = if sent {
                        format!(
                            "{why} (after the message was sent, before the broker acknowledged it)"
                        )
                    } else {
                        why
                    };
                    return Err(PublishError::Connect { why });
                }
            }
        }
    };
    let result = match tokio::time::timeout(within, delivered).await {
        Ok(r) => r,
        Err(_) => Err(PublishError::Timeout {
            broker: broker.clone(),
            within,
        }),
    };
    if result.is_ok() {
        // A clean end, so that the broker does not log a lost client.
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(e) = eventloop.poll().await {
                if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    result
}

/// 64 random bits.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
