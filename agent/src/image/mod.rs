//! Images: references, registry client, content store, verified unpack and signatures.

// Verification is called by `berth image verify` and the executor, signing by `berth sign`,
// once the registry client lands; until then only `berth key generate` uses this module.
#[allow(dead_code, unused_imports)]
pub mod signature;
