//! The keys DESIGN.md §4 added to the node configuration: each is accepted, has its
//! default, and a bad value is a located error; security keys this build cannot
//! enforce are refused, and keys it does not act on are listed.

use std::time::Duration;

use super::*;

fn parse(text: &str) -> NodeConfig {
    match NodeConfig::parse("berth.toml", text) {
        Ok(cfg) => cfg,
        Err(d) => panic!("rejected: {d:?}"),
    }
}

/// The one error `text` gives: (line, column, key, message).
fn error(text: &str) -> (usize, usize, String, String) {
    match NodeConfig::parse("berth.toml", text) {
        Ok(cfg) => panic!("accepted: {cfg:?}"),
        Err(d) => {
            assert_eq!(d.len(), 1, "{d:?}");
            let d = &d[0];
            (
                d.line,
                d.column,
                d.key.clone().unwrap_or_default(),
                d.message.clone(),
            )
        }
    }
}

const SOURCE: &str = "[source]\nurl = \"https://git.example.com/fleet.git\"\n";

#[test]
fn defaults_of_the_new_keys() {
    let cfg = parse("");
    assert_eq!(cfg.agent.mode, AgentMode::Enforce);
    assert_eq!(cfg.runtime.resync, Duration::from_secs(60));
    assert_eq!(cfg.runtime.gc_grace, Duration::from_secs(3600));
    assert_eq!(cfg.telemetry.otlp_queue, 2048);
    assert_eq!(cfg.policy.trusted_root, None);
    assert!(cfg.policy.trusted_identities.is_empty());
    let s = parse(SOURCE).source.expect("source");
    assert_eq!(s.transport, Transport::Https);
    assert_eq!(s.depth, 1);
    assert_eq!(
        (&s.credentials_file, &s.ca_file, &s.ssh_key, &s.known_hosts),
        (&None, &None, &None, &None)
    );
    assert!(s.trusted_pgp_keys.is_empty());
    assert!(s.notify.is_none());
}

#[test]
fn agent_mode() {
    assert_eq!(
        parse("[agent]\nmode = \"observe\"\n").agent.mode,
        AgentMode::Observe
    );
    assert_eq!(
        parse("[agent]\nmode = \"enforce\"\n").agent.mode,
        AgentMode::Enforce
    );
    let (line, col, key, msg) = error("[agent]\nmode = \"audit\"\n");
    assert_eq!((line, col, key.as_str()), (2, 8, "agent.mode"));
    assert!(msg.contains("expected `enforce` or `observe`"), "{msg}");
    let (_, _, _, msg) = error("[agent]\nomde = \"observe\"\n");
    assert!(msg.contains("did you mean `mode`?"), "{msg}");
}

#[test]
fn source_depth() {
    let s = parse(&format!("{SOURCE}depth = 0\n"))
        .source
        .expect("source");
    assert_eq!(s.depth, 0);
    let s = parse(&format!("{SOURCE}depth = 50\n"))
        .source
        .expect("source");
    assert_eq!(s.depth, 50);
    let (line, col, key, msg) = error(&format!("{SOURCE}depth = -1\n"));
    assert_eq!((line, col, key.as_str()), (3, 9, "source.depth"));
    assert!(msg.contains("found -1"), "{msg}");
    let (line, _, key, msg) = error(&format!("{SOURCE}depth = \"1\"\n"));
    assert_eq!((line, key.as_str()), (3, "source.depth"));
    assert!(msg.contains("must be an integer"), "{msg}");
}

#[test]
fn source_url_schemes() {
    for (url, t) in [
        ("https://h/r.git", Transport::Https),
        ("http://127.0.0.1:3000/r.git", Transport::Https),
        ("ssh://git@h/r.git", Transport::Ssh),
        ("git@github.com:acme/fleet.git", Transport::Ssh),
        ("file:///srv/fleet.git", Transport::Local),
        ("/srv/fleet", Transport::Local),
        ("./fleet", Transport::Local),
    ] {
        let cfg = parse(&format!("[source]\nurl = \"{url}\"\n"));
        assert_eq!(cfg.source.expect("source").transport, t, "{url}");
    }
    let (line, col, key, msg) = error("[source]\nurl = \"ftp://h/r.git\"\n");
    assert_eq!((line, col, key.as_str()), (2, 7, "source.url"));
    assert!(msg.contains("scheme `ftp`"), "{msg}");
    let (_, _, _, msg) = error("[source]\nurl = \"https:///r.git\"\n");
    assert!(msg.contains("names no host"), "{msg}");
    // `file://repo` names a host, not a path relative to anything: refused, located.
    for url in [
        "file://repo",
        "file://./repo",
        "file://localhost/srv/fleet.git",
    ] {
        let (line, col, key, msg) = error(&format!("[source]\nurl = \"{url}\"\n"));
        assert_eq!((line, col, key.as_str()), (2, 7, "source.url"), "{msg}");
        assert!(
            msg.contains(&format!("`{url}` is not an absolute file URL"))
                && msg.contains("file:///absolute/path"),
            "{msg}"
        );
    }
}

#[test]
fn source_credentials_match_the_transport() {
    let text = format!(
        "{SOURCE}credentials_file = \"/etc/berth/git-credentials\"\nca_file = \"/etc/berth/git-ca.pem\"\n"
    );
    let s = parse(&text).source.expect("source");
    assert_eq!(
        s.credentials_file,
        Some(PathBuf::from("/etc/berth/git-credentials"))
    );
    assert_eq!(s.ca_file, Some(PathBuf::from("/etc/berth/git-ca.pem")));

    let text = "[source]\nurl = \"git@h:r.git\"\nssh_key = \"/etc/berth/key\"\nknown_hosts = \"/etc/berth/known_hosts\"\n";
    let s = parse(text).source.expect("source");
    assert_eq!(s.ssh_key, Some(PathBuf::from("/etc/berth/key")));
    assert_eq!(s.known_hosts, Some(PathBuf::from("/etc/berth/known_hosts")));

    // Another transport's key is valid and has no effect: a located warning.
    assert!(parse(text).warnings().is_empty());
    let w = parse(&format!("{SOURCE}ssh_key = \"/etc/berth/key\"\n")).warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].key, "source.ssh_key");
    assert_eq!(
        w[0].to_string(),
        "berth.toml:3:1: warning: `source.ssh_key` has no effect with an https URL (`source.url`): it is for ssh URLs"
    );
    let w = parse("[source]\nurl = \"/srv/fleet\"\n\ncredentials_file = \"/c\"\n").warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].at.as_ref().map(|l| l.line), Some(4));
    assert!(w[0].message.contains("no effect with a local URL"), "{w:?}");
    let w =
        parse("[source]\nurl = \"ssh://h/r.git\"\nca_file = \"/a\"\ncredentials_file = \"/c\"\n")
            .warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter().all(|w| w.message.contains("with an ssh URL")),
        "{w:?}"
    );
    let (line, col, key, _) = error(&format!("{SOURCE}known_hosts = \"\"\n"));
    assert_eq!((line, col, key.as_str()), (3, 15, "source.known_hosts"));
}

#[test]
fn source_trusted_pgp_keys() {
    let s = parse(&format!(
        "{SOURCE}trusted_pgp_keys = [\"/etc/berth/ops.asc\", \"/k2.asc\"]\n"
    ))
    .source
    .expect("source");
    assert_eq!(
        s.trusted_pgp_keys,
        vec![
            PathBuf::from("/etc/berth/ops.asc"),
            PathBuf::from("/k2.asc")
        ]
    );
    let (line, col, key, _) = error(&format!(
        "{SOURCE}trusted_pgp_keys = \"/etc/berth/ops.asc\"\n"
    ));
    assert_eq!(
        (line, col, key.as_str()),
        (3, 20, "source.trusted_pgp_keys")
    );
    let (line, col, _, msg) = error(&format!("{SOURCE}trusted_pgp_keys = [\"/a\", \"\"]\n"));
    assert_eq!((line, col), (3, 27));
    assert!(msg.contains("empty path"), "{msg}");
}

#[test]
fn source_notify() {
    let text = format!(
        "{SOURCE}notify = {{ mqtt = \"mqtts://broker.example.com:8883\", topic = \"fleet/config/main\", spread = \"5s\", username = \"edge-042\", password_file = \"/etc/berth/mqtt.pass\", ca_file = \"/etc/berth/mqtt-ca.pem\" }}\n"
    );
    let n = parse(&text).source.expect("source").notify.expect("notify");
    assert_eq!(n.mqtt, "mqtts://broker.example.com:8883");
    assert_eq!(n.topic, "fleet/config/main");
    assert_eq!(n.spread, Duration::from_secs(5));
    assert_eq!(n.username.as_deref(), Some("edge-042"));
    assert_eq!(n.password_file, Some(PathBuf::from("/etc/berth/mqtt.pass")));
    assert_eq!(n.ca_file, Some(PathBuf::from("/etc/berth/mqtt-ca.pem")));

    // As a table, with the default spread.
    let text = format!("{SOURCE}[source.notify]\nmqtt = \"mqtt://10.0.0.1\"\ntopic = \"t\"\n");
    let n = parse(&text).source.expect("source").notify.expect("notify");
    assert_eq!(n.spread, DEFAULT_NOTIFY_SPREAD);
    assert_eq!((n.username, n.password_file, n.ca_file), (None, None, None));

    let (line, col, key, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"https://b\"\ntopic = \"t\"\n"
    ));
    assert_eq!((line, col, key.as_str()), (4, 8, "source.notify.mqtt"));
    assert!(msg.contains("mqtt:// or mqtts://"), "{msg}");
    let (line, _, key, msg) = error(&format!("{SOURCE}[source.notify]\nmqtt = \"mqtt://b\"\n"));
    assert_eq!((line, key.as_str()), (3, "source.notify.topic"));
    assert!(msg.contains("missing"), "{msg}");
    let (line, _, key, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtt://b\"\ntopic = \"fleet/#\"\n"
    ));
    assert_eq!((line, key.as_str()), (5, "source.notify.topic"));
    assert!(msg.contains("wildcards"), "{msg}");
    let (line, col, key, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtt://b\"\ntopic = \"t\"\nspread = \"2 days\"\n"
    ));
    assert_eq!((line, col, key.as_str()), (6, 10, "source.notify.spread"));
    assert!(msg.contains("between 0s and 1h"), "{msg}");
    let (line, _, key, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtt://b\"\ntopic = \"t\"\npassword_file = \"/p\"\n"
    ));
    assert_eq!((line, key.as_str()), (6, "source.notify.password_file"));
    assert!(msg.contains("needs `username`"), "{msg}");
    let (line, _, key, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtt://b\"\ntopic = \"t\"\nca_file = \"/ca\"\n"
    ));
    assert_eq!((line, key.as_str()), (6, "source.notify.ca_file"));
    assert!(msg.contains("mqtts://"), "{msg}");
    let (line, _, _, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtt://b\"\ntopci = \"t\"\n"
    ));
    assert_eq!(line, 5);
    assert!(msg.contains("did you mean `topic`?"), "{msg}");
}

#[test]
fn source_notify_mutual_tls_and_broker_urls() {
    let text = format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtts://b\"\ntopic = \"t\"\nclient_cert = \"/c.pem\"\nclient_key = \"/c.key\"\n"
    );
    let n = parse(&text).source.expect("source").notify.expect("notify");
    assert_eq!(n.client_cert, Some(PathBuf::from("/c.pem")));
    assert_eq!(n.client_key, Some(PathBuf::from("/c.key")));
    let (line, _, key, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtts://b\"\ntopic = \"t\"\nclient_cert = \"/c.pem\"\n"
    ));
    assert_eq!((line, key.as_str()), (6, "source.notify.client_cert"));
    assert!(msg.contains("go together"), "{msg}");
    let d = NodeConfig::parse(
        "berth.toml",
        &format!(
            "{SOURCE}[source.notify]\nmqtt = \"mqtt://b\"\ntopic = \"t\"\nclient_cert = \"/c\"\nclient_key = \"/k\"\n"
        ),
    )
    .expect_err("client certificates on plain mqtt");
    let lines: Vec<_> = d
        .iter()
        .map(|d| (d.line, d.key.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        lines,
        [
            (6, "source.notify.client_cert".into()),
            (7, "source.notify.client_key".into())
        ]
    );
    assert!(d[0].message.contains("mqtts:// broker only"), "{d:?}");
    // A password in the URL is refused, and not repeated.
    let (_, _, key, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"mqtt://u:hunter2@b\"\ntopic = \"t\"\n"
    ));
    assert_eq!(key, "source.notify.mqtt");
    assert!(
        msg.contains("password_file") && !msg.contains("hunter2"),
        "{msg}"
    );

    let b = |u: &str| Broker::parse(u);
    let ok = |tls, host: &str, port| {
        Ok(Broker {
            tls,
            host: host.into(),
            port,
        })
    };
    assert_eq!(b("mqtt://broker"), ok(false, "broker", 1883));
    assert_eq!(b("mqtts://broker/"), ok(true, "broker", 8883));
    assert_eq!(b("mqtts://10.0.0.1:8884"), ok(true, "10.0.0.1", 8884));
    assert_eq!(b("mqtt://[::1]:1999"), ok(false, "::1", 1999));
    assert_eq!(b("mqtt://[::1]"), ok(false, "::1", 1883));
    assert_eq!(
        b("mqtt://[::1]").map(|b| b.url()),
        Ok("mqtt://[::1]:1883".into())
    );
    assert_eq!(b("tcp://b"), Err(BrokerError::Scheme));
    assert_eq!(b("mqtt://b:0"), Err(BrokerError::Port));
    assert_eq!(b("mqtt://b:65536"), Err(BrokerError::Port));
    assert_eq!(b("mqtt://b:x"), Err(BrokerError::Port));
    assert_eq!(b("mqtt://"), Err(BrokerError::Host));
    assert_eq!(b("mqtt://::1:1883"), Err(BrokerError::Host));
    assert_eq!(b("mqtt://b/topic"), Err(BrokerError::Path));
    assert_eq!(b("mqtt://u@b"), Err(BrokerError::UserInfo));
}

#[test]
fn runtime_resync_and_gc_grace() {
    let rt = parse("[runtime]\nresync = \"5m\"\ngc_grace = \"0s\"\n").runtime;
    assert_eq!(rt.resync, Duration::from_secs(300));
    assert_eq!(rt.gc_grace, Duration::ZERO);
    let rt = parse("[runtime]\ngc_grace = \"7days\"\n").runtime;
    assert_eq!(rt.gc_grace, Duration::from_secs(7 * 86_400));
    let (line, col, key, msg) = error("[runtime]\nresync = \"500ms\"\n");
    assert_eq!((line, col, key.as_str()), (2, 10, "runtime.resync"));
    assert!(msg.contains("between 1s and 1day"), "{msg}");
    let (line, col, key, msg) = error("[runtime]\nparallel = 1\ngc_grace = \"later\"\n");
    assert_eq!((line, col, key.as_str()), (3, 12, "runtime.gc_grace"));
    assert!(
        msg.contains("runtime.gc_grace: invalid duration `later`"),
        "{msg}"
    );
}

#[test]
fn restart_and_retry_backoff_keys() {
    let cfg = parse(SOURCE);
    assert_eq!(cfg.runtime.restart_backoff, Duration::from_secs(10));
    assert_eq!(cfg.runtime.restart_backoff_max, Duration::from_secs(300));
    assert_eq!(
        cfg.source.as_ref().map(|s| s.retry_backoff),
        Some(Duration::from_secs(5))
    );
    let cfg = parse(&format!(
        "{SOURCE}retry_backoff = \"2s\"\n[runtime]\nrestart_backoff = \"1s\"\nrestart_backoff_max = \"4s\"\n"
    ));
    assert_eq!(
        cfg.source.map(|s| s.retry_backoff),
        Some(Duration::from_secs(2))
    );
    assert_eq!(cfg.runtime.restart_backoff, Duration::from_secs(1));
    assert_eq!(cfg.runtime.restart_backoff_max, Duration::from_secs(4));
    // Equal is fine: a constant delay.
    let rt = parse("[runtime]\nrestart_backoff = \"30s\"\nrestart_backoff_max = \"30s\"\n").runtime;
    assert_eq!(
        (rt.restart_backoff, rt.restart_backoff_max),
        (Duration::from_secs(30), Duration::from_secs(30))
    );
    // Not keys this build ignores.
    let text = format!(
        "{SOURCE}retry_backoff = \"2s\"\n[runtime]\nrestart_backoff = \"1s\"\nrestart_backoff_max = \"4s\"\n"
    );
    assert!(
        parse(&text).inert().is_empty(),
        "{:?}",
        parse(&text).inert()
    );
}

#[test]
fn bad_backoffs_are_located_errors_naming_their_key() {
    let cases: [(String, (usize, usize, &str), &str); 8] = [
        (
            "[runtime]\nrestart_backoff = \"soon\"\n".into(),
            (2, 19, "runtime.restart_backoff"),
            "runtime.restart_backoff: invalid duration `soon`",
        ),
        (
            "[runtime]\nrestart_backoff = \"0s\"\n".into(),
            (2, 19, "runtime.restart_backoff"),
            "`runtime.restart_backoff` must be between 1s and 1h, found `0s`",
        ),
        (
            "[runtime]\nparallel = 1\nrestart_backoff_max = \"2days\"\n".into(),
            (3, 23, "runtime.restart_backoff_max"),
            "`runtime.restart_backoff_max` must be between 1s and 1day, found `2days`",
        ),
        (
            "[runtime]\nrestart_backoff_max = 30\n".into(),
            (2, 23, "runtime.restart_backoff_max"),
            "`runtime.restart_backoff_max` must be a string",
        ),
        // The cap below the first delay: at the key given last.
        (
            "[runtime]\nrestart_backoff = \"1m\"\nrestart_backoff_max = \"30s\"\n".into(),
            (3, 23, "runtime.restart_backoff_max"),
            "`runtime.restart_backoff_max` (`30s`) must be at least `runtime.restart_backoff` (`1m`)",
        ),
        (
            "[runtime]\nrestart_backoff_max = \"30s\"\nrestart_backoff = \"1m\"\n".into(),
            (3, 19, "runtime.restart_backoff"),
            "`runtime.restart_backoff_max` (`30s`) must be at least `runtime.restart_backoff` (`1m`)",
        ),
        (
            "[runtime]\nrestart_backoff = \"10m\"\n".into(),
            (2, 19, "runtime.restart_backoff"),
            "`runtime.restart_backoff_max` (default `5m`) must be at least `runtime.restart_backoff` (`10m`)",
        ),
        (
            format!("{SOURCE}retry_backoff = \"2h\"\n"),
            (3, 17, "source.retry_backoff"),
            "`source.retry_backoff` must be between 1s and 1h, found `2h`",
        ),
    ];
    for (text, want, msg_start) in cases {
        let (line, col, key, msg) = error(&text);
        assert_eq!((line, col, key.as_str()), want, "{text}: {msg}");
        assert!(msg.starts_with(msg_start), "{text}: {msg}");
    }
    // A bad value is reported once, not again as a cap below the default first delay.
    let (_, _, key, _) =
        error("[runtime]\nrestart_backoff = \"x\"\nrestart_backoff_max = \"5s\"\n");
    assert_eq!(key, "runtime.restart_backoff");
    // The old spelling is an unknown key with a suggestion.
    let (line, _, _, msg) = error("[runtime]\ncrash_backoff = \"5s\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("unknown key `runtime.crash_backoff`"), "{msg}");
}

#[test]
fn policy_trusted_root_and_identities() {
    let text = "[policy]\ntrusted_root = \"/etc/berth/trusted_root.json\"\n\n\
        [[policy.trusted_identities]]\nissuer = \"https://token.actions.githubusercontent.com\"\nsubject_regex = \"^https://github.com/acme/\"\n\n\
        [[policy.trusted_identities]]\nissuer = \"https://accounts.google.com\"\nsubject = \"release@acme.example\"\n";
    let p = parse(text).policy;
    assert_eq!(
        p.trusted_root,
        Some(PathBuf::from("/etc/berth/trusted_root.json"))
    );
    assert_eq!(
        p.trusted_identities,
        vec![
            TrustedIdentity {
                issuer: "https://token.actions.githubusercontent.com".into(),
                subject: SubjectMatch::Regex("^https://github.com/acme/".into()),
            },
            TrustedIdentity {
                issuer: "https://accounts.google.com".into(),
                subject: SubjectMatch::Exact("release@acme.example".into()),
            },
        ]
    );
    let (line, col, key, msg) = error("[policy]\ntrusted_root = 3\n");
    assert_eq!((line, col, key.as_str()), (2, 16, "policy.trusted_root"));
    assert!(msg.contains("must be a string"), "{msg}");
    let (line, col, key, msg) =
        error("[[policy.trusted_identities]]\nissuer = \"http://idp\"\nsubject = \"s\"\n");
    assert_eq!(
        (line, col, key.as_str()),
        (2, 10, "policy.trusted_identities[0].issuer")
    );
    assert!(msg.contains("https://"), "{msg}");
    let (line, _, key, msg) = error(
        "[[policy.trusted_identities]]\nissuer = \"https://idp\"\nsubject = \"s\"\nsubject_regex = \"s.*\"\n",
    );
    assert_eq!(
        (line, key.as_str()),
        (3, "policy.trusted_identities[0].subject")
    );
    assert!(msg.contains("only one of"), "{msg}");
    let (line, _, _, msg) = error("[[policy.trusted_identities]]\nissuer = \"https://idp\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("subject_regex"), "{msg}");
    let (line, _, _, msg) = error("[[policy.trusted_identities]]\nsubject = \"s\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("missing required key"), "{msg}");
    let (_, _, _, msg) =
        error("[[policy.trusted_identities]]\nissuer = \"https://idp\"\nsubjcet = \"s\"\n");
    assert!(msg.contains("did you mean `subject`?"), "{msg}");
}

#[test]
fn telemetry_keys() {
    let t = parse(
        "[telemetry]\notlp_endpoint = \"http://collector:4318\"\nmetrics_listen = \"127.0.0.1:9464\"\notlp_queue = 10\n",
    )
    .telemetry;
    assert_eq!(t.otlp_endpoint.as_deref(), Some("http://collector:4318"));
    assert_eq!(t.metrics_listen.as_deref(), Some("127.0.0.1:9464"));
    assert_eq!(t.otlp_queue, 10);
    let (line, col, key, msg) = error("[telemetry]\notlp_queue = 0\n");
    assert_eq!((line, col, key.as_str()), (2, 14, "telemetry.otlp_queue"));
    assert!(msg.contains("between 1 and"), "{msg}");
    let (line, col, key, msg) = error("[telemetry]\notlp_endpoint = \"grpc://c:4317\"\n");
    assert_eq!(
        (line, col, key.as_str()),
        (2, 17, "telemetry.otlp_endpoint")
    );
    assert!(msg.contains("http:// or https://"), "{msg}");
    // What the agent could not use is refused, and a password is never shown.
    for bad in [
        "grpc://u:s3cret@c:4317",
        "http://u:s3cret@127.0.0.1:99999",
        "http://u:s3cret@bad host:4318",
        "http://u:s3/cret@c:4318",
    ] {
        let (_, _, key, msg) = error(&format!("[telemetry]\notlp_endpoint = \"{bad}\"\n"));
        assert_eq!(key, "telemetry.otlp_endpoint", "{bad}");
        assert!(!msg.contains("s3"), "{msg}");
        assert!(msg.contains("***@"), "{msg}");
    }
    let (_, _, _, msg) = error(&format!(
        "{SOURCE}[source.notify]\nmqtt = \"tcp://u:s3cret@b\"\ntopic = \"t\"\n"
    ));
    assert!(msg.contains("mqtt") && !msg.contains("s3cret"), "{msg}");
    let (line, _, key, _) = error("[telemetry]\nmetrics_listen = \"localhost\"\n");
    assert_eq!((line, key.as_str()), (2, "telemetry.metrics_listen"));
}

#[test]
fn security_keys_this_build_cannot_enforce_are_refused() {
    let text = format!(
        "{SOURCE}allowed_signers = \"/etc/berth/allowed_signers\"\ntrusted_pgp_keys = [\"/k.asc\"]\n\
         [policy]\ntrusted_keys = [\"/k.pub\"]\ntrusted_root = \"/r.json\"\n\
         [[policy.trusted_identities]]\nissuer = \"https://idp\"\nsubject = \"s\"\n"
    );
    let cfg = parse(&text);
    // OpenPGP commit signatures (source/pgp) and keyless image signatures (the trusted
    // root and identities, image/signature/keyless) are enforced: nothing is refused.
    assert!(cfg.unenforced(Caller::Agent).is_empty());
    assert!(cfg.unenforced(Caller::Apply).is_empty());
    assert!(NodeConfig::default().unenforced(Caller::Apply).is_empty());
}

#[test]
fn inert_keys_are_listed_once_in_file_order() {
    let text = format!(
        "[agent]\nmode = \"observe\"\n{SOURCE}allowed_signers = \"/s\"\nwebhook = {{ listen = \"0.0.0.0:9487\", secret_file = \"/w\" }}\n\
         [runtime]\nparallel = 2\nresync = \"1m\"\ngc_grace = \"5m\"\n[telemetry]\notlp_queue = 5\n\
         otlp_endpoint = \"http://c:4318\"\nmetrics_listen = \"127.0.0.1:9464\"\n[node]\nname = \"n\"\n\
         [source.notify]\nmqtt = \"mqtt://10.0.0.1\"\ntopic = \"t\"\n"
    );
    let inert = parse(&text).inert();
    let keys: Vec<(&str, usize)> = inert
        .iter()
        .map(|i| (i.key.as_str(), i.at.as_ref().map_or(0, |l| l.line)))
        .collect();
    // The webhook receiver, the metrics' address, the trace exporter and the MQTT
    // notifications act: none is listed.
    assert_eq!(keys, []);
    assert!(parse("[runtime]\nparallel = 2\n").inert().is_empty());
}

#[test]
fn files_lists_every_named_file_with_its_place() {
    let cfg = parse(concat!(
        "[source]\nurl = \"https://h/r.git\"\ncredentials_file = \"/c\"\n",
        "webhook = { listen = \"0.0.0.0:1\", secret_file = \"/w\" }\n",
        "[policy]\ntrusted_keys = [\"/k1\", \"/k2\"]\n",
        "[registries.\"r.example.com\"]\nauth_file = \"/a\"\n",
        "[secrets]\nidentity = \"/i\"\n",
    ));
    let files: Vec<(String, usize, String)> = cfg
        .files()
        .iter()
        .map(|f| {
            (
                f.key.clone(),
                f.at.as_ref().map_or(0, |l| l.line),
                f.path.display().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, usize, String)> = [
        ("source.credentials_file", 3, "/c"),
        ("source.webhook.secret_file", 4, "/w"),
        ("policy.trusted_keys[0]", 6, "/k1"),
        ("policy.trusted_keys[1]", 6, "/k2"),
        ("registries.r.example.com.auth_file", 8, "/a"),
        ("secrets.identity", 10, "/i"),
    ]
    .iter()
    .map(|(k, l, p)| (k.to_string(), *l, p.to_string()))
    .collect();
    assert_eq!(files, want);
}

#[test]
fn counted_words() {
    assert_eq!(counted(1, "error", "errors"), "1 error");
    assert_eq!(counted(0, "error", "errors"), "0 errors");
    assert_eq!(counted(4, "time", "times"), "4 times");
}

/// A bad duration, size, subnet or mode names its key's path before what is wrong.
#[test]
fn value_errors_name_their_key() {
    let cases = [
        (
            "[runtime]\nlog_max_size = \"huge\"\n",
            "runtime.log_max_size: invalid size `huge`",
        ),
        (
            "[runtime]\ndefault_subnet = \"10.0.0.1/8\"\n",
            "runtime.default_subnet: subnet `10.0.0.1/8` has host bits set",
        ),
        (
            "[runtime]\nresync = \"often\"\n",
            "runtime.resync: invalid duration `often`",
        ),
        (
            "[agent]\nmode = \"strict\"\n",
            "agent.mode: invalid agent mode `strict`",
        ),
        (
            &format!("{SOURCE}interval = \"hourly\"\n"),
            "source.interval: invalid duration `hourly`",
        ),
    ];
    for (text, want) in cases {
        let (_, _, _, msg) = error(text);
        assert!(msg.starts_with(want), "{text}: {msg}");
    }
}

#[test]
fn branch_and_tag_names_git_would_refuse_are_located_errors() {
    for bad in [
        "ma in", "a..b", "-x", "x.lock", "a:b", "x/", ".hidden", "a//b",
    ] {
        let (line, _, key, msg) = error(&format!("{SOURCE}branch = {bad:?}\n"));
        assert_eq!((line, key.as_str()), (3, "source.branch"), "{bad}: {msg}");
        assert!(msg.contains("not a valid Git ref name"), "{bad}: {msg}");
    }
    let (_, _, key, _) = error(&format!("{SOURCE}tag = \"v1 2\"\n"));
    assert_eq!(key, "source.tag");
    for good in ["main", "release/2026.12", "feature-x", "v1.2.3"] {
        parse(&format!("{SOURCE}branch = {good:?}\n"));
    }
    let (_, _, key, msg) = error(&format!("{SOURCE}commit = \"{}\"\n", "a".repeat(64)));
    assert_eq!(key, "source.commit", "{msg}");
}

#[test]
fn an_mqtt_password_in_clear_and_a_node_name_no_topic_can_hold_are_warnings() {
    let cfg = |url: &str, name: &str| {
        parse(&format!(
            "[node]\nname = {name:?}\n{SOURCE}[source.notify]\nmqtt = {url:?}\ntopic = \"fleet/\"\nusername = \"u\"\npassword_file = \"/p\"\n"
        ))
    };
    let w = cfg("mqtt://broker.example.com", "edge").warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].key, "source.notify.password_file");
    assert!(w[0].message.contains("in clear; use mqtts://"), "{w:?}");
    for quiet in [
        "mqtts://broker.example.com",
        "mqtt://127.0.0.1",
        "mqtt://[::1]",
        "mqtt://localhost",
    ] {
        assert!(cfg(quiet, "edge").warnings().is_empty(), "{quiet}");
    }
    let w = cfg("mqtts://b", "site/edge#1").warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (w[0].key.as_str(), w[0].at.as_ref().map(|l| l.line)),
        ("node.name", Some(2))
    );
    assert!(w[0].message.contains("`fleet/nodes/`"), "{w:?}");
}

#[test]
fn credentials_over_plain_http_are_a_warning() {
    let cfg = parse("[source]\nurl = \"http://127.0.0.1:8080/r.git\"\ncredentials_file = \"/c\"\n");
    let w: Vec<String> = cfg.warnings().iter().map(|w| w.message.clone()).collect();
    assert!(w.iter().any(|m| m.contains("travel in clear")), "{w:?}");
    let cfg = parse("[source]\nurl = \"http://u:p@127.0.0.1:8080/r.git\"\n");
    assert_eq!(cfg.warnings().len(), 1);
    assert!(
        parse("[source]\nurl = \"http://127.0.0.1:8080/r.git\"\n")
            .warnings()
            .is_empty()
    );
    assert!(
        parse("[source]\nurl = \"https://h/r.git\"\ncredentials_file = \"/c\"\n")
            .warnings()
            .is_empty()
    );
}

#[test]
fn a_webhook_receiver_needs_its_secret_and_an_address() {
    let cfg = parse(&format!(
        "{SOURCE}webhook = {{ listen = \"127.0.0.1:9487\", secret_file = \"/etc/berth/webhook.secret\" }}\n"
    ));
    let w = cfg.source.and_then(|s| s.webhook).expect("webhook");
    assert_eq!(
        (w.listen.as_str(), w.secret_file.to_str()),
        ("127.0.0.1:9487", Some("/etc/berth/webhook.secret"))
    );
    // An unsigned receiver is refused, at the table, naming the key.
    let (line, col, key, msg) = error(&format!(
        "{SOURCE}interval = \"5m\"\nwebhook = {{ listen = \"0.0.0.0:9487\" }}\n"
    ));
    assert_eq!(
        (line, col, key.as_str()),
        (4, 11, "source.webhook.secret_file"),
        "{msg}"
    );
    assert!(
        msg.starts_with("`source.webhook` needs `secret_file`"),
        "{msg}"
    );
    // In a table of its own, too.
    let (line, _, key, _) = error(&format!(
        "{SOURCE}[source.webhook]\nlisten = \"0.0.0.0:9487\"\n"
    ));
    assert_eq!((line, key.as_str()), (3, "source.webhook.secret_file"));
    let (line, _, key, _) = error(&format!(
        "{SOURCE}webhook = {{ listen = \"0.0.0.0:9487\", secret_file = \"\" }}\n"
    ));
    assert_eq!((line, key.as_str()), (3, "source.webhook.secret_file"));
    let (_, _, key, msg) = error(&format!(
        "{SOURCE}webhook = {{ listen = \"localhost\", secret_file = \"/w\" }}\n"
    ));
    assert_eq!(key, "source.webhook.listen", "{msg}");
    assert!(msg.contains("must be an address:port"), "{msg}");
    // A misspelt key is suggested, not reported missing as well.
    let (_, _, key, msg) = error(&format!(
        "{SOURCE}webhook = {{ listen = \"0.0.0.0:1\", secret_fle = \"/w\" }}\n"
    ));
    assert_eq!(key, "source.webhook.secret_fle", "{msg}");
    assert!(msg.contains("did you mean `secret_file`"), "{msg}");
}

#[test]
fn a_webhook_on_a_node_pinned_to_a_commit_is_a_warning() {
    let webhook = "webhook = { listen = \"127.0.0.1:9487\", secret_file = \"/w\" }\n";
    let pinned = parse(&format!(
        "[source]\nurl = \"https://h/r.git\"\ncommit = \"0123abc\"\n{webhook}"
    ));
    let w = pinned.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].key, "source.webhook");
    let at = w[0].at.as_ref().expect("located");
    assert_eq!((at.line, at.column), (4, 1), "{}", w[0]);
    assert!(
        w[0].message.contains("pinned to commit 0123abc") && w[0].message.contains("never"),
        "{}",
        w[0]
    );
    // Following a branch or a tag, or pinned without a webhook: no warning.
    for text in [
        format!("{SOURCE}{webhook}"),
        format!("[source]\nurl = \"https://h/r.git\"\ntag = \"v1\"\n{webhook}"),
        "[source]\nurl = \"https://h/r.git\"\ncommit = \"0123abc\"\n".to_string(),
    ] {
        assert!(parse(&text).warnings().is_empty(), "{text}");
    }
}

/// Identities without a root, and patterns the agent cannot compile, are located
/// errors (`berth agent --check` must not say ok for a node every pass would fail).
#[test]
fn trusted_identities_need_a_root_and_a_valid_pattern() {
    let (line, _, key, msg) = error(
        "[policy]\nmode = \"enforce\"\n\n[[policy.trusted_identities]]\nissuer = \"https://idp\"\nsubject = \"s\"\n\n[[policy.trusted_identities]]\nissuer = \"https://idp\"\nsubject = \"t\"\n",
    );
    assert_eq!(
        (line, key.as_str()),
        (4, "policy.trusted_identities[0].issuer")
    );
    assert!(msg.contains("needs `policy.trusted_root`"), "{msg}");
    let root = "[policy]\ntrusted_root = \"/r.json\"\n[[policy.trusted_identities]]\nissuer = \"https://idp\"\n";
    for pattern in [
        "(unclosed",
        r"\\p{L}+",
        r"https://github\\.com/acme/.*)|(.*",
    ] {
        let (line, _, key, msg) = error(&format!("{root}subject_regex = \"{pattern}\"\n"));
        assert_eq!(
            (line, key.as_str()),
            (5, "policy.trusted_identities[0].subject_regex"),
            "{pattern}"
        );
        assert!(msg.contains("not a valid regular expression"), "{msg}");
    }
    let p = parse(&format!(
        "{root}subject_regex = \"https://github\\\\.com/acme/[^/]+\"\n"
    ))
    .policy;
    assert_eq!(p.trusted_identities.len(), 1);
}

/// A cosign-style prefix (`^…` with an open end) matches, in berth, only a subject
/// equal to it: a located warning says so; patterns with an end are quiet.
#[test]
fn a_subject_regex_written_as_a_cosign_prefix_is_warned_about() {
    let root = "[policy]\ntrusted_root = \"/r.json\"\n[[policy.trusted_identities]]\nissuer = \"https://idp\"\n";
    let cfg = parse(&format!(
        "{root}subject_regex = \"^https://github.com/kubewarden/\"\n"
    ));
    let w = cfg.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].key, "policy.trusted_identities[0].subject_regex");
    let at = w[0].at.as_ref().expect("located");
    assert_eq!(at.line, 5, "{}", w[0]);
    assert!(
        w[0].message.contains("whole subject") && w[0].message.contains("append `.*`"),
        "{}",
        w[0]
    );
    for pattern in [
        "^https://github.com/kubewarden/.*",
        "^https://github.com/kubewarden/.+",
        "^https://github.com/kubewarden/.*?",
        "^https://github.com/kubewarden/x$",
        "https://github.com/kubewarden/",
        "https://github.com/kubewarden/[^/]+",
    ] {
        let cfg = parse(&format!("{root}subject_regex = \"{pattern}\"\n"));
        assert!(cfg.warnings().is_empty(), "{pattern}: {:?}", cfg.warnings());
    }
    // An escaped end is a literal, not an open end.
    let cfg = parse(&format!("{root}subject_regex = '^https://x/\\.*'\n"));
    assert_eq!(cfg.warnings().len(), 1, "{:?}", cfg.warnings());
}

#[test]
fn metrics_on_an_address_other_than_loopback_are_a_located_warning() {
    let text = "[telemetry]\nmetrics_listen = \"0.0.0.0:9464\"\n";
    let w = parse(text).warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].key, "telemetry.metrics_listen");
    assert_eq!(w[0].at.as_ref().map(|l| l.line), Some(2));
    assert!(
        w[0].message
            .contains("`0.0.0.0:9464` is not a loopback address"),
        "{w:?}"
    );
    for local in ["127.0.0.1:9464", "[::1]:9464"] {
        let text = format!("[telemetry]\nmetrics_listen = \"{local}\"\n");
        assert!(parse(&text).warnings().is_empty(), "{local}");
    }
}
