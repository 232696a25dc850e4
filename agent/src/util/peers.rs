//! Who a connection comes from, for limits per peer: [`peer_key`] (an IPv4 address or
//! an IPv6 /64) and [`PeerConnections`] (the connections open from each), shared by
//! the webhook receiver and the metrics address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The next connection of `listener` once one of `slots` is free, with the slot it
/// holds: an accept that fails (out of descriptors, most likely) is said as `what`'s
/// and tried again a moment later. None only if `slots` is closed.
pub async fn accept_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    what: &str,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = slots.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return Some((permit, stream, peer)),
            Err(e) => {
                tracing::warn!(target: "agent", error = %e, "{what}: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The address a peer is counted by: its IPv4 address (an IPv4-mapped IPv6 one too),
/// or its IPv6 /64, the least block a host is given, so that one host does not count as
/// many.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// The connections open from each peer ([`peer_key`]), `per_peer` at most, so that
/// one peer holding connections open cannot take every slot. A peer is forgotten when
/// its last connection closes: the map holds no more peers than connections.
#[derive(Debug)]
pub struct PeerConnections {
    open: HashMap<IpAddr, usize>,
    per_peer: usize,
}

impl PeerConnections {
    pub fn new(per_peer: usize) -> PeerConnections {
        PeerConnections {
            open: HashMap::new(),
            per_peer,
        }
    }

    /// Counts a connection from `peer`, unless it has `per_peer` open already.
    pub fn open(&mut self, peer: IpAddr) -> bool {
        let n = self.open.entry(peer_key(peer)).or_default();
        if *n >= self.per_peer {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection [`PeerConnections::open`] counted has closed.
    pub fn close(&mut self, peer: IpAddr) {
        let key = peer_key(peer);
        if let Some(n) = self.open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// How many peers have connections open.
    #[cfg(test)]
    pub fn peers(&self) -> usize {
        self.open.len()
    }
}
