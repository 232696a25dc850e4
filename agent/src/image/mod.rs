//! Images: references, registry client, content store, verified unpack and signatures.
//!
//! - [`registry`]: the OCI distribution client (auth, mirrors, retries, push).
//! - [`manifest`], [`platform`], [`digest`]: pure parsing and selection.
//! - [`store`]: the content-addressed blob store and image records.
//! - [`pull`]: ties them together; returns the record unpack and verify work from.
//! - [`auth`]: docker `config.json` credentials and `WWW-Authenticate` challenges.

// Verification is called by `berth image verify` and the executor, signing by `berth sign`,
// once the registry client lands; until then only `berth key generate` uses this module.
#[allow(dead_code, unused_imports)]
pub mod signature;
// Not yet called by the CLI; the allow goes when `berth image unpack` wires them in.
pub mod auth;
pub mod digest;
pub mod manifest;
pub mod platform;
pub mod prepare;
pub mod pull;
pub mod registry;
#[allow(dead_code)]
pub mod snapshot;
pub mod store;
#[allow(dead_code)]
pub mod unpack;
