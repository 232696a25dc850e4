//! Operator actions on one container, for debugging (DESIGN.md §6):
//! `berth stop NAME` (marks it operator-stopped: apply and the agent leave it stopped
//! until `berth start NAME`), `berth start`, `berth restart`, `berth rm` (the next apply
//! creates it again if the repository still wants it), and `berth exec NAME -- CMD…`
//! (exit code passed through; 125 berth failed, 126 cannot run, 127 not found).
//!
//! Writers take the state directory's lock for their one action.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, config};
use crate::image::prepare::error_chain;
use crate::node::networks_of;
use crate::reconcile::host::teardown;
use crate::runtime::instance::{
    ExecIo, ExecRequest, Instance, InstanceRuntime, InstanceStatus, OciInstances, find_shim,
};
use crate::runtime::lock;
use crate::runtime::oci::Runtime;
use crate::runtime::state::{self, ContainerRecord};

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The container's name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The container's name
    pub name: String,
    /// The command and its arguments (after `--`)
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// Environment variables to add (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = super::validate::parse_label)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the container
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
}

/// What `berth exec` exits with when berth itself fails (Docker's 125).
const EXEC_FAILED: u8 = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Stop,
    Start,
    Restart,
    Rm,
}

impl Op {
    /// The subcommand's name.
    fn verb(self) -> &'static str {
        match self {
            Op::Stop => "stop",
            Op::Start => "start",
            Op::Restart => "restart",
            Op::Rm => "rm",
        }
    }
}

struct Ctx {
    state_dir: std::path::PathBuf,
    run_dir: std::path::PathBuf,
    instances: OciInstances,
    loaded: config::Loaded,
}

fn context(cli: &Cli, record: &ContainerRecord) -> Result<Ctx, String> {
    let loaded = config::load(cli).map_err(|e| error_chain(&e))?;
    let rt = &loaded.config.runtime;
    let runtime = Runtime::from_record(Path::new(&record.runtime), &record.runtime_root);
    let shim = find_shim(rt.shim_path.as_deref()).map_err(|e| error_chain(&e))?;
    Ok(Ctx {
        state_dir: rt.state_dir.clone(),
        run_dir: rt.run_dir.clone(),
        instances: OciInstances::new(runtime, shim, rt.log_max_size, rt.log_max_files),
        loaded,
    })
}

fn record_of(cli: &Cli, name: &str) -> Result<ContainerRecord, (u8, String)> {
    let loaded = config::load(cli).map_err(|e| (EXIT_FAILED, error_chain(&e)))?;
    let dir = &loaded.config.runtime.state_dir;
    match state::read_record(dir, name) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err((
            EXIT_FINDINGS,
            format!("no container `{name}` under {}", dir.display()),
        )),
        Err(e) => Err((EXIT_FAILED, format!("cannot read {}: {e}", dir.display()))),
    }
}

/// The stop signal and timeout the container was created with.
fn stop_params(record: &ContainerRecord) -> (i32, Duration) {
    let signal = record.spec["stop_signal"]["number"]
        .as_i64()
        .map_or(15, |n| n as i32);
    let timeout = record.spec["stop_timeout"]
        .as_str()
        .and_then(|t| berth_spec::types::parse_duration(t).ok())
        .unwrap_or(Duration::from_secs(10));
    (signal, timeout)
}

pub fn run(cli: &Cli, op: Op, args: &NameArgs) -> ExitCode {
    let mut record = match record_of(cli, &args.name) {
        Ok(r) => r,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::from(code);
        }
    };
    let result = context(cli, &record).and_then(|ctx| {
        let mut waiting = |who: &str| eprintln!("{who}");
        let _lock = lock::lock(
            &ctx.state_dir,
            &format!("berth {} {}", op.verb(), args.name),
            cli.lock_timeout,
            &mut waiting,
        )
        .map_err(|e| error_chain(&e))?;
        let inst = Instance::new(&ctx.state_dir, &record.instance);
        let (signal, timeout) = stop_params(&record);
        let stop = |ctx: &Ctx| -> Result<(), String> {
            ctx.instances
                .stop(&inst, signal, timeout)
                .map(drop)
                .map_err(|e| error_chain(&e))
        };
        let start = |ctx: &Ctx, record: &mut ContainerRecord| -> Result<(), String> {
            match ctx.instances.status(&inst).map_err(|e| error_chain(&e))? {
                InstanceStatus::Running { .. } => return Ok(()),
                InstanceStatus::Created { .. } => {}
                _ => {
                    ctx.instances.delete(&inst).map_err(|e| error_chain(&e))?;
                    let _ = std::fs::remove_file(inst.dirs.exit_file());
                    ctx.instances.create(&inst).map_err(|e| error_chain(&e))?;
                }
            }
            ctx.instances.start(&inst).map_err(|e| error_chain(&e))?;
            record.started_at = Some(state::now_rfc3339());
            Ok(())
        };
        match op {
            Op::Stop => {
                record.operator_stopped = true;
                state::write_record(&ctx.state_dir, &record).map_err(|e| e.to_string())?;
                stop(&ctx)?;
            }
            Op::Start => {
                record.operator_stopped = false;
                start(&ctx, &mut record)?;
                state::write_record(&ctx.state_dir, &record).map_err(|e| e.to_string())?;
            }
            Op::Restart => {
                stop(&ctx)?;
                start(&ctx, &mut record)?;
                record.restarts += 1;
                state::write_record(&ctx.state_dir, &record).map_err(|e| e.to_string())?;
            }
            Op::Rm => {
                stop(&ctx)?;
                let networks = networks_of(&ctx.loaded);
                teardown(
                    &ctx.state_dir,
                    &ctx.run_dir,
                    &networks,
                    Some(&ctx.instances),
                    &record.instance,
                )?;
                state::remove_record(&ctx.state_dir, &record.name).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            println!("{}", args.name);
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("error: {}: {msg}", args.name);
            ExitCode::from(EXIT_FAILED)
        }
    }
}

pub fn exec(cli: &Cli, args: &ExecArgs) -> ExitCode {
    let record = match record_of(cli, &args.name) {
        Ok(r) => r,
        Err((_, msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::from(EXEC_FAILED);
        }
    };
    let ctx = match context(cli, &record) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(EXEC_FAILED);
        }
    };
    let inst = Instance::new(&ctx.state_dir, &record.instance);
    let req = ExecRequest {
        args: args.command.clone(),
        env: args.env.clone(),
        cwd: args.workdir.clone(),
        ..ExecRequest::default()
    };
    match ctx.instances.exec(&inst, &req, ExecIo::inherit()) {
        Ok(o) => {
            if let Some(e) = &o.runtime_error {
                eprintln!("error: {e}");
            }
            ExitCode::from(u8::try_from(o.exit_code).unwrap_or(EXEC_FAILED))
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(EXEC_FAILED)
        }
    }
}
