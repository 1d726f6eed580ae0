//! Everything the forked stages need, converted to C strings up front so
//! that the code between fork and exec never allocates.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{makedev, Dev};
use rustix::process::Gid;

use crate::error::{SandboxError, Stage};

/// Character devices created in the step's `/dev`: name, major, minor.
pub(crate) const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Symlinks created in the step's `/dev`: link name, target.
pub(crate) const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// A read-only bind of a host file over a file in the rootfs.
#[derive(Debug)]
pub(crate) struct Bind {
    pub(crate) source: CString,
    pub(crate) target: CString,
    pub(crate) stage: Stage,
}

/// One `RUN --mount`, ready for pid 1.
#[derive(Debug)]
pub(crate) struct PlannedMount {
    /// Directories to create first (host paths; only inside a tmpfs mounted just before).
    pub(crate) mkdirs: Vec<CString>,
    /// Create an empty file as the mount point (a file or socket bound inside a tmpfs).
    pub(crate) file_point: bool,
    /// Host path of the mount point.
    pub(crate) target: CString,
    pub(crate) what: PlannedMountKind,
}

#[derive(Debug)]
pub(crate) enum PlannedMountKind {
    /// A bind of `source`; `readonly` holds the flags the read-only remount keeps (the
    /// source mount's own, which a user namespace may not clear).
    Bind {
        source: CString,
        readonly: Option<rustix::mount::MountFlags>,
    },
    /// A tmpfs with these mount options.
    Tmpfs { data: CString },
    /// A file written at `staging` (on the step's `/dev` tmpfs), bound read-only at the target
    /// (keeping `readonly` flags), then unlinked from `staging`.
    File {
        staging: CString,
        content: crate::spec::FileContent,
        mode: u32,
        uid: u32,
        gid: u32,
        readonly: rustix::mount::MountFlags,
    },
}

/// The prepared setup of one step. Host paths are absolute; `cwd_dirs` and
/// `cwd` are paths inside the chroot.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) rootfs: CString,
    pub(crate) proc_dir: CString,
    pub(crate) dev_dir: CString,
    /// Device nodes: path in the rootfs, number, and the host's node to bind when mknod is
    /// not allowed (in a user namespace).
    pub(crate) devices: Vec<(CString, Dev, CString)>,
    pub(crate) dev_links: Vec<(CString, CString)>,
    pub(crate) shm_dir: CString,
    /// Where the host's `/sys` is bound read-only; `None` when the host has no `/sys`.
    pub(crate) sys_dir: Option<CString>,
    /// Bind `/sys` with its submounts (a user namespace refuses a plain bind of it).
    pub(crate) sys_recursive: bool,
    pub(crate) binds: Vec<Bind>,
    pub(crate) mounts: Vec<PlannedMount>,
    /// A network namespace of its own, with loopback up (`--network=none`).
    pub(crate) new_network: bool,
    pub(crate) hostname: Option<Vec<u8>>,
    pub(crate) cwd_dirs: Vec<CString>,
    pub(crate) cwd: CString,
    pub(crate) groups: Vec<Gid>,
    pub(crate) gid: u32,
    pub(crate) uid: u32,
}

/// Marks every descriptor above stderr close-on-exec, just before the step's command is
/// exec'd: whatever kiln was started with (a CI agent's open files, a pipe of its parent) and
/// whatever it opened itself without the flag never reaches a step. Raw syscalls only (it runs
/// between fork and exec); the status pipe, which must close at exec too, is among them.
pub(crate) fn close_on_exec_above_stderr() {
    // SAFETY: close_range only changes descriptor flags of this process.
    let ranged = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32) } == 0;
    if ranged {
        return;
    }
    // Before Linux 5.11 (no CLOSE_RANGE_CLOEXEC, 4 above): one descriptor at a time.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024)
        .min(65536) as i32;
    for fd in 3..limit {
        // SAFETY: F_SETFD on a descriptor number; an unused one fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

pub(crate) fn cstr(bytes: &[u8]) -> Result<CString, SandboxError> {
    // The bytes are not shown: they may be an environment value, which may be a secret.
    CString::new(bytes).map_err(|_| SandboxError::InvalidSpec {
        reason: "a path or value contains a NUL byte".to_owned(),
    })
}

pub(crate) fn cpath(p: &Path) -> Result<CString, SandboxError> {
    cstr(p.as_os_str().as_bytes())
}

/// Normalises an absolute in-rootfs directory into its chain of prefixes.
pub(crate) fn dir_chain(cwd: &str) -> Result<Vec<String>, SandboxError> {
    if !cwd.starts_with('/') {
        return Err(SandboxError::InvalidSpec {
            reason: format!("working directory {cwd:?} is not absolute"),
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in cwd.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok((1..=parts.len())
        .map(|n| format!("/{}", parts[..n].join("/")))
        .collect())
}

impl Plan {
    pub(crate) fn with_defaults(rootfs: &Path) -> Result<Plan, SandboxError> {
        let dev = rootfs.join("dev");
        let mut devices = Vec::new();
        for (name, major, minor) in DEVICES {
            devices.push((
                cpath(&dev.join(name))?,
                makedev(major, minor),
                cstr(format!("/dev/{name}").as_bytes())?,
            ));
        }
        let mut dev_links = Vec::new();
        for (name, target) in DEV_LINKS {
            dev_links.push((cstr(target.as_bytes())?, cpath(&dev.join(name))?));
        }
        Ok(Plan {
            rootfs: cpath(rootfs)?,
            proc_dir: cpath(&rootfs.join("proc"))?,
            dev_dir: cpath(&dev)?,
            devices,
            dev_links,
            shm_dir: cpath(&dev.join("shm"))?,
            sys_dir: Some(cpath(&rootfs.join("sys"))?),
            sys_recursive: false,
            binds: Vec::new(),
            mounts: Vec::new(),
            new_network: false,
            hostname: None,
            cwd_dirs: Vec::new(),
            cwd: cstr(b"/")?,
            groups: Vec::new(),
            gid: 0,
            uid: 0,
        })
    }
}
