//! `berth audit [PATH] [--policy restricted|baseline|FILE] [--node NAME] [--label K=V]…
//! [--format text|json|sarif|junit] [--output FILE] [--since GIT-REV]`: the offline
//! policy report. No root, no daemon, so the same check gates a merge request.
//!
//! Thin: it picks the policy (`--policy`, else the node configuration's, else
//! `restricted`), merges the waivers (the policy file's and the node configuration's —
//! never the repository's), loads and checks the tree, and hands everything to
//! `berth_policy`, which evaluates and renders. With `--since` the tree at REV is read
//! from Git in-process (git2) and audited the same way, and findings are compared.
//!
//! `--live` audits the running containers instead and shows each one's trust chain
//! (`trust::live`): while an agent runs, its report after its last pass (`GET
//! /v1/audit`); with no agent, or one that has no report yet or does not answer (said
//! on stderr), or with `--verify`, `--policy`, `--node`, `--label` or PATH, one made
//! now from the state directory. The report says which (`live.source`: `agent` or
//! `state-directory`). `--live --verify` checks the chains again (`trust::verify`).
//!
//! Exit: 0 no error-level violation (with `--since`: no new one); 1 error-level
//! violations, errors in the tree or the policy, or (`--verify`) a trust chain that no
//! longer holds; 2 usage; 3 an operational failure, or (`--verify`, nothing failing)
//! a link of a trust chain that could not be checked.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_policy::Evaluator;
use berth_policy::report::{SarifOptions, audit};
use berth_spec::{Diagnostic, check, loader};
use clap::Args;

use super::config::{self, ConfigError, NodePolicy};
use super::validate::{node_identity, parse_key_value};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, EXIT_USAGE};

mod git;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The spec tree (a directory, or one file)
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The policy: `restricted`, `baseline` or a policy file [default: the node
    /// configuration's, else restricted]
    #[arg(long, value_name = "restricted|baseline|FILE")]
    pub policy: Option<String>,
    /// Audit only the containers that target this node name
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// A node label (repeatable), for targeting
    #[arg(long = "label", value_name = "K=V", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: AuditFormat,
    /// Write the report to FILE instead of stdout
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Compare with the tree at this Git revision: findings are new, existing or fixed,
    /// and only new error-level violations fail
    #[arg(long, value_name = "GIT-REV")]
    pub since: Option<String>,
    /// Audit the containers running on this node (from its state directory) instead
    /// of a tree; with PATH given explicitly, also report running containers that no
    /// spec in PATH accounts for
    #[arg(long, conflicts_with = "since")]
    pub live: bool,
    /// With --live: check the trust chain of every running container again against
    /// the node's current keys and identities; what no longer vouches fails the audit
    #[arg(long, requires = "live")]
    pub verify: bool,
}

/// `berth audit` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Text,
    Json,
    Sarif,
    Junit,
}

/// Why the audit stopped before a report; each maps to an exit code.
enum Stop {
    /// Located errors in the policy or node configuration (exit 1).
    Invalid(Vec<Diagnostic>),
    /// Bad arguments (exit 2).
    Usage(String),
    /// The job could not be done (exit 3).
    Failed(String),
}

impl From<ConfigError> for Stop {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid { diags, .. } => Stop::Invalid(diags),
            e => Stop::Failed(crate::util::error_chain(&e)),
        }
    }
}

pub fn run(cli: &Cli, args: &AuditArgs) -> ExitCode {
    match audit_run(cli, args) {
        Ok(code) => ExitCode::from(code),
        Err(Stop::Invalid(diags)) => {
            for d in &diags {
                println!("{d}");
            }
            ExitCode::from(EXIT_FINDINGS)
        }
        Err(Stop::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Stop::Failed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The report's exit code: 1 when it fails, else 3 when a trust chain's link could
/// not be checked, else 0.
fn audit_run(cli: &Cli, args: &AuditArgs) -> Result<u8, Stop> {
    let loaded = config::load(cli)?;
    let np = config::node_policy(&loaded, args.policy.as_deref())?;
    let ev = Evaluator::new(&np.policy, &np.host, config::today());
    let mode = np.mode;
    let node = node_identity(&args.node, &args.labels);

    let mut report = if args.live {
        live_report(&loaded, args, &np, node.as_ref())?
    } else {
        let tree = loader::load_tree(&args.path).map_err(|e| Stop::Failed(e.to_string()))?;
        let checked = check(&tree, node.as_ref());
        audit(&checked, node.as_ref(), &ev, mode)
    };

    let repo = git::Repo::discover(&args.path);
    if let Some(rev) = &args.since {
        let repo = repo.as_ref().ok_or_else(|| {
            Stop::Usage(format!(
                "--since needs {} to be inside a Git work tree",
                args.path.display()
            ))
        })?;
        let old = repo.tree_at(rev).map_err(|e| match e {
            git::SinceError::Revision { .. } => Stop::Usage(e.to_string()),
            git::SinceError::Read { .. } => Stop::Failed(e.to_string()),
        })?;
        let old_checked = check(&old, node.as_ref());
        let base = audit(&old_checked, node.as_ref(), &ev, mode);
        report.compare(&base, rev);
    }

    let out = match args.format {
        AuditFormat::Text => {
            let color = args.output.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none();
            report.to_text(color)
        }
        AuditFormat::Json => report.to_json(),
        AuditFormat::Junit => report.to_junit(),
        AuditFormat::Sarif => {
            let (uri_prefix, src_root) = match &repo {
                Some(r) => (r.prefix.clone(), Some(file_uri(&r.root))),
                None => (String::new(), sarif_root(&args.path)),
            };
            report.to_sarif(&SarifOptions {
                uri_prefix,
                src_root,
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
        }
    };
    write_out(args.output.as_deref(), &out)?;
    Ok(if report.failed() {
        EXIT_FINDINGS
    } else if report.chains_unchecked() > 0 {
        EXIT_FAILED
    } else {
        0
    })
}

/// The `file://` URI of the audited directory (a file's parent), ending in `/`.
fn sarif_root(path: &Path) -> Option<String> {
    let abs = std::fs::canonicalize(path).ok()?;
    let dir = if abs.is_file() {
        abs.parent()?.to_path_buf()
    } else {
        abs
    };
    Some(file_uri(&dir))
}

/// A directory as a `file://` URI ending in `/`, percent-encoding what URIs reserve.
fn file_uri(dir: &Path) -> String {
    let mut s = String::from("file://");
    for b in dir.to_string_lossy().bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                s.push(b as char)
            }
            b => s.push_str(&format!("%{b:02X}")),
        }
    }
    if !s.ends_with('/') {
        s.push('/');
    }
    s
}

fn write_out(path: Option<&Path>, text: &str) -> Result<(), Stop> {
    match path {
        Some(p) => std::fs::write(p, text)
            .map_err(|e| Stop::Failed(format!("cannot write {}: {e}", p.display()))),
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`berth audit | head`) is not a failure of the audit.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            Ok(())
        }
    }
}

/// The live report: the agent's (`GET /v1/audit`) while one runs and the audit is
/// the node's own — no `--verify` (which checks the chains again here), `--policy`,
/// `--node`, `--label` or PATH — as long as it still describes the node (the same
/// containers running the same instances under the same applied revision: a
/// `berth apply DIR` or `berth rm` since its last pass makes it stale). Else, or when
/// the agent has no report or does not answer (said on stderr), one made from the
/// state directory. The report's `live` says which.
fn live_report(
    loaded: &config::Loaded,
    args: &AuditArgs,
    policy: &NodePolicy,
    node: Option<&berth_spec::NodeIdentity>,
) -> Result<berth_policy::report::Report, Stop> {
    use crate::trust::live;
    let state_dir = &loaded.config.runtime.state_dir;
    let tree = (args.path != Path::new(".") && args.path.exists()).then_some(args.path.as_path());
    let own = !args.verify && args.policy.is_none() && node.is_none() && tree.is_none();
    if own {
        match agent_report(loaded) {
            Ok(r) if live::describes_now(&r, state_dir) => return Ok(r),
            Ok(_) => eprintln!(
                "note: what runs changed since the agent's last pass (its report is rewritten after the next one); the report is made from the state directory"
            ),
            Err(None) => {}
            Err(Some(why)) => {
                eprintln!("warning: {why}; the report is made from the state directory");
            }
        }
    }
    let scope = live::Scope { policy, node, tree };
    let chains = crate::trust::verify::for_audit(state_dir, &loaded.config, args.verify);
    live::from_state(
        state_dir,
        &scope,
        chains,
        berth_policy::report::LiveSource::StateDirectory,
    )
    .map_err(|e| Stop::Failed(crate::util::error_chain(&e)))
}

/// The running agent's report; `Err(None)` when no agent runs, else why it could not
/// be had.
fn agent_report(loaded: &config::Loaded) -> Result<berth_policy::report::Report, Option<String>> {
    use crate::api::client::{Client, ClientError};
    let socket = crate::api::socket_path(&loaded.config.runtime.run_dir);
    let rt =
        super::async_runtime().map_err(|e| Some(format!("cannot start the async runtime: {e}")))?;
    let text = rt
        .block_on(Client::new(&socket).audit())
        .map_err(|e| match e {
            e if e.no_agent() => None,
            ClientError::Refused { doc, .. } => {
                Some(format!("the agent gave no audit report: {}", doc.error))
            }
            e => Some(crate::util::error_chain(&e)),
        })?;
    crate::trust::live::parse(&text, "the agent sent")
        .map_err(|e| Some(crate::util::error_chain(&e)))
}
