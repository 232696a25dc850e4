//! CNI network configuration lists (pure): what berth writes to
//! `<state_dir>/cni/<network>.conflist`, reads back, and hands to the plugins.
//!
//! One conflist per berth network, in libcni's format (so `cnitool` can use it too):
//! `bridge` (gateway on the bridge, masquerade, hairpin) with `host-local` IPAM keeping
//! its allocations under `<state_dir>/cni/ipam`, then `portmap` (published ports, given
//! through the `portMappings` capability) and `firewall` (lets the container's traffic
//! through the host's FORWARD chain). The file carries the default route; a container
//! gets it only through its first network, so [`for_attachment`] strips it for the
//! others. The loopback interface is brought up by a separate one-plugin list
//! ([`loopback`]) once per namespace.

use std::net::IpAddr;
use std::path::Path;

use berth_spec::types::{Cidr, parse_cidr};
use serde_json::{Value, json};

/// The CNI spec version berth speaks (containernetworking-plugins ≥ 1.0 support it).
pub const CNI_VERSION: &str = "1.0.0";

/// CNI name of the loopback list; the plugin keeps no state under it.
pub const LOOPBACK_NAME: &str = "berth-loopback";

/// What berth records about a network: the rest of the conflist follows from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    /// The berth network name (`default`, `front`).
    pub name: String,
    /// The bridge, which is also the CNI network name (see `naming`).
    pub bridge: String,
    pub subnet: Cidr,
}

impl NetworkDef {
    /// The CNI network name (host-local's directory, iptables comments).
    pub fn cni_name(&self) -> &str {
        &self.bridge
    }
}

fn default_route(subnet: &Cidr) -> &'static str {
    match subnet.addr {
        IpAddr::V4(_) => "0.0.0.0/0",
        IpAddr::V6(_) => "::/0",
    }
}

/// The conflist of a network, with host-local keeping its data under `ipam_dir`.
pub fn render(def: &NetworkDef, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": def.cni_name(),
        "plugins": [
            {
                "type": "bridge",
                "bridge": def.bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir.to_string_lossy(),
                    "ranges": [[{ "subnet": def.subnet.to_string() }]],
                    "routes": [{ "dst": default_route(&def.subnet) }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "firewall", "backend": "iptables" },
        ],
    })
}

/// What a stored conflist lacks that berth wrote into it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflistError {
    #[error("no `plugins` list")]
    NoPlugins,
    #[error("no bridge plugin")]
    NoBridge,
    #[error("the bridge plugin names no bridge")]
    NoBridgeName,
    #[error("the bridge plugin's IPAM has no subnet")]
    NoSubnet,
    #[error("{0}")]
    BadSubnet(String),
}

/// Reads back what [`render`] wrote for the berth network `name`.
pub fn parse(name: &str, list: &Value) -> Result<NetworkDef, ConflistError> {
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or(ConflistError::NoPlugins)?;
    let bridge = plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
        .ok_or(ConflistError::NoBridge)?;
    let bridge_name = bridge
        .get("bridge")
        .and_then(Value::as_str)
        .ok_or(ConflistError::NoBridgeName)?;
    let subnet = bridge
        .pointer("/ipam/ranges/0/0/subnet")
        .and_then(Value::as_str)
        .ok_or(ConflistError::NoSubnet)?;
    Ok(NetworkDef {
        name: name.to_string(),
        bridge: bridge_name.to_string(),
        subnet: parse_cidr(subnet).map_err(ConflistError::BadSubnet)?,
    })
}

/// The list used for one attachment: the stored one, without the default route unless
/// this is the container's first network, and without `portmap` when the attachment
/// publishes no port. Dropping portmap there is not only tidy: its DEL scans and
/// rewrites the NAT chains whether or not ADD mapped anything (≈ 140 ms of iptables
/// calls on the reference machine), and ADD and DEL always use the recorded list, so
/// they stay symmetric.
pub fn for_attachment(list: &Value, primary: bool, publishes: bool) -> Value {
    let mut list = list.clone();
    if let Some(plugins) = list.get_mut("plugins").and_then(Value::as_array_mut) {
        if !publishes {
            plugins.retain(|p| p.get("type").and_then(Value::as_str) != Some("portmap"));
        }
        if !primary {
            for p in plugins {
                if let Some(ipam) = p.get_mut("ipam").and_then(Value::as_object_mut) {
                    ipam.remove("routes");
                }
            }
        }
    }
    list
}

/// The one-plugin list that brings `lo` up in a namespace.
pub fn loopback() -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": LOOPBACK_NAME,
        "plugins": [{ "type": "loopback" }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> NetworkDef {
        NetworkDef {
            name: "front".into(),
            bridge: "bth0123456789ab".into(),
            subnet: parse_cidr("10.89.1.0/24").unwrap(),
        }
    }

    #[test]
    fn conflist_matches_golden() {
        let got = render(&def(), Path::new("/var/lib/berth/cni/ipam"));
        let golden: Value = serde_json::from_str(include_str!("testdata/front.conflist")).unwrap();
        assert_eq!(
            got,
            golden,
            "{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }

    #[test]
    fn conflist_round_trips() {
        let v = render(&def(), Path::new("/s/cni/ipam"));
        assert_eq!(parse("front", &v).unwrap(), def());
    }

    #[test]
    fn ipv6_subnets_route_the_v6_default() {
        let mut d = def();
        d.subnet = parse_cidr("fd00:89::/64").unwrap();
        let v = render(&d, Path::new("/s"));
        assert_eq!(v.pointer("/plugins/0/ipam/routes/0/dst").unwrap(), "::/0");
    }

    #[test]
    fn parse_names_what_is_missing() {
        let err = parse("x", &json!({"plugins": [{"type": "portmap"}]})).unwrap_err();
        assert_eq!(err.to_string(), "no bridge plugin");
        let err = parse("x", &json!({})).unwrap_err();
        assert_eq!(err.to_string(), "no `plugins` list");
    }

    #[test]
    fn only_the_first_network_keeps_the_default_route() {
        let v = render(&def(), Path::new("/s"));
        assert_eq!(for_attachment(&v, true, true), v);
        let second = for_attachment(&v, false, false);
        assert!(second.pointer("/plugins/0/ipam/routes").is_none());
        assert_eq!(
            second.pointer("/plugins/0/ipam/ranges"),
            v.pointer("/plugins/0/ipam/ranges")
        );
    }

    #[test]
    fn portmap_runs_only_for_attachments_that_publish() {
        let v = render(&def(), Path::new("/s"));
        let types = |l: &Value| -> Vec<String> {
            l["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["type"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            types(&for_attachment(&v, true, true)),
            ["bridge", "portmap", "firewall"]
        );
        assert_eq!(
            types(&for_attachment(&v, true, false)),
            ["bridge", "firewall"]
        );
    }
}
