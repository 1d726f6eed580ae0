//! What to run ([`RunSpec`]) and what came of it ([`StepOutcome`]).

use std::path::PathBuf;

/// PATH set when the spec's environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One RUN step to execute in a rootfs directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Extracted root filesystem (a directory, never the host's `/`).
    pub rootfs: PathBuf,
    /// The command; `argv[0]` is looked up in the step's `PATH` inside the rootfs.
    pub argv: Vec<String>,
    /// The whole environment of the step. `PATH` defaults to [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the rootfs; created if missing.
    pub cwd: String,
    /// User id the step runs as.
    pub uid: u32,
    /// Group id the step runs as.
    pub gid: u32,
    /// Supplementary groups.
    pub extra_gids: Vec<u32>,
    /// Hostname inside the step (a new UTS namespace is always used).
    pub hostname: Option<String>,
    /// Host file bound read-only over `<rootfs>/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// Host file bound read-only over `<rootfs>/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// Isolate the step in new mount, pid, UTS and IPC namespaces (needs CAP_SYS_ADMIN). Without,
    /// the step is only chrooted (see [`crate::namespaces_available`]).
    pub namespaces: bool,
    /// Mounts of the step (BuildKit's `RUN --mount`), made in this order; a target under
    /// another mount's target comes after it.
    pub mounts: Vec<StepMount>,
    /// The step shares the caller's network (`RUN --network=default|host`); `false` gives it a
    /// network namespace of its own with only a loopback interface (`--network=none`), which
    /// needs [`RunSpec::namespaces`].
    pub network: bool,
}

/// One mount of a RUN step, made ready by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMount {
    /// Absolute path inside the rootfs with its symlinks already resolved in the rootfs; a
    /// missing mount point (and its missing parents) is created for the step and reported in
    /// [`StepOutcome::created_mount_points`].
    pub target: String,
    /// What is mounted there.
    pub kind: StepMountKind,
}

/// What a [`StepMount`] puts at its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepMountKind {
    /// A host directory, file or socket, bound at the target (`readonly`: remounted read-only).
    ///
    /// Without namespaces there are no mounts: the source is moved to the target (rename)
    /// for the step's duration and moved back after, so it must be the caller's own (a copy
    /// when the step must not change the original) and on the rootfs's file system.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Remount read-only (not enforced without namespaces).
        readonly: bool,
    },
    /// A file made for the step only, holding `content` (a secret), read-only at the target.
    /// With namespaces it is written by the step's pid 1 to the step's own `/dev` tmpfs (memory
    /// that goes with the step), bound at the target and unlinked from `/dev`: it never touches
    /// a disk. Without namespaces it is written at the target for the step and removed after.
    File {
        /// What the file holds (never shown: its `Debug` gives the size only).
        content: FileContent,
        /// Its mode.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
    },
    /// An empty tmpfs (`size` in bytes). Without namespaces: an empty directory for the step's
    /// duration, removed after, with no size limit.
    Tmpfs {
        /// Size limit in bytes (the kernel's default, half of RAM, when `None`).
        size: Option<u64>,
    },
}

impl RunSpec {
    /// A spec running `argv` as root in `/` with an empty environment.
    pub fn new(rootfs: impl Into<PathBuf>, argv: Vec<String>) -> Self {
        RunSpec {
            rootfs: rootfs.into(),
            argv,
            env: Vec::new(),
            cwd: "/".to_owned(),
            uid: 0,
            gid: 0,
            extra_gids: Vec::new(),
            hostname: None,
            resolv_conf: None,
            hosts: None,
            namespaces: true,
            mounts: Vec::new(),
            network: true,
        }
    }
}

/// The content of a [`StepMountKind::File`]: kept out of every `Debug` output (it may be a
/// secret).
#[derive(Clone, PartialEq, Eq)]
pub struct FileContent(pub Vec<u8>);

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// How the step's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl StepStatus {
    /// Whether the step exited with code 0.
    pub fn success(self) -> bool {
        self == StepStatus::Exited(0)
    }

    pub(crate) fn from_wait_status(raw: i32) -> StepStatus {
        let sig = raw & 0x7f;
        if sig == 0 {
            StepStatus::Exited((raw >> 8) & 0xff)
        } else {
            StepStatus::Signaled(sig)
        }
    }
}

/// The result of a finished step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// How the command ended.
    pub status: StepStatus,
    /// Host paths of mount points kiln created in the rootfs (parents first).
    /// They are kiln's, not the step's: keep them out of the layer.
    pub created_mount_points: Vec<PathBuf>,
    /// The step ran without `/sys`: the build container has none to share.
    pub without_sys: bool,
    /// The step ran chrooted only, without namespaces (no `/proc` either).
    pub without_namespaces: bool,
    /// Host paths of existing directories whose times kiln changed for the step (a mount's
    /// target moved aside and back without namespaces, and its parent): a change of their
    /// times alone is not the step's.
    pub touched: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::StepStatus;

    #[test]
    fn wait_status_decodes_exit_codes_and_signals() {
        assert_eq!(StepStatus::from_wait_status(0x0300), StepStatus::Exited(3));
        assert_eq!(StepStatus::from_wait_status(9), StepStatus::Signaled(9));
        // Signal 11 with the core-dump bit.
        assert_eq!(
            StepStatus::from_wait_status(0x80 | 11),
            StepStatus::Signaled(11)
        );
        assert!(StepStatus::Exited(0).success());
    }
}
