//! `berth source verify` end to end on commits and tags signed by real `git commit -S`
//! and `git tag -s` (`gpg.format=ssh`) with `ssh-keygen` keys. Each verdict is checked
//! against git's own (`git verify-commit`/`verify-tag`, which run `ssh-keygen -Y
//! find-principals` and `-Y verify` at the committer time) and, for the plain cases,
//! against `ssh-keygen -Y verify` run directly on the signed data.
//!
//! Debian packages: `git`, `openssh-client`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::git::{CommitOptions, GitRepo, SshKey, allowed_signer, git_command, ssh_keygen};
use berth_e2e::{Run, have_tools, run_berth};

/// A work repository with one signing key listed (`alice`) and one not (`mallory`).
struct Setup {
    repo: GitRepo,
    alice: SshKey,
    mallory: SshKey,
    /// `alice@example.com <alice's key>`.
    allowed: PathBuf,
}

fn setup() -> Option<Setup> {
    if !have_tools(&["git", "ssh-keygen"]) {
        return None;
    }
    let repo = GitRepo::new()?;
    let alice = ssh_keygen(repo.root(), "alice");
    let mallory = ssh_keygen(repo.root(), "mallory");
    let allowed = write_file(
        &repo,
        "allowed_signers",
        &allowed_signer("alice@example.com", "", &alice),
    );
    repo.write("fleet/web.toml", "# web\n");
    Some(Setup {
        repo,
        alice,
        mallory,
        allowed,
    })
}

fn write_file(repo: &GitRepo, name: &str, text: &str) -> PathBuf {
    let path = repo.root().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

impl Setup {
    fn signed(&self, key: &SshKey, message: &str, date: Option<&str>) -> String {
        self.repo.commit_with(
            message,
            &CommitOptions {
                sign_with: Some(&key.private),
                date,
            },
        )
    }

    /// `git tag -s` with `key`.
    fn signed_tag(&self, key: &SshKey, name: &str, message: &str, commit: &str) {
        let signing_key = format!("user.signingkey={}", key.private.display());
        self.repo.git(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "tag",
            "-s",
            "-m",
            message,
            name,
            commit,
        ]);
    }

    /// `berth source verify REV --repo WORK --allowed-signers FILE [EXTRA…]`.
    fn berth(&self, rev: &str, allowed: &Path, extra: &[&str]) -> Run {
        let work = self.repo.work();
        let mut args = vec![
            "source",
            "verify",
            rev,
            "--repo",
            work.to_str().unwrap(),
            "--allowed-signers",
            allowed.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_berth(self.repo.root(), &args)
    }

    /// git's verdict on `rev` (`verify-commit`, or `verify-tag` for a tag).
    fn git_verifies(&self, verb: &str, rev: &str, allowed: &Path) -> bool {
        git_command(&self.repo.work())
            .arg("-c")
            .arg(format!("gpg.ssh.allowedSignersFile={}", allowed.display()))
            .args([verb, rev])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// The fingerprint `ssh-keygen -l` prints for a key.
    fn fingerprint(&self, key: &SshKey) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(key.private.with_extension("pub"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_whitespace().nth(1).unwrap().to_string()
    }

    /// `ssh-keygen -Y verify` run directly on a commit: its signature, and the commit
    /// object without its `gpgsig` header as the signed data.
    fn ssh_keygen_verifies(&self, commit: &str, allowed: &Path, principal: &str) -> bool {
        let raw = self.repo.git(&["cat-file", "commit", commit]) + "\n";
        let (mut data, mut sig, mut in_sig) = (String::new(), String::new(), false);
        for line in raw.split_inclusive('\n') {
            if let Some(first) = line.strip_prefix("gpgsig ") {
                sig.push_str(first);
                in_sig = true;
            } else if let Some(more) = line.strip_prefix(' ').filter(|_| in_sig) {
                sig.push_str(more);
            } else {
                in_sig = false;
                data.push_str(line);
            }
        }
        let dir = self.repo.root();
        std::fs::write(dir.join("commit.sig"), sig).unwrap();
        Command::new("ssh-keygen")
            .args(["-Y", "verify", "-n", "git", "-I", principal, "-f"])
            .arg(allowed)
            .arg("-s")
            .arg(dir.join("commit.sig"))
            .stdin(std::fs::File::open(write_file(&self.repo, "commit.data", &data)).unwrap())
            .output()
            .unwrap()
            .status
            .success()
    }
}

fn assert_refused(run: &Run, commit: &str, reason: &str) {
    assert_eq!(run.code, 1, "{run:?}");
    let line = run.stdout.trim();
    assert!(
        line.starts_with(&format!("refused: commit {commit}: ")) && line.contains(reason),
        "expected `{reason}`: {run:?}"
    );
}

#[test]
fn source_verify_a_good_signature_verifies_as_git_and_ssh_keygen_agree() {
    let Some(s) = setup() else { return };
    let commit = s.signed(&s.alice, "deploy web", Some("2026-11-22T10:00:00Z"));
    let run = s.berth("HEAD", &s.allowed, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!(
            "verified: commit {commit} signed by alice@example.com ({}) at 2026-11-22T10:00:00Z",
            s.fingerprint(&s.alice)
        )
    );
    assert!(s.git_verifies("verify-commit", "HEAD", &s.allowed));
    assert!(s.ssh_keygen_verifies(&commit, &s.allowed, "alice@example.com"));

    let run = s.berth(&commit, &s.allowed, &["--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["commit"], commit);
    assert_eq!(json["signature"]["object"], "commit");
    assert_eq!(json["signature"]["principal"], "alice@example.com");
    assert_eq!(json["signature"]["algorithm"], "ssh-ed25519");
    assert_eq!(json["signature"]["signed_at"], "2026-11-22T10:00:00Z");
}

#[test]
fn source_verify_ecdsa_and_rsa_keys_verify() {
    let Some(s) = setup() else { return };
    for (kind, bits, algorithm) in [
        ("ecdsa", "256", "ecdsa-sha2-nistp256"),
        ("rsa", "2048", "ssh-rsa"),
    ] {
        let private = s.repo.root().join(kind);
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-b", bits, "-N", "", "-C", kind, "-f"])
            .arg(&private)
            .status()
            .unwrap();
        assert!(made.success(), "ssh-keygen -t {kind}");
        let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
        let key = SshKey { private, public };
        let allowed = write_file(
            &s.repo,
            &format!("{kind}_signers"),
            &allowed_signer(kind, "", &key),
        );
        s.repo.write("fleet/web.toml", &format!("# {kind}\n"));
        let commit = s.signed(&key, kind, None);
        let run = s.berth("HEAD", &allowed, &["--format", "json"]);
        assert_eq!(run.code, 0, "{kind}: {run:?}");
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["signature"]["algorithm"], algorithm);
        assert!(s.git_verifies("verify-commit", &commit, &allowed), "{kind}");
    }
}

#[test]
fn source_verify_refuses_an_unsigned_commit() {
    let Some(s) = setup() else { return };
    let commit = s.repo.commit("unsigned");
    let run = s.berth("HEAD", &s.allowed, &[]);
    assert_refused(&run, &commit, "it is not signed");
    assert!(!s.git_verifies("verify-commit", "HEAD", &s.allowed));

    let run = s.berth("HEAD", &s.allowed, &["--format", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["verified"], false);
    assert_eq!(json["refusal"]["kind"], "unsigned");
}

#[test]
fn source_verify_refuses_a_key_no_line_lists() {
    let Some(s) = setup() else { return };
    let commit = s.signed(&s.mallory, "by mallory", None);
    let run = s.berth("HEAD", &s.allowed, &[]);
    let fingerprint = s.fingerprint(&s.mallory);
    assert_refused(&run, &commit, &format!("signed by key {fingerprint}"));
    assert!(
        run.stdout.contains("which no allowed signer lists"),
        "{run:?}"
    );
    assert!(!s.git_verifies("verify-commit", "HEAD", &s.allowed));
}

#[test]
fn source_verify_judges_valid_before_at_the_committer_time() {
    let Some(s) = setup() else { return };
    let allowed = write_file(
        &s.repo,
        "expiring",
        &allowed_signer("alice@example.com", "valid-before=\"20250101Z\"", &s.alice),
    );
    // Committed while the key was valid: the key has expired since, which does not
    // undo what it signed.
    let before = s.signed(&s.alice, "while valid", Some("2024-06-01T12:00:00Z"));
    let run = s.berth(&before, &allowed, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(s.git_verifies("verify-commit", &before, &allowed));

    s.repo.write("fleet/web.toml", "# later\n");
    let after = s.signed(&s.alice, "after expiry", Some("2025-06-01T12:00:00Z"));
    let run = s.berth(&after, &allowed, &[]);
    assert_refused(&run, &after, "expired at 2025-01-01T00:00:00Z");
    assert!(
        run.stdout
            .contains("its committer time is 2025-06-01T12:00:00Z"),
        "{run:?}"
    );
    assert!(!s.git_verifies("verify-commit", &after, &allowed));
}

#[test]
fn source_verify_refuses_a_key_not_allowed_for_the_git_namespace() {
    let Some(s) = setup() else { return };
    let allowed = write_file(
        &s.repo,
        "files_only",
        &allowed_signer("alice@example.com", "namespaces=\"file\"", &s.alice),
    );
    let commit = s.signed(&s.alice, "signed", None);
    let run = s.berth("HEAD", &allowed, &[]);
    assert_refused(
        &run,
        &commit,
        "may not sign namespace `git` (namespaces=\"file\"",
    );
    assert!(!s.git_verifies("verify-commit", "HEAD", &allowed));
    assert!(s.git_verifies("verify-commit", "HEAD", &s.allowed));
}

#[test]
fn source_verify_refuses_a_tampered_commit() {
    let Some(s) = setup() else { return };
    let commit = s.signed(&s.alice, "deploy web 1.0", None);
    // The same object, gpgsig header and all, with another message.
    let raw = s.repo.git(&["cat-file", "commit", &commit]) + "\n";
    assert!(
        raw.contains("\ngpgsig -----BEGIN SSH SIGNATURE-----"),
        "{raw}"
    );
    let forged_file = write_file(
        &s.repo,
        "forged",
        &raw.replace("deploy web 1.0", "deploy web 6.6"),
    );
    let forged = s.repo.git(&[
        "hash-object",
        "-w",
        "-t",
        "commit",
        forged_file.to_str().unwrap(),
    ]);
    s.repo.git(&["branch", "forged", &forged]);
    let run = s.berth("forged", &s.allowed, &[]);
    assert_refused(&run, &forged, "was changed after it was signed");
    assert!(!s.git_verifies("verify-commit", "forged", &s.allowed));
    assert!(!s.ssh_keygen_verifies(&forged, &s.allowed, "alice@example.com"));

    // Another tree under the same signature.
    let empty_tree = s
        .repo
        .git(&["hash-object", "-w", "-t", "tree", "/dev/null"]);
    let other = s.repo.forge_tree(&commit, &empty_tree);
    let run = s.berth(&other, &s.allowed, &[]);
    assert_refused(&run, &other, "was changed after it was signed");
    assert!(!s.git_verifies("verify-commit", &other, &s.allowed));
}

#[test]
fn source_verify_a_signed_annotated_tag_verifies() {
    let Some(s) = setup() else { return };
    let commit = s.repo.commit("unsigned, released by a signed tag");
    s.signed_tag(&s.alice, "v1", "release 1", &commit);
    let tag = s.repo.git(&["rev-parse", "v1"]);
    let run = s.berth("v1", &s.allowed, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let line = run.stdout.trim();
    assert!(
        line.starts_with(&format!(
            "verified: tag v1 ({tag}) of commit {commit}: the tag is signed by alice@example.com ({})",
            s.fingerprint(&s.alice)
        )),
        "{run:?}"
    );
    assert!(s.git_verifies("verify-tag", "v1", &s.allowed));

    // The commit alone is unsigned, as git says too.
    let run = s.berth("v1^{commit}", &s.allowed, &[]);
    assert_refused(&run, &commit, "it is not signed");
    assert!(!s.git_verifies("verify-commit", "v1", &s.allowed));

    // A tag signed by an unlisted key does not count, and says why for both.
    s.signed_tag(&s.mallory, "v2", "release 2", &commit);
    let run = s.berth("v2", &s.allowed, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("the tag: it is signed by key"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("the commit: it is not signed"),
        "{run:?}"
    );
    assert!(!s.git_verifies("verify-tag", "v2", &s.allowed));
}

#[test]
fn source_verify_reads_the_node_config_and_finds_the_repository_upwards() {
    let Some(s) = setup() else { return };
    let commit = s.signed(&s.alice, "signed", None);
    let config = s.repo.root().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\nallowed_signers = \"{}\"\n",
            s.repo.file_url(),
            s.allowed.display()
        ),
    )
    .unwrap();
    let sub = s.repo.work().join("fleet");
    let run = run_berth(
        &sub,
        &["--config", config.to_str().unwrap(), "source", "verify"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with(&format!("verified: commit {commit} ")),
        "{run:?}"
    );

    // A config without allowed signers, and none given: the check cannot run.
    std::fs::write(
        &config,
        format!("[source]\nurl = \"{}\"\n", s.repo.file_url()),
    )
    .unwrap();
    let run = run_berth(
        &sub,
        &["--config", config.to_str().unwrap(), "source", "verify"],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("no keys to verify against"), "{run:?}");
}

#[test]
fn source_verify_cannot_run_without_a_repository_or_a_readable_file() {
    let Some(s) = setup() else { return };
    s.signed(&s.alice, "signed", None);
    let outside = tempfile::tempdir().unwrap();
    let allowed = s.allowed.to_str().unwrap();
    let run = run_berth(
        outside.path(),
        &["source", "verify", "--allowed-signers", allowed],
    );
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("no Git repository"), "{run:?}");

    let run = s.berth("HEAD", &s.repo.root().join("missing"), &[]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("cannot read the allowed signers file"),
        "{run:?}"
    );

    let run = s.berth("no-such-rev", &s.allowed, &[]);
    assert_eq!(run.code, 3, "{run:?}");

    // A bad line is judged: located, exit 1.
    let bad = write_file(
        &s.repo,
        "bad",
        "alice@example.com cert-authority ssh-ed25519 AAAA\n",
    );
    let run = s.berth("HEAD", &bad, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!(
            "{}:1: error: `cert-authority`: berth does not verify SSH certificates; list each signer's key instead",
            bad.display()
        )
    );
}
