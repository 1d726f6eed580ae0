//! Which RUN backend this process can use, and why: decided here, where the knowledge of
//! namespaces and overlay mounts lives, so the build engine only asks.

use std::path::Path;

/// How RUN steps are isolated in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Each step runs on an overlay of the stage's layers; its changes are the upper dir.
    Overlay,
    /// Each step runs chrooted into an extracted tree; `namespaces` says whether it also
    /// gets mount, pid, UTS and IPC namespaces (not in a plain unprivileged container).
    Chroot {
        /// The step gets namespaces of its own.
        namespaces: bool,
    },
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// The best backend this process can use.
    Auto,
    /// Overlay or nothing.
    Overlay,
    /// Chroot (with namespaces when allowed).
    Chroot,
}

/// A backend and the sentence that says why it was chosen (for the build log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The backend.
    pub backend: Backend,
    /// Why, as a log line (`RUN isolation: …`).
    pub reason: String,
}

/// Chooses the backend for `preference`, probing overlay mounts in `scratch` (a directory of
/// the build's; removed afterwards). An error says why an overlay was asked for and cannot be
/// had.
pub fn choose(preference: Preference, scratch: &Path) -> Result<Choice, String> {
    let probe = || {
        let result = crate::overlay::overlay_available(scratch);
        let _ = std::fs::remove_dir_all(scratch);
        result
    };
    let overlay = |why: &str| Choice {
        backend: Backend::Overlay,
        reason: format!("RUN isolation: overlay ({why})"),
    };
    match preference {
        Preference::Auto => match probe() {
            Ok(()) => Ok(overlay("this process may mount overlays")),
            Err(why) => Ok(chroot(&format!("no overlay: {why}"))),
        },
        Preference::Overlay => probe().map(|()| overlay("as asked")),
        Preference::Chroot => Ok(chroot("as asked")),
    }
}

/// The chroot backend, with namespaces when this process may make them.
fn chroot(why: &str) -> Choice {
    match crate::namespaces_available() {
        Ok(()) => Choice {
            backend: Backend::Chroot { namespaces: true },
            reason: format!("RUN isolation: chroot, with stat-index snapshots ({why})"),
        },
        Err(no_namespaces) => Choice {
            backend: Backend::Chroot { namespaces: false },
            reason: format!(
                "RUN isolation: chroot without namespaces ({why}; {no_namespaces}): RUN steps \
                 get no /proc or /sys, /dev nodes and resolv.conf are files for the step's \
                 duration, and what a step leaves running is killed with its process group"
            ),
        },
    }
}
