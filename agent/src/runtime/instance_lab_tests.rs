//! The lab for the lifecycle tests against the real runtimes: prerequisites, two
//! busybox-static snapshots, instances prepared with the real renderer and
//! `host::gather`, and cleanup that runs even when a test fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::ImageConfiguration;

use super::*;
use crate::runtime::host;
use crate::runtime::mount::{mount_rootfs, unmount_rootfs};
use crate::runtime::oci::Runtime;
use crate::runtime::render::{InstancePaths, RenderInput, render, to_json};
use crate::runtime::spec_hash::SpecHash;
use crate::testing;

pub(super) use crate::testing::BUSYBOX;
pub(super) const NS_FLAG: &str = "BERTH_TEST_CRUN_NS";

pub(super) use crate::testing::missing;

/// `berth-shim`: `$BERTH_SHIM_BIN`, else `target/debug/berth-shim` (this binary is
/// `target/debug/deps/berth-…`).
pub(super) fn shim_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_SHIM_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("berth-shim"))
}

/// Root, busybox, the runtime named and the shim; `None` (skip) otherwise.
pub(super) fn prerequisites(runtime: &str) -> Option<PathBuf> {
    if !testing::have_root() || !testing::have_busybox() {
        return None;
    }
    testing::tool(runtime)?;
    match shim_bin() {
        Some(p) if p.is_file() => Some(p),
        p => {
            missing(&format!(
                "berth-shim at {p:?} (cargo build -p berth-shim, or set BERTH_SHIM_BIN)"
            ));
            None
        }
    }
}

/// A state dir, a run dir, two snapshots, and cleanup of every instance made.
pub(super) struct Lab {
    pub(super) tmp: tempfile::TempDir,
    pub(super) oci: OciInstances,
    pub(super) made: Mutex<Vec<RuntimeInstance>>,
    pub(super) host: crate::runtime::render::HostInfo,
}

impl Lab {
    pub(super) fn new(runtime: Runtime, shim: PathBuf) -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let snap = |n: &str| tmp.path().join("state/snapshots").join(n);
        // Snapshot 1: busybox and its applets; snapshot 2 (on top): users, a file that
        // is not executable, and a replaced file.
        let bin = snap("1").join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        for applet in ["sh", "id", "sleep", "echo", "cat", "true", "touch"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        write(&snap("1").join("etc/layer"), "base\n");
        write(&snap("2").join("etc/layer"), "top\n");
        write(
            &snap("2").join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:10001:10001:app:/tmp:/bin/sh\n",
        );
        write(&snap("2").join("etc/group"), "root:x:0:\napp:x:10001:\n");
        write(&snap("2").join("noexec"), "#!/bin/sh\n");
        let tmpdir = snap("2").join("tmp");
        std::fs::create_dir_all(&tmpdir).unwrap();
        std::fs::set_permissions(
            &tmpdir,
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let mut oci = OciInstances::new(runtime, shim, 1 << 20, 2);
        oci.kill_timeout = Duration::from_secs(10);
        Lab {
            tmp,
            oci,
            made: Mutex::new(Vec::new()),
            host: host::gather().unwrap(),
        }
    }

    pub(super) fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Mounts the rootfs and writes the bundle of container `name` running `script`.
    pub(super) fn prepare(&self, name: &str, script: &str) -> RuntimeInstance {
        let toml = format!(
            "[container.{name}]\nimage = \"registry.example.com/test/{name}@sha256:{}\"\n\
             user = \"app\"\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\nnetwork_mode = \"none\"\n\
             [container.{name}.resources]\nmemory = \"64MiB\"\npids = 64\n",
            "ab".repeat(32)
        );
        let tree = berth_spec::Tree::from_sources(vec![berth_spec::SourceFile {
            path: "spec.toml".into(),
            text: toml,
        }]);
        let checked = berth_spec::check(&tree, None);
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        let container = checked.state.containers[name].clone();
        let image: ImageConfiguration = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
                "config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]}}"#,
        )
        .unwrap();
        let hash =
            SpecHash::parse(&format!("{:08x}{}", std::process::id(), "0".repeat(56))).unwrap();
        let id = hash.instance_id(name);
        let inst = RuntimeInstance::new(&self.state_dir(), &id);
        self.made.lock().unwrap().push(inst.clone());
        let d = &inst.dirs;
        let snaps = self.state_dir().join("snapshots");
        mount_rootfs(d, &[snaps.join("2"), snaps.join("1")]).unwrap();
        write(&d.hosts(), "127.0.0.1 localhost\n");
        write(&d.resolv_conf(), "nameserver 192.0.2.53\n");
        write(&d.hostname(), &format!("{name}\n"));
        let paths = InstancePaths {
            rootfs: d.rootfs(),
            hosts: Some(d.hosts()),
            resolv_conf: Some(d.resolv_conf()),
            hostname: Some(d.hostname()),
            ..Default::default()
        };
        let passwd = std::fs::read_to_string(d.rootfs().join("etc/passwd")).unwrap();
        let group = std::fs::read_to_string(d.rootfs().join("etc/group")).unwrap();
        let spec = render(&RenderInput {
            container: &container,
            image: &image,
            spec_hash: &hash,
            paths: &paths,
            state_dir: &self.state_dir(),
            host: &self.host,
            passwd: Some(&passwd),
            group: Some(&group),
            seccomp_profile: None,
            devices: &[],
        })
        .unwrap();
        write(&d.config(), &to_json(&spec).unwrap());
        inst
    }

    /// Runs `args` in `inst`; (exit code, stdout, runtime error).
    pub(super) fn exec(
        &self,
        inst: &RuntimeInstance,
        args: &[&str],
        user: Option<u32>,
    ) -> (i32, String, Option<String>) {
        let out = tempfile::tempfile().unwrap();
        let req = ExecRequest {
            args: args.iter().map(|s| s.to_string()).collect(),
            user: user.map(|uid| crate::runtime::user::ResolvedUser {
                uid,
                gid: uid,
                additional_gids: vec![],
                name: None,
            }),
            ..Default::default()
        };
        let io = ExecIo {
            stdin: Stdio::null(),
            stdout: Stdio::from(out.try_clone().unwrap()),
            stderr: Stdio::null(),
        };
        let outcome = self.oci.exec(inst, &req, io).unwrap();
        let mut text = String::new();
        use std::io::{Read, Seek};
        let mut out = out;
        out.rewind().unwrap();
        out.read_to_string(&mut text).unwrap();
        (outcome.exit_code, text, outcome.runtime_error)
    }

    /// Nothing left: runtime list, mounts under the lab, cgroups of the instances.
    pub(super) fn assert_clean(&self) {
        let rt = &self.oci.runtime;
        let list = Command::new(&rt.binary)
            .arg("--root")
            .arg(&rt.root)
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&list.stdout).trim(),
            "",
            "runtime list"
        );
        let lab = self
            .tmp
            .path()
            .canonicalize()
            .unwrap()
            .display()
            .to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(&lab),
            "mounts left under {lab}:\n{mountinfo}"
        );
        // In the crun test's namespace, `unified` is the test's own tmpfs, where crun
        // leaves an empty directory; it goes with the namespace.
        let private_unified = std::env::var(NS_FLAG).as_deref() == Ok("1");
        let made = self.made.lock().unwrap().clone();
        for inst in made {
            for cg in cgroup_dirs(&self.state_dir(), &inst.id) {
                if private_unified && cg.starts_with("/sys/fs/cgroup/unified") {
                    continue;
                }
                assert!(!cg.exists(), "cgroup left: {}", cg.display());
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let rt = &self.oci.runtime;
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        for inst in made.iter() {
            let _ = rt.run("delete", &inst.id, &rt.delete_argv(&inst.id, true));
            let _ = unmount_rootfs(&inst.dirs);
            for cg in cgroup_dirs(&self.state_dir(), &inst.id) {
                let _ = std::fs::remove_dir(cg);
            }
        }
    }
}

/// `/sys/fs/cgroup/<hierarchy>/berth/<id>` for every hierarchy (v1), or the v2 one.
pub(super) fn cgroup_dirs(state_dir: &Path, id: &str) -> Vec<PathBuf> {
    let rel = crate::runtime::render::cgroups_path(state_dir, id);
    let mut out = vec![PathBuf::from(format!("/sys/fs/cgroup{rel}"))];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        out.extend(
            entries
                .flatten()
                .map(|e| PathBuf::from(format!("{}{rel}", e.path().display()))),
        );
    }
    out
}

pub(super) fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub(super) fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tracing subscriber writing into a buffer, for asserting log lines.
pub(super) fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}
