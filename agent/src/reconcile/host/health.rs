//! Health probes on the host: one right after a start, the wait-healthy step, once
//! per pass the probes that are due, and the agent's rounds of probes between passes
//! ([`probe_round`], in a process of its own: `reconcile::prober`), each run in the
//! instance's network namespace through the runtime's exec and recorded in its health
//! file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::network::Networks;
use crate::node::Loaded;
use crate::reconcile::prober::{HealthChange, HealthNow, ProbeRound};
use crate::runtime::health::{self, ProbeNet, ProbeResult};
use crate::runtime::health_file::{self, Round, Target};
use crate::runtime::instance::{
    ExecIo, ExecOutcome, ExecRequest, InstanceError, InstanceRuntime, OciInstances,
    RuntimeInstance, find_shim,
};
use crate::runtime::oci::Runtime;
use crate::runtime::record::{ContainerRecord, RecordError, read_records};
use crate::runtime::state::InstanceDirs;

use super::error::{HostStepError, at};
use super::{ContainerHost, StepError};

/// What the health probes of a pass need beyond the host: how many the end of the pass
/// runs at once, and when this pass started each instance (the record's start time is
/// in whole seconds, too coarse to tell a probe right after the start from one an
/// interval later).
#[derive(Debug, Default)]
pub struct HealthProbes {
    pub parallel: usize,
    started: Mutex<BTreeMap<String, Instant>>,
}

impl HealthProbes {
    /// `parallel` probes at once at the end of the pass (`runtime.parallel`).
    pub fn new(parallel: usize) -> Self {
        HealthProbes {
            parallel,
            started: Mutex::default(),
        }
    }

    pub(super) fn started(&self, id: &str) {
        self.lock().insert(id.to_string(), Instant::now());
    }

    /// The time since instance `id` started: measured when this pass started it, else
    /// from its record's start time.
    pub(super) fn since_start(&self, id: &str, started_at: Option<&str>) -> Duration {
        self.lock()
            .get(id)
            .map_or_else(|| health_file::since(started_at), Instant::elapsed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instant>> {
        self.started.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ContainerHost<'_> {
    /// Runs `h`'s probe once against instance `id`: in its network namespace, and
    /// through the runtime's exec.
    pub(super) fn probe(&self, id: &str, h: &berth_spec::Health) -> ProbeResult {
        probe_instance(self.networks, self.runtime, &self.instance(id), h)
    }

    /// The wait-healthy step.
    pub(super) fn wait_until_healthy(
        &self,
        name: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<(), StepError> {
        let dc = self
            .desired
            .containers
            .get(name)
            .ok_or_else(|| HostStepError::NotDesired(name.to_string()))?;
        let Some(h) = &dc.spec.health else {
            return Ok(());
        };
        // Each probe is recorded in the instance's health file, after what is there.
        let root = self.instance(id).dirs.root;
        let started_at = self.record(name).ok().flatten().and_then(|r| r.started_at);
        let mut prev = health_file::read_fresh(&root, started_at.as_deref());
        let started = Instant::now();
        let mut run = || {
            let since = self.health.since_start(id, started_at.as_deref());
            let (_, record) =
                health_file::probe_and_record(&root, h, prev.as_ref(), since, || self.probe(id, h));
            prev = Some(record.clone());
            record
        };
        let mut sleep = |d: Duration| std::thread::sleep(d);
        health::wait_healthy(h, timeout, &mut run, &|| started.elapsed(), &mut sleep).map_err(
            |end| {
                HostStepError::Unhealthy {
                    name: name.to_string(),
                    why: end.why().to_string(),
                }
                .into()
            },
        )
    }

    /// Once per pass, after its steps: one probe of each running instance of a desired
    /// container with a health check whose last probe is at least `interval` old
    /// (`health_file::due_in`), up to `parallel` at once, each bounded by its check's
    /// timeout. Without a daemon, this is what makes `ps` converge to the truth.
    pub(super) fn probe_due(&self) {
        let stopped = self.lock_stopped().clone();
        let records: Vec<(&berth_spec::Health, ContainerRecord)> = self
            .desired
            .containers
            .iter()
            .filter_map(|(name, d)| {
                let h = d.spec.health.as_ref()?;
                let record = self.record(name).ok().flatten()?;
                // Only the desired instance: its check is the desired one.
                (record.instance == d.instance && !stopped.contains(&record.instance))
                    .then_some((h, record))
            })
            .collect();
        let targets: Vec<Target<'_>> = records
            .iter()
            .filter_map(|(h, r)| target(&self.state_dir, r, h))
            .collect();
        health_file::probe_due(
            &targets,
            &Round {
                parallel: self.health.parallel,
                early: false,
                since_start: &|t| self.health.since_start(t.instance, t.started_at),
                probe: &|t| self.probe(t.instance, t.check),
                go_on: &|| true,
            },
        );
    }
}

/// Runs `h`'s probe once against `inst`: in its network namespace (its attachment's, or
/// its init's), and through `runtime`'s exec.
fn probe_instance(
    networks: &Networks,
    runtime: &(dyn InstanceRuntime + Sync),
    inst: &RuntimeInstance,
    h: &berth_spec::Health,
) -> ProbeResult {
    // Bridge mode: the attachment's namespace. Otherwise (`none`, `host`) the
    // namespace its init runs in — the container's own for `none`, the host's for
    // `host` — never the agent's by default: a `none` container's check must not be
    // answered by a server on the host.
    let net = match networks.attachment(&inst.id) {
        Ok(Some(a)) => ProbeNet::Netns(a.netns_path),
        _ => match inst.dirs.pid().filter(|p| *p > 1) {
            Some(pid) => {
                let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
                // `host` mode: the agent's own namespace, probed without entering it.
                let same = |a: &std::path::Path, b: &str| {
                    use std::os::unix::fs::MetadataExt;
                    match (std::fs::metadata(a), std::fs::metadata(b)) {
                        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
                        _ => false,
                    }
                };
                if same(&ns, "/proc/self/ns/net") {
                    ProbeNet::Host
                } else {
                    ProbeNet::Netns(ns)
                }
            }
            None => return ProbeResult::Unhealthy("the container is not running".into()),
        },
    };
    let exec = move |argv: &[String], t: Duration| -> Result<ExecOutcome, health::ExecError> {
        let req = ExecRequest {
            args: argv.to_vec(),
            timeout: Some(t),
            ..ExecRequest::default()
        };
        let io = ExecIo {
            stdin: std::process::Stdio::null(),
            stdout: std::process::Stdio::null(),
            stderr: std::process::Stdio::null(),
        };
        runtime
            .exec(inst, &req, io)
            .map_err(|err| -> health::ExecError { Box::new(at("exec")(err)) })
    };
    health::probe(&h.probe, &net, h.timeout, &exec)
}

/// The instance of `record` as a round of probes takes it, when it runs (started, not
/// stopped by an operator, no exit file) and has check `h`.
fn target<'a>(
    state_dir: &std::path::Path,
    record: &'a ContainerRecord,
    h: &'a berth_spec::Health,
) -> Option<Target<'a>> {
    let dirs = InstanceDirs::new(state_dir, &record.instance);
    let runs =
        record.started_at.is_some() && !record.operator_stopped && !dirs.exit_file().exists();
    runs.then(|| Target {
        name: &record.name,
        instance: &record.instance,
        dirs,
        started_at: record.started_at.as_deref(),
        check: h,
    })
}

/// Why a round of probes could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeRoundError {
    #[error("cannot read the container records")]
    Records(#[source] RecordError),
    #[error("cannot probe with exec")]
    Shim(#[source] InstanceError),
}

/// The agent's round of probes, between passes (`berth agent --pass-probe`): one probe
/// of each running container with a health check that is due, as its record says it
/// was made (whatever the repository says now), up to `runtime.parallel` at once.
/// It takes no lock: a pass may run beside it, and each health file is written
/// atomically. Returns what changed, the health of each, and when the next is due.
pub fn probe_round(
    loaded: &Loaded,
    go_on: &(dyn Fn() -> bool + Sync),
) -> Result<ProbeRound, ProbeRoundError> {
    let rt = &loaded.config.runtime;
    let records = read_records(&rt.state_dir).map_err(ProbeRoundError::Records)?;
    let targets: Vec<Target<'_>> = records
        .values()
        .filter_map(|r| target(&rt.state_dir, r, r.spec.health.as_ref()?))
        .collect();
    if targets.is_empty() {
        return Ok(ProbeRound::default());
    }
    let shim = find_shim(rt.shim_path.as_deref()).map_err(ProbeRoundError::Shim)?;
    // Each instance through the runtime that made it.
    let runtimes: BTreeMap<&str, OciInstances> = targets
        .iter()
        .filter_map(|t| {
            let r = records.get(t.name)?;
            let runtime = Runtime::from_record(std::path::Path::new(&r.runtime), &r.runtime_root);
            Some((
                t.name,
                OciInstances::new(runtime, shim.clone(), rt.log_max_size, rt.log_max_files),
            ))
        })
        .collect();
    let networks = crate::node::open_networks(loaded);
    let probed = health_file::probe_due(
        &targets,
        &Round {
            parallel: rt.parallel,
            early: true,
            since_start: &|t| health_file::since(t.started_at),
            probe: &|t| match runtimes.get(t.name) {
                Some(runtime) => probe_instance(
                    &networks,
                    runtime,
                    &RuntimeInstance::new(&rt.state_dir, t.instance),
                    t.check,
                ),
                None => ProbeResult::Unhealthy(format!("no record of {}", t.name)),
            },
            go_on,
        },
    );
    let changed = probed
        .iter()
        .filter(|p| p.before != p.after.status)
        .map(|p| HealthChange {
            name: p.target.name.to_string(),
            instance: p.target.instance.to_string(),
            from: p.before,
            to: p.after.status,
            why: p.after.output.clone(),
        })
        .collect();
    let now = health_file::now();
    let mut next: Option<Duration> = None;
    let mut health = Vec::new();
    for t in &targets {
        let record = t.record();
        let due = health_file::due_in(record.as_ref(), t.check, now);
        next = Some(next.map_or(due, |n| n.min(due)));
        let record = record.unwrap_or_else(health_file::HealthRecord::starting);
        health.push(HealthNow {
            name: t.name.to_string(),
            instance: t.instance.to_string(),
            status: record.status,
            output: record.output,
        });
    }
    Ok(ProbeRound {
        changed,
        health,
        next_ms: next.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    })
}
