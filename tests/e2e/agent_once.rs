//! `berth agent --once` end to end, as root: a real git repository served on loopback
//! (smart HTTP through `git http-backend`, plain, TLS and Basic auth; a real `sshd`;
//! `file://` and a local path), the busybox image from a loopback registry, runc and
//! CNI. Each test pushes commits and runs one follow of the source after each:
//! - every transport applies a pushed commit; an untrusted CA and a wrong host key are
//!   refused; credentials never show;
//! - a branch, a tag and a pinned commit are followed; a change recreates only the
//!   changed container, and a deleted spec is removed;
//! - with `allowed_signers`, a good `git commit -S` is applied, and an unsigned
//!   commit, an unknown key, an expired key and a forged commit are refused while the
//!   running container keeps running;
//! - with the server stopped, the containers keep running and the run exits 1;
//! - a shallow fetch over HTTP holds one commit of a 1,000-commit history, and moves
//!   fewer bytes than a full one.

use std::path::{Path, PathBuf};

use berth_e2e::Run;
use berth_e2e::git::{
    self, CommitOptions, GitHttpServer, GitRepo, HttpOptions, Sshd, TestCa, allowed_signer,
    ssh_keygen,
};
use berth_e2e::live::LiveNode;

/// Audit mode: the tests are about the source, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
/// Where the specs live in the test repositories (`source.path`).
const SPECS: &str = "fleet";

/// A node with no source yet, and an empty repository.
fn setup() -> Option<(LiveNode, GitRepo)> {
    let node = LiveNode::start(POLICY, "")?;
    let repo = GitRepo::new()?;
    Some((node, repo))
}

/// Writes `fleet/NAME.toml`: one container running `sleep SECS` (a changed `secs` is
/// a changed spec). `sleep` as PID 1 ignores SIGTERM: SIGKILL stops it at once.
fn write_container(node: &LiveNode, repo: &GitRepo, name: &str, secs: u32) {
    repo.write(
        &format!("{SPECS}/{name}.toml"),
        &format!(
            "[container.{name}]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n",
            node.image
        ),
    );
}

/// Replaces the node configuration's `[source]` (kept last in the file) with `keys`.
fn set_source(node: &LiveNode, keys: &str) {
    let text = std::fs::read_to_string(&node.config).unwrap();
    let base = text.split("\n[source]\n").next().unwrap_or(&text);
    std::fs::write(&node.config, format!("{base}\n[source]\n{keys}")).unwrap();
}

/// Follows branch `main` of `url` (its `fleet` directory), with `extra` keys.
fn follow(node: &LiveNode, url: &str, extra: &str) {
    set_source(
        node,
        &format!(
            "url = {}\nbranch = \"main\"\npath = \"{SPECS}\"\n{extra}",
            q(url)
        ),
    );
}

/// Commits and pushes `fleet/web.toml` (`sleep 1000`); returns the commit.
fn push_web(node: &LiveNode, repo: &GitRepo) -> String {
    write_container(node, repo, "web", 1000);
    let commit = repo.commit("web");
    repo.push();
    commit
}

/// Runs `--once` and asserts it exited 0, printed each of `lines` and applied
/// `commit`.
fn once_applies(node: &LiveNode, lines: &[&str], commit: &str) -> Run {
    let r = once(node);
    expect(&r, 0);
    for line in lines {
        assert_line(&r, line);
    }
    assert_applied(node, &r, commit);
    r
}

/// Asserts `--once` could not run (exit 3) and nothing was applied or runs.
fn assert_nothing_runs(node: &LiveNode, r: &Run) {
    expect(r, 3);
    assert!(applied(node).is_none(), "{}", show(r));
    assert!(names(node).is_empty(), "{:?}", names(node));
}

/// A TOML string (paths and URLs).
fn q(s: impl AsRef<str>) -> String {
    format!("{:?}", s.as_ref())
}

fn qp(p: &Path) -> String {
    q(p.to_string_lossy())
}

fn once(node: &LiveNode) -> Run {
    node.berth(&["agent", "--once"])
}

fn show(r: &Run) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// Asserts `--once` exited `code`.
fn expect(r: &Run, code: i32) {
    assert_eq!(r.code, code, "{}", show(r));
}

/// The running containers' main PIDs, from `berth ps --format json`.
fn pid(node: &LiveNode, name: &str) -> i64 {
    let r = node.berth(&["ps", "-a", "--format", "json"]);
    let ps: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    ps.as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .and_then(|c| c["pid"].as_i64())
        .unwrap_or_else(|| panic!("no running {name} in {ps}"))
}

/// The container names `berth ps -a` lists.
fn names(node: &LiveNode) -> Vec<String> {
    let r = node.berth(&["ps", "-a", "--format", "json"]);
    let ps: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut names: Vec<String> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// `<state_dir>/source`.
fn source_dir(node: &LiveNode) -> PathBuf {
    node.state().join("source")
}

/// The applied-revision record (DESIGN §7 keeps it under `state/`; `source/` is
/// accepted too). `None` when nothing was applied from the source.
fn applied(node: &LiveNode) -> Option<serde_json::Value> {
    ["state/applied.json", "source/applied.json"]
        .iter()
        .map(|rel| node.state().join(rel))
        .find(|p| p.is_file())
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
}

/// The commit the record says was applied last.
fn applied_commit(node: &LiveNode) -> String {
    let a = applied(node).unwrap_or_else(|| panic!("no applied.json"));
    a["revision"]["commit"]
        .as_str()
        .or_else(|| a["commit"].as_str())
        .unwrap_or_else(|| panic!("no commit in {a}"))
        .to_string()
}

/// `commit` was applied: said on stdout, recorded, checked out in its own directory,
/// and shown by `berth ps`.
fn assert_applied(node: &LiveNode, r: &Run, commit: &str) {
    assert!(r.stdout.contains(commit), "no {commit} in:\n{}", show(r));
    assert_eq!(applied_commit(node), commit, "{}", show(r));
    let checkout = source_dir(node).join("revisions").join(commit);
    assert!(
        checkout.is_dir(),
        "{} is not a directory",
        checkout.display()
    );
    assert!(
        source_dir(node).join("repo.git").is_dir(),
        "no bare clone under {}",
        source_dir(node).display()
    );
    let ps = node.berth(&["ps"]);
    assert!(ps.stdout.contains(&commit[..12]), "ps:\n{}", show(&ps));
}

/// Asserts a line of `r`'s output says `what` about a container.
fn assert_line(r: &Run, what: &str) {
    assert!(
        r.stdout
            .lines()
            .any(|l| l.trim() == what || l.contains(what)),
        "no `{what}` in:\n{}",
        show(r)
    );
}

/// Asserts that `r`'s output mentions one of `words` (case-insensitive).
fn assert_says(r: &Run, words: &[&str]) {
    let text = format!("{}{}", r.stdout, r.stderr).to_lowercase();
    assert!(
        words.iter().any(|w| text.contains(&w.to_lowercase())),
        "none of {words:?} in:\n{}",
        show(r)
    );
}

/// `git -C <clone> rev-list --all --count`.
fn commits_in_clone(node: &LiveNode) -> usize {
    git::git(
        &source_dir(node).join("repo.git"),
        &["rev-list", "--all", "--count"],
    )
    .parse()
    .unwrap()
}

#[test]
fn file_url_follows_a_branch_recreates_only_the_changed_container_and_removes_a_deleted_one() {
    let Some((node, repo)) = setup() else {
        return;
    };
    write_container(&node, &repo, "web", 1000);
    write_container(&node, &repo, "db", 2000);
    // Outside `source.path`: never read.
    repo.write("broken.toml", "[container.x\n");
    let c1 = repo.commit("web and db");
    repo.push();
    follow(&node, &repo.file_url(), "");

    once_applies(&node, &["web: created", "db: created"], &c1);
    let a = applied(&node).unwrap();
    let rev = if a["revision"].is_object() {
        &a["revision"]
    } else {
        &a
    };
    assert_eq!(rev["subject"], "web and db", "{a}");
    assert!(
        rev["author"]
            .as_str()
            .unwrap()
            .contains("test@berth.example"),
        "{a}"
    );
    assert!(rev["time"].is_string(), "{a}");

    let r = once(&node);
    expect(&r, 0);
    assert_line(&r, "web: unchanged");
    assert_line(&r, "db: unchanged");

    let db = pid(&node, "db");
    write_container(&node, &repo, "web", 1001);
    let c2 = repo.commit("web: sleep longer");
    repo.push();
    once_applies(&node, &["web: recreated", "db: unchanged"], &c2);
    assert_eq!(pid(&node, "db"), db, "db was restarted");

    repo.remove(&format!("{SPECS}/db.toml"));
    let c3 = repo.commit("db: gone");
    repo.push();
    once_applies(&node, &["db: removed", "web: unchanged"], &c3);
    assert_eq!(names(&node), ["web"]);
}

#[test]
fn a_local_path_follows_a_tag_and_a_pinned_commit() {
    let Some((node, repo)) = setup() else {
        return;
    };
    write_container(&node, &repo, "web", 1000);
    let c1 = repo.commit("web 1");
    repo.tag("v1", &c1, Some("release 1"));
    write_container(&node, &repo, "web", 1001);
    let c2 = repo.commit("web 2");
    repo.push();
    let url = qp(&repo.bare());

    // The tag, not the branch's newer commit.
    set_source(
        &node,
        &format!("url = {url}\ntag = \"v1\"\npath = \"{SPECS}\"\n"),
    );
    once_applies(&node, &["web: created"], &c1);

    // The tag moves: followed.
    repo.tag("v1", &c2, Some("release 1, again"));
    once_applies(&node, &["web: recreated"], &c2);

    // A pinned commit, older than the branch's head.
    write_container(&node, &repo, "web", 1002);
    repo.commit("web 3");
    repo.push();
    set_source(
        &node,
        &format!("url = {url}\ncommit = \"{c1}\"\npath = \"{SPECS}\"\n"),
    );
    once_applies(&node, &["web: recreated"], &c1);
    let r = once(&node);
    expect(&r, 0);
    assert_line(&r, "web: unchanged");
}

#[test]
fn smart_http_applies_a_pushed_commit_and_the_next_one() {
    let Some((node, repo)) = setup() else {
        return;
    };
    let Some(server) = GitHttpServer::start(repo.root(), &HttpOptions::default()) else {
        return;
    };
    let c1 = push_web(&node, &repo);
    follow(&node, &server.url("repo.git"), "");
    once_applies(&node, &["web: created"], &c1);
    assert!(
        server
            .requests()
            .iter()
            .any(|l| l.contains("git-upload-pack")),
        "{:?}",
        server.requests()
    );

    write_container(&node, &repo, "web", 1001);
    let c2 = repo.commit("web: sleep longer");
    repo.push();
    once_applies(&node, &["web: recreated"], &c2);
}

#[test]
fn https_trusts_the_ca_file_and_refuses_an_untrusted_ca() {
    let Some((node, repo)) = setup() else {
        return;
    };
    let Some((ca, other)) = TestCa::pair() else {
        return;
    };
    let Some(server) = GitHttpServer::start(repo.root(), &HttpOptions::tls(&ca)) else {
        return;
    };
    let c1 = push_web(&node, &repo);
    let url = server.url("repo.git");

    // Another CA: the server is refused, and with no revision before, nothing runs.
    follow(&node, &url, &format!("ca_file = {}\n", qp(&other.ca)));
    let r = once(&node);
    assert_nothing_runs(&node, &r);
    assert_says(&r, &["certificate", "tls", "ssl"]);

    follow(&node, &url, &format!("ca_file = {}\n", qp(&ca.ca)));
    once_applies(&node, &["web: created"], &c1);
}

#[test]
fn http_basic_auth_takes_the_credentials_file_and_never_shows_the_password() {
    let Some((node, repo)) = setup() else {
        return;
    };
    const PASSWORD: &str = "Tr0ub4dor-and-3-horses";
    const WRONG: &str = "c0rrect-h0rse-battery";
    let opts = HttpOptions {
        basic: Some(("alice".into(), PASSWORD.into())),
        ..HttpOptions::default()
    };
    let Some(server) = GitHttpServer::start(repo.root(), &opts) else {
        return;
    };
    let c1 = push_web(&node, &repo);
    let creds = node.dir.path().join("git-credentials");
    let source = |creds_line: &str| {
        std::fs::write(&creds, format!("{creds_line}\n")).unwrap();
        follow(
            &node,
            &server.url("repo.git"),
            &format!("credentials_file = {}\n", qp(&creds)),
        );
    };
    let no_secret = |r: &Run| {
        for secret in [PASSWORD, WRONG] {
            assert!(
                !r.stdout.contains(secret) && !r.stderr.contains(secret),
                "a password in the output:\n{}",
                show(r)
            );
        }
    };

    source(&format!("alice:{WRONG}"));
    let r = once(&node);
    assert_nothing_runs(&node, &r);
    no_secret(&r);
    assert!(
        server.requests().iter().any(|l| l.contains(" 401 ")),
        "{:?}",
        server.requests()
    );

    source(&format!("alice:{PASSWORD}"));
    no_secret(&once_applies(&node, &["web: created"], &c1));
    let record = serde_json::to_string(&applied(&node).unwrap()).unwrap();
    assert!(!record.contains(PASSWORD), "{record}");
    no_secret(&node.berth(&["ps"]));

    // Credentials in the URL itself: shown without them, anywhere.
    let with_userinfo = format!(
        "http://alice:{PASSWORD}@127.0.0.1:{}/repo.git",
        server.port()
    );
    follow(&node, &with_userinfo, "");
    for args in [&["agent", "--once"][..], &["agent", "--check"], &["ps"]] {
        let r = node.berth(args);
        no_secret(&r);
        assert!(!r.stdout.contains("alice:"), "{args:?}: {}", show(&r));
    }
    let record = serde_json::to_string(&applied(&node).unwrap()).unwrap();
    assert!(!record.contains(PASSWORD), "{record}");
}

#[test]
fn ssh_checks_the_host_key_and_refuses_a_wrong_one() {
    let Some((node, repo)) = setup() else {
        return;
    };
    let Some(sshd) = Sshd::start() else {
        return;
    };
    let c1 = push_web(&node, &repo);
    let source = |known_hosts: &Path| {
        follow(
            &node,
            &sshd.url(&repo.bare()),
            &format!(
                "ssh_key = {}\nknown_hosts = {}\n",
                qp(&sshd.client_key.private),
                qp(known_hosts)
            ),
        );
    };

    source(&sshd.wrong_known_hosts);
    let r = once(&node);
    assert_nothing_runs(&node, &r);
    assert_says(&r, &["host key"]);

    source(&sshd.known_hosts);
    once_applies(&node, &["web: created"], &c1);
    assert!(
        sshd.log().contains("Accepted publickey"),
        "sshd log:\n{}",
        sshd.log()
    );
}

#[test]
fn signed_commits_are_applied_and_every_bad_signature_is_refused() {
    if !berth_e2e::have_tools(&["ssh-keygen"]) {
        return;
    }
    let Some((node, repo)) = setup() else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let ops = ssh_keygen(keys.path(), "ops");
    let stranger = ssh_keygen(keys.path(), "stranger");
    let retired = ssh_keygen(keys.path(), "retired");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(
        &signers,
        allowed_signer("ops@berth.example", "namespaces=\"git\"", &ops)
            + &allowed_signer(
                "retired@berth.example",
                "namespaces=\"git\",valid-before=\"20200101\"",
                &retired,
            ),
    )
    .unwrap();
    follow(
        &node,
        &repo.file_url(),
        &format!("allowed_signers = {}\n", qp(&signers)),
    );
    let signed = |key: &Path, date: Option<&str>, message: &str| {
        repo.commit_with(
            message,
            &CommitOptions {
                sign_with: Some(key),
                date,
            },
        )
    };

    write_container(&node, &repo, "web", 1000);
    let good = signed(&ops.private, None, "web, signed");
    repo.push();
    once_applies(&node, &["web: created"], &good);
    let a = applied(&node).unwrap();
    assert_eq!(
        a["revision"]["signer"]["principal"], "ops@berth.example",
        "{a}"
    );
    let running = pid(&node, "web");

    // Each refused: exit 1, the commit and the reason named, the container untouched.
    let refused = |commit: &str, why: &[&str]| {
        let r = once(&node);
        expect(&r, 1);
        assert!(
            r.stdout.contains(&format!("refused: commit {commit}")),
            "{}",
            show(&r)
        );
        assert_says(&r, why);
        assert_eq!(
            pid(&node, "web"),
            running,
            "web was restarted:\n{}",
            show(&r)
        );
        assert_eq!(applied_commit(&node), good);
        assert!(
            !source_dir(&node).join("revisions").join(commit).exists(),
            "a refused revision was checked out"
        );
    };

    write_container(&node, &repo, "web", 1001);
    let unsigned = repo.commit("web, unsigned");
    repo.push();
    refused(&unsigned, &["not signed", "unsigned", "no signature"]);

    write_container(&node, &repo, "web", 1002);
    let unknown = signed(&stranger.private, None, "web, signed by a stranger");
    repo.push();
    refused(
        &unknown,
        &[
            "no allowed signer",
            "not an allowed signer",
            "not allowed",
            "unknown key",
        ],
    );

    write_container(&node, &repo, "web", 1003);
    let expired = signed(
        &retired.private,
        Some("2021-06-01T12:00:00Z"),
        "web, signed by a retired key",
    );
    repo.push();
    refused(&expired, &["expired", "valid-before"]);

    // The good commit's signature over another tree (web with another command).
    let tree = repo.git(&["rev-parse", &format!("{expired}^{{tree}}")]);
    let forged = repo.forge_tree(&good, &tree);
    repo.push_commit(&forged, "main");
    refused(
        &forged,
        &[
            "does not verify",
            "does not match",
            "changed after it was signed",
        ],
    );

    // A key valid until 2020 still vouches for what it signed before then, as git
    // judges it (at the committer time).
    write_container(&node, &repo, "web", 1004);
    let before_expiry = signed(
        &retired.private,
        Some("2019-06-01T12:00:00Z"),
        "web, signed before the key was retired",
    );
    repo.push();
    once_applies(&node, &["web: recreated"], &before_expiry);
    let a = applied(&node).unwrap();
    assert_eq!(
        a["revision"]["signer"]["principal"], "retired@berth.example",
        "{a}"
    );
}

#[test]
fn an_outage_keeps_the_containers_running_and_exits_1() {
    let Some((node, repo)) = setup() else {
        return;
    };
    let Some(mut server) = GitHttpServer::start(repo.root(), &HttpOptions::default()) else {
        return;
    };
    let c1 = push_web(&node, &repo);
    follow(&node, &server.url("repo.git"), "");
    once_applies(&node, &["web: created"], &c1);
    let running = pid(&node, "web");

    server.stop();
    let r = once(&node);
    expect(&r, 1);
    assert_says(&r, &["source unavailable"]);
    assert_eq!(pid(&node, "web"), running, "web was restarted");
    assert_eq!(applied_commit(&node), c1);
    let ps = node.berth(&["ps"]);
    assert!(ps.stdout.contains("running"), "{}", show(&ps));
}

#[test]
fn a_shallow_fetch_over_http_holds_one_commit_of_a_long_history() {
    let Some((node, repo)) = setup() else {
        return;
    };
    let Some(server) = GitHttpServer::start(repo.root(), &HttpOptions::default()) else {
        return;
    };
    repo.fill_history(999);
    let head = push_web(&node, &repo);
    assert_eq!(
        git::git(&repo.bare(), &["rev-list", "--count", "main"]),
        "1000"
    );

    // The default depth, 1.
    follow(&node, &server.url("repo.git"), "");
    once_applies(&node, &["web: created"], &head);
    assert_eq!(commits_in_clone(&node), 1);
    let shallow = server.bytes_sent();

    // The full history, into a fresh clone.
    std::fs::remove_dir_all(source_dir(&node).join("repo.git")).unwrap();
    follow(&node, &server.url("repo.git"), "depth = 0\n");
    let r = once(&node);
    expect(&r, 0);
    assert_line(&r, "web: unchanged");
    assert_eq!(commits_in_clone(&node), 1000);
    let full = server.bytes_sent() - shallow;
    eprintln!(
        "shallow fetch over smart HTTP, 1,000 commits: depth=1 {shallow} bytes sent, depth=0 {full} bytes sent"
    );
    assert!(shallow < full, "shallow {shallow} >= full {full}");
}
