//! `berth-policy`: the node owner's security policy (DESIGN.md §5) and the audit
//! reports fleet owners and CI read.
//!
//! Pure, like `berth-spec`: a [`Policy`] (a shipped profile or a policy file, with
//! waivers) is bound to the node's [`HostContext`] and today's [`Date`] in an
//! [`Evaluator`]; [`Evaluator::evaluate`] turns one container plus the [`Facts`] known
//! at that point into [`Finding`]s. `berth audit` calls it with default facts
//! (offline); the executor calls it again with the resolved uid and the signature
//! outcome and applies [`admits`]. [`report`] assembles and renders the audit report
//! (text, JSON, SARIF 2.1.0, JUnit XML).

mod checks;
pub mod evaluate;
pub mod finding;
pub mod hostpath;
pub mod policy;
pub mod report;
pub mod rule;

pub use checks::{
    SAFE_SYSCTLS, SECRET_KEY_PARTS, capability_name, is_secret_env, registry_allowed,
};
pub use evaluate::{
    Date, Evaluator, Facts, HostContext, RunningAction, SignatureFact, admits, running_action,
};
pub use finding::{Change, Finding, Status};
pub use policy::{DEFAULT_PROFILE, PROFILES, Policy, RuleConfig, Severity, check_waivers};
pub use report::Report;
pub use rule::Rule;

#[cfg(test)]
mod tests;
