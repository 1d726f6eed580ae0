//! The one door to the kernel: every namespace, mount and credential call of
//! a RUN step goes through [`Syscall`].
//!
//! [`LinuxSyscall`] makes the real calls. [`RecordingSyscall`] only records
//! them, so tests can check the order of setup steps without root.
//!
//! Methods take `&CStr` and borrowed slices and must not allocate in the real
//! implementation: they run in a forked child of a possibly multi-threaded
//! process, between `fork` and `exec`.

mod linux;
mod recording;

use std::ffi::CStr;

pub use linux::LinuxSyscall;
pub use recording::{Call, RecordingSyscall};
pub use rustix::fs::Dev;
pub use rustix::io::Errno;
pub use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
pub use rustix::process::Signal;
pub use rustix::thread::UnshareFlags;

/// Result of a single kernel call.
pub type SysResult = Result<(), Errno>;

/// Kernel calls used to set up and tear down a RUN step.
///
/// Implementations must be usable after `fork` in a child: no locks that
/// another thread may hold, no allocation in the real implementation.
pub trait Syscall: Send + Sync {
    /// `mount(source, target, fstype, flags, data)` for a new filesystem.
    fn mount(
        &self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: MountFlags,
        data: Option<&CStr>,
    ) -> SysResult;
    /// `mount(source, target, NULL, MS_BIND, NULL)`.
    fn bind_mount(&self, source: &CStr, target: &CStr) -> SysResult;
    /// `mount(source, target, NULL, MS_BIND | MS_REC, NULL)`: a bind with the mounts below
    /// (what a user namespace allows for a tree with locked submounts, like `/sys`).
    fn rbind_mount(&self, source: &CStr, target: &CStr) -> SysResult;
    /// `open(path, O_CREAT | O_WRONLY, mode)` then `close`: an empty file (a bind target).
    fn create_file(&self, path: &CStr, mode: u32) -> SysResult;
    /// `mount(NULL, target, NULL, MS_REMOUNT | flags, NULL)`.
    fn remount(&self, target: &CStr, flags: MountFlags) -> SysResult;
    /// `mount(NULL, target, NULL, propagation, NULL)`: change propagation.
    fn set_propagation(&self, target: &CStr, flags: MountPropagationFlags) -> SysResult;
    /// `umount2(target, flags)`.
    fn umount2(&self, target: &CStr, flags: UnmountFlags) -> SysResult;
    /// `unshare(flags)` for the calling (single-threaded) process.
    fn unshare(&self, flags: UnshareFlags) -> SysResult;
    /// `chroot(path)`.
    fn chroot(&self, path: &CStr) -> SysResult;
    /// `chdir(path)`.
    fn chdir(&self, path: &CStr) -> SysResult;
    /// `mkdir(path, mode)`.
    fn mkdir(&self, path: &CStr, mode: u32) -> SysResult;
    /// `mknod(path, S_IFCHR | mode, dev)`: a character device node.
    fn mknod_char(&self, path: &CStr, mode: u32, dev: Dev) -> SysResult;
    /// `chmod(path, mode)`.
    fn chmod(&self, path: &CStr, mode: u32) -> SysResult;
    /// `symlink(target, link)`.
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult;
    /// `sethostname(name)`; only valid inside a new UTS namespace.
    fn sethostname(&self, name: &[u8]) -> SysResult;
    /// `setgroups(groups)` for the calling thread.
    fn setgroups(&self, groups: &[rustix::process::Gid]) -> SysResult;
    /// `setgid(gid)` for the calling thread.
    fn setgid(&self, gid: u32) -> SysResult;
    /// `setuid(uid)` for the calling thread.
    fn setuid(&self, uid: u32) -> SysResult;
    /// `prctl(PR_SET_PDEATHSIG, sig)`.
    fn set_parent_death_signal(&self, sig: Option<Signal>) -> SysResult;
    /// Sets the `lo` interface of this network namespace up (`SIOCSIFFLAGS`).
    fn loopback_up(&self) -> SysResult;
    /// Creates `path`, which must not exist, holding `content`, then gives it `mode` and owner
    /// `uid:gid`: a file made for the step (a secret on the step's own tmpfs).
    fn write_new_file(
        &self,
        path: &CStr,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> SysResult;
    /// `unlink(path)`.
    fn unlink(&self, path: &CStr) -> SysResult;
    /// `kill(pid, sig)`.
    fn kill(&self, pid: i32, sig: Signal) -> SysResult;
}
