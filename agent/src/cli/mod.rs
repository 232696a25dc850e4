//! Command-line parsing and dispatch. Each command lives in its own file and stays thin:
//! load inputs, call the domain module, print, map the outcome to an exit code.
//!
//! Exit codes (DESIGN.md §6): 0 clean, 1 input judged and found wanting, 2 usage,
//! 3 the job could not be done.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};

mod agent;
mod apply;
mod audit;
mod config;
mod control;
mod ctl;
mod events;
mod human;
mod image;
mod image_local;
mod image_output;
mod inspect;
mod key;
mod logs;
mod network;
mod notify;
mod pass;
mod plan;
mod ps;
mod secret;
mod sign;
mod source;
mod stats;
mod status;
mod validate;

/// Exit code: the input was judged and found wanting.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the job could not be done.
pub const EXIT_FAILED: u8 = 3;

/// berth — a declarative GitOps host agent for container hosts.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    /// Node configuration file [default: /etc/berth/berth.toml]
    #[arg(long, global = true, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory (overrides runtime.state_dir)
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run directory (overrides runtime.run_dir)
    #[arg(long, global = true, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// How long a writer waits for the state directory's lock (`90s`, `5m`)
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate a spec tree (no root needed)
    Validate(validate::ValidateArgs),
    /// Run the GitOps agent; `--check` validates the node configuration
    Agent(agent::AgentArgs),
    /// Manage signing keys (cosign-compatible ECDSA P-256)
    Key(key::KeyArgs),
    /// Audit a spec tree against the node's security policy (no root, no daemon)
    Audit(audit::AuditArgs),
    /// Node age identity and encrypted secrets for the repository
    Secret(secret::SecretArgs),
    /// Pull, list, inspect and remove images in the content store
    Image(image::ImageArgs),
    /// Converge this node once from a directory (no Git, no daemon)
    Apply(apply::ApplyArgs),
    /// Stop a container and keep it stopped (apply leaves it) until `berth start`
    Stop(ctl::NameArgs),
    /// Start a stopped container and clear the operator's stop mark
    Start(ctl::NameArgs),
    /// Stop and start a container again
    Restart(ctl::NameArgs),
    /// Remove a container (the next apply creates it again if the tree still has it)
    Rm(ctl::NameArgs),
    /// Run a command in a running container: berth exec NAME -- CMD…
    Exec(ctl::ExecArgs),
    /// Show what a reconcile would do now, with reasons (nothing is executed)
    Plan(plan::PlanArgs),
    /// Sign an image in its registry (cosign-compatible: a Sigstore bundle referrer, or the legacy .sig layout with --legacy)
    Sign(sign::SignArgs),
    /// The Git source: `verify` checks a commit's signature as the agent would
    Source(source::SourceArgs),
    /// Inspect the node's networks
    Network(network::NetworkArgs),
    /// List containers (running ones; `-a` for all), from the state directory
    Ps(ps::PsArgs),
    /// Show everything berth knows about a container (JSON; `--format text`)
    Inspect(inspect::InspectArgs),
    /// Print a container's output; `-f` follows it until the container exits
    Logs(logs::LogsArgs),
    /// CPU, memory and process counts of running containers
    Stats(stats::StatsArgs),
    /// The agent's revision, last fetch and pass, conditions and containers
    Status(status::StatusArgs),
    /// What the agent did (fetches, passes, exits); `-f` follows new events
    Events(events::EventsArgs),
    /// Ask the agent to fetch and reconcile now; waits for the pass
    Reconcile(control::ControlArgs),
    /// Announce a new revision to a fleet over MQTT (a CI step, a post-receive hook)
    Notify(notify::NotifyArgs),
    /// Stop the agent's passes until `berth resume`
    Suspend(control::ControlArgs),
    /// Let the agent's passes run again
    Resume(control::ControlArgs),
}

/// Output format shared by the commands that print data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The process's async runtime (registry calls), made on first use and kept: a pass
/// is handed it rather than building its own.
pub fn async_runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    telemetry::init(cli.log_format);
    match &cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Agent(args) => agent::run(&cli, args),
        Command::Key(args) => key::run(args),
        Command::Audit(args) => audit::run(&cli, args),
        Command::Secret(args) => secret::run(&cli, args),
        Command::Image(args) => image::run(&cli, args),
        Command::Sign(args) => sign::run(&cli, args),
        Command::Source(args) => source::run(&cli, args),
        Command::Plan(args) => plan::run(&cli, args),
        Command::Apply(args) => apply::run(&cli, args),
        Command::Stop(args) => ctl::run(&cli, ctl::Op::Stop, args),
        Command::Start(args) => ctl::run(&cli, ctl::Op::Start, args),
        Command::Restart(args) => ctl::run(&cli, ctl::Op::Restart, args),
        Command::Rm(args) => ctl::run(&cli, ctl::Op::Rm, args),
        Command::Exec(args) => ctl::exec(&cli, args),
        Command::Network(args) => network::run(&cli, args),
        Command::Ps(args) => ps::run(&cli, args),
        Command::Inspect(args) => inspect::run(&cli, args),
        Command::Logs(args) => logs::run(&cli, args),
        Command::Stats(args) => stats::run(&cli, args),
        Command::Status(args) => status::run(&cli, args),
        Command::Events(args) => events::run(&cli, args),
        Command::Notify(args) => notify::run(&cli, args),
        Command::Reconcile(args) => control::run(&cli, control::Control::Reconcile, args),
        Command::Suspend(args) => control::run(&cli, control::Control::Suspend, args),
        Command::Resume(args) => control::run(&cli, control::Control::Resume, args),
    }
}
