//! Container networking: named network namespaces, CNI bridge networks, and the
//! `/etc/hosts` and `/etc/resolv.conf` files of each instance (DESIGN.md §3, §7).
//!
//! [`Networks`] is the executor's entry point. A berth network is a CNI conflist
//! (bridge + host-local, portmap, firewall) under `<state_dir>/cni/`; the bridge itself
//! appears on the first attachment. [`Networks::attach`] gives an instance a namespace
//! at `<run_dir>/netns/<id>` (passed to the OCI renderer), runs loopback then each
//! network's ADD (`eth0`, `eth1`, … in network order; the first carries the default
//! route and the published ports), and writes the hosts and resolv.conf files to bind
//! into the container, rewriting those of the peers on its networks.
//! [`Networks::detach`] runs DEL in reverse and deletes the namespace; it is
//! idempotent and works from the on-disk record after an agent restart.
//! [`Networks::audit`] counts leaks: namespaces, records and bridge members that do
//! not match.
//!
//! Layout: pure parts — [`naming`] (bridge names, subnet pool), [`conflist`], [`cni`]
//! sequencing over the [`cni::CniExec`] trait, [`hosts`], [`resolv`] — and thin side
//! effects: [`exec`] (running plugins), [`host`] ([`host::NetHost`]: [`netns`],
//! [`netlink`]), [`store`] (records and atomic files). Callers hold the state
//! directory's lock for the length of a pass; nothing here locks.

mod attach;
pub mod audit;
pub mod cni;
pub mod conflist;
mod error;
pub mod exec;
pub mod host;
pub mod hosts;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod resolv;
pub mod store;

#[cfg(test)]
mod api_tests;
#[cfg(test)]
pub(crate) mod fake;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_spec::DEFAULT_NETWORK;
use berth_spec::types::Cidr;
use serde::Serialize;

pub use attach::AttachRequest;
use cni::CniExec;
use conflist::NetworkDef;
pub use error::NetworkError;
use host::{LinuxNet, NetHost};
use store::{AttachmentRecord, Paths};

/// Where DNS settings for containers come from (see [`resolv`]).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub host_resolv: PathBuf,
    /// The host's hosts file, which a `host`-mode container's starts from.
    pub host_hosts: PathBuf,
    pub upstream: PathBuf,
    /// Used when the host only lists loopback servers and no upstream file exists.
    pub fallback: Vec<IpAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            host_resolv: PathBuf::from("/etc/resolv.conf"),
            host_hosts: PathBuf::from("/etc/hosts"),
            upstream: PathBuf::from(resolv::SYSTEMD_UPSTREAM),
            fallback: Vec::new(),
        }
    }
}

/// A container's endpoint on a network, as `inspect` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Endpoint {
    pub instance_id: String,
    pub container: String,
    pub interface: String,
    /// `address/prefix`, absent while ADD has not completed.
    pub address: Option<String>,
}

/// A network as `berth network ls|inspect` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkInfo {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    /// The name the CNI plugins see (iptables comments, host-local's directory).
    pub cni_name: String,
    /// Whether the bridge exists now (it appears on the first attachment).
    pub bridge_up: bool,
    pub conflist: PathBuf,
    pub containers: Vec<Endpoint>,
}

/// The networks of one state directory.
#[derive(Debug)]
pub struct Networks {
    paths: Paths,
    default_subnet: Cidr,
    cni: Box<dyn CniExec>,
    host: Box<dyn NetHost>,
    dns: DnsConfig,
    /// Attach and detach leave the peers' hosts files to the caller's
    /// [`Networks::refresh_peers`] (one pass over many containers rewrites them once).
    defer_peers: bool,
    /// Held while a network is created or removed: steps run side by side, and two new
    /// networks must not pick the same free subnet.
    define: std::sync::Mutex<()>,
}

impl Networks {
    /// Networks on the real host, with plugins looked up in `cni_path`.
    pub fn new(
        state_dir: &Path,
        run_dir: &Path,
        default_subnet: Cidr,
        cni_path: Vec<PathBuf>,
    ) -> Self {
        Self::with_backends(
            state_dir,
            run_dir,
            default_subnet,
            Box::new(exec::PluginExec::new(cni_path)),
            Box::new(LinuxNet),
        )
    }

    /// Networks over the given side effects (tests pass fakes).
    pub fn with_backends(
        state_dir: &Path,
        run_dir: &Path,
        default_subnet: Cidr,
        cni: Box<dyn CniExec>,
        host: Box<dyn NetHost>,
    ) -> Self {
        Networks {
            paths: Paths {
                state_dir: state_dir.to_path_buf(),
                run_dir: run_dir.to_path_buf(),
            },
            default_subnet,
            cni,
            host,
            dns: DnsConfig::default(),
            defer_peers: false,
            define: std::sync::Mutex::new(()),
        }
    }

    /// Attach and detach no longer rewrite the peers' hosts files; the caller calls
    /// [`Networks::refresh_peers`] once its batch is done.
    pub fn deferring_peers(mut self) -> Self {
        self.defer_peers = true;
        self
    }

    /// Whether peers' hosts files are left to the caller.
    pub fn defers_peers(&self) -> bool {
        self.defer_peers
    }

    /// Replaces where DNS settings come from.
    #[cfg(test)]
    pub fn with_dns(mut self, dns: DnsConfig) -> Self {
        self.dns = dns;
        self
    }

    #[cfg(test)]
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    fn check_name(what: &'static str, name: &str) -> Result<(), NetworkError> {
        if store::safe_component(name) {
            Ok(())
        } else {
            Err(NetworkError::InvalidName {
                what,
                name: name.to_string(),
            })
        }
    }

    /// The stored definition and conflist of `name`, if the network exists.
    fn load(&self, name: &str) -> Result<Option<(NetworkDef, serde_json::Value)>, NetworkError> {
        let path = self.paths.conflist(name);
        let Some(bytes) = store::read_optional(&path).map_err(NetworkError::io("read", &path))?
        else {
            return Ok(None);
        };
        let corrupt = |reason: String| NetworkError::Corrupt {
            what: "network conflist",
            path: path.clone(),
            reason,
        };
        let list: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let def = conflist::parse(name, &list).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some((def, list)))
    }

    fn all_defs(&self) -> Result<Vec<NetworkDef>, NetworkError> {
        let dir = self.paths.cni_dir();
        let names = store::stems(&dir, ".conflist").map_err(NetworkError::io("list", &dir))?;
        let mut out = Vec::new();
        for name in names {
            if let Some((def, _)) = self.load(&name)? {
                out.push(def);
            }
        }
        Ok(out)
    }

    /// Creates or updates the network `name`. Its subnet is `subnet`; else, for
    /// `default`, `runtime.default_subnet`; else the one it already has; else the first
    /// free /24 of [`naming::POOL`]. Changing the subnet of a network in use is refused.
    pub fn ensure_network(
        &self,
        name: &str,
        subnet: Option<Cidr>,
    ) -> Result<NetworkInfo, NetworkError> {
        Self::check_name("network name", name)?;
        let _define = self
            .define
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let existing = self.load(name)?;
        let others: Vec<NetworkDef> = self
            .all_defs()?
            .into_iter()
            .filter(|d| d.name != name)
            .collect();
        let mut reserved: Vec<(String, Cidr)> =
            others.iter().map(|d| (d.name.clone(), d.subnet)).collect();
        if name != DEFAULT_NETWORK && !others.iter().any(|d| d.name == DEFAULT_NETWORK) {
            reserved.push((DEFAULT_NETWORK.to_string(), self.default_subnet));
        }
        let wanted = match (subnet, name == DEFAULT_NETWORK, &existing) {
            (Some(s), _, _) => s,
            (None, true, _) => self.default_subnet,
            (None, false, Some((def, _))) => def.subnet,
            (None, false, None) => {
                let taken: Vec<Cidr> = reserved.iter().map(|(_, c)| *c).collect();
                naming::allocate_subnet(&naming::POOL, naming::POOL_PREFIX, &taken).ok_or_else(
                    || NetworkError::PoolExhausted {
                        network: name.to_string(),
                        prefix: naming::POOL_PREFIX,
                        pool: naming::POOL,
                    },
                )?
            }
        };
        if let Some((other, other_subnet)) = reserved.iter().find(|(_, c)| c.overlaps(&wanted)) {
            return Err(NetworkError::Overlap {
                network: name.to_string(),
                subnet: wanted,
                other: other.clone(),
                other_subnet: *other_subnet,
            });
        }
        let def = NetworkDef {
            name: name.to_string(),
            bridge: naming::bridge_name(&self.paths.state_dir, name),
            subnet: wanted,
        };
        let list = conflist::render(&def, &self.paths.ipam_dir());
        if let Some((old, old_list)) = &existing {
            if *old_list == list {
                return self.inspect(name);
            }
            let users = self.users_of(name)?;
            if !users.is_empty() {
                return Err(NetworkError::InUse {
                    network: name.to_string(),
                    instances: users,
                });
            }
            // The old bridge carries the old gateway address: start afresh.
            self.drop_bridge_and_ipam(old)?;
        }
        let path = self.paths.conflist(name);
        let text = serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
        crate::runtime::state::write_atomic(&path, text.as_bytes())
            .map_err(NetworkError::io("write", &path))?;
        tracing::info!(network = name, subnet = %def.subnet, bridge = %def.bridge, "network ready");
        self.inspect(name)
    }

    /// [`Self::ensure_network`] for a spec object.
    pub fn ensure(&self, network: &berth_spec::Network) -> Result<NetworkInfo, NetworkError> {
        self.ensure_network(&network.name, network.subnet)
    }

    fn drop_bridge_and_ipam(&self, def: &NetworkDef) -> Result<(), NetworkError> {
        self.host
            .delete_link(&def.bridge)
            .map_err(|source| NetworkError::Link {
                network: def.name.clone(),
                source,
            })?;
        let ipam = self.paths.ipam_dir().join(def.cni_name());
        store::remove_dir_all(&ipam).map_err(NetworkError::io("remove", ipam))
    }

    /// Removes the network: its bridge, host-local data and conflist. Refused while an
    /// instance is attached; `Ok(false)` when there was no such network.
    pub fn remove_network(&self, name: &str) -> Result<bool, NetworkError> {
        Self::check_name("network name", name)?;
        let _define = self
            .define
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let users = self.users_of(name)?;
        if !users.is_empty() {
            return Err(NetworkError::InUse {
                network: name.to_string(),
                instances: users,
            });
        }
        let def = match self.load(name)? {
            Some((def, _)) => def,
            // Gone already; the bridge may still be there after a crash mid-removal.
            None => NetworkDef {
                name: name.to_string(),
                bridge: naming::bridge_name(&self.paths.state_dir, name),
                subnet: self.default_subnet,
            },
        };
        let existed = self.paths.conflist(name).exists();
        self.drop_bridge_and_ipam(&def)?;
        let path = self.paths.conflist(name);
        store::remove_file(&path).map_err(NetworkError::io("remove", &path))?;
        if existed {
            tracing::info!(network = name, bridge = %def.bridge, "network removed");
        }
        Ok(existed)
    }

    /// Every attachment record, by instance id.
    fn records(&self) -> Result<Vec<AttachmentRecord>, NetworkError> {
        let dir = self.paths.attachments_dir();
        let ids = store::stems(&dir, ".json").map_err(NetworkError::io("list", &dir))?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(r) = self.record(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn record(&self, id: &str) -> Result<Option<AttachmentRecord>, NetworkError> {
        let path = self.paths.attachment(id);
        let Some(bytes) = store::read_optional(&path).map_err(NetworkError::io("read", &path))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| NetworkError::Corrupt {
                what: "attachment record",
                path,
                reason: e.to_string(),
            })
    }

    fn users_of(&self, network: &str) -> Result<Vec<String>, NetworkError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.networks.iter().any(|n| n.network == network))
            .map(|r| r.instance_id)
            .collect())
    }

    fn info(&self, def: &NetworkDef, records: &[AttachmentRecord]) -> NetworkInfo {
        let containers = records
            .iter()
            .flat_map(|r| {
                r.networks
                    .iter()
                    .filter(|n| n.network == def.name)
                    .map(move |n| Endpoint {
                        instance_id: r.instance_id.clone(),
                        container: r.container.clone(),
                        interface: n.ifname.clone(),
                        address: n.address.zip(n.prefix).map(|(a, p)| format!("{a}/{p}")),
                    })
            })
            .collect();
        NetworkInfo {
            name: def.name.clone(),
            subnet: def.subnet.to_string(),
            gateway: naming::gateway(&def.subnet).to_string(),
            bridge: def.bridge.clone(),
            cni_name: def.cni_name().to_string(),
            bridge_up: self.host.link_exists(&def.bridge),
            conflist: self.paths.conflist(&def.name),
            containers,
        }
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<NetworkInfo>, NetworkError> {
        let records = self.records()?;
        Ok(self
            .all_defs()?
            .iter()
            .map(|d| self.info(d, &records))
            .collect())
    }

    /// One network.
    pub fn inspect(&self, name: &str) -> Result<NetworkInfo, NetworkError> {
        Self::check_name("network name", name)?;
        let (def, _) = self
            .load(name)?
            .ok_or_else(|| NetworkError::NotFound(name.to_string()))?;
        Ok(self.info(&def, &self.records()?))
    }
}
