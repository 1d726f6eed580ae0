//! Stage 2, the first fork: new namespaces, private mounts, second fork.
//!
//! Runs in std's `pre_exec` hook, after fork and before exec, in a child
//! that is single-threaded (so `unshare(CLONE_NEWNS)` works). This process
//! never execs: it forks pid 1 of the new pid namespace, waits for it,
//! reports its wait status and exits.

use std::os::fd::{BorrowedFd, RawFd};

use rustix::io::Errno;
use rustix::mount::MountPropagationFlags;
use rustix::process::{Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use crate::error::Stage;
use crate::process::init;
use crate::process::message::Message;
use crate::process::plan::Plan;
use crate::syscall::{LinuxSyscall, Syscall};

/// Namespaces every step gets. UTS makes `sethostname` safe; IPC keeps
/// SysV objects of the step off the host.
pub(crate) const NAMESPACES: UnshareFlags = UnshareFlags::NEWNS
    .union(UnshareFlags::NEWPID)
    .union(UnshareFlags::NEWUTS)
    .union(UnshareFlags::NEWIPC);

/// Leaves the caller's namespaces. The first mount call is always the
/// recursive private propagation of `/`: nothing mounted later can
/// propagate back to the host.
pub(crate) fn isolate(sys: &dyn Syscall, new_network: bool) -> Result<(), (Stage, Errno)> {
    // If the caller dies, this process dies, and pid 1 follows (init.rs).
    sys.set_parent_death_signal(Some(Signal::KILL))
        .map_err(|e| (Stage::ParentDeathSignal, e))?;
    let namespaces = if new_network {
        NAMESPACES.union(UnshareFlags::NEWNET)
    } else {
        NAMESPACES
    };
    sys.unshare(namespaces).map_err(|e| (Stage::Unshare, e))?;
    sys.set_propagation(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| (Stage::MakePrivate, e))?;
    Ok(())
}

/// Closes every descriptor above stderr except `keep`, so this waiting
/// process does not hold std's exec-error pipe (which would keep `spawn`
/// blocked until the step ends) or unrelated descriptors of the caller.
fn close_fds_except(keep: RawFd) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024)
        .min(65536) as RawFd;
    for fd in 3..limit {
        if fd != keep && rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok() {
            // SAFETY: this process only waits and exits; nothing else
            // refers to these descriptors.
            unsafe { rustix::io::close(fd) };
        }
    }
}

/// The `pre_exec` body. Returns only in pid 1 (to let std exec the command)
/// or with an error.
pub(crate) fn run(plan: &Plan, msg_fd: RawFd) -> std::io::Result<()> {
    // SAFETY: `msg_fd` is the write end of the status pipe, kept open by the
    // caller until `spawn` returns.
    let msg = unsafe { BorrowedFd::borrow_raw(msg_fd) };
    let sys = LinuxSyscall;
    let fail = |stage: Stage, errno: Errno| {
        Message::SetupFailed {
            stage,
            errno: errno.raw_os_error(),
        }
        .send(msg);
        std::io::Error::from(errno)
    };
    isolate(&sys, plan.new_network).map_err(|(stage, e)| fail(stage, e))?;
    // SAFETY: this process is single-threaded (a fresh fork child), so
    // fork has no other threads' locks to worry about. The child only makes
    // raw syscalls on prepared data before std's exec path.
    let forked = unsafe { libc::fork() };
    match forked {
        -1 => Err(fail(
            Stage::Fork,
            Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::AGAIN),
        )),
        0 => init::run(plan, &sys, msg),
        pid => {
            let pid = rustix::process::Pid::from_raw(pid).unwrap_or_else(|| exit_now(125));
            close_fds_except(msg_fd);
            let status = loop {
                match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
                    Ok(Some((_, st))) => break st.as_raw(),
                    Err(Errno::INTR) | Ok(None) => continue,
                    Err(_) => exit_now(125),
                }
            };
            Message::StepExited {
                wait_status: status,
            }
            .send(msg);
            exit_now(0)
        }
    }
}

/// `_exit(code)`: leaves without running the caller's atexit handlers or
/// flushing its stdio buffers, which belong to the caller.
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}
