//! The node's live audit report: what runs (each container record's spec, located at
//! its `state.json`) judged by the node's policy, with every running container's
//! trust chain — what `berth audit --live` shows, in `berth audit --format json`'s
//! format (`policies/report.schema.json`).
//!
//! The agent writes it after every pass ([`after_pass`]: `state/audit.json`, crash-safe
//! as every state record: a temp file, fsync, rename, fsync of the directory), serves it
//! (`GET /v1/audit`), and `berth audit --live` reads it while the agent runs. Without
//! an agent, `berth audit --live` makes the same report from the state directory
//! ([`from_state`]). Building it links no Git or registry code (the chains are the
//! recorded ones; `verify` checks them again), so the agent's daemon makes it.

use std::path::{Path, PathBuf};

use berth_policy::Evaluator;
use berth_policy::report::{ChainFlag, Live, LiveSource, Report, TrustChain, audit};
use berth_spec::{Checked, Diagnostic, Kind, Location, NodeIdentity, check, loader};
use serde_json::Value;

use super::Chain;
use crate::node::{ConfigError, Loaded, NodePolicy};
use crate::source::applied::Applied;
use crate::util::error_chain;

/// How big a report the API serves and `berth audit --live` reads: thousands of
/// findings fit many times over; a bigger file is not the agent's.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Why the live report could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the container records")]
    Records(#[source] crate::runtime::record::RecordError),
    #[error("cannot read the instances under {}", .path.display())]
    Instances {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tree(#[from] berth_spec::loader::LoadError),
    #[error("cannot write the audit report {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the audit report {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit report {what} cannot be read")]
    Parse {
        what: String,
        #[source]
        source: berth_policy::report::ParseError,
    },
}

/// Where the agent keeps its report.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("state").join("audit.json")
}

/// What the live report judges, besides the state directory: the policy in force, the
/// node's identity (which containers are audited; none: every one) and a spec tree
/// that should account for every running container.
pub struct Scope<'a> {
    pub policy: &'a NodePolicy,
    pub node: Option<&'a NodeIdentity>,
    /// A tree given explicitly to `berth audit --live PATH`.
    pub tree: Option<&'a Path>,
}

/// The live report now, from the state directory, made by `source`: the findings of
/// every running container and `chains`, its trust chains ([`chains`], or checked
/// again by `verify::for_audit`).
pub fn from_state(
    state_dir: &Path,
    scope: &Scope<'_>,
    chains: Vec<TrustChain>,
    source: LiveSource,
) -> Result<Report, LiveError> {
    let checked = running(state_dir, scope.tree)?;
    let ev = Evaluator::new(
        &scope.policy.policy,
        &scope.policy.host,
        crate::node::today(),
    );
    let mut report = audit(&checked, scope.node, &ev, scope.policy.mode);
    report.chains = chains;
    report.live = Some(Live {
        source,
        generated_at: crate::util::rfc3339::now(),
        revision: Applied::load(state_dir)
            .ok()
            .flatten()
            .map(|a| a.revision.commit),
    });
    Ok(report)
}

/// The agent's report after a pass: the node's own policy, every running container,
/// the chains as recorded.
pub fn agent_report(loaded: &Loaded) -> Result<Report, LiveError> {
    let state_dir = &loaded.config.runtime.state_dir;
    let policy = crate::node::node_policy(loaded, None)?;
    let scope = Scope {
        policy: &policy,
        node: None,
        tree: None,
    };
    from_state(state_dir, &scope, chains(state_dir), LiveSource::Agent)
}

/// Whether the agent's `report` (made after its last pass) still describes the node:
/// the same containers running the same instances, under the same applied revision.
/// Another writer since the pass (`berth apply DIR`, `berth rm`, a container record
/// changed by hand) makes it stale until the agent's next pass. A caller that cannot
/// read the state directory (a user of the API socket's group) cannot tell, and has
/// only the agent's report: it describes the node as far as the caller knows.
pub fn describes_now(report: &Report, state_dir: &Path) -> bool {
    let (Ok(records), Ok(applied)) = (
        crate::runtime::record::read_records(state_dir),
        Applied::load(state_dir),
    ) else {
        return true;
    };
    let revision = applied.map(|a| a.revision.commit);
    let reported: std::collections::BTreeMap<&str, Option<&str>> = report
        .chains
        .iter()
        .map(|c| (c.container.as_str(), c.record["instance"].as_str()))
        .collect();
    let running: std::collections::BTreeMap<&str, Option<&str>> = records
        .iter()
        .map(|(name, r)| (name.as_str(), Some(r.instance.as_str())))
        .collect();
    report.live.as_ref().map(|l| &l.revision) == Some(&revision) && reported == running
}

/// Makes and writes the agent's report after a pass; a failure is logged (the report
/// written before stays, and says when it was made).
pub fn after_pass(loaded: &Loaded) {
    let state_dir = &loaded.config.runtime.state_dir;
    let written = agent_report(loaded).and_then(|r| store(state_dir, &r));
    if let Err(e) = written {
        tracing::warn!(target: "agent", error = %error_chain(&e), "cannot write the audit report");
    }
}

/// Writes `report` as the agent's (JSON; temp file, fsync, rename; mode 0600 as every
/// state record).
pub fn store(state_dir: &Path, report: &Report) -> Result<(), LiveError> {
    let path = path(state_dir);
    crate::runtime::state::write_atomic(&path, report.to_json().as_bytes())
        .map_err(|source| LiveError::Write { path, source })
}

/// The agent's report as written (its bytes, as `GET /v1/audit` serves them), or none
/// when it has written none; never through a link, at most [`MAX_BYTES`].
pub fn read(state_dir: &Path) -> Result<Option<Vec<u8>>, LiveError> {
    let path = path(state_dir);
    match crate::runtime::state::read_small(&path, MAX_BYTES) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LiveError::Read { path, source }),
    }
}

/// Reads a report the agent wrote (`what` names it in errors): each chain's links in
/// words again, from its record.
pub fn parse(text: &str, what: &str) -> Result<Report, LiveError> {
    Report::from_json(text, &chain_words).map_err(|source| LiveError::Parse {
        what: what.to_string(),
        source,
    })
}

/// Where reports locate container `name`'s chain, and its links in words (none when
/// the record is not a chain this build knows).
fn chain_words(name: &str, record: &Value) -> (String, Vec<(String, String)>) {
    let links = serde_json::from_value::<Chain>(record.clone())
        .map(|c| words(c.words()))
        .unwrap_or_default();
    (chain_file(name), links)
}

/// Where reports locate a container's chain: its record.
pub fn chain_file(name: &str) -> String {
    format!("containers/{name}/state.json")
}

fn words(v: Vec<(&str, String)>) -> Vec<(String, String)> {
    v.into_iter().map(|(k, w)| (k.to_string(), w)).collect()
}

/// A chain as reports carry it; `now` (each link checked again, in words) and `flags`
/// after `--verify`.
pub fn shown(
    container: String,
    chain: &Chain,
    now: Option<Vec<(&str, String)>>,
    flags: Vec<ChainFlag>,
) -> TrustChain {
    TrustChain {
        file: chain_file(&container),
        record: serde_json::to_value(chain).unwrap_or_default(),
        links: words(chain.words()),
        now: now.map(words),
        flags,
        container,
    }
}

/// Every running container's chain as recorded, in name order.
pub fn chains(state_dir: &Path) -> Vec<TrustChain> {
    super::of_running(state_dir)
        .into_iter()
        .map(|(name, chain)| shown(name, &chain, None, Vec::new()))
        .collect()
}

/// What runs on this node, as a checked state: each container record's spec (located
/// at its `state.json`), plus an error for every instance no record accounts for and,
/// when `tree` holds a spec tree, for every running container it does not define.
fn running(state_dir: &Path, tree: Option<&Path>) -> Result<Checked, LiveError> {
    let records = crate::runtime::record::read_records(state_dir).map_err(LiveError::Records)?;
    let mut state = berth_spec::DesiredState::default();
    let mut errors = Vec::new();
    let at = |file: String| Location {
        file,
        line: 1,
        column: 1,
    };
    for (name, r) in &records {
        let file = chain_file(name);
        let mut c = r.spec.clone();
        c.origin = at(file.clone());
        // The parsed reference is not part of the record: without it, the rules on the
        // image (digest pinned, registries allowed) would pass what runs unjudged.
        c.image_ref = berth_spec::reference::Reference::parse(&c.image).ok();
        state.files.push(file);
        state.containers.insert(name.clone(), c);
    }
    let claimed: std::collections::BTreeSet<&str> =
        records.values().map(|r| r.instance.as_str()).collect();
    let ids =
        crate::runtime::state::instance_ids(state_dir).map_err(|source| LiveError::Instances {
            path: state_dir.join("instances"),
            source,
        })?;
    for id in ids {
        if !claimed.contains(id.as_str()) {
            errors.push(Diagnostic::new(
                &at(format!("instances/{id}")),
                format!("instance `{id}` is under berth's state but no container record or spec accounts for it"),
            ));
        }
    }
    if let Some(path) = tree {
        let tree = loader::load_tree(path)?;
        let wanted = check(&tree, None).state;
        for name in records
            .keys()
            .filter(|n| !wanted.containers.contains_key(*n))
        {
            errors.push(
                Diagnostic::new(
                    &at(chain_file(name)),
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
    Ok(Checked { state, errors })
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
