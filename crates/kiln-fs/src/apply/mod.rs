//! Apply an image layer (a tar stream, plain, gzip or zstd) over a directory
//! with OCI/Docker layer semantics, without ever touching anything outside it.
//!
//! # How path safety is kept
//!
//! The target directory is opened once. Every entry's parent directory is
//! resolved from that descriptor with `openat2(RESOLVE_IN_ROOT)`, so `..`,
//! absolute symlinks and chains of symlinks are all resolved *as if the target
//! were `/`*: a layer with `a -> /etc` and then `a/passwd` writes
//! `<target>/etc/passwd`, never `/etc/passwd`. The entry itself is then
//! created, removed, linked, chowned, chmodded, stamped and given xattrs with
//! `*at` calls on that parent descriptor naming one component, never following
//! a symlink there. A symlink entry may point anywhere (it is only ever
//! created, never followed); a hard link's target is resolved in the root the
//! same way.
//!
//! Entry names are cleaned before use: empty and `.` components are dropped,
//! a leading `/` is dropped (counted in [`ApplyStats::paths_neutralised`]),
//! and a `..` component is refused with [`ApplyError::UnsafePath`] (or
//! [`ApplyError::UnsafeLink`] in a hard link's target).
//!
//! The target must not be changed by anyone else while a layer is applied.
//!
//! # Semantics
//!
//! - `.wh.NAME` removes `NAME` (a whole tree for a directory) that lower
//!   layers put there; `.wh..wh..opq` removes everything in its directory
//!   that this layer did not put there, whether this layer's entries come
//!   before or after the marker. Whiteout files are never created (see
//!   [`Whiteouts::Overlay`] for overlay lower dirs).
//! - A file, symlink, hard link or node replaces whatever was at its path
//!   (as a new inode: lower hard links keep their content). A directory entry
//!   keeps an existing directory and updates its metadata.
//! - Missing parents are created (0755); a non-directory standing where a
//!   parent must be is [`ApplyError::NotADirectory`].
//! - Owner, then mode (so setuid/setgid survive chown), then xattrs (so
//!   `security.capability` survives chown), then times. Directory modes and
//!   times are set when the layer is done. A directory whose content the layer
//!   changed without listing it keeps its earlier times, so applying the same
//!   layers always gives the same tree (as umoci does). Hard link entries
//!   carry no metadata of their own.

mod applier;

use applier::{timespec_from_pax, Applier};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use kiln_oci::Compression;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

pub use crate::decompress::{detect, Decompressor};
use crate::{at, pax};

/// Who owns what a layer creates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Owners {
    /// Set the uid and gid the layer records (needs root, or `CAP_CHOWN`).
    #[default]
    Preserve,
    /// Leave everything owned by the calling user (rootless unpacking).
    Ignore,
}

/// What to do with character and block device entries.
///
/// FIFOs need no privilege and are always created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Devices {
    /// Create them with `mknod` (needs `CAP_MKNOD`).
    #[default]
    Create,
    /// Skip them, counting them in [`ApplyStats::devices_skipped`].
    Skip,
}

/// What to do when the file system refuses an extended attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum XattrErrors {
    /// Skip it and count it in [`ApplyStats::xattrs_skipped`]. Only refusals
    /// (not supported, not permitted, invalid, too large) are skipped; other
    /// errors still fail.
    #[default]
    Warn,
    /// Fail with [`ApplyError::Xattr`].
    Fail,
}

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Whiteouts {
    /// Delete what they hide from the target (the target holds the lower
    /// layers): the result is the merged root file system.
    #[default]
    Apply,
    /// Write them in overlayfs' format, for a directory that will be an
    /// overlay lower dir: `.wh.NAME` becomes a `0:0` character device `NAME`,
    /// an opaque directory gets `trusted.overlay.opaque=y` (needs root).
    Overlay,
    /// As [`Whiteouts::Overlay`] for an overlay mounted with `userxattr` (in a user
    /// namespace): an opaque directory gets `user.overlay.opaque=y`.
    OverlayUserXattr,
}

/// How [`apply_layer`] treats owners, devices, xattrs and whiteouts.
///
/// The default suits a root process: owners preserved, devices created,
/// refused xattrs skipped and counted, whiteouts applied.
/// [`ApplyOptions::rootless`] suits an unprivileged one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Whether to set the recorded uid/gid.
    pub owners: Owners,
    /// Whether to create device nodes.
    pub devices: Devices,
    /// Whether a refused xattr is an error.
    pub xattr_errors: XattrErrors,
    /// How whiteouts are written.
    pub whiteouts: Whiteouts,
    /// The compression the media type claims. The stream's magic bytes always
    /// decide; a disagreement is reported in [`ApplyStats::hint_disagreed`].
    pub compression_hint: Option<Compression>,
}

impl ApplyOptions {
    /// Options for an unprivileged process: owners ignored, devices skipped.
    pub fn rootless() -> Self {
        ApplyOptions {
            owners: Owners::Ignore,
            devices: Devices::Skip,
            ..ApplyOptions::default()
        }
    }
}

/// What applying a layer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyStats {
    /// The compression found by magic bytes (set by [`apply_layer`]).
    pub compression: Option<Compression>,
    /// True when [`ApplyOptions::compression_hint`] named another compression.
    pub hint_disagreed: bool,
    /// Regular files written.
    pub files: u64,
    /// Directory entries applied (created or updated).
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Device nodes and FIFOs created.
    pub devices: u64,
    /// `.wh.NAME` entries processed.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries processed.
    pub opaque_dirs: u64,
    /// Device entries skipped ([`Devices::Skip`]).
    pub devices_skipped: u64,
    /// Extended attributes the file system refused ([`XattrErrors::Warn`]).
    pub xattrs_skipped: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Entry names with a leading `/` that were made relative to the target.
    pub paths_neutralised: u64,
}

/// Everything that can go wrong applying a layer. Each variant names the
/// entry (as written in the archive) or the path at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The target directory could not be opened.
    #[error("cannot open the target directory {}: {source}", path.display())]
    Target {
        /// The target directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The start of the stream could not be read or is compressed in a way
    /// kiln does not read.
    #[error("cannot decompress the layer for {}: {source}", target.display())]
    Decompress {
        /// The target directory.
        target: PathBuf,
        /// The reason (an unsupported format is `InvalidData`).
        #[source]
        source: io::Error,
    },

    /// The archive could not be read (bad header, truncated or corrupt stream).
    #[error("reading the layer archive {}: {source}", describe_after(after.as_deref()))]
    Archive {
        /// The last entry read successfully, if any.
        after: Option<PathBuf>,
        /// The reader's error.
        #[source]
        source: io::Error,
    },

    /// An entry's content could not be read (truncated or corrupt stream).
    #[error("reading the content of layer entry {}: {source}", entry.display())]
    ReadEntry {
        /// The entry.
        entry: PathBuf,
        /// The reader's error.
        #[source]
        source: io::Error,
    },

    /// A file system operation on an entry failed.
    #[error("layer entry {}: {op} failed: {source}", entry.display())]
    Io {
        /// The entry.
        entry: PathBuf,
        /// What was being done (`create`, `chown`, …).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// An entry's name would leave the target.
    #[error("layer entry {}: unsafe path: {reason}", entry.display())]
    UnsafePath {
        /// The entry.
        entry: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A hard link's target would leave the target directory.
    #[error("layer entry {}: unsafe hard link target {}: {reason}", entry.display(), link.display())]
    UnsafeLink {
        /// The hard link entry.
        entry: PathBuf,
        /// Its link target as written.
        link: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A hard link's target does not exist (in this layer or below).
    #[error("layer entry {}: hard link target {} does not exist", entry.display(), link.display())]
    LinkTargetMissing {
        /// The hard link entry.
        entry: PathBuf,
        /// Its link target as written.
        link: PathBuf,
    },

    /// Something that is not a directory (a file, or a symlink leading
    /// nowhere inside the target) stands where a parent directory must be.
    #[error("layer entry {}: {} is in the way and is not a directory", entry.display(), path.display())]
    NotADirectory {
        /// The entry.
        entry: PathBuf,
        /// The parent path at fault (relative to the target).
        path: PathBuf,
    },

    /// An entry of a type kiln does not apply.
    #[error("layer entry {}: unsupported tar entry type {kind:?}", entry.display())]
    UnsupportedEntry {
        /// The entry.
        entry: PathBuf,
        /// The tar type flag.
        kind: char,
    },

    /// An entry is malformed or makes no sense.
    #[error("layer entry {}: {reason}", entry.display())]
    InvalidEntry {
        /// The entry.
        entry: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },

    /// An extended attribute could not be set ([`XattrErrors::Fail`], or an
    /// error that is not a refusal).
    #[error("layer entry {}: setting xattr {name}: {source}", entry.display())]
    Xattr {
        /// The entry.
        entry: PathBuf,
        /// The attribute name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn describe_after(after: Option<&Path>) -> String {
    match after {
        Some(p) => format!("after entry {}", p.display()),
        None => "at its start".to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Entry points

/// Applies a layer (a tar stream, plain, gzip or zstd: detected by magic
/// bytes) over `target`, which holds the lower layers already.
///
/// The stream is read to its end, so a hashing reader around `layer` sees all
/// of it. On error the target is left part-applied: apply into a scratch
/// directory when that matters (as [`crate::store::ContentStore`] does).
pub fn apply_layer<R: Read>(
    layer: R,
    target: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let tar = Decompressor::new(layer).map_err(|source| ApplyError::Decompress {
        target: target.to_owned(),
        source,
    })?;
    let compression = tar.compression();
    let mut stats = apply_tar(tar, target, options)?;
    stats.compression = Some(compression);
    stats.hint_disagreed = options
        .compression_hint
        .is_some_and(|hint| hint != compression);
    Ok(stats)
}

/// Applies an uncompressed layer tar stream over `target`; see [`apply_layer`].
///
/// The stream is read to its end (past the archive's end-of-archive blocks).
pub fn apply_tar<R: Read>(
    tar: R,
    target: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let root = rfs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ApplyError::Target {
        path: target.to_owned(),
        source: e.into(),
    })?;
    let mut applier = Applier::new(root, options);
    let (tap, tap_handle) = pax::tap(tar);
    let mut archive = tar::Archive::new(tap);
    let mut last: Option<PathBuf> = None;
    {
        let mut entries = archive.entries().map_err(|source| ApplyError::Archive {
            after: None,
            source,
        })?;
        loop {
            tap_handle.arm();
            let next = entries.next();
            tap_handle.disarm();
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|source| ApplyError::Archive {
                after: last.clone(),
                source,
            })?;
            let mut shown = PathBuf::from(OsString::from_vec(entry.path_bytes().into_owned()));
            let records = tap_handle
                .records(entry.raw_header_position())
                .map_err(|reason| ApplyError::InvalidEntry {
                    entry: shown.clone(),
                    reason,
                })?;
            let pax = Pax::from_records(records, &entry, &shown)?;
            if let Some(path) = &pax.path {
                shown = PathBuf::from(OsStr::from_bytes(path));
            }
            applier.entry(&mut entry, &shown, &pax)?;
            // Whatever content the entry type did not use (tar allows it).
            io::copy(&mut entry, &mut io::sink()).map_err(|source| ApplyError::ReadEntry {
                entry: shown.clone(),
                source,
            })?;
            last = Some(shown);
        }
    }
    applier.finish()?;
    // Read the rest (end-of-archive blocks, padding) so that a hashing reader
    // underneath sees the whole stream.
    io::copy(&mut archive.into_inner().into_inner(), &mut io::sink()).map_err(|source| {
        ApplyError::Archive {
            after: last,
            source,
        }
    })?;
    Ok(applier.stats())
}

/// What an entry's PAX header says, parsed binary-safely (see [`crate::pax`]).
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    mtime: Option<rfs::Timespec>,
    atime: Option<rfs::Timespec>,
    uid: Option<u64>,
    gid: Option<u64>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Pax {
    fn from_records<R: Read>(
        records: Vec<pax::Record>,
        entry: &tar::Entry<'_, R>,
        shown: &Path,
    ) -> Result<Pax, ApplyError> {
        let invalid = |reason| ApplyError::InvalidEntry {
            entry: shown.to_owned(),
            reason,
        };
        let number = |v: &[u8], reason| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| invalid(reason))
        };
        let mut pax = Pax::default();
        for (key, value) in records {
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                pax.xattrs.push((name.to_vec(), value));
                continue;
            }
            if key.starts_with(b"GNU.sparse.") {
                return Err(invalid(
                    "PAX sparse files (GNU.sparse.*) are not supported; re-create the layer without --sparse",
                ));
            }
            match key.as_slice() {
                b"path" => pax.path = Some(value),
                b"linkpath" => pax.linkpath = Some(value),
                b"mtime" => {
                    pax.mtime =
                        Some(timespec_from_pax(&value).ok_or_else(|| invalid("bad PAX mtime"))?)
                }
                b"atime" => pax.atime = timespec_from_pax(&value),
                b"uid" => pax.uid = Some(number(&value, "bad PAX uid")?),
                b"gid" => pax.gid = Some(number(&value, "bad PAX gid")?),
                // `tar` reads PAX sizes with a parser of its own: refuse the
                // archive rather than read the two differently.
                b"size" if number(&value, "bad PAX size")? != entry.size() => {
                    return Err(invalid("the PAX size cannot be honoured"));
                }
                _ => {}
            }
        }
        Ok(pax)
    }
}
