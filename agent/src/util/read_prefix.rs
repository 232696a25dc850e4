//! The first bytes of an HTTP answer's body, for a message or to drain a small answer,
//! never more: a peer that sends a body without end cannot make berth buffer it.

use std::time::Duration;

use reqwest::Response;

/// The first `cap` bytes of a body, or fewer if it ends, breaks or is not there
/// within `within`. Never reads (or buffers) beyond `cap`; dropping the response then
/// closes the connection.
pub async fn read_prefix(mut resp: Response, cap: usize, within: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < cap {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let take = chunk.len().min(cap - out.len());
                out.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    out
}
