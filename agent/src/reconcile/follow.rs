//! Following the node's Git source once (`berth agent --once`; each pass of the agent):
//! fetch the followed ref, verify its signature when the node asks for one, check the
//! revision out into its own directory, run one [`pass`] on it, and record what was
//! applied.
//!
//! Nothing a bad revision or an outage does stops what runs:
//! - a revision whose signature is refused is never checked out for use;
//! - a source that cannot be reached, or a revision refused, leaves the node on the
//!   revision it applied last, which this pass converges to again (so drift is still
//!   corrected), and the result says why it is not the newest;
//! - with no revision applied before, nothing is done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_spec::node::{AgentMode, GitRef, SourceSection};
use git2::{Oid, Repository};
use serde::Serialize;

use super::model::Revision;
use super::outcome::ContainerOutcome;
use super::pass::{self, Env, Input, LockWait, PassError, PlanReport, Registry, Report};
use crate::source::applied::{Applied, AppliedError, RevisionInfo, SCHEMA_VERSION, Signer};
use crate::source::checkout::{CheckoutError, Revisions};
pub use crate::source::fetch::History;
use crate::source::fetch::{FetchError, Fetched, Remote, display_url};
use crate::source::signature;

/// How many times `berth agent --once` tries a transient fetch failure, and the first
/// pause between tries.
pub const FETCH_ATTEMPTS: u32 = 3;
const FETCH_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The node configuration has no `[source]`.
    #[error("no source configured: the node configuration has no `[source]`")]
    NoSource,
    /// The source gave no revision, and none was applied before: nothing to converge to.
    #[error("no revision to apply: {reason}")]
    NoRevision { reason: String },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error(transparent)]
    Applied(#[from] AppliedError),
    #[error(transparent)]
    Signature(#[from] signature::SignatureError),
    #[error("cannot lock {}", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pass(#[from] PassError),
}

/// What happened at the source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The repository, without userinfo.
    pub url: String,
    /// `branch main`, `tag v1`, `commit <id>`.
    pub follows: String,
    /// The commit fetched now; none when the fetch failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<String>,
    /// How it relates to the commit fetched before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
    /// The commit fetched before, when the history was rewritten.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Why the source could not be fetched (`source unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Why the source could not be fetched for a reason that does not pass by itself
    /// (a credential, a host key, a certificate, a ref or file that is not there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Why the fetched revision was refused: its signature, its `source.path`, or
    /// errors in its spec tree (listed in `invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The errors of a refused revision's spec tree, as `berth validate` prints them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid: Vec<String>,
    /// Bytes received from the server by this fetch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_bytes: Option<usize>,
    /// The local clone could not be used and was cloned afresh.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recloned: bool,
    /// Repository entries not checked out (symbolic links, submodules).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl SourceReport {
    /// Nothing happened yet at `url`, which follows `follows`.
    pub(crate) fn of(url: String, follows: String) -> SourceReport {
        SourceReport {
            url,
            follows,
            fetched: None,
            history: None,
            previous: None,
            unavailable: None,
            failed: None,
            refused: None,
            invalid: Vec::new(),
            received_bytes: None,
            recloned: false,
            skipped: Vec::new(),
        }
    }
}

/// What the pass did with the revision.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PassResult {
    Applied(Box<Report>),
    /// `agent.mode = "observe"`: planned and reported, nothing changed. JSON: the plan
    /// as `berth plan --format json` gives it, with `would`, what `apply` would do and
    /// why ([`PlanReport::would`]).
    #[serde(serialize_with = "observed_json")]
    Observed(Box<PlanReport>),
}

/// An observed plan's JSON: `berth plan`'s, and `would`.
fn observed_json<P, S>(plan: &P, s: S) -> Result<S::Ok, S::Error>
where
    P: std::ops::Deref<Target = PlanReport>,
    S: serde::Serializer,
{
    let plan: &PlanReport = plan;
    #[derive(Serialize)]
    struct Observed<'a> {
        #[serde(flatten)]
        plan: &'a PlanReport,
        would: Vec<super::print::Would>,
    }
    Observed {
        plan,
        would: plan.would(),
    }
    .serialize(s)
}

/// One follow of the source.
#[derive(Debug, Clone, Serialize)]
pub struct FollowReport {
    pub source: SourceReport,
    /// The revision the pass ran on: the fetched one, or the one applied before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionInfo>,
    /// The pass; none when there was no revision to run it on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<PassResult>,
    /// The garbage collection after an applied pass (`reconcile::gc`); none when it
    /// did not run or failed (a warning says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc: Option<super::gc::GcReport>,
}

impl FollowReport {
    /// `berth agent --once`'s exit 0: the newest revision was fetched, accepted, and
    /// every container of it applied.
    pub fn converged(&self) -> bool {
        self.source.unavailable.is_none()
            && self.source.failed.is_none()
            && self.source.refused.is_none()
            && match &self.pass {
                Some(PassResult::Applied(r)) => r.applied(),
                Some(PassResult::Observed(p)) => p.applied(),
                None => false,
            }
    }
}

/// How one follow runs.
#[derive(Debug, Clone, Default)]
pub struct FollowOptions {
    /// `--node`/`--label` over the node configuration's identity.
    pub node: Option<berth_spec::NodeIdentity>,
    /// Plan and report only (`--observe`, or `agent.mode = "observe"`).
    pub observe: bool,
    /// Fetch first, trying a transient failure this many times in all; 0 runs the pass
    /// on the revision applied before without fetching (a container exited, a resync).
    pub fetch_attempts: u32,
}

/// Fetches, verifies, checks out and runs one pass (a plan only with `observe` or
/// `agent.mode = "observe"`); `on_plan` sees the plan before it runs, and `on_source`
/// what happened at the source before the pass starts.
pub fn once(
    env: &Env<'_>,
    opts: &FollowOptions,
    wait: LockWait<'_>,
    on_source: &mut dyn FnMut(&SourceReport, Option<&RevisionInfo>),
    on_plan: &mut dyn FnMut(&super::Plan),
) -> Result<FollowReport, FollowError> {
    let cfg = &env.loaded.config;
    let Some(section) = cfg.source.as_ref() else {
        return applied_again(env, opts, wait, on_source, on_plan);
    };
    let state_dir = cfg.runtime.state_dir.clone();
    // The state directory is checked before anything below it is touched: a directory
    // a local user controls could redirect the writes and removals that follow.
    crate::runtime::state::trusted_dir(&state_dir).map_err(|source| FollowError::Lock {
        path: state_dir.clone(),
        source,
    })?;
    let source_dir = state_dir.join("source");
    crate::source::set_network_timeouts(
        cfg.runtime.pull_connect_timeout,
        cfg.runtime.pull_idle_timeout,
    );
    // One follower at a time works on the clone and the revisions.
    let _guard = lock_source(&source_dir, wait.timeout, &mut *wait.waiting)?;
    let revisions = Revisions::new(&source_dir);
    let before = load_applied(&state_dir)?;
    let here = follows(&section.git_ref);
    let remote = Remote {
        section,
        dir: source_dir,
        base: env
            .loaded
            .path
            .as_ref()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf),
        previous: before
            .as_ref()
            .filter(|b| b.revision.follows == here && b.revision.url == display_url(&section.url))
            .and_then(|b| Oid::from_str(&b.revision.commit).ok()),
        deadline: cfg
            .runtime
            .pull_idle_timeout
            .saturating_mul(10)
            .max(std::time::Duration::from_secs(60)),
    };
    let mut source = SourceReport::of(display_url(&section.url), here);

    let fetched = match remote.fetch_with_retries(opts.fetch_attempts, FETCH_PAUSE) {
        Ok(f) => Some(f),
        Err(FetchError::NotAttempted) => None,
        Err(e) if e.is_transient() => {
            source.unavailable = Some(e.to_string());
            None
        }
        Err(e) => {
            source.failed = Some(e.to_string());
            None
        }
    };
    // The fetched revision, if its signature is accepted.
    let mut newest: Option<(Oid, RevisionInfo)> = None;
    if let Some(f) = &fetched {
        source.fetched = Some(f.commit.to_string());
        source.history = Some(f.history);
        source.recloned = f.recloned;
        source.received_bytes = Some(f.received_bytes);
        if f.history == History::Rewritten {
            source.previous = f.previous.map(|p| p.to_string());
        }
        let repo = open_clone(&remote)?;
        match check_signature(&repo, section, f)? {
            Ok(signer) => {
                let mut info = revision_info(&repo, f.commit, section, signer)?;
                info.tag_object = f.tag.map(|t| t.to_string());
                newest = Some((f.commit, info));
            }
            Err(reason) => source.refused = Some(format!("commit {}: {reason}", f.commit)),
        }
    }
    // The newest revision first; when it cannot be applied (not fetched, refused, no
    // `source.path` in it, errors in its tree), the one applied before, verified again.
    let mut tried_fallback = false;
    let mut candidate = newest;
    loop {
        let (commit, info) = match candidate.take() {
            Some(c) => c,
            None if tried_fallback => break,
            None => {
                tried_fallback = true;
                let fallback = match &before {
                    Some(b)
                        if source.fetched.as_deref() != Some(b.revision.commit.as_str())
                            || source.refused.is_none() =>
                    {
                        fallback(&remote, section, b)?
                    }
                    Some(_) => Err("it is the revision refused".to_string()),
                    None => Err("no revision was applied before".to_string()),
                };
                match fallback {
                    Ok(c) => c,
                    Err(why) => {
                        if before.is_some() || source.refused.is_some() {
                            source.refused = Some(match source.refused.take() {
                                Some(r) => format!("{r}; {why}"),
                                None => why,
                            });
                        }
                        break;
                    }
                }
            }
        };
        let is_newest = !tried_fallback;
        let checked = match checkout(&remote, &revisions, &mut source, commit)? {
            Ok(c) => c,
            Err(why) if is_newest => {
                source.refused = Some(format!("commit {commit}: {why}"));
                continue;
            }
            Err(why) => {
                source.refused = Some(match source.refused.take() {
                    Some(r) => format!("{r}; the revision applied before ({commit}): {why}"),
                    None => format!("the revision applied before ({commit}): {why}"),
                });
                break;
            }
        };
        source.skipped = checked.skipped.clone();
        let input = Input {
            path: &checked.spec_root,
            node: opts.node.clone(),
            prune_volumes: false,
            revision: Some(Revision {
                id: info.commit.clone(),
                source: format!("{}#{}", info.url, info.follows),
            }),
            retry_failed: false,
        };
        if opts.observe || cfg.agent.mode == AgentMode::Observe {
            on_source(&source, Some(&info));
            let plan = match pass::plan(env, &input, Registry::Online) {
                Err(PassError::Invalid { errors }) if is_newest => {
                    source.refused = Some(tree_errors(&commit.to_string(), &info.path, &errors));
                    source.invalid = errors;
                    continue;
                }
                other => other?,
            };
            // What observe checked out is not kept unless something runs it.
            revisions.prune(&before.as_ref().map(Applied::in_use).unwrap_or_default());
            return Ok(FollowReport {
                source,
                revision: Some(info),
                pass: Some(PassResult::Observed(Box::new(plan))),
                gc: None,
            });
        }
        // A tree with errors changes nothing: check it before the pass takes the lock
        // and tell the caller, once, what happened at the source.
        if is_newest && let Err(errors) = pass::check_tree(env, &input) {
            source.refused = Some(tree_errors(&commit.to_string(), &info.path, &errors));
            source.invalid = errors;
            continue;
        }
        on_source(&source, Some(&info));
        let lock = RecordLock::of(&wait);
        let report = pass::apply(env, &input, wait, on_plan)?;
        return record(env, lock, &revisions, before.as_ref(), source, info, report);
    }
    on_source(&source, None);
    if before.is_none() && source.refused.is_none() {
        return Err(FollowError::NoRevision {
            reason: source
                .unavailable
                .clone()
                .or_else(|| source.failed.clone())
                .unwrap_or_else(|| "the source gave no revision".into()),
        });
    }
    Ok(FollowReport {
        source,
        revision: None,
        pass: None,
        gc: None,
    })
}

/// Without a `[source]` (the agent of a node whose configuration names none): a pass
/// on the revision applied before, as it was checked out then, so that the containers
/// it runs are converged still (brought back after a reboot); [`FollowError::NoSource`]
/// when none was applied (or with `observe`, which has nothing new to plan).
fn applied_again(
    env: &Env<'_>,
    opts: &FollowOptions,
    wait: LockWait<'_>,
    on_source: &mut dyn FnMut(&SourceReport, Option<&RevisionInfo>),
    on_plan: &mut dyn FnMut(&super::Plan),
) -> Result<FollowReport, FollowError> {
    let state_dir = &env.loaded.config.runtime.state_dir;
    crate::runtime::state::trusted_dir(state_dir).map_err(|source| FollowError::Lock {
        path: state_dir.clone(),
        source,
    })?;
    let Some(before) = load_applied(state_dir)? else {
        return Err(FollowError::NoSource);
    };
    if opts.observe || env.loaded.config.agent.mode == AgentMode::Observe {
        return Err(FollowError::NoSource);
    }
    let info = before.revision.clone();
    let revisions = Revisions::new(&state_dir.join("source"));
    let dir = revisions.path_of(&info.commit);
    let spec_path = info.path.trim_matches('/');
    let root = if spec_path.is_empty() {
        dir.clone()
    } else {
        dir.join(spec_path)
    };
    if !root.is_dir() {
        return Err(FollowError::NoRevision {
            reason: format!(
                "no source configured, and the revision applied before ({}) is not checked out at {}",
                info.commit,
                root.display()
            ),
        });
    }
    let source = SourceReport::of(info.url.clone(), info.follows.clone());
    let input = Input {
        path: &root,
        node: opts.node.clone(),
        prune_volumes: false,
        revision: Some(Revision {
            id: info.commit.clone(),
            source: format!("{}#{}", info.url, info.follows),
        }),
        retry_failed: false,
    };
    on_source(&source, Some(&info));
    let lock = RecordLock::of(&wait);
    let report = pass::apply(env, &input, wait, on_plan)?;
    record(env, lock, &revisions, Some(&before), source, info, report)
}

/// Checks `commit` out; `Ok(Err(why))` when the revision cannot be used (its
/// `source.path` is missing, or it breaks a limit). A clone whose objects do not read
/// back is cloned afresh once.
fn checkout(
    remote: &Remote<'_>,
    revisions: &Revisions,
    source: &mut SourceReport,
    commit: Oid,
) -> Result<Result<crate::source::checkout::CheckedOut, String>, FollowError> {
    let path = &remote.section.path;
    let repo = open_clone(remote)?;
    let result = match revisions.checkout(&repo, commit, path) {
        Err(CheckoutError::Objects { reason, .. }) => {
            drop(repo);
            let f = remote.fetch_fresh(&reason)?;
            source.recloned = true;
            let repo = open_clone(remote)?;
            if repo.find_commit(commit).is_err() {
                return Ok(Err(format!(
                    "it is no longer on the source (which now gives {})",
                    f.commit
                )));
            }
            revisions.checkout(&repo, commit, path)
        }
        other => other,
    };
    match result {
        Ok(c) => Ok(Ok(c)),
        Err(e @ (CheckoutError::NoPath { .. } | CheckoutError::Refused { .. })) => {
            Ok(Err(match e {
                CheckoutError::NoPath { path, .. } => {
                    format!("`source.path` `{path}` is not a directory in it")
                }
                other => other.to_string(),
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// How [`record`] takes the state lock: as the pass took it.
#[derive(Debug, Clone, Copy)]
struct RecordLock<'a> {
    command: &'a str,
    timeout: std::time::Duration,
}

impl<'a> RecordLock<'a> {
    fn of(wait: &LockWait<'a>) -> Self {
        RecordLock {
            command: wait.command,
            timeout: wait.timeout,
        }
    }
}

/// Records what runs after an applied pass, lets go of the revisions nothing runs any
/// more, and collects garbage. `before` is the record as the follower read it before
/// the pass; the record is read again, and written, under the state lock (see
/// [`store_under_lock`]).
fn record(
    env: &Env<'_>,
    lock: RecordLock<'_>,
    revisions: &Revisions,
    before: Option<&Applied>,
    source: SourceReport,
    info: RevisionInfo,
    report: Report,
) -> Result<FollowReport, FollowError> {
    // A crash here leaves the pass applied and not recorded (e2e `trust_chain`).
    super::host::failpoint("before-record");
    let cfg = &env.loaded.config;
    let state_dir = &cfg.runtime.state_dir;
    let stored = store_under_lock(state_dir, lock, before.is_some(), |before, running| {
        let before = before.as_ref();
        let before_chains = before.map(|b| b.chains.clone()).unwrap_or_default();
        let mut containers = before.map(|b| b.containers.clone()).unwrap_or_default();
        runs(&mut containers, &report, &info.commit, running);
        // The time a revision was first applied stays its time.
        let applied_at = before
            .filter(|b| b.revision.commit == info.commit)
            .map_or_else(crate::util::rfc3339::now, |b| b.applied_at.clone());
        // A signer is verified now only when the node requires one: a revision applied
        // again (a fallback, or without a `[source]`) keeps the signer it was recorded
        // with, which this pass did not check.
        let signer = crate::trust::record::commit_link(cfg.source.as_ref(), info.signer.as_ref());
        let chains = match running {
            Some(running) => crate::trust::record::after_pass(
                state_dir,
                &cfg.policy,
                &before_chains,
                &containers,
                running,
                &crate::trust::record::Wanted {
                    commit: &info.commit,
                    tag_object: info.tag_object.as_deref(),
                    signer: &signer,
                    desired: &report.desired,
                },
            ),
            // Kept as they were: each is shown only while its own instance runs.
            None => before_chains
                .into_iter()
                .filter(|(name, c)| c.commit.as_ref() == containers.get(name))
                .collect(),
        };
        Applied {
            schema_version: SCHEMA_VERSION,
            revision: info.clone(),
            applied_at,
            applied: report.applied(),
            containers,
            chains,
        }
    })?;
    match &stored {
        Some(applied) => {
            revisions.switch_current(&info.commit)?;
            for gone in revisions.prune(&applied.in_use()) {
                tracing::info!(target: "source", commit = %gone, "revision no container runs removed");
            }
        }
        None => tracing::info!(
            target: "source",
            commit = %info.commit,
            "`berth apply DIR` converged the node from a directory after this pass: the revision is not recorded"
        ),
    }
    let gc = super::gc::collect(state_dir, cfg.runtime.gc_grace, std::time::SystemTime::now())
        .inspect_err(|e| tracing::warn!(target: "gc", error = %crate::util::error_chain(e), "garbage collection failed"))
        .ok();
    Ok(FollowReport {
        source,
        revision: Some(info),
        pass: Some(PassResult::Applied(Box::new(report))),
        gc,
    })
}

/// Writes the record `make` makes, under the state lock: from the record and the
/// container records as they are now (another writer may have changed them since the
/// pass let go of the lock), so that `berth apply DIR`, which forgets the record under
/// the same lock, is never undone. When the follower read a record before its pass
/// (`had_record`) and it is gone now, `berth apply DIR` converged the node from a
/// directory since: nothing is written, and `None` returned. The state lock is taken
/// under the source lock, as everywhere (source, then state).
fn store_under_lock(
    state_dir: &Path,
    lock: RecordLock<'_>,
    had_record: bool,
    make: impl FnOnce(Option<Applied>, Option<&BTreeMap<String, crate::trust::Running>>) -> Applied,
) -> Result<Option<Applied>, FollowError> {
    let mut waiting = |who: &str| {
        tracing::info!(target: "source", "{who} (to record the pass)");
    };
    let _held = crate::runtime::lock::lock(state_dir, lock.command, lock.timeout, &mut waiting)
        .map_err(|e| FollowError::Pass(e.into()))?;
    let now = load_applied(state_dir)?;
    if had_record && now.is_none() {
        return Ok(None);
    }
    // What runs now, to tell the instances this pass made or kept from ones another
    // writer (`berth apply DIR`) put in their place since.
    let running = crate::trust::record::running(state_dir)
        .inspect_err(|e| tracing::warn!(target: "source", error = %crate::util::error_chain(e), "cannot read the container records; the trust chains recorded before are kept"))
        .ok();
    let applied = make(now, running.as_ref());
    applied.store(state_dir)?;
    Ok(Some(applied))
}

/// Why a revision whose spec tree has errors is refused: how many, where the tree is
/// in the repository (the errors' paths are relative to it), and the first error, so
/// that the one line a status or an event shows names a file, a line and a key.
fn tree_errors(commit: &str, spec_path: &str, errors: &[String]) -> String {
    let spec_path = spec_path.trim_matches('/');
    let root = if spec_path.is_empty() {
        String::new()
    } else {
        format!(" (`{spec_path}/` of the repository)")
    };
    let first = errors
        .first()
        .map(|e| format!(": {}", e.lines().next().unwrap_or_default()))
        .unwrap_or_default();
    let more = if errors.len() > 1 {
        format!(" (and {} more)", errors.len() - 1)
    } else {
        String::new()
    };
    format!(
        "commit {commit}: its spec tree{root} has {} error(s){first}{more}",
        errors.len()
    )
}

/// `state/applied.json`, or none; a record that does not parse (a disk fault) is set
/// aside as `applied.json.corrupt` with a warning, and the node starts over from the
/// source.
fn load_applied(state_dir: &Path) -> Result<Option<Applied>, FollowError> {
    match Applied::load(state_dir) {
        Err(AppliedError::Parse { path, source }) => {
            let aside = path.with_extension("json.corrupt");
            tracing::warn!(target: "source", path = %path.display(), error = %source, aside = %aside.display(), "the applied-revision record does not parse; set aside");
            std::fs::rename(&path, &aside)
                .map_err(|e| FollowError::Applied(AppliedError::Write { path, source: e }))?;
            Ok(None)
        }
        other => Ok(other?),
    }
}

/// Updates, per container, the commit of the revision it runs: a container whose
/// running instance is the one this pass wanted (created, recreated, started or left
/// unchanged) runs `commit`; one whose running instance is another (a writer such as
/// `berth apply DIR` replaced it after the pass) runs no commit of the source; one
/// removed runs nothing; one kept at an older version (blocked, held, rolled back)
/// keeps the revision it ran. Without the container records (`running`), a container
/// created or recreated runs `commit` and the others keep theirs.
fn runs(
    containers: &mut BTreeMap<String, String>,
    report: &Report,
    commit: &str,
    running: Option<&BTreeMap<String, crate::trust::Running>>,
) {
    for (name, c) in &report.containers {
        let wanted = match (running, report.desired.get(name)) {
            (Some(r), Some(hash)) => Some(r.get(name).map(|r| &r.spec_hash) == Some(hash)),
            _ => None,
        };
        match (&c.outcome, wanted) {
            (ContainerOutcome::Removed, _) => {
                containers.remove(name);
            }
            (
                ContainerOutcome::Created { .. }
                | ContainerOutcome::Recreated { .. }
                | ContainerOutcome::Unchanged
                | ContainerOutcome::Started { .. }
                | ContainerOutcome::Stopped { .. }
                | ContainerOutcome::Deferred { .. },
                Some(true),
            )
            | (ContainerOutcome::Created { .. } | ContainerOutcome::Recreated { .. }, None) => {
                containers.insert(name.clone(), commit.to_string());
            }
            (
                ContainerOutcome::Created { .. }
                | ContainerOutcome::Recreated { .. }
                | ContainerOutcome::Unchanged
                | ContainerOutcome::Started { .. }
                | ContainerOutcome::Stopped { .. }
                | ContainerOutcome::Deferred { .. },
                Some(false),
            ) => {
                containers.remove(name);
            }
            (
                ContainerOutcome::Unchanged
                | ContainerOutcome::Started { .. }
                | ContainerOutcome::Stopped { .. }
                | ContainerOutcome::Deferred { .. },
                None,
            ) => {
                containers
                    .entry(name.clone())
                    .or_insert_with(|| commit.to_string());
            }
            _ => {}
        }
    }
}

/// The revision applied before, to converge to when the newest cannot be applied;
/// `Ok(Err(why))` when it cannot be either.
fn fallback(
    remote: &Remote<'_>,
    section: &SourceSection,
    before: &Applied,
) -> Result<Result<(Oid, RevisionInfo), String>, FollowError> {
    let Ok(id) = Oid::from_str(&before.revision.commit) else {
        return Ok(Err(format!(
            "the record of the revision applied before names no commit (`{}`)",
            before.revision.commit
        )));
    };
    let mut info = before.revision.clone();
    if signature::required(section) {
        let Ok(repo) = open_clone(remote) else {
            return Ok(Err(format!(
                "the revision applied before ({id}) cannot be verified again: the clone cannot be read"
            )));
        };
        if repo.find_commit(id).is_err() {
            return Ok(Err(format!(
                "the revision applied before ({id}) is no longer in the clone to verify again"
            )));
        }
        let tag = info
            .tag_object
            .as_deref()
            .and_then(|t| Oid::from_str(t).ok());
        match signature::check(section, &repo, id, tag)? {
            Ok(signer) => info.signer = Some(signer),
            Err(why) => {
                return Ok(Err(format!(
                    "the revision applied before ({id}) is not applied again either: {why}"
                )));
            }
        }
    }
    Ok(Ok((id, info)))
}

/// `branch main`, `tag v1`, `commit <id>`.
fn follows(r: &GitRef) -> String {
    match r {
        GitRef::Branch(b) => format!("branch {b}"),
        GitRef::Tag(t) => format!("tag {t}"),
        GitRef::Commit(c) => format!("commit {c}"),
    }
}

fn open_clone(remote: &Remote<'_>) -> Result<Repository, FollowError> {
    Repository::open_bare(remote.clone_path()).map_err(|e| {
        FollowError::Fetch(FetchError::Clone {
            path: remote.clone_path(),
            reason: e.message().to_string(),
        })
    })
}

/// The signature check the node asks for: none without `source.allowed_signers` or
/// `source.trusted_pgp_keys`; otherwise the tag (when following a signed annotated
/// tag) or the commit must be signed by a listed key of either kind. `Ok(Err(reason))`
/// is a refusal.
fn check_signature(
    repo: &Repository,
    section: &SourceSection,
    fetched: &Fetched,
) -> Result<Result<Option<Signer>, String>, FollowError> {
    if !signature::required(section) {
        return Ok(Ok(None));
    }
    Ok(signature::check(section, repo, fetched.commit, fetched.tag)?.map(Some))
}

/// Commit, author, committer time and subject of `commit`.
fn revision_info(
    repo: &Repository,
    commit: Oid,
    section: &SourceSection,
    signer: Option<Signer>,
) -> Result<RevisionInfo, FollowError> {
    let c = repo
        .find_commit(commit)
        .map_err(|e| CheckoutError::Objects {
            commit,
            reason: e.message().to_string(),
        })?;
    let author = c.author();
    let name = String::from_utf8_lossy(author.name_bytes()).into_owned();
    let email = String::from_utf8_lossy(author.email_bytes()).into_owned();
    let secs = u64::try_from(c.committer().when().seconds()).unwrap_or(0);
    Ok(RevisionInfo {
        commit: commit.to_string(),
        url: display_url(&section.url),
        follows: follows(&section.git_ref),
        path: section.path.clone(),
        author: format!("{name} <{email}>"),
        time: crate::util::rfc3339::format(secs),
        subject: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
        signer,
        tag_object: None,
    })
}

/// Holds `<source>/lock` (flock) while the clone and the revisions are worked on;
/// waits at most `timeout`, saying once that it waits.
fn lock_source(
    dir: &Path,
    timeout: std::time::Duration,
    waiting: &mut dyn FnMut(&str),
) -> Result<std::fs::File, FollowError> {
    let path = dir.join("lock");
    let lock_err = |source| FollowError::Lock {
        path: path.clone(),
        source,
    };
    crate::runtime::state::private_dir(dir).map_err(lock_err)?;
    let f = crate::runtime::state::open_lock_file(&path).map_err(lock_err)?;
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < timeout => {
                if !said {
                    waiting(&format!(
                        "another berth follows the source of this state directory ({} is locked); waiting",
                        path.display()
                    ));
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(lock_err(std::io::Error::other(format!(
                    "another berth held it for longer than {} (--lock-timeout)",
                    humantime::format_duration(timeout)
                ))));
            }
            Err(e) => return Err(lock_err(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::outcome::ContainerReport;
    use crate::trust::Running;

    fn report(outcomes: &[(&str, ContainerOutcome)], desired: &[(&str, &str)]) -> Report {
        Report {
            revision: Revision {
                id: "c2".into(),
                source: "file:///repo#branch main".into(),
            },
            containers: outcomes
                .iter()
                .map(|(n, o)| {
                    let r = ContainerReport {
                        outcome: o.clone(),
                        findings: Vec::new(),
                        health: None,
                    };
                    (n.to_string(), r)
                })
                .collect(),
            steps: Vec::new(),
            networks: BTreeMap::new(),
            findings: BTreeMap::new(),
            converged: true,
            next_pass: None,
            desired: desired
                .iter()
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .collect(),
        }
    }

    fn running(pairs: &[(&str, &str)]) -> BTreeMap<String, Running> {
        pairs
            .iter()
            .map(|(n, h)| {
                let r = Running {
                    instance: format!("{n}-{h}"),
                    spec_hash: h.to_string(),
                    digest: "sha256:aa".into(),
                };
                (n.to_string(), r)
            })
            .collect()
    }

    /// Finding: a container left unchanged kept the commit it was recorded with, so
    /// after a crash between the pass and its record (or with a record written before
    /// chains were kept) it was never vouched for again at the revision it runs.
    #[test]
    fn an_unchanged_container_running_the_wanted_instance_moves_to_the_revision() {
        let mut containers = BTreeMap::from([
            ("web".to_string(), "c1".to_string()),
            ("db".to_string(), "c0".to_string()),
            ("api".to_string(), "c1".to_string()),
        ]);
        let r = report(
            &[
                ("web", ContainerOutcome::Unchanged),
                (
                    "db",
                    ContainerOutcome::RolledBack {
                        reason: "unhealthy".into(),
                    },
                ),
                ("api", ContainerOutcome::Unchanged),
            ],
            &[("web", "h2"), ("db", "h9"), ("api", "h3")],
        );
        // web runs what c2 wants; db its last known good; api was replaced after
        // the pass by another writer (`berth apply DIR`).
        let run = running(&[("web", "h2"), ("db", "h1"), ("api", "hx")]);
        runs(&mut containers, &r, "c2", Some(&run));
        assert_eq!(containers.get("web").map(String::as_str), Some("c2"));
        assert_eq!(containers.get("db").map(String::as_str), Some("c0"));
        assert_eq!(containers.get("api"), None, "{containers:?}");
        // Without the records: as before, a container left unchanged keeps its commit.
        let mut containers = BTreeMap::from([("web".to_string(), "c1".to_string())]);
        runs(&mut containers, &r, "c2", None);
        assert_eq!(containers.get("web").map(String::as_str), Some("c1"));
    }

    fn applied(commit: &str, containers: &[(&str, &str)]) -> Applied {
        Applied {
            schema_version: SCHEMA_VERSION,
            revision: RevisionInfo {
                commit: commit.into(),
                url: "file:///fleet".into(),
                follows: "branch main".into(),
                path: "fleet".into(),
                author: "Ops <ops@example.com>".into(),
                time: "2026-12-04T10:00:00Z".into(),
                subject: "web".into(),
                signer: None,
                tag_object: None,
            },
            applied_at: "2026-12-04T10:00:05Z".into(),
            applied: true,
            containers: containers
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
            chains: BTreeMap::new(),
        }
    }

    const LOCK: RecordLock<'static> = RecordLock {
        command: "berth agent",
        timeout: std::time::Duration::ZERO,
    };

    /// Finding: the record was read before the pass and written after it under the
    /// source lock only, so a `berth apply DIR` between the two had its forgetting
    /// undone (and the containers it replaced read "not known").
    #[test]
    fn a_record_forgotten_after_the_pass_is_not_brought_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path();
        applied("c1", &[("web", "c1")]).store(state).expect("store");
        // The follower read it before its pass; `berth apply DIR` forgot it since.
        assert!(Applied::forget(state).expect("forget").is_some());
        let stored = store_under_lock(state, LOCK, true, |_, _| {
            panic!("a record is made though the node was converged from a directory")
        })
        .expect("record");
        assert_eq!(stored, None);
        assert_eq!(Applied::load(state).expect("load"), None, "brought back");
        // Nothing was there before the pass either (a first revision): recorded.
        let stored = store_under_lock(state, LOCK, false, |now, _| {
            assert_eq!(now, None);
            applied("c2", &[("web", "c2")])
        })
        .expect("record");
        assert_eq!(stored, Some(applied("c2", &[("web", "c2")])));
        assert_eq!(Applied::load(state).expect("load"), stored);
    }

    #[test]
    fn the_record_is_read_and_written_under_the_state_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path();
        applied("c1", &[("web", "c1")]).store(state).expect("store");
        // Another writer holds the state: the record waits for it (here: not at all).
        let held = crate::runtime::lock::lock(state, "berth apply", LOCK.timeout, &mut |_| {})
            .expect("lock");
        let err = store_under_lock(state, LOCK, true, |_, _| applied("c2", &[]))
            .expect_err("written while another writer holds the state lock");
        assert!(
            matches!(&err, FollowError::Pass(PassError::Lock(_))),
            "{err:?}"
        );
        assert_eq!(
            Applied::load(state).expect("load"),
            Some(applied("c1", &[("web", "c1")]))
        );
        // The writer changed the record meanwhile: the record is made from it as it is
        // once the lock is had, not as the follower read it before its pass.
        applied("c1", &[("web", "c1"), ("db", "c0")])
            .store(state)
            .expect("store");
        drop(held);
        let stored = store_under_lock(state, LOCK, true, |now, _| {
            let now = now.expect("the record");
            assert_eq!(now.containers.get("db").map(String::as_str), Some("c0"));
            applied("c2", &[("web", "c2"), ("db", "c0")])
        })
        .expect("record");
        assert_eq!(Applied::load(state).expect("load"), stored);
    }
}
