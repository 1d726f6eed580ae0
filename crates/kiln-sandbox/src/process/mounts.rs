//! `RUN --mount`s: planned as real mounts for the namespaced backend ([`plan`]), or made of
//! renames for the backend without namespaces ([`MovedIn`]).
//!
//! Mount points that do not exist are created here, before any fork, with
//! [`crate::rootfs::ensure`] (which refuses symlinks on the way: the caller resolved the target's
//! symlinks inside the rootfs already), and reported so the caller keeps them out of the layer.
//! A target inside an earlier mount's target gets its mount point inside that mount: in the
//! earlier bind's source (created there unless it is read-only), or, inside a tmpfs, by pid 1
//! after the tmpfs is mounted.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::error::SandboxError;
use crate::process::plan::{cpath, cstr, PlannedMount, PlannedMountKind};
use crate::rootfs::{ensure, Kind};
use crate::spec::{StepMount, StepMountKind};

/// `target` as a relative path without `.` or `..` components; `/` itself is refused.
fn relative_target(target: &str) -> Result<String, SandboxError> {
    let invalid = |why: &str| SandboxError::InvalidSpec {
        reason: format!("mount target {target:?} {why}"),
    };
    if !target.starts_with('/') {
        return Err(invalid("is not absolute"));
    }
    let parts: Vec<&str> = target.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(invalid("has . or .. components"));
    }
    if parts.is_empty() {
        return Err(invalid("is the root directory"));
    }
    Ok(parts.join("/"))
}

/// Whether the mount point for `kind` is a directory.
fn point_kind(kind: &StepMountKind) -> Result<Kind, SandboxError> {
    match kind {
        StepMountKind::Tmpfs { .. } => Ok(Kind::Dir),
        StepMountKind::File { .. } => Ok(Kind::File),
        StepMountKind::Bind { source, .. } => match std::fs::metadata(source) {
            Ok(meta) if meta.is_dir() => Ok(Kind::Dir),
            Ok(_) => Ok(Kind::File),
            Err(e) => Err(SandboxError::InvalidSpec {
                reason: format!("mount source {}: {e}", source.display()),
            }),
        },
    }
}

/// The innermost earlier mount whose target holds `rel`, and the rest of `rel` below it.
fn enclosing<'a>(earlier: &'a [(String, StepMount)], rel: &str) -> Option<(&'a StepMount, String)> {
    earlier.iter().rev().find_map(|(outer, mount)| {
        rel.strip_prefix(outer.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| (mount, rest.to_owned()))
    })
}

/// The flags a read-only remount of a bind of `source` must keep (a user namespace refuses to
/// clear the source mount's nosuid, nodev, noexec or atime flags), plus nosuid and nodev.
fn kept_flags(source: &Path) -> MountFlags {
    use rustix::fs::StatVfsMountFlags as F;
    let mut kept = MountFlags::NOSUID | MountFlags::NODEV;
    if let Ok(stat) = rustix::fs::statvfs(source) {
        for (has, flag) in [
            (F::NOEXEC, MountFlags::NOEXEC),
            (F::NOATIME, MountFlags::NOATIME),
            (F::NODIRATIME, MountFlags::NODIRATIME),
            (F::RELATIME, MountFlags::RELATIME),
        ] {
            if stat.f_flag.contains(has) {
                kept |= flag;
            }
        }
    }
    kept
}

/// Plans `mounts` for pid 1 of the namespaced backend, creating mount points that are missing
/// (those in the rootfs pushed to `created`). A point made inside an earlier mount's source (a
/// cache, a copy) stays there, as BuildKit's do: a cache may be in use by another step with a
/// mount on that very point, which removing it would take away.
pub(crate) fn plan(
    rootfs: &Path,
    mounts: &[StepMount],
    created: &mut Vec<PathBuf>,
) -> Result<Vec<PlannedMount>, SandboxError> {
    let mut earlier: Vec<(String, StepMount)> = Vec::new();
    let mut planned = Vec::new();
    for mount in mounts {
        let rel = relative_target(&mount.target)?;
        let kind = point_kind(&mount.kind)?;
        let host_target = rootfs.join(&rel);
        let mut mkdirs = Vec::new();
        let mut file_point = false;
        match enclosing(&earlier, &rel) {
            None => {
                ensure(rootfs, &rel, kind, created)?;
            }
            Some((outer, rest)) => match &outer.kind {
                StepMountKind::Bind { source, readonly } => {
                    if std::fs::symlink_metadata(source.join(&rest)).is_err() && *readonly {
                        return Err(SandboxError::InvalidSpec {
                            reason: format!(
                                "mount target {} is inside the read-only mount at {} and does \
                                 not exist there",
                                mount.target, outer.target
                            ),
                        });
                    }
                    ensure(source, &rest, kind, &mut Vec::new())?;
                }
                StepMountKind::File { .. } => {
                    return Err(SandboxError::InvalidSpec {
                        reason: format!(
                            "mount target {} is inside the file mounted at {}",
                            mount.target, outer.target
                        ),
                    })
                }
                StepMountKind::Tmpfs { .. } => {
                    // A fresh tmpfs holds nothing: pid 1 makes the way after mounting it.
                    let parts: Vec<&str> = rest.split('/').collect();
                    let outer_rel = &rel[..rel.len() - rest.len() - 1];
                    let dirs = if kind == Kind::Dir {
                        parts.len()
                    } else {
                        parts.len() - 1
                    };
                    for n in 1..=dirs {
                        mkdirs.push(cpath(&rootfs.join(outer_rel).join(parts[..n].join("/")))?);
                    }
                    file_point = kind == Kind::File;
                }
            },
        }
        let what = match &mount.kind {
            StepMountKind::Bind { source, readonly } => PlannedMountKind::Bind {
                source: cpath(source)?,
                readonly: readonly.then(|| kept_flags(source)),
            },
            StepMountKind::File {
                content,
                mode,
                uid,
                gid,
            } => PlannedMountKind::File {
                staging: cpath(&rootfs.join(format!("dev/.kiln-file-{}", planned.len())))?,
                content: content.clone(),
                mode: *mode,
                uid: *uid,
                gid: *gid,
                readonly: MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            },
            StepMountKind::Tmpfs { size } => {
                let mut data = "mode=1777".to_owned();
                if let Some(size) = size {
                    data.push_str(&format!(",size={size}"));
                }
                PlannedMountKind::Tmpfs {
                    data: cstr(data.as_bytes())?,
                }
            }
        };
        planned.push(PlannedMount {
            mkdirs,
            file_point,
            target: cpath(&host_target)?,
            what,
        });
        earlier.push((rel, mount.clone()));
    }
    Ok(planned)
}

/// What [`MovedIn::restore`] undoes, in reverse order.
enum Undo {
    /// A bind's source moved to `at`: moved back to `source` if `at` is still that inode.
    Back {
        at: PathBuf,
        source: PathBuf,
        inode: (u64, u64),
    },
    /// A tmpfs stand-in or a file kiln wrote: removed.
    Remove { at: PathBuf },
    /// What the image had at the target, set aside: put back.
    Restore { aside: PathBuf, to: PathBuf },
}

/// Mounts made without namespaces: each bind's source moved (renamed) to its target, each tmpfs
/// an empty directory, and what the image had there set aside next to the rootfs. Everything
/// is undone by [`MovedIn::restore`], also when the step failed.
pub(crate) struct MovedIn {
    rootfs: PathBuf,
    undo: Vec<Undo>,
    aside_dir: PathBuf,
    /// Host targets of the mounts moved in so far, by index.
    targets: Vec<PathBuf>,
    /// Existing directories whose times changed (targets set aside, their parents).
    pub(crate) touched: Vec<PathBuf>,
    /// What could not be put back (a path the step replaced with a symlink on the way).
    pub(crate) problems: Vec<String>,
}

impl MovedIn {
    /// Moves `mounts` into `rootfs` (canonical), creating missing parents (pushed to `created`).
    pub(crate) fn new(
        rootfs: &Path,
        mounts: &[StepMount],
        created: &mut Vec<PathBuf>,
    ) -> Result<MovedIn, SandboxError> {
        let name = rootfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut moved = MovedIn {
            rootfs: rootfs.to_owned(),
            undo: Vec::new(),
            aside_dir: rootfs.with_file_name(format!(".{name}.mounts-aside")),
            targets: Vec::new(),
            touched: Vec::new(),
            problems: Vec::new(),
        };
        for (index, mount) in mounts.iter().enumerate() {
            if let Err(e) = moved.move_one(index, mount, created) {
                moved.restore();
                return Err(e);
            }
        }
        Ok(moved)
    }

    fn move_one(
        &mut self,
        index: usize,
        mount: &StepMount,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), SandboxError> {
        let rel = relative_target(&mount.target)?;
        let fail = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source: io::Error| SandboxError::MoveMount {
                action,
                path,
                source,
            }
        };
        let parent_rel = Path::new(&rel).parent().unwrap_or(Path::new(""));
        let parent = if parent_rel.as_os_str().is_empty() {
            self.rootfs.clone()
        } else {
            self.ensure_dir(&parent_rel.to_string_lossy(), created)?
        };
        let target = self.rootfs.join(&rel);
        if std::fs::symlink_metadata(&target).is_ok() {
            std::fs::create_dir_all(&self.aside_dir)
                .map_err(fail("create the set-aside directory", &self.aside_dir))?;
            let aside = self.aside_dir.join(index.to_string());
            std::fs::rename(&target, &aside).map_err(fail("set aside", &target))?;
            self.undo.push(Undo::Restore {
                aside,
                to: target.clone(),
            });
            self.touched.push(target.clone());
        }
        self.touched.push(parent);
        match &mount.kind {
            StepMountKind::Bind { source, .. } => {
                std::fs::rename(source, &target).map_err(|e| {
                    let hint = if e.raw_os_error() == Some(libc::EXDEV) {
                        " (without namespaces a mount is moved in, so its source must be on \
                         the rootfs's file system)"
                    } else {
                        ""
                    };
                    SandboxError::MoveMount {
                        action: "move the mount source into place at",
                        path: target.clone(),
                        source: io::Error::other(format!("{e}{hint}")),
                    }
                })?;
                let moved = std::fs::symlink_metadata(&target)
                    .map_err(fail("look at the mount source moved to", &target))?;
                use std::os::unix::fs::MetadataExt;
                self.undo.push(Undo::Back {
                    at: target.clone(),
                    source: source.clone(),
                    inode: (moved.dev(), moved.ino()),
                });
            }
            StepMountKind::File {
                content,
                mode,
                uid,
                gid,
            } => {
                write_file(&target, &content.0, *mode, (*uid, *gid))
                    .map_err(fail("write the file mounted at", &target))?;
                self.undo.push(Undo::Remove { at: target.clone() });
            }
            StepMountKind::Tmpfs { .. } => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::create_dir(&target).map_err(fail("create", &target))?;
                let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o1777));
                self.undo.push(Undo::Remove { at: target.clone() });
            }
        }
        self.targets.push(target);
        Ok(())
    }

    /// Makes the directory `rel` of the tree and its missing parents. One made inside a moved-in
    /// source stays in that source (as in the namespaced backend); the others are pushed to
    /// `created` for the caller.
    pub(crate) fn ensure_dir(
        &mut self,
        rel: &str,
        created: &mut Vec<PathBuf>,
    ) -> Result<PathBuf, SandboxError> {
        let mut made = Vec::new();
        let path = ensure(&self.rootfs, rel, Kind::Dir, &mut made)?;
        created.extend(made.into_iter().filter(|point| {
            !self
                .targets
                .iter()
                .any(|t| point.starts_with(t) && point != t)
        }));
        Ok(path)
    }

    /// Undoes every move, last first. A path the step replaced with a symlink on the way is
    /// never followed: that mount's source is then lost (a cache starts empty next time), and
    /// what the tree had there cannot be put back (said in `problems`).
    pub(crate) fn restore(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Back { at, source, inode } => {
                    use std::os::unix::fs::MetadataExt;
                    if !self.safe(&at) {
                        self.problems
                            .push(format!("{} (a mount target)", at.display()));
                        continue;
                    }
                    // Only what kiln moved in goes back (the same inode, never a symlink or
                    // another directory the step put there); anything else is removed and the
                    // source is lost (a cache starts empty next time).
                    let same =
                        std::fs::symlink_metadata(&at).is_ok_and(|m| (m.dev(), m.ino()) == inode);
                    let back = if same && std::fs::symlink_metadata(&source).is_err() {
                        std::fs::rename(&at, &source)
                    } else {
                        remove_any(&at)
                    };
                    if let Err(e) = back {
                        self.problems.push(format!("{} ({e})", at.display()));
                    }
                }
                Undo::Remove { at } => {
                    if self.safe(&at) {
                        if let Err(e) = remove_any(&at) {
                            self.problems.push(format!("{} ({e})", at.display()));
                        }
                    } else {
                        self.problems
                            .push(format!("{} (a mount target)", at.display()));
                    }
                }
                Undo::Restore { aside, to } => {
                    if self.safe(&to) {
                        let put_back = remove_any(&to).and_then(|()| std::fs::rename(&aside, &to));
                        if let Err(e) = put_back {
                            self.problems.push(format!("{} ({e})", to.display()));
                        }
                    } else {
                        self.problems.push(format!(
                            "{} (what the tree had there is kept in {})",
                            to.display(),
                            aside.display()
                        ));
                    }
                }
            }
        }
        let _ = std::fs::remove_dir(&self.aside_dir);
    }

    /// Whether every directory between the rootfs and `path` is still a real directory.
    fn safe(&self, path: &Path) -> bool {
        crate::rootfs::real_dirs_to(&self.rootfs, path)
    }
}

/// Writes a new file only its owner may read while it fills, then gives it `mode` and owner.
fn write_file(path: &Path, content: &[u8], mode: u32, (uid, gid): (u32, u32)) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Removes a file, symlink or directory tree (never following a symlink).
fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
