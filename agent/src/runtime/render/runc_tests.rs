//! Checks that runc accepts and runs a rendered config: a busybox-static rootfs, the
//! default seccomp profile, dropped capabilities, a read-only root, a volume, a tmpfs,
//! secrets, limits and its own network namespace; the process reports what it sees.
//!
//! Needs root, `runc` and busybox-static: without one the test is skipped, or fails
//! under `CI=true` (`crate::testing`). Everything lives in a temporary
//! directory and a cgroup parent named after the test's pid, both removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fixtures::{Scenario, busybox, minimal_toml};
use super::{render, to_json};
use crate::runtime::spec_hash::SpecHash;
use crate::testing::{self, BUSYBOX};

/// Deletes the container and the test's cgroup parent, even when the test fails.
struct Cleanup {
    runc: PathBuf,
    state: PathBuf,
    id: String,
    cgroup_parent: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(&self.runc)
            .arg("--root")
            .arg(&self.state)
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        let parent = self.cgroup_parent.trim_start_matches('/');
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join(parent));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent));
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn runc_runs_a_rendered_config() {
    if !testing::have_root() || !testing::have_busybox() {
        return;
    }
    let Some(runc) = testing::tool("runc") else {
        return;
    };

    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "cat", "touch", "grep", "hostname", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    write(&rootfs.join("etc/passwd"), super::fixtures::PASSWD);
    write(&rootfs.join("etc/group"), super::fixtures::GROUP);
    let run = tmp.path().join("run");
    write(&run.join("hosts"), "127.0.0.1 localhost\n");
    write(&run.join("resolv.conf"), "nameserver 192.0.2.53\n");
    write(&run.join("hostname"), "rendercheck\n");
    write(&run.join("secrets/db-password"), "s3cret\n");
    write(&tmp.path().join("volume/hello"), "from the volume\n");

    let script = "id -u; id -G; cat /run/secrets/db-password; cat /data/hello; \
        touch /forbidden 2>/dev/null || echo ro-ok; touch /tmp/x && echo tmp-ok; \
        grep CapBnd /proc/self/status; ulimit -n; hostname";
    let extra = format!(
        r#"user = "app"
command = ["/bin/sh", "-c", "{script}"]
read_only = true
cap_drop = ["ALL"]
cap_add = ["NET_BIND_SERVICE"]
network_mode = "none"
ulimits = {{ nofile = "1024:2048" }}
[container.rendercheck.resources]
memory = "64MiB"
cpus = 0.5
pids = 64
[[container.rendercheck.mounts]]
volume = "web-data"
target = "/data"
read_only = true
[[container.rendercheck.mounts]]
tmpfs = "/tmp"
size = "1MiB"
[[container.rendercheck.secrets]]
name = "db-password"
"#
    );
    let mut s = Scenario::new(
        &minimal_toml("rendercheck", &extra),
        "rendercheck",
        busybox(),
    );
    let pid = std::process::id();
    s.hash = SpecHash::parse(&format!("{pid:08x}{}", "0".repeat(56))).unwrap();
    // The host facts, gathered the way the agent does.
    s.host = crate::runtime::host::gather().unwrap();
    s.devices.clear();
    s.paths.rootfs = rootfs.clone();
    s.paths
        .volumes
        .insert("web-data".into(), tmp.path().join("volume"));
    s.paths.secrets_dir = Some(run.join("secrets"));
    s.paths.hosts = Some(run.join("hosts"));
    s.paths.resolv_conf = Some(run.join("resolv.conf"));
    s.paths.hostname = Some(run.join("hostname"));
    s.paths.netns = None;

    let mut spec = render(&s.input()).unwrap();
    let id = s.input().instance_id();
    let cgroup_parent = format!("/berth-render-test-{pid}");
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(format!("{cgroup_parent}/{id}"))));
    }
    std::fs::write(bundle.join("config.json"), to_json(&spec).unwrap()).unwrap();

    let state = tmp.path().join("state");
    let _cleanup = Cleanup {
        runc: runc.clone(),
        state: state.clone(),
        id: id.clone(),
        cgroup_parent,
    };
    let mut child = Command::new(&runc)
        .arg("--root")
        .arg(&state)
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("runc run did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "runc run failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    let want = [
        "10001",
        "10001 29 44",
        "s3cret",
        "from the volume",
        "ro-ok",
        "tmp-ok",
        "CapBnd:\t0000000000000400",
        "1024",
        "rendercheck",
    ];
    assert_eq!(lines, want.map(|w| w.trim()), "stderr:\n{stderr}");
}
