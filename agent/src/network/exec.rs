//! The real [`CniExec`]: finds `<dir>/<type>` on the CNI search path and runs it with
//! the `CNI_*` variables, the config on stdin, stdout captured. The agent's own
//! environment (notably `PATH`, which the plugins need to find `iptables`) is kept.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::cni::{CniArgs, CniExec, ExecFailure};

/// Where the plugins are looked for unless configured: Debian's
/// containernetworking-plugins, then the upstream release tarball's location.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni:/opt/cni/bin";

/// Runs plugins found on a search path.
#[derive(Debug, Clone)]
pub struct PluginExec {
    dirs: Vec<PathBuf>,
}

impl PluginExec {
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        PluginExec { dirs }
    }

    fn joined(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Splits a `:`-separated search path, dropping empty entries.
pub fn split_path(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

impl CniExec for PluginExec {
    fn exec(&self, plugin: &str, args: &CniArgs<'_>, stdin: &[u8]) -> Result<Vec<u8>, ExecFailure> {
        // A type is a file name; never let a config point outside the search path.
        let path = (!plugin.contains('/') && !plugin.is_empty())
            .then(|| {
                self.dirs
                    .iter()
                    .map(|d| d.join(plugin))
                    .find(|p| p.is_file())
            })
            .flatten()
            .ok_or_else(|| ExecFailure::NotFound {
                searched: self.joined(),
            })?;
        let mut cmd = Command::new(&path);
        cmd.env("CNI_COMMAND", args.command.to_string())
            .env("CNI_CONTAINERID", args.container_id)
            .env("CNI_IFNAME", args.ifname)
            .env("CNI_PATH", self.joined())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match args.netns {
            Some(ns) => cmd.env("CNI_NETNS", ns),
            None => cmd.env_remove("CNI_NETNS"),
        };
        let mut child = crate::runtime::oci::spawn(&mut cmd).map_err(ExecFailure::Spawn)?;
        // Configs are a few KiB, well under a pipe's buffer: write all, then wait.
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin).map_err(ExecFailure::Spawn)?;
        }
        let out = child.wait_with_output().map_err(ExecFailure::Spawn)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(ExecFailure::Failed {
                status: out.status.code(),
                stdout: out.stdout,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::network::cni::CniCommand;

    fn args() -> CniArgs<'static> {
        CniArgs {
            command: CniCommand::Add,
            container_id: "c1",
            netns: Some(Path::new("/run/x")),
            ifname: "eth0",
        }
    }

    #[test]
    fn passes_the_cni_environment_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("echoenv");
        std::fs::write(
            &script,
            "#!/bin/sh\nprintf '%s|%s|%s|%s|%s|' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_NETNS\" \"$CNI_IFNAME\" \"$CNI_PATH\"\ncat\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let exec = PluginExec::new(vec![PathBuf::from("/nonexistent"), dir.path().into()]);
        let out = exec.exec("echoenv", &args(), b"{}").unwrap();
        let want = format!(
            "ADD|c1|/run/x|eth0|/nonexistent:{}|{{}}",
            dir.path().display()
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn missing_and_failing_plugins() {
        let exec = PluginExec::new(split_path("/nonexistent::/also-not"));
        let err = exec.exec("bridge", &args(), b"{}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "is not installed (searched /nonexistent:/also-not)"
        );
        assert!(matches!(
            exec.exec("../bin/sh", &args(), b"").unwrap_err(),
            ExecFailure::NotFound { .. }
        ));
        let exec = PluginExec::new(vec![PathBuf::from("/bin")]);
        let err = exec.exec("false", &args(), b"").unwrap_err();
        assert!(matches!(
            err,
            ExecFailure::Failed {
                status: Some(1),
                ..
            }
        ));
    }
}
