//! The rule catalogue: every rule berth knows, with the text reports show about it.
//!
//! A rule's id is its name in policy files, waivers and reports. Its summary, anchor
//! and remedy here are what `policies/README.md` documents at length; reports (SARIF
//! rule descriptions, text remedies) use these short forms.

use std::fmt;

use serde::Serialize;

/// A policy rule. The order is the order of reports and of `policies/README.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    RunAsNonRoot,
    NonRootGroup,
    DropAllCapabilities,
    AllowedCapabilities,
    ImageDigestPinned,
    AllowedRegistries,
    ImageSignature,
    NoPrivileged,
    NoHostNetwork,
    AllowedHostPaths,
    AllowedDevices,
    SafeSysctls,
    NoNewPrivileges,
    ResourceLimits,
    SeccompConfined,
    NoSecretsInEnv,
    ReadOnlyRootfs,
    HostPortsBound,
}

/// What reports say about a rule.
#[derive(Debug, Clone, Copy)]
pub struct RuleInfo {
    pub id: &'static str,
    /// One line: what the rule requires.
    pub summary: &'static str,
    /// Where the rule comes from (PSS, Kyverno, CIS Docker Benchmark).
    pub anchor: &'static str,
    /// How to fix a violation, in general terms (findings may be more specific).
    pub remedy: &'static str,
    /// Whether the rule takes an `allow` list.
    pub has_allow: bool,
}

impl Rule {
    pub const ALL: [Rule; 18] = [
        Rule::RunAsNonRoot,
        Rule::NonRootGroup,
        Rule::DropAllCapabilities,
        Rule::AllowedCapabilities,
        Rule::ImageDigestPinned,
        Rule::AllowedRegistries,
        Rule::ImageSignature,
        Rule::NoPrivileged,
        Rule::NoHostNetwork,
        Rule::AllowedHostPaths,
        Rule::AllowedDevices,
        Rule::SafeSysctls,
        Rule::NoNewPrivileges,
        Rule::ResourceLimits,
        Rule::SeccompConfined,
        Rule::NoSecretsInEnv,
        Rule::ReadOnlyRootfs,
        Rule::HostPortsBound,
    ];

    /// The ids, for suggestions and messages.
    pub fn ids() -> Vec<&'static str> {
        Rule::ALL.iter().map(|r| r.id()).collect()
    }

    pub fn id(self) -> &'static str {
        self.info().id
    }

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn info(self) -> RuleInfo {
        let (id, summary, anchor, remedy, has_allow) = match self {
            Rule::RunAsNonRoot => (
                "run-as-non-root",
                "containers run as a non-root user (uid other than 0)",
                "PSS restricted runAsNonRoot/runAsUser; Kyverno require-run-as-nonroot; CIS Docker 4.1",
                "set `user = \"UID:GID\"` with a non-zero uid, e.g. \"10001:10001\"",
                false,
            ),
            Rule::NonRootGroup => (
                "non-root-group",
                "containers run with a primary group other than 0",
                "PSS restricted (optional non-root groups); Kyverno require-non-root-groups",
                "give a non-zero gid: `user = \"UID:GID\"`",
                false,
            ),
            Rule::DropAllCapabilities => (
                "drop-all-capabilities",
                "containers drop every capability (`cap_drop = [\"ALL\"]`)",
                "PSS restricted capabilities; Kyverno require-drop-all; CIS Docker 5.4",
                "set `cap_drop = [\"ALL\"]` and add back only what is needed with `cap_add`",
                false,
            ),
            Rule::AllowedCapabilities => (
                "allowed-capabilities",
                "capabilities added with `cap_add` are in the policy's allow list",
                "PSS baseline/restricted capabilities; Kyverno disallow-capabilities(-strict); CIS Docker 5.4",
                "remove the capability from `cap_add`, or ask the node owner to allow it",
                true,
            ),
            Rule::ImageDigestPinned => (
                "image-digest-pinned",
                "images are pinned by digest (`NAME@sha256:…`)",
                "Kyverno require-image-digest; CIS Docker 5.28",
                "pin the image by digest: `image = \"NAME[:TAG]@sha256:<64 hex>\"`",
                false,
            ),
            Rule::AllowedRegistries => (
                "allowed-registries",
                "images come from an allowed registry/repository prefix",
                "Kyverno restrict-image-registries",
                "use an image from an allowed registry, or ask the node owner to add its prefix",
                true,
            ),
            Rule::ImageSignature => (
                "image-signature",
                "images are signed by a key or keyless identity the node trusts (checked at pull time)",
                "Kyverno verify-image; CIS Docker 4.5",
                "sign the image with a key in the node's `policy.trusted_keys` (`berth sign REF --key KEY`), or keyless (a cosign 3 bundle) as an identity in its `policy.trusted_identities`",
                false,
            ),
            Rule::NoPrivileged => (
                "no-privileged",
                "containers are not privileged",
                "PSS baseline privileged; CIS Docker 5.5",
                "remove `privileged = true`; add only the capabilities or devices needed",
                false,
            ),
            Rule::NoHostNetwork => (
                "no-host-network",
                "containers do not share the host's network namespace",
                "PSS baseline hostNamespaces; CIS Docker 5.10",
                "use bridge networking (`networks`, `ports`) instead of `network_mode = \"host\"`",
                false,
            ),
            Rule::AllowedHostPaths => (
                "allowed-host-paths",
                "bind mounts use allowed host paths, never a path on the built-in deny list",
                "PSS baseline hostPathVolumes; CIS Docker 5.6 and 5.32",
                "use a named volume, or bind a dedicated directory the node's policy allows",
                true,
            ),
            Rule::AllowedDevices => (
                "allowed-devices",
                "host devices passed in are in the policy's allow list",
                "CIS Docker 5.18; Docker's default device cgroup",
                "remove the device, or ask the node owner to allow it",
                true,
            ),
            Rule::SafeSysctls => (
                "safe-sysctls",
                "sysctls are in the Pod Security safe set",
                "PSS baseline sysctls",
                "remove the sysctl; only the namespaced safe set is allowed",
                false,
            ),
            Rule::NoNewPrivileges => (
                "no-new-privileges",
                "processes cannot gain privileges (no_new_privileges = true, the default)",
                "PSS restricted allowPrivilegeEscalation; CIS Docker 5.26",
                "remove `no_new_privileges = false` (the default is true)",
                false,
            ),
            Rule::ResourceLimits => (
                "resource-limits",
                "containers have a memory limit and a pids limit",
                "CIS Docker 5.11 and 5.29",
                "set `resources.memory` (e.g. \"128MiB\") and `resources.pids` (e.g. 256)",
                false,
            ),
            Rule::SeccompConfined => (
                "seccomp-confined",
                "containers run under a seccomp filter (not `unconfined`)",
                "PSS baseline/restricted seccompProfile; CIS Docker 5.22",
                "remove `seccomp = \"unconfined\"` (the default is Docker's profile) or give a profile file",
                false,
            ),
            Rule::NoSecretsInEnv => (
                "no-secrets-in-env",
                "no literal secrets in environment variables",
                "CIS Docker 4.10; Kubernetes good practice (secrets as files)",
                "deliver it as a secret file (`[[container.NAME.secrets]]`, read from /run/secrets/)",
                false,
            ),
            Rule::ReadOnlyRootfs => (
                "read-only-rootfs",
                "the root filesystem is read-only",
                "Kyverno require-ro-rootfs; CIS Docker 5.13",
                "set `read_only = true` and mount a tmpfs or volume where the application writes",
                false,
            ),
            Rule::HostPortsBound => (
                "host-ports-bound",
                "published ports are bound to a specific host address",
                "CIS Docker 5.14",
                "bind the port to one address: `ports = [\"127.0.0.1:8080:8080\"]`",
                false,
            ),
        };
        RuleInfo {
            id,
            summary,
            anchor,
            remedy,
            has_allow,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let ids = Rule::ids();
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), Rule::ALL.len());
        for r in Rule::ALL {
            assert_eq!(Rule::from_id(r.id()), Some(r));
        }
        assert_eq!(Rule::from_id("no-such-rule"), None);
    }
}
