//! `berth plan [PATH]`: what a reconcile would do now, with reasons — the planner's
//! output for the spec tree at PATH against this node's state, without executing it.
//! Reads only local state (no registry, no runtime calls): an image that is neither
//! pinned by digest nor pulled is reported as not evaluated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use berth_policy::Evaluator;
use berth_spec::{NodeIdentity, check, loader};
use clap::Args;

use super::config::{self, Loaded, NodePolicy};
use super::validate::{node_identity, parse_label};
use super::{Cli, EXIT_FAILED, EXIT_FINDINGS, Format};
use crate::image::prepare;
use crate::image::snapshot::SnapshotStore;
use crate::image::store::Store;
use crate::network::Networks;
use crate::network::exec::{DEFAULT_CNI_PATH, split_path};
use crate::reconcile::gather::{self, ImageFacts};
use crate::reconcile::{self, ActualNetwork, Plan, Revision, Timestamp};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The spec tree
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// This node's name [default: the node configuration's, else the host name]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// A node label (repeatable) [default: the node configuration's]
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Also remove volumes no container uses
    #[arg(long)]
    pub prune_volumes: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// The host name, for the node's default name.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The node's identity: flags first, then the node configuration, then the host name.
pub fn identity(
    loaded: &Loaded,
    node: &Option<String>,
    labels: &[(String, String)],
) -> NodeIdentity {
    let mut id = loaded.config.identity(hostname);
    if let Some(flags) = node_identity(node, labels) {
        if flags.name.is_some() {
            id.name = flags.name;
        }
        if !flags.labels.is_empty() {
            id.labels = flags.labels;
        }
    }
    id
}

/// Networks under this node's state, for the planner.
pub fn actual_networks(networks: &Networks) -> BTreeMap<String, ActualNetwork> {
    networks
        .list()
        .map(|list| {
            list.into_iter()
                .map(|n| {
                    (
                        n.name,
                        ActualNetwork {
                            subnet: Some(n.subnet),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn networks_of(loaded: &Loaded) -> Networks {
    let rt = &loaded.config.runtime;
    let cni = std::env::var("BERTH_CNI_PATH").unwrap_or_else(|_| DEFAULT_CNI_PATH.to_string());
    Networks::new(
        &rt.state_dir,
        &rt.run_dir,
        rt.default_subnet,
        split_path(&cni),
    )
}

/// A revision id for a directory: the digest of its spec sources.
pub fn tree_revision(tree: &berth_spec::Tree, root: &Path) -> Revision {
    let mut all = Vec::new();
    for s in &tree.sources {
        all.extend_from_slice(s.path.as_bytes());
        all.push(0);
        all.extend_from_slice(s.text.as_bytes());
        all.push(0);
    }
    Revision {
        id: crate::image::digest::Digest::of(&all).as_str().to_string(),
        source: root.display().to_string(),
    }
}

/// The spec root of PATH: the directory itself, or a single file's directory.
pub fn spec_root(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// Seconds since the epoch: the one clock read of a pass.
pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

pub fn run(cli: &Cli, args: &PlanArgs) -> ExitCode {
    match plan(cli, args) {
        Ok((plan, format)) => {
            match format {
                Format::Json => match reconcile::print::to_json(&plan) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                },
                Format::Text if plan.is_empty() => {
                    println!("nothing to do: the host matches {}", args.path.display())
                }
                Format::Text => print!("{plan}"),
            }
            if plan.not_applied().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FINDINGS)
            }
        }
        Err(code) => code,
    }
}

fn plan(cli: &Cli, args: &PlanArgs) -> Result<(Plan, Format), ExitCode> {
    let loaded = config::load(cli).map_err(|e| fail(&e))?;
    let NodePolicy { policy, mode, host } =
        config::node_policy(&loaded, None).map_err(|e| fail(&e))?;
    let node = identity(&loaded, &args.node, &args.labels);
    let tree = loader::load_tree(&args.path).map_err(|e| fail(&e))?;
    let checked = check(&tree, Some(&node));
    if !checked.is_ok() {
        for e in &checked.errors {
            println!("{e}");
        }
        return Err(ExitCode::from(EXIT_FINDINGS));
    }
    let state_dir = loaded.config.runtime.state_dir.clone();
    let store = Store::open(&state_dir).map_err(|e| fail(&e))?;
    let snapshots = SnapshotStore::open(&state_dir).map_err(|e| fail(&e))?;
    let mut images = BTreeMap::new();
    for c in checked
        .state
        .containers
        .values()
        .filter(|c| c.targets(&node))
    {
        let digest = gather::resolve_offline(&store, c);
        let ready = digest
            .as_ref()
            .is_some_and(|d| image_ready(&store, &snapshots, d));
        images.insert(
            c.name.clone(),
            ImageFacts {
                digest,
                ready,
                ..ImageFacts::default()
            },
        );
    }
    let root = spec_root(&args.path);
    let desired = gather::desired(
        &checked.state,
        &root,
        &node,
        &images,
        tree_revision(&tree, &args.path),
        args.prune_volumes,
    );
    let ev = Evaluator::new(&policy, &host, config::today());
    let stop =
        loaded.config.policy.on_running_violation == berth_spec::node::OnRunningViolation::Stop;
    let (decisions, _) = gather::decisions(&desired, &ev, mode, &images, stop);
    let networks = networks_of(&loaded);
    let actual = gather::actual(&state_dir, actual_networks(&networks)).map_err(|e| fail(&e))?;
    let history = reconcile::History::default();
    Ok((
        reconcile::plan(&desired, &actual, &decisions, &history, now()),
        args.format,
    ))
}

/// Whether an image with this digest is in the store and all its layers are unpacked.
pub fn image_ready(store: &Store, snapshots: &SnapshotStore, digest: &str) -> bool {
    let Ok(records) = store.records() else {
        return false;
    };
    records
        .iter()
        .filter(|r| r.digest.as_str() == digest || r.manifest.digest.as_str() == digest)
        .any(|r| {
            prepare::chain_ids(r).ok().is_some_and(|chains| {
                chains
                    .iter()
                    .all(|c| snapshots.get(c).ok().flatten().is_some())
            })
        })
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("error: {}", prepare::error_chain(e));
    ExitCode::from(EXIT_FAILED)
}
