//! Running a runtime command: output captured in files, a deadline enforced with a
//! pidfd.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A finished command's status and output.
#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Spawns `cmd`, trying again for up to half a second while the executable is busy
/// (ETXTBSY): a binary being replaced by a package upgrade, or a file just written
/// whose descriptor a child forked meanwhile by another thread holds until its exec.
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Runs `cmd` with stdin `/dev/null` and stdout/stderr in anonymous temporary files:
/// files, not pipes, because a process the command leaves behind (a created
/// container's init) keeps its stdio open, and waiting for end-of-file would wait for
/// that. `Ok(None)`: killed after `timeout`.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> io::Result<Option<Captured>> {
    let mut out = tempfile::tempfile()?;
    let mut err = tempfile::tempfile()?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    let mut child = spawn(cmd)?;
    let Some(status) = wait_timeout(&mut child, timeout)? else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(None);
    };
    Ok(Some(Captured {
        status,
        stdout: read_all(&mut out)?,
        stderr: read_all(&mut err)?,
    }))
}

fn read_all(f: &mut File) -> io::Result<String> {
    f.rewind()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Waits for a child of this process for at most `timeout`, without polling: a pidfd
/// becomes readable when the child exits (our own unreaped child, so its pid cannot be
/// reused meanwhile). Falls back to `try_wait` with short sleeps where pidfds are
/// missing (kernels before 5.3).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::process::{Pid, PidfdFlags, pidfd_open};

    let deadline = Instant::now() + timeout;
    if let Ok(fd) = pidfd_open(Pid::from_child(child), PidfdFlags::empty()) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec::try_from(left).map_err(|_| io::Error::other("timeout too large"))?;
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => return Ok(None),
                Ok(_) => return child.wait().map(Some),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut nap = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}
