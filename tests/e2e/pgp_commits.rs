//! OpenPGP-signed commits (`source.trusted_pgp_keys`) end to end: keys made by
//! `gpg --batch --quick-gen-key` in a private GNUPGHOME, commits by real `git commit -S`
//! (`gpg.format=openpgp`), public keys exported with `gpg --export --armor`.
//! - a good commit is applied by the agent (`berth agent`, on subnet 10.251.70.0/24) and
//!   verified by `berth source verify`; unsigned, unknown-key, expired-key and tampered
//!   commits are refused, the running container's PID stays the same and `berth status`
//!   says why;
//! - a commit signed by a signing subkey names its primary key;
//! - a repository mixing SSH- and OpenPGP-signed commits is followed (`berth agent
//!   --once`) with both kinds of key configured, and a kind without keys is refused by
//!   name.
//!
//! Debian packages: `git`, `gnupg`, `openssh-client` (and what the live node needs).

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::agentd::poll;
use berth_e2e::git::{CommitOptions, GitRepo, allowed_signer, git_command, ssh_keygen};
use berth_e2e::live::LiveNode;
use berth_e2e::{Run, have_tools, run_berth};

use crate::agent_daemon::{CONVERGE, Host};

/// Audit mode: the tests are about the source, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
const SPECS: &str = "fleet";

/// A private GNUPGHOME; its gpg-agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Gpg { home }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `gpg --quick-gen-key UID ALGO USAGE EXPIRE`; returns the key's fingerprint.
    fn gen_key(&self, uid: &str, algo: &str, usage: &str, expire: &str) -> String {
        self.run(&["--quick-gen-key", uid, algo, usage, expire]);
        self.fingerprint(uid)
    }

    /// The primary key's fingerprint of `uid`.
    fn fingerprint(&self, uid: &str) -> String {
        let listing = self.run(&["--with-colons", "--list-keys", uid]);
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').nth(8))
            .unwrap_or_else(|| panic!("no fingerprint for {uid} in {listing}"))
            .to_string()
    }

    /// `gpg --export --armor FPR… > DIR/NAME`.
    fn export(&self, dir: &Path, name: &str, fprs: &[&str]) -> PathBuf {
        let mut args = vec!["--export", "--armor"];
        args.extend_from_slice(fprs);
        let armored = self.run(&args);
        assert!(armored.contains("BEGIN PGP PUBLIC KEY BLOCK"), "{armored}");
        let path = dir.join(name);
        std::fs::write(&path, armored).unwrap();
        path
    }

    /// `git commit -S` of everything in the work clone with `gpg.format=openpgp` and
    /// `user.signingkey=KEY`, committed at `date` when given; returns the commit.
    fn commit(&self, repo: &GitRepo, key: &str, message: &str, date: Option<&str>) -> String {
        repo.git(&["add", "-A"]);
        let mut cmd = git_command(&repo.work());
        cmd.env("GNUPGHOME", self.home.path()).args([
            "-c",
            "gpg.format=openpgp",
            "-c",
            &format!("user.signingkey={key}"),
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ]);
        if let Some(date) = date {
            cmd.env("GIT_COMMITTER_DATE", date)
                .env("GIT_AUTHOR_DATE", date);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "git commit -S: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        repo.head()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn tools() -> bool {
    have_tools(&["git", "gpg", "gpgconf"])
}

fn show(r: &Run) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// A TOML string.
fn q(p: &Path) -> String {
    format!("{:?}", p.to_string_lossy())
}

/// A TOML array of paths.
fn paths(ps: &[&Path]) -> String {
    let items: Vec<String> = ps.iter().map(|p| q(p)).collect();
    format!("[{}]", items.join(", "))
}

/// Follows branch `main` of `repo` (its `fleet` directory) with `keys` lines.
fn follow(node: &LiveNode, repo: &GitRepo, keys: &str) {
    let text = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        format!(
            "{text}\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"{SPECS}\"\n{keys}",
            repo.file_url()
        ),
    )
    .unwrap();
}

/// `fleet/web.toml`: `sleep SECS` (a changed `secs` is a changed spec).
fn write_web(node: &LiveNode, repo: &GitRepo, secs: u32) {
    repo.write(
        &format!("{SPECS}/web.toml"),
        &format!(
            "[container.web]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n",
            node.image
        ),
    );
}

fn applied(node: &LiveNode) -> serde_json::Value {
    let text = std::fs::read_to_string(node.state().join("state/applied.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn pid(node: &LiveNode) -> i64 {
    let ps = node.ps();
    ps.as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "web"))
        .and_then(|c| c["pid"].as_i64())
        .unwrap_or_else(|| panic!("no running web in {ps}"))
}

/// `berth agent --once` applies `commit`.
fn applies(node: &LiveNode, commit: &str) {
    let r = node.berth(&["agent", "--once"]);
    assert_eq!(r.code, 0, "{}", show(&r));
    assert_eq!(applied(node)["revision"]["commit"], commit, "{}", show(&r));
}

/// `berth source verify COMMIT --format json` in the work clone, with `keys` flags (the
/// node config's keys when empty).
fn verify(
    node: &LiveNode,
    repo: &GitRepo,
    commit: &str,
    keys: &[&str],
) -> (Run, serde_json::Value) {
    let work = repo.work();
    let mut args = vec![
        "source",
        "verify",
        commit,
        "--repo",
        work.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(keys);
    let r = node.berth(&args);
    let doc = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&r)));
    (r, doc)
}

/// Unix seconds from now, as git takes a date (`@SECS +0000`).
fn date_in(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("@{} +0000", i64::try_from(now).unwrap() + days * 86_400)
}

#[test]
fn openpgp_signed_commits_are_applied_and_every_bad_signature_is_refused() {
    if !tools() {
        return;
    }
    let Some(mut h) = Host::on("10.251.70", "") else {
        return;
    };
    let gpg = Gpg::new();
    let keys = tempfile::tempdir().unwrap();
    let ops = gpg.gen_key("Ops <ops@berth.example>", "ed25519", "sign", "1y");
    let stranger = gpg.gen_key("Stranger <x@elsewhere.example>", "ed25519", "sign", "1y");
    let brief = gpg.gen_key("Brief <brief@berth.example>", "ed25519", "sign", "1d");
    let ops_asc = gpg.export(keys.path(), "ops.asc", &[&ops]);
    let brief_asc = gpg.export(keys.path(), "brief.asc", &[&brief]);

    h.sleeper("web", 1000);
    let good = gpg.commit(&h.repo, &format!("{ops}!"), "web, signed", None);
    h.repo.push();
    h.follow(&h.repo.file_url());
    let mut config = std::fs::read_to_string(&h.node.config).unwrap();
    config.push_str(&format!(
        "trusted_pgp_keys = {}\n",
        paths(&[&ops_asc, &brief_asc])
    ));
    std::fs::write(&h.node.config, config).unwrap();
    h.start();
    h.wait_converged(&good);
    let signer = &applied(&h.node)["revision"]["signer"];
    assert_eq!(signer["kind"], "openpgp", "{signer}");
    assert_eq!(signer["key"], ops.as_str(), "{signer}");
    assert_eq!(signer["principal"], "Ops <ops@berth.example>", "{signer}");
    let status = h.node.berth(&["status"]);
    assert!(
        status.stdout.contains(&format!(
            "signer:  Ops <ops@berth.example> (OpenPGP key {ops}, commit signature)"
        )),
        "{}",
        show(&status)
    );
    let running = pid(&h.node);

    // berth source verify agrees, with the node config's keys and with the flag.
    let (r, doc) = verify(&h.node, &h.repo, &good, &[]);
    assert_eq!(r.code, 0, "{}", show(&r));
    assert_eq!(doc["signature"]["kind"], "openpgp", "{doc}");
    assert_eq!(doc["signature"]["key"], ops.as_str(), "{doc}");
    assert_eq!(
        doc["signature"]["user_id"], "Ops <ops@berth.example>",
        "{doc}"
    );
    let (r, _) = verify(
        &h.node,
        &h.repo,
        &good,
        &["--trusted-pgp-keys", ops_asc.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", show(&r));

    // Each pushed and refused by the agent (`berth status` says why, web untouched,
    // nothing checked out) and by `berth source verify` (exit 1, the same reason).
    let refused = |commit: &str, kind: &str, why: &str| {
        let status = poll(
            &format!("the refusal of {commit}"),
            CONVERGE,
            || {
                let r = h.node.berth(&["status"]);
                r.stdout
                    .contains(&format!("refused: commit {commit}"))
                    .then_some(r)
            },
            || h.context(),
        );
        assert!(
            status.stdout.contains(why),
            "status does not say `{why}`:\n{}",
            show(&status)
        );
        assert_eq!(pid(&h.node), running, "web was restarted:\n{}", h.context());
        assert_eq!(applied(&h.node)["revision"]["commit"], good.as_str());
        assert!(
            !h.node
                .state()
                .join("source/revisions")
                .join(commit)
                .exists(),
            "a refused revision was checked out"
        );
        let (r, doc) = verify(&h.node, &h.repo, commit, &[]);
        assert_eq!(r.code, 1, "{}", show(&r));
        assert_eq!(doc["refusal"]["kind"], kind, "{doc}");
        assert!(
            doc["refusal"]["reason"].as_str().unwrap().contains(why),
            "{doc}"
        );
    };

    h.sleeper("web", 1001);
    let unsigned = h.push("web, unsigned");
    refused(&unsigned, "unsigned", "it is not signed");

    h.sleeper("web", 1002);
    let unknown = gpg.commit(&h.repo, &format!("{stranger}!"), "web, by a stranger", None);
    h.repo.push();
    refused(
        &unknown,
        "unknown_key",
        &format!("it is signed by OpenPGP key {stranger}, which no trusted OpenPGP key holds"),
    );

    // Signed now by a key that expires tomorrow, committed the day after: judged at the
    // committer time, the key had expired.
    h.sleeper("web", 1003);
    let expired = gpg.commit(
        &h.repo,
        &format!("{brief}!"),
        "web, late",
        Some(&date_in(2)),
    );
    h.repo.push();
    refused(
        &expired,
        "expired",
        &format!(
            "it is signed by OpenPGP key {brief} (Brief <brief@berth.example>), which expired at"
        ),
    );

    // The good commit's signature over another tree.
    let tree = h.repo.git(&["rev-parse", &format!("{expired}^{{tree}}")]);
    let forged = h.repo.forge_tree(&good, &tree);
    h.repo.push_commit(&forged, "main");
    refused(&forged, "bad_signature", "changed after it was signed");

    // The short-lived key vouches for what it signed while valid.
    h.sleeper("web", 1004);
    let in_time = gpg.commit(&h.repo, &format!("{brief}!"), "web, in time", None);
    h.repo.push();
    h.wait_converged(&in_time);
    assert_eq!(
        applied(&h.node)["revision"]["signer"]["key"],
        brief.as_str()
    );
    assert_ne!(pid(&h.node), running, "web was not recreated");
}

#[test]
fn a_signing_subkey_verifies_and_names_its_primary_key() {
    if !tools() {
        return;
    }
    let repo = GitRepo::new().unwrap();
    let gpg = Gpg::new();
    let primary = gpg.gen_key("Sub <sub@berth.example>", "ed25519", "cert", "never");
    gpg.run(&["--quick-add-key", &primary, "ed25519", "sign", "1y"]);
    let asc = gpg.export(repo.root(), "sub.asc", &[&primary]);
    repo.write("fleet/web.toml", "# web\n");
    // Without `!`, gpg signs with the signing subkey.
    let commit = gpg.commit(&repo, &primary, "signed by the subkey", None);
    let work = repo.work();
    let r = run_berth(
        repo.root(),
        &[
            "source",
            "verify",
            &commit,
            "--repo",
            work.to_str().unwrap(),
            "--trusted-pgp-keys",
            asc.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(r.code, 0, "{}", show(&r));
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let sig = &doc["signature"];
    assert_eq!(sig["primary_key"], primary.as_str(), "{doc}");
    assert_ne!(sig["key"], primary.as_str(), "{doc}");
    // git agrees it is good.
    let out = git_command(&work)
        .env("GNUPGHOME", gpg.home.path())
        .args(["verify-commit", &commit])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `berth source verify COMMIT` in `work` against `keys` (each file after its own
/// `--trusted-pgp-keys`, the revision after them), as JSON.
fn verify_with(repo: &GitRepo, commit: &str, keys: &[&Path]) -> (Run, serde_json::Value) {
    let work = repo.work();
    let mut args = vec!["source", "verify", "--repo", work.to_str().unwrap()];
    args.extend(["--format", "json"]);
    for key in keys {
        args.extend(["--trusted-pgp-keys", key.to_str().unwrap()]);
    }
    args.push(commit);
    let r = run_berth(repo.root(), &args);
    let doc = serde_json::from_str(&r.stdout).unwrap_or_default();
    (r, doc)
}

#[test]
fn a_renewed_key_keeps_verifying_what_it_signed_before_and_its_new_expiry_counts() {
    if !tools() || !have_tools(&["ssh-keygen"]) {
        return;
    }
    let repo = GitRepo::new().unwrap();
    let gpg = Gpg::new();
    let key = gpg.gen_key("Renew <renew@berth.example>", "ed25519", "sign", "1d");
    let other = gpg.gen_key("Other <other@berth.example>", "ed25519", "sign", "1y");
    repo.write("fleet/web.toml", "# web\n");
    let before = gpg.commit(&repo, &format!("{key}!"), "before the renewal", None);
    // The renewal's self-signature, which replaces the old one, is newer than the commit.
    std::thread::sleep(std::time::Duration::from_secs(2));
    gpg.run(&["--quick-set-expire", &key, "1y"]);
    let renewed = gpg.export(repo.root(), "renewed.asc", &[&key]);
    let others = gpg.export(repo.root(), "other.asc", &[&other]);
    let (r, doc) = verify_with(&repo, &before, &[&others, &renewed]);
    assert_eq!(r.code, 0, "{}", show(&r));
    assert_eq!(doc["signature"]["key"], key.as_str(), "{doc}");
    // gpg agrees.
    let out = git_command(&repo.work())
        .env("GNUPGHOME", gpg.home.path())
        .args(["verify-commit", &before])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Given SSH signers only, the refusal names the flag that would give OpenPGP keys.
    let ssh = ssh_keygen(repo.root(), "ops");
    let signers = repo.root().join("allowed_signers");
    std::fs::write(&signers, allowed_signer("ops@berth.example", "", &ssh)).unwrap();
    let work = repo.work();
    let r = run_berth(
        repo.root(),
        &[
            "source",
            "verify",
            "--repo",
            work.to_str().unwrap(),
            "--allowed-signers",
            signers.to_str().unwrap(),
            &before,
        ],
    );
    assert_eq!(r.code, 1, "{}", show(&r));
    assert!(
        r.stderr
            .contains("hint: it carries an OpenPGP signature: pass --trusted-pgp-keys FILE"),
        "{}",
        show(&r)
    );
    // Committed after the renewed expiry: refused.
    let late = gpg.commit(&repo, &format!("{key}!"), "late", Some(&date_in(400)));
    let (r, doc) = verify_with(&repo, &late, &[&renewed]);
    assert_eq!(r.code, 1, "{}", show(&r));
    assert_eq!(doc["refusal"]["kind"], "expired", "{doc}");
}

#[test]
fn a_repository_mixing_ssh_and_openpgp_signed_commits_works_with_both_kinds_of_key() {
    if !tools() || !have_tools(&["ssh-keygen"]) {
        return;
    }
    let Some(node) = LiveNode::start(POLICY, "") else {
        return;
    };
    let repo = GitRepo::new().unwrap();
    let gpg = Gpg::new();
    let keys = tempfile::tempdir().unwrap();
    let pgp_key = gpg.gen_key("Ops <ops@berth.example>", "ed25519", "sign", "1y");
    let asc = gpg.export(keys.path(), "ops.asc", &[&pgp_key]);
    let ssh = ssh_keygen(keys.path(), "ops");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, allowed_signer("ops@berth.example", "", &ssh)).unwrap();
    follow(
        &node,
        &repo,
        &format!(
            "allowed_signers = {}\ntrusted_pgp_keys = {}\n",
            q(&signers),
            paths(&[&asc])
        ),
    );
    let ssh_signed = |message: &str| {
        repo.commit_with(
            message,
            &CommitOptions {
                sign_with: Some(&ssh.private),
                date: None,
            },
        )
    };

    write_web(&node, &repo, 1000);
    let first = ssh_signed("web, SSH-signed");
    repo.push();
    applies(&node, &first);
    assert_eq!(applied(&node)["revision"]["signer"]["kind"], "ssh");

    write_web(&node, &repo, 1001);
    let second = gpg.commit(&repo, &format!("{pgp_key}!"), "web, OpenPGP-signed", None);
    repo.push();
    applies(&node, &second);
    assert_eq!(applied(&node)["revision"]["signer"]["kind"], "openpgp");

    write_web(&node, &repo, 1002);
    let third = ssh_signed("web, SSH-signed again");
    repo.push();
    applies(&node, &third);
    assert_eq!(applied(&node)["revision"]["signer"]["kind"], "ssh");

    // Both verify with the node config's keys; a kind without keys is refused by name.
    for (commit, kind) in [(&first, "ssh"), (&second, "openpgp")] {
        let (r, doc) = verify(&node, &repo, commit, &[]);
        assert_eq!(
            (r.code, doc["signature"]["kind"].as_str()),
            (0, Some(kind)),
            "{doc}"
        );
    }
    let (r, doc) = verify(
        &node,
        &repo,
        &second,
        &["--allowed-signers", signers.to_str().unwrap()],
    );
    assert_eq!(r.code, 1, "{}", show(&r));
    assert_eq!(doc["refusal"]["kind"], "no_keys", "{doc}");
    assert_eq!(
        doc["refusal"]["reason"],
        "it carries an OpenPGP signature, but the node trusts no OpenPGP keys (`source.trusted_pgp_keys` is not set)"
    );
}
