//! The shim against the real runc, as root: a busybox-static bundle, CRI log lines,
//! the exit file, runtime errors, and a container that outlives the shim's launcher.
//!
//! Prerequisites (root, `runc`, `/bin/busybox`): under `CI=true` a missing one fails
//! the test; elsewhere the test prints why it is skipped (`tests/src/skip.rs`). Each test uses its own
//! container id and runtime `--root`, and always runs `runc delete -f`.

// Test helpers outside `#[test]` functions: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_berth-shim");

/// The workspace's one test-skip rule; the shim cannot depend on the harness crate.
#[path = "../../../tests/src/skip.rs"]
mod skip;

use skip::missing;

fn runc_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
}

/// Root, runc and busybox-static, or a skip (a failure under CI).
fn prerequisites() -> Option<PathBuf> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(str::to_string)
        });
    if uid.is_none_or(|l| l.split_whitespace().nth(1) != Some("0")) {
        missing("root privileges");
        return None;
    }
    if !Path::new("/bin/busybox").is_file() {
        missing("/bin/busybox (busybox-static)");
        return None;
    }
    let runc = runc_path();
    if runc.is_none() {
        missing("`runc` on PATH");
    }
    runc
}

/// A bundle, runtime root and instance directory, with `runc delete -f` on drop.
struct Fixture {
    dir: tempfile::TempDir,
    runc: PathBuf,
    id: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Fixture {
    fn new(runc: PathBuf, script: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let id = format!(
            "berth-shim-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
        std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox")).unwrap();
        std::fs::create_dir_all(dir.path().join("instance")).unwrap();
        let st = Command::new(&runc)
            .args(["spec", "--bundle"])
            .arg(&bundle)
            .status()
            .unwrap();
        assert!(st.success(), "runc spec failed");
        let path = bundle.join("config.json");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["/bin/busybox", "sh", "-c", script]);
        config["hostname"] = json!("shim-test");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Fixture { dir, runc, id }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn shim_args(&self) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec![
            "--id".into(),
            self.id.clone(),
            "--bundle".into(),
            p("bundle"),
            "--runtime".into(),
            self.runc.display().to_string(),
            "--runtime-root".into(),
            p("runc-root"),
            "--log".into(),
            p("instance/ctr.log"),
            "--log-max-size".into(),
            "1048576".into(),
            "--log-max-files".into(),
            "2".into(),
            "--exit-file".into(),
            p("instance/exit.json"),
            "--pid-file".into(),
            p("instance/pid"),
            "--shim-pid-file".into(),
            p("instance/shim.pid"),
        ]
    }

    fn runc(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.runc)
            .arg("--root")
            .arg(self.path("runc-root"))
            .args(args)
            .output()
            .unwrap()
    }

    fn start(&self) {
        let out = self.runc(&["start", &self.id]);
        assert!(
            out.status.success(),
            "runc start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn state(&self) -> String {
        let out = self.runc(&["state", &self.id]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["status"].as_str().unwrap_or("unknown").to_string()
    }

    fn wait_exit_file(&self) -> Value {
        let path = self.path("instance/exit.json");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(bytes) = std::fs::read(&path) {
                return serde_json::from_slice(&bytes).unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no exit file at {} after 20 s", path.display());
    }

    fn log_records(&self) -> Vec<(String, String, String, String)> {
        let text = std::fs::read_to_string(self.path("instance/ctr.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let mut next = || it.next().unwrap_or_default().to_string();
                (next(), next(), next(), next())
            })
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "-f", &self.id]);
    }
}

/// The process state letter from /proc/PID/stat (`Z` zombie, `None` gone).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Reads "Rss:" and "Pss:" (kB) from /proc/PID/smaps_rollup.
fn rss_pss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

fn ready(stdout: &str) -> (u32, u32) {
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    (
        v["shim_pid"].as_u64().unwrap() as u32,
        v["pid"].as_u64().unwrap() as u32,
    )
}

fn assert_timestamp(t: &str) {
    assert_eq!(t.len(), 30, "{t}");
    assert!(
        t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
        "{t}"
    );
}

#[test]
fn stdout_and_stderr_reach_the_cri_log_and_exit_code_is_recorded() {
    let Some(runc) = prerequisites() else { return };
    let script = "echo out; echo err >&2; printf '%020000d\\n' 0; printf 'no newline'; exit 3";
    let fx = Fixture::new(runc, script);
    let out = Command::new(SHIM).args(fx.shim_args()).output().unwrap();
    assert!(
        out.status.success(),
        "shim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, pid) = ready(&String::from_utf8_lossy(&out.stdout));
    let pid_file = std::fs::read_to_string(fx.path("instance/pid")).unwrap();
    assert_eq!(pid_file.trim(), pid.to_string());
    assert_eq!(fx.state(), "created");
    fx.start();

    let exit = fx.wait_exit_file();
    assert_eq!(exit["exit_code"], 3, "{exit}");
    assert_eq!(exit["signal"], Value::Null);
    assert_timestamp(exit["finished_at"].as_str().unwrap());

    let records = fx.log_records();
    for (time, ..) in &records {
        assert_timestamp(time);
    }
    let short: Vec<_> = records
        .iter()
        .filter(|r| r.3.len() < 100)
        .map(|r| (r.1.as_str(), r.2.as_str(), r.3.as_str()))
        .collect();
    assert!(short.contains(&("stdout", "F", "out")), "{records:?}");
    assert!(short.contains(&("stderr", "F", "err")), "{records:?}");
    assert!(
        short.contains(&("stdout", "F", "no newline")),
        "{records:?}"
    );
    // A 20000-character line: one 16 KiB partial record, then the rest as full.
    let long: Vec<_> = records.iter().filter(|r| r.3.starts_with("000")).collect();
    assert_eq!(long.len(), 2, "{long:?}");
    assert_eq!((long[0].2.as_str(), long[0].3.len()), ("P", 16384));
    assert_eq!((long[1].2.as_str(), long[1].3.len()), ("F", 20000 - 16384));
}

#[test]
fn a_failing_create_reports_the_runtime_error() {
    let Some(runc) = prerequisites() else { return };
    let fx = Fixture::new(runc, "true");
    std::fs::remove_dir_all(fx.path("bundle/rootfs")).unwrap();
    let out = Command::new(SHIM).args(fx.shim_args()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("create failed") && stderr.contains("rootfs"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert!(!fx.path("instance/exit.json").exists());
}

#[test]
fn the_container_outlives_the_killed_launcher_and_its_kill_is_recorded() {
    let Some(runc) = prerequisites() else { return };
    let fx = Fixture::new(
        runc,
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
    );
    // The launcher stands in for the agent: its own process group, holding the shim's
    // stdout pipe, killed with SIGKILL as a whole group once the shim is ready.
    let mut launcher = Command::new("/bin/sh")
        .args(["-c", "\"$@\"; exec sleep 600", "launcher", SHIM])
        .args(fx.shim_args())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(launcher.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (shim_pid, _) = ready(&line);
    fx.start();

    let group = format!("-{}", launcher.id());
    // busybox's kill: procps may be absent, and dash's builtin takes no process group.
    let st = Command::new("/bin/busybox")
        .args(["kill", "-KILL", &group])
        .status()
        .unwrap();
    assert!(st.success());
    launcher.wait().unwrap();

    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fx.state(), "running");
    assert!(
        matches!(proc_state(shim_pid), Some(s) if s != 'Z'),
        "the shim died with its launcher"
    );
    let before = fx.log_records().len();
    std::thread::sleep(Duration::from_millis(500));
    let after = fx.log_records().len();
    assert!(
        after > before,
        "the log stopped growing: {before} → {after} records"
    );

    let (rss, pss) = rss_pss(shim_pid);
    eprintln!("berth-shim RSS {rss} kB, PSS {pss} kB (this build's profile)");

    let out = fx.runc(&["kill", &fx.id, "KILL"]);
    assert!(
        out.status.success(),
        "runc kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = fx.wait_exit_file();
    assert_eq!(exit["exit_code"], 137, "{exit}");
    assert_eq!(exit["signal"], 9);
    assert!(
        fx.log_records()
            .iter()
            .all(|r| r.1 == "stdout" && r.2 == "F" && r.3.starts_with("tick "))
    );

    // Then the shim exits (a zombie until the host's init reaps it, or gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(proc_state(shim_pid), Some(s) if s != 'Z') {
        assert!(
            Instant::now() < deadline,
            "the shim did not exit after the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cgroup of the `pids` controller (v1) or of the unified hierarchy (v2) made for
/// one test, removed on drop once empty.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> Option<TestCgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = mountinfo.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split(' ');
            let (fstype, _, opts) = (post.next()?, post.next()?, post.next()?);
            let fits =
                fstype == "cgroup2" || (fstype == "cgroup" && opts.split(',').any(|o| o == "pids"));
            fits.then(|| PathBuf::from(pre.split(' ').nth(4).unwrap_or("/")))
        })?;
        let dir = mount.join(format!(
            "berth-shim-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir(&dir).ok()?;
        Some(TestCgroup(dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_shim_leaves_for_the_cgroups_it_is_given_and_reports_one_it_cannot_join() {
    let Some(runc) = prerequisites() else { return };
    let Some(cgroup) = TestCgroup::new() else {
        missing("a writable cgroup hierarchy (pids or cgroup2)");
        return;
    };
    let fx = Fixture::new(runc, "sleep 600");
    let gone = fx.path("no-such-cgroup/cgroup.procs");
    let mut args = fx.shim_args();
    args.extend([
        "--cgroup-procs".to_string(),
        cgroup.0.join("cgroup.procs").display().to_string(),
        "--cgroup-procs".to_string(),
        gone.display().to_string(),
    ]);
    let out = Command::new(SHIM).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "shim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (shim_pid, _) = ready(&stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let warnings = v["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{v}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains(&gone.display().to_string()),
        "{v}"
    );
    let name = cgroup.0.file_name().unwrap().to_string_lossy().into_owned();
    let placed = std::fs::read_to_string(format!("/proc/{shim_pid}/cgroup")).unwrap();
    assert!(
        placed.lines().any(|l| l.ends_with(&format!(":/{name}"))),
        "the shim is not in {}:\n{placed}",
        cgroup.0.display()
    );
    assert!(!gone.exists(), "a cgroup.procs that was not there was made");
    assert_eq!(fx.state(), "created");
    let out = fx.runc(&["delete", "-f", &fx.id]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(proc_state(shim_pid), Some(s) if s != 'Z') {
        assert!(Instant::now() < deadline, "the shim outlived its container");
        std::thread::sleep(Duration::from_millis(50));
    }
}
