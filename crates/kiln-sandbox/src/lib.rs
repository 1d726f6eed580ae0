//! `kiln-sandbox` runs one Dockerfile `RUN` step in an isolated rootfs.
//!
//! Main types: [`RunSpec`] (what to run), [`run_step`] (the chroot backend),
//! [`StepOutcome`] (exit status and the mount points kiln created), and the
//! [`Syscall`] trait with [`LinuxSyscall`] and [`RecordingSyscall`] through
//! which every namespace, mount and credential call goes.
//!
//! The chroot backend, per step: fork; `unshare` mount, pid, UTS and IPC
//! namespaces; make `/` recursively private before any mount; fork pid 1 of
//! the new pid namespace; mount `/proc`, a tmpfs `/dev` with device nodes,
//! `/dev/shm`, a read-only `/sys`, read-only binds of `resolv.conf` and
//! `hosts`; chroot; enter the working directory; set groups, gid, uid; exec.
//! When the command exits, the kernel kills what is left in its pid
//! namespace, and the mount namespace (with every mount) goes with it.
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_sandbox::SandboxError> {
//! use kiln_sandbox::{run_step, RunSpec, StepStatus};
//! let spec = RunSpec::new("/var/lib/kiln/rootfs", vec!["sh".into(), "-c".into(), "echo hi".into()]);
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! let outcome = run_step(&spec, &mut out, &mut err)?;
//! assert_eq!(outcome.status, StepStatus::Exited(0));
//! # Ok(()) }
//! ```
//!
//! [`backend::choose`] says which backend this process can use and why.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_SYS_CHROOT). Linux only.
//!
//! Must not depend on: `kiln-build`, `kiln-registry`, `kiln` (it sits below them).
#![deny(missing_docs)]

pub mod backend;
mod error;
pub mod overlay;
mod process;
mod rootfs;
mod spec;
pub mod stop;
pub mod syscall;
pub mod userns;

pub use error::{SandboxError, Stage};
pub use process::parent::run_step;
pub use process::plain::namespaces_available;
pub use rootfs::remove_mount_point;
pub use spec::{
    FileContent, RunSpec, StepMount, StepMountKind, StepOutcome, StepStatus, DEFAULT_PATH,
};
pub use syscall::{Call, LinuxSyscall, RecordingSyscall, Syscall};

/// Setup order for tests: runs the namespace stage and the pid-1 stage of
/// `spec` against `sys` in this process, without forking or exec'ing.
///
/// Meant for [`RecordingSyscall`]: with [`LinuxSyscall`] it would change the
/// calling process's namespaces, mounts and credentials.
pub fn record_setup(
    spec: &RunSpec,
    sys: &dyn Syscall,
) -> Result<Vec<std::path::PathBuf>, SandboxError> {
    let (plan, created) = process::parent::prepare(spec)?;
    let tag = |(stage, errno): (Stage, rustix::io::Errno)| SandboxError::Setup {
        stage,
        source: errno.into(),
    };
    process::intermediate::isolate(sys, !spec.network).map_err(tag)?;
    process::init::setup(&plan, sys).map_err(tag)?;
    Ok(created)
}
