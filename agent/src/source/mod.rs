//! The Git source (DESIGN.md §1, §4, §7): fetch the node's repository over https, ssh or
//! a local path (`fetch`), verify the commit's signature (`signers`, `verify`), check
//! the revision out into its own immutable directory (`checkout`), and record what was
//! applied (`applied`).

pub mod signers;
pub mod verify;
