//! The overlay backend's mounts. The engine's stage thread enters a mount namespace of its own
//! ([`private_mount_namespace`]); overlays it mounts there ([`OverlayMount`]) are seen by that
//! thread and the processes it starts (RUN steps), never by the build container, and vanish
//! with the thread.
//!
//! The lower directories hold layers unpacked with overlay whiteouts (0/0 character devices,
//! `trusted.overlay.opaque`), so a step's upper dir is its layer as it is and becomes the next
//! step's top lower. `redirect_dir` and `metacopy` are off: every change is whole in the upper.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::UnshareFlags;

use crate::error::SandboxError;

fn os_err(what: &str, e: rustix::io::Errno) -> SandboxError {
    SandboxError::Overlay {
        reason: format!("{what}: {}", io::Error::from(e)),
    }
}

/// Moves the calling thread into a new mount namespace (and its own cwd and root, which
/// `CLONE_NEWNS` unshares too) whose mounts are all private, so nothing mounted from this
/// thread reaches the build container. Processes the thread starts inherit it.
pub fn private_mount_namespace() -> Result<(), SandboxError> {
    // SAFETY: CLONE_NEWNS (with the CLONE_FS it implies) changes only this thread's mount
    // namespace and file system attributes; no memory is shared or unshared.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }
        .map_err(|e| os_err("unshare(CLONE_NEWNS)", e))?;
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| os_err("making the mounts of / private", e))
}

/// An overlay mounted at `target`, unmounted on drop.
#[derive(Debug)]
pub struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    /// Mounts `lowers` (bottom first; at least one) with an optional writable `upper` and its
    /// `work` dir at `target`. Call from a thread in a [`private_mount_namespace`].
    ///
    /// The kernel takes the options in one page: lower dirs are named through short symlinks
    /// `<links>/0`, `<links>/1`, … relative to a temporary working directory, so hundreds of
    /// layers fit.
    pub fn mount(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        links: &Path,
        target: &Path,
    ) -> Result<OverlayMount, SandboxError> {
        if lowers.is_empty() {
            return Err(SandboxError::InvalidSpec {
                reason: "an overlay needs at least one lower directory".into(),
            });
        }
        let io_err = |what: &str, e: io::Error| SandboxError::Overlay {
            reason: format!("{what}: {e}"),
        };
        let _ = std::fs::remove_dir_all(links);
        std::fs::create_dir_all(links).map_err(|e| io_err("creating the overlay link dir", e))?;
        for (i, lower) in lowers.iter().enumerate() {
            std::os::unix::fs::symlink(lower, links.join(i.to_string()))
                .map_err(|e| io_err("linking an overlay lower dir", e))?;
        }
        // Top first, as overlayfs wants them.
        let mut lowerdir: Vec<String> = (0..lowers.len()).rev().map(|i| i.to_string()).collect();
        if upper.is_none() && lowers.len() == 1 {
            // A read-only overlay needs two lower dirs (a single-layer image viewed for
            // `COPY --from`): an empty one goes below.
            std::fs::create_dir(links.join("empty"))
                .map_err(|e| io_err("creating an empty lower dir", e))?;
            lowerdir.push("empty".into());
        }
        let mut data = format!("lowerdir={}", lowerdir.join(":"));
        if let Some((upper, work)) = upper {
            // The work dir is the kernel's scratch; a `volatile` mount leaves a marker in it
            // that makes the next mount with that dir fail (an upper kept across steps).
            let _ = std::fs::remove_dir_all(work);
            std::fs::create_dir_all(work)
                .map_err(|e| io_err("creating the overlay work dir", e))?;
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        if crate::userns::is_rootless() {
            // trusted.* xattrs belong to the host's root: overlayfs keeps its own in user.*,
            // and then only takes `nofollow` (redirects neither made nor followed).
            data.push_str(",userxattr,redirect_dir=nofollow,metacopy=off,index=off");
        } else {
            data.push_str(",redirect_dir=off,metacopy=off,index=off");
        }
        // A step's upper dir is written out as its layer right after the step, so the
        // kernel's durability work is wasted there: `volatile` (Linux 5.10) skips the fsync of
        // every copy-up and makes the step's own fsync calls no-ops (a `useradd` step:
        // 0.33 s -> 0.08 s).
        let mut options = Vec::new();
        if upper.is_some() {
            options.push(format!("{data},volatile"));
        }
        options.push(data);
        let options = options
            .into_iter()
            .map(CString::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SandboxError::InvalidSpec {
                reason: "overlay paths contain a NUL byte".into(),
            })?;
        let target_c =
            CString::new(target.as_os_str().as_bytes()).map_err(|_| SandboxError::InvalidSpec {
                reason: "overlay target contains a NUL byte".into(),
            })?;
        std::fs::create_dir_all(target).map_err(|e| io_err("creating the overlay target", e))?;
        let here = rustix::fs::open(
            ".",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| os_err("opening the working directory", e))?;
        rustix::process::chdir(links).map_err(|e| os_err("entering the overlay link dir", e))?;
        let flags = if upper.is_some() {
            MountFlags::empty()
        } else {
            MountFlags::RDONLY
        };
        let mut mounted = Err(rustix::io::Errno::INVAL);
        for data in &options {
            mounted = rustix::mount::mount(
                c"overlay",
                &target_c,
                c"overlay",
                flags,
                Some(data.as_c_str()),
            );
            // An older kernel refuses `volatile` as an unknown option.
            if mounted != Err(rustix::io::Errno::INVAL) {
                break;
            }
        }
        let back = rustix::process::fchdir(here.as_fd());
        mounted.map_err(|e| os_err(&format!("mounting an overlay at {}", target.display()), e))?;
        back.map_err(|e| os_err("returning to the working directory", e))?;
        Ok(OverlayMount {
            target: target.to_owned(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl OverlayMount {
    /// Unmounts on another thread (in this thread's mount namespace): tearing down an overlay
    /// that saw many files takes a while (the kernel frees its dentries and inodes), and the
    /// caller can read the upper dir meanwhile. The returned guard waits for it.
    pub fn unmount_in_background(self) -> Unmounting {
        let target = self.target.clone();
        std::mem::forget(self);
        let thread = std::thread::Builder::new()
            .name("kiln-umount".into())
            .spawn({
                let target = target.clone();
                move || {
                    let _ = rustix::mount::unmount(&target, UnmountFlags::DETACH);
                }
            });
        match thread {
            Ok(handle) => Unmounting {
                handle: Some(handle),
            },
            Err(_) => {
                // No thread to spare: unmount here.
                let _ = rustix::mount::unmount(&target, UnmountFlags::DETACH);
                Unmounting { handle: None }
            }
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
    }
}

/// An unmount under way on another thread; waits for it when dropped.
pub struct Unmounting {
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Unmounting {
    /// Waits until the overlay is gone.
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Unmounting {
    fn drop(&mut self) {
        self.join();
    }
}

/// Whether this process may mount overlays (root, or CAP_SYS_ADMIN, with overlayfs in the
/// kernel and a `/` that is a mount point): tried in a scratch thread under `scratch`.
/// Returns why not.
pub fn overlay_available(scratch: &Path) -> Result<(), String> {
    let scratch = scratch.to_owned();
    std::thread::spawn(move || -> Result<(), String> {
        private_mount_namespace().map_err(|e| e.to_string())?;
        let dirs = ["lower", "upper", "work", "merged"].map(|d| scratch.join(d));
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let mount = OverlayMount::mount(
            &[dirs[0].clone()],
            Some((&dirs[1], &dirs[2])),
            &scratch.join("links"),
            &dirs[3],
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(mount.path().join("probe"), b"x")
            .map_err(|e| format!("writing through the overlay: {e}"))?;
        drop(mount);
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err("the probe thread panicked".into()))
}
