//! The trust chain end to end, as root: a repository whose commits are signed by a
//! real `git commit -S` (`gpg.format=ssh`, an `ssh-keygen` key listed in
//! `allowed_signers`), an image signed by `berth sign` in a loopback `docker-registry`,
//! and `berth agent --once` applying it with runc. Then:
//! - `berth status --format json`, `berth inspect` and `berth audit --live` (JSON,
//!   SARIF and JUnit, read back by third-party parsers) show for the running container
//!   the commit and its signer (the key's fingerprint as `ssh-keygen -l` prints it),
//!   the digest, and the image key's fingerprint (the SHA-256 of its
//!   SubjectPublicKeyInfo as `openssl` writes it);
//! - with the image key removed from the node configuration, `berth audit --live
//!   --verify` flags the container, naming the link and the key, and exits 1; with the
//!   key back it exits 0. The same for the commit's signer removed from
//!   `allowed_signers`: the follower's own check on the recorded commit refuses it.
//!
//! The running agent (`berth-agentd`, through its API) shows the chains too: on a node
//! that requires no signature, both links read "not required".
//!
//! The nodes' `default` networks are 10.251.55.0/24 and 10.251.56.0/24.
//!
//! Debian packages: `git`, `openssh-client`, `openssl`, `docker-registry`, `runc`.

use std::path::Path;
use std::process::Command;

use berth_e2e::git::{CommitOptions, GitRepo, allowed_signer, ssh_keygen};
use berth_e2e::live::LiveNode;
use berth_e2e::{Run, have_tools, missing, run_berth, workspace_root};
use serde_json::Value;

/// Audit mode: the test is about the chain, not the policy's other rules.
fn policy(key: &Path) -> String {
    format!(
        "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\ntrusted_keys = [{:?}]\n",
        key.display().to_string()
    )
}

fn show(r: &Run) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    )
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(r)))
}

/// The chain of `name` in a document's `trust_chains`.
fn chain_of<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["trust_chains"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["container"] == name))
        .unwrap_or_else(|| panic!("no trust chain of {name} in {doc:#}"))
}

/// `ssh-keygen -l`'s fingerprint of a public key file.
fn ssh_fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// `sha256:<hex>` of the key's SubjectPublicKeyInfo, as `openssl` encodes it.
fn spki_fingerprint(public: &Path) -> String {
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(public)
        .output()
        .unwrap();
    assert!(der.status.success(), "openssl pkey: {der:?}");
    let digest = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&der.stdout)?;
            child.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8(digest.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// Runs `audit_reports.py KIND FILE` (third-party parsers): its JSON; none when the
/// Python packages are missing (a failure in CI).
fn python_reads(kind: &str, file: &Path) -> Option<Value> {
    let out = Command::new("python3")
        .arg(workspace_root().join("tests/e2e/audit_reports.py"))
        .arg(kind)
        .arg(file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("ModuleNotFoundError") {
        missing(&format!(
            "python packages sarif-tools and junitparser: {err}"
        ));
        return None;
    }
    assert!(out.status.success(), "audit_reports.py {kind}: {err}");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// Sets `policy.trusted_keys` to `keys` (a TOML array) in the node configuration.
fn set_trusted_keys(node: &LiveNode, keys: &str) {
    let text = std::fs::read_to_string(&node.config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("trusted_keys = "))
        .unwrap()
        .to_string();
    let text = text.replace(&line, &format!("trusted_keys = {keys}"));
    std::fs::write(&node.config, text).unwrap();
}

#[test]
fn the_chain_of_a_running_container_is_shown_and_verified_again() {
    if !have_tools(&["ssh-keygen", "openssl", "python3"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let made = run_berth(keys.path(), &["key", "generate", "release"]);
    assert_eq!(made.code, 0, "{}", show(&made));
    let (private, public) = (
        keys.path().join("release.key"),
        keys.path().join("release.pub"),
    );
    let Some(node) = LiveNode::start(&policy(&public), "default_subnet = \"10.251.55.0/24\"\n")
    else {
        return;
    };
    let Some(repo) = GitRepo::new() else { return };

    // The image, signed in the registry.
    let signed = node.berth(&["sign", &node.image, "--key", &private.to_string_lossy()]);
    assert_eq!(signed.code, 0, "{}", show(&signed));
    let digest = node.image.rsplit('@').next().unwrap().to_string();

    // The repository, its commit signed by an allowed signer.
    let ops = ssh_keygen(keys.path(), "ops");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, allowed_signer("ops@berth.example", "", &ops)).unwrap();
    repo.write(
        "fleet/web.toml",
        &format!(
            "[container.web]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"1000\"]\nstop_signal = \"SIGKILL\"\n\
             read_only = true\ncap_drop = [\"ALL\"]\n\
             resources = {{ memory = \"16MiB\", pids = 16 }}\n",
            node.image
        ),
    );
    let commit = repo.commit_with(
        "web, signed",
        &CommitOptions {
            sign_with: Some(&ops.private),
            date: None,
        },
    );
    repo.push();
    let mut config = std::fs::read_to_string(&node.config).unwrap();
    config.push_str(&format!(
        "\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"fleet\"\nallowed_signers = {:?}\n",
        repo.file_url(),
        signers.display().to_string()
    ));
    std::fs::write(&node.config, config).unwrap();

    let once = node.berth(&["agent", "--once"]);
    assert_eq!(once.code, 0, "{}", show(&once));

    let ssh_key = ssh_fingerprint(&ops.private.with_extension("pub"));
    let image_key = spki_fingerprint(&public);
    let assert_chain = |c: &Value, what: &str| {
        assert_eq!(c["commit"], commit.as_str(), "{what}: {c:#}");
        assert_eq!(c["commit_signer"]["status"], "verified", "{what}: {c:#}");
        assert_eq!(
            c["commit_signer"]["principal"], "ops@berth.example",
            "{what}: {c:#}"
        );
        assert_eq!(c["commit_signer"]["key"], ssh_key.as_str(), "{what}: {c:#}");
        assert_eq!(c["digest"], digest.as_str(), "{what}: {c:#}");
        assert_eq!(c["image_signature"]["status"], "verified", "{what}: {c:#}");
        let vouchers = c["image_signature"]["vouchers"].as_array().unwrap();
        assert_eq!(vouchers.len(), 1, "{what}: {c:#}");
        assert_eq!(vouchers[0]["kind"], "key", "{what}: {c:#}");
        assert_eq!(
            vouchers[0]["fingerprint"],
            image_key.as_str(),
            "{what}: {c:#}"
        );
        assert!(
            c["checked_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{what}: {c:#}"
        );
    };

    let status = node.berth(&["status", "--format", "json"]);
    assert_eq!(status.code, 0, "{}", show(&status));
    assert_chain(chain_of(&json(&status), "web"), "status");
    let text = node.berth(&["status"]);
    let line = format!(
        "  web: commit {} signed by ops@berth.example; image {} signed by {}",
        &commit[..12],
        &digest[..19],
        public.display()
    );
    assert!(
        text.stdout.contains("trust chains") && text.stdout.contains(&line),
        "{line}\n{}",
        show(&text)
    );
    let inspect = node.berth(&["inspect", "web"]);
    assert_eq!(inspect.code, 0, "{}", show(&inspect));
    assert_chain(&json(&inspect)["trust_chain"], "inspect");
    let inspect = node.berth(&["inspect", "web", "--format", "text"]);
    assert!(
        inspect.stdout.contains("Trust chain:") && inspect.stdout.contains(&image_key),
        "{}",
        show(&inspect)
    );

    let audit = node.berth(&["audit", "--live", "--format", "json"]);
    assert_eq!(audit.code, 0, "{}", show(&audit));
    assert_chain(chain_of(&json(&audit), "web"), "audit --live");
    let verify = node.berth(&["audit", "--live", "--verify", "--format", "json"]);
    assert_eq!(verify.code, 0, "{}", show(&verify));
    let v = json(&verify);
    assert_eq!(
        chain_of(&v, "web")["verify"]["flags"],
        serde_json::json!([]),
        "{v:#}"
    );

    // The image key rotated out (another key trusted instead), then removed with none
    // left: each time the container is flagged, the key named, exit 1.
    let other = run_berth(keys.path(), &["key", "generate", "other"]);
    assert_eq!(other.code, 0, "{}", show(&other));
    set_trusted_keys(
        &node,
        &format!(
            "[{:?}]",
            keys.path().join("other.pub").display().to_string()
        ),
    );
    let rotated = node.berth(&["audit", "--live", "--verify", "--format", "json"]);
    assert_eq!(rotated.code, 1, "{}", show(&rotated));
    let v = json(&rotated);
    let flags = &chain_of(&v, "web")["verify"]["flags"];
    assert_eq!(flags[0]["link"], "image signature", "{v:#}");
    assert!(
        flags[0]["message"].as_str().unwrap().contains(&image_key),
        "{v:#}"
    );
    set_trusted_keys(&node, "[]");
    let flagged = node.berth(&["audit", "--live", "--verify", "--format", "json"]);
    assert_eq!(flagged.code, 1, "{}", show(&flagged));
    let v = json(&flagged);
    let flags = chain_of(&v, "web")["verify"]["flags"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(flags.len(), 1, "{v:#}");
    assert_eq!(flags[0]["link"], "image signature", "{v:#}");
    assert!(
        flags[0]["gone"][0].as_str().unwrap().contains(&image_key),
        "{v:#}"
    );
    let text = node.berth(&["audit", "--live", "--verify"]);
    assert_eq!(text.code, 1, "{}", show(&text));
    assert!(
        text.stdout
            .contains("containers/web/state.json:1: trust-chain: error: image signature")
            && text.stdout.contains(&image_key),
        "{}",
        show(&text)
    );
    // SARIF and JUnit carry it, and third-party readers read them.
    let sarif = keys.path().join("audit.sarif");
    let junit = keys.path().join("audit.xml");
    for (format, file) in [("sarif", &sarif), ("junit", &junit)] {
        let r = node.berth(&[
            "audit",
            "--live",
            "--verify",
            "--format",
            format,
            "--output",
            &file.to_string_lossy(),
        ]);
        assert_eq!(r.code, 1, "{}", show(&r));
    }
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&sarif).unwrap()).unwrap();
    let run = &s["runs"][0];
    assert_eq!(
        run["properties"]["trustChains"][0]["image_signature"]["vouchers"][0]["fingerprint"],
        image_key.as_str(),
        "{s:#}"
    );
    if let Some(records) = python_reads("sarif", &sarif) {
        assert!(
            records
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r[0] == "trust-chain"
                    && r[1] == "error"
                    && r[2]
                        .as_str()
                        .unwrap()
                        .ends_with("containers/web/state.json")),
            "{records:#}"
        );
    }
    if let Some(j) = python_reads("junit", &junit) {
        assert!(
            j["cases"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c[0] == "trust chains"
                    && c[1] == "web"
                    && c[2] == "failure"
                    && c[3].as_str().unwrap().starts_with("image signature: ")),
            "{j:#}"
        );
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(&format!("name=\"web.commit\" value=\"{commit}\"")),
        "{xml}"
    );

    // The key back: every chain holds again.
    set_trusted_keys(&node, &format!("[{:?}]", public.display().to_string()));
    let again = node.berth(&["audit", "--live", "--verify"]);
    assert_eq!(again.code, 0, "{}", show(&again));
    assert!(
        again.stdout.contains("still vouched for by key"),
        "{}",
        show(&again)
    );

    // The commit's signer removed from allowed_signers (another listed instead): the
    // follower's own check on the recorded commit refuses it, and the link is flagged.
    let stranger = ssh_keygen(keys.path(), "stranger");
    std::fs::write(
        &signers,
        allowed_signer("stranger@berth.example", "", &stranger),
    )
    .unwrap();
    let gone = node.berth(&["audit", "--live", "--verify", "--format", "json"]);
    assert_eq!(gone.code, 1, "{}", show(&gone));
    let v = json(&gone);
    let flags = &chain_of(&v, "web")["verify"]["flags"];
    assert_eq!(flags[0]["link"], "commit signer", "{v:#}");
    assert!(
        flags[0]["gone"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("ops@berth.example ({ssh_key}")),
        "{v:#}"
    );
    assert!(
        flags[0]["message"].as_str().unwrap().contains(&commit),
        "{v:#}"
    );
    std::fs::write(&signers, allowed_signer("ops@berth.example", "", &ops)).unwrap();
    let back = node.berth(&["audit", "--live", "--verify"]);
    assert_eq!(back.code, 0, "{}", show(&back));
}

/// The running agent answers `berth status` (`GET /v1/status`, from `berth-agentd`)
/// with the chains too; on a node that requires no signature both links read "not
/// required", never left out.
#[test]
fn the_agent_shows_the_links_it_does_not_require() {
    let Some(mut h) = crate::agent_daemon::Host::on("10.251.56", "") else {
        return;
    };
    h.sleeper("web", 1000);
    let commit = h.push("web, unsigned");
    h.follow(&h.repo.file_url());
    h.start();
    h.wait_converged(&commit);
    let r = h.node.berth(&["status", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    let v = json(&r);
    assert_eq!(v["agent"], "running", "{v:#}");
    let c = chain_of(&v, "web");
    assert_eq!(c["commit"], commit.as_str(), "{c:#}");
    assert_eq!(c["commit_signer"]["status"], "not-required", "{c:#}");
    assert_eq!(c["image_signature"]["status"], "not-required", "{c:#}");
    assert!(
        c["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{c:#}"
    );
    let text = h.node.berth(&["status"]);
    let line = format!(
        "  web: commit {} (signature not required); image sha256:",
        &commit[..12]
    );
    assert!(
        text.stdout.contains(&line) && text.stdout.contains(" (signature not required)\n"),
        "{line}\n{}",
        show(&text)
    );
}

fn berth_at(node: &LiveNode, failpoint: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = node.command();
    if let Some(f) = failpoint {
        cmd.env("BERTH_FAILPOINT", f);
    }
    Run::from(cmd.args(args).output().unwrap())
}

/// A pass applied and not recorded (the agent stopped between the two) leaves the
/// container running the new revision with the chain of the old one on disk: it is
/// not shown ("not known", `--verify` exits 3), and the next pass, which has nothing
/// left to change, vouches for the container at the new revision. An applied-revision
/// record that cannot be read is said so, never "applied from a directory", and
/// `--verify` exits 3. A container applied from a directory on a node that requires
/// signed commits is flagged (exit 1). The node's `default` network is 10.251.75.0/24.
#[test]
fn a_chain_describes_the_running_instance_only() {
    if !have_tools(&["ssh-keygen"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let Some(node) = LiveNode::start(
        "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n",
        "default_subnet = \"10.251.75.0/24\"\n",
    ) else {
        return;
    };
    let Some(repo) = GitRepo::new() else { return };
    let ops = ssh_keygen(keys.path(), "ops");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, allowed_signer("ops@berth.example", "", &ops)).unwrap();
    let web = |level: &str| {
        format!(
            "[container.web]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"1000\"]\nstop_signal = \"SIGKILL\"\n\
             read_only = true\ncap_drop = [\"ALL\"]\n\
             resources = {{ memory = \"16MiB\", pids = 16 }}\n\
             env = {{ LEVEL = \"{level}\" }}\n",
            node.image
        )
    };
    let signed = CommitOptions {
        sign_with: Some(&ops.private),
        date: None,
    };
    repo.write("fleet/web.toml", &web("1"));
    let c1 = repo.commit_with("web 1", &signed);
    repo.push();
    let mut config = std::fs::read_to_string(&node.config).unwrap();
    config.push_str(&format!(
        "\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"fleet\"\nallowed_signers = {:?}\n",
        repo.file_url(),
        signers.display().to_string()
    ));
    std::fs::write(&node.config, config).unwrap();
    let once = node.berth(&["agent", "--once"]);
    assert_eq!(once.code, 0, "{}", show(&once));
    let status = json(&node.berth(&["status", "--format", "json"]));
    assert_eq!(
        chain_of(&status, "web")["commit"],
        c1.as_str(),
        "{status:#}"
    );
    let first = node.instance("web").unwrap();

    // web 2 (the same image, another environment): applied, then the agent stops
    // before it records the pass.
    repo.write("fleet/web.toml", &web("2"));
    let c2 = repo.commit_with("web 2", &signed);
    repo.push();
    let crashed = berth_at(&node, Some("before-record"), &["agent", "--once"]);
    assert_ne!(crashed.code, 0, "{}", show(&crashed));
    let second = node.instance("web").unwrap();
    assert_ne!(first, second, "web 2 runs");
    let status = json(&node.berth(&["status", "--format", "json"]));
    let c = chain_of(&status, "web");
    assert_ne!(
        c["commit"],
        c1.as_str(),
        "the chain of c1 lent to web 2: {c:#}"
    );
    assert_eq!(c["commit_signer"]["status"], "unknown", "{c:#}");
    assert!(
        c["commit_signer"]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("not of the running {second}")),
        "{c:#}"
    );
    let verify = node.berth(&["audit", "--live", "--verify"]);
    assert_eq!(verify.code, 3, "{}", show(&verify));
    assert!(
        verify
            .stdout
            .contains("trust-chain: cannot check: commit signer"),
        "{}",
        show(&verify)
    );

    // The next pass changes nothing and vouches for web at c2.
    let once = node.berth(&["agent", "--once"]);
    assert_eq!(once.code, 0, "{}", show(&once));
    assert_eq!(node.instance("web").unwrap(), second, "unchanged");
    let status = json(&node.berth(&["status", "--format", "json"]));
    let c = chain_of(&status, "web");
    assert_eq!(c["commit"], c2.as_str(), "{c:#}");
    assert_eq!(c["commit_signer"]["status"], "verified", "{c:#}");
    assert_eq!(c["instance"], second.as_str(), "{c:#}");
    let verify = node.berth(&["audit", "--live", "--verify"]);
    assert_eq!(verify.code, 0, "{}", show(&verify));

    // An applied-revision record that cannot be read.
    let applied = node.state().join("state/applied.json");
    let kept = std::fs::read(&applied).unwrap();
    std::fs::write(&applied, b"{not json").unwrap();
    let status = json(&node.berth(&["status", "--format", "json"]));
    let c = chain_of(&status, "web");
    assert_eq!(c["commit_signer"]["status"], "unknown", "{c:#}");
    assert!(
        c["commit_signer"]["reason"]
            .as_str()
            .unwrap()
            .contains("applied-revision record cannot be read"),
        "{c:#}"
    );
    let verify = node.berth(&["audit", "--live", "--verify"]);
    assert_eq!(verify.code, 3, "{}", show(&verify));
    assert!(
        !verify.stdout.contains("applied from a directory"),
        "{}",
        show(&verify)
    );
    std::fs::write(&applied, kept).unwrap();

    // Applied from a directory on a node that requires signed commits.
    node.write_spec("web.toml", &web("3"));
    let apply = node.apply();
    assert_eq!(apply.code, 0, "{}", show(&apply));
    let verify = node.berth(&["audit", "--live", "--verify", "--format", "json"]);
    assert_eq!(verify.code, 1, "{}", show(&verify));
    let v = json(&verify);
    let flags = &chain_of(&v, "web")["verify"]["flags"];
    assert_eq!(flags[0]["link"], "commit signer", "{v:#}");
    assert!(
        flags[0]["message"]
            .as_str()
            .unwrap()
            .contains("requires signed commits"),
        "{v:#}"
    );
}
