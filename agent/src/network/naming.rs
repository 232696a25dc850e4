//! Names and addresses berth derives for its networks (pure).
//!
//! - [`state_hash`]: SHA-256 of the state directory (and a name under it), the one
//!   hash that keeps two state directories' host objects apart; cgroups use it too
//!   (`runtime::render::cgroups_path`).
//! - Bridge names: `bth` + 12 hex digits of SHA-256(state dir, network name) — 15
//!   characters, the kernel's `IFNAMSIZ - 1` limit — so two state directories on one
//!   host (two agents, or tests side by side) never share a bridge (DESIGN.md §7). The
//!   CNI network name is the bridge name too: the plugins key iptables chains and
//!   host-local allocations on (CNI name, container id), and an instance id alone is
//!   not unique across state directories.
//! - Subnets for networks that name none: the first free /24 of [`POOL`], skipping
//!   every subnet already in use, so the choice is deterministic given the networks
//!   that exist; it is recorded in the network's conflist and kept from then on.
//! - Interface names inside the namespace: `eth0`, `eth1`, … in the container's
//!   network order.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use berth_spec::types::Cidr;
use sha2::{Digest, Sha256};

/// Prefix of every bridge berth creates (`ip link show type bridge | grep bth`).
pub const BRIDGE_PREFIX: &str = "bth";

/// Longest interface name the kernel accepts (`IFNAMSIZ` 16 minus the NUL).
pub const IFNAME_MAX: usize = 15;

/// Where subnets of networks without one come from: podman's choice (10.89.0.0/16),
/// next to the `default` network's 10.88.0.0/16.
pub const POOL: Cidr = Cidr {
    addr: IpAddr::V4(Ipv4Addr::new(10, 89, 0, 0)),
    prefix: 16,
};

/// Size of an allocated subnet: 253 containers per network is plenty for one host.
pub const POOL_PREFIX: u8 = 24;

/// Hex SHA-256 of `state_dir`, and of `name` under it when given: what keeps the host
/// objects of two state directories apart (bridges, CNI networks, cgroups). The one home
/// of that hash; callers keep a prefix of it.
pub fn state_hash(state_dir: &Path, name: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(state_dir.as_os_str().as_encoded_bytes());
    if let Some(name) = name {
        // A separator no path or name contains, so ("/a", "bc") and ("/ab", "c") differ.
        h.update([0u8]);
        h.update(name.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The bridge (and CNI network) name of `network` under `state_dir`.
pub fn bridge_name(state_dir: &Path, network: &str) -> String {
    let hex = state_hash(state_dir, Some(network));
    let keep = IFNAME_MAX - BRIDGE_PREFIX.len();
    format!("{BRIDGE_PREFIX}{}", &hex[..keep])
}

/// The interface name of the container's `index`-th network.
pub fn ifname(index: usize) -> String {
    format!("eth{index}")
}

/// The first `/prefix` block of `pool` that overlaps none of `taken`.
pub fn allocate_subnet(pool: &Cidr, prefix: u8, taken: &[Cidr]) -> Option<Cidr> {
    let IpAddr::V4(base) = pool.addr else {
        return None;
    };
    if prefix < pool.prefix || prefix > 30 {
        return None;
    }
    let base = u32::from(base);
    let count = 1u64 << (prefix - pool.prefix);
    let step = 1u64 << (32 - prefix);
    (0..count)
        .map(|i| Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(base.wrapping_add((i * step) as u32))),
            prefix,
        })
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

/// The gateway CNI's bridge plugin gives a subnet: its first host address.
pub fn gateway(subnet: &Cidr) -> IpAddr {
    match subnet.addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        berth_spec::types::parse_cidr(s).unwrap()
    }

    #[test]
    fn bridge_names_fit_ifnamsiz_and_are_stable() {
        let a = bridge_name(Path::new("/var/lib/berth"), "default");
        assert_eq!(a.len(), IFNAME_MAX);
        assert!(a.starts_with("bth"));
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, bridge_name(Path::new("/var/lib/berth"), "default"));
        // A long network name still gives 15 characters.
        let long = "n".repeat(63);
        assert_eq!(bridge_name(Path::new("/x"), &long).len(), IFNAME_MAX);
    }

    #[test]
    fn bridge_names_differ_per_state_dir_and_network() {
        let a = bridge_name(Path::new("/var/lib/berth"), "default");
        let b = bridge_name(Path::new("/tmp/berth-test"), "default");
        let c = bridge_name(Path::new("/var/lib/berth"), "front");
        assert_ne!(a, b);
        assert_ne!(a, c);
        // The separator keeps concatenations apart.
        assert_ne!(
            bridge_name(Path::new("/a"), "bc"),
            bridge_name(Path::new("/ab"), "c")
        );
    }

    #[test]
    fn bridge_names_are_those_of_earlier_releases() {
        // Bridges and CNI networks already on hosts keep their names.
        assert_eq!(
            bridge_name(Path::new("/var/lib/berth"), "default"),
            format!(
                "bth{}",
                &hex::encode(Sha256::digest(b"/var/lib/berth\0default"))[..12]
            )
        );
    }

    #[test]
    fn state_hash_is_per_directory_and_name() {
        let a = state_hash(Path::new("/var/lib/berth"), None);
        assert_eq!(a.len(), 64);
        assert_eq!(a, hex::encode(Sha256::digest(b"/var/lib/berth")));
        assert_ne!(a, state_hash(Path::new("/var/lib/berth2"), None));
        assert_ne!(a, state_hash(Path::new("/var/lib/berth"), Some("")));
    }

    #[test]
    fn pool_allocation_takes_the_first_free_block() {
        assert_eq!(allocate_subnet(&POOL, 24, &[]), Some(cidr("10.89.0.0/24")));
        let taken = [cidr("10.89.0.0/24"), cidr("10.89.2.0/24")];
        assert_eq!(
            allocate_subnet(&POOL, 24, &taken),
            Some(cidr("10.89.1.0/24"))
        );
        // A wide subnet overlapping the start of the pool pushes past it.
        let taken = [cidr("10.89.0.0/22"), cidr("10.88.0.0/16")];
        assert_eq!(
            allocate_subnet(&POOL, 24, &taken),
            Some(cidr("10.89.4.0/24"))
        );
    }

    #[test]
    fn pool_allocation_reports_exhaustion() {
        assert_eq!(allocate_subnet(&POOL, 24, &[cidr("10.0.0.0/8")]), None);
        assert_eq!(allocate_subnet(&POOL, 8, &[]), None, "wider than the pool");
    }

    #[test]
    fn gateway_is_the_first_host() {
        assert_eq!(gateway(&cidr("10.89.3.0/24")).to_string(), "10.89.3.1");
        assert_eq!(gateway(&cidr("fd00::/64")).to_string(), "fd00::1");
    }

    #[test]
    fn interface_names_follow_network_order() {
        assert_eq!(ifname(0), "eth0");
        assert_eq!(ifname(3), "eth3");
    }
}
