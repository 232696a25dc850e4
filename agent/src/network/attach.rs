//! Attaching an instance to its networks and detaching it, crash-safely.
//!
//! Attach: write the record → create the namespace → loopback ADD → per network:
//! record it (the exact list and capability values ADD gets) then ADD, keeping the
//! result → mark complete → write hosts and resolv.conf → rewrite the peers' hosts
//! files. Any failure rolls
//! back with a detach and returns the original error. Attaching an instance that is
//! already completely attached to the same networks returns the existing attachment;
//! a partial one (a crash mid-attach) is detached first.
//!
//! Detach: per network in reverse, DEL with the recorded list and result, dropping it
//! from the record once DEL succeeds → loopback DEL → delete the namespace → remove
//! the record → rewrite the peers' hosts files. A failed DEL keeps the record and the
//! namespace (the plugins need it to find the interface), so the next detach retries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use berth_spec::types::{ExtraHost, PortSpec, Protocol};
use berth_spec::{Container, DEFAULT_NETWORK};
use serde_json::{Value, json};

use super::cni::{self, ListCall};
use super::hosts::{self, Member};
use super::store::{self, AttachmentRecord, HostAlias, NetAttachment};
use super::{NetworkError, Networks, conflist, naming, resolv};
use crate::runtime::state;

/// What the executor asks for.
#[derive(Debug, Clone, Copy)]
pub struct AttachRequest<'a> {
    pub instance_id: &'a str,
    pub container: &'a str,
    pub hostname: &'a str,
    /// In order: the first gets `eth0`, the default route and the published ports.
    pub networks: &'a [String],
    pub ports: &'a [PortSpec],
    pub extra_hosts: &'a [ExtraHost],
}

impl<'a> AttachRequest<'a> {
    /// The request for a bridge-mode container.
    pub fn for_container(instance_id: &'a str, c: &'a Container) -> Self {
        AttachRequest {
            instance_id,
            container: &c.name,
            hostname: &c.hostname,
            networks: &c.networks,
            ports: &c.ports,
            extra_hosts: &c.extra_hosts,
        }
    }
}

/// What the executor gets back: paths for the OCI renderer, addresses for status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    pub instance_id: String,
    pub netns_path: PathBuf,
    pub addresses: BTreeMap<String, IpAddr>,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

/// The `portMappings` capability value for published ports.
pub fn port_mappings(ports: &[PortSpec]) -> Value {
    let maps: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut m = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": match p.protocol { Protocol::Tcp => "tcp", Protocol::Udp => "udp" },
            });
            if let Some(ip) = p.host_ip {
                m["hostIP"] = Value::from(ip.to_string());
            }
            m
        })
        .collect();
    json!({ "portMappings": maps })
}

/// The host's hosts or resolv.conf file, at most [`HOST_FILE_MAX`] bytes of it.
fn read_capped(p: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(p)?
        .take(HOST_FILE_MAX)
        .read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// How much of the host's hosts and resolv.conf files a container's copy takes.
const HOST_FILE_MAX: u64 = 256 << 10;

fn member(r: &AttachmentRecord) -> Member {
    Member {
        instance_id: r.instance_id.clone(),
        container: r.container.clone(),
        hostname: r.hostname.clone(),
        addresses: r
            .networks
            .iter()
            .filter_map(|n| n.address.map(|a| (n.network.clone(), a)))
            .collect(),
        extra_hosts: r
            .extra_hosts
            .iter()
            .map(|h| (h.host.clone(), h.ip))
            .collect(),
    }
}

impl Networks {
    fn save(&self, record: &AttachmentRecord) -> Result<(), NetworkError> {
        let path = self.paths.attachment(&record.instance_id);
        let text = serde_json::to_vec_pretty(record).unwrap_or_default();
        state::write_atomic(&path, &text).map_err(NetworkError::io("write", &path))
    }

    fn attachment_of(&self, r: &AttachmentRecord) -> Attachment {
        Attachment {
            instance_id: r.instance_id.clone(),
            netns_path: r.netns.clone(),
            addresses: r
                .networks
                .iter()
                .filter_map(|n| n.address.map(|a| (n.network.clone(), a)))
                .collect(),
            hosts: self.paths.hosts(&r.instance_id),
            resolv_conf: self.paths.resolv_conf(&r.instance_id),
        }
    }

    /// The attachment of an instance, read from its record (after a restart too).
    pub fn attachment(&self, instance_id: &str) -> Result<Option<Attachment>, NetworkError> {
        Self::check_name("instance id", instance_id)?;
        Ok(self
            .record(instance_id)?
            .filter(|r| r.complete)
            .map(|r| self.attachment_of(&r)))
    }

    /// Makes what a bundle mounts before the instance is attached: its namespace and
    /// its hosts and resolv.conf files, empty until [`Self::attach`] writes them in
    /// place (a bind-mounted file keeps its inode), so the runtime's create can run
    /// alongside the ADD.
    pub fn prepare(&self, instance_id: &str) -> Result<Attachment, NetworkError> {
        Self::check_name("instance id", instance_id)?;
        let netns = self.paths.netns(instance_id);
        self.host
            .create_netns(&netns)
            .map_err(|source| NetworkError::Host {
                container: instance_id.to_string(),
                source,
            })?;
        let (hosts, resolv_conf) = (
            self.paths.hosts(instance_id),
            self.paths.resolv_conf(instance_id),
        );
        for p in [&hosts, &resolv_conf] {
            if !p.exists() {
                state::write_atomic(p, b"").map_err(NetworkError::io("write", p))?;
            }
        }
        Ok(Attachment {
            instance_id: instance_id.to_string(),
            netns_path: netns,
            addresses: BTreeMap::new(),
            hosts,
            resolv_conf,
        })
    }

    /// Writes the hosts and resolv.conf files of a container that is not on a bridge
    /// (`network_mode` `none` or `host`), which no attachment prepares:
    /// - `none`: the localhost lines, `extra_hosts` and the container's own names on
    ///   127.0.1.1; the host's resolv.conf rewritten as for a bridge container.
    /// - `host`: `extra_hosts` and the container's own names, then the host's hosts
    ///   file; the host's resolv.conf as it is (its loopback servers are reachable
    ///   from the host's namespace), as Docker does.
    pub fn standalone_files(
        &self,
        instance_id: &str,
        c: &Container,
    ) -> Result<(PathBuf, PathBuf), NetworkError> {
        Self::check_name("instance id", instance_id)?;
        let read = |p: &PathBuf| read_capped(p).unwrap_or_default();
        let me = Member {
            instance_id: instance_id.to_string(),
            container: c.name.clone(),
            hostname: c.hostname.clone(),
            addresses: Vec::new(),
            extra_hosts: c
                .extra_hosts
                .iter()
                .map(|h| (h.host.clone(), h.ip))
                .collect(),
        };
        let host_mode = c.network_mode == berth_spec::types::NetworkMode::Host;
        let (hosts_text, resolv_text) = if host_mode {
            (
                hosts::render_on_host(&me, &read(&self.dns.host_hosts)),
                read(&self.dns.host_resolv),
            )
        } else {
            let r = resolv::rewrite(
                &read(&self.dns.host_resolv),
                read_capped(&self.dns.upstream).ok().as_deref(),
                &self.dns.fallback,
                false,
            );
            (hosts::render(&me, &[]), r.text)
        };
        let (hosts, resolv_conf) = (
            self.paths.hosts(instance_id),
            self.paths.resolv_conf(instance_id),
        );
        store::write_shared(&hosts, hosts_text.as_bytes())
            .map_err(NetworkError::io("write", &hosts))?;
        store::write_shared(&resolv_conf, resolv_text.as_bytes())
            .map_err(NetworkError::io("write", &resolv_conf))?;
        Ok((hosts, resolv_conf))
    }

    /// Gives the instance a namespace attached to its networks; see the module docs.
    pub fn attach(&self, req: &AttachRequest<'_>) -> Result<Attachment, NetworkError> {
        Self::check_name("instance id", req.instance_id)?;
        if req.networks.is_empty() {
            return Err(NetworkError::NoNetworks {
                container: req.container.to_string(),
                instance: req.instance_id.to_string(),
            });
        }
        if let Some(old) = self.record(req.instance_id)? {
            let same: Vec<&str> = old.networks.iter().map(|n| n.network.as_str()).collect();
            if old.complete && same == req.networks.iter().map(String::as_str).collect::<Vec<_>>() {
                // The files may not have been written before a crash.
                self.write_files(&old)?;
                return Ok(self.attachment_of(&old));
            }
            self.detach(req.instance_id)?;
        }
        let mut planned = Vec::new();
        for (i, name) in req.networks.iter().enumerate() {
            Self::check_name("network name", name)?;
            if name == DEFAULT_NETWORK && self.load(name)?.is_none() {
                // `default` is created on demand (DESIGN.md §3).
                self.ensure_network(name, None)?;
            }
            let (_, list) = self
                .load(name)?
                .ok_or_else(|| NetworkError::NotFound(name.clone()))?;
            let primary = i == 0;
            let publishes = primary && !req.ports.is_empty();
            planned.push(NetAttachment {
                network: name.clone(),
                ifname: naming::ifname(i),
                primary,
                config: conflist::for_attachment(&list, primary, publishes),
                runtime: if primary {
                    port_mappings(req.ports)
                } else {
                    json!({})
                },
                result: None,
                address: None,
                prefix: None,
            });
        }
        let mut record = AttachmentRecord {
            instance_id: req.instance_id.to_string(),
            container: req.container.to_string(),
            hostname: req.hostname.to_string(),
            netns: self.paths.netns(req.instance_id),
            extra_hosts: req
                .extra_hosts
                .iter()
                .map(|h| HostAlias {
                    host: h.host.clone(),
                    ip: h.ip,
                })
                .collect(),
            loopback: false,
            complete: false,
            networks: Vec::new(),
        };
        self.save(&record)?;
        if let Err(e) = self.add_all(&mut record, planned) {
            if let Err(rollback) = self.detach(req.instance_id) {
                tracing::warn!(instance = req.instance_id, error = %rollback,
                    "rollback of a failed attach left state behind; the next detach retries");
            }
            return Err(e);
        }
        self.write_files(&record)?;
        if !self.defer_peers {
            self.refresh_peers(&record.instance_id, req.networks)?;
        }
        Ok(self.attachment_of(&record))
    }

    /// Runs the ADDs, recording each network before its ADD starts (so a crash or a
    /// failure mid-ADD is cleaned up by DEL) and its result after.
    fn add_all(
        &self,
        record: &mut AttachmentRecord,
        planned: Vec<NetAttachment>,
    ) -> Result<(), NetworkError> {
        let container = record.container.clone();
        self.host
            .create_netns(&record.netns)
            .map_err(|source| NetworkError::Host {
                container: container.clone(),
                source,
            })?;
        let cni_err = |source| NetworkError::Cni {
            container: container.clone(),
            source,
        };
        let lo = conflist::loopback();
        let empty = json!({});
        let lo_call = ListCall {
            network: conflist::LOOPBACK_NAME,
            list: &lo,
            container_id: &record.instance_id,
            netns: Some(&record.netns),
            ifname: "lo",
            runtime: &empty,
        };
        cni::add(self.cni.as_ref(), &lo_call).map_err(cni_err)?;
        record.loopback = true;
        for (i, n) in planned.into_iter().enumerate() {
            record.networks.push(n);
            self.save(record)?;
            let n = &record.networks[i];
            let call = ListCall {
                network: &n.network,
                list: &n.config,
                container_id: &record.instance_id,
                netns: Some(&record.netns),
                ifname: &n.ifname,
                runtime: &n.runtime,
            };
            let result = cni::add(self.cni.as_ref(), &call);
            let n = &mut record.networks[i];
            // Keep what ADD returned even if it lacks an address: DEL needs it.
            let result = result.map_err(cni_err)?;
            let addr = cni::address(&result, &n.ifname);
            n.result = Some(result);
            n.address = addr.map(|(a, _)| a);
            n.prefix = addr.map(|(_, p)| p);
            if addr.is_none() {
                self.save(record)?;
                return Err(NetworkError::NoAddress {
                    container: container.clone(),
                    network: record.networks[i].network.clone(),
                });
            }
        }
        record.complete = true;
        self.save(record)
    }

    fn write_files(&self, record: &AttachmentRecord) -> Result<(), NetworkError> {
        let id = &record.instance_id;
        let read = |p: &PathBuf| std::fs::read_to_string(p).ok();
        let host = read(&self.dns.host_resolv).unwrap_or_default();
        let ipv6 = record
            .networks
            .iter()
            .any(|n| n.address.is_some_and(|a| a.is_ipv6()));
        let r = resolv::rewrite(
            &host,
            read(&self.dns.upstream).as_deref(),
            &self.dns.fallback,
            ipv6,
        );
        if let Some(w) = &r.warning {
            tracing::warn!(container = %record.container, "{w}; the container gets no nameserver");
        }
        let path = self.paths.resolv_conf(id);
        store::write_shared(&path, r.text.as_bytes()).map_err(NetworkError::io("write", &path))?;
        let all = self.members()?;
        self.write_hosts(&member(record), &all)
    }

    fn write_hosts(&self, me: &Member, all: &[Member]) -> Result<(), NetworkError> {
        let path = self.paths.hosts(&me.instance_id);
        store::write_shared(&path, hosts::render(me, all).as_bytes())
            .map_err(NetworkError::io("write", &path))
    }

    /// Rewrites the hosts files of every attached instance on one of `networks`, except
    /// `changed` itself. A file that already reads right is left alone, so refreshing
    /// every network of a pass after a crash costs reads, not writes.
    pub fn refresh_peers(&self, changed: &str, networks: &[String]) -> Result<(), NetworkError> {
        let all = self.members()?;
        for m in hosts::affected(networks, &all) {
            if m.instance_id == changed {
                continue;
            }
            let path = self.paths.hosts(&m.instance_id);
            let text = hosts::render(m, &all);
            if std::fs::read_to_string(&path).is_ok_and(|now| now == text) {
                continue;
            }
            store::write_shared(&path, text.as_bytes())
                .map_err(NetworkError::io("write", &path))?;
        }
        Ok(())
    }

    /// Every completely attached instance, as the hosts files see it.
    fn members(&self) -> Result<Vec<Member>, NetworkError> {
        Ok(self
            .records()?
            .iter()
            .filter(|r| r.complete)
            .map(member)
            .collect())
    }

    /// Rewrites the hosts file of `instance_id` from the current members, if it reads
    /// wrong: a container about to start sees the peers attached since its own attach
    /// (its dependencies among them).
    pub fn refresh_own(&self, instance_id: &str) -> Result<(), NetworkError> {
        Self::check_name("instance id", instance_id)?;
        let all = self.members()?;
        let Some(me) = all.iter().find(|m| m.instance_id == instance_id) else {
            return Ok(());
        };
        let path = self.paths.hosts(instance_id);
        let text = hosts::render(me, &all);
        if std::fs::read_to_string(&path).is_ok_and(|now| now == text) {
            return Ok(());
        }
        store::write_shared(&path, text.as_bytes()).map_err(NetworkError::io("write", &path))
    }

    /// Tears down everything [`Self::attach`] set up for the instance; see the module
    /// docs. Detaching an unknown instance only makes sure its namespace is gone.
    pub fn detach(&self, instance_id: &str) -> Result<(), NetworkError> {
        Self::check_name("instance id", instance_id)?;
        let Some(mut record) = self.record(instance_id)? else {
            let path = self.paths.netns(instance_id);
            return self
                .host
                .delete_netns(&path)
                .map_err(|source| NetworkError::Host {
                    container: instance_id.to_string(),
                    source,
                });
        };
        let container = record.container.clone();
        if !record.complete && !self.host.wait_plugins_done(instance_id, PLUGIN_WAIT) {
            tracing::warn!(
                instance = instance_id,
                "a CNI plugin of an earlier, interrupted attach still runs after {PLUGIN_WAIT:?}; detaching anyway"
            );
        }
        let netns_live = self.host.netns_exists(&record.netns);
        let netns = netns_live.then_some(record.netns.as_path());
        let mut first = None;
        let mut kept = Vec::new();
        let networks = std::mem::take(&mut record.networks);
        let names: Vec<String> = networks.iter().map(|n| n.network.clone()).collect();
        for n in networks.into_iter().rev() {
            let call = ListCall {
                network: &n.network,
                list: &n.config,
                container_id: instance_id,
                netns,
                ifname: &n.ifname,
                runtime: &n.runtime,
            };
            // An ADD cut short left no result: rebuild what DEL needs from the IPAM's
            // allocation, or the firewall plugin finds no address to clean up.
            let prev = n
                .result
                .clone()
                .or_else(|| recovered_result(&n, instance_id, netns));
            if let Err(source) = cni::del(self.cni.as_ref(), &call, prev.as_ref()) {
                first.get_or_insert(NetworkError::Cni {
                    container: container.clone(),
                    source,
                });
                kept.push(n);
            }
        }
        kept.reverse();
        record.networks = kept;
        record.complete = false;
        if let Some(e) = first {
            self.save(&record)?;
            return Err(e);
        }
        if record.loopback && netns_live {
            let lo = conflist::loopback();
            let empty = json!({});
            let call = ListCall {
                network: conflist::LOOPBACK_NAME,
                list: &lo,
                container_id: instance_id,
                netns,
                ifname: "lo",
                runtime: &empty,
            };
            // Nothing outlives the namespace on loopback: a failure here is harmless.
            if let Err(e) = cni::del(self.cni.as_ref(), &call, None) {
                tracing::warn!(instance = instance_id, error = %e, "loopback DEL failed");
            }
        }
        self.host
            .delete_netns(&record.netns)
            .map_err(|source| NetworkError::Host {
                container: container.clone(),
                source,
            })?;
        let path = self.paths.attachment(instance_id);
        store::remove_file(&path).map_err(NetworkError::io("remove", &path))?;
        if self.defer_peers {
            return Ok(());
        }
        self.refresh_peers(instance_id, &names)
    }
}

/// How long a detach waits for a plugin an interrupted attach left running.
const PLUGIN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The result ADD would have returned for `n`, rebuilt from host-local's allocations
/// (`<dataDir>/<network>/<ip>`, holding the container id and interface name) when the
/// ADD was cut short before its result was recorded. `None` when nothing is allocated.
pub(crate) fn recovered_result(
    n: &NetAttachment,
    instance_id: &str,
    netns: Option<&std::path::Path>,
) -> Option<Value> {
    let plugins = n.config.get("plugins")?.as_array()?;
    let ipam = plugins.iter().find_map(|p| p.get("ipam"))?;
    if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
        return None;
    }
    let dir =
        std::path::Path::new(ipam.get("dataDir")?.as_str()?).join(n.config.get("name")?.as_str()?);
    let prefixes: Vec<berth_spec::types::Cidr> = ipam
        .pointer("/ranges/0")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| berth_spec::types::parse_cidr(r.get("subnet")?.as_str()?).ok())
        .collect();
    let mut ips = Vec::new();
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let Ok(ip) = entry.file_name().to_string_lossy().parse::<IpAddr>() else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines().map(str::trim);
        let owner = lines.next().unwrap_or_default();
        let ifname = lines.next();
        if owner != instance_id || ifname.is_some_and(|i| i != n.ifname) {
            continue;
        }
        let host = berth_spec::types::Cidr {
            addr: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        };
        let prefix = prefixes
            .iter()
            .find(|c| c.overlaps(&host))
            .map_or(host.prefix, |c| c.prefix);
        ips.push(json!({ "address": format!("{ip}/{prefix}"), "interface": 0 }));
    }
    if ips.is_empty() {
        return None;
    }
    let mut iface = json!({ "name": n.ifname });
    if let Some(ns) = netns {
        iface["sandbox"] = json!(ns.to_string_lossy());
    }
    Some(json!({
        "cniVersion": n.config.get("cniVersion").cloned().unwrap_or(json!("1.0.0")),
        "interfaces": [iface],
        "ips": ips,
    }))
}

#[cfg(test)]
mod recovered_tests {
    use super::*;

    fn attachment(data_dir: &std::path::Path) -> NetAttachment {
        NetAttachment {
            network: "front".into(),
            ifname: "eth0".into(),
            primary: true,
            config: json!({
                "cniVersion": "1.0.0",
                "name": "bthfront",
                "plugins": [
                    { "type": "bridge", "ipam": {
                        "type": "host-local",
                        "dataDir": data_dir.to_string_lossy(),
                        "ranges": [[{ "subnet": "10.250.3.0/24" }]],
                    }},
                    { "type": "firewall", "backend": "iptables" },
                ],
            }),
            runtime: json!({}),
            result: None,
            address: None,
            prefix: None,
        }
    }

    #[test]
    fn an_interrupted_add_is_rebuilt_from_the_ipam_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("bthfront");
        std::fs::create_dir_all(&net).unwrap();
        // host-local's files: the allocated address as the name; id and interface inside.
        std::fs::write(net.join("10.250.3.7"), "web-1\r\neth0").unwrap();
        std::fs::write(net.join("10.250.3.8"), "db-1\r\neth0").unwrap();
        std::fs::write(net.join("10.250.3.9"), "web-1\r\neth1").unwrap();
        std::fs::write(net.join("last_reserved_ip.0"), "10.250.3.9").unwrap();
        let ns = std::path::Path::new("/run/berth/netns/web-1");
        let r = recovered_result(&attachment(dir.path()), "web-1", Some(ns)).unwrap();
        assert_eq!(
            r["ips"],
            json!([{ "address": "10.250.3.7/24", "interface": 0 }])
        );
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["interfaces"][0]["sandbox"], "/run/berth/netns/web-1");
        assert_eq!(r["cniVersion"], "1.0.0");
    }

    #[test]
    fn nothing_allocated_gives_no_result() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            recovered_result(&attachment(dir.path()), "web-1", None),
            None
        );
        std::fs::create_dir_all(dir.path().join("bthfront")).unwrap();
        std::fs::write(dir.path().join("bthfront/10.250.3.8"), "db-1\r\neth0").unwrap();
        assert_eq!(
            recovered_result(&attachment(dir.path()), "web-1", None),
            None
        );
    }
}
