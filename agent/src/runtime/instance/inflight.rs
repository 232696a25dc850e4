//! Is a `berth-shim` of an instance still alive? A pass killed while the shim runs the
//! runtime's `create` leaves that shim working: for a moment the instance has a
//! directory but no runtime state yet, and a removal that believed "nothing there"
//! would let the create land afterwards, under the very id the next create uses
//! ("container with given ID already exists"). The shim's command line names the
//! instance's exit file, a path unique to the state directory and the instance.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Most of a shim's command line fits in this; a longer one is read in part, and the
/// exit file comes early in it (the agent writes it before the runtime's arguments).
const CMDLINE_MAX: u64 = 16 * 1024;

/// Whether any process's command line carries `--exit-file EXIT_FILE`.
pub fn shim_alive(exit_file: &Path) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    let want = exit_file.as_os_str().as_bytes();
    dir.flatten()
        .filter(|e| e.file_name().as_bytes().iter().all(u8::is_ascii_digit))
        .any(|e| names(&e.path().join("cmdline"), want))
}

fn names(cmdline: &Path, exit_file: &[u8]) -> bool {
    let mut buf = Vec::new();
    let read = std::fs::File::open(cmdline).and_then(|f| f.take(CMDLINE_MAX).read_to_end(&mut buf));
    if read.is_err() {
        return false;
    }
    let mut args = buf.split(|b| *b == 0);
    while let Some(a) = args.next() {
        if a == b"--exit-file" {
            if args.next() == Some(exit_file) {
                return true;
            }
        } else if a.strip_prefix(b"--exit-file=") == Some(exit_file) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_naming_the_exit_file_is_found_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let exit = dir.path().join("instances/x-1/exit.json");
        assert!(!shim_alive(&exit));
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 30; :",
                "berth-shim",
                "--id",
                "x-1",
                "--exit-file",
            ])
            .arg(&exit)
            .spawn()
            .unwrap();
        // Until the child has exec'd, its command line is still this test's.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !shim_alive(&exit) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(shim_alive(&exit));
        assert!(!shim_alive(&dir.path().join("instances/x-2/exit.json")));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!shim_alive(&exit));
    }
}
