//! Keyless (Sigstore) signatures, verified offline: `berth image verify --bundle FILE
//! --digest D --trusted-root R --identity ISSUER=SUBJECT` on the shared fixture
//! `cosign-bundle/keyless-image.bundle.json` (a kubewarden release signed by its GitHub
//! Actions workflow through Fulcio, logged in Rekor, timestamped) against
//! `trusted_root.public-good.json`; and a node trusting that root and an identity (which
//! no test here can sign for: there is no Fulcio) refusing an unsigned image under
//! enforce, the finding naming the identity it expected.
//!
//! Subnets: 10.251.60.0/24 (the enforce node's default network; nothing starts on it).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use berth_e2e::live::LiveNode;
use berth_e2e::{Run, run_berth, shared_fixtures};
use serde_json::Value;

use crate::pass::WEB;

const DIGEST: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const ISSUER: &str = "https://token.actions.githubusercontent.com";
const SUBJECT: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const LOG_INDEX: u64 = 1_261_105_807;

struct Fixture {
    bundle: PathBuf,
    root: PathBuf,
    /// Holds an empty node configuration and the files the test writes.
    dir: tempfile::TempDir,
}

fn fixture() -> Option<Fixture> {
    let dir = shared_fixtures()?.join("cosign-bundle");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("node.toml"), "").unwrap();
    Some(Fixture {
        bundle: dir.join("keyless-image.bundle.json"),
        root: dir.join("trusted_root.public-good.json"),
        dir: tmp,
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

impl Fixture {
    /// `berth image verify ARGS` in the test's directory, with its empty node
    /// configuration unless ARGS name one.
    fn verify(&self, args: &[&str]) -> Run {
        let config: &[&str] = if args.contains(&"--config") {
            &[]
        } else {
            &["--config", "node.toml"]
        };
        let fixed = ["--state-dir", "state", "image", "verify"];
        run_berth(self.dir.path(), &[config, &fixed, args].concat())
    }

    /// `--bundle B --digest D --trusted-root R EXTRA…`
    fn keyless(&self, bundle: &Path, digest: &str, root: &Path, extra: &[&str]) -> Run {
        let args = [
            "--bundle",
            s(bundle),
            "--digest",
            digest,
            "--trusted-root",
            s(root),
        ];
        self.verify(&[&args[..], extra].concat())
    }

    /// The trusted root with `edit` applied, written under the test's directory.
    fn root_with(&self, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut json: Value = serde_json::from_slice(&std::fs::read(&self.root).unwrap()).unwrap();
        edit(&mut json);
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        path
    }
}

fn identity() -> String {
    format!("{ISSUER}={SUBJECT}")
}

#[test]
fn the_keyless_fixture_verifies_offline_for_its_digest_and_identity() {
    let Some(f) = fixture() else { return };
    let id = identity();
    let run = f.keyless(&f.bundle, DIGEST, &f.root, &["--identity", &id]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!(
            "{}: verified by identity {SUBJECT} (issuer {ISSUER}, log index {LOG_INDEX}) for {DIGEST}",
            s(&f.bundle)
        )
    );
    let run = f.keyless(
        &f.bundle,
        DIGEST,
        &f.root,
        &["--identity", &id, "--format", "json"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["status"], "verified", "{v}");
    assert_eq!(v["identity"]["issuer"], ISSUER, "{v}");
    assert_eq!(v["identity"]["subject"], SUBJECT, "{v}");
    assert_eq!(v["log_index"], LOG_INDEX, "{v}");
    // The log's integrated time and the timestamp's (the same second, so once), never
    // the clock.
    assert_eq!(
        v["signed_at"],
        serde_json::json!(["2026-04-09T07:23:29Z"]),
        "{v}"
    );
    assert_eq!(v["unchecked"], serde_json::json!([]), "{v}");

    // A regular expression matching the whole subject; one matching a part does not.
    let whole = format!("{ISSUER}=https://github.com/kubewarden/.+@refs/tags/v.*");
    let run = f.keyless(&f.bundle, DIGEST, &f.root, &["--identity-regex", &whole]);
    assert_eq!(run.code, 0, "{run:?}");
    let part = format!("{ISSUER}=https://github.com/kubewarden/");
    let run = f.keyless(&f.bundle, DIGEST, &f.root, &["--identity-regex", &part]);
    assert_eq!(run.code, 1, "{run:?}");
}

#[test]
fn it_fails_for_another_digest_identity_or_a_root_without_its_ca() {
    let Some(f) = fixture() else { return };
    let id = identity();
    let other = format!("sha256:{}", "0".repeat(64));
    let run = f.keyless(&f.bundle, &other, &f.root, &["--identity", &id]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!("signs {DIGEST}, not {other}")),
        "{run:?}"
    );

    // Another subject, another issuer: the finding names what was expected and found.
    let other_subject = SUBJECT.replace("v1.34.0", "v1.35.0");
    for expected in [
        format!("{ISSUER}={other_subject}"),
        format!("https://gitlab.com={SUBJECT}"),
    ] {
        let run = f.keyless(&f.bundle, DIGEST, &f.root, &["--identity", &expected]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stdout.contains(&format!(
                "the certificate names identity {ISSUER}={SUBJECT}, which is not trusted (expected {expected})"
            )),
            "{run:?}"
        );
    }

    // The root without the Fulcio authority that issued the certificate.
    let root = f.root_with("no-ca.json", |r| {
        r["certificateAuthorities"]
            .as_array_mut()
            .unwrap()
            .remove(1);
    });
    let run = f.keyless(&f.bundle, DIGEST, &root, &["--identity", &id]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("does not chain to a certificate authority of the trusted root"),
        "{run:?}"
    );

    // A root without its log: the entry is from a log the root does not list.
    let root = f.root_with("no-log.json", |r| {
        r["tlogs"].as_array_mut().unwrap().remove(0);
    });
    let run = f.keyless(&f.bundle, DIGEST, &root, &["--identity", &id]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("which the trusted root does not list"),
        "{run:?}"
    );
}

#[test]
fn the_node_trusted_root_and_identities_are_the_default() {
    let Some(f) = fixture() else { return };
    let config = f.dir.path().join("keyless.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ntrusted_root = {:?}\n[[policy.trusted_identities]]\nissuer = \"{ISSUER}\"\nsubject_regex = \"https://github.com/kubewarden/kubewarden-controller/.+\"\n",
            s(&f.root)
        ),
    )
    .unwrap();
    let args = ["--bundle", s(&f.bundle), "--digest", DIGEST];
    let run = f.verify(&[&["--config", s(&config)][..], &args].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("identity {SUBJECT}")),
        "{run:?}"
    );

    // No root: a keyless bundle is refused by name (with a key to verify with).
    let key = shared_fixtures()
        .unwrap()
        .join("cosign-bundle/keyed-image.cosign.pub");
    let run = f.verify(&[&args[..], &["--key", s(&key)]].concat());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("keyless") && run.stdout.contains("no trusted root is configured"),
        "{run:?}"
    );
    // An identity without a root, or nothing at all: usage errors.
    let id = identity();
    let run = f.verify(&[&args[..], &["--identity", &id]].concat());
    assert_eq!(run.code, 2, "{run:?}");
    let run = f.verify(&args);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--trusted-root"), "{run:?}");
    let run = f.keyless(
        &f.bundle,
        DIGEST,
        &f.root,
        &["--identity", "no-equals-sign"],
    );
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn a_node_trusting_an_identity_refuses_an_unsigned_image_under_enforce() {
    let Some(f) = fixture() else { return };
    let Some(node) = LiveNode::start(
        &format!(
            "[policy]\nprofile = \"restricted\"\nmode = \"enforce\"\ntrusted_root = {:?}\n\
             [[policy.trusted_identities]]\nissuer = \"{ISSUER}\"\nsubject = \"{SUBJECT}\"\n",
            s(&f.root)
        ),
        "default_subnet = \"10.251.60.0/24\"\n",
    ) else {
        return;
    };
    node.write_spec("web.toml", WEB);
    let spec = node.spec.to_string_lossy().to_string();
    let expected = format!("identities expected: {ISSUER}={SUBJECT}");

    let plan = node.berth(&["plan", &spec, "--format", "json"]);
    assert_eq!(plan.code, 1, "{}{}", plan.stdout, plan.stderr);
    let apply = node.berth(&["apply", &spec, "--format", "json"]);
    assert_eq!(apply.code, 1, "{}{}", apply.stdout, apply.stderr);
    let a: Value = serde_json::from_str(&apply.stdout).unwrap();
    let web = &a["containers"]["web"];
    assert_eq!(web["outcome"], "blocked", "{a:#}");
    let reason = web["reason"].as_str().unwrap();
    assert!(reason.contains("image-signature"), "{reason}");
    assert!(
        reason.contains("no signature was found in the registry"),
        "{reason}"
    );
    assert!(reason.contains(&expected), "{reason}");
    // Nothing ran, nothing was unpacked.
    assert!(node.instance("web").is_none());

    // `berth image pull` under the same policy refuses it before unpacking, naming the
    // identity too.
    let pull = node.berth(&["image", "pull", &node.image]);
    assert_eq!(pull.code, 1, "{}{}", pull.stdout, pull.stderr);
    assert!(pull.stderr.contains(&expected), "{}", pull.stderr);
}

#[test]
fn a_node_whose_trusted_root_cannot_be_read_refuses_to_apply_naming_it() {
    let Some(node) = LiveNode::start(
        &format!(
            "[policy]\nprofile = \"restricted\"\nmode = \"enforce\"\ntrusted_root = \"/nonexistent/trusted_root.json\"\n\
             [[policy.trusted_identities]]\nissuer = \"{ISSUER}\"\nsubject = \"{SUBJECT}\"\n"
        ),
        "default_subnet = \"10.251.61.0/24\"\n",
    ) else {
        return;
    };
    node.write_spec("web.toml", WEB);
    let apply = node.apply();
    assert_ne!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
    assert!(
        apply.stderr.contains("/nonexistent/trusted_root.json"),
        "{}{}",
        apply.stdout,
        apply.stderr
    );
    assert!(node.instance("web").is_none());
}

/// `berth agent --check` refuses, with the file and line, what every pass would fail
/// on: identities without a trusted root, a pattern berth cannot compile, a trusted
/// root that is not one (a TUF root.json, a bundle, an empty file).
#[test]
fn agent_check_refuses_an_unusable_keyless_configuration_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str| -> Run {
        std::fs::write(tmp.path().join(name), text).unwrap();
        run_berth(tmp.path(), &["agent", "--check", "--config", name])
    };
    let id = format!("[[policy.trusted_identities]]\nissuer = \"{ISSUER}\"\n");
    let run = check(
        "no-root.toml",
        &format!("[policy]\n{id}subject = \"{SUBJECT}\"\n"),
    );
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("no-root.toml:2:")
            && run.stdout.contains("needs `policy.trusted_root`"),
        "{run:?}"
    );
    std::fs::write(tmp.path().join("empty.json"), "").unwrap();
    std::fs::write(
        tmp.path().join("tuf-root.json"),
        r#"{"signatures": [], "signed": {"_type": "root", "version": 5}}"#,
    )
    .unwrap();
    for (pattern, expected) in [
        ("(unclosed", "not a valid regular expression"),
        (r"\\p{L}+", "no Unicode classes"),
    ] {
        let run = check(
            "regex.toml",
            &format!(
                "[policy]\ntrusted_root = \"empty.json\"\n{id}subject_regex = \"{pattern}\"\n"
            ),
        );
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("regex.toml:5:") && run.stdout.contains(expected),
            "{run:?}"
        );
    }
    for (root, expected) in [
        ("empty.json", "is not JSON"),
        ("tuf-root.json", "not a Sigstore trusted root"),
    ] {
        let run = check(
            "root.toml",
            &format!("[policy]\ntrusted_root = \"{root}\"\n{id}subject = \"{SUBJECT}\"\n"),
        );
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("root.toml:2:") && run.stdout.contains(expected),
            "{run:?}"
        );
    }
}

/// `berth agent --check` with trusted identities and a trusted root that lists no
/// certificate authority (or no log): every keyless signature would fail on every
/// pass, so it is a located error; without identities the same root is fine (keyed
/// bundles' evidence). A cosign-style prefix pattern is a located warning.
#[test]
fn agent_check_refuses_a_root_no_identity_can_verify_with_and_warns_of_prefixes() {
    let Some(f) = fixture() else { return };
    let no_ca = f.root_with("no-ca.json", |r| {
        r["certificateAuthorities"] = Value::Array(vec![])
    });
    let no_log = f.root_with("no-log.json", |r| r["tlogs"] = Value::Array(vec![]));
    let check = |text: &str| -> Run {
        std::fs::write(f.dir.path().join("check.toml"), text).unwrap();
        run_berth(
            f.dir.path(),
            &["agent", "--check", "--config", "check.toml"],
        )
    };
    let id = format!("[[policy.trusted_identities]]\nissuer = \"{ISSUER}\"\n");
    for (root, expected) in [
        (&no_ca, "lists no certificate authority"),
        (&no_log, "lists no transparency log"),
    ] {
        let run = check(&format!(
            "[policy]\ntrusted_root = {:?}\n{id}subject = \"{SUBJECT}\"\n",
            s(root)
        ));
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("check.toml:2:")
                && run.stdout.contains(expected)
                && run.stdout.contains("policy.trusted_identities"),
            "{run:?}"
        );
        let run = check(&format!("[policy]\ntrusted_root = {:?}\n", s(root)));
        assert!(!run.stdout.contains(expected), "{run:?}");
    }
    let run = check(&format!(
        "[policy]\ntrusted_root = {:?}\n{id}subject_regex = \"^https://github.com/kubewarden/\"\n",
        s(&f.root)
    ));
    assert!(
        run.stderr
            .contains("check.toml:5:1: warning: `policy.trusted_identities[0].subject_regex`")
            && run.stderr.contains("append `.*`"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("trusted_root"), "{run:?}");
}

/// cosign's flag names are accepted where they map onto berth's (`ISSUER=SUBJECT`),
/// and refused with berth's spelling where they do not.
#[test]
fn cosign_identity_flags_map_onto_berth_s() {
    let Some(f) = fixture() else { return };
    let ok = [
        &[
            "--certificate-identity",
            SUBJECT,
            "--certificate-oidc-issuer",
            ISSUER,
        ][..],
        &[
            "--certificate-identity-regexp",
            r"https://github\.com/kubewarden/kubewarden-controller/\.github/workflows/release\.yml@refs/tags/v.+",
            "--certificate-oidc-issuer",
            ISSUER,
        ][..],
    ];
    for extra in ok {
        let run = f.keyless(&f.bundle, DIGEST, &f.root, extra);
        assert_eq!(run.code, 0, "{extra:?}: {run:?}");
        assert!(
            run.stdout.contains(&format!("identity {SUBJECT}")),
            "{run:?}"
        );
    }
    // The regular expression is anchored, as --identity-regex is.
    let run = f.keyless(
        &f.bundle,
        DIGEST,
        &f.root,
        &[
            "--certificate-identity-regexp",
            "kubewarden",
            "--certificate-oidc-issuer",
            ISSUER,
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");
    for (extra, hint) in [
        (
            &["--certificate-identity", SUBJECT][..],
            "needs --certificate-oidc-issuer",
        ),
        (
            &["--certificate-oidc-issuer", ISSUER][..],
            "needs --certificate-identity",
        ),
        (
            &[
                "--certificate-identity",
                SUBJECT,
                "--certificate-oidc-issuer-regexp",
                ".*",
            ][..],
            "--identity-regex ISSUER=REGEX",
        ),
    ] {
        let run = f.keyless(&f.bundle, DIGEST, &f.root, extra);
        assert_eq!(run.code, 2, "{extra:?}: {run:?}");
        assert!(run.stderr.contains(hint), "{run:?}");
    }
    // A trusted root and a key but no identity: a keyless bundle names --identity.
    let key = shared_fixtures()
        .unwrap()
        .join("cosign-bundle/keyed-image.cosign.pub");
    let run = f.keyless(&f.bundle, DIGEST, &f.root, &["--key", s(&key)]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("--identity ISSUER=SUBJECT"), "{run:?}");
}

/// A JSON failure for an identity that is not trusted carries the identity found and
/// those expected as fields.
#[test]
fn a_json_identity_failure_names_found_and_expected() {
    let Some(f) = fixture() else { return };
    let other =
        format!("{ISSUER}=https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1");
    let run = f.keyless(
        &f.bundle,
        DIGEST,
        &f.root,
        &["--identity", &other, "--format", "json"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["identity_found"]["issuer"], ISSUER, "{v}");
    assert_eq!(
        v["identity_found"]["subjects"],
        serde_json::json!([SUBJECT]),
        "{v}"
    );
    assert_eq!(v["identities_expected"], serde_json::json!([other]), "{v}");
}
