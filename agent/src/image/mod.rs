//! Images: references, registry client, content store, verified unpack and signatures.
