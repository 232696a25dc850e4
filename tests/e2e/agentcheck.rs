//! `berth agent --check` on a node configuration using every key of DESIGN.md §4: keys
//! this build does not act on yet are warnings naming the key and its place; a security
//! key it cannot enforce (commit or keyless image signatures) makes the agent refuse to
//! run, naming the key, and `berth apply` refuses the image ones.

use berth_e2e::run_berth;

/// Every key of DESIGN.md §4 except the four security keys this build refuses.
const EVERY_KEY: &str = r#"[node]
name = "edge-042"
labels = { site = "berlin", arch = "arm64" }

[source]
url = "https://git.example.com/fleet/config.git"
branch = "main"
path = "fleet"
interval = "30s"
depth = 1
credentials_file = "/etc/berth/git-credentials"
ca_file = "/etc/berth/git-ca.pem"
webhook = { listen = "0.0.0.0:9487", secret_file = "/etc/berth/webhook.secret" }
notify = { mqtt = "mqtts://broker.example.com:8883", topic = "fleet/config/main", spread = "2s", username = "edge-042", password_file = "/etc/berth/mqtt.pass", ca_file = "/etc/berth/mqtt-ca.pem" }

[agent]
mode = "enforce"

[policy]
profile = "restricted"
mode = "enforce"
trusted_keys = ["/etc/berth/keys/release.pub"]

[runtime]
oci_runtime = "auto"
state_dir = "/var/lib/berth"
run_dir = "/run/berth"
default_subnet = "10.88.0.0/16"
log_max_size = "10MiB"
log_max_files = 3
parallel = 4
resync = "60s"
gc_grace = "1h"
pull_connect_timeout = "10s"
pull_idle_timeout = "60s"

[registries."registry.example.com"]
auth_file = "/etc/berth/registry-auth.json"
mirror = "https://mirror.local:5000"
insecure = false

[secrets]
identity = "/etc/berth/age.key"

[telemetry]
otlp_endpoint = "http://collector:4318"
metrics_listen = "127.0.0.1:9464"
otlp_queue = 2048
"#;

/// The keys of [`EVERY_KEY`] this build does not act on, with their lines.
const INERT: &[(&str, usize)] = &[
    ("source.url", 6),
    ("source.branch", 7),
    ("source.path", 8),
    ("source.interval", 9),
    ("source.depth", 10),
    ("source.credentials_file", 11),
    ("source.ca_file", 12),
    ("source.webhook", 13),
    ("source.notify", 14),
    ("agent.mode", 17),
    ("runtime.resync", 32),
    ("runtime.gc_grace", 33),
    ("telemetry.otlp_endpoint", 46),
    ("telemetry.metrics_listen", 47),
    ("telemetry.otlp_queue", 48),
];

fn check(text: &str) -> berth_e2e::Run {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("node.toml"), text).expect("write");
    run_berth(dir.path(), &["agent", "--config", "node.toml", "--check"])
}

#[test]
fn every_design_key_passes_the_check_with_a_warning_for_each_key_not_acted_on() {
    let r = check(EVERY_KEY);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "ok: node configuration node.toml is valid\n");
    let warnings: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(warnings.len(), INERT.len(), "{}", r.stderr);
    for ((key, line), w) in INERT.iter().zip(&warnings) {
        assert!(
            w.starts_with(&format!("node.toml:{line}:"))
                && w.contains(&format!("warning: `{key}` has no effect in this build: ")),
            "expected a warning about `{key}` at line {line}, got: {w}"
        );
    }
    // Keys the build acts on are not warned about.
    for used in [
        "node.name",
        "policy.",
        "runtime.parallel",
        "registries",
        "secrets",
    ] {
        assert!(!r.stderr.contains(&format!("`{used}")), "{}", r.stderr);
    }
}

#[test]
fn a_security_key_this_build_cannot_enforce_refuses_the_agent() {
    let cases = [
        (
            "[source]\nurl = \"https://h/r.git\"\nallowed_signers = \"/etc/berth/allowed_signers\"\n",
            "node.toml:3:1: error: `source.allowed_signers` is set but this build cannot verify commit signatures yet; refusing to run rather than not enforce it",
        ),
        (
            "[source]\nurl = \"https://h/r.git\"\ntrusted_pgp_keys = [\"/etc/berth/ops.asc\"]\n",
            "node.toml:3:1: error: `source.trusted_pgp_keys` is set but this build cannot verify OpenPGP commit signatures yet",
        ),
        (
            "[source]\nurl = \"https://h/r.git\"\n[policy]\ntrusted_root = \"/etc/berth/trusted_root.json\"\n",
            "node.toml:4:1: error: `policy.trusted_root` is set but this build cannot verify keyless (Sigstore) image signatures yet",
        ),
        (
            "[source]\nurl = \"https://h/r.git\"\n[[policy.trusted_identities]]\nissuer = \"https://token.actions.githubusercontent.com\"\nsubject_regex = \"^https://github.com/acme/\"\n",
            "node.toml:3:10: error: `policy.trusted_identities` is set but this build cannot verify keyless (Sigstore) image signatures yet",
        ),
    ];
    for (text, want) in cases {
        let r = check(text);
        assert_eq!(r.code, 1, "{text}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stdout.lines().any(|l| l.starts_with(want)),
            "{text}: want {want}\ngot: {}",
            r.stdout
        );
        assert!(!r.stdout.contains("ok: "), "{}", r.stdout);
    }
    // Every one set: each is named.
    let r = check(&EVERY_KEY.replace(
        "depth = 1\n",
        "depth = 1\nallowed_signers = \"/s\"\ntrusted_pgp_keys = [\"/k.asc\"]\n",
    ));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
}

#[test]
fn apply_and_plan_refuse_a_keyless_signature_key_naming_it_and_its_place() {
    let cases = [
        (
            "[policy]\ntrusted_root = \"/x\"\n",
            "node.toml:2:1: error: `policy.trusted_root` is set but this build cannot verify keyless (Sigstore) image signatures yet",
        ),
        (
            "[[policy.trusted_identities]]\nissuer = \"https://token.actions.githubusercontent.com\"\nsubject_regex = \"^https://github.com/acme/\"\n",
            "node.toml:1:10: error: `policy.trusted_identities` is set but this build cannot verify keyless (Sigstore) image signatures yet",
        ),
    ];
    for (text, want) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("node.toml"), text).expect("write");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).expect("mkdir");
        std::fs::write(
            tree.join("web.toml"),
            "[container.web]\nimage = \"registry.example.com/web:1\"\n",
        )
        .expect("write");
        let state = dir.path().join("state");
        for cmd in ["apply", "plan"] {
            let r = run_berth(
                dir.path(),
                &[
                    "--config",
                    "node.toml",
                    "--state-dir",
                    state.to_str().expect("utf-8"),
                    cmd,
                    "tree",
                ],
            );
            assert_eq!(r.code, 1, "{cmd} {text}: {}{}", r.stdout, r.stderr);
            assert!(
                r.stdout.lines().any(|l| l.starts_with(want)),
                "{cmd} {text}: want {want}\ngot: {}{}",
                r.stdout,
                r.stderr
            );
            // Refused before anything else: no state directory was made.
            assert!(!state.exists(), "{cmd} wrote {}", state.display());
        }
    }
}
