//! Seccomp: Docker-format profiles compiled to the OCI `linux.seccomp` form.
//!
//! `seccomp = "default"` uses Docker's default profile, shipped as data in
//! `seccomp_default.json` (from `github.com/moby/profiles/seccomp/default.json`,
//! Apache-2.0): an allow-list with `defaultAction: SCMP_ACT_ERRNO` (EPERM), per-arch
//! and capability-conditional rules, and an arch map. A profile file named in the spec
//! is read by the caller and compiled the same way. `unconfined` and `privileged`
//! render no filter.
//!
//! Compilation is moby's `setupSeccomp`: the `archMap` entry of the host arch becomes
//! `architectures` (the arch plus its sub-architectures); a rule is dropped when its
//! `excludes` match (host arch listed, any listed capability in the container's
//! *bounding* set, or the kernel at least `minKernel`) or its `includes` do not (host
//! arch not listed, some listed capability missing, kernel older than `minKernel`).
//! So with `cap_drop = ["ALL"]` none of the capability-gated groups are emitted, and
//! `clone3` gets `ENOSYS` so glibc falls back to `clone`.
//!
//! Unlike Docker, a profile without `defaultAction` is an error rather than "no
//! seccomp", and unknown fields are errors: a typo must not silently unconfine.

use std::collections::BTreeSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use berth_spec::Seccomp;

use super::{RenderError, RenderInput};

/// Why a profile does not compile. Each names the rule at fault.
#[derive(Debug, thiserror::Error)]
enum ProfileError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("both `architectures` and `archMap` are given: use one")]
    BothArchitectures,
    #[error("rule {rule}: both `name` and `names` are given")]
    BothNames { rule: usize },
    #[error("rule {rule}: no syscall names")]
    NoNames { rule: usize },
    #[error("rule {rule}: invalid minKernel `{value}`: expected `<kernel>.<major>`")]
    MinKernel { rule: usize, value: String },
    #[error("{0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Docker's default profile, in Docker's JSON format.
pub const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

/// A profile in Docker's format.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ArchMapEntry {
    architecture: Arch,
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// Docker's deprecated single-name form.
    name: Option<String>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
    /// Documentation in the profile; ignored.
    #[serde(default, rename = "comment")]
    _comment: Option<serde::de::IgnoredAny>,
    includes: Option<Filter>,
    excludes: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// The host facts a profile is compiled against.
#[derive(Debug, Clone, Copy)]
struct Target<'a> {
    /// libseccomp's arch name (`amd64`, `arm64`, ...), as `includes.arches` uses.
    native: Option<&'static str>,
    arch: Option<Arch>,
    kernel: (u32, u32),
    /// Bounding capabilities, `CAP_`-prefixed.
    caps: &'a BTreeSet<String>,
}

/// Maps Rust's `std::env::consts::ARCH` to libseccomp's name and the seccomp arch.
fn host_arch(rust_arch: &str) -> (Option<&'static str>, Option<Arch>) {
    let (native, arch) = match rust_arch {
        "x86_64" => ("amd64", Arch::ScmpArchX86_64),
        "x86" => ("x86", Arch::ScmpArchX86),
        "aarch64" => ("arm64", Arch::ScmpArchAarch64),
        "arm" => ("arm", Arch::ScmpArchArm),
        "riscv64" => ("riscv64", Arch::ScmpArchRiscv64),
        "s390x" => ("s390x", Arch::ScmpArchS390x),
        "powerpc64" => ("ppc64", Arch::ScmpArchPpc64),
        "loongarch64" => ("loong64", Arch::ScmpArchLoongarch64),
        _ => return (None, None),
    };
    (Some(native), Some(arch))
}

/// Parses `"<kernel>.<major>"`.
fn parse_kernel(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Filter {
    /// `rule`: the index of the rule this filter belongs to, for the error.
    fn min_kernel(&self, rule: usize) -> Result<Option<(u32, u32)>, ProfileError> {
        self.min_kernel
            .as_deref()
            .map(|v| {
                parse_kernel(v).ok_or_else(|| ProfileError::MinKernel {
                    rule,
                    value: v.to_string(),
                })
            })
            .transpose()
    }
}

fn has_cap(t: &Target<'_>, cap: &str) -> bool {
    let upper = cap.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    t.caps.contains(&full)
}

fn arch_listed(t: &Target<'_>, arches: &[String]) -> bool {
    t.native.is_some_and(|n| arches.iter().any(|a| a == n))
}

/// Whether a rule applies on this target.
fn applies(i: usize, rule: &Rule, t: &Target<'_>) -> Result<bool, ProfileError> {
    if let Some(ex) = &rule.excludes {
        if arch_listed(t, &ex.arches) || ex.caps.iter().any(|c| has_cap(t, c)) {
            return Ok(false);
        }
        if ex.min_kernel(i)?.is_some_and(|k| t.kernel >= k) {
            return Ok(false);
        }
    }
    if let Some(inc) = &rule.includes {
        if !inc.arches.is_empty() && !arch_listed(t, &inc.arches) {
            return Ok(false);
        }
        if !inc.caps.iter().all(|c| has_cap(t, c)) {
            return Ok(false);
        }
        if inc.min_kernel(i)?.is_some_and(|k| t.kernel < k) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compile(text: &str, t: &Target<'_>) -> Result<LinuxSeccomp, ProfileError> {
    let profile: Profile = serde_json::from_str(text)?;
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err(ProfileError::BothArchitectures);
    }
    let mut architectures = profile.architectures;
    if let Some(entry) = profile
        .arch_map
        .iter()
        .find(|e| Some(e.architecture) == t.arch)
    {
        architectures.push(entry.architecture);
        architectures.extend(entry.sub_architectures.iter().flatten().copied());
    }

    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for (i, rule) in profile.syscalls.iter().enumerate() {
        let names: Vec<String> = match (&rule.name, rule.names.is_empty()) {
            (Some(_), false) => {
                return Err(ProfileError::BothNames { rule: i });
            }
            (Some(n), true) => vec![n.clone()],
            (None, false) => rule.names.clone(),
            (None, true) => return Err(ProfileError::NoNames { rule: i }),
        };
        if !applies(i, rule, t)? {
            continue;
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(names)
            .action(rule.action);
        if let Some(errno) = rule.errno_ret {
            b = b.errno_ret(errno);
        }
        if let Some(args) = rule.args.as_ref().filter(|a| !a.is_empty()) {
            b = b.args(args.clone());
        }
        syscalls.push(b.build()?);
    }

    let mut b = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno_ret {
        b = b.default_errno_ret(errno);
    }
    if !architectures.is_empty() {
        b = b.architectures(architectures);
    }
    if !profile.flags.is_empty() {
        b = b.flags(profile.flags);
    }
    if let Some(p) = profile.listener_path {
        b = b.listener_path(p);
    }
    if let Some(m) = profile.listener_metadata {
        b = b.listener_metadata(m);
    }
    Ok(b.build()?)
}

/// The container's seccomp filter, compiled against the host and its bounding
/// capabilities (bare names such as `CHOWN`); `None` means unconfined.
pub(super) fn render(
    input: &RenderInput<'_>,
    caps: &BTreeSet<String>,
) -> Result<Option<LinuxSeccomp>, RenderError> {
    let c = input.container;
    if c.privileged {
        return Ok(None);
    }
    let (name, text) = match &c.seccomp {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => ("default".to_string(), DEFAULT_PROFILE),
        Seccomp::Profile(file) => match input.seccomp_profile {
            Some(text) => (file.clone(), text),
            None => return Err(RenderError::missing(c, format!("seccomp profile `{file}`"))),
        },
    };
    let full_caps: BTreeSet<String> = caps.iter().map(|c| format!("CAP_{c}")).collect();
    let (native, arch) = host_arch(&input.host.arch);
    let target = Target {
        native,
        arch,
        kernel: input.host.kernel,
        caps: &full_caps,
    };
    compile(text, &target)
        .map(Some)
        .map_err(|e| RenderError::Seccomp {
            container: c.name.clone(),
            profile: name,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(caps: &BTreeSet<String>) -> Target<'_> {
        Target {
            native: Some("amd64"),
            arch: Some(Arch::ScmpArchX86_64),
            kernel: (6, 1),
            caps,
        }
    }

    fn names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_shape() {
        let caps = BTreeSet::new();
        let s = compile(DEFAULT_PROFILE, &target(&caps)).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        let n = names(&s);
        assert!(n.contains(&"read".to_string()) && n.contains(&"arch_prctl".to_string()));
        // Capability-gated groups are absent without the capabilities.
        assert!(!n.contains(&"mount".to_string()) && !n.contains(&"bpf".to_string()));
        assert!(!n.contains(&"chroot".to_string()));
        // Other arches' syscalls are absent.
        assert!(!n.contains(&"riscv_flush_icache".to_string()));
        // clone is restricted by argument, clone3 answers ENOSYS.
        let clone3 = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &vec!["clone3".to_string()])
            .unwrap();
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(38));
    }

    #[test]
    fn capabilities_unlock_groups() {
        let caps: BTreeSet<String> = ["CAP_SYS_ADMIN", "CAP_SYS_CHROOT"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = compile(DEFAULT_PROFILE, &target(&caps)).unwrap();
        let n = names(&s);
        assert!(n.contains(&"mount".to_string()) && n.contains(&"chroot".to_string()));
        // With CAP_SYS_ADMIN the restricted clone and clone3 rules are excluded.
        let restricted_clone = s
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.names() == &vec!["clone".to_string()] && r.args().is_some());
        assert!(!restricted_clone);
    }

    #[test]
    fn arm64_and_old_kernel() {
        let caps = BTreeSet::new();
        let t = Target {
            native: Some("arm64"),
            arch: Some(Arch::ScmpArchAarch64),
            kernel: (4, 4),
            caps: &caps,
        };
        let s = compile(DEFAULT_PROFILE, &t).unwrap();
        assert_eq!(
            s.architectures().clone().unwrap(),
            vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
        );
        let n = names(&s);
        assert!(n.contains(&"arm_fadvise64_64".to_string()));
        assert!(!n.contains(&"arch_prctl".to_string()));
        // ptrace needs 4.8.
        assert!(!n.contains(&"ptrace".to_string()));
    }

    #[test]
    fn profile_errors() {
        let caps = BTreeSet::new();
        let t = target(&caps);
        assert!(
            compile("{}", &t)
                .unwrap_err()
                .to_string()
                .contains("defaultAction")
        );
        assert!(
            compile(
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultActoin":1}"#,
                &t
            )
            .unwrap_err()
            .to_string()
            .contains("unknown field")
        );
        let both = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":null}]}"#;
        assert!(
            compile(both, &t)
                .unwrap_err()
                .to_string()
                .contains("archMap")
        );
        let legacy = r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"name":"kexec_load","action":"SCMP_ACT_ERRNO","args":[]}]}"#;
        let s = compile(legacy, &t).unwrap();
        assert_eq!(names(&s), vec!["kexec_load".to_string()]);
        assert!(s.syscalls().as_ref().unwrap()[0].args().is_none());
    }
}
