//! The instance's network: its CNI attachment in bridge mode (or the same hosts and
//! resolv.conf files, unattached, in `none` and `host` mode), the create- and
//! remove-network steps, and the peers' hosts files, rewritten once at the end of a
//! pass for every network whose members changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::PoisonError;

use berth_spec::types::NetworkMode;

use crate::network::AttachRequest;
use crate::runtime::state;
use crate::util::error_chain;

use super::error::at;
use super::{ContainerHost, StepError, failpoint};

/// What the bundle mounts of the instance's network, and its addresses.
pub(super) struct NetFiles {
    pub netns: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// Per network; empty until the CNI ADD ran.
    pub addresses: BTreeMap<String, String>,
    /// The CNI ADD is still to run, beside the runtime's create.
    pub deferred_attach: bool,
}

impl ContainerHost<'_> {
    /// Makes the instance's network: its namespace and files, and its attachment
    /// unless that can wait for the runtime's create.
    pub(super) fn network_files(
        &self,
        c: &berth_spec::Container,
        id: &str,
    ) -> Result<NetFiles, StepError> {
        // A bridge container's CNI ADD runs alongside the runtime's create when nothing
        // at create time needs its interfaces (`net.*` sysctls do): the namespace and
        // the hosts and resolv.conf files the bundle mounts are made first, and ADD
        // rewrites those files in place.
        let bridge = c.network_mode == NetworkMode::Bridge;
        let overlap = bridge && !c.sysctls.keys().any(|k| k.starts_with("net."));
        let (netns, hosts, resolv, addresses) = if overlap {
            let p = self.networks.prepare(id).map_err(at("network attach"))?;
            (
                Some(p.netns_path),
                Some(p.hosts),
                Some(p.resolv_conf),
                BTreeMap::new(),
            )
        } else if bridge {
            // The plan's create-network steps made the networks (`default` on demand).
            let a = self
                .networks
                .attach(&AttachRequest::for_container(id, c))
                .map_err(at("network attach"))?;
            failpoint("after-cni-add");
            let addrs = a
                .addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            (
                Some(a.netns_path),
                Some(a.hosts),
                Some(a.resolv_conf),
                addrs,
            )
        } else {
            // `none` and `host`: no attachment, but the same files in the same place.
            let (hosts, resolv) = self
                .networks
                .standalone_files(id, c)
                .map_err(at("network files"))?;
            (None, Some(hosts), Some(resolv), BTreeMap::new())
        };
        Ok(NetFiles {
            netns,
            hosts,
            resolv_conf: resolv,
            addresses,
            deferred_attach: overlap,
        })
    }

    /// The create-network step.
    pub(super) fn ensure_network(&self, name: &str) -> Result<(), StepError> {
        match self.spec.networks.get(name) {
            Some(def) => self.networks.ensure(def).map(drop),
            None => self.networks.ensure_network(name, None).map(drop),
        }
        .map_err(|err| at(format!("network `{name}`"))(err).into())
    }

    /// The remove-network step.
    pub(super) fn drop_network(&self, name: &str) -> Result<(), StepError> {
        self.networks
            .remove_network(name)
            .map(drop)
            .map_err(|err| at(format!("network `{name}`"))(err).into())
    }

    fn lock_touched(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.touched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Present while some peers' hosts files may be stale: from the first change of a
    /// pass's network membership until its end-of-pass refresh.
    fn peers_marker(&self) -> PathBuf {
        self.state_dir.join("cni").join("peers-stale")
    }

    /// Notes networks whose members changed; the first note of a pass leaves the marker.
    pub(super) fn touch(&self, networks: impl IntoIterator<Item = String>) {
        let mut touched = self.lock_touched();
        if touched.is_empty() {
            let marker = self.peers_marker();
            if let Err(err) = state::write_atomic(&marker, b"") {
                tracing::warn!("cannot write {}: {err}", marker.display());
            }
        }
        touched.extend(networks);
    }

    /// A container of `name` joined its networks' membership.
    pub(super) fn touch_networks_of(&self, name: &str) {
        if let Some(d) = self.desired.containers.get(name)
            && d.spec.network_mode == NetworkMode::Bridge
        {
            self.touch(d.spec.networks.iter().cloned());
        }
    }

    /// Rewrites the peers' hosts files of the networks whose members changed.
    pub(super) fn refresh_peers(&self) {
        let marker = self.peers_marker();
        let mut networks = std::mem::take(&mut *self.lock_touched());
        if networks.is_empty() && !marker.exists() {
            return;
        }
        // Also every network of a desired container: a pass killed between a start and
        // this point left the marker and its peers' files stale. Only files that read
        // wrong are written.
        for d in self.desired.containers.values() {
            if d.spec.network_mode == NetworkMode::Bridge {
                networks.extend(d.spec.networks.iter().cloned());
            }
        }
        let networks: Vec<String> = networks.into_iter().collect();
        match self.networks.refresh_peers("", &networks) {
            Ok(()) => {
                let _ = std::fs::remove_file(&marker);
            }
            Err(err) => tracing::warn!(
                "cannot update the peers' hosts files: {}",
                error_chain(&err)
            ),
        }
    }
}
