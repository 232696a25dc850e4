//! The host-side half of the `allowed-host-paths` rule: a bind source resolved on the
//! host (symlinks followed, see `storage::binds`) is judged by the same policy, with
//! the same severities, waivers and mode, as the lexical path was when planning.

use std::path::Path;

use berth_policy::evaluate::{Evaluator, Facts};
use berth_policy::rule::Rule;
use berth_spec::node::PolicyMode;
use berth_spec::{Container, MountSource};

use super::model::{Decision, Desired, PolicyDecisions};

/// Judges a bind source after it was resolved on the host.
pub trait BindCheck: Sync {
    /// Why mount number `index` of `c`, whose source resolved to `resolved`, must not
    /// be mounted; `None` when it may.
    fn refuse(&self, c: &Container, index: usize, resolved: &Path) -> Option<String>;
}

/// Judges every bind source of `desired` as it resolves on this host now, so the plan
/// (`berth plan` and the plan `berth apply` executes) already says blocked where the
/// create would refuse; the create checks again, against a link planted in between.
/// A source that cannot be resolved is left to the create, which reports it.
pub fn judge_binds(desired: &Desired, check: &dyn BindCheck, decisions: &mut PolicyDecisions) {
    for (name, dc) in &desired.containers {
        let c = &dc.spec;
        for (i, m) in c.mounts.iter().enumerate() {
            let MountSource::Bind { path } = &m.source else {
                continue;
            };
            let Ok(resolved) = crate::storage::binds::resolve(path) else {
                continue;
            };
            let Some(why) = check.refuse(c, i, &resolved) else {
                continue;
            };
            match decisions.containers.get_mut(name) {
                Some(Decision::Blocked { reasons }) => reasons.push(why),
                _ => {
                    decisions
                        .containers
                        .insert(name.clone(), Decision::Blocked { reasons: vec![why] });
                }
            }
        }
    }
}

/// The node's policy as a [`BindCheck`].
#[derive(Debug)]
pub struct PolicyBinds<'a> {
    pub evaluator: &'a Evaluator<'a>,
    pub mode: PolicyMode,
}

impl BindCheck for PolicyBinds<'_> {
    fn refuse(&self, c: &Container, index: usize, resolved: &Path) -> Option<String> {
        let m = c.mounts.get(index)?;
        let MountSource::Bind { path } = &m.source else {
            return None;
        };
        // The container with this one bind, its source replaced by the resolved path.
        let mut probe = c.clone();
        let mut mount = m.clone();
        mount.source = MountSource::Bind {
            path: resolved.to_string_lossy().into_owned(),
        };
        probe.mounts = vec![mount];
        let findings: Vec<String> = self
            .evaluator
            .evaluate(&probe, &Facts::default())
            .into_iter()
            .filter(|f| f.rule == Rule::AllowedHostPaths && f.is_error())
            .map(|f| f.message)
            .collect();
        if findings.is_empty() {
            return None;
        }
        let why = format!(
            "allowed-host-paths: mounts[{index}].bind `{path}` resolves to `{}` on this host: {}",
            resolved.display(),
            findings.join("; ")
        );
        if self.mode == PolicyMode::Audit {
            tracing::warn!(container = %c.name, "{why} (audit mode: mounted anyway)");
            return None;
        }
        Some(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_policy::evaluate::HostContext;
    use berth_policy::policy::Policy;

    fn container(bind: &str) -> Container {
        let text = format!(
            r#"[container.c]
image = "r.example/x@sha256:{}"
[[container.c.mounts]]
bind = "{bind}"
target = "/data"
"#,
            "a".repeat(64)
        );
        let tree = berth_spec::Tree::from_sources(vec![berth_spec::SourceFile {
            path: "c.toml".into(),
            text,
        }]);
        let checked = berth_spec::check(&tree, None);
        assert!(checked.is_ok(), "{:?}", checked.errors);
        checked.state.containers["c"].clone()
    }

    fn check(policy: &Policy, c: &Container, resolved: &str, mode: PolicyMode) -> Option<String> {
        let host = HostContext::default();
        let today = berth_policy::Date::parse("2026-01-01").unwrap();
        let ev = Evaluator::new(policy, &host, today);
        PolicyBinds {
            evaluator: &ev,
            mode,
        }
        .refuse(c, 0, Path::new(resolved))
    }

    #[test]
    fn a_resolved_path_outside_the_allow_list_is_refused_naming_both_paths() {
        let policy = Policy::parse(
            "node.toml",
            "extends = \"restricted\"\n[rules]\nallowed-host-paths = { severity = \"error\", allow = [\"/srv/shared\"] }\n",
        )
        .unwrap();
        let c = container("/srv/shared/hostroot");
        assert_eq!(
            check(&policy, &c, "/srv/shared/hostroot", PolicyMode::Enforce),
            None
        );
        assert_eq!(
            check(&policy, &c, "/srv/shared/sub/x", PolicyMode::Enforce),
            None
        );
        let why = check(&policy, &c, "/", PolicyMode::Enforce).unwrap();
        assert!(
            why.contains("`/srv/shared/hostroot` resolves to `/`"),
            "{why}"
        );
        assert!(why.contains("deny list"), "{why}");
        let why = check(&policy, &c, "/var/lib/berth", PolicyMode::Enforce).unwrap();
        assert!(why.contains("`/var/lib/berth`"), "{why}");
        let why = check(&policy, &c, "/srv/other", PolicyMode::Enforce).unwrap();
        assert!(why.contains("not inside an allowed host path"), "{why}");
        // Audit mode mounts it (and logs why).
        assert_eq!(check(&policy, &c, "/", PolicyMode::Audit), None);
    }
}
