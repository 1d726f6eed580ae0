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
        }
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
