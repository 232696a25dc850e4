//! Images: references, registry client, content store, verified unpack and signatures.

// Verification is called by `berth image verify` and the executor, signing by `berth sign`,
// once the registry client lands; until then only `berth key generate` uses this module.
#[allow(dead_code, unused_imports)]
pub mod signature;
// Not yet called by the CLI; the allow goes when `berth image unpack` wires them in.
#[allow(dead_code)]
pub mod snapshot;
#[allow(dead_code)]
pub mod unpack;
