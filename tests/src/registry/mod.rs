//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a
//! free loopback port, with its storage in a temp dir, optionally behind htpasswd
//! Basic auth. Stopped (and its storage removed) on drop.
//!
//! Also: [`http`], a tiny std-only HTTP client used to push fixtures, and [`proxy`],
//! a loopback HTTP proxy that can cut a response short, fail requests, or demand
//! Bearer tokens from its own token endpoint, for the failure-path tests.

pub mod http;
pub mod proxy;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::have_tools;

/// A running `docker-registry`.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// `(user, password)` when started with htpasswd auth.
    pub basic: Option<(String, String)>,
}

/// Options for [`TestRegistry::start_with`].
#[derive(Debug, Default, Clone)]
pub struct RegistryOptions {
    /// Require this user and password (htpasswd, bcrypt).
    pub htpasswd: Option<(String, String)>,
}

/// A free loopback port (the listener is dropped; a small race is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

impl TestRegistry {
    /// Starts an anonymous registry; `None` (after [`crate::missing`]) without
    /// `docker-registry`.
    pub fn start() -> Option<TestRegistry> {
        TestRegistry::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Option<TestRegistry> {
        if !have_tools(&["docker-registry"]) {
            return None;
        }
        let mut last = String::new();
        for _ in 0..3 {
            match TestRegistry::try_start(&opts) {
                Ok(r) => return Some(r),
                Err(e) => last = e,
            }
        }
        panic!("docker-registry did not start: {last}");
    }

    fn try_start(opts: &RegistryOptions) -> Result<TestRegistry, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let data = dir.path().join("data");
        let mut auth = String::new();
        if let Some((user, password)) = &opts.htpasswd {
            let hash = bcrypt::hash(password, 4).map_err(|e| e.to_string())?;
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).map_err(|e| e.to_string())?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n{auth}",
            data.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run docker-registry: {e}"))?;
        let mut reg = TestRegistry {
            child,
            addr,
            dir,
            basic: opts.htpasswd.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = reg.child.try_wait() {
                let log = std::fs::read_to_string(reg.dir.path().join("registry.log"))
                    .unwrap_or_default();
                return Err(format!("exited with {status}: {log}"));
            }
            if let Ok(r) = http::request("GET", &reg.url("/v2/"), &[], b"")
                && (r.status == 200 || r.status == 401)
            {
                return Ok(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = reg.child.kill();
        Err("not ready after 15 s".into())
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The registry's storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the registry keeps a blob's bytes (`sha256:<hex>` digest).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The `Authorization` header value for pushes, when auth is on.
    pub fn auth_header(&self) -> Option<String> {
        self.basic.as_ref().map(|(u, p)| basic_header(u, p))
    }

    /// The temp dir holding config and storage (for extra files a test needs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Basic base64(user:password)`.
pub fn basic_header(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Writes a docker `config.json` with credentials for `host` into a new directory,
/// for `DOCKER_CONFIG`.
pub fn docker_config(host: &str, user: &str, password: &str) -> tempfile::TempDir {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = serde_json::json!({ "auths": { host: { "auth": auth } } });
    std::fs::write(dir.path().join("config.json"), json.to_string())
        .unwrap_or_else(|e| panic!("write config.json: {e}"));
    dir
}
