//! Process setup of a RUN step, one stage per file.
//!
//! ```text
//! caller (parent.rs)          may be multi-threaded; validates, creates mount
//!   │                         points, spawns, streams output, decodes status
//!   └─ intermediate.rs        fork #1 (std::process::Command + pre_exec):
//!        │                    unshare(NEWNS|NEWPID|NEWUTS|NEWIPC[|NEWNET]), make `/`
//!        │                    rprivate; waits for pid 1 and reports its status
//!        └─ init.rs           fork #2: the first process in the new pid
//!                             namespace (pid 1); mounts (RUN --mount too, planned
//!                             in mounts.rs), chroot, ids, then
//!                             returns into std, which execs the command
//! ```
//!
//! Fork #1 exists because `unshare(CLONE_NEWNS)` fails in a multi-threaded
//! process. Fork #2 exists because `unshare(CLONE_NEWPID)` moves only later
//! children into the new namespace. The command runs as pid 1, so when it
//! exits the kernel kills everything left in the namespace.
//!
//! Stages report to the caller through [`message::Message`] values on a
//! pipe. Code in `intermediate.rs` and `init.rs` runs between fork and exec:
//! it only makes raw syscalls on data prepared in [`plan::Plan`].

pub(crate) mod init;
pub(crate) mod intermediate;
pub(crate) mod message;
pub(crate) mod mounts;
pub(crate) mod parent;
pub(crate) mod plain;
pub(crate) mod plan;
