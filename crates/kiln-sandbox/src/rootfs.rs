//! Host-side checks on the rootfs and creation of missing mount points.
//!
//! Runs in the caller before any fork. A mount target that is a symlink is
//! refused: the kernel would resolve it against the host's `/`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::SandboxError;

/// Canonical rootfs path; refuses the host's `/` and non-directories.
pub(crate) fn resolve_rootfs(rootfs: &Path) -> Result<PathBuf, SandboxError> {
    let not_dir = || SandboxError::RootfsNotDirectory {
        path: rootfs.to_owned(),
    };
    let canon = fs::canonicalize(rootfs).map_err(|_| not_dir())?;
    if canon == Path::new("/") {
        return Err(SandboxError::RootfsIsHostRoot {
            path: rootfs.to_owned(),
        });
    }
    if !fs::metadata(&canon).map_err(|_| not_dir())?.is_dir() {
        return Err(not_dir());
    }
    Ok(canon)
}

/// What a mount point must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// Makes sure `<rootfs>/<rel>` exists as `kind` with real directories on
/// the way, creating what is missing and pushing created paths to `created`.
pub(crate) fn ensure(
    rootfs: &Path,
    rel: &str,
    kind: Kind,
    created: &mut Vec<PathBuf>,
) -> Result<PathBuf, SandboxError> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = rootfs.to_owned();
    for (i, part) in parts.iter().enumerate() {
        if *part == "." || *part == ".." {
            return Err(SandboxError::InvalidSpec {
                reason: format!("mount point {rel:?} has . or .. components"),
            });
        }
        path.push(part);
        let want = if i + 1 == parts.len() {
            kind
        } else {
            Kind::Dir
        };
        let expected = match want {
            Kind::Dir => "directory",
            Kind::File => "regular file",
        };
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                let ok = match want {
                    Kind::Dir => meta.file_type().is_dir(),
                    Kind::File => meta.file_type().is_file(),
                };
                if !ok {
                    return Err(SandboxError::UnsafeMountPoint { path, expected });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let made = match want {
                    Kind::Dir => fs::DirBuilder::new().mode(0o755).create(&path),
                    Kind::File => fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(&path)
                        .map(drop),
                };
                match made {
                    Ok(()) => created.push(path.clone()),
                    // Made meanwhile by another step sharing this source (a cache): as good.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let meta = fs::symlink_metadata(&path).map_err(|source| {
                            SandboxError::MountPoint {
                                path: path.clone(),
                                source,
                            }
                        })?;
                        let ok = match want {
                            Kind::Dir => meta.file_type().is_dir(),
                            Kind::File => meta.file_type().is_file(),
                        };
                        if !ok {
                            return Err(SandboxError::UnsafeMountPoint { path, expected });
                        }
                    }
                    Err(source) => {
                        return Err(SandboxError::MountPoint {
                            path: path.clone(),
                            source,
                        })
                    }
                }
            }
            Err(source) => return Err(SandboxError::MountPoint { path, source }),
        }
    }
    Ok(path)
}

/// Removes a mount point kiln made for a step, `point` under `base` (the rootfs, or the source
/// a mount inside another was made in), once the step is over: only when every directory
/// between `base` and it is still a real directory (the step may have replaced one with a
/// symlink to anywhere). A directory goes only when empty (what the step put in it is the
/// step's); a symlink is never kiln's. Returns whether it was removed.
pub fn remove_mount_point(base: &Path, point: &Path) -> bool {
    if !fs::symlink_metadata(base).is_ok_and(|m| m.is_dir()) || !real_dirs_to(base, point) {
        return false;
    }
    match fs::symlink_metadata(point) {
        Ok(meta) if meta.is_dir() => fs::remove_dir(point).is_ok(),
        Ok(meta) if !meta.file_type().is_symlink() => fs::remove_file(point).is_ok(),
        _ => false,
    }
}

/// Whether `path` lies under `base` with every directory between them (not `path` itself) a
/// real directory: nothing on the way is a symlink a step put there.
pub(crate) fn real_dirs_to(base: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(base) else {
        return false;
    };
    let mut at = base.to_owned();
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            break;
        }
        at.push(part);
        if !fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
            return false;
        }
    }
    true
}
