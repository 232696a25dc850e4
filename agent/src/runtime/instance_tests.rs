//! The lifecycle logic with shell scripts standing in for the runtime and the shim:
//! each script records its arguments and plays one scenario, so the sequence of
//! runtime calls (state, kill, delete…) is asserted without root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::driver::wait_for_file;
use super::*;
use crate::runtime::oci::{Runtime, RuntimeKind, RuntimeState, RuntimeStatus};
use crate::runtime::state::ExitStatus;
use crate::runtime::user::ResolvedUser;

const ID: &str = "web-0123abcd";

fn exit(code: i32) -> ExitStatus {
    ExitStatus {
        exit_code: code,
        signal: (code > 128).then_some(code - 128),
        finished_at: "2026-11-22T00:00:00Z".into(),
    }
}

#[test]
fn status_from_the_exit_file_first_and_the_state_second() {
    let st = |status, pid| Some(RuntimeState { status, pid });
    assert_eq!(
        derive_status(Some(exit(0)), st(RuntimeStatus::Running, Some(5))),
        InstanceStatus::Exited(exit(0))
    );
    assert_eq!(
        derive_status(None, st(RuntimeStatus::Running, Some(5))),
        InstanceStatus::Running { pid: 5 }
    );
    assert_eq!(
        derive_status(None, st(RuntimeStatus::Paused, Some(5))),
        InstanceStatus::Running { pid: 5 }
    );
    assert_eq!(
        derive_status(None, st(RuntimeStatus::Created, Some(7))),
        InstanceStatus::Created { pid: 7 }
    );
    assert_eq!(
        derive_status(None, st(RuntimeStatus::Stopped, None)),
        InstanceStatus::Stopped
    );
    assert_eq!(
        derive_status(Some(exit(137)), None),
        InstanceStatus::Exited(exit(137))
    );
    assert_eq!(derive_status(None, None), InstanceStatus::Missing);
}

#[test]
fn exec_process_applies_the_request_to_the_containers_process() {
    let container = json!({
        "terminal": true, "consoleSize": {"height": 1, "width": 2},
        "user": {"uid": 10001, "gid": 10001, "additionalGids": [29], "umask": 18},
        "args": ["/bin/httpd"], "env": ["PATH=/bin", "LOG_LEVEL=info"], "cwd": "/srv",
        "capabilities": {"bounding": ["CAP_NET_BIND_SERVICE"]}, "noNewPrivileges": true
    });
    let same = exec_process(
        &container,
        &ExecRequest {
            args: vec!["id".into()],
            ..Default::default()
        },
    );
    assert_eq!(same["args"], json!(["id"]));
    assert_eq!(same["terminal"], json!(false));
    assert!(same.get("consoleSize").is_none());
    assert_eq!(same["user"], container["user"]);
    assert_eq!(same["env"], container["env"]);
    assert_eq!(same["cwd"], json!("/srv"));
    assert_eq!(same["capabilities"], container["capabilities"]);
    assert_eq!(same["noNewPrivileges"], json!(true));

    let req = ExecRequest {
        args: vec!["sh".into(), "-c".into(), "env".into()],
        user: Some(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            name: Some("root".into()),
        }),
        env: vec![
            ("LOG_LEVEL".into(), "debug".into()),
            ("X".into(), "a=b".into()),
        ],
        cwd: Some("/tmp".into()),
        timeout: None,
    };
    let p = exec_process(&container, &req);
    assert_eq!(p["user"], json!({"uid": 0, "gid": 0, "umask": 18}));
    assert_eq!(p["env"], json!(["PATH=/bin", "LOG_LEVEL=debug", "X=a=b"]));
    assert_eq!(p["cwd"], json!("/tmp"));
    // No process in the config at all: still a valid one.
    let bare = exec_process(&serde_json::Value::Null, &req);
    assert_eq!(bare["args"], json!(["sh", "-c", "env"]));
}

#[test]
fn the_shim_is_found_where_configured() {
    let t = tempfile::tempdir().unwrap();
    let shim = t.path().join("berth-shim");
    assert!(matches!(
        find_shim(Some(&shim)),
        Err(InstanceError::ShimNotFound { .. })
    ));
    std::fs::write(&shim, "").unwrap();
    assert_eq!(find_shim(Some(&shim)).unwrap(), shim);
    let e = find_shim(Some(Path::new("/nonexistent/berth-shim"))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "`berth-shim` not found at `/nonexistent/berth-shim` (set runtime.shim_path)"
    );
}

#[test]
fn waiting_for_a_file_sees_a_rename_at_once() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("exit.json");
    assert!(!wait_for_file(&path, Duration::from_millis(50)).unwrap());
    let (p, tmp) = (path.clone(), t.path().join("exit.json.tmp"));
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&tmp, "{}").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    });
    let started = Instant::now();
    assert!(wait_for_file(&path, Duration::from_secs(10)).unwrap());
    let took = started.elapsed();
    writer.join().unwrap();
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// An instance directory, a scripted runtime and a scripted shim.
struct Fake {
    dir: tempfile::TempDir,
    inst: RuntimeInstance,
}

impl Fake {
    /// `runtime` is the body of a `case "$cmd" in … esac` over the subcommand, with
    /// `$EXIT` (the instance's exit file) and `$LOG` (exec's `--log`) set.
    fn new(runtime: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let inst = RuntimeInstance::new(dir.path(), ID);
        std::fs::create_dir_all(inst.dirs.bundle()).unwrap();
        let body = format!(
            r#"echo "$*" >> {calls}
EXIT={exit}
shift 2
LOG=
if [ "$1" = --log ]; then LOG=$2; shift 4; fi
cmd=$1; shift
case "$cmd" in
{runtime}
esac
exit 0"#,
            calls = dir.path().join("calls").display(),
            exit = inst.dirs.exit_file().display(),
        );
        script(dir.path(), "runc", &body);
        Fake { dir, inst }
    }

    fn oci(&self, shim_body: &str) -> OciInstances {
        let shim = script(self.dir.path(), "berth-shim", shim_body);
        let runtime = Runtime {
            binary: self.dir.path().join("runc"),
            kind: RuntimeKind::Runc,
            root: self.dir.path().join("root"),
        };
        let mut oci = OciInstances::new(runtime, shim, 1 << 20, 2);
        oci.kill_timeout = Duration::from_millis(500);
        oci
    }

    /// The runtime subcommands called, with their arguments after the id.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().skip(2).collect();
                let words: Vec<&str> = match words.first() {
                    Some(&"--log") => words[4..].to_vec(),
                    _ => words,
                };
                words.join(" ")
            })
            .collect()
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

const RUNNING: &str = r#"state) echo '{"status":"running","pid":42}' ;;"#;
const EXIT_0: &str = r#"{"exit_code": 0, "signal": null, "finished_at": "2026-11-22T00:00:00Z"}"#;
const EXIT_137: &str = r#"{"exit_code": 137, "signal": 9, "finished_at": "2026-11-22T00:00:00Z"}"#;

#[test]
fn create_runs_the_shim_and_clears_a_previous_exit() {
    let f = Fake::new("");
    std::fs::write(f.inst.dirs.exit_file(), EXIT_0).unwrap();
    let args = f.dir.path().join("shim-args");
    let oci = f.oci(&format!(
        r#"echo "$*" > {}; echo '{{"shim_pid":11,"pid":22}}'"#,
        args.display()
    ));
    assert_eq!(
        oci.create(&f.inst).unwrap(),
        Created {
            pid: 22,
            shim_pid: 11
        }
    );
    assert!(!f.inst.dirs.exit_file().exists());
    let args = std::fs::read_to_string(args).unwrap();
    assert!(
        args.starts_with(&format!(
            "--id {ID} --bundle {}",
            f.inst.dirs.bundle().display()
        )),
        "{args}"
    );
    assert!(
        args.contains("--log-max-size 1048576 --log-max-files 2"),
        "{args}"
    );
}

#[test]
fn create_failures_carry_the_runtimes_error() {
    let f = Fake::new("");
    let oci = f.oci("echo 'berth-shim: runtime `runc` create failed (exit status: 1): boom: no such device' >&2; exit 1");
    let e = oci.create(&f.inst).unwrap_err();
    assert!(matches!(e, InstanceError::Create { .. }));
    assert!(
        e.to_string().ends_with(
            "create failed: runtime `runc` create failed (exit status: 1): boom: no such device"
        ),
        "{e}"
    );
    let oci = f.oci("echo 'berth-shim: runtime `runc` create failed (exit status: 1): container with id exists: x' >&2; exit 1");
    assert!(matches!(
        oci.create(&f.inst),
        Err(InstanceError::AlreadyExists { .. })
    ));
    let oci = f.oci("echo garbage");
    assert!(matches!(
        oci.create(&f.inst),
        Err(InstanceError::ShimAnswer { .. })
    ));
}

#[test]
fn a_shim_that_hangs_times_out_and_the_container_is_abandoned() {
    let f = Fake::new("");
    let mut oci = f.oci("exec sleep 10");
    oci.shim_timeout = Duration::from_millis(200);
    let started = Instant::now();
    assert!(matches!(
        oci.create(&f.inst),
        Err(InstanceError::ShimTimeout { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(f.calls(), [format!("delete --force {ID}")]);
}

#[test]
fn stop_signals_waits_for_the_exit_file_and_deletes() {
    let f = Fake::new(&format!(
        "{RUNNING}\nkill) [ \"$2\" = 15 ] && echo '{EXIT_0}' > $EXIT ;;"
    ));
    let oci = f.oci("");
    let exit = oci.stop(&f.inst, 15, Duration::from_secs(10)).unwrap();
    assert_eq!(exit.map(|e| e.exit_code), Some(0));
    assert_eq!(
        f.calls(),
        [
            format!("state {ID}"),
            format!("kill {ID} 15"),
            format!("delete {ID}")
        ]
    );
}

#[test]
fn stop_kills_what_ignores_the_signal() {
    let f = Fake::new(&format!(
        "{RUNNING}\nkill) [ \"$2\" = 9 ] && echo '{EXIT_137}' > $EXIT ;;"
    ));
    let oci = f.oci("");
    let started = Instant::now();
    let exit = oci.stop(&f.inst, 15, Duration::from_millis(300)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(exit.map(|e| e.exit_code), Some(137));
    assert_eq!(
        f.calls(),
        [
            format!("state {ID}"),
            format!("kill {ID} 15"),
            format!("kill {ID} 9"),
            format!("delete {ID}")
        ]
    );
}

#[test]
fn stop_of_an_exited_or_unknown_instance() {
    let f = Fake::new(
        r#"state) echo 'time="t" level=error msg="container does not exist"' >&2; exit 1 ;;"#,
    );
    let oci = f.oci("");
    assert_eq!(oci.stop(&f.inst, 15, Duration::from_secs(1)).unwrap(), None);
    assert_eq!(f.calls(), [format!("state {ID}")]);
    std::fs::write(f.inst.dirs.exit_file(), EXIT_0).unwrap();
    assert_eq!(
        oci.stop(&f.inst, 15, Duration::from_secs(1))
            .unwrap()
            .map(|e| e.exit_code),
        Some(0)
    );
    assert_eq!(f.calls()[1..], [format!("delete {ID}")]);
}

#[test]
fn a_shim_that_died_leaves_the_runtimes_word() {
    // SIGKILL lands, the runtime reports stopped, but no exit file ever comes.
    let f = Fake::new(
        r#"state) if [ -f $EXIT.killed ]; then echo '{"status":"stopped"}'; else echo '{"status":"running","pid":42}'; fi ;;
kill) [ "$2" = 9 ] && touch $EXIT.killed ;;"#,
    );
    let oci = f.oci("");
    assert_eq!(
        oci.stop(&f.inst, 15, Duration::from_millis(100)).unwrap(),
        None
    );
    assert_eq!(f.calls().last().unwrap(), &format!("delete {ID}"));
    assert_eq!(oci.status(&f.inst).unwrap(), InstanceStatus::Stopped);
}

#[test]
fn delete_tolerates_unknown_refuses_running_and_kills_created() {
    let f = Fake::new(r#"state) echo 'container does not exist' >&2; exit 1 ;;"#);
    f.oci("").delete(&f.inst).unwrap();
    assert_eq!(f.calls(), [format!("state {ID}")]);

    let f = Fake::new(RUNNING);
    let e = f.oci("").delete(&f.inst).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("instance `{ID}` is running; stop it first")
    );

    let f = Fake::new(&format!(
        "state) echo '{{\"status\":\"created\",\"pid\":42}}' ;;\nkill) echo '{EXIT_137}' > $EXIT ;;"
    ));
    f.oci("").delete(&f.inst).unwrap();
    assert_eq!(
        f.calls(),
        [
            format!("state {ID}"),
            format!("kill {ID} 9"),
            format!("delete {ID}")
        ]
    );

    // A delete that races with another: "does not exist" is success.
    let f = Fake::new(
        r#"state) echo '{"status":"stopped"}' ;;
delete) echo 'container does not exist' >&2; exit 1 ;;"#,
    );
    f.oci("").delete(&f.inst).unwrap();
}

#[test]
fn status_reads_the_exit_file_then_the_runtime() {
    let f = Fake::new(RUNNING);
    let oci = f.oci("");
    assert_eq!(
        oci.status(&f.inst).unwrap(),
        InstanceStatus::Running { pid: 42 }
    );
    std::fs::write(f.inst.dirs.exit_file(), EXIT_137).unwrap();
    assert_eq!(
        oci.status(&f.inst).unwrap(),
        InstanceStatus::Exited(exit(137))
    );
    assert_eq!(f.calls(), [format!("state {ID}")]);
}

fn exec_fake(exec_body: &str) -> (Fake, OciInstances) {
    let f = Fake::new(&format!("{RUNNING}\nexec) {exec_body} ;;"));
    let config = json!({"process": {"args": ["sleep"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 1, "gid": 1}}});
    std::fs::write(f.inst.dirs.config(), config.to_string()).unwrap();
    let oci = f.oci("");
    (f, oci)
}

fn quiet() -> ExecIo {
    ExecIo {
        stdin: Stdio::null(),
        stdout: Stdio::null(),
        stderr: Stdio::null(),
    }
}

#[test]
fn exec_passes_the_exit_code_through() {
    let (f, oci) = exec_fake(r#"cp "$2" $EXIT.process; exit 3"#);
    let req = ExecRequest {
        args: vec!["id".into(), "-u".into()],
        ..Default::default()
    };
    let out = oci.exec(&f.inst, &req, quiet()).unwrap();
    assert_eq!(
        out,
        ExecOutcome {
            exit_code: 3,
            runtime_error: None
        }
    );
    let process: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.inst.dirs.exit_file().with_extension("json.process")).unwrap(),
    )
    .unwrap();
    assert_eq!(process["args"], json!(["id", "-u"]));
    assert_eq!(process["user"], json!({"uid": 1, "gid": 1}));
    // The process and log files are removed.
    let left: Vec<_> = std::fs::read_dir(&f.inst.dirs.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".exec-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn exec_failures_of_the_runtime_map_to_125_126_127() {
    let log = |msg: &str| format!(r#"echo '{{"level":"error","msg":"{msg}"}}' > $LOG; exit 255"#);
    let req = ExecRequest {
        args: vec!["nope".into()],
        ..Default::default()
    };
    let (f, oci) = exec_fake(&log(
        "executable file `nope` not found in $PATH: No such file or directory",
    ));
    let out = oci.exec(&f.inst, &req, quiet()).unwrap();
    assert_eq!(out.exit_code, 127);
    assert!(out.runtime_error.unwrap().contains("not found"));
    let (f, oci) = exec_fake(&log("open executable: Permission denied"));
    assert_eq!(oci.exec(&f.inst, &req, quiet()).unwrap().exit_code, 126);
    let (f, oci) = exec_fake(&log("cannot set up the namespace"));
    assert_eq!(oci.exec(&f.inst, &req, quiet()).unwrap().exit_code, 125);
    // The command's own 255 without a runtime error passes through.
    let (f, oci) = exec_fake("exit 255");
    assert_eq!(oci.exec(&f.inst, &req, quiet()).unwrap().exit_code, 255);
}

#[test]
fn exec_needs_a_running_container_and_a_command() {
    let f = Fake::new(r#"state) echo '{"status":"stopped"}' ;;"#);
    let oci = f.oci("");
    let req = ExecRequest {
        args: vec!["id".into()],
        ..Default::default()
    };
    assert!(matches!(
        oci.exec(&f.inst, &req, quiet()),
        Err(InstanceError::NotRunning { .. })
    ));
    let e = oci
        .exec(&f.inst, &ExecRequest::default(), quiet())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("instance `{ID}`: exec needs a command")
    );
}
