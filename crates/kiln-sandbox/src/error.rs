//! Errors of `kiln-sandbox`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// A named setup stage of a RUN step, reported when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
#[allow(missing_docs)] // each variant names the stage it stands for
pub enum Stage {
    ParentDeathSignal = 1,
    Unshare,
    MakePrivate,
    Fork,
    MountProc,
    MountDev,
    DeviceNodes,
    MountShm,
    BindSys,
    BindResolvConf,
    BindHosts,
    Hostname,
    Chroot,
    Workdir,
    Groups,
    Gid,
    Uid,
    RunMount,
    Loopback,
}

impl Stage {
    const ALL: [Stage; 19] = [
        Stage::ParentDeathSignal,
        Stage::Unshare,
        Stage::MakePrivate,
        Stage::Fork,
        Stage::MountProc,
        Stage::MountDev,
        Stage::DeviceNodes,
        Stage::MountShm,
        Stage::BindSys,
        Stage::BindResolvConf,
        Stage::BindHosts,
        Stage::Hostname,
        Stage::Chroot,
        Stage::Workdir,
        Stage::Groups,
        Stage::Gid,
        Stage::Uid,
        Stage::RunMount,
        Stage::Loopback,
    ];

    pub(crate) fn from_u8(v: u8) -> Option<Stage> {
        Stage::ALL.iter().copied().find(|s| *s as u8 == v)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Stage::ParentDeathSignal => "set parent-death signal",
            Stage::Unshare => "unshare namespaces",
            Stage::MakePrivate => "make mounts private",
            Stage::Fork => "fork into the pid namespace",
            Stage::MountProc => "mount /proc",
            Stage::MountDev => "mount /dev",
            Stage::DeviceNodes => "create device nodes",
            Stage::MountShm => "mount /dev/shm",
            Stage::BindSys => "bind /sys read-only",
            Stage::BindResolvConf => "bind /etc/resolv.conf",
            Stage::BindHosts => "bind /etc/hosts",
            Stage::Hostname => "set hostname",
            Stage::Chroot => "chroot into the rootfs",
            Stage::Workdir => "enter the working directory",
            Stage::Groups => "set supplementary groups",
            Stage::Gid => "set gid",
            Stage::Uid => "set uid",
            Stage::RunMount => "mount a RUN --mount",
            Stage::Loopback => "bring up the loopback interface of --network=none",
        };
        f.write_str(s)
    }
}

/// Everything that can go wrong running a step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The rootfs resolves to the host's `/`.
    #[error("rootfs {path} is the host's root directory; refusing to run a step on it")]
    RootfsIsHostRoot {
        /// The rootfs as given.
        path: PathBuf,
    },
    /// The rootfs is missing or not a directory.
    #[error("rootfs {path} is not a directory")]
    RootfsNotDirectory {
        /// The rootfs as given.
        path: PathBuf,
    },
    /// The spec cannot be run as given.
    #[error("invalid run spec: {reason}")]
    InvalidSpec {
        /// What is wrong.
        reason: String,
    },
    /// Setting up an overlay mount failed (a step's tree or a read-only view of layers).
    #[error("{reason}")]
    Overlay {
        /// What failed, with the OS error.
        reason: String,
    },
    /// A path kiln would mount over is a symlink or of the wrong type.
    #[error("refusing to mount over {path}: it is a symlink or not a {expected}")]
    UnsafeMountPoint {
        /// The host path inside the rootfs.
        path: PathBuf,
        /// `directory` or `regular file`.
        expected: &'static str,
    },
    /// Creating a missing mount point failed.
    #[error("cannot create mount point {path}: {source}")]
    MountPoint {
        /// The host path inside the rootfs.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Moving a mount's source in or out of the rootfs failed (without namespaces).
    #[error("cannot {action} {path}: {source}")]
    MoveMount {
        /// What kiln was doing, e.g. `move the mount source into place at`.
        action: &'static str,
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating the status pipe failed.
    #[error("cannot create the sandbox status pipe: {0}")]
    Pipe(#[source] io::Error),
    /// Forking the sandbox failed.
    #[error("cannot start the sandbox process: {0}")]
    Spawn(#[source] io::Error),
    /// A setup stage in the sandbox failed.
    #[error("sandbox setup failed: {stage}: {source}")]
    Setup {
        /// The stage that failed.
        stage: Stage,
        /// The kernel's error.
        source: io::Error,
    },
    /// The command could not be executed inside the rootfs.
    #[error("cannot execute {program:?} in the rootfs: {source}")]
    Exec {
        /// `argv[0]`.
        program: String,
        /// The error `execvp` gave.
        source: io::Error,
    },
    /// Copying the step's output to the caller's writers failed; the step was killed.
    #[error("copying step output failed: {0}")]
    Output(#[source] io::Error),
    /// Waiting for the sandbox failed.
    #[error("waiting for the sandbox process failed: {0}")]
    Wait(#[source] io::Error),
    /// The sandbox ended without reporting the step's status (it was killed).
    #[error("sandbox process ended without reporting the step's status ({0})")]
    NoStatus(ExitStatus),
    /// The build is stopping ([`crate::stop::stop_all_steps`]): the step was killed, or never
    /// started.
    #[error("stopped: the build was told to stop")]
    Stopped,
}
