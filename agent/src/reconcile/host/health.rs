//! Health probes on the host: one right after a start, the wait-healthy step, and
//! once per pass the probes that are due, each run in the instance's network
//! namespace through the runtime's exec and recorded in its health file.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::runtime::health::{self, ProbeNet, ProbeResult};
use crate::runtime::health_file;
use crate::runtime::instance::{ExecIo, ExecOutcome, ExecRequest};

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
        let net = match self.networks.attachment(id) {
            Ok(Some(a)) => ProbeNet::Netns(a.netns_path),
            _ => ProbeNet::Host,
        };
        let inst = self.instance(id);
        let runtime = self.runtime;
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
                .exec(&inst, &req, io)
                .map_err(|err| -> health::ExecError { Box::new(at("exec")(err)) })
        };
        health::probe(&h.probe, &net, h.timeout, &exec)
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
    /// (`health_file::due`), up to `parallel` at once, each bounded by its check's
    /// timeout. Without a daemon, this is what makes `ps` converge to the truth.
    pub(super) fn probe_due(&self) {
        let now = health_file::now();
        let stopped = self.lock_stopped().clone();
        let due: Vec<(&berth_spec::Health, String, Option<String>)> = self
            .desired
            .containers
            .iter()
            .filter_map(|(name, d)| {
                let h = d.spec.health.as_ref()?;
                let record = self.record(name).ok().flatten()?;
                // Only the desired instance, running: its check is the desired one.
                let running = record.instance == d.instance
                    && record.started_at.is_some()
                    && !record.operator_stopped
                    && !stopped.contains(&record.instance)
                    && !self.instance(&record.instance).dirs.exit_file().exists();
                if !running {
                    return None;
                }
                let root = self.instance(&record.instance).dirs.root;
                let last = health_file::read_fresh(&root, record.started_at.as_deref());
                health_file::due(last.as_ref(), h, now).then_some((
                    h,
                    record.instance,
                    record.started_at,
                ))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let one = |(h, id, started_at): &(&berth_spec::Health, String, Option<String>)| {
            let root = self.instance(id).dirs.root;
            // Read again: a probe of this pass may have written it since.
            let prev = health_file::read_fresh(&root, started_at.as_deref());
            let since = self.health.since_start(id, started_at.as_deref());
            health_file::probe_and_record(&root, h, prev.as_ref(), since, || self.probe(id, h));
        };
        std::thread::scope(|s| {
            for _ in 0..self.health.parallel.clamp(1, due.len()) {
                s.spawn(|| {
                    while let Some(item) =
                        due.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        one(item);
                    }
                });
            }
        });
    }
}
