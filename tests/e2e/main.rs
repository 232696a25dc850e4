//! The end-to-end suite: one test binary driving the built `berth` against real
//! components (registry, runc/crun, CNI, git). Each area has its own module.

mod registry;
