//! A real `mosquitto` broker (2.0) for the MQTT tests (#20), on loopback ports of its
//! own, with its configuration, password file and certificates in a temp dir:
//!
//! - `allow_anonymous false` and a `password_file` made by `mosquitto_passwd`, with
//!   three users: the node ([`Broker::node`]), a CI publisher ([`Broker::ci`]) and the
//!   test's own helpers (never given to berth);
//! - the listener the node and `berth notify` use ([`Broker::url`]): plain `mqtt://`,
//!   or `mqtts://` with a server certificate for `IP:127.0.0.1` from a test CA
//!   ([`TestCa`]), optionally demanding a client certificate from that CA (mutual
//!   TLS, [`Broker::client_cert`]) and taking the certificate's CN as the user name;
//! - a second, plain listener for the helpers ([`Broker::publish`],
//!   [`Broker::retained`], …), which run `mosquitto_pub` / `mosquitto_sub`;
//! - `persistence false`, and `user root` so that a broker started as root keeps
//!   reading its files (it would switch to the user `mosquitto` otherwise).
//!
//! [`Broker::stop`] (SIGTERM) or [`Broker::kill`] take it down, [`Broker::restart`]
//! brings it back on the same ports; drop kills it. A missing program follows the
//! crate's rule ([`crate::missing`]): [`Broker::start`] returns `None`, or the test
//! fails under CI.

use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::git::TestCa;
use crate::registry::free_port;
use crate::{have_tools, missing};

/// The programs the broker and its helpers need.
const TOOLS: [&str; 3] = ["mosquitto_passwd", "mosquitto_pub", "mosquitto_sub"];
/// Where Debian installs the broker (`/usr/sbin`, not always on a user's PATH).
const SBIN_MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// How long the broker may take to listen.
const STARTS_WITHIN: Duration = Duration::from_secs(10);
/// The node's user name: berth's e2e nodes are named `edge-test` ([`crate::live`]).
pub const NODE_USER: &str = "edge-test";
/// The publisher's user name (a CI job running `berth notify`).
pub const CI_USER: &str = "ci";
/// The helpers' user name.
const ADMIN_USER: &str = "berth-test-admin";

/// What the broker serves; see the module docs.
#[derive(Debug, Default, Clone)]
pub struct BrokerOptions {
    /// Serve `mqtts://` with a certificate from a test CA (plain `mqtt://` otherwise).
    pub tls: bool,
    /// With `tls`: demand a client certificate signed by the test CA
    /// (`require_certificate true`).
    pub require_certificate: bool,
    /// With `require_certificate`: the certificate's CN is the client's user name, and
    /// no password is asked (`use_identity_as_username true`).
    pub use_identity_as_username: bool,
}

/// A user of the broker: its name, its password, and a file holding it (one line).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub password_file: PathBuf,
}

/// A running `mosquitto`; see the module docs.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    dir: tempfile::TempDir,
    opts: BrokerOptions,
    program: PathBuf,
    /// The listener berth uses (TLS or plain, as the options say).
    port: u16,
    /// The helpers' plain listener.
    admin_port: u16,
    admin_password: String,
    /// Where the current run's output starts in `mosquitto.log`.
    log_start: usize,
    ca: Option<TestCa>,
    /// The node's user.
    pub node: Credentials,
    /// The publisher's user.
    pub ci: Credentials,
    /// The node's user name with a password the broker refuses.
    pub wrong: Credentials,
}

/// A random 64-bit number in hex (std's randomly keyed hasher).
pub fn random_hex() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// Runs `cmd`; panics naming `what` with its output when it fails.
fn checked(cmd: &mut Command, what: &str) -> Output {
    crate::git::run_checked(cmd, what)
}

/// The broker program: on PATH, else Debian's `/usr/sbin/mosquitto`.
fn mosquitto_program() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("mosquitto"))
            .find(|f| f.is_file())
    });
    on_path.or_else(|| {
        let sbin = PathBuf::from(SBIN_MOSQUITTO);
        sbin.is_file().then_some(sbin)
    })
}

/// A client certificate and key signed by `ca` for the common name `cn`, written as
/// `<dir>/<cn>.pem` and `<dir>/<cn>.key` (EC P-256, PKCS #8, two days). The CA's key
/// is beside its certificate in the [`TestCa`]'s directory (`ca.key`).
pub fn client_cert(ca: &TestCa, dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let ca_key = ca.ca.with_file_name("ca.key");
    let cert = dir.join(format!("{cn}.pem"));
    let key = dir.join(format!("{cn}.key"));
    let csr = dir.join(format!("{cn}.csr"));
    let ext = dir.join(format!("{cn}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", ext.display()));
    checked(
        Command::new("openssl")
            .args(["req", "-new", "-nodes", "-sha256", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .arg("-subj")
            .arg(format!("/CN={cn}")),
        "openssl req (client)",
    );
    checked(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-sha256", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca.ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-set_serial")
            .arg(format!("0x{}", random_hex()))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
        "openssl x509 (client)",
    );
    (cert, key)
}

impl Broker {
    /// Starts a broker as `opts` says; `None` (after [`missing`]) without mosquitto,
    /// its clients, or (for TLS) openssl.
    pub fn start(opts: BrokerOptions) -> Option<Broker> {
        let Some(program) = mosquitto_program() else {
            missing("`mosquitto` on PATH or at /usr/sbin/mosquitto (the mosquitto package)");
            return None;
        };
        if !have_tools(&TOOLS) {
            return None;
        }
        let ca = if opts.tls {
            Some(TestCa::new("berth mqtt test CA")?)
        } else {
            None
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let d = dir.path();
        let user = |name: &str, file: &str, password: String| {
            let password_file = d.join(file);
            std::fs::write(&password_file, format!("{password}\n"))
                .unwrap_or_else(|e| panic!("write {}: {e}", password_file.display()));
            Credentials {
                user: name.to_string(),
                password,
                password_file,
            }
        };
        let node = user(
            NODE_USER,
            "node.password",
            format!("node-pw-{}", random_hex()),
        );
        let ci = user(CI_USER, "ci.password", format!("ci-pw-{}", random_hex()));
        let wrong = user(
            NODE_USER,
            "wrong.password",
            format!("wrong-pw-{}", random_hex()),
        );
        let admin_password = format!("admin-pw-{}", random_hex());
        let passwd = d.join("passwd");
        for (i, (u, p)) in [
            (ADMIN_USER, &admin_password),
            (NODE_USER, &node.password),
            (CI_USER, &ci.password),
        ]
        .into_iter()
        .enumerate()
        {
            let mut cmd = Command::new("mosquitto_passwd");
            cmd.arg("-b");
            if i == 0 {
                cmd.arg("-c");
            }
            checked(cmd.arg(&passwd).arg(u).arg(p), "mosquitto_passwd");
        }
        if let Some(ca) = &ca {
            client_cert(ca, d, NODE_USER);
            client_cert(ca, d, CI_USER);
        }
        let mut broker = Broker {
            child: None,
            dir,
            opts,
            program,
            port: 0,
            admin_port: 0,
            admin_password,
            log_start: 0,
            ca,
            node,
            ci,
            wrong,
        };
        let mut last = String::new();
        for _ in 0..3 {
            broker.port = free_port();
            broker.admin_port = free_port();
            if broker.port == broker.admin_port {
                continue;
            }
            match broker.spawn() {
                Ok(()) => return Some(broker),
                Err(e) => last = e,
            }
        }
        panic!("mosquitto did not start: {last}");
    }

    /// Writes the configuration, starts the broker on its ports and waits until both
    /// accept connections.
    fn spawn(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let mut config = format!(
            "user root\npersistence false\nallow_anonymous false\npassword_file {}\n\
             log_dest stderr\nlog_type all\nconnection_messages true\n\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
             listener {} 127.0.0.1\nlistener {} 127.0.0.1\n",
            d.join("passwd").display(),
            self.admin_port,
            self.port,
        );
        if let Some(ca) = &self.ca {
            config += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                ca.ca.display(),
                ca.cert.display(),
                ca.key.display()
            );
            if self.opts.require_certificate {
                config += "require_certificate true\n";
                if self.opts.use_identity_as_username {
                    config += "use_identity_as_username true\n";
                }
            }
        }
        let logged = std::fs::metadata(d.join("mosquitto.log")).map_or(0, |m| m.len() as usize);
        let conf = d.join("mosquitto.conf");
        std::fs::write(&conf, config).map_err(|e| format!("write mosquitto.conf: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("mosquitto.log"))
            .map_err(|e| format!("open mosquitto.log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("dup mosquitto.log: {e}"))?;
        let mut child = Command::new(&self.program)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let deadline = Instant::now() + STARTS_WITHIN;
        let listening = |port: u16| {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            // Every listener is open once it says it runs; the helpers' plain one is
            // probed (a probe of the TLS one would leave a failed handshake in the log).
            let said = std::fs::read(d.join("mosquitto.log")).unwrap_or_default();
            let running = String::from_utf8_lossy(said.get(logged..).unwrap_or_default())
                .contains(" running");
            if running && listening(self.admin_port) {
                self.child = Some(child);
                self.log_start = logged;
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "not listening after {STARTS_WITHIN:?}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL berth uses: `mqtt://127.0.0.1:PORT` or `mqtts://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test CA's certificate (`ca_file`, `--ca-file`), with TLS.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca.as_ref().map(|c| c.ca.as_path())
    }

    /// The client certificate and key of `user` ([`NODE_USER`] or [`CI_USER`]),
    /// signed by the test CA, with TLS.
    pub fn client_cert(&self, user: &str) -> Option<(PathBuf, PathBuf)> {
        self.ca.as_ref()?;
        let d = self.dir.path();
        Some((d.join(format!("{user}.pem")), d.join(format!("{user}.key"))))
    }

    /// Whether the broker asks for a password (not when the client certificate names
    /// the user).
    fn passwords(&self) -> bool {
        !(self.opts.require_certificate && self.opts.use_identity_as_username)
    }

    /// The `[source.notify]` table of a node following `topic` on this broker as the
    /// user `creds` (none: no user name, e.g. when the certificate names it), with
    /// `spread`; `ca_file` with TLS, and the node's client certificate when the broker
    /// demands one.
    pub fn notify_toml(&self, topic: &str, spread: &str, creds: Option<&Credentials>) -> String {
        let mut t = format!(
            "[source.notify]\nmqtt = {:?}\ntopic = {topic:?}\nspread = {spread:?}\n",
            self.url()
        );
        if let Some(c) = creds {
            t += &format!(
                "username = {:?}\npassword_file = {:?}\n",
                c.user, c.password_file
            );
        }
        if let Some(ca) = self.ca_pem_path() {
            t += &format!("ca_file = {ca:?}\n");
        }
        if self.opts.require_certificate
            && let Some((cert, key)) = self.client_cert(NODE_USER)
        {
            t += &format!("client_cert = {cert:?}\nclient_key = {key:?}\n");
        }
        t
    }

    /// The arguments of `berth notify` publishing on `topic` as the CI user, with the
    /// CA and its client certificate as the broker needs (`--revision`/`--ref` are the
    /// caller's).
    pub fn notify_args(&self, topic: &str) -> Vec<String> {
        let mut a = vec![
            "notify".to_string(),
            "--mqtt".into(),
            self.url(),
            "--topic".into(),
            topic.into(),
        ];
        if self.passwords() {
            a.extend([
                "--username".into(),
                self.ci.user.clone(),
                "--password-file".into(),
                self.ci.password_file.display().to_string(),
            ]);
        }
        if let Some(ca) = self.ca_pem_path() {
            a.extend(["--ca-file".into(), ca.display().to_string()]);
        }
        if self.opts.require_certificate
            && let Some((cert, key)) = self.client_cert(CI_USER)
        {
            a.extend([
                "--client-cert".into(),
                cert.display().to_string(),
                "--client-key".into(),
                key.display().to_string(),
            ]);
        }
        a
    }

    /// A `mosquitto_pub`/`mosquitto_sub` command on the helpers' listener.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(["-h", "127.0.0.1", "-p", &self.admin_port.to_string()])
            .args(["-u", ADMIN_USER, "-P", &self.admin_password])
            .args(["-i", &format!("berth-test-{}", random_hex())]);
        cmd
    }

    /// Publishes `payload` on `topic` (QoS 1), retained when `retain`.
    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        let mut cmd = self.client("mosquitto_pub");
        cmd.args(["-q", "1", "-t", topic, "-m", payload]);
        if retain {
            cmd.arg("-r");
        }
        checked(&mut cmd, &format!("mosquitto_pub on {topic}"));
    }

    /// Publishes each of `payloads` on `topic` (QoS 1, retained when `retain`) over one
    /// connection (`mosquitto_pub -l`, one message per line): a burst.
    pub fn publish_burst(&self, topic: &str, payloads: &[String], retain: bool) {
        let dir = self.dir.path().join(format!("burst-{}", random_hex()));
        let mut text = payloads.join("\n");
        text.push('\n');
        std::fs::write(&dir, text).unwrap_or_else(|e| panic!("write the burst: {e}"));
        let mut cmd = self.client("mosquitto_pub");
        cmd.args(["-q", "1", "-t", topic, "-l"]);
        if retain {
            cmd.arg("-r");
        }
        let input = std::fs::File::open(&dir).unwrap_or_else(|e| panic!("open the burst: {e}"));
        let out = cmd
            .stdin(input)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mosquitto_pub: {e}"));
        assert!(
            out.status.success(),
            "mosquitto_pub -l on {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&dir);
    }

    /// Removes the retained message of `topic` (an empty retained message).
    pub fn clear_retained(&self, topic: &str) {
        let mut cmd = self.client("mosquitto_pub");
        cmd.args(["-q", "1", "-t", topic, "-r", "-n"]);
        checked(&mut cmd, &format!("mosquitto_pub -n on {topic}"));
    }

    /// The retained message of `topic`, if any (waits up to 3 s for it:
    /// `mosquitto_sub -C 1 -W 3 --retained-only`). Panics when the broker cannot be
    /// reached.
    pub fn retained(&self, topic: &str) -> Option<String> {
        let out = self
            .client("mosquitto_sub")
            .args(["-C", "1", "-W", "3", "--retained-only", "-t", topic])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mosquitto_sub: {e}"));
        match out.status.code() {
            // Nothing printed: a live message came first (`--retained-only` then ends
            // without printing it), so nothing was retained. An empty retained message
            // cannot be: it deletes the topic's.
            Some(0) if out.stdout.is_empty() => None,
            Some(0) => Some(
                String::from_utf8_lossy(&out.stdout)
                    .trim_end_matches('\n')
                    .to_string(),
            ),
            // 27: timed out without a message.
            Some(27) => None,
            _ => panic!(
                "mosquitto_sub on {topic}: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ),
        }
    }

    /// The broker's log (every start of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Removes `creds`' user from the password file and reloads the broker (SIGHUP):
    /// its connected clients are disconnected, and it is refused from then on.
    pub fn lock_out(&self, creds: &Credentials) {
        checked(
            Command::new("mosquitto_passwd")
                .arg("-D")
                .arg(self.dir.path().join("passwd"))
                .arg(&creds.user),
            "mosquitto_passwd -D",
        );
        self.reload();
    }

    /// Adds `creds`' user (again) to the password file and reloads the broker.
    pub fn let_in(&self, creds: &Credentials) {
        checked(
            Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(self.dir.path().join("passwd"))
                .arg(&creds.user)
                .arg(&creds.password),
            "mosquitto_passwd -b",
        );
        self.reload();
    }

    /// Makes the broker read its configuration and password file again (SIGHUP), and
    /// waits until it says so.
    pub fn reload(&self) {
        let Some(child) = &self.child else {
            panic!("the broker does not run");
        };
        let before = self.log_of_this_run().matches("Reloading config").count();
        let _ = Command::new("kill")
            .arg("-HUP")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STARTS_WITHIN;
        while self.log_of_this_run().matches("Reloading config").count() == before {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not reload:\n{}",
                self.log_tail(4000)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's log since it was last (re)started.
    pub fn log_of_this_run(&self) -> String {
        let log = std::fs::read(self.dir.path().join("mosquitto.log")).unwrap_or_default();
        String::from_utf8_lossy(log.get(self.log_start..).unwrap_or_default()).into_owned()
    }

    /// The last `max` characters of [`Broker::log`].
    pub fn log_tail(&self, max: usize) -> String {
        let log = self.log();
        let chars: Vec<char> = log.chars().collect();
        chars[chars.len().saturating_sub(max)..].iter().collect()
    }

    /// Whether the broker runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the broker with SIGTERM (SIGKILL after 10 s); its ports then refuse
    /// connections.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the broker (SIGKILL): its clients see their connections drop unannounced.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same ports (after [`Broker::stop`] or
    /// [`Broker::kill`]; a running one is stopped first). It keeps no retained
    /// messages (`persistence false`).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("mosquitto did not start again on port {}: {e}", self.port);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    //! The broker against the real mosquitto clients: what the MQTT tests build on.

    use super::*;

    /// `mosquitto_pub` on the berth listener with `args` (beyond host and port):
    /// (exit code, stderr).
    fn pub_on(b: &Broker, args: &[&str]) -> (i32, String) {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &b.port().to_string(), "-q", "1"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn plain_broker_keeps_retained_messages_refuses_strangers_and_restarts() {
        let Some(mut b) = Broker::start(BrokerOptions::default()) else {
            return;
        };
        assert!(b.url().starts_with("mqtt://127.0.0.1:"), "{}", b.url());
        assert_eq!(b.retained("fleet/a"), None);
        b.publish("fleet/a", r#"{"ref":"refs/heads/main"}"#, true);
        assert_eq!(
            b.retained("fleet/a").as_deref(),
            Some(r#"{"ref":"refs/heads/main"}"#)
        );
        let node = b.node.clone();
        let (code, err) = pub_on(
            &b,
            &["-u", &node.user, "-P", &node.password, "-t", "x", "-m", "y"],
        );
        assert_eq!(code, 0, "{err}");
        let wrong = b.wrong.clone();
        let (code, err) = pub_on(
            &b,
            &[
                "-u",
                &wrong.user,
                "-P",
                &wrong.password,
                "-t",
                "x",
                "-m",
                "y",
            ],
        );
        assert_ne!(code, 0, "a wrong password was let in");
        assert!(err.contains("not authorised"), "{err}");
        let (code, _) = pub_on(&b, &["-t", "x", "-m", "anonymous"]);
        assert_ne!(code, 0, "an anonymous client was let in");
        let burst: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        b.publish_burst("fleet/burst", &burst, true);
        assert_eq!(b.retained("fleet/burst").as_deref(), Some("m49"));
        b.clear_retained("fleet/burst");
        assert_eq!(b.retained("fleet/burst"), None);
        b.lock_out(&node);
        let (code, _) = pub_on(
            &b,
            &["-u", &node.user, "-P", &node.password, "-t", "x", "-m", "y"],
        );
        assert_ne!(code, 0, "a user locked out was let in");
        b.let_in(&node);
        let (code, err) = pub_on(
            &b,
            &["-u", &node.user, "-P", &node.password, "-t", "x", "-m", "y"],
        );
        assert_eq!(code, 0, "{err}");

        let port = b.port();
        b.stop();
        assert!(!b.running());
        let (code, _) = pub_on(
            &b,
            &["-u", &node.user, "-P", &node.password, "-t", "x", "-m", "y"],
        );
        assert_ne!(code, 0, "published to a stopped broker");
        b.restart();
        assert_eq!(b.port(), port);
        assert!(b.running());
        let run = b.log_of_this_run();
        assert_eq!(run.matches(" starting").count(), 1, "{run}");
        assert_eq!(b.log().matches(" starting").count(), 2, "{}", b.log());
        // Nothing persists across a restart.
        assert_eq!(b.retained("fleet/a"), None);
        b.kill();
        assert!(!b.running());
    }

    #[test]
    fn tls_broker_trusts_its_ca_and_demands_client_certificates() {
        if !have_tools(&["openssl"]) {
            return;
        }
        let opts = BrokerOptions {
            tls: true,
            require_certificate: true,
            use_identity_as_username: true,
        };
        let Some(b) = Broker::start(opts) else {
            return;
        };
        assert!(b.url().starts_with("mqtts://127.0.0.1:"), "{}", b.url());
        let ca = b.ca_pem_path().unwrap().display().to_string();
        let (cert, key) = b.client_cert(CI_USER).unwrap();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let (code, err) = pub_on(
            &b,
            &[
                "--cafile", &ca, "--cert", &cert, "--key", &key, "-t", "fleet/t", "-m", "m", "-r",
            ],
        );
        assert_eq!(code, 0, "{err}\n{}", b.log());
        assert_eq!(b.retained("fleet/t").as_deref(), Some("m"));
        // Without a client certificate the handshake fails.
        let ci = b.ci.clone();
        let (code, _) = pub_on(
            &b,
            &[
                "--cafile",
                &ca,
                "-u",
                &ci.user,
                "-P",
                &ci.password,
                "-t",
                "x",
                "-m",
                "y",
            ],
        );
        assert_ne!(code, 0, "a client without a certificate was let in");
        // Another CA's trust store does not accept the server.
        let other = TestCa::new("untrusted CA").unwrap();
        let (code, _) = pub_on(
            &b,
            &[
                "--cafile",
                &other.ca.display().to_string(),
                "--cert",
                &cert,
                "--key",
                &key,
                "-t",
                "x",
                "-m",
                "y",
            ],
        );
        assert_ne!(code, 0, "trusted a server of another CA");
        let toml = b.notify_toml("fleet", "0s", None);
        assert!(
            toml.contains("client_cert = ") && toml.contains("ca_file = "),
            "{toml}"
        );
        let args = b.notify_args("fleet");
        assert!(args.contains(&"--client-key".to_string()), "{args:?}");
        assert!(!args.contains(&"--password-file".to_string()), "{args:?}");
    }
}
