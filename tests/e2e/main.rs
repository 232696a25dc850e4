//! The end-to-end suite: one test binary driving the built `berth` against real
//! components (registry, runc/crun, CNI, git). Each area has its own module.
//! The whole binary is test code: helpers may panic on broken prerequisites.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_client;
mod agent_daemon;
mod agent_health;
mod agent_once;
mod agent_rollback;
mod agent_watch;
mod agentcheck;
mod apply;
mod audit;
mod backoff;
mod bundle_offline;
mod cgroups;
mod crash;
mod gc;
mod health;
mod hostile;
mod hostside;
mod keyless;
mod live_audit;
mod metrics;
mod mqtt;
mod network;
mod observe;
mod ops;
mod otlp;
mod outcome;
mod outlive;
mod pass;
mod perms;
mod pgp_commits;
mod plan;
mod reboot;
mod referrers;
mod rollback;
mod secret;
mod signature;
mod source_verify;
mod trust_chain;
mod validate;
mod webhook;

mod registry;
mod runtime;
