//! Layer tars, from a change set or from an overlayfs upper dir.
//!
//! [`write_layer`] turns [`Changes`] into an OCI layer: an entry for each
//! added or modified path (with the parent directories of each change, as
//! docker does), `.wh.NAME` for a deletion, `.wh.NAME` then the new entry for
//! a type change, and `DIR/.wh..wh..opq` after a recreated directory.
//! [`layer_from_overlay_upper`] does the same from an overlay upper dir,
//! which already is the change set.
//!
//! The tar is written here, header by header, not by the `tar` crate: uid,
//! gid, mode (setuid, setgid and sticky included) and mtime are exactly the
//! file's, owner names are left empty (numeric ids only), and PAX records
//! carry what ustar fields cannot: long `path` and `linkpath`, large `uid`,
//! `gid`, `size`, negative or large `mtime`, and every extended attribute as
//! `SCHILY.xattr.NAME` (the spelling GNU tar, Go and containerd read).
//! Sub-second times, atime and ctime are not written: they would only make
//! layers differ.
//!
//! Regular files are streamed from disk through a fixed buffer. A second
//! path to the same `(dev, ino)` becomes a hard-link entry to the first.
//! Every file is opened relative to its parent directory's descriptor with
//! `O_NOFOLLOW`, so a symlink in the tree can never make the writer read a
//! file outside the root. Sockets are skipped: tar has no type for them.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kiln_oci::{media_type, Digest};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::compress::{encode_with, CompressError, Encoding};
use crate::snapshot::{
    is_under, Change, ChangeKind, Changes, FileKind, SnapshotError, Stat, Timestamp,
};

/// The whiteout prefix: `.wh.NAME` deletes `NAME` of lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker: lower layers' entries in this directory are hidden.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

const COPY_BUFFER: usize = 256 * 1024;

/// What went wrong while writing a layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A system call on `path` failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `lstat`, `read`, `list xattrs of`, …).
        op: &'static str,
        /// The path at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tree changed while the layer was written (the step that changed
    /// it must be finished first).
    #[error("{} {what} while the layer was being written", path.display())]
    Changed {
        /// The path at fault.
        path: PathBuf,
        /// What happened (`vanished`, `was replaced`, `shrank`).
        what: &'static str,
    },
    /// A path cannot be put in a layer: a name starting with `.wh.` (which
    /// would read as a whiteout), or a change path that is not plainly relative.
    #[error("{} cannot be put in a layer: {reason}", path.display())]
    InvalidPath {
        /// The path at fault.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// The overlay upper dir uses a feature whose changes are not all in the
    /// upper dir (mount with `redirect_dir=off,metacopy=off`).
    #[error("{} has the overlay attribute {xattr}: mount the overlay with redirect_dir=off and metacopy=off", path.display())]
    OverlayFeature {
        /// The path at fault.
        path: PathBuf,
        /// The attribute found.
        xattr: String,
    },
    /// Writing the layer out failed.
    #[error("cannot write the layer: {source}")]
    Output {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Compression failed.
    #[error(transparent)]
    Compress(#[from] CompressError),
    /// Scanning the overlay upper dir failed.
    #[error(transparent)]
    Scan(#[from] SnapshotError),
}

/// Which family of media types to name the layer with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaTypes {
    /// `application/vnd.oci.image.layer.v1.tar+gzip` and friends.
    #[default]
    Oci,
    /// `application/vnd.docker.image.rootfs.diff.tar.gzip` and friends.
    Docker,
}

/// How to set entry mtimes for reproducible layers (`SOURCE_DATE_EPOCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MtimeRule {
    /// No mtime later than this many seconds since the epoch (BuildKit's
    /// `rewrite-timestamp`): files the step did not touch keep their times.
    Clamp(i64),
    /// Every mtime is this many seconds since the epoch (kaniko's
    /// `--reproducible` uses 0).
    Fixed(i64),
}

/// Which extended attributes go in the layer.
///
/// Never written, whatever the policy: `security.selinux` (a label of the
/// build host, not of the image) and overlayfs's own `trusted.overlay.*` /
/// `user.overlay.*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum XattrPolicy {
    /// All others (`security.capability`, `user.*`, `trusted.*`, ACLs).
    #[default]
    All,
    /// Only `security.capability`, as docker and containerd write layers.
    CapabilityOnly,
    /// None.
    None,
}

/// How to write a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// Compression (gzip level 6 on one thread by default).
    pub encoding: Encoding,
    /// OCI or Docker media types.
    pub media_types: MediaTypes,
    /// Rewrite mtimes for reproducibility; `None` keeps the files' own.
    pub reproducible_mtime: Option<MtimeRule>,
    /// Extended attributes to record.
    pub xattrs: XattrPolicy,
    /// Leave out the entries of parent directories that are not changes themselves. For a
    /// layer made on a partial tree (files added on top of a base that was never
    /// extracted): the base's directories keep their own modes, owners and times.
    pub omit_parent_entries: bool,
}

/// What a written layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the bytes written (the manifest's layer descriptor).
    pub digest: Digest,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Bytes written.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The layer's media type.
    pub media_type: &'static str,
}

/// Writes the layer for `changes` (as [`crate::snapshot::diff`] made them)
/// of the tree at `root` into `out`.
pub fn write_layer<W: Write + Send>(
    root: &Path,
    changes: &Changes,
    out: W,
    opts: &LayerOptions,
) -> Result<LayerInfo, LayerError> {
    write(root, changes, out, opts, false)
}

/// Writes the layer an overlayfs upper dir stands for into `out`.
///
/// A character device 0/0 (or, on kernels that make them, a zero-size file
/// with the `overlay.whiteout` attribute) is a deletion; a directory with
/// `trusted.overlay.opaque=y` (`user.overlay.opaque=y` for a mount with
/// `userxattr`) is opaque. Directories renamed with `redirect_dir` and
/// metadata-only copy-ups (`metacopy`) are refused: their content is not in
/// the upper dir. Unmount the overlay (or at least stop writing to it) first.
pub fn layer_from_overlay_upper<W: Write + Send>(
    upper: &Path,
    out: W,
    opts: &LayerOptions,
) -> Result<LayerInfo, LayerError> {
    write(upper, &list_tree(upper)?, out, opts, true)
}

/// Every entry under `root` as added, found by reading directories only: the writer stats
/// each entry itself, so a stat index here would be a second pass over the inodes.
fn list_tree(root: &Path) -> Result<Changes, LayerError> {
    let mut items = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|source| LayerError::Io {
            op: "read directory",
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| LayerError::Io {
                op: "read directory",
                path: dir.clone(),
                source,
            })?;
            let path = rel.join(entry.file_name());
            // `file_type` comes from the directory entry (no stat) on the usual file systems.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path.clone());
            }
            items.push(Change {
                path,
                kind: ChangeKind::Added,
            });
        }
    }
    Ok(Changes::new(items))
}

fn write<W: Write + Send>(
    root: &Path,
    changes: &Changes,
    out: W,
    opts: &LayerOptions,
    overlay: bool,
) -> Result<LayerInfo, LayerError> {
    let rootfd = rfs::openat(
        rfs::CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open", root.to_owned(), e))?;
    let root_mtime = rfs::fstat(&rootfd)
        .map(|st| Stat::from_raw(&st).mtime)
        .map_err(|e| io_err("stat", root.to_owned(), e))?;
    let ((), compressed) = encode_with(out, &opts.encoding, |enc| {
        let mut buf = BufWriter::with_capacity(COPY_BUFFER, enc);
        let mut w = Writer {
            root,
            rootfd,
            root_mtime,
            opts,
            overlay,
            stack: Vec::new(),
            stack_path: Vec::new(),
            links: HashMap::new(),
            in_parents: false,
            tar: TarOut {
                out: &mut buf,
                pax: Vec::new(),
                name: Vec::new(),
            },
            copy: vec![0; COPY_BUFFER],
            xlist: vec![0; 4096],
            xval: vec![0; 4096],
        };
        for change in changes {
            w.change(change.path.as_os_str().as_bytes(), change.kind)?;
        }
        w.tar.finish().map_err(output)?;
        buf.flush().map_err(output)?;
        Ok::<(), LayerError>(())
    })?;
    let compression = opts.encoding.compression();
    Ok(LayerInfo {
        digest: compressed.digest.digest,
        diff_id: compressed.diff_id.digest,
        size: compressed.digest.size,
        uncompressed_size: compressed.diff_id.size,
        media_type: match opts.media_types {
            MediaTypes::Oci => media_type::oci_layer(compression),
            MediaTypes::Docker => media_type::docker_layer(compression),
        },
    })
}

fn io_err(op: &'static str, path: PathBuf, e: Errno) -> LayerError {
    LayerError::Io {
        op,
        path,
        source: e.into(),
    }
}

fn output(source: io::Error) -> LayerError {
    LayerError::Output { source }
}

fn os(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// Extended attributes of one entry, and what overlayfs said through them.
#[derive(Default)]
struct Xattrs {
    list: Vec<(Vec<u8>, Vec<u8>)>,
    opaque: bool,
    whiteout: bool,
}

#[derive(Clone, Copy)]
enum XattrSource<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

/// An open directory on the path from the root to the current change.
struct Open {
    /// Length of its relative path, a prefix of `Writer::stack_path`.
    len: usize,
    fd: OwnedFd,
    mtime: Timestamp,
}

struct Writer<'a, 'o> {
    root: &'a Path,
    rootfd: OwnedFd,
    root_mtime: Timestamp,
    opts: &'a LayerOptions,
    overlay: bool,
    stack: Vec<Open>,
    stack_path: Vec<u8>,
    /// First archive path written for each multiply-linked `(dev, ino)`.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// True while `enter` writes the directories above a change.
    in_parents: bool,
    tar: TarOut<'o>,
    copy: Vec<u8>,
    xlist: Vec<u8>,
    xval: Vec<u8>,
}

impl Writer<'_, '_> {
    fn full_path(&self, rel: &[u8]) -> PathBuf {
        self.root.join(os(rel))
    }

    fn parent_fd(&self) -> BorrowedFd<'_> {
        self.stack
            .last()
            .map_or(self.rootfd.as_fd(), |o| o.fd.as_fd())
    }

    fn parent_mtime(&self) -> Timestamp {
        self.stack.last().map_or(self.root_mtime, |o| o.mtime)
    }

    fn mtime(&self, t: Timestamp) -> i64 {
        match self.opts.reproducible_mtime {
            None => t.sec,
            Some(MtimeRule::Clamp(max)) => t.sec.min(max),
            Some(MtimeRule::Fixed(t)) => t,
        }
    }

    fn change(&mut self, path: &[u8], kind: ChangeKind) -> Result<(), LayerError> {
        if path.is_empty()
            || path
                .split(|&b| b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            return Err(LayerError::InvalidPath {
                path: os(path).to_owned(),
                reason: "a change path must be relative, without `.`, `..` or empty components",
            });
        }
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        self.enter(parent)?;
        match kind {
            ChangeKind::Deleted => self.whiteout(path, name),
            ChangeKind::TypeChanged => {
                self.whiteout(path, name)?;
                self.entry(path, name, false)
            }
            ChangeKind::Recreated => self.entry(path, name, true),
            _ => self.entry(path, name, false),
        }
    }

    /// Makes `parent` the directory on top of the stack, opening (and
    /// writing entries for) the directories on the way that are not yet in
    /// the layer.
    fn enter(&mut self, parent: &[u8]) -> Result<(), LayerError> {
        while let Some(top) = self.stack.last() {
            let top = &self.stack_path[..top.len];
            if parent == top || is_under(parent, top) {
                break;
            }
            self.stack.pop();
        }
        let mut pos = self.stack.last().map_or(0, |o| o.len);
        self.stack_path.truncate(pos);
        while pos < parent.len() {
            let start = if pos == 0 { 0 } else { pos + 1 };
            let end = parent[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(parent.len(), |i| start + i);
            self.in_parents = true;
            let entered = self.entry(&parent[..end], &parent[start..end], false);
            self.in_parents = false;
            entered?;
            if self.stack.last().map(|o| o.len) != Some(end) {
                return Err(LayerError::Changed {
                    path: self.full_path(&parent[..end]),
                    what: "is no longer a directory",
                });
            }
            pos = end;
        }
        Ok(())
    }

    fn whiteout(&mut self, path: &[u8], name: &[u8]) -> Result<(), LayerError> {
        let dir_len = path.len() - name.len();
        let mut wh = Vec::with_capacity(path.len() + 4);
        wh.extend_from_slice(&path[..dir_len]);
        wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        wh.extend_from_slice(name);
        let mtime = self.mtime(self.parent_mtime());
        self.tar.whiteout(&wh, mtime).map_err(output)
    }

    /// Writes the entry `path` (named `name` in the directory on top of the
    /// stack). A directory is pushed on the stack.
    fn entry(&mut self, path: &[u8], name: &[u8], opaque: bool) -> Result<(), LayerError> {
        if name.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return Err(LayerError::InvalidPath {
                path: self.full_path(path),
                reason: "its name starts with `.wh.`, which layers reserve for whiteouts",
            });
        }
        let cname = CString::new(name).map_err(|_| LayerError::InvalidPath {
            path: self.full_path(path),
            reason: "it contains a NUL byte",
        })?;
        let st = match rfs::statat(self.parent_fd(), &cname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Stat::from_raw(&st),
            Err(Errno::NOENT) => {
                return Err(LayerError::Changed {
                    path: self.full_path(path),
                    what: "vanished",
                })
            }
            Err(e) => return Err(io_err("lstat", self.full_path(path), e)),
        };
        let kind = st.kind();
        if kind == FileKind::Directory {
            return self.directory(path, &cname, opaque);
        }
        if kind == FileKind::Socket {
            return Ok(());
        }
        if self.overlay && kind == FileKind::CharDevice && st.rdev == 0 {
            return self.whiteout(path, name);
        }
        if st.nlink > 1 {
            if let Some(first) = self.links.get(&(st.dev, st.ino)) {
                let h = Header {
                    typeflag: b'1',
                    link: first,
                    ..self.header(path, &st)
                };
                return self.tar.header(&h).map_err(output);
            }
        }
        match kind {
            FileKind::Regular => self.regular(path, &cname, st)?,
            FileKind::Symlink => {
                let target = rfs::readlinkat(self.parent_fd(), &cname, Vec::new())
                    .map_err(|e| io_err("read link", self.full_path(path), e))?;
                let full = self.full_path(path);
                let x = self.xattrs(XattrSource::Path(&full), path)?;
                let h = Header {
                    typeflag: b'2',
                    link: target.as_bytes(),
                    xattrs: &x.list,
                    ..self.header(path, &st)
                };
                self.tar.header(&h).map_err(output)?;
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
                let full = self.full_path(path);
                let x = self.xattrs(XattrSource::Path(&full), path)?;
                let (typeflag, dev) = match kind {
                    FileKind::CharDevice => (b'3', st.rdev),
                    FileKind::BlockDevice => (b'4', st.rdev),
                    _ => (b'6', 0),
                };
                let h = Header {
                    typeflag,
                    devmajor: rfs::major(dev),
                    devminor: rfs::minor(dev),
                    xattrs: &x.list,
                    ..self.header(path, &st)
                };
                self.tar.header(&h).map_err(output)?;
            }
            FileKind::Directory | FileKind::Socket => unreachable!("handled above"),
        }
        if st.nlink > 1 {
            self.links.insert((st.dev, st.ino), path.to_vec());
        }
        Ok(())
    }

    /// The header fields every entry shares, taken from `st`.
    fn header<'h>(&self, path: &'h [u8], st: &Stat) -> Header<'h> {
        Header {
            name: path,
            link: b"",
            typeflag: b'0',
            mode: st.permissions(),
            uid: u64::from(st.uid),
            gid: u64::from(st.gid),
            size: 0,
            mtime: self.mtime(st.mtime),
            devmajor: 0,
            devminor: 0,
            xattrs: &[],
            dir: false,
        }
    }

    fn directory(&mut self, path: &[u8], cname: &CString, opaque: bool) -> Result<(), LayerError> {
        let fd = rfs::openat(
            self.parent_fd(),
            cname,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR | Errno::LOOP => LayerError::Changed {
                path: self.full_path(path),
                what: "was replaced",
            },
            e => io_err("open directory", self.full_path(path), e),
        })?;
        let st = rfs::fstat(&fd)
            .map(|st| Stat::from_raw(&st))
            .map_err(|e| io_err("stat", self.full_path(path), e))?;
        let x = self.xattrs(XattrSource::Fd(fd.as_fd()), path)?;
        if !(self.in_parents && self.opts.omit_parent_entries) {
            let h = Header {
                typeflag: b'5',
                xattrs: &x.list,
                dir: true,
                ..self.header(path, &st)
            };
            self.tar.header(&h).map_err(output)?;
        }
        if opaque || x.opaque {
            let mut marker = path.to_vec();
            marker.push(b'/');
            marker.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
            let mtime = self.mtime(st.mtime);
            self.tar.whiteout(&marker, mtime).map_err(output)?;
        }
        // The parent is on top of the stack (see `enter`); this directory
        // goes above it.
        self.stack_path.clear();
        self.stack_path.extend_from_slice(path);
        self.stack.push(Open {
            len: path.len(),
            fd,
            mtime: st.mtime,
        });
        Ok(())
    }

    fn regular(&mut self, path: &[u8], cname: &CString, st: Stat) -> Result<(), LayerError> {
        let fd = rfs::openat(
            self.parent_fd(),
            cname,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::LOOP => LayerError::Changed {
                path: self.full_path(path),
                what: "was replaced",
            },
            e => io_err("open", self.full_path(path), e),
        })?;
        let fst = rfs::fstat(&fd)
            .map(|st| Stat::from_raw(&st))
            .map_err(|e| io_err("stat", self.full_path(path), e))?;
        if fst.kind() != FileKind::Regular || (fst.dev, fst.ino) != (st.dev, st.ino) {
            return Err(LayerError::Changed {
                path: self.full_path(path),
                what: "was replaced",
            });
        }
        let x = self.xattrs(XattrSource::Fd(fd.as_fd()), path)?;
        if self.overlay && x.whiteout && fst.size == 0 {
            let name = &path[path.len() - cname.as_bytes().len()..];
            return self.whiteout(path, name);
        }
        let h = Header {
            size: fst.size,
            xattrs: &x.list,
            ..self.header(path, &fst)
        };
        self.tar.header(&h).map_err(output)?;
        let mut file = File::from(fd);
        let mut left = fst.size;
        while left > 0 {
            let want = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.copy.len());
            let n = match file.read(&mut self.copy[..want]) {
                Ok(0) => {
                    return Err(LayerError::Changed {
                        path: self.full_path(path),
                        what: "shrank",
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerError::Io {
                        op: "read",
                        path: self.full_path(path),
                        source,
                    })
                }
            };
            self.tar.out.write_all(&self.copy[..n]).map_err(output)?;
            left -= n as u64;
        }
        self.tar.pad(fst.size).map_err(output)
    }

    /// Reads the extended attributes to record, sorted by name, and notes
    /// overlayfs's opaque and whiteout markers.
    fn xattrs(&mut self, src: XattrSource<'_>, path: &[u8]) -> Result<Xattrs, LayerError> {
        let mut out = Xattrs::default();
        let len = loop {
            let r = match src {
                XattrSource::Fd(fd) => rfs::flistxattr(fd, &mut self.xlist[..]),
                XattrSource::Path(p) => rfs::llistxattr(p, &mut self.xlist[..]),
            };
            match r {
                Ok(n) => break n,
                Err(Errno::RANGE) => {
                    let need = match src {
                        XattrSource::Fd(fd) => rfs::flistxattr_query(fd),
                        XattrSource::Path(p) => rfs::llistxattr_query(p),
                    }
                    .map_err(|e| io_err("list xattrs of", self.full_path(path), e))?;
                    self.xlist.resize(need.max(self.xlist.len() * 2), 0);
                }
                Err(Errno::NOTSUP) => return Ok(out),
                Err(e) => return Err(io_err("list xattrs of", self.full_path(path), e)),
            }
        };
        if len == 0 {
            return Ok(out);
        }
        let names: Vec<Vec<u8>> = self.xlist[..len]
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        for name in names {
            let keep = match crate::xattr::overlay_key(&name) {
                Some(key) => {
                    if self.overlay {
                        match key {
                            b"opaque" => {
                                out.opaque = self.xattr_value(src, &name, path)?.as_deref()
                                    == Some(b"y".as_slice());
                            }
                            b"whiteout" => out.whiteout = true,
                            b"redirect" | b"metacopy" => {
                                return Err(LayerError::OverlayFeature {
                                    path: self.full_path(path),
                                    xattr: String::from_utf8_lossy(&name).into_owned(),
                                })
                            }
                            _ => {}
                        }
                    }
                    false
                }
                None if !crate::xattr::belongs_to_image(&name) => false,
                None => match self.opts.xattrs {
                    XattrPolicy::All => true,
                    XattrPolicy::CapabilityOnly => name == b"security.capability",
                    XattrPolicy::None => false,
                },
            };
            if keep {
                if let Some(value) = self.xattr_value(src, &name, path)? {
                    out.list.push((name, value));
                }
            }
        }
        out.list.sort();
        Ok(out)
    }

    /// One attribute's value; `None` when it went away after listing.
    fn xattr_value(
        &mut self,
        src: XattrSource<'_>,
        name: &[u8],
        path: &[u8],
    ) -> Result<Option<Vec<u8>>, LayerError> {
        let cname = CString::new(name).expect("xattr names from the kernel have no NUL");
        loop {
            let r = match src {
                XattrSource::Fd(fd) => rfs::fgetxattr(fd, &cname, &mut self.xval[..]),
                XattrSource::Path(p) => rfs::lgetxattr(p, &cname, &mut self.xval[..]),
            };
            match r {
                Ok(n) => return Ok(Some(self.xval[..n].to_vec())),
                Err(Errno::RANGE) => {
                    let need = match src {
                        XattrSource::Fd(fd) => rfs::fgetxattr_query(fd, &cname),
                        XattrSource::Path(p) => rfs::lgetxattr_query(p, &cname),
                    }
                    .map_err(|e| io_err("read xattr of", self.full_path(path), e))?;
                    self.xval.resize(need.max(self.xval.len() * 2), 0);
                }
                Err(Errno::NODATA) => return Ok(None),
                Err(e) => return Err(io_err("read xattr of", self.full_path(path), e)),
            }
        }
    }
}

/// One tar entry's header fields.
struct Header<'a> {
    /// Archive path, relative, without a trailing `/`.
    name: &'a [u8],
    link: &'a [u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    devmajor: u32,
    devminor: u32,
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
    /// A directory: the name gets a trailing `/`.
    dir: bool,
}

/// Largest value of an octal field of `len` bytes (one byte is the NUL).
const fn octal_max(len: usize) -> u64 {
    (1u64 << (3 * (len as u32 - 1))) - 1
}

/// A ustar + PAX writer.
struct TarOut<'o> {
    out: &'o mut dyn Write,
    pax: Vec<u8>,
    name: Vec<u8>,
}

impl TarOut<'_> {
    fn whiteout(&mut self, name: &[u8], mtime: i64) -> io::Result<()> {
        self.header(&Header {
            name,
            link: b"",
            typeflag: b'0',
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime,
            devmajor: 0,
            devminor: 0,
            xattrs: &[],
            dir: false,
        })
    }

    fn header(&mut self, h: &Header<'_>) -> io::Result<()> {
        self.name.clear();
        self.name.extend_from_slice(h.name);
        if h.dir {
            self.name.push(b'/');
        }
        let mut pax = std::mem::take(&mut self.pax);
        pax.clear();
        let mut binary = false;
        if self.name.len() > 100 {
            binary |= std::str::from_utf8(&self.name).is_err();
            pax_record(&mut pax, b"path", &self.name);
        }
        if h.link.len() > 100 {
            binary |= std::str::from_utf8(h.link).is_err();
            pax_record(&mut pax, b"linkpath", h.link);
        }
        if h.size > octal_max(12) {
            pax_record(&mut pax, b"size", h.size.to_string().as_bytes());
        }
        if h.uid > octal_max(8) {
            pax_record(&mut pax, b"uid", h.uid.to_string().as_bytes());
        }
        if h.gid > octal_max(8) {
            pax_record(&mut pax, b"gid", h.gid.to_string().as_bytes());
        }
        if h.mtime < 0 || h.mtime as u64 > octal_max(12) {
            pax_record(&mut pax, b"mtime", h.mtime.to_string().as_bytes());
        }
        for (k, v) in h.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax_record(&mut pax, &key, v);
        }
        if binary {
            // Must come first so readers apply it to the other records.
            let mut with = Vec::with_capacity(pax.len() + 24);
            pax_record(&mut with, b"hdrcharset", b"BINARY");
            with.extend_from_slice(&pax);
            pax = with;
        }
        if !pax.is_empty() {
            let base = self
                .name
                .strip_suffix(b"/")
                .unwrap_or(&self.name)
                .rsplit(|&b| b == b'/')
                .next()
                .unwrap_or(b"");
            let mut pname = b"PaxHeaders/".to_vec();
            pname.extend_from_slice(base);
            pname.truncate(100);
            let block = ustar_block(&pname, b"", b'x', 0o644, 0, 0, pax.len() as u64, 0, 0, 0);
            self.out.write_all(&block)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.pax = pax;
        let block = ustar_block(
            &self.name,
            h.link,
            h.typeflag,
            h.mode,
            h.uid,
            h.gid,
            h.size,
            h.mtime.max(0) as u64,
            h.devmajor,
            h.devminor,
        );
        self.out.write_all(&block)
    }

    /// Zeros up to the next 512-byte boundary after `len` bytes of data.
    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    /// The end-of-archive marker: two zero blocks.
    fn finish(&mut self) -> io::Result<()> {
        self.out.write_all(&[0u8; 1024])
    }
}

/// Appends the PAX record `"LEN KEY=VALUE\n"`, whose LEN counts itself.
fn pax_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let digits = |n: usize| n.to_string().len();
    let mut len = body + digits(body);
    if digits(len) + body != len {
        len = digits(len) + body;
    }
    buf.extend_from_slice(len.to_string().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(key);
    buf.push(b'=');
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// A numeric field: zero-padded octal and a NUL, or GNU base-256 when the
/// value does not fit (readers take the PAX record written alongside).
fn put_number(field: &mut [u8], v: u64) {
    if v <= octal_max(field.len()) {
        // Written by hand: `format!` allocated once per field, ~8 per entry (a tenth of a
        // layer of small files' time).
        let digits = field.len() - 1;
        let mut rest = v;
        for b in field[..digits].iter_mut().rev() {
            *b = b'0' + (rest & 7) as u8;
            rest >>= 3;
        }
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let n = field.len();
        let be = v.to_be_bytes();
        let take = be.len().min(n - 1);
        field[n - take..].copy_from_slice(&be[be.len() - take..]);
    }
}

#[allow(clippy::too_many_arguments)]
fn ustar_block(
    name: &[u8],
    link: &[u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    devmajor: u32,
    devminor: u32,
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    put_number(&mut b[100..108], u64::from(mode));
    put_number(&mut b[108..116], uid);
    put_number(&mut b[116..124], gid);
    put_number(&mut b[124..136], size);
    put_number(&mut b[136..148], mtime);
    b[156] = typeflag;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(typeflag, b'3' | b'4') {
        put_number(&mut b[329..337], u64::from(devmajor));
        put_number(&mut b[337..345], u64::from(devminor));
    }
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_its_own_digits() {
        for (k, v) in [
            (&b"path"[..], vec![b'a'; 1]),
            (b"path", vec![b'a'; 89]),
            (b"path", vec![b'a'; 90]),
            (b"path", vec![b'a'; 991]),
            (b"path", vec![b'a'; 5000]),
        ] {
            let mut buf = Vec::new();
            pax_record(&mut buf, k, &v);
            let sp = buf.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, buf.len(), "value of {} bytes", v.len());
        }
    }

    #[test]
    fn numbers_use_octal_then_base256() {
        let mut f = [0u8; 8];
        put_number(&mut f, 0o755);
        assert_eq!(&f, b"0000755\0");
        put_number(&mut f, 3_000_000);
        assert_eq!(f[0], 0x80);
        assert_eq!(
            u64::from_be_bytes([0, f[1], f[2], f[3], f[4], f[5], f[6], f[7]]),
            3_000_000
        );
    }

    #[test]
    fn headers_parse_with_the_tar_crate() {
        let mut out = Vec::new();
        let long = vec![b'x'; 150];
        let xattrs = vec![(b"user.k".to_vec(), vec![0u8, 1, 2])];
        {
            let mut t = TarOut {
                out: &mut out,
                pax: Vec::new(),
                name: Vec::new(),
            };
            t.header(&Header {
                name: &long,
                link: b"",
                typeflag: b'0',
                mode: 0o4755,
                uid: 5_000_000,
                gid: 7,
                size: 3,
                mtime: 1_700_000_000,
                devmajor: 0,
                devminor: 0,
                xattrs: &xattrs,
                dir: false,
            })
            .unwrap();
            t.out.write_all(b"abc").unwrap();
            t.pad(3).unwrap();
            t.finish().unwrap();
        }
        let mut ar = tar::Archive::new(&out[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), &long[..]);
        assert_eq!(e.header().mode().unwrap(), 0o4755);
        assert_eq!(e.header().uid().unwrap(), 5_000_000);
        assert_eq!(e.header().gid().unwrap(), 7);
        assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
        let pax: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_owned(), x.value_bytes().to_vec())
            })
            .collect();
        assert!(pax.contains(&("SCHILY.xattr.user.k".into(), vec![0, 1, 2])));
        let mut body = Vec::new();
        e.read_to_end(&mut body).unwrap();
        assert_eq!(body, b"abc");
        assert!(entries.next().is_none());
    }
}
