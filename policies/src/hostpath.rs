//! Host paths: lexical normalisation and the built-in deny list (DESIGN.md §5).
//!
//! A bind source is normalised (`.`, `..`, repeated and trailing slashes) before it is
//! matched, so `/run/../var/run/docker.sock` is seen as `/var/run/docker.sock`. The
//! deny list denies `/` itself, and for every other entry any path that equals it,
//! lies inside it, or contains it — so `/var` is denied because it contains
//! `/var/run/docker.sock`. No allow entry reopens a denied path.
//!
//! Normalisation is lexical: symbolic links on the host are resolved by the executor,
//! which re-checks the resolved path before mounting.

/// Host paths no container may bind, besides berth's own state and run directories.
/// CIS Docker 5.6 (`/ /boot /dev /etc /lib /proc /sys /usr`) and 5.32 (runtime
/// sockets), root's home, the merged-/usr aliases, and other runtimes' state and
/// sockets, any of which is a path to controlling the host.
pub const DENY: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/sbin",
    "/sys",
    "/usr",
    "/run/containerd",
    "/run/crio",
    "/run/docker",
    "/run/docker.sock",
    "/run/podman",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/var/lib/kubelet",
    "/var/run/containerd",
    "/var/run/crio",
    "/var/run/docker",
    "/var/run/docker.sock",
];

/// Normalises an absolute path lexically: `/a/./b//c/../d/` → `/a/b/d`; `..` at the
/// root stays at the root.
pub fn normalize(path: &str) -> String {
    berth_spec::types::normalize_path(path)
}

/// Whether `path` lies inside `dir` (or equals it); both normalised.
pub fn within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The built-in deny list, plus berth's own state and run directories.
#[derive(Debug, Clone)]
pub struct DenyList {
    entries: Vec<String>,
}

impl DenyList {
    pub fn new(state_dir: &str, run_dir: &str) -> DenyList {
        let mut entries: Vec<String> = DENY.iter().map(|s| s.to_string()).collect();
        for d in [state_dir, run_dir] {
            if d.starts_with('/') {
                entries.push(normalize(d));
            }
        }
        entries.sort();
        entries.dedup();
        DenyList { entries }
    }

    /// The deny entry that denies a normalised path, if any: `/` only by equality,
    /// every other entry when the path equals it, lies inside it, or contains it.
    pub fn denies(&self, path: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|d| {
                if d.as_str() == "/" {
                    path == "/"
                } else {
                    within(path, d) || within(d, path)
                }
            })
            .map(String::as_str)
    }
}

/// Whether a normalised path is inside one of the allow entries (normalised here).
pub fn allowed(path: &str, allow: &[String]) -> bool {
    allow.iter().any(|a| within(path, &normalize(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_dots_slashes_and_parents() {
        assert_eq!(
            normalize("/run/../var/run/docker.sock"),
            "/var/run/docker.sock"
        );
        assert_eq!(normalize("/etc/"), "/etc");
        assert_eq!(normalize("//srv//./media/"), "/srv/media");
        assert_eq!(normalize("/../../etc"), "/etc");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn deny_list_equal_inside_or_containing() {
        let d = DenyList::new("/var/lib/berth", "/run/berth/");
        assert_eq!(d.denies("/"), Some("/"));
        assert_eq!(d.denies("/etc"), Some("/etc"));
        assert_eq!(d.denies("/etc/ssl/certs"), Some("/etc"));
        assert_eq!(d.denies("/var"), Some("/var/lib/berth"));
        assert_eq!(d.denies("/run"), Some("/run/berth"));
        assert_eq!(
            d.denies("/var/run/docker.sock"),
            Some("/var/run/docker.sock")
        );
        assert_eq!(d.denies("/var/lib/berth/volumes/x"), Some("/var/lib/berth"));
        assert_eq!(d.denies("/srv/media"), None);
        assert_eq!(d.denies("/var/log/app"), None);
        assert_eq!(d.denies("/etcetera"), None);
    }

    #[test]
    fn allow_prefixes() {
        let allow = vec!["/srv/".to_string(), "/data/app".to_string()];
        assert!(allowed("/srv/media", &allow));
        assert!(allowed("/data/app", &allow));
        assert!(!allowed("/data/application", &allow));
        assert!(!allowed("/opt", &allow));
        assert!(allowed("/opt", &["/".to_string()]));
        assert!(!allowed("/opt", &[]));
    }
}
