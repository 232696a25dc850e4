//! Each rule: the compliant base passes, a violating spec fails, plus the verdicts the
//! issue pins.

use super::*;
use crate::evaluate::SignatureFact;
use crate::policy::Severity;

#[test]
fn compliant_base_has_only_the_signature_not_checked() {
    let fs = findings_with(&restricted(), &spec(&[], ""));
    let got: Vec<(Rule, Status)> = fs.iter().map(|f| (f.rule, f.status)).collect();
    assert_eq!(got, vec![(Rule::ImageSignature, Status::NotChecked)]);
}

#[test]
fn run_as_non_root() {
    let r = Rule::RunAsNonRoot;
    assert_eq!(
        verdicts(r, &spec(&[("user", "\"0:1000\"")], "")),
        vec![v("user")]
    );
    assert_eq!(
        verdicts(r, &spec(&[("user", "\"root\"")], "")),
        vec![v("user")]
    );
    assert_eq!(
        verdicts(r, &spec(&[("user", "\"0\"")], "")),
        vec![v("user")]
    );
    assert_eq!(verdicts(r, &spec(&[("user", "")], "")), vec![v("user")]);
    assert_eq!(
        verdicts(r, &spec(&[("user", "\"app\"")], "")),
        vec![(Status::NotChecked, "user".into())]
    );
    assert!(verdicts(r, &spec(&[("user", "\"1000:0\"")], "")).is_empty());
    assert!(verdicts(r, &spec(&[("user", "\"1000\"")], "")).is_empty());
}

/// `00`, `+0`, `-0` are uid 0 to runc and to the agent's resolution (both read ids
/// like Go's `Atoi`); audit must call them root too, or a merge-request gate passes a
/// root container.
#[test]
fn numeric_forms_of_uid_zero_run_as_root() {
    for user in ["00:00", "00", "+0:+0", "-0", "+0", "0000:1000"] {
        assert_eq!(
            verdicts(
                Rule::RunAsNonRoot,
                &spec(&[("user", &format!("\"{user}\""))], "")
            ),
            vec![v("user")],
            "{user}"
        );
    }
    for user in ["+10001:+10001", "010001:010001"] {
        let text = spec(&[("user", &format!("\"{user}\""))], "");
        assert!(verdicts(Rule::RunAsNonRoot, &text).is_empty(), "{user}");
        assert!(verdicts(Rule::NonRootGroup, &text).is_empty(), "{user}");
    }
    for user in ["00:00", "+0:+0", "1000:-0", "1000:000"] {
        assert_eq!(
            verdicts(
                Rule::NonRootGroup,
                &spec(&[("user", &format!("\"{user}\""))], "")
            ),
            vec![v("user")],
            "{user}"
        );
    }
}

#[test]
fn run_time_facts_decide_names() {
    let policy = restricted();
    let host = HostContext::default();
    let ev = Evaluator::new(&policy, &host, today());
    let c = parse(&spec(&[("user", "\"app\"")], ""));
    let with = |uid, gid| Facts {
        resolved_uid: Some(uid),
        resolved_gid: Some(gid),
        signature: SignatureFact::Verified,
    };
    assert!(ev.evaluate(&c, &with(1000, 1000)).is_empty());
    let root: Vec<(Rule, Status)> = ev
        .evaluate(&c, &with(0, 0))
        .iter()
        .map(|f| (f.rule, f.status))
        .collect();
    assert_eq!(
        root,
        vec![
            (Rule::RunAsNonRoot, Status::Violation),
            (Rule::NonRootGroup, Status::Violation)
        ]
    );
    let bad_sig = Facts {
        signature: SignatureFact::Failed("no signature from a trusted key".into()),
        ..with(1000, 1000)
    };
    let f = ev.evaluate(&c, &bad_sig);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].rule, f[0].status),
        (Rule::ImageSignature, Status::Violation)
    );
}

#[test]
fn non_root_group() {
    let r = Rule::NonRootGroup;
    assert_eq!(
        verdicts(r, &spec(&[("user", "\"1000:0\"")], "")),
        vec![v("user")]
    );
    assert_eq!(
        verdicts(r, &spec(&[("user", "\"1000:root\"")], "")),
        vec![v("user")]
    );
    assert!(verdicts(r, &spec(&[("user", "\"0:1000\"")], "")).is_empty());
    // Without `user`, the image's group 0 is named as the image's default, not `user = ""`.
    let policy = restricted();
    let host = HostContext::default();
    let ev = Evaluator::new(&policy, &host, today());
    let facts = Facts {
        resolved_uid: Some(1000),
        resolved_gid: Some(0),
        signature: SignatureFact::Verified,
    };
    let f = ev.evaluate(&parse(&spec(&[("user", "")], "")), &facts);
    let group: Vec<&str> = f
        .iter()
        .filter(|f| f.rule == r)
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(group.len(), 1, "{f:?}");
    assert!(
        group[0].starts_with("no `user`: the image's default user runs with primary group 0"),
        "{group:?}"
    );
    assert!(!group[0].contains("user = \"\""), "{group:?}");
    assert_eq!(
        verdicts(r, &spec(&[("user", "\"1000\"")], "")),
        vec![(Status::NotChecked, "user".into())]
    );
}

#[test]
fn drop_all_capabilities() {
    let r = Rule::DropAllCapabilities;
    assert!(verdicts(r, &spec(&[("cap_drop", "[\"all\"]")], "")).is_empty());
    assert_eq!(
        verdicts(r, &spec(&[("cap_drop", "")], "")),
        vec![v("cap_drop")]
    );
    assert_eq!(
        verdicts(r, &spec(&[("cap_drop", "[\"NET_RAW\"]")], "")),
        vec![v("cap_drop")]
    );
}

#[test]
fn allowed_capabilities() {
    let r = Rule::AllowedCapabilities;
    assert!(verdicts(r, &spec(&[("cap_add", "[\"NET_BIND_SERVICE\"]")], "")).is_empty());
    assert!(verdicts(r, &spec(&[("cap_add", "[\"cap_net_bind_service\"]")], "")).is_empty());
    assert_eq!(
        verdicts(
            r,
            &spec(
                &[("cap_add", "[\"NET_BIND_SERVICE\", \"CAP_SYS_ADMIN\"]")],
                ""
            )
        ),
        vec![v("cap_add[1]")]
    );
    let baseline = Policy::profile("baseline").unwrap();
    let caps = |c: &str| {
        findings_with(&baseline, &spec(&[("cap_add", c)], ""))
            .into_iter()
            .filter(|f| f.rule == r)
            .count()
    };
    assert_eq!(caps("[\"CHOWN\", \"SETUID\", \"KILL\"]"), 0);
    assert_eq!(caps("[\"NET_RAW\"]"), 1);
}

#[test]
fn image_digest_pinned() {
    let r = Rule::ImageDigestPinned;
    let pinned = format!("\"r/x:1.0@{DIGEST}\"");
    assert!(verdicts(r, &spec(&[("image", &pinned)], "")).is_empty());
    assert_eq!(
        verdicts(r, &spec(&[("image", "\"r/x:1.0\"")], "")),
        vec![v("image")]
    );
    assert_eq!(
        verdicts(r, &spec(&[("image", "\"nginx\"")], "")),
        vec![v("image")]
    );
}

#[test]
fn allowed_registries() {
    let allow = |list: &[&str]| {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        move |name: &str| crate::registry_allowed(name, &list)
    };
    assert!(allow(&["*"])("docker.io/library/nginx"));
    assert!(allow(&["registry.example.com/shop"])(
        "registry.example.com/shop/web"
    ));
    assert!(!allow(&["registry.example.com/shop"])(
        "registry.example.com/shopping/web"
    ));
    assert!(allow(&["registry.example.com/"])(
        "registry.example.com/a/b"
    ));
    assert!(allow(&["*.example.com/*"])("registry.example.com/a"));
    assert!(!allow(&[])("registry.example.com/a"));
    let text = "[rules]\nallowed-registries = { severity = \"error\", allow = [\"registry.example.com/shop\"] }\n";
    let policy = Policy::parse("p.toml", text).unwrap();
    let got = |img: &str| -> Vec<Status> {
        findings_with(&policy, &spec(&[("image", img)], ""))
            .into_iter()
            .filter(|f| f.rule == Rule::AllowedRegistries)
            .map(|f| f.status)
            .collect()
    };
    assert!(got(&format!("\"registry.example.com/shop/app@{DIGEST}\"")).is_empty());
    assert_eq!(
        got(&format!("\"busybox@{DIGEST}\"")),
        vec![Status::Violation]
    );
}

#[test]
fn image_signature_not_checked_offline() {
    let r = Rule::ImageSignature;
    assert_eq!(
        verdicts(r, &spec(&[], "")),
        vec![(Status::NotChecked, "image".into())]
    );
}

#[test]
fn no_privileged_no_host_network_seccomp_nnp() {
    assert_eq!(
        verdicts(Rule::NoPrivileged, &spec(&[("privileged", "true")], "")),
        vec![v("privileged")]
    );
    assert!(verdicts(Rule::NoPrivileged, &spec(&[("privileged", "false")], "")).is_empty());
    assert_eq!(
        verdicts(
            Rule::NoHostNetwork,
            &spec(&[("network_mode", "\"host\"")], "")
        ),
        vec![v("network_mode")]
    );
    assert!(
        verdicts(
            Rule::NoHostNetwork,
            &spec(&[("network_mode", "\"none\"")], "")
        )
        .is_empty()
    );
    assert_eq!(
        verdicts(
            Rule::SeccompConfined,
            &spec(&[("seccomp", "\"unconfined\"")], "")
        ),
        vec![v("seccomp")]
    );
    assert!(
        verdicts(
            Rule::SeccompConfined,
            &spec(&[("seccomp", "\"default\"")], "")
        )
        .is_empty()
    );
    assert_eq!(
        verdicts(
            Rule::NoNewPrivileges,
            &spec(&[("no_new_privileges", "false")], "")
        ),
        vec![v("no_new_privileges")]
    );
    assert!(
        verdicts(
            Rule::NoNewPrivileges,
            &spec(&[("no_new_privileges", "true")], "")
        )
        .is_empty()
    );
}

fn bind(path: &str) -> String {
    format!("[[container.app.mounts]]\nbind = \"{path}\"\ntarget = \"/data\"\n")
}

#[test]
fn allowed_host_paths() {
    let r = Rule::AllowedHostPaths;
    assert_eq!(
        verdicts(r, &spec(&[], &bind("/run/../var/run/docker.sock"))),
        vec![v("mounts[0].bind")]
    );
    assert_eq!(
        verdicts(r, &spec(&[], &bind("/etc/"))),
        vec![v("mounts[0].bind")]
    );
    // restricted allows no binds at all
    assert_eq!(
        verdicts(r, &spec(&[], &bind("/srv/media"))),
        vec![v("mounts[0].bind")]
    );
    let baseline = Policy::profile("baseline").unwrap();
    let base = |p: &str| -> usize {
        findings_with(&baseline, &spec(&[], &bind(p)))
            .into_iter()
            .filter(|f| f.rule == r && f.status != Status::NotChecked)
            .count()
    };
    assert_eq!(base("/srv/media"), 0);
    // Allowed as written, and checked again on the host at apply.
    let allowed: Vec<_> = findings_with(&baseline, &spec(&[], &bind("/srv/media")))
        .into_iter()
        .filter(|f| f.rule == r)
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0].status, Status::NotChecked);
    assert!(
        allowed[0].message.contains("checked again at apply"),
        "{}",
        allowed[0].message
    );
    assert_eq!(base("/var"), 1, "contains /var/run/docker.sock");
    assert_eq!(base("/var/lib/berth/volumes"), 1, "berth's state dir");
    assert_eq!(base("//etc//./ssl"), 1);
    let messages: Vec<String> = findings_with(
        &restricted(),
        &spec(&[], &bind("/run/../var/run/docker.sock")),
    )
    .into_iter()
    .filter(|f| f.rule == r)
    .map(|f| f.message)
    .collect();
    assert_eq!(
        messages,
        vec![
            "bind source `/run/../var/run/docker.sock` (`/var/run/docker.sock`) is on the host-path deny list (`/var/run/docker.sock`)"
        ]
    );
}

#[test]
fn allowed_devices() {
    let r = Rule::AllowedDevices;
    assert!(verdicts(r, &spec(&[], "")).is_empty());
    assert_eq!(
        verdicts(
            r,
            &spec(&[("devices", "[\"/dev/ttyUSB0:/dev/ttyUSB0:rw\"]")], "")
        ),
        vec![v("devices[0]")]
    );
    let text = "[rules]\nallowed-devices = { severity = \"error\", allow = [\"/dev/ttyUSB*\"] }\n";
    let policy = Policy::parse("p.toml", text).unwrap();
    let n = findings_with(
        &policy,
        &spec(&[("devices", "[\"/dev/ttyUSB0\", \"/dev/mem\"]")], ""),
    )
    .into_iter()
    .filter(|f| f.rule == r)
    .map(|f| f.key)
    .collect::<Vec<_>>();
    assert_eq!(n, vec!["devices[1]"]);
}

#[test]
fn safe_sysctls() {
    let r = Rule::SafeSysctls;
    let ok = "{ \"net.ipv4.ip_unprivileged_port_start\" = \"0\" }";
    assert!(verdicts(r, &spec(&[("sysctls", ok)], "")).is_empty());
    assert_eq!(
        verdicts(
            r,
            &spec(&[("sysctls", "{ \"kernel.msgmax\" = \"65536\" }")], "")
        ),
        vec![v("sysctls.kernel.msgmax")]
    );
    assert_eq!(
        verdicts(
            r,
            &spec(&[("sysctls", ok), ("network_mode", "\"host\"")], "")
        ),
        vec![v("sysctls.net.ipv4.ip_unprivileged_port_start")]
    );
}

#[test]
fn resource_limits() {
    let r = Rule::ResourceLimits;
    assert_eq!(
        verdicts(r, &spec(&[("resources", "{ memory = \"64MiB\" }")], "")),
        vec![v("resources.pids")]
    );
    assert_eq!(
        verdicts(r, &spec(&[("resources", "")], "")),
        vec![v("resources.memory"), v("resources.pids")]
    );
}

#[test]
fn no_secrets_in_env_reports_the_key_never_the_value() {
    let r = Rule::NoSecretsInEnv;
    assert_eq!(
        verdicts(r, &spec(&[("env", "{ DB_PASSWORD = \"x\" }")], "")),
        vec![v("env.DB_PASSWORD")]
    );
    let fs = findings_with(
        &restricted(),
        &spec(&[("env", "{ DB_PASSWORD = \"x\" }")], ""),
    );
    let f = fs.iter().find(|f| f.rule == r).unwrap();
    assert!(!f.message.contains('x'), "{}", f.message);
    assert!(!f.remedy.contains('x'), "{}", f.remedy);
    let env = "{ github_token = \"hunter2-s3cr3t\", PASSWORD_FILE = \"/run/secrets/db\", API_KEY = \"\", LOG_LEVEL = \"debug\", my_ApiKey = \"k\" }";
    assert_eq!(
        verdicts(r, &spec(&[("env", env)], "")),
        vec![v("env.github_token"), v("env.my_ApiKey")]
    );
    let json =
        serde_json::to_string(&findings_with(&restricted(), &spec(&[("env", env)], ""))).unwrap();
    assert!(!json.contains("hunter2"));
}

#[test]
fn read_only_rootfs_and_host_ports() {
    assert_eq!(
        verdicts(Rule::ReadOnlyRootfs, &spec(&[("read_only", "")], "")),
        vec![v("read_only")]
    );
    assert_eq!(
        verdicts(
            Rule::HostPortsBound,
            &spec(
                &[(
                    "ports",
                    "[\"127.0.0.1:8080:80\", \"9000:9000\", \"0.0.0.0:53:53/udp\"]"
                )],
                ""
            )
        ),
        vec![v("ports[1]"), v("ports[2]")]
    );
}

#[test]
fn locations_point_at_the_key_or_its_parent() {
    let text = spec(
        &[
            ("env", "{ A = \"1\", DB_PASSWORD = \"x\" }"),
            ("resources", "{ memory = \"64MiB\" }"),
        ],
        "",
    );
    let fs = findings_with(&restricted(), &text);
    let at = |rule| {
        let f = fs.iter().find(|f| f.rule == rule).unwrap();
        (f.line, f.column)
    };
    let line_of = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    assert_eq!(at(Rule::NoSecretsInEnv), (line_of("env"), 18));
    assert_eq!(at(Rule::ResourceLimits).0, line_of("resources"));
    let fs = findings_with(&restricted(), &spec(&[("user", "")], ""));
    let f = fs.iter().find(|f| f.rule == Rule::RunAsNonRoot).unwrap();
    assert_eq!((f.line, f.column), (1, 12), "the header `[container.app]`");
}

#[test]
fn severities_follow_the_profile() {
    let f = findings_with(&restricted(), &spec(&[("read_only", "")], ""));
    let ro = f.iter().find(|f| f.rule == Rule::ReadOnlyRootfs).unwrap();
    assert_eq!(ro.severity, Severity::Warning);
    let baseline = Policy::profile("baseline").unwrap();
    let f = findings_with(&baseline, &spec(&[("user", "\"0\"")], ""));
    let u = f.iter().find(|f| f.rule == Rule::RunAsNonRoot).unwrap();
    assert_eq!(u.severity, Severity::Warning);
}

/// The not-checked message names what the node verifies signatures against: keys,
/// keyless identities, both, or neither.
#[test]
fn an_unchecked_signature_names_the_node_s_trust() {
    let policy = restricted();
    let c = parse(&spec(&[("user", "\"app\"")], ""));
    let facts = Facts {
        resolved_uid: Some(1000),
        resolved_gid: Some(1000),
        signature: SignatureFact::Unknown,
    };
    for (keys, identities, expected) in [
        (
            false,
            false,
            "no trusted keys are configured (`policy.trusted_keys`), nor keyless identities",
        ),
        (true, false, "against the node's trusted keys"),
        (false, true, "against the node's trusted keyless identities"),
        (
            true,
            true,
            "against the node's trusted keys and keyless identities",
        ),
    ] {
        let host = HostContext {
            trusted_keys: keys,
            trusted_identities: identities,
            ..HostContext::default()
        };
        let ev = Evaluator::new(&policy, &host, today());
        let f = ev.evaluate(&c, &facts);
        let sig: Vec<&str> = f
            .iter()
            .filter(|f| f.rule == Rule::ImageSignature)
            .map(|f| f.message.as_str())
            .collect();
        assert!(sig.len() == 1 && sig[0].contains(expected), "{sig:?}");
    }
    assert!(
        Rule::ImageSignature
            .info()
            .remedy
            .contains("policy.trusted_identities")
    );
}
