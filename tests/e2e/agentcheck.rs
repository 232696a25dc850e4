//! `berth agent --check` on a node configuration using every key of DESIGN.md §4: keys
//! this build does not act on yet are warnings naming the key and its place; a security
//! key it cannot enforce (commit or keyless image signatures) makes the agent refuse to
//! run, naming the key, and `berth apply` refuses the image ones; so does a webhook
//! secret it cannot use, and a webhook on a node pinned to a commit is a warning.
//! Commit signing keys that are there but that the agent cannot use (a secret OpenPGP
//! key exported by real `gpg`, garbage in `source.trusted_pgp_keys` or in
//! `source.allowed_signers`) are located errors; missing ones stay warnings.

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
notify = { mqtt = "mqtts://broker.example.com:8883", topic = "fleet/config/main", spread = "2s", username = "edge-042", password_file = "/etc/berth/mqtt.pass", ca_file = "/etc/berth/mqtt-ca.pem", client_cert = "/etc/berth/mqtt-client.pem", client_key = "/etc/berth/mqtt-client.key" }

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
const INERT: &[(&str, usize)] = &[];

/// DESIGN.md §4's sample configuration, as written there.
const DESIGN_SAMPLE: &str = r#"[node]
name = "edge-042"                         # default: the hostname
labels = { site = "berlin", arch = "arm64" }

[source]
url = "https://git.example.com/fleet/config.git"   # https, ssh, file://, or a local path
branch = "main"                                    # or tag = "...", or commit = "..."
path = "fleet"                                     # sub-directory of the repository holding specs
interval = "30s"                                   # poll interval (jittered); webhooks trigger at once
depth = 1                                          # shallow fetch (0 = full history; file:// and local paths always full)
credentials_file = "/etc/berth/git-credentials"    # https: "token" or "user:password", one line
ca_file = "/etc/berth/git-ca.pem"                  # https: extra CA for a private server
ssh_key = "/etc/berth/git-deploy-key"              # ssh: private key file
known_hosts = "/etc/berth/known_hosts"             # ssh: the server's host key must be listed here
allowed_signers = "/etc/berth/allowed_signers"     # if set: only commits SSH-signed by these keys are applied
trusted_pgp_keys = ["/etc/berth/ops.asc"]          # and/or OpenPGP-signed by these keys
webhook = { listen = "0.0.0.0:9487", secret_file = "/etc/berth/webhook.secret" }
notify = { mqtt = "mqtts://broker.example.com:8883", topic = "fleet/config/main", spread = "2s",
           username = "edge-042", password_file = "/etc/berth/mqtt.pass", ca_file = "/etc/berth/mqtt-ca.pem" }

[agent]
mode = "enforce"                                   # "observe": fetch, plan and report, change nothing

[policy]
profile = "restricted"                    # a shipped profile, or a path to a policy file
mode = "enforce"                          # "enforce" (error-level violations are not applied) | "audit" (applied, reported)
trusted_keys = ["/etc/berth/keys/release.pub"]      # cosign-style public keys for image signatures
trusted_root = "/etc/berth/trusted_root.json"       # Sigstore trusted root: enables keyless verification
# [[policy.trusted_identities]]  issuer = "https://token.actions.githubusercontent.com", subject_regex = "^https://github.com/acme/"
# waivers: [[policy.waiver]] tables, see §5

[runtime]
oci_runtime = "auto"                      # "auto" | "runc" | "crun" | a path
state_dir = "/var/lib/berth"
run_dir = "/run/berth"
default_subnet = "10.88.0.0/16"           # the network `default`
log_max_size = "10MiB"
log_max_files = 3
parallel = 4                              # plan steps of different containers run side by side
resync = "60s"                            # the agent's periodic pass, whatever else wakes it
gc_grace = "1h"                           # unused images, snapshots, instances, revisions go after this
pull_connect_timeout = "10s"              # registry connect + response headers
pull_idle_timeout = "60s"                 # a blob download with no byte for this long fails

[registries."registry.example.com"]
auth_file = "/etc/berth/registry-auth.json"   # docker config.json format; also reads $DOCKER_CONFIG
mirror = "https://mirror.local:5000"           # optional
insecure = false                               # plain http (only for loopback/lab registries)

[secrets]
identity = "/etc/berth/age.key"           # age X25519 identity of this node

[telemetry]
otlp_endpoint = "http://collector:4318"   # optional
metrics_listen = "127.0.0.1:9464"         # optional Prometheus endpoint
otlp_queue = 2048                         # spans buffered for export; overflow is dropped and counted
"#;

/// An `allowed_signers` line (an ed25519 key made with `ssh-keygen`).
const SIGNER: &str =
    "ops ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICnT8eppSGOnOyJtosxZUuNVPVkvvsxGNWXdSxDMHdsZ";

/// An OpenPGP public key (`gpg --export --armor`), from the agent's test data.
const PGP_PUBLIC_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../agent/src/source/testdata/pgp/A.asc"
);

/// `text` with every `/etc/berth/…` path moved under `dir`, each such file created.
fn with_files(dir: &std::path::Path, text: &str) -> String {
    let root = dir.join("etc");
    for piece in text.split('"') {
        if let Some(rest) = piece.strip_prefix("/etc/berth/") {
            let file = root.join(rest);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            if rest == "trusted_root.json" {
                // `berth agent --check` reads a trusted root that is there: a real one.
                let fixture = berth_e2e::shared_fixtures()
                    .expect("shared fixtures")
                    .join("cosign-bundle/trusted_root.public-good.json");
                std::fs::copy(&fixture, &file).expect("copy the trusted root");
            } else if rest == "allowed_signers" {
                // Signing keys that are there are loaded as the agent loads them.
                std::fs::write(&file, format!("{SIGNER}\n")).expect("write");
            } else if rest.ends_with(".asc") {
                std::fs::copy(PGP_PUBLIC_KEY, &file).expect("copy the OpenPGP key");
            } else if let Some(part) = rest
                .strip_prefix("mqtt-")
                .filter(|r| r.ends_with(".pem") || r.ends_with(".key"))
            {
                // The MQTT client's TLS files are loaded as the agent loads them: a
                // certificate (the CA's and the client's) and its key.
                let (cert, key) = mqtt_pair(dir);
                let from = if part.ends_with(".key") { key } else { cert };
                std::fs::copy(from, &file).expect("copy the MQTT TLS file");
            } else {
                std::fs::write(&file, "x\n").expect("write");
            }
        }
    }
    text.replace("/etc/berth/", &format!("{}/", root.display()))
}

/// A self-signed certificate and its key under `dir` (made once per directory).
fn mqtt_pair(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("mqtt-pair.pem"), dir.join("mqtt-pair.key"));
    if !cert.exists() {
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=mqtt-test",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (cert, key)
}

/// `berth agent --check` on `text`, the files it names created.
fn check(text: &str) -> berth_e2e::Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = with_files(dir.path(), text);
    std::fs::write(dir.path().join("node.toml"), text).expect("write");
    run_berth(dir.path(), &["agent", "--config", "node.toml", "--check"])
}

/// `berth agent --check` on `text` as it is.
fn check_as_is(text: &str) -> berth_e2e::Run {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("node.toml"), text).expect("write");
    run_berth(dir.path(), &["agent", "--config", "node.toml", "--check"])
}

#[test]
fn mqtt_files_the_agent_cannot_use_are_located_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = mqtt_pair(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "x\n").expect("write");
    let config = |ca: &std::path::Path, k: &std::path::Path| {
        format!(
            "[source]\nurl = \"https://h/r.git\"\n[source.notify]\nmqtt = \"mqtts://b\"\ntopic = \"t\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            ca.display(),
            cert.display(),
            k.display()
        )
    };
    let r = check_as_is(&config(&cert, &key));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = check_as_is(&config(&garbage, &key));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .starts_with("node.toml:6:1: error: source.notify.ca_file ")
            && r.stdout
                .contains("holds no certificate; the agent's MQTT channel stays disconnected"),
        "{}",
        r.stdout
    );
    let r = check_as_is(&config(&cert, &garbage));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .starts_with("node.toml:8:1: error: source.notify.client_key ")
            && r.stdout.contains("no PEM private key"),
        "{}",
        r.stdout
    );
    // A missing file is a warning: the configuration may be checked away from the node.
    let r = check_as_is(&config(&dir.path().join("missing.pem"), &key));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("source.notify.ca_file"), "{}", r.stderr);
}

#[test]
fn design_sample_passes_the_check() {
    // Every security key of the sample is enforced by this build (OpenPGP commits,
    // keyless image signatures): nothing is refused.
    let r = check(DESIGN_SAMPLE);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "ok: node configuration node.toml is valid\n");
    // Another transport's keys are located warnings, not errors.
    for (key, line) in [("source.ssh_key", 13), ("source.known_hosts", 14)] {
        let want = format!("node.toml:{line}:1: warning: `{key}` has no effect with an https URL");
        assert!(
            r.stderr.lines().any(|l| l.starts_with(&want)),
            "want {want}\ngot: {}",
            r.stderr
        );
    }
}

#[test]
fn files_the_config_names_that_cannot_be_read_are_located_warnings() {
    let r = check_as_is(
        "[source]\nurl = \"https://h/r.git\"\ncredentials_file = \"missing-creds\"\n[secrets]\nidentity = \"/nonexistent/age.key\"\n[policy]\ntrusted_keys = [\"/\"]\n",
    );
    // Checked before the keys are installed, a config is still valid: each file is a
    // located warning on stderr.
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("cannot be read") || l.contains("not a regular file"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", r.stderr);
    assert!(lines[0].starts_with("node.toml:3:1: warning: `source.credentials_file` names missing-creds, which cannot be read"), "{}", r.stderr);
    assert!(
        lines[1]
            .starts_with("node.toml:5:1: warning: `secrets.identity` names /nonexistent/age.key"),
        "{}",
        r.stderr
    );
    assert!(
        lines[2].starts_with(
            "node.toml:7:17: warning: `policy.trusted_keys[0]` names /, which is not a regular file"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn every_command_explains_an_invalid_config_as_check_does() {
    let text = "[runtime]\nparalel = 2\nlog_max_files = \"3\"\n[policy]\nmode = \"enforced\"\n";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("typo.toml"), text).expect("write");
    std::fs::create_dir(dir.path().join("tree")).expect("mkdir");
    let check = run_berth(dir.path(), &["--config", "typo.toml", "agent", "--check"]);
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert_eq!(check.stdout.lines().count(), 3, "{}", check.stdout);
    assert!(
        check.stdout.contains(
            "typo.toml:2:1: error: unknown key `runtime.paralel`, did you mean `parallel`?"
        ),
        "{}",
        check.stdout
    );
    let commands: &[&[&str]] = &[
        &["plan", "tree"],
        &["apply", "tree"],
        &["audit", "tree"],
        &["stop", "web"],
        &["image", "ls"],
        &["ps"],
        &["secret", "recipient"],
    ];
    for cmd in commands {
        let mut args = vec!["--config", "typo.toml"];
        args.extend_from_slice(cmd);
        let r = run_berth(dir.path(), &args);
        assert_eq!(r.code, 1, "{cmd:?}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stdout, check.stdout, "{cmd:?}: {}", r.stderr);
        assert!(!r.stderr.contains("error"), "{cmd:?}: {}", r.stderr);
    }
    // A missing explicit config names its cause once, and exits 3.
    let r = run_berth(dir.path(), &["--config", "missing.toml", "plan", "tree"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains("missing.toml"))
            .count(),
        1,
        "{}",
        r.stderr
    );
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
fn a_webhook_the_agent_would_refuse_or_that_never_fires_is_reported_by_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("webhook.secret");
    let config = |source: &str| {
        format!(
            "[source]\n{source}\n[source.webhook]\nlisten = \"127.0.0.1:9487\"\nsecret_file = {secret:?}\n"
        )
    };
    let run = |text: &str| {
        std::fs::write(dir.path().join("node.toml"), text).expect("write");
        run_berth(dir.path(), &["agent", "--config", "node.toml", "--check"])
    };
    let branch = config("url = \"https://h/r.git\"");
    // Missing: a located warning, as for every file the configuration names (it may be
    // checked away from the node), saying the agent would not start.
    let r = run(&branch);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("node.toml:5:1: warning: ")
                && l.contains("cannot read the webhook secret")
                && l.contains("refuses to start")),
        "{}",
        r.stderr
    );
    // There but empty: a located error (the agent would not start), not a warning.
    std::fs::write(&secret, "\n").expect("write");
    let why = "is empty";
    let r = run(&branch);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let want = "node.toml:5:1: error: ";
    assert!(
        r.stdout.starts_with(want) && r.stdout.contains(why),
        "want {want}…{why}\ngot: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("refuses to start"), "{}", r.stdout);
    assert!(!r.stderr.contains("secret_file"), "{}", r.stderr);

    std::fs::write(&secret, "s3cret-value\n").expect("write");
    let r = run(&branch);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("s3cret-value"));
    // Pinned to a commit, the webhook never fires: valid, with a located warning.
    let r = run(&config("url = \"https://h/r.git\"\ncommit = \"0123abc\""));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.lines().any(|l| l.starts_with("node.toml:4:9: warning: `source.webhook` never makes the node fetch: it is pinned to commit 0123abc")),
        "{}",
        r.stderr
    );
    // `file://repo` is no path: a located error saying what to write.
    let r = run(&config("url = \"file://repo\""));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("node.toml:2:7: error: `source.url` `file://repo` is not an absolute file URL: write `file:///absolute/path`"),
        "{}",
        r.stdout
    );
}

/// `gpg --batch` in a private GNUPGHOME (its agent stopped after `f`): a new ed25519 key
/// for `uid`, exported armored (`--export` or `--export-secret-keys`) into `dir`.
fn gpg_exports(dir: &std::path::Path, uid: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::process::Command;
    let home = tempfile::Builder::new()
        .prefix("gpg")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    gpg(&["--quick-gen-key", uid, "ed25519", "sign", "1y"]);
    let public = gpg(&["--export", "--armor", uid]);
    let secret = gpg(&["--export-secret-keys", "--armor", uid]);
    assert!(secret.contains("BEGIN PGP PRIVATE KEY BLOCK"), "{secret}");
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home.path())
        .args(["--kill", "gpg-agent"])
        .status();
    let (p, s) = (dir.join("ops.asc"), dir.join("ops-secret.asc"));
    std::fs::write(&p, public).expect("write");
    std::fs::write(&s, secret).expect("write");
    (p, s)
}

/// Finding: `--check` passed a secret key file or garbage in `source.trusted_pgp_keys`
/// and a garbage `source.allowed_signers` (ok, exit 0), and the agent then refused
/// every revision.
#[test]
fn signing_keys_the_agent_cannot_use_are_located_errors() {
    if !berth_e2e::have_tools(&["gpg"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (public, secret) = gpg_exports(dir.path(), "Ops <ops@example.com>");
    let signers = dir.path().join("allowed_signers");
    let garbage = dir.path().join("garbage.asc");
    std::fs::write(&garbage, "not a key\n").expect("write");
    let config = |signers_file: &std::path::Path, keys: &[&std::path::Path]| {
        format!(
            "[source]\nurl = \"https://h/r.git\"\nallowed_signers = {signers_file:?}\ntrusted_pgp_keys = {keys:?}\n"
        )
    };
    let run = |text: &str| {
        std::fs::write(dir.path().join("node.toml"), text).expect("write");
        run_berth(dir.path(), &["agent", "--config", "node.toml", "--check"])
    };

    // Usable keys: ok.
    std::fs::write(&signers, format!("{SIGNER}\n")).expect("write");
    let good = run(&config(&signers, &[&public]));
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
    assert_eq!(good.stderr, "", "{}", good.stderr);

    // A secret key, second in the list: located at its element, saying why; none of
    // the key's material is shown.
    let r = run(&config(&signers, &[&public, &secret]));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let line = r.stdout.lines().next().unwrap_or_default();
    let at = "node.toml:4:";
    assert!(
        line.starts_with(at)
            && line.contains("error: `source.trusted_pgp_keys` names ")
            && line.contains(&secret.display().to_string())
            && line.contains("holds a secret key"),
        "want {at}…: error: `source.trusted_pgp_keys` … holds a secret key\ngot: {}{}",
        r.stdout,
        r.stderr
    );
    assert!(!r.stdout.contains("PRIVATE KEY"), "{}", r.stdout);
    assert!(!r.stdout.starts_with("ok"), "{}", r.stdout);

    // Garbage as an OpenPGP key file.
    let r = run(&config(&signers, &[&garbage]));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("node.toml:4:")
            && r.stdout.contains("error: `source.trusted_pgp_keys` names ")
            && r.stdout.contains("not an OpenPGP public key"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    // Garbage as the allowed signers file.
    std::fs::write(&signers, "these are not signers\n").expect("write");
    let r = run(&config(&signers, &[&public]));
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .starts_with("node.toml:3:1: error: `source.allowed_signers` names ")
            && r.stdout.contains("which cannot be used"),
        "{}{}",
        r.stdout,
        r.stderr
    );

    // Missing files stay warnings: the configuration may be checked before its keys
    // are installed.
    let r = run(&config(
        &dir.path().join("missing-signers"),
        &[&dir.path().join("missing.asc")],
    ));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains(": warning: `source.") && l.contains("cannot be read"))
            .count(),
        2,
        "{}",
        r.stderr
    );
}
