//! A fake host for tests: carries a plan out on an [`Actual`] as a perfect executor
//! would, so a test can plan again and check that the host converged.

use super::facts::{networks_of, volumes_of};
use super::model::*;

/// Applies every step of `plan` at time `now`; a pull makes the image ready in `desired`.
pub(super) fn execute(plan: &Plan, desired: &mut Desired, actual: &mut Actual, now: Timestamp) {
    for step in &plan.steps {
        match &step.action {
            Action::Pull { digest, .. } => {
                for c in desired.containers.values_mut() {
                    if &c.digest == digest {
                        c.image_ready = true;
                    }
                }
            }
            Action::CreateNetwork { name } => {
                let subnet = desired.networks.get(name).and_then(|n| n.subnet.clone());
                actual
                    .networks
                    .insert(name.clone(), ActualNetwork { subnet });
            }
            Action::CreateVolume { name } => {
                actual.volumes.insert(name.clone());
            }
            Action::Create { name, instance } => {
                let want = &desired.containers[name];
                assert_eq!(&want.instance, instance);
                actual
                    .containers
                    .entry(name.clone())
                    .or_default()
                    .instances
                    .push(ObservedInstance {
                        id: instance.clone(),
                        digest: Some(want.digest.clone()),
                        state: InstanceState::Created,
                        health: HealthState::Unknown,
                        spec: Some(want.spec.clone()),
                        networks: networks_of(&want.spec),
                        volumes: volumes_of(&want.spec),
                    });
            }
            Action::Start { name, instance } => {
                let record = actual.containers.get_mut(name).unwrap();
                let i = find(&mut record.instances, instance);
                if matches!(i.state, InstanceState::Exited { .. }) {
                    record.restarts += 1;
                }
                let i = find(&mut record.instances, instance);
                i.state = InstanceState::Running {
                    pid: 1,
                    started_at: now,
                };
                let has_health = i.spec.as_ref().is_some_and(|s| s.health.is_some());
                i.health = if has_health {
                    HealthState::Starting
                } else {
                    HealthState::Unknown
                };
            }
            Action::Stop { name, instance, .. } => {
                let exited = InstanceState::Exited {
                    code: 143,
                    started_at: None,
                    finished_at: now,
                };
                match actual.containers.get_mut(name) {
                    Some(r) if r.instances.iter().any(|i| &i.id == instance) => {
                        find(&mut r.instances, instance).state = exited;
                    }
                    _ => {
                        let o = actual
                            .orphans
                            .iter_mut()
                            .find(|o| &o.id == instance)
                            .unwrap();
                        o.state = exited;
                    }
                }
            }
            Action::Remove { name, instance } => {
                if let Some(r) = actual.containers.get_mut(name) {
                    r.instances.retain(|i| &i.id != instance);
                }
                actual.orphans.retain(|o| &o.id != instance);
            }
            Action::Forget { name } => {
                let r = actual.containers.remove(name).unwrap();
                assert!(r.instances.is_empty(), "forget {name} with instances left");
            }
            Action::WaitHealthy { name, instance, .. } | Action::Verify { name, instance, .. } => {
                let r = actual.containers.get_mut(name).unwrap();
                find(&mut r.instances, instance).health = HealthState::Healthy;
            }
            Action::RemoveNetwork { name } => {
                actual.networks.remove(name);
            }
            Action::RemoveVolume { name } => {
                actual.volumes.remove(name);
            }
            Action::Report { .. } => {}
        }
    }
    actual.generation += 1;
}

fn find<'i>(instances: &'i mut [ObservedInstance], id: &str) -> &'i mut ObservedInstance {
    instances
        .iter_mut()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no instance {id}"))
}
