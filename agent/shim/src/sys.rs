//! The shim's only `unsafe` code: thin wrappers over the syscalls that std does not
//! offer (fork, setsid, the child-subreaper flag, signal handlers, `waitpid(-1)`,
//! poll). Each wrapper keeps the raw call in one place and returns `io::Result`.
//!
//! The shim never starts a thread, which is what makes `fork` without `exec` sound.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Which side of a `fork` we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Parent { child: i32 },
    Child,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `fork(2)`.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the shim is single-threaded at every call site (it never spawns threads),
    // so the child inherits no lock held by another thread and may run ordinary code.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent { child: pid }
    })
}

/// `setsid(2)`: a new session without a controlling terminal.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no memory is involved; the call only changes process attributes.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Makes this process the reaper of its orphaned descendants (the container's init once
/// the runtime's `create` process exits), as containerd's shim does.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// Ends the process at once without running destructors or flushing stdio; used by the
/// intermediate child of the double fork.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` never returns and needs no invariant from the caller.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor from `first` up, so the shim keeps nothing it inherited from
/// the agent (a pipe held open here would block the agent's reads forever).
pub fn close_fds_from(first: RawFd) {
    // SAFETY: closes descriptors this process may hold; the shim owns no Rust object
    // wrapping them yet (it is called before any file is opened).
    let ret = unsafe { libc::close_range(first as libc::c_uint, libc::c_uint::MAX, 0) };
    if ret < 0 {
        // Kernels before 5.9: close them one by one.
        for fd in first..1024 {
            // SAFETY: as above; EBADF for unused numbers is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// `dup2(2)`: makes `to` a copy of `from`.
pub fn dup2(from: &impl AsRawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: both are plain descriptor numbers; `to` is one of 0..=2 at every call site,
    // which no Rust object owns.
    check(unsafe { libc::dup2(from.as_raw_fd(), to) }).map(drop)
}

/// Sets `O_NONBLOCK` on a descriptor.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL read and write the descriptor's flags, no memory.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// The write end of the SIGCHLD self-pipe, read by the handler.
static SIGCHLD_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGCHLD_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno is thread-local and we restore it; write(2) is async-signal-safe,
        // and the one-byte buffer lives on this stack frame for the call.
        unsafe {
            let errno = *libc::__errno_location();
            let byte = 1u8;
            libc::write(fd, (&raw const byte).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

extern "C" fn on_ignored(_: libc::c_int) {}

fn set_handler(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: `sigaction` is zero-initialisable plain data; the handlers above are
    // async-signal-safe. A handler (unlike SIG_IGN) is reset to the default by execve, so
    // the runtime and the container do not inherit the shim's choices.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut action.sa_mask);
        check(libc::sigaction(signal, &action, std::ptr::null_mut())).map(drop)
    }
}

/// Routes SIGCHLD to a byte on `pipe_write` (made non-blocking), so the event loop can
/// poll for child exits next to the output pipes.
pub fn notify_sigchld(pipe_write: &impl AsRawFd) -> io::Result<()> {
    set_nonblocking(pipe_write)?;
    SIGCHLD_FD.store(pipe_write.as_raw_fd(), Ordering::Relaxed);
    set_handler(libc::SIGCHLD, on_sigchld)
}

/// Ignores SIGHUP and SIGINT in the shim only (a no-op handler, not SIG_IGN, so that
/// children start with the default disposition). SIGPIPE is already ignored by the Rust
/// runtime and reset by `std::process::Command` for children.
pub fn ignore_hangups() -> io::Result<()> {
    set_handler(libc::SIGHUP, on_ignored)?;
    set_handler(libc::SIGINT, on_ignored)
}

/// Reaps one exited child, if any: `Some((pid, raw wait status))`; `None` when no child
/// has exited (or there are no children).
pub fn reap_one() -> Option<(i32, i32)> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            return Some((pid, status));
        }
        if pid < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

/// Waits for one specific child and returns its raw wait status.
pub fn wait_for(pid: i32) -> io::Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret >= 0 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One entry for [`poll`].
pub type PollFd = libc::pollfd;

/// A poll entry waiting for input on `fd`.
pub fn poll_in(fd: RawFd) -> PollFd {
    PollFd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// True when the entry is readable or hung up (a read will not block).
pub fn is_ready(p: &PollFd) -> bool {
    p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// `poll(2)`; `timeout_ms < 0` waits forever. EINTR returns `Ok(0)`.
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: the pointer and length describe the caller's slice for the call's duration.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}
