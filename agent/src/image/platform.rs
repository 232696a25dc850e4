//! Platforms (`os/architecture[/variant]`) and the choice of one manifest from an image
//! index, as containerd and Docker make it.
//!
//! Everything here is pure except [`Platform::host`], which reads the running machine.
//! Architectures and variants are normalised first (`x86_64` → `amd64`, `aarch64` →
//! `arm64` with the `v8` default, `armhf` → `arm/v7`, `i686` → `386`, …). A host accepts
//! its own variant first and then the older ones its CPU also runs (an arm/v7 host takes
//! v7, then v6, then v5); among equally good entries the first in the index wins
//! (image-spec `image-index.md`). Entries with an unknown OS or architecture, such as the
//! `unknown/unknown` attestation manifests, never match.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A normalised platform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a `--platform` value is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{0}`: expected os/architecture[/variant], e.g. linux/arm64/v8")]
pub struct PlatformError(pub String);

impl Platform {
    /// A platform with normalised architecture and variant.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: os.trim().to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformError(s.to_string())),
        }
    }

    /// The platform of the running machine.
    pub fn host() -> Platform {
        let cpuinfo = if std::env::consts::ARCH == "arm" {
            std::fs::read_to_string("/proc/cpuinfo").ok()
        } else {
            None
        };
        host_from(
            std::env::consts::OS,
            std::env::consts::ARCH,
            cpuinfo.as_deref(),
        )
    }

    /// How well an image built for `self` runs on `host`: `Some(0)` is an exact match,
    /// higher numbers are older-but-compatible variants, `None` does not run.
    pub fn rank_on(&self, host: &Platform) -> Option<usize> {
        if self.os != host.os || self.architecture != host.architecture {
            return None;
        }
        compatible_variants(host)
            .iter()
            .position(|v| v.as_deref() == self.variant.as_deref())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Normalises an architecture and its variant (containerd `platforms.normalizeArch`,
/// except that arm64 keeps an explicit `v8`, its default).
pub fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.trim().to_ascii_lowercase();
    let variant = variant
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty());
    // "7" and "v7" are the same variant.
    let v = |n: &str| {
        if n.starts_with('v') {
            n.to_string()
        } else {
            format!("v{n}")
        }
    };
    match arch.as_str() {
        "x86_64" | "x86-64" | "amd64" => {
            let variant = variant.map(|x| v(&x)).filter(|x| x != "v1");
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_deref() {
                None | Some("8" | "v8" | "v8.0") => "v8".to_string(),
                Some(x) => v(x),
            };
            ("arm64".into(), Some(variant))
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" | "armv7l" | "armv7" => {
            let variant = variant.map(|x| v(&x)).unwrap_or_else(|| "v7".into());
            ("arm".into(), Some(variant))
        }
        "armv6l" | "armv6" => ("arm".into(), Some("v6".into())),
        "armv5l" | "armv5" => ("arm".into(), Some("v5".into())),
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => ("386".into(), variant),
        "ppc64el" => ("ppc64le".into(), variant),
        other => (other.to_string(), variant),
    }
}

/// The variants a host runs, best first. `None` stands for "no variant given".
fn compatible_variants(host: &Platform) -> Vec<Option<String>> {
    let own = host.variant.clone();
    match host.architecture.as_str() {
        // 32-bit arm: newer cores run older instruction sets.
        "arm" => {
            let order = ["v8", "v7", "v6", "v5"];
            let start = own
                .as_deref()
                .and_then(|v| order.iter().position(|o| *o == v))
                .unwrap_or(1);
            order[start..].iter().map(|v| Some(v.to_string())).collect()
        }
        // arm64: a missing variant means v8; v9 hosts run v8 images.
        "arm64" => {
            let mut out = vec![own.clone()];
            if own.as_deref() != Some("v8") {
                out.push(Some("v8".into()));
            }
            out.push(None);
            out
        }
        // amd64 micro-architecture levels: v3 runs v3, v2, v1 (v1 is no variant).
        "amd64" => {
            let level = own
                .as_deref()
                .and_then(|v| v.strip_prefix('v'))
                .and_then(|n| n.parse::<u8>().ok())
                .unwrap_or(1);
            let mut out: Vec<Option<String>> =
                (2..=level).rev().map(|n| Some(format!("v{n}"))).collect();
            out.push(None);
            out
        }
        _ => {
            let mut out = vec![own.clone()];
            if own.is_some() {
                out.push(None);
            }
            out
        }
    }
}

/// The host platform from `std::env::consts` values and, on 32-bit arm, `/proc/cpuinfo`.
pub fn host_from(os: &str, arch: &str, cpuinfo: Option<&str>) -> Platform {
    let arm_variant = cpuinfo.and_then(|text| {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == "CPU architecture")
            .map(|(_, v)| v.trim().to_string())
    });
    let (arch, variant) = match arch {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => (
            "arm",
            arm_variant.as_deref().map(|v| match v {
                "5TEJ" | "5TE" | "5" => "v5",
                "6" | "6TEJ" => "v6",
                "8" | "AArch64" => "v8",
                _ => "v7",
            }),
        ),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    };
    Platform::new(os, arch, variant)
}

/// Picks the best entry for `host` among index entries (their platforms, in index
/// order; `None` for an entry without a platform). Returns its position.
///
/// An entry without a platform is taken only when nothing else matches, as a
/// single-platform index often omits it.
pub fn select(entries: &[Option<Platform>], host: &Platform) -> Option<usize> {
    let ranked = entries
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Some(p) => p.rank_on(host).map(|r| (r, i)),
            None => Some((usize::MAX, i)),
        })
        .min();
    ranked.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn normalisation() {
        let cases = [
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/aarch64", "linux/arm64/v8"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/arm64/8", "linux/arm64/v8"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/arm/v5", "linux/arm/v5"),
            ("linux/i686", "linux/386"),
            ("linux/386", "linux/386"),
            ("linux/ppc64le", "linux/ppc64le"),
            ("linux/s390x", "linux/s390x"),
            ("linux/riscv64", "linux/riscv64"),
            ("Linux/AMD64", "linux/amd64"),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn host_detection() {
        assert_eq!(
            host_from("linux", "x86_64", None).to_string(),
            "linux/amd64"
        );
        assert_eq!(
            host_from("linux", "aarch64", None).to_string(),
            "linux/arm64/v8"
        );
        let pi = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\n";
        assert_eq!(
            host_from("linux", "arm", Some(pi)).to_string(),
            "linux/arm/v7"
        );
        let pi1 = "CPU architecture: 6\n";
        assert_eq!(
            host_from("linux", "arm", Some(pi1)).to_string(),
            "linux/arm/v6"
        );
        let v8 = "CPU architecture: 8\n";
        assert_eq!(
            host_from("linux", "arm", Some(v8)).to_string(),
            "linux/arm/v8"
        );
        assert_eq!(host_from("linux", "arm", None).to_string(), "linux/arm/v7");
        assert_eq!(host_from("linux", "x86", None).to_string(), "linux/386");
        assert_eq!(
            host_from("linux", "powerpc64", None).to_string(),
            "linux/ppc64le"
        );
        assert_eq!(host_from("linux", "s390x", None).to_string(), "linux/s390x");
        assert_eq!(
            host_from("linux", "riscv64", None).to_string(),
            "linux/riscv64"
        );
    }

    /// A typical multi-arch index (Docker Hub's busybox), plus an attestation entry.
    fn index() -> Vec<Option<Platform>> {
        [
            "linux/amd64",
            "linux/arm/v5",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/386",
            "linux/ppc64le",
            "linux/riscv64",
            "linux/s390x",
            "unknown/unknown",
        ]
        .iter()
        .map(|s| Some(p(s)))
        .collect()
    }

    #[test]
    fn selection_for_every_edge_architecture() {
        let idx = index();
        let cases = [
            ("linux/amd64", Some(0)),
            ("linux/x86_64", Some(0)),
            ("linux/amd64/v3", Some(0)),
            ("linux/arm/v5", Some(1)),
            ("linux/arm/v6", Some(2)),
            ("linux/arm/v7", Some(3)),
            ("linux/arm/v8", Some(3)),
            ("linux/aarch64", Some(4)),
            ("linux/arm64/v9", Some(4)),
            ("linux/i686", Some(5)),
            ("linux/ppc64le", Some(6)),
            ("linux/riscv64", Some(7)),
            ("linux/s390x", Some(8)),
            ("linux/mips64le", None),
            ("windows/amd64", None),
        ];
        for (host, want) in cases {
            assert_eq!(select(&idx, &p(host)), want, "host {host}");
        }
    }

    #[test]
    fn fallbacks_and_ties() {
        // arm/v7 host, only v6 and v5 published: take v6.
        let idx = vec![Some(p("linux/arm/v5")), Some(p("linux/arm/v6"))];
        assert_eq!(select(&idx, &p("linux/arm/v7")), Some(1));
        // arm/v6 host never takes v7.
        let idx = vec![Some(p("linux/arm/v7"))];
        assert_eq!(select(&idx, &p("linux/arm/v6")), None);
        // arm64 entry without a variant runs on an arm64 host.
        let idx = vec![Some(Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        })];
        assert_eq!(select(&idx, &p("linux/arm64")), Some(0));
        // amd64 v1 host never takes a v3 image.
        let idx = vec![Some(p("linux/amd64/v3"))];
        assert_eq!(select(&idx, &p("linux/amd64")), None);
        // amd64 v3 host prefers v3 over the baseline.
        let idx = vec![Some(p("linux/amd64")), Some(p("linux/amd64/v3"))];
        assert_eq!(select(&idx, &p("linux/amd64/v3")), Some(1));
        // Two identical entries: the first wins.
        let idx = vec![Some(p("linux/amd64")), Some(p("linux/amd64"))];
        assert_eq!(select(&idx, &p("linux/amd64")), Some(0));
        // An entry without platform is a last resort.
        let idx = vec![None, Some(p("linux/amd64"))];
        assert_eq!(select(&idx, &p("linux/amd64")), Some(1));
        assert_eq!(select(&[None], &p("linux/s390x")), Some(0));
        assert_eq!(select(&[], &p("linux/amd64")), None);
    }
}
