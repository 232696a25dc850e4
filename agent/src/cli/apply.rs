//! `berth apply [PATH] [--prune-volumes]`: converge this node once from a directory —
//! no Git, no daemon. Reads the tree, makes its images ready, plans against what runs,
//! executes the plan, and prints one line per container saying what happened to it
//! (`reconcile::outcome`): created, recreated, started, stopped, unchanged, removed,
//! blocked by policy, held, not evaluated, or not applied with the step that did not
//! succeed and its error — and the policy findings reported with it.
//!
//! Exit codes: 0 converged; 1 the tree is invalid, or some containers were not applied
//! (policy, verification, a failed step) while the rest were; 3 berth could not do its
//! job (state dir, runtime, network).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_policy::Evaluator;
use berth_policy::policy::Severity;
use berth_policy::rule::Rule;
use berth_spec::node::{OnRunningViolation, PolicyMode};
use berth_spec::{check, loader};
use clap::Args;

use super::config::{self, NodePolicy};
use super::image::registries_of;
use super::plan::{actual_networks, identity, networks_of, now, spec_root, tree_revision};
use super::validate::parse_label;
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format};
use crate::image::prepare::error_chain;
use crate::image::registry::Client;
use crate::image::signature::TrustedKey;
use crate::image::snapshot::SnapshotStore;
use crate::image::store::Store;
use crate::reconcile::executor::{self, StepResult};
use crate::reconcile::gather;
use crate::reconcile::host::RealHost;
use crate::reconcile::images::{self, SignaturePolicy};
use crate::reconcile::outcome::{ContainerOutcome, ContainerReport, Outcome};
use crate::reconcile::{self, History};
use crate::runtime::instance::{OciInstances, find_shim};
use crate::runtime::oci::detect;
use crate::storage::secrets::NodeIdentity as AgeIdentity;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The spec tree
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Also delete named volumes no container uses (data is kept otherwise)
    #[arg(long)]
    pub prune_volumes: bool,
    /// This node's name [default: the node configuration's, else the host name]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// A node label (repeatable) [default: the node configuration's]
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// One writer per state directory: held for the length of one pass.
pub fn lock_state(state_dir: &Path) -> Result<File, String> {
    crate::runtime::state::private_dir(state_dir)
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    let path = state_dir.join("lock");
    let f = crate::runtime::state::open_lock_file(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if f.try_lock().is_err() {
        eprintln!(
            "waiting for another berth pass on {} to finish…",
            state_dir.display()
        );
        f.lock()
            .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    }
    Ok(f)
}

pub fn run(cli: &Cli, args: &ApplyArgs) -> ExitCode {
    match apply(cli, args) {
        Ok(code) => code,
        Err(msg) => {
            tracing::error!("{msg}");
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn apply(cli: &Cli, args: &ApplyArgs) -> Result<ExitCode, String> {
    let loaded = config::load(cli).map_err(|e| error_chain(&e))?;
    let NodePolicy {
        policy,
        mode,
        host: policy_host,
    } = config::node_policy(&loaded, None).map_err(|e| error_chain(&e))?;
    let cfg = &loaded.config;
    let node = identity(&loaded, &args.node, &args.labels);
    let tree = loader::load_tree(&args.path).map_err(|e| error_chain(&e))?;
    let checked = check(&tree, Some(&node));
    if !checked.is_ok() {
        for e in &checked.errors {
            println!("{e}");
        }
        eprintln!("nothing applied: the spec tree has errors");
        return Ok(ExitCode::from(EXIT_FINDINGS));
    }
    let root = spec_root(&args.path);
    let state_dir = cfg.runtime.state_dir.clone();
    let run_dir = cfg.runtime.run_dir.clone();
    let _lock = lock_state(&state_dir)?;

    // Images first: everything is pulled and checked before anything is stopped.
    let store = Store::open(&state_dir).map_err(|e| error_chain(&e))?;
    let snapshots = SnapshotStore::open(&state_dir).map_err(|e| error_chain(&e))?;
    let client = Client::with_timeouts(registries_of(cfg), super::image::pull_timeouts(cfg))
        .map_err(|e| error_chain(&e))?;
    let keys = cfg
        .policy
        .trusted_keys
        .iter()
        .map(|k| TrustedKey::load(k).map_err(|e| error_chain(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let signatures = SignaturePolicy {
        enforced: policy.rule(Rule::ImageSignature).severity == Severity::Error
            && mode == PolicyMode::Enforce,
        keys,
    };
    let targeting: Vec<_> = checked
        .state
        .containers
        .values()
        .filter(|c| c.targets(&node))
        .collect();
    let (facts, ready) = images::prepare_all(&targeting, &store, &snapshots, &client, &signatures);

    let desired = gather::desired(
        &checked.state,
        &root,
        &node,
        &facts,
        tree_revision(&tree, &args.path),
        args.prune_volumes,
    );
    let ev = Evaluator::new(&policy, &policy_host, config::today());
    let stop = cfg.policy.on_running_violation == OnRunningViolation::Stop;
    let (decisions, _) = gather::decisions(&desired, &ev, mode, &facts, stop);
    // One pass rewrites the peers' hosts files once, at its end.
    let networks = networks_of(&loaded).deferring_peers();
    let actual = gather::actual(&state_dir, actual_networks(&networks))
        .map_err(|e| format!("cannot scan {}: {e}", state_dir.display()))?;
    let plan = reconcile::plan(&desired, &actual, &decisions, &History::default(), now());
    if args.format == Format::Text && !plan.is_empty() {
        print!("{plan}");
    }

    let runtime = detect(&cfg.runtime.oci_runtime, &run_dir).map_err(|e| error_chain(&e))?;
    let runtime_binary = runtime.binary.clone();
    let runtime_root = runtime.root.clone();
    let host_info = crate::runtime::host::gather().map_err(|e| error_chain(&e))?;
    let shim = find_shim(cfg.runtime.shim_path.as_deref()).map_err(|e| error_chain(&e))?;
    let instances = OciInstances::new(
        runtime,
        shim,
        cfg.runtime.log_max_size,
        cfg.runtime.log_max_files,
    );
    let age = match &cfg.secrets.identity {
        Some(p) if needs_secrets(&desired) => {
            Some(AgeIdentity::load(p).map_err(|e| error_chain(&e))?)
        }
        _ => None,
    };
    let bind_check = reconcile::bindcheck::PolicyBinds {
        evaluator: &ev,
        mode,
    };
    let host = RealHost {
        state_dir: state_dir.clone(),
        run_dir,
        root,
        spec: &checked.state,
        desired: &desired,
        images: &ready,
        networks: &networks,
        runtime: &instances,
        runtime_binary,
        runtime_root,
        host: &host_info,
        identity: age.as_ref(),
        binds: &bind_check,
        touched: Default::default(),
        created: Default::default(),
        stopped: Default::default(),
    };
    let mut outcome = executor::execute(&plan, &host, cfg.runtime.parallel);
    outcome.complete(&desired, &decisions);
    match args.format {
        Format::Json => println!("{}", to_json(&plan.revision.id, &outcome)),
        Format::Text => {
            for (name, report) in &outcome.containers {
                println!("{name}: {}", describe(report));
            }
            for (name, reason) in &outcome.deferred_networks {
                println!("network {name}: deferred: {reason}");
            }
            let failed = outcome
                .results
                .iter()
                .filter(|(_, r)| matches!(r, StepResult::Failed(_)))
                .count();
            if failed > 0 {
                eprintln!("{failed} step(s) failed");
            }
        }
    }
    Ok(if outcome.converged() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    })
}

/// `{"revision", "containers": {name: {"outcome": …, …, "findings": […]}}, "steps",
/// "converged"}`, and `"networks"` when a network's change was deferred.
fn to_json(revision: &str, outcome: &Outcome) -> serde_json::Value {
    let mut v = serde_json::json!({
        "revision": revision,
        "containers": outcome.containers,
        "steps": outcome.results,
        "converged": outcome.converged(),
    });
    if !outcome.deferred_networks.is_empty() {
        let networks: serde_json::Map<String, serde_json::Value> = outcome
            .deferred_networks
            .iter()
            .map(|(n, reason)| {
                let v = serde_json::json!({"outcome": "deferred", "reason": reason});
                (n.clone(), v)
            })
            .collect();
        v["networks"] = networks.into();
    }
    v
}

/// One container's line, after its name: what happened, then its policy findings.
fn describe(report: &ContainerReport) -> String {
    let mut line = match &report.outcome {
        ContainerOutcome::Created { .. } => "created".to_string(),
        ContainerOutcome::Recreated { .. } => "recreated".to_string(),
        ContainerOutcome::Started { .. } => "started".to_string(),
        ContainerOutcome::Stopped { reason, .. } => format!("stopped: {reason}"),
        ContainerOutcome::Unchanged => "unchanged".to_string(),
        ContainerOutcome::Removed => "removed".to_string(),
        ContainerOutcome::Blocked { reason } => format!("blocked by policy: {reason}"),
        ContainerOutcome::Held { reason } => format!("held: {reason}"),
        ContainerOutcome::NotEvaluated { reason } => format!("not evaluated: {reason}"),
        ContainerOutcome::NotApplied {
            step,
            error,
            needed: None,
        } => format!("not applied: {step} failed: {error}"),
        ContainerOutcome::NotApplied {
            step,
            error,
            needed: Some(needed),
        } => format!("not applied: {step} skipped: {needed} did not succeed: {error}"),
    };
    if !report.findings.is_empty() {
        line.push_str(&format!(
            " (policy findings: {})",
            report.findings.join("; ")
        ));
    }
    line
}

fn needs_secrets(desired: &reconcile::Desired) -> bool {
    desired
        .containers
        .values()
        .any(|c| !c.spec.secrets.is_empty())
}
