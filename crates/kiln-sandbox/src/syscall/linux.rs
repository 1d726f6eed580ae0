//! The real implementation of [`Syscall`], straight onto rustix.

use std::ffi::CStr;

use rustix::fs::{Dev, FileType, Mode, CWD};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Gid, Pid, Signal};
use rustix::thread::UnshareFlags;

use super::{SysResult, Syscall};

/// Makes real kernel calls. Stateless and allocation-free.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: MountFlags,
        data: Option<&CStr>,
    ) -> SysResult {
        rustix::mount::mount(source, target, fstype, flags, data)
    }

    fn bind_mount(&self, source: &CStr, target: &CStr) -> SysResult {
        rustix::mount::mount_bind(source, target)
    }

    fn rbind_mount(&self, source: &CStr, target: &CStr) -> SysResult {
        rustix::mount::mount_bind_recursive(source, target)
    }

    fn create_file(&self, path: &CStr, mode: u32) -> SysResult {
        rustix::fs::open(
            path,
            rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map(drop)
    }

    fn remount(&self, target: &CStr, flags: MountFlags) -> SysResult {
        rustix::mount::mount_remount(target, flags, c"")
    }

    fn set_propagation(&self, target: &CStr, flags: MountPropagationFlags) -> SysResult {
        rustix::mount::mount_change(target, flags)
    }

    fn umount2(&self, target: &CStr, flags: UnmountFlags) -> SysResult {
        rustix::mount::unmount(target, flags)
    }

    fn unshare(&self, flags: UnshareFlags) -> SysResult {
        // SAFETY: kiln never passes `UnshareFlags::FILES`, the flag that can
        // make file descriptors unusable across threads.
        debug_assert!(!flags.contains(UnshareFlags::FILES));
        unsafe { rustix::thread::unshare_unsafe(flags) }
    }

    fn chroot(&self, path: &CStr) -> SysResult {
        rustix::process::chroot(path)
    }

    fn chdir(&self, path: &CStr) -> SysResult {
        rustix::process::chdir(path)
    }

    fn mkdir(&self, path: &CStr, mode: u32) -> SysResult {
        rustix::fs::mkdir(path, Mode::from_raw_mode(mode))
    }

    fn mknod_char(&self, path: &CStr, mode: u32, dev: Dev) -> SysResult {
        rustix::fs::mknodat(
            CWD,
            path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(mode),
            dev,
        )
    }

    fn chmod(&self, path: &CStr, mode: u32) -> SysResult {
        rustix::fs::chmod(path, Mode::from_raw_mode(mode))
    }

    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        rustix::fs::symlink(target, link)
    }

    fn sethostname(&self, name: &[u8]) -> SysResult {
        rustix::system::sethostname(name)
    }

    fn setgroups(&self, groups: &[Gid]) -> SysResult {
        rustix::thread::set_thread_groups(groups)
    }

    fn setgid(&self, gid: u32) -> SysResult {
        rustix::thread::set_thread_gid(Gid::from_raw(gid))
    }

    fn setuid(&self, uid: u32) -> SysResult {
        rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(uid))
    }

    fn set_parent_death_signal(&self, sig: Option<Signal>) -> SysResult {
        rustix::process::set_parent_process_death_signal(sig)
    }

    fn write_new_file(
        &self,
        path: &CStr,
        content: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> SysResult {
        use rustix::fs::OFlags;
        let fd = rustix::fs::open(
            path,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut rest = content;
        while !rest.is_empty() {
            match rustix::io::write(&fd, rest) {
                Ok(0) => return Err(rustix::io::Errno::IO),
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        rustix::fs::fchown(
            &fd,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
    }

    fn unlink(&self, path: &CStr) -> SysResult {
        rustix::fs::unlink(path)
    }

    fn loopback_up(&self) -> SysResult {
        let errno = || {
            rustix::io::Errno::from_raw_os_error(
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            )
        };
        // SAFETY: plain socket and ioctl calls on a zeroed `ifreq` naming "lo"; the socket is
        // closed on every path.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(errno());
            }
            let mut request: libc::ifreq = std::mem::zeroed();
            request.ifr_name[0] = b'l' as libc::c_char;
            request.ifr_name[1] = b'o' as libc::c_char;
            let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut request);
            if result == 0 {
                request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                result = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request);
            }
            let failed = (result != 0).then(errno);
            libc::close(fd);
            failed.map_or(Ok(()), Err)
        }
    }

    fn kill(&self, pid: i32, sig: Signal) -> SysResult {
        // Refuse pid <= 0: those address process groups or every process.
        let pid = Pid::from_raw(pid).ok_or(rustix::io::Errno::INVAL)?;
        rustix::process::kill_process(pid, sig)
    }
}
