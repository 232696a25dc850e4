//! Reconcile: from desired and actual state to the steps that converge the host.
//!
//! The heart is [`plan()`], a pure function (DESIGN.md §1): it takes the desired state
//! of this node, a scan of what runs, the policy's decisions, recent exits and the
//! current time as arguments, and returns a [`Plan`] — ordered steps, each with a human
//! reason and the earlier steps it needs. It does no I/O, reads no clock and is not
//! async; the [`executor`] runs the steps and makes no choices of its own.
//!
//! - [`model`]: the input and output types, and the executor's contract per action;
//! - [`plan()`] (`plan.rs`: the phases), with `fate.rs` (what becomes of each
//!   container), `objects.rs` (networks and volumes), `diff.rs` (which spec field
//!   changed) and `facts.rs` (what is read out of specs and instances);
//! - [`order`]: `depends_on` order; [`backoff`]: crash-loop backoff;
//! - [`print`]: the human form of a plan (its JSON is its serde form);
//! - [`gather`]: the planner's inputs, from the spec tree, the stores and a scan;
//! - [`executor`]: the steps run against the [`host`] (what each does on this machine),
//!   images made ready first by [`images`]; [`outcome`]: one result per container;
//! - [`pass`]: one whole pass (plan, apply) as a library; [`operator`]: `berth stop`,
//!   `start`, `restart`, `rm`.
//!
//! Decisions a user would otherwise have to guess:
//! - An operator stop (`berth stop`) is respected until `berth start`: the container is
//!   not started, and if it was running it is stopped. An update still replaces it (the
//!   old instance goes, the new one is created) but leaves it stopped, as Docker leaves
//!   a stopped container stopped when it is recreated.
//! - A blocked (enforce mode), held (a dependency cannot run) or not-evaluated container
//!   is neither created nor updated; its running instance keeps running, an exited one
//!   is restarted per the restart policy it was created with (it is the last known
//!   good), and a `report` step says why. With `policy.on_running_violation = "stop"`, a
//!   running instance whose unchanged spec the policy now blocks is stopped (not
//!   removed); an older version kept because its update is blocked is not, since its
//!   own spec was not the one evaluated.
//! - A dependency is satisfied when it runs after the plan, or has completed (exited 0
//!   and not restarted, as an init job does). Otherwise the dependent is held.
//! - An unhealthy running container is stopped and started again per its restart
//!   policy (`always`, `on-failure`; not `no`), as Kubernetes treats a failing liveness
//!   probe: the stop counts as an exit now in the crash-loop backoff that holds the
//!   start. Health also gates dependents' starts and `start-first` handovers.
//! - `start-first` applies only when the old instance runs, the container has no host
//!   ports, is not operator-stopped and none of its networks is being recreated;
//!   otherwise the update is `stop-first`.
//! - An instance in an unknown state is stopped before it is started again, so that two
//!   copies never run (kubelet's rule).
//! - An update that replaces a running instance is verified: the new instance must run
//!   (and be healthy, with a health check) within `update_timeout`. The replaced one is
//!   kept (stopped, for `stop-first`) until then; a failed update is marked at its
//!   revision and rolled back to it (`rollback`), and not tried again at that revision
//!   unless the pass is asked to (`berth apply`, `berth reconcile`).

pub mod agent_state;
pub mod backoff;
pub mod bindcheck;
pub mod controller;
mod diff;
pub mod events;
pub mod executor;
mod facts;
mod fate;
pub mod follow;
pub mod gather;
pub mod gc;
pub mod host;
pub mod images;
pub mod model;
mod objects;
pub mod operator;
pub mod order;
pub mod outcome;
pub mod pass;
mod plan;
pub mod print;
pub mod prober;
pub mod rollback;
pub mod rows;
pub mod worker;

#[cfg(test)]
mod fake_host;
#[cfg(test)]
mod golden_tests;

pub use model::*;
pub use plan::plan;
