//! Small helpers over `*at` system calls: every operation is relative to a
//! directory file descriptor and never follows a symlink in its last component.
//!
//! Nothing here resolves a multi-component path; callers resolve parents
//! with `openat2(RESOLVE_IN_ROOT)` first and then name one component.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::{Errno, Result};

/// Opens the directory `name` in `dir` for reading, refusing a symlink.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The type of `name` in `dir` (not following a symlink), or `None` when absent.
pub(crate) fn file_type(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<rfs::Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// True when `st` describes a directory.
pub(crate) fn is_dir(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// The names in a directory opened for reading (without `.` and `..`), with
/// the type the file system reported (possibly [`FileType::Unknown`]).
pub(crate) fn list(dir: BorrowedFd<'_>) -> Result<Vec<(CString, FileType)>> {
    let dup = rfs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut iter = Dir::new(dup)?;
    let mut out = Vec::new();
    while let Some(entry) = iter.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        out.push((name.to_owned(), entry.file_type()));
    }
    Ok(out)
}

/// Removes `name` from `dir`, whatever it is; a directory goes with all it
/// contains. Symlinks are removed, never followed. Absent is fine.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> Result<()> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // unlink(2) on a directory: EISDIR on Linux, EPERM per POSIX.
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let fd = match open_dir(dir, name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        // Not a directory after all: unlink's EPERM was the real answer.
        Err(Errno::NOTDIR) => return Err(Errno::PERM),
        Err(e) => return Err(e),
    };
    clear(fd.as_fd())?;
    drop(fd);
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes everything inside the directory `dir`.
pub(crate) fn clear(dir: BorrowedFd<'_>) -> Result<()> {
    let names = match list(dir) {
        Ok(names) => names,
        Err(Errno::ACCESS) => {
            // Rootless: a read-only directory from a lower layer.
            make_writable(dir)?;
            list(dir)?
        }
        Err(e) => return Err(e),
    };
    for (name, _) in names {
        let name = OsStr::from_bytes(name.to_bytes());
        match remove_all(dir, name) {
            Err(Errno::ACCESS) => {
                make_writable(dir)?;
                remove_all(dir, name)?;
            }
            r => r?,
        }
    }
    Ok(())
}

fn make_writable(dir: BorrowedFd<'_>) -> Result<()> {
    let st = rfs::fstat(dir)?;
    rfs::fchmod(dir, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))
}

/// A path that names `name` in the directory `dir` through `/proc/self/fd`,
/// for the few calls that have no `*at` form (`lsetxattr`). The kernel walks
/// the magic link to the already-resolved directory, then looks up the one
/// component `name` without following it.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> Vec<u8> {
    use rustix::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    p
}
