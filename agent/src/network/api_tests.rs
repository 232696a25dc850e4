//! [`Networks`] over the fakes: network creation and subnet choice, attach/detach
//! sequencing, records that survive a restart, rollback, retries, hosts files of peers.

use std::path::Path;
use std::sync::Arc;

use super::audit::LeakReport;
use super::cni::{CniArgs, CniCommand, CniExec, ExecFailure};
use super::fake::{FakeCni, FakeHost};
use super::host::{NetHost, NetHostError};
use super::*;
use crate::util::error_chain;
use berth_spec::types::{ExtraHost, PortSpec, Protocol, parse_cidr};

/// Shares one fake between the `Networks` under test and the assertions.
#[derive(Debug, Clone)]
struct Shared<T>(Arc<T>);

impl CniExec for Shared<FakeCni> {
    fn exec(&self, p: &str, a: &CniArgs<'_>, s: &[u8]) -> Result<Vec<u8>, ExecFailure> {
        self.0.exec(p, a, s)
    }
}

impl NetHost for Shared<FakeHost> {
    fn create_netns(&self, p: &Path) -> Result<(), NetHostError> {
        self.0.create_netns(p)
    }
    fn delete_netns(&self, p: &Path) -> Result<(), NetHostError> {
        self.0.delete_netns(p)
    }
    fn netns_exists(&self, p: &Path) -> bool {
        self.0.netns_exists(p)
    }
    fn link_exists(&self, n: &str) -> bool {
        self.0.link_exists(n)
    }
    fn delete_link(&self, n: &str) -> Result<bool, NetHostError> {
        self.0.delete_link(n)
    }
    fn bridge_members(&self, n: &str) -> usize {
        self.0.bridge_members(n)
    }
}

struct World {
    dir: tempfile::TempDir,
    cni: Arc<FakeCni>,
    host: Arc<FakeHost>,
}

impl World {
    fn new() -> Self {
        World {
            dir: tempfile::tempdir().unwrap(),
            cni: Arc::default(),
            host: Arc::default(),
        }
    }

    /// A fresh `Networks` over the same directories and fakes (an agent restart).
    fn nets(&self) -> Networks {
        let d = self.dir.path();
        std::fs::write(d.join("resolv.conf"), "nameserver 127.0.0.53\nsearch lab\n").unwrap();
        std::fs::write(d.join("upstream.conf"), "nameserver 192.0.2.53\n").unwrap();
        Networks::with_backends(
            &d.join("state"),
            &d.join("run"),
            parse_cidr("10.88.0.0/16").unwrap(),
            Box::new(Shared(self.cni.clone())),
            Box::new(Shared(self.host.clone())),
        )
        .with_dns(DnsConfig {
            host_resolv: d.join("resolv.conf"),
            host_hosts: d.join("hosts"),
            upstream: d.join("upstream.conf"),
            fallback: Vec::new(),
        })
    }
}

fn req<'a>(
    id: &'a str,
    name: &'a str,
    networks: &'a [String],
    ports: &'a [PortSpec],
) -> AttachRequest<'a> {
    AttachRequest {
        instance_id: id,
        container: name,
        hostname: name,
        networks,
        ports,
        extra_hosts: &[],
    }
}

fn nets(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn subnets_default_explicit_and_allocated() {
    let w = World::new();
    let n = w.nets();
    assert_eq!(
        n.ensure_network("default", None).unwrap().subnet,
        "10.88.0.0/16"
    );
    assert_eq!(n.ensure_network("a", None).unwrap().subnet, "10.89.0.0/24");
    assert_eq!(
        n.ensure_network("b", Some(parse_cidr("10.89.1.0/24").unwrap()))
            .unwrap()
            .subnet,
        "10.89.1.0/24"
    );
    assert_eq!(n.ensure_network("c", None).unwrap().subnet, "10.89.2.0/24");
    // Kept on re-ensure, and after a restart.
    assert_eq!(
        w.nets().ensure_network("a", None).unwrap().subnet,
        "10.89.0.0/24"
    );
    let err = n
        .ensure_network("d", Some(parse_cidr("10.88.5.0/24").unwrap()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "network `d`: subnet 10.88.5.0/24 overlaps network `default` (10.88.0.0/16)"
    );
    let names: Vec<String> = n.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["a", "b", "c", "default"]);
    let info = n.inspect("a").unwrap();
    assert_eq!(
        info.bridge,
        naming::bridge_name(&w.dir.path().join("state"), "a")
    );
    assert_eq!(info.gateway, "10.89.0.1");
    assert!(matches!(n.inspect("zzz"), Err(NetworkError::NotFound(_))));
    assert!(matches!(
        n.ensure_network("../x", None),
        Err(NetworkError::InvalidName { .. })
    ));
}

#[test]
fn the_default_subnet_is_reserved_before_the_default_network_exists() {
    let w = World::new();
    let d = w.dir.path();
    let n = Networks::with_backends(
        &d.join("s"),
        &d.join("r"),
        parse_cidr("10.89.0.0/23").unwrap(),
        Box::new(FakeCni::default()),
        Box::new(FakeHost::default()),
    );
    assert_eq!(n.ensure_network("a", None).unwrap().subnet, "10.89.2.0/24");
}

#[test]
fn attach_two_networks_then_detach() {
    let w = World::new();
    let n = w.nets();
    n.ensure_network("front", Some(parse_cidr("10.250.1.0/24").unwrap()))
        .unwrap();
    n.ensure_network("back", Some(parse_cidr("10.250.2.0/24").unwrap()))
        .unwrap();
    let ports = [PortSpec {
        host_ip: Some("127.0.0.1".parse().unwrap()),
        host_port: 8080,
        container_port: 80,
        protocol: Protocol::Tcp,
    }];
    let names = nets(&["front", "back"]);
    let a = n.attach(&req("web-1", "web", &names, &ports)).unwrap();
    assert_eq!(a.netns_path, w.dir.path().join("run/netns/web-1"));
    assert_eq!(a.addresses["front"].to_string(), "10.250.1.2");
    assert_eq!(a.addresses["back"].to_string(), "10.250.2.2");
    assert!(w.host.netns_exists(&a.netns_path));
    assert_eq!(
        w.cni.trace(),
        [
            "ADD loopback lo",
            "ADD bridge eth0",
            "ADD portmap eth0",
            "ADD firewall eth0",
            "ADD bridge eth1",
            "ADD firewall eth1",
        ]
    );
    let calls = w.cni.calls();
    // Published ports (so portmap) and the default route only through the first network.
    assert_eq!(
        calls[2].config["runtimeConfig"]["portMappings"][0]["hostIP"],
        "127.0.0.1"
    );
    assert!(calls[5].config.get("runtimeConfig").is_none());
    assert!(calls[1].config.pointer("/ipam/routes").is_some());
    assert!(calls[4].config.pointer("/ipam/routes").is_none());

    let resolv = std::fs::read_to_string(&a.resolv_conf).unwrap();
    assert!(
        resolv.contains("nameserver 192.0.2.53\nsearch lab\n"),
        "{resolv}"
    );
    let info = n.inspect("front").unwrap();
    assert_eq!(info.containers[0].address.as_deref(), Some("10.250.1.2/24"));
    assert_eq!(n.attachment("web-1").unwrap(), Some(a.clone()));

    // Idempotent: attaching again changes nothing.
    assert_eq!(n.attach(&req("web-1", "web", &names, &ports)).unwrap(), a);
    assert_eq!(w.cni.calls().len(), 6);

    // A restarted agent detaches from the record alone, even if the conflist changed.
    std::fs::write(n.paths().conflist("back"), "garbage").unwrap();
    w.nets().detach("web-1").unwrap();
    assert_eq!(
        w.cni.trace()[6..],
        [
            "DEL firewall eth1",
            "DEL bridge eth1",
            "DEL firewall eth0",
            "DEL portmap eth0",
            "DEL bridge eth0",
            "DEL loopback lo",
        ]
    );
    let calls = w.cni.calls();
    assert_eq!(
        calls[7].config["prevResult"]["ips"][0]["address"],
        "10.250.2.2/24"
    );
    assert_eq!(
        calls[9].config["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert_eq!(w.cni.live(), 0);
    assert!(!w.host.netns_exists(&a.netns_path));
    assert!(!n.paths().attachment("web-1").exists());
    assert_eq!(n.attachment("web-1").unwrap(), None);
    // Detaching again, or something never attached, is fine.
    n.detach("web-1").unwrap();
    n.detach("never-1").unwrap();
    assert_eq!(w.cni.calls().len(), 12);
}

#[test]
fn peers_see_each_other_by_name_and_hostname() {
    let w = World::new();
    let n = w.nets();
    n.ensure_network("front", Some(parse_cidr("10.250.3.0/24").unwrap()))
        .unwrap();
    n.ensure_network("other", Some(parse_cidr("10.250.4.0/24").unwrap()))
        .unwrap();
    let front = nets(&["front"]);
    let extra = [ExtraHost {
        host: "gateway".into(),
        ip: "10.0.0.1".parse().unwrap(),
    }];
    let mut web = req("web-1", "web", &front, &[]);
    web.extra_hosts = &extra;
    let a = n.attach(&web).unwrap();
    let mut db = req("db-1", "db", &front, &[]);
    db.hostname = "database";
    let b = n.attach(&db).unwrap();
    let other = nets(&["other"]);
    let c = n.attach(&req("lone-1", "lone", &other, &[])).unwrap();

    let hosts_a = std::fs::read_to_string(&a.hosts).unwrap();
    assert!(
        hosts_a.contains("10.0.0.1\tgateway\n10.250.3.2\tweb\n10.250.3.3\tdatabase db\n"),
        "{hosts_a}"
    );
    let hosts_b = std::fs::read_to_string(&b.hosts).unwrap();
    assert!(
        hosts_b.ends_with("10.250.3.3\tdatabase db\n10.250.3.2\tweb\n"),
        "{hosts_b}"
    );
    let hosts_c = std::fs::read_to_string(&c.hosts).unwrap();
    assert!(
        hosts_c.ends_with("10.250.4.2\tlone\n"),
        "no peers: {hosts_c}"
    );

    n.detach("db-1").unwrap();
    let hosts_a = std::fs::read_to_string(&a.hosts).unwrap();
    assert!(!hosts_a.contains("database"), "{hosts_a}");
}

#[test]
fn a_failed_add_rolls_back_everything() {
    let w = World::new();
    let n = w.nets();
    n.ensure_network("front", Some(parse_cidr("10.250.5.0/24").unwrap()))
        .unwrap();
    n.ensure_network("back", Some(parse_cidr("10.250.6.0/24").unwrap()))
        .unwrap();
    w.cni.fail("firewall", CniCommand::Add);
    let names = nets(&["front", "back"]);
    let err = n.attach(&req("web-1", "web", &names, &[])).unwrap_err();
    assert_eq!(
        error_chain(&err),
        "container `web`: plugin `firewall` ADD on network `front` for `web-1` failed (code 11): injected failure: by the test"
    );
    assert_eq!(
        w.cni.trace()[3..],
        ["DEL firewall eth0", "DEL bridge eth0", "DEL loopback lo"],
        "only the network whose ADD started is deleted"
    );
    assert_eq!(w.cni.live(), 0);
    assert!(w.host.netns.lock().unwrap().is_empty());
    assert!(!n.paths().attachment("web-1").exists());
}

#[test]
fn a_failed_del_keeps_the_record_for_a_retry() {
    let w = World::new();
    let n = w.nets();
    n.ensure_network("front", Some(parse_cidr("10.250.7.0/24").unwrap()))
        .unwrap();
    let names = nets(&["front"]);
    let a = n.attach(&req("web-1", "web", &names, &[])).unwrap();
    w.cni.fail("bridge", CniCommand::Del);
    let err = n.detach("web-1").unwrap_err();
    assert!(
        error_chain(&err).contains("plugin `bridge` DEL on network `front`"),
        "{err}"
    );
    assert!(w.host.netns_exists(&a.netns_path), "kept for the retry");
    assert!(n.paths().attachment("web-1").exists());
    assert!(matches!(
        n.remove_network("front"),
        Err(NetworkError::InUse { .. })
    ));
    w.cni.heal();
    n.detach("web-1").unwrap();
    assert!(!w.host.netns_exists(&a.netns_path));
    assert_eq!(w.cni.live(), 0);
}

#[test]
fn remove_network_deletes_bridge_ipam_and_conflist() {
    let w = World::new();
    let n = w.nets();
    let info = n
        .ensure_network("front", Some(parse_cidr("10.250.8.0/24").unwrap()))
        .unwrap();
    w.host.links.lock().unwrap().insert(info.bridge.clone());
    assert!(n.inspect("front").unwrap().bridge_up);
    let ipam = n.paths().ipam_dir().join(&info.cni_name);
    std::fs::create_dir_all(&ipam).unwrap();
    let names = nets(&["front"]);
    n.attach(&req("web-1", "web", &names, &[])).unwrap();
    let err = n.remove_network("front").unwrap_err();
    assert_eq!(
        err.to_string(),
        "network `front` is in use by web-1; detach them first"
    );
    n.detach("web-1").unwrap();
    assert!(n.remove_network("front").unwrap());
    assert!(!ipam.exists());
    assert!(!n.paths().conflist("front").exists());
    assert!(!w.host.link_exists(&info.bridge));
    assert!(!n.remove_network("front").unwrap(), "idempotent");
}

#[test]
fn changing_a_subnet_needs_no_attachments() {
    let w = World::new();
    let n = w.nets();
    let info = n
        .ensure_network("front", Some(parse_cidr("10.250.9.0/24").unwrap()))
        .unwrap();
    let names = nets(&["front"]);
    n.attach(&req("web-1", "web", &names, &[])).unwrap();
    let new = Some(parse_cidr("10.250.10.0/24").unwrap());
    assert!(matches!(
        n.ensure_network("front", new),
        Err(NetworkError::InUse { .. })
    ));
    n.detach("web-1").unwrap();
    assert_eq!(
        n.ensure_network("front", new).unwrap().subnet,
        "10.250.10.0/24"
    );
    assert_eq!(*w.host.deleted_links.lock().unwrap(), [info.bridge]);
}

#[test]
fn attach_needs_existing_networks() {
    let w = World::new();
    let n = w.nets();
    let names = nets(&["nope"]);
    assert_eq!(
        n.attach(&req("web-1", "web", &names, &[]))
            .unwrap_err()
            .to_string(),
        "network `nope` does not exist on this node"
    );
    assert!(matches!(
        n.attach(&req("web-1", "web", &[], &[])),
        Err(NetworkError::NoNetworks { .. })
    ));
}

#[test]
fn audit_counts_what_no_record_explains() {
    let w = World::new();
    let n = w.nets();
    let info = n
        .ensure_network("front", Some(parse_cidr("10.250.11.0/24").unwrap()))
        .unwrap();
    let names = nets(&["front"]);
    n.attach(&req("web-1", "web", &names, &[])).unwrap();
    n.attach(&req("db-1", "db", &names, &[])).unwrap();
    w.host
        .members
        .lock()
        .unwrap()
        .insert(info.bridge.clone(), 2);
    assert_eq!(n.audit().unwrap(), LeakReport::default(), "all explained");

    // A namespace nobody recorded, a record whose namespace vanished, a stray veth.
    let stray = n.paths().netns("ghost-1");
    w.host.netns.lock().unwrap().insert(stray.clone());
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, "").unwrap();
    w.host
        .netns
        .lock()
        .unwrap()
        .remove(&n.paths().netns("db-1"));
    w.host
        .members
        .lock()
        .unwrap()
        .insert(info.bridge.clone(), 3);
    let report = n.audit().unwrap();
    assert_eq!(report.stray_netns, ["ghost-1"]);
    assert_eq!(report.records_without_netns, ["db-1"]);
    assert_eq!(report.extra_bridge_members["front"], 1);
    assert!(!report.is_clean());
    // Detaching the stray id removes its namespace.
    n.detach("ghost-1").unwrap();
    assert!(!w.host.netns_exists(&stray));
}

#[test]
fn the_default_network_is_created_on_demand() {
    let w = World::new();
    let n = w.nets();
    let names = nets(&["default"]);
    let a = n.attach(&req("web-1", "web", &names, &[])).unwrap();
    assert_eq!(a.addresses["default"].to_string(), "10.88.0.2");
    assert_eq!(n.inspect("default").unwrap().subnet, "10.88.0.0/16");
    // A lost hosts file is rewritten by a repeated attach.
    std::fs::remove_file(&a.hosts).unwrap();
    assert_eq!(n.attach(&req("web-1", "web", &names, &[])).unwrap(), a);
    assert!(a.hosts.is_file());
    n.detach("web-1").unwrap();
}
