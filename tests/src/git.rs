//! Git fixtures for the source tests, all real programs on loopback:
//!
//! - [`GitRepo`]: a bare repository and a work clone in one temp dir; write spec
//!   files, commit (optionally SSH-signed with `git commit -S`, at a set committer
//!   date), push, tag, fill a long history fast (`git fast-import`), and forge a
//!   tampered commit.
//! - [`GitHttpServer`]: `tests/support/git-http-server.py`, smart HTTP through
//!   `git http-backend`, plain or TLS, optionally behind Basic auth, counting the bytes
//!   it sends.
//! - [`TestCa`]: a CA and a server certificate for `IP:127.0.0.1`, made by the
//!   `openssl` CLI.
//! - [`Sshd`]: a real `sshd` on a loopback port of its own, with its own host key,
//!   a client key, and `known_hosts` files naming the right and a wrong host key.
//! - [`SshKey`]: `ssh-keygen -t ed25519` keys, and [`allowed_signer`] lines.
//!
//! Servers are killed on drop. A missing tool follows the crate's rule
//! ([`crate::missing`]): the constructor returns `None`, or the test fails under CI.
//! Every git command runs without the machine's global and system configuration.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::registry::free_port;
use crate::{have_tools, missing, workspace_root};

/// The Python interpreter the HTTP server runs under (the standard library only).
const PYTHON: &str = "/usr/bin/python3";
/// The ssh daemon; it must be started by its absolute path (it re-executes itself).
const SSHD: &str = "/usr/sbin/sshd";
/// The author and committer of every fixture commit.
const NAME: &str = "Berth Test";
const EMAIL: &str = "test@berth.example";

/// A `git` command isolated from the machine's configuration, with a fixed identity.
pub fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", NAME)
        .env("GIT_AUTHOR_EMAIL", EMAIL)
        .env("GIT_COMMITTER_NAME", NAME)
        .env("GIT_COMMITTER_EMAIL", EMAIL)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_SSH_COMMAND");
    cmd
}

/// Runs `cmd` (stdin empty); panics naming `what` with its output when it fails.
pub fn run_checked(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd`; panics naming `what` with its output when it fails. Returns stdout,
/// trimmed.
fn checked(cmd: &mut Command, what: &str) -> String {
    let out = run_checked(cmd, what);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `git ARGS` in `dir`; panics with its output when it fails. Returns stdout,
/// trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    checked(
        git_command(dir).args(args),
        &format!("git {args:?} in {}", dir.display()),
    )
}

/// Runs `git ARGS` in `dir` with `input` on stdin; panics when it fails.
fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = git_command(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run git: {e}"));
    let mut stdin = child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("git {args:?}: no stdin"));
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    let _ = writer.join();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How to make a commit.
#[derive(Debug, Default, Clone)]
pub struct CommitOptions<'a> {
    /// Sign with this SSH private key (`gpg.format=ssh`, `commit -S`).
    pub sign_with: Option<&'a Path>,
    /// The committer (and author) date, as git takes it (`2021-01-01T00:00:00Z`).
    pub date: Option<&'a str>,
}

/// A bare repository (`<root>/repo.git`, branch `main`) and a work clone of it
/// (`<root>/work`). The root is what a server exports.
#[derive(Debug)]
pub struct GitRepo {
    dir: tempfile::TempDir,
}

impl GitRepo {
    /// An empty repository; `None` (after [`missing`]) without `git`.
    pub fn new() -> Option<GitRepo> {
        if !have_tools(&["git"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let repo = GitRepo { dir };
        git(
            repo.root(),
            &["init", "-q", "--bare", "-b", "main", "repo.git"],
        );
        git(repo.root(), &["init", "-q", "-b", "main", "work"]);
        git(
            &repo.work(),
            &["remote", "add", "origin", &repo.bare().to_string_lossy()],
        );
        Some(repo)
    }

    /// The directory holding `repo.git` and `work`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The bare repository.
    pub fn bare(&self) -> PathBuf {
        self.root().join("repo.git")
    }

    /// The work clone.
    pub fn work(&self) -> PathBuf {
        self.root().join("work")
    }

    /// `file://<bare>`.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// `git ARGS` in the work clone.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.work(), args)
    }

    /// Writes `rel` (creating its directories) in the work clone.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.work().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {rel}: {e}"));
    }

    /// Removes `rel` from the work clone.
    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.work().join(rel)).unwrap_or_else(|e| panic!("rm {rel}: {e}"));
    }

    /// Commits everything in the work clone (unsigned); returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.commit_with(message, &CommitOptions::default())
    }

    /// Commits everything in the work clone as `opts` says; returns the commit id.
    pub fn commit_with(&self, message: &str, opts: &CommitOptions<'_>) -> String {
        self.git(&["add", "-A"]);
        let mut cmd = git_command(&self.work());
        if let Some(key) = opts.sign_with {
            cmd.arg("-c")
                .arg("gpg.format=ssh")
                .arg("-c")
                .arg(format!("user.signingkey={}", key.display()));
        }
        cmd.args(["commit", "-q", "--allow-empty", "-m", message]);
        if opts.sign_with.is_some() {
            cmd.arg("-S");
        } else {
            cmd.arg("--no-gpg-sign");
        }
        if let Some(date) = opts.date {
            cmd.env("GIT_COMMITTER_DATE", date)
                .env("GIT_AUTHOR_DATE", date);
        }
        checked(&mut cmd, "git commit");
        self.head()
    }

    /// The work clone's `HEAD` commit id.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Pushes `HEAD` to the bare repository's `main`, forced (a rewrite is allowed).
    pub fn push(&self) {
        self.push_to("main");
    }

    /// Pushes `HEAD` to the bare repository's branch `branch`, forced.
    pub fn push_to(&self, branch: &str) {
        self.git(&[
            "push",
            "-q",
            "--force",
            "origin",
            &format!("HEAD:refs/heads/{branch}"),
        ]);
    }

    /// Points `commit` at it `branch` in the bare repository (forced) without touching
    /// the work clone.
    pub fn push_commit(&self, commit: &str, branch: &str) {
        self.git(&[
            "push",
            "-q",
            "--force",
            "origin",
            &format!("{commit}:refs/heads/{branch}"),
        ]);
    }

    /// Tags `commit` as `name` (annotated when `message` is given), replacing any tag
    /// of that name, and pushes the tag (forced).
    pub fn tag(&self, name: &str, commit: &str, message: Option<&str>) {
        match message {
            Some(m) => self.git(&["tag", "-f", "-a", "--no-sign", "-m", m, name, commit]),
            None => self.git(&["tag", "-f", name, commit]),
        };
        self.git(&[
            "push",
            "-q",
            "--force",
            "origin",
            &format!("refs/tags/{name}:refs/tags/{name}"),
        ]);
    }

    /// Adds `count` commits on top of `HEAD` (or as a new history) in one
    /// `git fast-import`, each changing `history.txt`, and checks the result out.
    pub fn fill_history(&self, count: usize) {
        let parent = git_command(&self.work())
            .args(["rev-parse", "--verify", "-q", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let mut stream = String::new();
        for i in 1..=count {
            let message = format!("history {i}\n");
            let content = format!("line {i}: the history of a busy fleet repository\n");
            stream += &format!(
                "commit refs/heads/main\nmark :{i}\ncommitter {NAME} <{EMAIL}> {} +0000\ndata {}\n{message}",
                1_600_000_000 + i,
                message.len()
            );
            if i == 1 {
                if let Some(p) = &parent {
                    stream += &format!("from {p}\n");
                }
            } else {
                stream += &format!("from :{}\n", i - 1);
            }
            stream += &format!(
                "M 100644 inline history.txt\ndata {}\n{content}\n",
                content.len()
            );
        }
        git_stdin(&self.work(), &["fast-import", "--quiet"], stream.as_bytes());
        self.git(&["checkout", "-q", "-f", "main"]);
        self.git(&["reset", "-q", "--hard", "main"]);
    }

    /// Writes a copy of commit `commit` whose tree is `tree` and whose headers
    /// (including its `gpgsig`) are otherwise the same: the signature no longer covers
    /// it. Returns the forged commit's id.
    pub fn forge_tree(&self, commit: &str, tree: &str) -> String {
        let raw = self.git(&["cat-file", "commit", commit]);
        let mut lines: Vec<String> = raw.lines().map(str::to_string).collect();
        let first = lines
            .first_mut()
            .unwrap_or_else(|| panic!("empty commit {commit}"));
        assert!(first.starts_with("tree "), "{raw}");
        *first = format!("tree {tree}");
        let forged = lines.join("\n") + "\n";
        git_stdin(
            &self.work(),
            &["hash-object", "-t", "commit", "-w", "--stdin"],
            forged.as_bytes(),
        )
    }
}

/// An ed25519 key made by `ssh-keygen` (no passphrase).
#[derive(Debug, Clone)]
pub struct SshKey {
    /// The private key file (mode 0600).
    pub private: PathBuf,
    /// The public key line, `ssh-ed25519 AAAA… comment`.
    pub public: String,
}

/// Makes `<dir>/<name>` and `<dir>/<name>.pub` with `ssh-keygen -t ed25519`.
/// Panics when `ssh-keygen` fails (check [`have_tools`] first).
pub fn ssh_keygen(dir: &Path, name: &str) -> SshKey {
    let private = dir.join(name);
    checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private),
        "ssh-keygen",
    );
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub")))
        .unwrap_or_else(|e| panic!("read {name}.pub: {e}"))
        .trim()
        .to_string();
    SshKey { private, public }
}

/// One `allowed_signers` line: `principal [options] keytype key`, `options` being e.g.
/// `namespaces="git"` or `valid-before="20200101"` (empty for none).
pub fn allowed_signer(principal: &str, options: &str, key: &SshKey) -> String {
    let key: Vec<&str> = key.public.split_whitespace().take(2).collect();
    let key = key.join(" ");
    if options.is_empty() {
        format!("{principal} {key}\n")
    } else {
        format!("{principal} {options} {key}\n")
    }
}

/// A test CA (`ca.pem`) and a server certificate it signed (`server.pem`,
/// `server.key`) for `IP:127.0.0.1`, EC P-256, valid for two days.
#[derive(Debug)]
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate, for a client's trust store (`source.ca_file`).
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    checked(
        Command::new("openssl").current_dir(dir).args(args),
        &format!("openssl {args:?}"),
    );
}

impl TestCa {
    /// The CA a test server uses, and another one no client should trust for it.
    pub fn pair() -> Option<(TestCa, TestCa)> {
        Some((TestCa::new("berth test CA")?, TestCa::new("untrusted CA")?))
    }

    /// A new CA named `name` and its server certificate; `None` (after [`missing`])
    /// without `openssl`.
    pub fn new(name: &str) -> Option<TestCa> {
        if !have_tools(&["openssl"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let subject = format!("/CN={name}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-sha256"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &args);
        let mut args = vec!["req", "-nodes", "-sha256"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(d, &args);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap_or_else(|e| panic!("write server.ext: {e}"));
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Some(TestCa {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            _dir: dir,
        })
    }
}

/// Options for [`GitHttpServer::start`].
#[derive(Debug, Default, Clone)]
pub struct HttpOptions {
    /// Serve TLS with this certificate and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Demand these Basic credentials.
    pub basic: Option<(String, String)>,
    /// Listen on this port (0: a free one), e.g. a stopped server's again.
    pub port: u16,
}

/// A server process, killed (and reaped) on [`Daemon::stop`] or drop.
#[derive(Debug)]
struct Daemon(Option<Child>);

impl Daemon {
    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

impl HttpOptions {
    /// TLS with `ca`'s server certificate.
    pub fn tls(ca: &TestCa) -> HttpOptions {
        HttpOptions {
            tls: Some((ca.cert.clone(), ca.key.clone())),
            ..HttpOptions::default()
        }
    }
}

/// `tests/support/git-http-server.py` on a loopback port, serving every repository
/// under a root through `git http-backend`.
#[derive(Debug)]
pub struct GitHttpServer {
    child: Daemon,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
}

impl GitHttpServer {
    /// Serves `root`; `None` (after [`missing`]) without python3 or git.
    pub fn start(root: &Path, opts: &HttpOptions) -> Option<GitHttpServer> {
        if !Path::new(PYTHON).is_file() {
            missing(PYTHON);
            return None;
        }
        if !have_tools(&["git"]) {
            return None;
        }
        let script = workspace_root().join("tests/support/git-http-server.py");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .arg("--root")
            .arg(root)
            .arg("--log")
            .arg(dir.path().join("requests.log"))
            .arg("--port")
            .arg(opts.port.to_string())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        if let Some((cert, key)) = &opts.tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((user, password)) = &opts.basic {
            cmd.arg("--auth").arg(format!("{user}:{password}"));
        }
        let stderr = std::fs::File::create(dir.path().join("server.log"))
            .unwrap_or_else(|e| panic!("create server.log: {e}"));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            panic!("the git HTTP server did not start: {log}");
        };
        Some(GitHttpServer {
            child: Daemon(Some(child)),
            port,
            tls: opts.tls.is_some(),
            dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http[s]://127.0.0.1:PORT/<rel>`.
    pub fn url(&self, rel: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{rel}", self.port)
    }

    /// The requests served so far, `METHOD PATH STATUS BODY BYTES` each (BODY: how the
    /// request body came, `-`, `length` or `chunked`, `+gzip` when compressed).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Every byte written to clients so far (headers and bodies).
    pub fn bytes_sent(&self) -> u64 {
        self.requests()
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// What the server wrote on stderr (its request log and http-backend's errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (the port then refuses connections).
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// A real `sshd` on a loopback port of its own, letting the current user in with
/// [`Sshd::client_key`] only.
#[derive(Debug)]
pub struct Sshd {
    child: Daemon,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
    /// The key the server lets in.
    pub client_key: SshKey,
    /// A `known_hosts` naming the server's host key as `[127.0.0.1]:PORT`.
    pub known_hosts: PathBuf,
    /// A `known_hosts` naming another key for the same host and port.
    pub wrong_known_hosts: PathBuf,
}

impl Sshd {
    /// Starts the daemon; `None` (after [`missing`]) without `sshd` or `ssh-keygen`.
    pub fn start() -> Option<Sshd> {
        if !Path::new(SSHD).is_file() {
            missing(&format!("{SSHD} (openssh-server)"));
            return None;
        }
        if !have_tools(&["ssh-keygen"]) {
            return None;
        }
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| panic!("mkdir /run/sshd: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let d = dir.path();
        let host = ssh_keygen(d, "host_ed25519");
        let other = ssh_keygen(d, "other_host_ed25519");
        let client_key = ssh_keygen(d, "client_ed25519");
        std::fs::write(
            d.join("authorized_keys"),
            format!("{}\n", client_key.public),
        )
        .unwrap_or_else(|e| panic!("write authorized_keys: {e}"));
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| panic!("id -un: {e}"));
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            match start_sshd(d, port) {
                Ok(child) => {
                    let known_hosts = d.join("known_hosts");
                    let wrong_known_hosts = d.join("wrong_known_hosts");
                    let line = |k: &SshKey| format!("[127.0.0.1]:{port} {}\n", key_part(k));
                    std::fs::write(&known_hosts, line(&host))
                        .unwrap_or_else(|e| panic!("write known_hosts: {e}"));
                    std::fs::write(&wrong_known_hosts, line(&other))
                        .unwrap_or_else(|e| panic!("write known_hosts: {e}"));
                    return Some(Sshd {
                        child: Daemon(Some(child)),
                        port,
                        user,
                        dir,
                        client_key,
                        known_hosts,
                        wrong_known_hosts,
                    });
                }
                Err(e) => last = e,
            }
        }
        panic!("sshd did not start: {last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://USER@127.0.0.1:PORT<path>` for an absolute `path` on this machine.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `GIT_SSH_COMMAND` for the `git` client: this server's client key, and
    /// `known_hosts` as the only trust.
    pub fn git_ssh_command(&self, known_hosts: &Path) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -F /dev/null",
            self.client_key.private.display(),
            known_hosts.display()
        )
    }

    /// Stops the daemon.
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// `keytype base64` of a key, without its comment.
fn key_part(key: &SshKey) -> String {
    key.public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts `sshd -D` on `port` with its files in `d`, and waits for its banner.
fn start_sshd(d: &Path, port: u16) -> Result<Child, String> {
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
         AuthorizedKeysFile {keys}\nPermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nPrintMotd no\n\
         PrintLastLog no\nAllowTcpForwarding no\nX11Forwarding no\nLogLevel VERBOSE\n",
        host = d.join("host_ed25519").display(),
        pid = d.join("sshd.pid").display(),
        keys = d.join("authorized_keys").display(),
    );
    let cfg = d.join("sshd_config");
    std::fs::write(&cfg, config).map_err(|e| format!("write sshd_config: {e}"))?;
    let log = d.join("sshd.log");
    let _ = std::fs::remove_file(&log);
    let mut child = Command::new(SSHD)
        .arg("-D")
        .arg("-f")
        .arg(&cfg)
        .arg("-E")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {SSHD}: {e}"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("exited with {status}: {text}"));
        }
        if banner(addr).is_some_and(|b| b.starts_with("SSH-2.0-")) {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("no banner after 10 s".into())
}

/// The first line an ssh server sends on `addr`.
fn banner(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let _ = s.shutdown(Shutdown::Both);
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    //! The fixtures against the real `git` client: what the source tests build on.

    use super::*;

    /// A repository with two commits on `main`, pushed.
    fn two_commits() -> Option<(GitRepo, String)> {
        let repo = GitRepo::new()?;
        repo.write("fleet/web.toml", "# one\n");
        repo.commit("one");
        repo.write("fleet/web.toml", "# two\n");
        let head = repo.commit("two");
        repo.push();
        Some((repo, head))
    }

    /// `git clone ARGS URL <dir>/NAME` with `env`; (success, stderr).
    fn clone(
        dir: &Path,
        name: &str,
        url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (bool, String) {
        let mut cmd = git_command(dir);
        cmd.arg("clone").arg("-q").args(args).arg(url).arg(name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn http_server_serves_plain_shallow_and_authenticated_clones() {
        let Some((repo, head)) = two_commits() else {
            return;
        };
        let Some(server) = GitHttpServer::start(repo.root(), &HttpOptions::default()) else {
            return;
        };
        let out = tempfile::tempdir().unwrap();
        let url = server.url("repo.git");
        let (ok, err) = clone(out.path(), "full", &url, &[], &[]);
        assert!(ok, "{err}\n{}", server.log());
        assert_eq!(git(&out.path().join("full"), &["rev-parse", "HEAD"]), head);
        let full = server.bytes_sent();
        assert!(full > 0, "{:?}", server.requests());
        let (ok, err) = clone(out.path(), "shallow", &url, &["--depth", "1"], &[]);
        assert!(ok, "{err}");
        let shallow = git(
            &out.path().join("shallow"),
            &["rev-list", "--all", "--count"],
        );
        assert_eq!(shallow, "1");
        assert!(
            server.requests().iter().all(|l| l.contains(" 200 ")),
            "{:?}",
            server.requests()
        );

        let opts = HttpOptions {
            basic: Some(("alice".into(), "pa55-word".into())),
            ..HttpOptions::default()
        };
        let server = GitHttpServer::start(repo.root(), &opts).unwrap();
        let (ok, _) = clone(out.path(), "anon", &server.url("repo.git"), &[], &[]);
        assert!(!ok, "cloned without credentials");
        assert!(
            server.requests().iter().any(|l| l.contains(" 401 ")),
            "{:?}",
            server.requests()
        );
        let with = format!(
            "http://alice:pa55-word@127.0.0.1:{}/repo.git",
            server.port()
        );
        let (ok, err) = clone(out.path(), "authed", &with, &[], &[]);
        assert!(ok, "{err}\n{}", server.log());
        let wrong = format!("http://alice:nope@127.0.0.1:{}/repo.git", server.port());
        let (ok, _) = clone(out.path(), "wrong", &wrong, &[], &[]);
        assert!(!ok, "cloned with a wrong password");
    }

    #[test]
    fn http_server_takes_chunked_and_gzip_request_bodies() {
        let Some((repo, _)) = two_commits() else {
            return;
        };
        // Many distinct commits to want: a request body over the 64 KiB post buffer
        // goes chunked, a smaller one gzip.
        let head = repo.head();
        let tree = repo.git(&["rev-parse", "HEAD^{tree}"]);
        let mut updates = String::new();
        for i in 0..1500 {
            let c = git_stdin(
                &repo.work(),
                &["commit-tree", &tree, "-p", &head],
                format!("side {i}\n").as_bytes(),
            );
            updates += &format!("create refs/tags/side-{i} {c}\n");
        }
        git_stdin(&repo.work(), &["update-ref", "--stdin"], updates.as_bytes());
        repo.git(&["push", "-q", "origin", "refs/tags/*:refs/tags/*"]);
        let Some(server) = GitHttpServer::start(repo.root(), &HttpOptions::default()) else {
            return;
        };
        let out = tempfile::tempdir().unwrap();
        let url = server.url("repo.git");
        for (name, buffer) in [("chunked", "65536"), ("gzip", "10485760")] {
            let (ok, err) = clone(
                out.path(),
                name,
                &url,
                &["--mirror"],
                &[
                    ("GIT_CONFIG_COUNT", "2"),
                    ("GIT_CONFIG_KEY_0", "http.postBuffer"),
                    ("GIT_CONFIG_VALUE_0", buffer),
                    ("GIT_CONFIG_KEY_1", "protocol.version"),
                    ("GIT_CONFIG_VALUE_1", "0"),
                ],
            );
            assert!(ok, "{name}: {err}\n{}", server.log());
            let count = git(&out.path().join(name), &["rev-list", "--all", "--count"]);
            assert_eq!(count, "1502", "{name}");
        }
        let posts: Vec<String> = server
            .requests()
            .into_iter()
            .filter(|l| l.starts_with("POST "))
            .collect();
        assert!(
            posts.iter().any(|l| l.contains(" 200 chunked")),
            "{posts:?}"
        );
        assert!(
            posts.iter().any(|l| l.contains(" 200 length+gzip")),
            "{posts:?}"
        );
    }

    #[test]
    fn https_trusts_its_ca_and_not_another() {
        let Some((repo, head)) = two_commits() else {
            return;
        };
        let Some((ca, other)) = TestCa::pair() else {
            return;
        };
        let Some(server) = GitHttpServer::start(repo.root(), &HttpOptions::tls(&ca)) else {
            return;
        };
        let url = server.url("repo.git");
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let out = tempfile::tempdir().unwrap();
        // git's own variable: the https helper does not read GIT_CONFIG_COUNT.
        let ca = ca.ca.display().to_string();
        let env = [("GIT_SSL_CAINFO", ca.as_str())];
        let (ok, err) = clone(out.path(), "good", &url, &[], &env);
        assert!(ok, "{err}\n{}", server.log());
        assert_eq!(git(&out.path().join("good"), &["rev-parse", "HEAD"]), head);
        let other = other.ca.display().to_string();
        let env = [("GIT_SSL_CAINFO", other.as_str())];
        let (ok, err) = clone(out.path(), "bad", &url, &[], &env);
        assert!(!ok, "cloned trusting another CA");
        assert!(err.contains("certificate") || err.contains("SSL"), "{err}");
    }

    #[test]
    fn sshd_serves_git_with_its_host_key_and_not_a_wrong_one() {
        if !crate::is_root() || !have_tools(&["ssh"]) {
            return;
        }
        let Some((repo, head)) = two_commits() else {
            return;
        };
        let Some(sshd) = Sshd::start() else {
            return;
        };
        let out = tempfile::tempdir().unwrap();
        let url = sshd.url(&repo.bare());
        let ssh = sshd.git_ssh_command(&sshd.known_hosts);
        let (ok, err) = clone(out.path(), "good", &url, &[], &[("GIT_SSH_COMMAND", &ssh)]);
        assert!(ok, "{err}\n{}", sshd.log());
        assert_eq!(git(&out.path().join("good"), &["rev-parse", "HEAD"]), head);
        let ssh = sshd.git_ssh_command(&sshd.wrong_known_hosts);
        let (ok, err) = clone(out.path(), "bad", &url, &[], &[("GIT_SSH_COMMAND", &ssh)]);
        assert!(!ok, "cloned with a wrong host key");
        assert!(
            err.contains("HOST IDENTIFICATION HAS CHANGED")
                || err.contains("Host key verification failed"),
            "{err}"
        );
    }

    #[test]
    fn signed_commits_verify_with_git_and_a_forged_one_does_not() {
        if !have_tools(&["ssh-keygen"]) {
            return;
        }
        let Some(repo) = GitRepo::new() else {
            return;
        };
        let keys = tempfile::tempdir().unwrap();
        let key = ssh_keygen(keys.path(), "ops");
        let signers = keys.path().join("allowed_signers");
        std::fs::write(
            &signers,
            allowed_signer("ops@berth.example", "namespaces=\"git\"", &key),
        )
        .unwrap();
        repo.write("a.toml", "# a\n");
        let unsigned = repo.commit("unsigned");
        repo.write("a.toml", "# b\n");
        let signed = repo.commit_with(
            "signed",
            &CommitOptions {
                sign_with: Some(&key.private),
                date: Some("2021-06-01T12:00:00Z"),
            },
        );
        assert_eq!(
            repo.git(&["show", "-s", "--format=%cI", &signed]),
            "2021-06-01T12:00:00Z"
        );
        let verify = |commit: &str| {
            git_command(&repo.work())
                .args([
                    "-c",
                    &format!("gpg.ssh.allowedSignersFile={}", signers.display()),
                ])
                .args(["verify-commit", commit])
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify(&signed));
        assert!(!verify(&unsigned));
        let forged = repo.forge_tree(
            &signed,
            &repo.git(&["rev-parse", &format!("{unsigned}^{{tree}}")]),
        );
        assert_ne!(forged, signed);
        assert!(
            repo.git(&["cat-file", "commit", &forged])
                .contains("gpgsig")
        );
        assert!(!verify(&forged));
    }

    #[test]
    fn fill_history_makes_a_thousand_commits_fast() {
        let Some(repo) = GitRepo::new() else {
            return;
        };
        let start = Instant::now();
        repo.fill_history(1000);
        repo.write("fleet/web.toml", "# web\n");
        repo.commit("web");
        repo.push();
        assert_eq!(git(&repo.bare(), &["rev-list", "--count", "main"]), "1001");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
    }
}
