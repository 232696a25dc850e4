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
//! `--live` audits the running containers instead and shows each one's trust chain;
//! `--live --verify` checks those chains again (`trust::verify`).
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
    let NodePolicy { policy, mode, host } = config::node_policy(&loaded, args.policy.as_deref())?;
    let ev = Evaluator::new(&policy, &host, config::today());
    let node = node_identity(&args.node, &args.labels);

    let checked = if args.live {
        live_state(&loaded.config.runtime.state_dir, &args.path)?
    } else {
        let tree = loader::load_tree(&args.path).map_err(|e| Stop::Failed(e.to_string()))?;
        check(&tree, node.as_ref())
    };
    let mut report = audit(&checked, node.as_ref(), &ev, mode);
    if args.live {
        report.chains = crate::trust::verify::for_audit(
            &loaded.config.runtime.state_dir,
            &loaded.config,
            args.verify,
        );
    }

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

/// What runs on this node, as a checked state: each container record's spec (located
/// at its `state.json`), plus an error for every instance no record accounts for and,
/// when `path` holds a spec tree, for every running container it does not define.
fn live_state(state_dir: &Path, path: &Path) -> Result<berth_spec::Checked, Stop> {
    use berth_spec::{Diagnostic, Kind, Location};
    let records = crate::runtime::record::read_records(state_dir)
        .map_err(|e| Stop::Failed(crate::util::error_chain(&e)))?;
    let mut state = berth_spec::DesiredState::default();
    let mut errors = Vec::new();
    let at = |file: String| Location {
        file,
        line: 1,
        column: 1,
    };
    for (name, r) in &records {
        let file = format!("containers/{name}/state.json");
        let mut c = r.spec.clone();
        c.origin = at(file.clone());
        state.files.push(file);
        state.containers.insert(name.clone(), c);
    }
    let claimed: std::collections::BTreeSet<&str> =
        records.values().map(|r| r.instance.as_str()).collect();
    for id in crate::runtime::state::instance_ids(state_dir)
        .map_err(|e| Stop::Failed(format!("cannot read {}: {e}", state_dir.display())))?
    {
        if !claimed.contains(id.as_str()) {
            errors.push(Diagnostic::new(
                &at(format!("instances/{id}")),
                format!("instance `{id}` is under berth's state but no container record or spec accounts for it"),
            ));
        }
    }
    // A tree given explicitly (not the default `.`): running containers it lacks.
    if path != Path::new(".") && path.exists() {
        let tree = loader::load_tree(path).map_err(|e| Stop::Failed(e.to_string()))?;
        let wanted = check(&tree, None).state;
        for name in records
            .keys()
            .filter(|n| !wanted.containers.contains_key(*n))
        {
            errors.push(
                Diagnostic::new(
                    &at(format!("containers/{name}/state.json")),
                    format!(
                        "container `{name}` runs on this node but no spec in {} accounts for it",
                        path.display()
                    ),
                )
                .object(Kind::Container, name),
            );
        }
    }
    berth_spec::diag::sort(&mut errors);
    Ok(berth_spec::Checked { state, errors })
}
