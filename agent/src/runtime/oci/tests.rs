//! Golden command lines for runc and crun, state and error parsing, and the runner
//! and detection with `/bin/true`, `/bin/false` and shell scripts as the runtime.

use std::os::unix::fs::PermissionsExt;

use super::detect::{CACHE_FILE, DetectError, ProbeCache};
use super::*;
use std::time::Instant;

fn rt(kind: RuntimeKind) -> Runtime {
    Runtime {
        binary: PathBuf::from(format!("/usr/bin/{}", kind.name())),
        kind,
        root: PathBuf::from(format!("/run/berth/{}", kind.name())),
    }
}

fn line(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn golden_argv_for_runc_and_crun() {
    for kind in [RuntimeKind::Runc, RuntimeKind::Crun] {
        let r = rt(kind);
        let n = kind.name();
        assert_eq!(
            line(&r.start_argv("web-0123abcd")),
            format!("--root /run/berth/{n} start web-0123abcd")
        );
        assert_eq!(
            line(&r.kill_argv("web-0123abcd", 15)),
            format!("--root /run/berth/{n} kill web-0123abcd 15")
        );
        assert_eq!(
            line(&r.delete_argv("web-0123abcd", false)),
            format!("--root /run/berth/{n} delete web-0123abcd")
        );
        assert_eq!(
            line(&r.delete_argv("web-0123abcd", true)),
            format!("--root /run/berth/{n} delete --force web-0123abcd")
        );
        assert_eq!(
            line(&r.state_argv("web-0123abcd")),
            format!("--root /run/berth/{n} state web-0123abcd")
        );
        assert_eq!(
            line(&r.create_argv(
                "p",
                Path::new("/run/berth/probe/p"),
                Path::new("/run/berth/probe/p/pid")
            )),
            format!(
                "--root /run/berth/{n} create --bundle /run/berth/probe/p --pid-file /run/berth/probe/p/pid p"
            )
        );
    }
}

#[test]
fn golden_shim_argv() {
    let i = Path::new("/var/lib/berth/instances/web-0123abcd");
    let argv = rt(RuntimeKind::Crun).shim_argv(&ShimLaunch {
        id: "web-0123abcd",
        bundle: &i.join("bundle"),
        log: &i.join("ctr.log"),
        exit_file: &i.join("exit.json"),
        pid_file: &i.join("pid"),
        shim_pid_file: &i.join("shim.pid"),
        log_max_size: 10 << 20,
        log_max_files: 3,
        cgroup_procs: &[
            "/sys/fs/cgroup/memory/berth/shims/cgroup.procs".into(),
            "/sys/fs/cgroup/unified/berth/shims/cgroup.procs".into(),
        ],
    });
    assert_eq!(
        line(&argv),
        "--id web-0123abcd --bundle /var/lib/berth/instances/web-0123abcd/bundle \
         --runtime /usr/bin/crun --runtime-root /run/berth/crun \
         --log /var/lib/berth/instances/web-0123abcd/ctr.log --log-max-size 10485760 --log-max-files 3 \
         --exit-file /var/lib/berth/instances/web-0123abcd/exit.json \
         --pid-file /var/lib/berth/instances/web-0123abcd/pid \
         --shim-pid-file /var/lib/berth/instances/web-0123abcd/shim.pid \
         --cgroup-procs /sys/fs/cgroup/memory/berth/shims/cgroup.procs \
         --cgroup-procs /sys/fs/cgroup/unified/berth/shims/cgroup.procs"
    );
}

#[test]
fn golden_exec_argv() {
    let r = rt(RuntimeKind::Runc);
    let process = r.exec_argv(
        "web-0123abcd",
        Path::new("/i/.exec-process-1.json"),
        Some(Path::new("/i/.exec-log-1.json")),
    );
    assert_eq!(
        line(&process),
        "--root /run/berth/runc --log /i/.exec-log-1.json --log-format json exec --process /i/.exec-process-1.json web-0123abcd"
    );
}

#[test]
fn state_json_of_runc_and_crun() {
    let runc = r#"{
  "ociVersion": "1.0.2-dev", "id": "t1", "pid": 18703, "status": "created",
  "bundle": "/tmp/exp/b", "rootfs": "/tmp/exp/b/rootfs", "created": "2026-11-22T06:23:14.346059772Z", "owner": ""
}"#;
    assert_eq!(
        parse_state(runc).unwrap(),
        RuntimeState {
            status: RuntimeStatus::Created,
            pid: Some(18703)
        }
    );
    let crun = r#"{"ociVersion": "1.0.0", "id": "c1", "pid": 19420, "status": "running",
        "bundle": "/tmp/exp/b", "rootfs": "rootfs", "created": "2026-11-22T06:23:22.810678Z",
        "systemd-scope": "", "owner": "root"}"#;
    assert_eq!(
        parse_state(crun).unwrap(),
        RuntimeState {
            status: RuntimeStatus::Running,
            pid: Some(19420)
        }
    );
    let stopped = r#"{"ociVersion":"1.0.2-dev","id":"t1","pid":0,"status":"stopped"}"#;
    assert_eq!(
        parse_state(stopped).unwrap(),
        RuntimeState {
            status: RuntimeStatus::Stopped,
            pid: None
        }
    );
    assert_eq!(
        parse_state(r#"{"status":"paused","pid":3}"#)
            .unwrap()
            .status,
        RuntimeStatus::Paused
    );
    assert!(parse_state(r#"{"status":"exploded"}"#).is_err());
    assert!(parse_state("").is_err());
}

#[test]
fn runtime_errors_are_one_line_and_not_found_is_recognised() {
    let runc = "time=\"2026-11-22T06:23:52Z\" level=error msg=\"container does not exist\"\n";
    assert_eq!(error_text(runc), "container does not exist");
    assert!(is_not_found(runc));
    let crun = "error opening file `/run/berth/crun/x/status`: No such file or directory\n";
    assert_eq!(error_text(crun), crun.trim());
    assert!(is_not_found(crun));
    let quoted =
        "time=\"t\" level=error msg=\"exec: \\\"nope\\\": executable file not found in $PATH\"";
    assert_eq!(
        error_text(quoted),
        "exec: \"nope\": executable file not found in $PATH"
    );
    assert!(!is_not_found(
        "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"
    ));
    assert_eq!(error_text(""), "no error output");
}

#[test]
fn exec_failures_map_to_docker_exit_codes() {
    // What runc 1.1 and crun 1.8 write to their --log on this host.
    let runc_missing = r#"exec failed: unable to start container process: exec: "nope": executable file not found in $PATH"#;
    let crun_missing = "executable file `nope` not found in $PATH: No such file or directory";
    let runc_abs = r#"exec failed: unable to start container process: exec: "/bin/nope": stat /bin/nope: no such file or directory"#;
    let runc_perm =
        r#"exec failed: unable to start container process: exec: "/noexec": permission denied"#;
    let crun_perm = "open executable: Permission denied";
    assert_eq!(exec_failure_code(runc_missing, "nope"), 127);
    assert_eq!(exec_failure_code(crun_missing, "nope"), 127);
    assert_eq!(exec_failure_code(runc_abs, "/bin/nope"), 127);
    assert_eq!(exec_failure_code(runc_perm, "/noexec"), 126);
    assert_eq!(exec_failure_code(crun_perm, "/noexec"), 126);
    assert_eq!(exec_failure_code("exec format error", "/x"), 126);
    // A missing container or working directory is not a missing command.
    let crun_gone = "error opening file `/run/berth/crun/x/status`: No such file or directory";
    assert_eq!(exec_failure_code(crun_gone, "id"), 125);
    assert_eq!(
        exec_failure_code("cannot exec in a stopped container", "id"),
        125
    );
}

#[test]
fn the_last_logged_error_wins() {
    let log = concat!(
        r#"{"level":"warning","msg":"something","time":"t"}"#,
        "\n",
        r#"{"msg":"executable file `nope` not found in $PATH: No such file or directory","level":"error","time":"t"}"#,
        "\nnot json\n"
    );
    assert_eq!(
        last_logged_error(log).as_deref(),
        Some("executable file `nope` not found in $PATH: No such file or directory")
    );
    assert_eq!(last_logged_error(r#"{"level":"info","msg":"x"}"#), None);
}

#[test]
fn kinds_from_version_and_name() {
    assert_eq!(
        RuntimeKind::from_version("crun version 1.8.1\ncommit: x"),
        RuntimeKind::Crun
    );
    assert_eq!(
        RuntimeKind::from_version("runc version 1.1.5+ds1"),
        RuntimeKind::Runc
    );
    assert_eq!(
        RuntimeKind::from_version("youki version 0.3"),
        RuntimeKind::Runc
    );
    assert_eq!(
        RuntimeKind::from_binary(Path::new("/usr/local/bin/crun")),
        RuntimeKind::Crun
    );
    let r = Runtime::from_record(Path::new("/usr/bin/runc"), Path::new("/run/berth/runc"));
    assert_eq!(r.kind, RuntimeKind::Runc);
}

/// A shell script standing in for the runtime.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn run_reports_success_failure_and_not_found() {
    let ok = Runtime {
        binary: "/bin/true".into(),
        ..rt(RuntimeKind::Runc)
    };
    assert_eq!(ok.run("start", "x", &ok.start_argv("x")).unwrap(), "");
    let echo = Runtime {
        binary: "/bin/echo".into(),
        ..rt(RuntimeKind::Runc)
    };
    assert_eq!(
        echo.run("start", "x", &echo.start_argv("x")).unwrap(),
        "--root /run/berth/runc start x\n"
    );

    let t = tempfile::tempdir().unwrap();
    let failing = Runtime {
        binary: script(
            t.path(),
            "rt",
            "echo 'time=\"t\" level=error msg=\"container with id exists: x\"' >&2; exit 1",
        ),
        ..rt(RuntimeKind::Runc)
    };
    let e = failing
        .run("start", "x", &failing.start_argv("x"))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "oci runtime `{}`: `start` of container `x` failed (exit status: 1): container with id exists: x",
            failing.binary.display()
        )
    );
    assert!(!e.is_not_found());

    let gone = Runtime {
        binary: script(
            t.path(),
            "gone",
            "echo 'time=\"t\" level=error msg=\"container does not exist\"' >&2; exit 1",
        ),
        ..rt(RuntimeKind::Runc)
    };
    assert_eq!(gone.state("x").unwrap(), None);
    let state = Runtime {
        binary: script(t.path(), "state", r#"echo '{"status":"running","pid":42}'"#),
        ..rt(RuntimeKind::Crun)
    };
    assert_eq!(
        state.state("x").unwrap(),
        Some(RuntimeState {
            status: RuntimeStatus::Running,
            pid: Some(42)
        })
    );
    let missing = Runtime {
        binary: "/nonexistent/runc".into(),
        ..rt(RuntimeKind::Runc)
    };
    assert!(matches!(
        missing.run("start", "x", &[]),
        Err(RuntimeError::Spawn { .. })
    ));
}

#[test]
fn run_captured_kills_at_the_timeout_and_ignores_lingering_children() {
    let started = Instant::now();
    let out = run_captured(
        Command::new("/bin/sleep").arg("5"),
        Duration::from_millis(100),
    )
    .unwrap();
    assert!(out.is_none());
    assert!(started.elapsed() < Duration::from_secs(2));
    // A grandchild keeps stdout open (as a created container does): no wait for it.
    let started = Instant::now();
    let out = run_captured(
        Command::new("/bin/sh").args(["-c", "sleep 3 & echo hi"]),
        Duration::from_secs(10),
    )
    .unwrap()
    .unwrap();
    assert_eq!(out.stdout, "hi\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A fake runtime that records its calls and whose `create` says `create_says`.
fn fake_runtime(dir: &Path, create_says: Option<&str>) -> PathBuf {
    let calls = dir.join("calls");
    let create = match create_says {
        None => "exit 0".to_string(),
        Some(e) => format!("echo '{e}' >&2; exit 1"),
    };
    script(
        dir,
        "runc",
        &format!(
            r#"echo "$*" >> {calls}
[ "$1" = --version ] && {{ echo "runc version 0.0-fake"; exit 0; }}
case "$3" in
create) {create} ;;
state) echo '{{"status":"stopped","pid":0}}' ;;
esac
exit 0"#,
            calls = calls.display()
        ),
    )
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn detect_probes_a_path_once_and_caches_the_verdict() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_runtime(t.path(), None);
    let run_dir = t.path().join("run");
    let r = detect(bin.to_str().unwrap(), &run_dir).unwrap();
    assert_eq!(r.kind, RuntimeKind::Runc);
    assert_eq!(r.root, run_dir.join("runc"));
    let first = calls(t.path());
    let probe_root = run_dir.join("probe/runc-root").display().to_string();
    assert_eq!(first[0], "--version");
    assert_eq!(first[1], format!("--root {probe_root} create"));
    assert!(first.iter().any(|c| c.ends_with(" delete")), "{first:?}");

    let cache: ProbeCache =
        serde_json::from_slice(&std::fs::read(run_dir.join(CACHE_FILE)).unwrap()).unwrap();
    assert_eq!(cache.probes.len(), 1);
    assert_eq!(cache.probes[0].version, "runc version 0.0-fake");
    assert_eq!(cache.probes[0].error, None);
    // The probe's bundle is gone.
    assert_eq!(
        std::fs::read_dir(run_dir.join("probe"))
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with("-root")
            })
            .count(),
        0
    );

    // Cached: the runtime is not run again.
    detect(bin.to_str().unwrap(), &run_dir).unwrap();
    assert_eq!(calls(t.path()), first);
    // A new binary (mtime and size change) is probed again.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&bin, std::fs::read_to_string(&bin).unwrap() + "\n# v2\n").unwrap();
    detect(bin.to_str().unwrap(), &run_dir).unwrap();
    assert!(calls(t.path()).len() > first.len());
}

#[test]
fn detect_refuses_a_runtime_whose_create_fails_and_remembers_why() {
    let t = tempfile::tempdir().unwrap();
    let bin = fake_runtime(
        t.path(),
        Some("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"),
    );
    let run_dir = t.path().join("run");
    let e = detect(bin.to_str().unwrap(), &run_dir).unwrap_err();
    assert!(matches!(e, DetectError::Unusable { .. }));
    assert!(
        e.to_string()
            .contains("does not work on this host: cgroups in hybrid mode not supported"),
        "{e}"
    );
    let n = calls(t.path()).len();
    let again = detect(bin.to_str().unwrap(), &run_dir).unwrap_err();
    assert_eq!(again.to_string(), e.to_string());
    assert_eq!(
        calls(t.path()).len(),
        n,
        "a cached failure is not probed again"
    );
}

#[test]
fn detect_rejects_bad_choices() {
    let t = tempfile::tempdir().unwrap();
    assert!(matches!(
        detect("docker", t.path()),
        Err(DetectError::BadChoice(_))
    ));
    assert!(matches!(
        detect("", t.path()),
        Err(DetectError::BadChoice(_))
    ));
    assert!(matches!(
        detect("/nonexistent/crun", t.path()),
        Err(DetectError::NotFound(_))
    ));
    let e = detect("relative/runc", t.path()).unwrap_err();
    assert!(e.to_string().contains("expected \"auto\""), "{e}");
}
