//! Networks and volumes: which to create, remove or recreate, from the containers'
//! fates. Only what berth owns is in [`Actual`], so only that is ever removed.
//!
//! - A network or volume is created when an applied container uses it and it is missing.
//! - A network is removed when no container of the desired state references it and no
//!   instance left after the plan is attached to it.
//! - A volume is removed only with `prune_volumes`, under the same conditions: data is
//!   never deleted implicitly.
//! - A network whose subnet changed is removed and created again once every instance
//!   attached to it is being removed (its containers are replaced anyway, since the
//!   network's content is in their spec hash); while a kept instance still uses it, the
//!   change is deferred and reported.

use std::collections::{BTreeMap, BTreeSet};

use super::facts::{networks_of, volumes_of};
use super::fate::Fate;
use super::model::{Actual, Desired};

/// Users are container names; attached are ids of instances the plan removes.
#[derive(Debug, Clone, Default)]
pub(super) struct Objects {
    /// Network → the applied containers that use it.
    pub create_networks: BTreeMap<String, Vec<String>>,
    pub create_volumes: BTreeMap<String, Vec<String>>,
    /// Network or volume → (attached instances the plan removes first, reason).
    pub remove_networks: BTreeMap<String, (Vec<String>, String)>,
    pub remove_volumes: BTreeMap<String, (Vec<String>, String)>,
    pub recreate_networks: BTreeMap<String, (Vec<String>, String)>,
    /// Network name → why its recreation waits.
    pub deferred: Vec<(String, String)>,
}

pub(super) fn plan(
    desired: &Desired,
    actual: &Actual,
    fates: &BTreeMap<String, Fate<'_>>,
) -> Objects {
    // Instances the plan removes, and the containers whose desired instance will exist.
    let mut removed: BTreeSet<&str> = actual.orphans.iter().map(|o| o.id.as_str()).collect();
    let mut net_users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut vol_users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, fate) in fates {
        match fate {
            Fate::Prune(p) => removed.extend(p.instances.iter().map(|i| i.id.as_str())),
            Fate::Apply(a) => {
                removed.extend(a.stale.iter().map(|i| i.id.as_str()));
                for n in networks_of(&a.want.spec) {
                    net_users.entry(n).or_default().push(name.clone());
                }
                for v in volumes_of(&a.want.spec) {
                    vol_users.entry(v).or_default().push(name.clone());
                }
            }
            Fate::Keep(_) => {}
        }
    }
    // Who is attached to what, split by whether the instance stays.
    let mut staying: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut leaving: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut vol_staying: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut vol_leaving: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in actual.containers.values().flat_map(|c| &c.instances) {
        let gone = removed.contains(i.id.as_str());
        for n in &i.networks {
            if gone {
                leaving.entry(n).or_default().push(i.id.clone());
            } else {
                staying.entry(n).or_default().push(&i.id);
            }
        }
        for v in &i.volumes {
            if gone {
                vol_leaving.entry(v).or_default().push(i.id.clone());
            } else {
                vol_staying.entry(v).or_default().push(&i.id);
            }
        }
    }

    let mut out = Objects::default();
    for (n, users) in &net_users {
        if !actual.networks.contains_key(n) {
            out.create_networks.insert(n.clone(), users.clone());
        }
    }
    for (v, users) in &vol_users {
        if !actual.volumes.contains(v) {
            out.create_volumes.insert(v.clone(), users.clone());
        }
    }
    for (n, have) in &actual.networks {
        let attached = leaving.get(n.as_str()).cloned().unwrap_or_default();
        let in_use = staying.get(n.as_str());
        match desired.networks.get(n) {
            Some(want) => {
                let Some(subnet) = &want.subnet else { continue };
                if have.subnet.as_ref() == Some(subnet) {
                    continue;
                }
                let old = have.subnet.as_deref().unwrap_or("unknown");
                let change = format!("subnet changed ({old} → {subnet})");
                match in_use {
                    None => {
                        out.recreate_networks.insert(n.clone(), (attached, change));
                    }
                    Some(ids) => out.deferred.push((
                        n.clone(),
                        format!(
                            "network {n}: {change}; recreated once {} no longer use it",
                            ids.join(", ")
                        ),
                    )),
                }
            }
            None if in_use.is_none() && !net_users.contains_key(n) => {
                let reason = "no container uses it".to_string();
                out.remove_networks.insert(n.clone(), (attached, reason));
            }
            None => {}
        }
    }
    if desired.prune_volumes {
        for v in &actual.volumes {
            let used = desired.volumes.contains(v)
                || vol_users.contains_key(v)
                || vol_staying.contains_key(v.as_str());
            if !used {
                let attached = vol_leaving.get(v.as_str()).cloned().unwrap_or_default();
                let reason = "no container uses it (prune_volumes)".to_string();
                out.remove_volumes.insert(v.clone(), (attached, reason));
            }
        }
    }
    out
}
