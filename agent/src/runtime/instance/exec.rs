//! `exec` in a running container, as `docker exec` behaves.
//!
//! berth always passes a whole process file (`exec --process`), built from the
//! container's own `process` (so the exec'd command gets the container's user,
//! capabilities, rlimits, `noNewPrivileges`, AppArmor/SELinux labels and
//! environment) with the request's overrides. Flags would not do: crun 1.8's `--env`
//! replaces the environment (PATH included) where runc's adds to it.
//!
//! The runtime runs in the foreground with the caller's stdio. Its own errors go to a
//! JSON `--log` file, which is how a failure of the runtime ("executable file not
//! found") is told apart from the command exiting with the same code (both runtimes
//! exit 255 on their own errors).

use std::io::Write;
use std::os::unix::process::ExitStatusExt;

use serde_json::{Value, json};

use super::{
    ExecIo, ExecOutcome, ExecRequest, InstanceError, InstanceRuntime, InstanceStatus, OciInstances,
    RuntimeInstance,
};
use crate::runtime::oci::{exec_failure_code, last_logged_error};

/// The longest wait for a timed exec whose timeout does not fit the clock.
const MAX_EXEC_WAIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The exec'd process: the container's `process` with the request applied. Pure.
pub fn exec_process(container_process: &Value, req: &ExecRequest) -> Value {
    let mut p = match container_process {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    p.insert("args".into(), json!(req.args));
    p.insert("terminal".into(), Value::Bool(false));
    p.remove("consoleSize");
    if !p.contains_key("cwd") {
        p.insert("cwd".into(), json!("/"));
    }
    if let Some(cwd) = &req.cwd {
        p.insert("cwd".into(), json!(cwd));
    }
    if let Some(u) = &req.user {
        let mut user = json!({"uid": u.uid, "gid": u.gid});
        if !u.additional_gids.is_empty() {
            user["additionalGids"] = json!(u.additional_gids);
        }
        // Keep the container's umask; the user's groups replace the container's.
        if let Some(umask) = p.get("user").and_then(|old| old.get("umask")) {
            user["umask"] = umask.clone();
        }
        p.insert("user".into(), user);
    }
    if !req.env.is_empty() {
        let mut env: Vec<String> = p
            .get("env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &req.env {
            let entry = format!("{k}={v}");
            match env
                .iter_mut()
                .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
            {
                Some(e) => *e = entry,
                None => env.push(entry),
            }
        }
        p.insert("env".into(), json!(env));
    }
    Value::Object(p)
}

pub(super) fn run(
    oci: &OciInstances,
    inst: &RuntimeInstance,
    req: &ExecRequest,
    io: ExecIo,
) -> Result<ExecOutcome, InstanceError> {
    let Some(command) = req.args.first() else {
        return Err(InstanceError::EmptyCommand {
            id: inst.id.clone(),
        });
    };
    match oci.status(inst)? {
        InstanceStatus::Running { .. } => {}
        _ => {
            return Err(InstanceError::NotRunning {
                id: inst.id.clone(),
            });
        }
    }
    let config_path = inst.dirs.config();
    let config: Value = std::fs::read(&config_path)
        .map_err(InstanceError::io(
            inst,
            "cannot read the bundle's config",
            &config_path,
        ))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                InstanceError::io(inst, "cannot parse the bundle's config", &config_path)(
                    std::io::Error::other(e),
                )
            })
        })?;
    let process = exec_process(&config["process"], req);

    // Both files live in the instance directory and go away when dropped.
    let root = &inst.dirs.root;
    let temp = |prefix: &str| {
        tempfile::Builder::new()
            .prefix(prefix)
            .suffix(".json")
            .tempfile_in(root)
            .map_err(InstanceError::io(inst, "cannot create a file in", root))
    };
    let mut process_file = temp(".exec-process-")?;
    let log_file = temp(".exec-log-")?;
    process_file
        .write_all(process.to_string().as_bytes())
        .and_then(|()| process_file.flush())
        .map_err(InstanceError::io(inst, "cannot write", process_file.path()))?;

    let mut argv = oci
        .runtime
        .exec_argv(&inst.id, process_file.path(), Some(log_file.path()));
    // With a timeout, the runtime writes the exec'd process's pid, to kill it by.
    let pid_file = match req.timeout {
        Some(_) => Some(temp(".exec-pid-")?),
        None => None,
    };
    if let (Some(f), Some(at)) = (&pid_file, argv.iter().position(|a| a == "exec")) {
        argv.insert(at + 1, f.path().as_os_str().to_owned());
        argv.insert(at + 1, "--pid-file".into());
    }
    let mut child = oci
        .runtime
        .command(&argv)
        .stdin(io.stdin)
        .stdout(io.stdout)
        .stderr(io.stderr)
        .spawn()
        .map_err(InstanceError::io(inst, "cannot run", &oci.runtime.binary))?;
    let status = match (req.timeout, &pid_file) {
        (Some(timeout), Some(pid_file)) => {
            let now = std::time::Instant::now();
            let deadline = now.checked_add(timeout).unwrap_or(now + MAX_EXEC_WAIT);
            loop {
                if let Some(status) = child.try_wait().map_err(InstanceError::io(
                    inst,
                    "cannot wait for",
                    &oci.runtime.binary,
                ))? {
                    break status;
                }
                if std::time::Instant::now() >= deadline {
                    // The process in the container first, then the runtime waiting on it.
                    if let Some(pid) = std::fs::read_to_string(pid_file.path())
                        .ok()
                        .and_then(|s| s.trim().parse::<i32>().ok())
                        .filter(|p| *p > 1)
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(ExecOutcome {
                        exit_code: 137,
                        runtime_error: Some(format!(
                            "`{command}` did not finish within {}",
                            humantime::format_duration(timeout)
                        )),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        _ => child.wait().map_err(InstanceError::io(
            inst,
            "cannot wait for",
            &oci.runtime.binary,
        ))?,
    };
    let logged = std::fs::read_to_string(log_file.path()).unwrap_or_default();
    if let Some(error) = last_logged_error(&logged) {
        return Ok(ExecOutcome {
            exit_code: exec_failure_code(&error, command),
            runtime_error: Some(error),
        });
    }
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ExecOutcome {
        exit_code,
        runtime_error: None,
    })
}
