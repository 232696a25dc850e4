//! `berth agent [--once] [--check]`: the GitOps agent. `--check` validates the node
//! configuration (with the same located errors as specs) and exits; `--once` follows
//! the source once (`reconcile::follow`: fetch, verify, check out, one pass) and exits:
//! 0 converged to the newest revision; 1 something was not applied, the revision was
//! refused, or the source was unavailable and the node converged to the revision it
//! applied before; 3 it could not run (no source, or no revision ever fetched). Without
//! `--once` and without a source (a fresh install), the agent starts and idles, saying
//! so, converging only the revision it applied before, if any.
//!
//! Keys this build parses but does not act on yet, and keys that have no effect where
//! they are (an ssh key with an https URL), are warnings on stderr, one line each. So
//! is a file the configuration names that cannot be read (`--check` only: a config is
//! often checked before its keys are installed, and the commands that need a file fail
//! when they open it), but for the webhook's secret: one that is unreadable or empty is
//! an error, as it is when the agent starts. A signing key file that is there but that
//! the agent cannot use (`source.allowed_signers` that does not parse,
//! `source.trusted_pgp_keys` holding a secret key or garbage) is an error too: the
//! agent would refuse every revision. A security key it cannot enforce yet
//! (commit or keyless image signatures) is an error: the agent refuses to run rather
//! than run without the check its owner asked for.

use std::process::ExitCode;

use berth_spec::Diagnostic;
use berth_spec::node::{AgentMode, Caller};
use clap::Args;

use super::config::{self, ConfigError, Loaded};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format, async_runtime};
use crate::node::unreadable_files;
use crate::reconcile::follow::{
    self, FollowError, FollowOptions, FollowReport, PassResult, SourceReport,
};
use crate::reconcile::pass::{Env, LockWait};
use crate::reconcile::worker;
use crate::source::applied::RevisionInfo;
use crate::util::error_chain;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Only check the node configuration, then exit
    #[arg(long)]
    pub check: bool,
    /// Follow the source once (fetch, verify, apply), then exit; without it, keep
    /// following it until SIGTERM
    #[arg(long)]
    pub once: bool,
    /// Change nothing: fetch, plan and report (as `agent.mode = "observe"`)
    #[arg(long)]
    pub observe: bool,
    /// Output format (`--once`)
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Internal: run one pass as the child of the agent with this pid, and write its
    /// result on stdout (`reconcile::worker`)
    #[arg(long, hide = true, value_name = "PID")]
    pub pass_worker: Option<u32>,
    /// Internal, with `--pass-worker`: fetch before the pass
    #[arg(long, hide = true, requires = "pass_worker")]
    pub pass_fetch: bool,
    /// Internal, with `--pass-worker`: the plan of the revision applied last, no pass
    #[arg(
        long,
        hide = true,
        requires = "pass_worker",
        conflicts_with = "pass_fetch"
    )]
    pub pass_plan: bool,
    /// Internal, with `--pass-worker`: a round of the health probes that are due, no
    /// pass
    #[arg(
        long,
        hide = true,
        requires = "pass_worker",
        conflicts_with_all = ["pass_fetch", "pass_plan"]
    )]
    pub pass_probe: bool,
    /// Internal, with `--pass-worker`: the fingerprint of the node configuration the
    /// agent checked; the pass refuses to run on another
    #[arg(long, hide = true, requires = "pass_worker", value_name = "SHA256")]
    pub pass_config: Option<String>,
}

pub fn run(cli: &Cli, args: &AgentArgs) -> ExitCode {
    if let Some(agent) = args.pass_worker {
        return pass_worker(cli, agent, args);
    }
    let loaded = match config::load_or_report(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let shown = loaded.path.as_ref().map_or_else(
        || config::DEFAULT_CONFIG.to_string(),
        |p| p.display().to_string(),
    );
    let no_source = loaded.config.source.is_none();
    for inert in loaded.config.inert() {
        eprintln!("{inert}");
    }
    for w in loaded.config.warnings() {
        eprintln!("{w}");
    }
    // Errors in file order: security keys refused, and the policy (a profile file,
    // waivers) as the agent's passes would load it.
    let mut errors: Vec<Diagnostic> = loaded
        .config
        .unenforced(Caller::Agent)
        .iter()
        .map(|u| u.diagnostic())
        .collect();
    if args.check {
        // A webhook secret that is there but unusable (empty, not a file, unreadable) is
        // an error: the agent refuses to start with it. One that is not there is a
        // warning, as every other file the configuration names: the configuration may
        // be checked away from the node that holds its files.
        let warn = |d: &Diagnostic| {
            eprintln!(
                "{}:{}:{}: warning: {}",
                berth_spec::diag::printable(&d.file),
                d.line,
                d.column,
                berth_spec::diag::printable(&d.message)
            );
        };
        let absent = loaded
            .config
            .source
            .as_ref()
            .and_then(|s| s.webhook.as_ref())
            .is_some_and(|w| {
                matches!(std::fs::symlink_metadata(&w.secret_file),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            });
        match crate::source::webhook::check_secret(&loaded.config, &shown) {
            Some(d) if absent => warn(&d),
            Some(d) => errors.push(d),
            None => {}
        }
        let secret = |d: &Diagnostic| d.key.as_deref() == Some("source.webhook.secret_file");
        for d in unreadable_files(&loaded).into_iter().filter(|d| !secret(d)) {
            warn(&d);
        }
        // A trusted root that is there must be one: every pass would fail on it.
        errors.extend(crate::node::unusable_trusted_root(&loaded));
        // Signing keys that are there must be usable: every revision would be refused.
        errors.extend(crate::node::unusable_signing_keys(&loaded));
        // The MQTT files that are there must be usable: the agent would not start.
        errors.extend(crate::source::mqtt::check_files(&loaded.config, &shown));
    }
    match config::node_policy(&loaded, None) {
        Ok(_) => {}
        Err(ConfigError::Invalid { diags, .. }) => errors.extend(diags),
        Err(e) => return config::report(&e),
    }
    if !errors.is_empty() {
        berth_spec::diag::sort(&mut errors);
        for d in &errors {
            println!("{d}");
        }
        return ExitCode::from(EXIT_FINDINGS);
    }
    if args.check {
        if no_source {
            println!(
                "ok: node configuration {shown} is valid; no source configured (`[source]`): `berth agent` idles, converging only what it applied before, until one is set"
            );
        } else {
            println!("ok: node configuration {shown} is valid");
        }
        return ExitCode::SUCCESS;
    }
    // The long-running agent idles without a source (a fresh install), saying so;
    // `--once` has nothing to do.
    if no_source && args.once {
        eprintln!(
            "error: no source configured: {shown} has no `[source]` for `berth agent` to follow (`berth apply DIR` converges from a directory)"
        );
        return ExitCode::from(EXIT_FAILED);
    }
    if !args.once {
        return daemon(cli, args, &loaded);
    }
    once(cli, args, &loaded)
}

/// The long-running agent: `berth-agentd` next to this binary, exec'd in this process's
/// place (same pid), or, when it is not there, the same agent in this process.
fn daemon(cli: &Cli, args: &AgentArgs, loaded: &Loaded) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let berth = std::env::current_exe().ok();
    let agentd = berth
        .as_ref()
        .map(|b| b.with_file_name(crate::daemon::AGENTD))
        .filter(|a| a.is_file());
    // Only a berth-agentd that nobody but root (or this user) could have put there: it
    // runs as this user. One a local user could write, or swap, is not run.
    let unsafe_agentd = agentd
        .as_deref()
        .and_then(|a| crate::daemon::untrusted_binary(a).err());
    if let Some(why) = &unsafe_agentd {
        tracing::warn!(
            "{}: the agent runs in this process instead",
            error_chain(why)
        );
    }
    let agentd = agentd.filter(|_| unsafe_agentd.is_none());
    let (Some(berth), Some(agentd)) = (berth, agentd) else {
        if unsafe_agentd.is_none() {
            tracing::warn!(
                "{} is not next to this berth: the agent runs in this process, and idles larger",
                crate::daemon::AGENTD
            );
        }
        let pass = worker::PassCommand::this_process().pinned_to(loaded.path.as_deref());
        return match crate::daemon::run(loaded, pass, args.observe) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                ExitCode::from(EXIT_FAILED)
            }
        };
    };
    let to = crate::daemon::AgentdArgs {
        berth,
        config: loaded.path.clone(),
        state_dir: loaded.config.runtime.state_dir.clone(),
        run_dir: loaded.config.runtime.run_dir.clone(),
        log_format: cli.log_format,
        observe: args.observe,
    };
    let e = std::process::Command::new(&agentd)
        .args(to.to_args())
        .exec();
    eprintln!("error: cannot start {}: {e}", agentd.display());
    ExitCode::from(EXIT_FAILED)
}

/// `--once`: one follow of the source, rendered as text while it runs, or as one JSON
/// document at the end.
fn once(cli: &Cli, args: &AgentArgs, loaded: &Loaded) -> ExitCode {
    let env = match env(loaded) {
        Ok(env) => env,
        Err(code) => return code,
    };
    let text = args.format == Format::Text;
    let mut waiting = |who: &str| eprintln!("{who}");
    let wait = LockWait {
        command: "berth agent --once",
        timeout: cli.lock_timeout,
        waiting: &mut waiting,
    };
    let mut on_source = |s: &SourceReport, r: Option<&RevisionInfo>| {
        if text {
            print_source(s, r);
        }
    };
    let mut on_plan = |plan: &crate::reconcile::Plan| {
        if text && !plan.is_empty() {
            print!("{plan}");
        }
    };
    match follow::once(
        &env,
        &FollowOptions {
            node: None,
            observe: args.observe,
            fetch_attempts: follow::FETCH_ATTEMPTS,
        },
        wait,
        &mut on_source,
        &mut on_plan,
    ) {
        Ok(report) => {
            render(&report, args.format);
            if report.converged() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FINDINGS)
            }
        }
        Err(FollowError::Pass(e)) => super::pass::not_run(
            &e,
            Some("nothing applied: the revision's spec tree has errors"),
        ),
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `--pass-worker`: one pass for the agent (its warnings were printed when it started),
/// on the node configuration it checked: a configuration that cannot be used, or that
/// changed since, is the pass's result (an error the agent shows), never a silent exit.
fn pass_worker(cli: &Cli, agent: u32, args: &AgentArgs) -> ExitCode {
    let job = if args.pass_plan {
        worker::Job::Plan
    } else if args.pass_probe {
        worker::Job::Probe {
            observe: args.observe,
        }
    } else {
        worker::Job::Pass {
            observe: args.observe,
            fetch: args.pass_fetch,
        }
    };
    let refused = |why: String| {
        if let Err(e) = worker::refuse(job, why) {
            eprintln!("error: the pass for agent {agent}: {e}");
        }
        ExitCode::from(EXIT_FAILED)
    };
    let loaded = match config::load(cli) {
        Ok(l) => l,
        Err(ConfigError::Invalid { path, diags }) => {
            let all: Vec<String> = diags.iter().map(ToString::to_string).collect();
            return refused(format!(
                "the node configuration {} is invalid: {}",
                path.display(),
                all.join("; ")
            ));
        }
        Err(e) => return refused(error_chain(&e)),
    };
    if let Some(want) = &args.pass_config
        && worker::config_fingerprint(loaded.path.as_deref()).as_ref() != Some(want)
    {
        return refused(format!(
            "the node configuration {} changed since the agent started: restart the agent to use it (its passes keep to the configuration it checked)",
            loaded.path.as_ref().map_or_else(
                || config::DEFAULT_CONFIG.into(),
                |p| p.display().to_string()
            )
        ));
    }
    // `agent.mode = "observe"` as `--observe`: no probe runs (the pass itself reads
    // the mode from the configuration).
    let job = match job {
        worker::Job::Probe { .. } if loaded.config.agent.mode == AgentMode::Observe => {
            worker::Job::Probe { observe: true }
        }
        other => other,
    };
    let env = match env(&loaded) {
        Ok(env) => env,
        Err(code) => return code,
    };
    match worker::serve(&env, agent, job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the pass for agent {agent}: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A pass's environment, or exit 3 when the async runtime cannot start.
fn env(loaded: &Loaded) -> Result<Env<'_>, ExitCode> {
    match async_runtime() {
        Ok(rt) => Ok(Env {
            loaded,
            rt: rt.handle(),
            pulls: None,
        }),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            Err(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// What happened at the source, before the pass's own lines.
fn print_source(s: &SourceReport, revision: Option<&RevisionInfo>) {
    let p = |t: &str| berth_spec::diag::printable(t).into_owned();
    if let Some(why) = &s.unavailable {
        println!("source unavailable: {}", p(why));
    }
    if let Some(why) = &s.failed {
        println!("cannot fetch: {}", p(why));
    }
    if let Some(commit) = &s.fetched {
        let how = match s.history {
            Some(follow::History::First) | None => String::new(),
            Some(follow::History::Unchanged) => " (the revision applied)".to_string(),
            Some(follow::History::FastForward) => String::new(),
            Some(follow::History::Rewritten) => format!(
                " (history rewritten: {} is not an ancestor; a force-push)",
                s.previous
                    .as_deref()
                    .unwrap_or("the revision applied before")
            ),
            Some(follow::History::Unknown) => String::new(),
            Some(follow::History::Older) => {
                " (older than the revision applied before: a rollback, or the ref moved back)"
                    .to_string()
            }
        };
        println!(
            "source: {} ({}): fetched commit {commit}{how}",
            p(&s.url),
            p(&s.follows)
        );
    }
    if s.recloned {
        println!("source: the local clone could not be used and was cloned afresh");
    }
    if let Some(why) = &s.refused {
        println!("refused: {}", p(why));
        for e in &s.invalid {
            println!("{e}");
        }
    }
    for skipped in &s.skipped {
        eprintln!("warning: not checked out: {}", p(skipped));
    }
    match revision {
        Some(r)
            if s.refused.is_none()
                && s.unavailable.is_none()
                && s.fetched.as_deref() == Some(r.commit.as_str()) =>
        {
            let signed = r
                .signer
                .as_ref()
                .map(|g| format!(", signed by {} ({})", p(&g.principal), g.key))
                .unwrap_or_default();
            println!(
                "revision {} \"{}\" by {}, {}{signed}",
                r.commit,
                p(&r.subject),
                p(&r.author),
                r.time
            );
        }
        Some(r) => println!(
            "keeping revision {} \"{}\" (applied before); not the newest",
            r.commit,
            p(&r.subject)
        ),
        None => println!("nothing applied: no revision can be applied"),
    }
}

fn render(report: &FollowReport, format: Format) {
    match format {
        Format::Json => match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot write the report: {e}"),
        },
        Format::Text => match &report.pass {
            Some(PassResult::Applied(r)) => super::apply::render(r, Format::Text),
            Some(PassResult::Observed(plan)) => {
                if plan.plan.is_empty() {
                    println!("observe mode: would change nothing: the host matches the revision");
                } else {
                    print!("{}", plan.plan);
                    for w in plan.would() {
                        println!("{w}");
                    }
                    println!("observe mode: nothing was executed");
                }
            }
            None => {}
        },
    }
}
