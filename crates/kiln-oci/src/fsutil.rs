//! Small file helpers shared by the writers: streamed, hashed copies and
//! durable renames.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, DigestWriter, Digested};
use crate::error::Error;

/// Copy buffer size: large enough that hashing, not syscalls, dominates.
const COPY_BUF: usize = 256 * 1024;

/// Streams `reader` into `file`, hashing on the way. `what` names the content
/// in errors; `path` is the file being written.
pub(crate) fn copy_hashed(
    mut reader: impl Read,
    file: &File,
    algorithm: Algorithm,
    what: &str,
    path: &Path,
) -> Result<Digested, Error> {
    let mut out = DigestWriter::with_algorithm(file, algorithm);
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_io(what, e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", path, e))?;
    }
    Ok(out.finish().1)
}

/// The directory a path lives in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The last component of a path, for naming siblings.
pub(crate) fn file_name(path: &Path) -> Result<String, Error> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::io(
                "name",
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the output path has no file name",
                ),
            )
        })
}

/// Sets Unix permission bits (temp files and dirs are created private).
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Flushes a directory's entries (new names, renames) to disk.
pub(crate) fn sync_dir(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync", path, e))?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes small content to `path` durably (the caller makes it visible by renaming a parent).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = File::create(path).map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", path, e))
}
