//! Leak counting (DESIGN.md §7): what exists on the host that no attachment record
//! explains. The CNI bridge plugin names the host-side veths at random, so veths are
//! counted per bridge against the records of that network; namespaces are matched to
//! records by instance id. The kernel removes a veth pair with its namespace, so a veth
//! on a bridge beyond the recorded count means a namespace berth no longer tracks.
//! `detach(id)` cleans up a stray namespace or a record left by a crash.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{NetworkError, Networks, store};

/// What [`Networks::audit`] found; empty when nothing leaked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeakReport {
    /// Namespace files under `<run_dir>/netns` without an attachment record.
    pub stray_netns: Vec<String>,
    /// Records whose namespace is gone (their CNI state may still need a DEL).
    pub records_without_netns: Vec<String>,
    /// Per network: interfaces on its bridge beyond the recorded attachments.
    pub extra_bridge_members: BTreeMap<String, usize>,
}

impl LeakReport {
    pub fn is_clean(&self) -> bool {
        self.stray_netns.is_empty()
            && self.records_without_netns.is_empty()
            && self.extra_bridge_members.is_empty()
    }
}

impl Networks {
    /// Counts leaks; see the module docs.
    pub fn audit(&self) -> Result<LeakReport, NetworkError> {
        let records = self.records()?;
        let mut report = LeakReport::default();
        let dir = self.paths.run_dir.join("netns");
        for id in store::stems(&dir, "").map_err(NetworkError::io("list", &dir))? {
            if !records.iter().any(|r| r.instance_id == id) {
                report.stray_netns.push(id);
            }
        }
        for r in &records {
            if !self.host.netns_exists(&r.netns) {
                report.records_without_netns.push(r.instance_id.clone());
            }
        }
        for info in self.list()? {
            let recorded = info.containers.len();
            let members = self.host.bridge_members(&info.bridge);
            if members > recorded {
                report
                    .extra_bridge_members
                    .insert(info.name.clone(), members - recorded);
            }
        }
        Ok(report)
    }
}
