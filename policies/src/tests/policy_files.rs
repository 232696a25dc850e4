//! Shipped profiles and policy files: completeness, severities, located errors, waivers.

use super::*;
use crate::evaluate::expired;
use crate::policy::{PROFILES, Severity};

#[test]
fn shipped_profiles_are_complete_and_as_designed() {
    for (name, _) in PROFILES {
        let p = Policy::profile(name).unwrap_or_else(|| panic!("profile {name} does not parse"));
        assert_eq!(p.rules.len(), Rule::ALL.len(), "{name} sets every rule");
    }
    let r = restricted();
    let warn = [
        Rule::NonRootGroup,
        Rule::ReadOnlyRootfs,
        Rule::HostPortsBound,
    ];
    for rule in Rule::ALL {
        let want = if warn.contains(&rule) {
            Severity::Warning
        } else {
            Severity::Error
        };
        assert_eq!(r.rule(rule).severity, want, "restricted {rule}");
    }
    assert_eq!(
        r.rule(Rule::AllowedCapabilities).allow,
        vec!["NET_BIND_SERVICE"]
    );
    assert_eq!(r.rule(Rule::AllowedRegistries).allow, vec!["*"]);
    assert!(r.rule(Rule::AllowedHostPaths).allow.is_empty());
    let b = Policy::profile("baseline").unwrap();
    let errors = [
        Rule::NoPrivileged,
        Rule::NoHostNetwork,
        Rule::AllowedHostPaths,
        Rule::AllowedCapabilities,
        Rule::AllowedDevices,
        Rule::SafeSysctls,
        Rule::SeccompConfined,
    ];
    for rule in Rule::ALL {
        let want = if errors.contains(&rule) {
            Severity::Error
        } else {
            Severity::Warning
        };
        assert_eq!(b.rule(rule).severity, want, "baseline {rule}");
    }
    assert_eq!(b.rule(Rule::AllowedHostPaths).allow, vec!["/"]);
    let caps = b.rule(Rule::AllowedCapabilities).allow;
    assert_eq!(caps.len(), 13);
    assert!(!caps.contains(&"NET_RAW".to_string()));
}

#[test]
fn a_policy_file_extends_a_profile_and_overrides_rules() {
    let text = "extends = \"baseline\"\n[rules]\nread-only-rootfs = \"off\"\nrun-as-non-root = \"error\"\n";
    let p = Policy::parse("node-policy.toml", text).unwrap();
    assert_eq!(p.name, "node-policy.toml");
    assert_eq!(p.rule(Rule::ReadOnlyRootfs).severity, Severity::Off);
    assert_eq!(p.rule(Rule::RunAsNonRoot).severity, Severity::Error);
    assert_eq!(p.rule(Rule::AllowedHostPaths).allow, vec!["/"]);
    assert!(!p.enabled().contains(&Rule::ReadOnlyRootfs));
    // without `extends`, unset rules keep the restricted settings
    let p = Policy::parse("p.toml", "[rules]\nread-only-rootfs = \"error\"\n").unwrap();
    assert_eq!(p.rule(Rule::DropAllCapabilities).severity, Severity::Error);
}

fn errors(text: &str) -> Vec<String> {
    Policy::parse("p.toml", text)
        .map(|_| Vec::new())
        .unwrap_or_else(|d| d.iter().map(ToString::to_string).collect())
}

#[test]
fn policy_file_errors_are_located() {
    assert_eq!(
        errors("[rules]\nrun-as-nonroot = \"error\"\n"),
        vec![
            "p.toml:2:1: error: unknown rule `rules.run-as-nonroot`, did you mean `run-as-non-root`?"
        ]
    );
    assert_eq!(
        errors("[rules]\nread-only-rootfs = \"fatal\"\n"),
        vec![
            "p.toml:2:20: error: invalid severity `fatal` for `rules.read-only-rootfs`: expected `error`, `warning` or `off`"
        ]
    );
    assert_eq!(
        errors("[rules]\nno-privileged = { severity = \"error\", allow = [] }\n"),
        vec!["p.toml:2:39: error: rule `no-privileged` takes no `allow` list"]
    );
    assert_eq!(
        errors("[rules]\nallowed-devices = \"error\"\n"),
        vec![
            "p.toml:2:19: error: `rules.allowed-devices` needs an allow list: write `{ severity = \"error\", allow = [...] }`"
        ]
    );
    assert_eq!(
        errors("extend = \"baseline\"\n"),
        vec!["p.toml:1:1: error: unknown key `extend`, did you mean `extends`?"]
    );
    assert_eq!(
        errors("[[waiver]]\nrule = \"no-host-netwrk\"\nobjects = [\"a\"]\nreason = \"r\"\n"),
        vec![
            "p.toml:1:1: error: waiver for unknown rule `no-host-netwrk`, did you mean `no-host-network`?"
        ]
    );
    assert_eq!(
        errors("[rules\n"),
        vec!["p.toml:1:7: error: TOML syntax error: unclosed table, expected `]`"]
    );
}

fn waiver(rule: &str, objects: &[&str], expires: Option<&str>) -> berth_spec::node::Waiver {
    berth_spec::node::Waiver {
        rule: rule.into(),
        objects: objects.iter().map(|s| s.to_string()).collect(),
        reason: "needed".into(),
        expires: expires.map(Into::into),
        origin: Default::default(),
    }
}

#[test]
fn waivers_waive_until_they_expire() {
    let mut p = restricted();
    p.waivers = vec![
        waiver("read-only-rootfs", &["ap*"], Some("2026-11-22")),
        waiver("resource-limits", &["app"], Some("2026-11-21")),
        waiver("image-signature", &["app"], None),
    ];
    let text = spec(&[("read_only", ""), ("resources", "")], "");
    let fs = findings_with(&p, &text);
    let st = |rule| -> Vec<Status> {
        fs.iter()
            .filter(|f| f.rule == rule)
            .map(|f| f.status)
            .collect()
    };
    assert_eq!(
        st(Rule::ReadOnlyRootfs),
        vec![Status::Waived],
        "applies through its day"
    );
    assert_eq!(
        st(Rule::ResourceLimits),
        vec![Status::Violation; 2],
        "expired yesterday"
    );
    assert_eq!(
        st(Rule::ImageSignature),
        vec![Status::NotChecked],
        "only violations are waived"
    );
    let host = HostContext::default();
    let ev = Evaluator::new(&p, &host, today());
    let expired: Vec<&str> = ev
        .expired_waivers()
        .iter()
        .map(|w| w.rule.as_str())
        .collect();
    assert_eq!(expired, vec!["resource-limits"]);
    let ro = fs.iter().find(|f| f.rule == Rule::ReadOnlyRootfs).unwrap();
    assert_eq!(ro.waiver_reason.as_deref(), Some("needed"));
}

#[test]
fn dates() {
    assert_eq!(Date::from_unix_days(0).to_string(), "1970-01-01");
    assert_eq!(Date::from_unix_days(20_414).to_string(), "2025-11-22");
    assert_eq!(Date::from_unix_days(11_016).to_string(), "2000-02-29");
    assert_eq!(
        Date::parse("2027-06-30T00:00:00Z").map(|d| d.to_string()),
        Some("2027-06-30".into())
    );
    assert!(expired(&waiver("x", &[], Some("not a date")), today()));
}

#[test]
fn enforce_blocks_error_violations_audit_does_not() {
    use berth_spec::node::{OnRunningViolation, PolicyMode};
    let fs = findings_with(&restricted(), &spec(&[("privileged", "true")], ""));
    assert!(!crate::admits(&fs, PolicyMode::Enforce));
    assert!(crate::admits(&fs, PolicyMode::Audit));
    let warn_only = findings_with(&restricted(), &spec(&[("read_only", "")], ""));
    assert!(crate::admits(&warn_only, PolicyMode::Enforce));
    assert_eq!(
        crate::running_action(&fs, PolicyMode::Enforce, OnRunningViolation::Report),
        Some(crate::RunningAction::KeepAndReport)
    );
    assert_eq!(
        crate::running_action(&fs, PolicyMode::Enforce, OnRunningViolation::Stop),
        Some(crate::RunningAction::Stop)
    );
    assert_eq!(
        crate::running_action(&fs, PolicyMode::Audit, OnRunningViolation::Stop),
        None
    );
}
