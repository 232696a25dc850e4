//! Operator actions on one container, for debugging (DESIGN.md §6):
//! `berth stop NAME` (marks it operator-stopped: apply and the agent leave it stopped
//! until `berth start NAME`), `berth start`, `berth restart`, `berth rm` (the next apply
//! creates it again if the repository still wants it), and `berth exec NAME -- CMD…`
//! (exit code passed through; 125 berth failed, 126 cannot run, 127 not found).
//!
//! The writers' logic is `reconcile::operator` (under the state lock); `exec` only
//! reads.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, config};
use crate::reconcile::operator::{self, OperatorError};
use crate::runtime::instance::{
    ExecIo, ExecRequest, InstanceRuntime, OciInstances, RuntimeInstance, find_shim,
};
use crate::runtime::oci::Runtime;
use crate::runtime::record::ContainerRecord;
use crate::util::error_chain;

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
    #[arg(long = "env", short = 'e', value_name = "K=V", value_parser = super::validate::parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Working directory inside the container
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
}

/// What `berth exec` exits with when berth itself fails (Docker's 125).
const EXEC_FAILED: u8 = 125;

pub use crate::reconcile::operator::Op;

struct Ctx {
    state_dir: std::path::PathBuf,
    instances: OciInstances,
}

fn context(cli: &Cli, record: &ContainerRecord) -> Result<Ctx, String> {
    let loaded = config::load(cli).map_err(|e| error_chain(&e))?;
    let rt = &loaded.config.runtime;
    let runtime = Runtime::from_record(Path::new(&record.runtime), &record.runtime_root);
    let shim = find_shim(rt.shim_path.as_deref()).map_err(|e| error_chain(&e))?;
    Ok(Ctx {
        state_dir: rt.state_dir.clone(),
        instances: OciInstances::new(runtime, shim, rt.log_max_size, rt.log_max_files),
    })
}

fn record_of(cli: &Cli, name: &str) -> Result<ContainerRecord, String> {
    let loaded = config::load(cli).map_err(|e| error_chain(&e))?;
    operator::read(&loaded.config.runtime.state_dir, name).map_err(|e| error_chain(&e))
}

pub fn run(cli: &Cli, op: Op, args: &NameArgs) -> ExitCode {
    let loaded = match config::load_or_report(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut waiting = |who: &str| eprintln!("{who}");
    match operator::run(&loaded, op, &args.name, cli.lock_timeout, &mut waiting) {
        Ok(()) => {
            println!("{}", args.name);
            ExitCode::SUCCESS
        }
        Err(e @ OperatorError::NoSuchContainer { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FINDINGS)
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

pub fn exec(cli: &Cli, args: &ExecArgs) -> ExitCode {
    let record = match record_of(cli, &args.name) {
        Ok(r) => r,
        Err(msg) => {
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
    let inst = RuntimeInstance::new(&ctx.state_dir, &record.instance);
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
