//! Images: references, registry client, content store, verified unpack and signatures.
//!
//! - [`registry`]: the OCI distribution client (auth, mirrors, retries, push).
//! - [`manifest`], [`platform`], [`digest`]: pure parsing and selection.
//! - [`store`]: the content-addressed blob store and image records.
//! - [`pull`]: ties them together; returns the record unpack and verify work from.
//! - [`auth`]: docker `config.json` credentials and `WWW-Authenticate` challenges.
//! - [`usage`]: which images and snapshots the containers use (`image rm`, `image
//!   prune` and the agent's garbage collection decide alike).

pub mod auth;
pub mod digest;
pub mod manifest;
pub mod platform;
pub mod prepare;
pub mod pull;
pub mod registry;
pub mod signature;
pub mod snapshot;
pub mod store;
pub mod unpack;
pub mod usage;
