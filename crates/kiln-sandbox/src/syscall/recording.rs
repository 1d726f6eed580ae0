//! A [`Syscall`] that makes no kernel calls and records what was asked.

use std::ffi::CStr;
use std::sync::Mutex;

use rustix::fs::Dev;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Gid, Signal};
use rustix::thread::UnshareFlags;

use super::{SysResult, Syscall};

/// One recorded kernel call, with its arguments as owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // fields mirror the syscall arguments
pub enum Call {
    Mount {
        source: String,
        target: String,
        fstype: String,
        flags: MountFlags,
        data: Option<String>,
    },
    BindMount {
        source: String,
        target: String,
    },
    RbindMount {
        source: String,
        target: String,
    },
    CreateFile(String),
    Remount {
        target: String,
        flags: MountFlags,
    },
    SetPropagation {
        target: String,
        flags: MountPropagationFlags,
    },
    Umount2 {
        target: String,
    },
    Unshare(UnshareFlags),
    Chroot(String),
    Chdir(String),
    Mkdir(String),
    MknodChar {
        path: String,
        dev: Dev,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Symlink {
        target: String,
        link: String,
    },
    Sethostname(String),
    Setgroups(Vec<u32>),
    Setgid(u32),
    Setuid(u32),
    SetParentDeathSignal(Option<i32>),
    LoopbackUp,
    /// A file made for the step: its path and size (never its content).
    WriteNewFile {
        path: String,
        len: usize,
        mode: u32,
    },
    Unlink(String),
    Kill {
        pid: i32,
        sig: i32,
    },
}

/// Records every call and reports success. For tests; never use it to run a
/// step (nothing would be isolated).
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: Mutex<Vec<Call>>,
}

impl RecordingSyscall {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls recorded so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, call: Call) -> SysResult {
        self.lock().push(call);
        Ok(())
    }
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: &CStr,
        target: &CStr,
        fstype: &CStr,
        flags: MountFlags,
        data: Option<&CStr>,
    ) -> SysResult {
        self.push(Call::Mount {
            source: s(source),
            target: s(target),
            fstype: s(fstype),
            flags,
            data: data.map(s),
        })
    }
    fn bind_mount(&self, source: &CStr, target: &CStr) -> SysResult {
        self.push(Call::BindMount {
            source: s(source),
            target: s(target),
        })
    }
    fn rbind_mount(&self, source: &CStr, target: &CStr) -> SysResult {
        self.push(Call::RbindMount {
            source: s(source),
            target: s(target),
        })
    }
    fn create_file(&self, path: &CStr, _mode: u32) -> SysResult {
        self.push(Call::CreateFile(s(path)))
    }
    fn remount(&self, target: &CStr, flags: MountFlags) -> SysResult {
        self.push(Call::Remount {
            target: s(target),
            flags,
        })
    }
    fn set_propagation(&self, target: &CStr, flags: MountPropagationFlags) -> SysResult {
        self.push(Call::SetPropagation {
            target: s(target),
            flags,
        })
    }
    fn umount2(&self, target: &CStr, _flags: UnmountFlags) -> SysResult {
        self.push(Call::Umount2 { target: s(target) })
    }
    fn unshare(&self, flags: UnshareFlags) -> SysResult {
        self.push(Call::Unshare(flags))
    }
    fn chroot(&self, path: &CStr) -> SysResult {
        self.push(Call::Chroot(s(path)))
    }
    fn chdir(&self, path: &CStr) -> SysResult {
        self.push(Call::Chdir(s(path)))
    }
    fn mkdir(&self, path: &CStr, _mode: u32) -> SysResult {
        self.push(Call::Mkdir(s(path)))
    }
    fn mknod_char(&self, path: &CStr, _mode: u32, dev: Dev) -> SysResult {
        self.push(Call::MknodChar { path: s(path), dev })
    }
    fn chmod(&self, path: &CStr, mode: u32) -> SysResult {
        self.push(Call::Chmod {
            path: s(path),
            mode,
        })
    }
    fn symlink(&self, target: &CStr, link: &CStr) -> SysResult {
        self.push(Call::Symlink {
            target: s(target),
            link: s(link),
        })
    }
    fn sethostname(&self, name: &[u8]) -> SysResult {
        self.push(Call::Sethostname(
            String::from_utf8_lossy(name).into_owned(),
        ))
    }
    fn setgroups(&self, groups: &[Gid]) -> SysResult {
        self.push(Call::Setgroups(groups.iter().map(|g| g.as_raw()).collect()))
    }
    fn setgid(&self, gid: u32) -> SysResult {
        self.push(Call::Setgid(gid))
    }
    fn setuid(&self, uid: u32) -> SysResult {
        self.push(Call::Setuid(uid))
    }
    fn set_parent_death_signal(&self, sig: Option<Signal>) -> SysResult {
        self.push(Call::SetParentDeathSignal(sig.map(|s| s.as_raw())))
    }
    fn write_new_file(
        &self,
        path: &CStr,
        content: &[u8],
        mode: u32,
        _uid: u32,
        _gid: u32,
    ) -> SysResult {
        self.push(Call::WriteNewFile {
            path: s(path),
            len: content.len(),
            mode,
        })
    }
    fn unlink(&self, path: &CStr) -> SysResult {
        self.push(Call::Unlink(s(path)))
    }
    fn loopback_up(&self) -> SysResult {
        self.push(Call::LoopbackUp)
    }
    fn kill(&self, pid: i32, sig: Signal) -> SysResult {
        self.push(Call::Kill {
            pid,
            sig: sig.as_raw(),
        })
    }
}
