//! Value types of the spec, each validated when parsed: sizes, durations, signals, port
//! mappings, subnets, devices, ulimits, extra hosts and the small enums.
//!
//! Parse functions return a message without the object or key; the reader adds those.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Parses a size: `KiB/MiB/GiB/TiB` are powers of 1024, `KB/MB/GB/TB` powers of 1000,
/// a bare integer is bytes, and Docker's `512m`/`1g`/`64k` are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid size `{s}`: use a number with a unit such as `512KiB`, `128MiB`, `1GiB`, `1GB` or `512m`"
        )
    };
    if num.is_empty() {
        return Err(bad());
    }
    let mult: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" | "k" | "K" | "kb" => 1 << 10,
        "MiB" | "m" | "M" | "mb" => 1 << 20,
        "GiB" | "g" | "G" | "gb" => 1 << 30,
        "TiB" | "t" | "T" | "tb" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size `{s}` is too large"));
    }
    if num.contains('.') && bytes.fract() != 0.0 {
        return Err(format!("size `{s}` is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Parses a duration in the humantime forms (`90s`, `1m30s`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        format!("invalid duration `{s}`: use forms like `10s`, `2m`, `1m30s` or `500ms`")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "duration `{s}` is longer than {}, the longest berth takes",
            format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// The longest duration any key takes (a year): arithmetic on durations (a health
/// check's whole wait, a deadline from now) then never overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Normalises an absolute path lexically: `/a/./b//c/../d/` is `/a/b/d`, and `..` at
/// the root stays at the root. Mount targets and the policy's host paths use it.
pub fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Formats a duration back in humantime form.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Signal names of Linux, numbered as on x86_64/arm64 (the numbers are the generic ones).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// A stop signal, kept by name (`SIGTERM`) and number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub name: String,
    pub number: i32,
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            name: "SIGTERM".into(),
            number: 15,
        }
    }
}

/// Parses `SIGTERM`, `TERM`, `sigterm`, `15`, or `SIGRTMIN+3`.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let bad = || {
        format!(
            "invalid signal `{s}`: use a name such as `SIGTERM`, `SIGINT`, `SIGQUIT` or a number from 1 to 64"
        )
    };
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            let name = SIGNALS
                .iter()
                .find(|(_, num)| *num == n)
                .map_or_else(|| n.to_string(), |(name, _)| format!("SIG{name}"));
            return Ok(Signal { name, number: n });
        }
        return Err(bad());
    }
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(off) = bare.strip_prefix("RTMIN+") {
        let n: i32 = off.parse().map_err(|_| bad())?;
        if (0..=30).contains(&n) {
            return Ok(Signal {
                name: format!("SIGRTMIN+{n}"),
                number: 34 + n,
            });
        }
        return Err(bad());
    }
    SIGNALS
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|(name, n)| Signal {
            name: format!("SIG{name}"),
            number: *n,
        })
        .ok_or_else(bad)
}

/// A transport protocol for a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A published port: `[host_ip:]host_port:container_port[/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// `None` means every address (`0.0.0.0` and `::`).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortSpec {
    /// Whether two mappings would bind the same host socket.
    pub fn clashes_with(&self, other: &PortSpec) -> bool {
        if self.host_port != other.host_port || self.protocol != other.protocol {
            return false;
        }
        match (self.host_ip, other.host_ip) {
            (None, _) | (_, None) => true,
            (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

fn parse_port(s: &str, what: &str, spec: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        Ok(_) => Err(format!("{what} in `{spec}` must be between 1 and 65535")),
        Err(_) if s.contains('-') => Err(format!("port ranges are not supported: `{spec}`")),
        Err(_) => Err(format!("invalid {what} `{s}` in `{spec}`")),
    }
}

pub fn parse_port_spec(s: &str) -> Result<PortSpec, String> {
    let usage = "expected `[host_ip:]host_port:container_port[/tcp|udp]`";
    let (body, protocol) = match s.rsplit_once('/') {
        Some((b, "tcp")) => (b, Protocol::Tcp),
        Some((b, "udp")) => (b, Protocol::Udp),
        Some((_, p)) => {
            return Err(format!(
                "invalid protocol `{p}` in port `{s}`: use tcp or udp"
            ));
        }
        None => (s, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(after) = body.strip_prefix('[') {
        let (ip, rest) = after
            .split_once("]:")
            .ok_or_else(|| format!("invalid port `{s}`: {usage}"))?;
        let ip: std::net::Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("invalid host address `{ip}` in port `{s}`"))?;
        (Some(IpAddr::V6(ip)), rest)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.as_slice() {
            [_, _] => (None, body),
            [ip, hp, cp] => {
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| format!("invalid host address `{ip}` in port `{s}`"))?;
                return Ok(PortSpec {
                    host_ip: Some(ip),
                    host_port: parse_port(hp, "host port", s)?,
                    container_port: parse_port(cp, "container port", s)?,
                    protocol,
                });
            }
            [_] => return Err(format!("port `{s}` has no host port: {usage}")),
            _ => return Err(format!("invalid port `{s}`: {usage}")),
        }
    };
    let (hp, cp) = rest
        .split_once(':')
        .ok_or_else(|| format!("invalid port `{s}`: {usage}"))?;
    Ok(PortSpec {
        host_ip,
        host_port: parse_port(hp, "host port", s)?,
        container_port: parse_port(cp, "container port", s)?,
        protocol,
    })
}

/// A subnet in CIDR form with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    fn bits(&self) -> (u128, u32) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// The subnet of `prefix` bits around this one's address, host bits cleared
    /// (`10.89.1.0/24` with 8 is `10.0.0.0/8`).
    pub fn with_prefix(&self, prefix: u8) -> Cidr {
        let (a, w) = self.bits();
        let p = u32::from(prefix).min(w);
        let mask = if p == 0 { 0 } else { (!0u128) << (w - p) };
        let masked = a & mask;
        let addr = match self.addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(masked as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(masked)),
        };
        Cidr { addr, prefix }
    }

    /// This subnet with its host bits cleared.
    pub fn network(&self) -> Cidr {
        self.with_prefix(self.prefix)
    }

    /// Whether two subnets share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let ((a, wa), (b, wb)) = (self.bits(), other.bits());
        if wa != wb {
            return false;
        }
        let p = u32::from(self.prefix.min(other.prefix));
        let mask = if p == 0 { 0 } else { (!0u128) << (wa - p) };
        (a & mask) == (b & mask)
    }
}

pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let (ip, prefix) = s.split_once('/').ok_or_else(|| {
        format!("invalid subnet `{s}`: expected CIDR notation such as `10.89.1.0/24`")
    })?;
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid subnet `{s}`: `{ip}` is not an IP address"))?;
    let (max, min_hosts) = if addr.is_ipv4() {
        (32u8, 30u8)
    } else {
        (128, 126)
    };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("invalid subnet `{s}`: prefix length must be 0 to {max}"))?;
    if prefix > min_hosts {
        return Err(format!(
            "subnet `{s}` is too small for a bridge network: use a prefix of at most /{min_hosts}"
        ));
    }
    let c = Cidr { addr, prefix };
    let (bits, width) = c.bits();
    let host_mask = if prefix == 0 {
        !0u128
    } else {
        (1u128 << (width - u32::from(prefix))) - 1
    };
    if bits & host_mask != 0 {
        let net = bits & !host_mask;
        let net_addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(net as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(net)),
        };
        return Err(format!(
            "subnet `{s}` has host bits set: did you mean `{net_addr}/{prefix}`?"
        ));
    }
    Ok(c)
}

/// A device passed into a container: `host[:container[:rwm]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub host: String,
    pub container: String,
    pub permissions: String,
}

pub fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if !c.starts_with('/') && is_perms(c) => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => {
            return Err(format!(
                "invalid device `{s}`: expected `host_path[:container_path[:rwm]]`"
            ));
        }
    };
    for (p, what) in [(host, "host"), (container, "container")] {
        if !p.starts_with('/') {
            return Err(format!(
                "invalid device `{s}`: the {what} path must be absolute"
            ));
        }
    }
    if !is_perms(perms) {
        return Err(format!(
            "invalid device permissions `{perms}` in `{s}`: use a combination of r, w and m"
        ));
    }
    Ok(DeviceSpec {
        host: host.to_string(),
        container: container.to_string(),
        permissions: perms.to_string(),
    })
}

fn is_perms(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 3
        && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && p.chars().collect::<std::collections::BTreeSet<_>>().len() == p.len()
}

/// The resource names `ulimits` accepts (Docker's list, as setrlimit names them).
pub const ULIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// A soft:hard resource limit; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

pub fn parse_ulimit(s: &str) -> Result<Ulimit, String> {
    let one = |v: &str| -> Result<Option<u64>, String> {
        match v {
            "unlimited" | "-1" => Ok(None),
            _ => v.parse::<u64>().map(Some).map_err(|_| {
                format!(
                    "invalid ulimit `{s}`: expected `soft:hard` with whole numbers or `unlimited`"
                )
            }),
        }
    };
    let (soft, hard) = match s.split_once(':') {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    let soft_above = match (soft, hard) {
        (Some(a), Some(b)) => a > b,
        (None, Some(_)) => true,
        _ => false,
    };
    if soft_above {
        return Err(format!(
            "invalid ulimit `{s}`: the soft limit is above the hard limit"
        ));
    }
    Ok(Ulimit { soft, hard })
}

/// An `extra_hosts` entry: `name:address`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub host: String,
    pub ip: IpAddr,
}

pub fn parse_extra_host(s: &str) -> Result<ExtraHost, String> {
    let (host, ip) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid extra host `{s}`: expected `name:address`"))?;
    let ip_str = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = ip_str
        .parse()
        .map_err(|_| format!("invalid extra host `{s}`: `{ip}` is not an IP address"))?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !host_ok {
        return Err(format!(
            "invalid extra host `{s}`: `{host}` is not a valid host name"
        ));
    }
    Ok(ExtraHost {
        host: host.to_string(),
        ip,
    })
}

/// Declares a string enum with its accepted spellings and default.
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, default $def:ident, { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $(
                #[serde(rename = $s)]
                $var,
            )+
        }
        impl $name {
            pub const VALUES: &'static [&'static str] = &[$($s),+];
            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => {
                        let hint = crate::diag::suggest(s, Self::VALUES)
                            .map(|v| format!(", did you mean `{v}`?"))
                            .unwrap_or_default();
                        Err(format!(
                            "invalid {} `{s}`: expected one of {}{hint}",
                            $what,
                            Self::VALUES.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
                        ))
                    }
                }
            }
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s,)+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl Default for $name {
            fn default() -> Self {
                $name::$def
            }
        }
    };
}

string_enum!(
    /// When a container is restarted after it exits.
    Restart, "restart policy", default Always, { No = "no", OnFailure = "on-failure", Always = "always" }
);
string_enum!(
    /// How a container is networked.
    NetworkMode, "network_mode", default Bridge, { Bridge = "bridge", Host = "host", None = "none" }
);
string_enum!(
    /// The order of stopping the old and starting the new instance on an update.
    Update, "update strategy", default StopFirst, { StopFirst = "stop-first", StartFirst = "start-first" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM").map(|s| s.number), Ok(15));
        assert_eq!(parse_signal("quit").map(|s| s.name), Ok("SIGQUIT".into()));
        assert_eq!(parse_signal("9").map(|s| s.name), Ok("SIGKILL".into()));
        assert_eq!(parse_signal("SIGRTMIN+3").map(|s| s.number), Ok(37));
        assert!(parse_signal("SIGFOO").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn ports() {
        let p = parse_port_spec("127.0.0.1:8080:80/udp").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.to_string(), "127.0.0.1:8080:80/udp");
        let p = parse_port_spec("[::1]:8080:80").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.to_string(), "[::1]:8080:80/tcp");
        assert!(parse_port_spec("80").unwrap_err().contains("no host port"));
        assert!(
            parse_port_spec("8000-8010:80")
                .unwrap_err()
                .contains("ranges")
        );
        assert!(
            parse_port_spec("70000:80")
                .unwrap_err()
                .contains("between 1 and 65535")
        );
        assert!(
            parse_port_spec("80:80/sctp")
                .unwrap_err()
                .contains("protocol")
        );
        let any = parse_port_spec("8080:80").unwrap_or_else(|e| panic!("{e}"));
        let lo = parse_port_spec("127.0.0.1:8080:81").unwrap_or_else(|e| panic!("{e}"));
        let lo2 = parse_port_spec("127.0.0.2:8080:81").unwrap_or_else(|e| panic!("{e}"));
        assert!(any.clashes_with(&lo));
        assert!(!lo.clashes_with(&lo2));
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("10.89.1.0/24").is_ok());
        assert!(
            parse_cidr("10.89.1.5/24")
                .unwrap_err()
                .contains("did you mean `10.89.1.0/24`")
        );
        assert!(
            parse_cidr("10.89.1.0/31")
                .unwrap_err()
                .contains("too small")
        );
        assert!(parse_cidr("10.89.1.0").is_err());
        assert!(parse_cidr("fd00::/64").is_ok());
        let a = parse_cidr("10.88.0.0/16").unwrap_or_else(|e| panic!("{e}"));
        let b = parse_cidr("10.88.5.0/24").unwrap_or_else(|e| panic!("{e}"));
        let c = parse_cidr("10.89.0.0/16").unwrap_or_else(|e| panic!("{e}"));
        assert!(a.overlaps(&b) && !a.overlaps(&c));
    }

    #[test]
    fn devices_ulimits_hosts() {
        let d = parse_device("/dev/ttyUSB0:/dev/ttyUSB0:rw").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.permissions, "rw");
        assert_eq!(
            parse_device("/dev/ttyUSB0:r").map(|d| d.container),
            Ok("/dev/ttyUSB0".into())
        );
        assert!(parse_device("/dev/x:/dev/y:rx").is_err());
        assert!(parse_device("dev/x").is_err());
        assert_eq!(
            parse_ulimit("1024:4096"),
            Ok(Ulimit {
                soft: Some(1024),
                hard: Some(4096)
            })
        );
        assert!(
            parse_ulimit("4096:1024")
                .unwrap_err()
                .contains("above the hard")
        );
        assert!(parse_extra_host("gateway:10.0.0.1").is_ok());
        assert!(parse_extra_host("gateway:10.0.0").is_err());
    }
}
