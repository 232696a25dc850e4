//! Images: references, registry client, content store, verified unpack and signatures.

// Not yet called by the CLI; the allow goes when `berth image unpack` wires them in.
#[allow(dead_code)]
pub mod snapshot;
#[allow(dead_code)]
pub mod unpack;
