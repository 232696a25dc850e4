//! The Git source (DESIGN.md §1, §4, §7): fetch the node's repository over https, ssh or
//! a local path (`fetch`, with the server's identity checked by `trust`), verify the
//! commit's signature (`signers`, `pgp`, `verify`), check the revision out into its own
//! immutable directory (`checkout`), and record what was applied (`applied`).

pub mod applied;
pub mod checkout;
pub mod fetch;
pub mod mqtt;
pub mod pgp;
pub mod signature;
pub mod signers;
mod trust;
pub mod verify;
pub mod watch;
pub mod webhook;

use std::sync::Once;
use std::time::Duration;

/// libgit2's process-wide network deadlines: connecting, and waiting for data once
/// connected (a server that stops sending fails the fetch instead of hanging it).
/// Set once, before the first fetch.
pub fn set_network_timeouts(connect: Duration, idle: Duration) {
    static ONCE: Once = Once::new();
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    ONCE.call_once(|| {
        // SAFETY: libgit2's options are process-global and not synchronised; this runs
        // once (`Once`), before any fetch, so no libgit2 network operation runs
        // concurrently with it.
        #[allow(unsafe_code)]
        let result = unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect))
                .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(ms(idle)))
        };
        if let Err(e) = result {
            tracing::warn!(target: "source", error = %e.message(), "cannot set libgit2's network timeouts");
        }
    });
}
