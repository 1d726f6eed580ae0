//! The applier: one entry at a time, each parent resolved in the root with
//! `openat2(RESOLVE_IN_ROOT)`, every change made with `*at` calls (see the module above).

use super::*;

pub(super) const COPY_BUF: usize = 128 * 1024;
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OVERLAY_USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// A directory whose mode and times are set once the whole layer is applied
/// (creating entries inside it would change its mtime; a read-only mode
/// would stop a rootless process from creating them).
struct DeferredDir {
    rel: PathBuf,
    mode: u32,
    times: rfs::Timestamps,
}

/// An entry's metadata, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: rfs::Timespec,
    atime: Option<rfs::Timespec>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn times(&self) -> rfs::Timestamps {
        let mtime = self.mtime;
        rfs::Timestamps {
            last_access: self.atime.unwrap_or(mtime),
            last_modification: mtime,
        }
    }
}

/// How metadata can be set on an entry that was just made.
#[derive(Clone, Copy)]
enum Handle<'a> {
    /// An open regular file.
    File(BorrowedFd<'a>),
    /// An open directory (mode and times are deferred).
    Dir(BorrowedFd<'a>),
    /// A symlink: no mode; xattrs and times without following it.
    Symlink,
    /// A device node or FIFO (never opened: opening a FIFO blocks).
    Node,
}

pub(super) struct Applier<'o> {
    root: OwnedFd,
    options: &'o ApplyOptions,
    stats: ApplyStats,
    /// Cleaned paths this layer created or updated (including implicit parent
    /// directories): an opaque marker or a whiteout never removes these.
    touched: HashSet<PathBuf>,
    dirs: Vec<DeferredDir>,
    /// The times of directories whose content this layer changed, as they
    /// were before: restored at the end unless the layer sets them itself,
    /// so that applying the same layers always gives the same tree.
    parent_times: HashMap<PathBuf, rfs::Timestamps>,
    buf: Vec<u8>,
}

impl<'o> Applier<'o> {
    /// An applier writing under the directory `root` (opened by the caller).
    pub(super) fn new(root: OwnedFd, options: &'o ApplyOptions) -> Self {
        Applier {
            root,
            options,
            stats: ApplyStats::default(),
            touched: HashSet::new(),
            dirs: Vec::new(),
            parent_times: HashMap::new(),
            buf: vec![0; COPY_BUF],
        }
    }

    /// What was applied.
    pub(super) fn stats(self) -> ApplyStats {
        self.stats
    }
}

fn ioerr<'a>(entry: &'a Path, op: &'static str) -> impl FnOnce(Errno) -> ApplyError + 'a {
    move |e| ApplyError::Io {
        entry: entry.to_owned(),
        op,
        source: e.into(),
    }
}

/// Splits a raw archive path into safe components.
///
/// Returns the cleaned relative path and whether it was absolute, or the
/// reason it is refused.
fn clean(raw: &[u8]) -> Result<(PathBuf, bool), &'static str> {
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("a `..` component would leave the target"),
            c if c.contains(&0) => return Err("a NUL byte in the name"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok((out, raw.first() == Some(&b'/')))
}

fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or_default(),
    )
}

pub(super) fn timespec_from_pax(value: &[u8]) -> Option<rfs::Timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut tv_nsec: i64 = digits.parse().ok()?;
    if tv_sec < 0 && tv_nsec > 0 {
        // "-1.5" is 1.5 s before the epoch: -2 s + 0.5 s.
        return Some(rfs::Timespec {
            tv_sec: tv_sec - 1,
            tv_nsec: 1_000_000_000 - tv_nsec,
        });
    }
    if tv_nsec >= 1_000_000_000 {
        tv_nsec = 0;
    }
    Some(rfs::Timespec { tv_sec, tv_nsec })
}

fn read_meta<R: Read>(
    entry: &tar::Entry<'_, R>,
    shown: &Path,
    pax: &Pax,
) -> Result<Meta, ApplyError> {
    let invalid = |reason| ApplyError::InvalidEntry {
        entry: shown.to_owned(),
        reason,
    };
    let header = entry.header();
    let old = header.as_old();
    // An all-NUL (or blank) numeric field means 0, as in Go's archive/tar.
    let field = |raw: &[u8], value: io::Result<u64>, reason| {
        if raw.iter().all(|b| *b == 0 || *b == b' ') {
            Ok(0)
        } else {
            value.map_err(|_| invalid(reason))
        }
    };
    let mode = field(
        &old.mode,
        header.mode().map(u64::from),
        "unreadable mode field",
    )? as u32
        & 0o7777;
    let mut uid = field(&old.uid, header.uid(), "unreadable uid field")?;
    let mut gid = field(&old.gid, header.gid(), "unreadable gid field")?;
    let secs = field(&old.mtime, header.mtime(), "unreadable mtime field")?;
    let mut mtime = rfs::Timespec {
        tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    if let Some(t) = pax.mtime {
        mtime = t;
    }
    uid = pax.uid.unwrap_or(uid);
    gid = pax.gid.unwrap_or(gid);
    let atime = pax.atime;
    let xattrs = pax.xattrs.clone();
    Ok(Meta {
        mode,
        uid: u32::try_from(uid).map_err(|_| invalid("uid does not fit 32 bits"))?,
        gid: u32::try_from(gid).map_err(|_| invalid("gid does not fit 32 bits"))?,
        mtime,
        atime,
        xattrs,
    })
}

/// Errors that mean "this file system or this process may not set that
/// attribute", as opposed to a broken file system.
fn is_xattr_refusal(e: Errno) -> bool {
    matches!(
        e,
        Errno::OPNOTSUPP
            | Errno::PERM
            | Errno::ACCESS
            | Errno::INVAL
            | Errno::TOOBIG
            | Errno::RANGE
    )
}

impl Applier<'_> {
    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        pax: &Pax,
    ) -> Result<(), ApplyError> {
        let ty = entry.header().entry_type();
        if ty.is_pax_global_extensions()
            || ty.is_pax_local_extensions()
            || ty.is_gnu_longname()
            || ty.is_gnu_longlink()
        {
            // Global PAX headers carry nothing kiln applies; local and GNU
            // long-name records are folded into the next entry by `tar`.
            return Ok(());
        }
        let raw = shown.as_os_str().as_bytes();
        let (rel, absolute) = clean(raw).map_err(|reason| ApplyError::UnsafePath {
            entry: shown.to_owned(),
            reason,
        })?;
        if absolute {
            self.stats.paths_neutralised += 1;
        }
        let (_, name) = split(&rel);
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(shown, &rel);
        }
        let meta = read_meta(entry, shown, pax)?;
        if rel.as_os_str().is_empty() && !ty.is_dir() {
            return Err(ApplyError::InvalidEntry {
                entry: shown.to_owned(),
                reason: "only a directory may stand for the layer's root",
            });
        }
        match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.file(entry, shown, &rel, &meta)
            }
            tar::EntryType::Directory => self.dir(shown, &rel, &meta),
            tar::EntryType::Symlink => {
                let link = pax
                    .linkpath
                    .clone()
                    .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()))
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| ApplyError::InvalidEntry {
                        entry: shown.to_owned(),
                        reason: "a symlink without a target",
                    })?;
                self.symlink(shown, &rel, &link, &meta)
            }
            tar::EntryType::Link => {
                let link = pax
                    .linkpath
                    .clone()
                    .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()))
                    .unwrap_or_default();
                self.hardlink(shown, &rel, &link)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let kind = match ty {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.node(shown, &rel, kind, rfs::makedev(major, minor), &meta)
            }
            other => Err(ApplyError::UnsupportedEntry {
                entry: shown.to_owned(),
                kind: char::from(other.as_byte()),
            }),
        }
    }

    /// Records that this layer put something at `rel`: that path and its
    /// parents are kept by opaque markers and whiteouts of this layer.
    fn touch(&mut self, rel: &Path) {
        let mut p = Some(rel);
        while let Some(path) = p {
            if !self.touched.insert(path.to_owned()) {
                break;
            }
            p = path.parent();
        }
    }

    /// Resolves `rel` inside the root (symlinks, even absolute ones, stay in it).
    fn open_in_root(&self, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let mut tries = 0;
        loop {
            match rfs::openat2(
                &self.root,
                path,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                // The kernel asks to retry when a rename raced the lookup.
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r,
            }
        }
    }

    /// The directory that will hold `rel`, creating missing parents (mode
    /// 0755) the way `tar` does.
    fn parent_for(&mut self, shown: &Path, rel: &Path) -> Result<OwnedFd, ApplyError> {
        let (parent, _) = split(rel);
        let fd = match self.open_in_root(parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => self.make_parents(shown, parent)?,
            Err(e) => return Err(ioerr(shown, "resolve parent directory")(e)),
        };
        self.note_parent(parent, fd.as_fd());
        Ok(fd)
    }

    /// Remembers the times of directory `rel` before this layer changes its
    /// content (first change only).
    fn note_parent(&mut self, rel: &Path, fd: BorrowedFd<'_>) {
        if self.parent_times.contains_key(rel) {
            return;
        }
        if let Ok(st) = rfs::fstat(fd) {
            let times = rfs::Timestamps {
                last_access: rfs::Timespec {
                    tv_sec: st.st_atime as _,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: rfs::Timespec {
                    tv_sec: st.st_mtime as _,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            self.parent_times.insert(rel.to_owned(), times);
        }
    }

    fn make_parents(&mut self, shown: &Path, parent: &Path) -> Result<OwnedFd, ApplyError> {
        let mut cur = self
            .open_in_root(Path::new(""), OFlags::PATH | OFlags::DIRECTORY)
            .map_err(ioerr(shown, "open target"))?;
        let mut prefix = PathBuf::new();
        for comp in parent.iter() {
            prefix.push(comp);
            match self.open_in_root(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(Errno::NOTDIR) => {
                    return Err(ApplyError::NotADirectory {
                        entry: shown.to_owned(),
                        path: prefix,
                    })
                }
                Err(e) => return Err(ioerr(shown, "resolve parent directory")(e)),
            }
            self.note_parent(prefix.parent().unwrap_or(Path::new("")), cur.as_fd());
            match rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                Ok(()) => {}
                // The name exists but does not resolve: a symlink that leads
                // nowhere inside the root.
                Err(Errno::EXIST) => {
                    return Err(ApplyError::NotADirectory {
                        entry: shown.to_owned(),
                        path: prefix,
                    })
                }
                Err(e) => return Err(ioerr(shown, "create parent directory")(e)),
            }
            let fd =
                at::open_dir(cur.as_fd(), comp).map_err(ioerr(shown, "open parent directory"))?;
            rfs::fchmod(&fd, Mode::from_raw_mode(0o755)).map_err(ioerr(shown, "chmod parent"))?;
            self.touch(&prefix);
            cur = fd;
        }
        Ok(cur)
    }

    /// Removes whatever is at `name` in `parent` (a directory with its whole
    /// tree), unless it is a directory and `keep_dir` is set. Returns whether
    /// a directory was kept.
    fn clear_slot(
        &self,
        shown: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        keep_dir: bool,
    ) -> Result<bool, ApplyError> {
        let Some(st) = at::file_type(parent, name).map_err(ioerr(shown, "stat existing"))? else {
            return Ok(false);
        };
        if at::is_dir(&st) {
            if keep_dir {
                return Ok(true);
            }
            at::remove_all(parent, name).map_err(ioerr(shown, "remove existing directory"))?;
        } else {
            rfs::unlinkat(parent, name, AtFlags::empty())
                .map_err(ioerr(shown, "remove existing entry"))?;
        }
        Ok(false)
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &Path,
        rel: &Path,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let parent = self.parent_for(shown, rel)?;
        let (_, name) = split(rel);
        // Always a new inode: writing into the old one would change every
        // hard link to it in the lower layers.
        self.clear_slot(shown, parent.as_fd(), name, false)?;
        let fd = rfs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(ioerr(shown, "create file"))?;
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ApplyError::ReadEntry {
                        entry: shown.to_owned(),
                        source,
                    })
                }
            };
            file.write_all(&self.buf[..n])
                .map_err(|source| ApplyError::Io {
                    entry: shown.to_owned(),
                    op: "write",
                    source,
                })?;
            written += n as u64;
        }
        if !entry.header().entry_type().is_gnu_sparse() && written != entry.size() {
            return Err(ApplyError::ReadEntry {
                entry: shown.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the archive ends {written} bytes into {} bytes of content",
                        entry.size()
                    ),
                ),
            });
        }
        self.set_meta(
            shown,
            parent.as_fd(),
            name,
            Handle::File(file.as_fd()),
            meta,
        )?;
        self.stats.files += 1;
        self.stats.bytes += written;
        self.touch(rel);
        Ok(())
    }

    fn dir(&mut self, shown: &Path, rel: &Path, meta: &Meta) -> Result<(), ApplyError> {
        let fd = if rel.as_os_str().is_empty() {
            self.open_in_root(rel, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(ioerr(shown, "open target"))?
        } else {
            let parent = self.parent_for(shown, rel)?;
            let (_, name) = split(rel);
            if !self.clear_slot(shown, parent.as_fd(), name, true)? {
                // 0700 until the end of the layer; the real mode is deferred.
                rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                    .map_err(ioerr(shown, "create directory"))?;
            }
            at::open_dir(parent.as_fd(), name).map_err(ioerr(shown, "open directory"))?
        };
        // chown and xattrs now (they do not change with later entries); the
        // mode and times when the layer is done.
        self.set_owner_and_xattrs(shown, None, Handle::Dir(fd.as_fd()), meta)?;
        self.dirs.push(DeferredDir {
            rel: rel.to_owned(),
            mode: meta.mode,
            times: meta.times(),
        });
        self.stats.dirs += 1;
        self.touch(rel);
        Ok(())
    }

    fn symlink(
        &mut self,
        shown: &Path,
        rel: &Path,
        link: &[u8],
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        let parent = self.parent_for(shown, rel)?;
        let (_, name) = split(rel);
        self.clear_slot(shown, parent.as_fd(), name, false)?;
        rfs::symlinkat(link, &parent, name).map_err(ioerr(shown, "create symlink"))?;
        self.set_meta(shown, parent.as_fd(), name, Handle::Symlink, meta)?;
        self.stats.symlinks += 1;
        self.touch(rel);
        Ok(())
    }

    fn hardlink(&mut self, shown: &Path, rel: &Path, link: &[u8]) -> Result<(), ApplyError> {
        let link_shown = PathBuf::from(OsStr::from_bytes(link));
        let unsafe_link = |reason| ApplyError::UnsafeLink {
            entry: shown.to_owned(),
            link: link_shown.clone(),
            reason,
        };
        let (target, _) = clean(link).map_err(unsafe_link)?;
        if target.as_os_str().is_empty() {
            return Err(unsafe_link("a hard link must name a file inside the layer"));
        }
        let missing = || ApplyError::LinkTargetMissing {
            entry: shown.to_owned(),
            link: link_shown.clone(),
        };
        let (target_parent, target_name) = split(&target);
        let target_dir = match self.open_in_root(target_parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Err(missing()),
            Err(e) => return Err(ioerr(shown, "resolve hard link target")(e)),
        };
        let Some(target_st) = at::file_type(target_dir.as_fd(), target_name)
            .map_err(ioerr(shown, "stat hard link target"))?
        else {
            return Err(missing());
        };
        if at::is_dir(&target_st) {
            return Err(ApplyError::InvalidEntry {
                entry: shown.to_owned(),
                reason: "a hard link to a directory",
            });
        }
        let parent = self.parent_for(shown, rel)?;
        let (_, name) = split(rel);
        let existing =
            at::file_type(parent.as_fd(), name).map_err(ioerr(shown, "stat existing"))?;
        let already = existing
            .is_some_and(|st| st.st_dev == target_st.st_dev && st.st_ino == target_st.st_ino);
        if !already {
            self.clear_slot(shown, parent.as_fd(), name, false)?;
            // Flags 0: a symlink named as the target is linked itself, not followed.
            rfs::linkat(&target_dir, target_name, &parent, name, AtFlags::empty())
                .map_err(ioerr(shown, "create hard link"))?;
        }
        self.stats.hardlinks += 1;
        self.touch(rel);
        Ok(())
    }

    fn node(
        &mut self,
        shown: &Path,
        rel: &Path,
        kind: FileType,
        dev: rfs::Dev,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        if kind != FileType::Fifo && self.options.devices == Devices::Skip {
            self.stats.devices_skipped += 1;
            return Ok(());
        }
        let parent = self.parent_for(shown, rel)?;
        let (_, name) = split(rel);
        self.clear_slot(shown, parent.as_fd(), name, false)?;
        rfs::mknodat(
            &parent,
            name,
            kind,
            Mode::from_raw_mode(meta.mode & 0o777),
            dev,
        )
        .map_err(ioerr(shown, "mknod"))?;
        self.set_meta(shown, parent.as_fd(), name, Handle::Node, meta)?;
        self.stats.devices += 1;
        self.touch(rel);
        Ok(())
    }

    /// Owner, mode, xattrs, times, in that order: chown clears setuid/setgid
    /// and `security.capability`, so the mode and xattrs come after it.
    fn set_meta(
        &mut self,
        shown: &Path,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        handle: Handle<'_>,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        if self.options.owners == Owners::Preserve {
            let (uid, gid) = (Uid::from_raw(meta.uid), Gid::from_raw(meta.gid));
            match handle {
                Handle::File(fd) | Handle::Dir(fd) => rfs::fchown(fd, Some(uid), Some(gid)),
                Handle::Symlink | Handle::Node => rfs::chownat(
                    parent,
                    name,
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                ),
            }
            .map_err(ioerr(shown, "chown"))?;
        }
        let mode = Mode::from_raw_mode(meta.mode);
        match handle {
            Handle::File(fd) | Handle::Dir(fd) => {
                rfs::fchmod(fd, mode).map_err(ioerr(shown, "chmod"))?;
            }
            Handle::Node => {
                // Linux has no fchmodat(AT_SYMLINK_NOFOLLOW) before 6.6; the
                // node was made a moment ago by this call's caller and is
                // checked not to be a symlink.
                let st = at::file_type(parent, name).map_err(ioerr(shown, "stat"))?;
                if st.is_some_and(|st| FileType::from_raw_mode(st.st_mode) != FileType::Symlink) {
                    rfs::chmodat(parent, name, mode, AtFlags::empty())
                        .map_err(ioerr(shown, "chmod"))?;
                }
            }
            Handle::Symlink => {}
        }
        self.set_xattrs(shown, Some((parent, name)), handle, meta)?;
        rfs::utimensat(parent, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(ioerr(shown, "set times"))?;
        Ok(())
    }

    /// For directories: the owner and xattrs now, mode and times later.
    fn set_owner_and_xattrs(
        &mut self,
        shown: &Path,
        at_name: Option<(BorrowedFd<'_>, &OsStr)>,
        handle: Handle<'_>,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        if let (Owners::Preserve, Handle::Dir(fd)) = (self.options.owners, handle) {
            rfs::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(ioerr(shown, "chown"))?;
        }
        self.set_xattrs(shown, at_name, handle, meta)
    }

    fn set_xattrs(
        &mut self,
        shown: &Path,
        at_name: Option<(BorrowedFd<'_>, &OsStr)>,
        handle: Handle<'_>,
        meta: &Meta,
    ) -> Result<(), ApplyError> {
        for (key, value) in &meta.xattrs {
            let result = match (handle, at_name) {
                (Handle::File(fd) | Handle::Dir(fd), _) => {
                    rfs::fsetxattr(fd, key.as_slice(), value, rfs::XattrFlags::empty())
                }
                (Handle::Symlink | Handle::Node, Some((parent, name))) => rfs::lsetxattr(
                    at::proc_path(parent, name),
                    key.as_slice(),
                    value,
                    rfs::XattrFlags::empty(),
                ),
                (Handle::Symlink | Handle::Node, None) => Err(Errno::INVAL),
            };
            match result {
                Ok(()) => {}
                Err(e) if self.options.xattr_errors == XattrErrors::Warn && is_xattr_refusal(e) => {
                    self.stats.xattrs_skipped += 1;
                }
                Err(e) => {
                    return Err(ApplyError::Xattr {
                        entry: shown.to_owned(),
                        name: String::from_utf8_lossy(key).into_owned(),
                        source: e.into(),
                    })
                }
            }
        }
        Ok(())
    }

    fn whiteout(&mut self, shown: &Path, rel: &Path) -> Result<(), ApplyError> {
        let (dir_rel, name) = split(rel);
        let name = name.as_bytes();
        if name == OPAQUE_MARKER {
            return self.opaque(shown, dir_rel);
        }
        if name.starts_with(b".wh..wh.") {
            // aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): never applied.
            return Ok(());
        }
        let victim = OsStr::from_bytes(&name[WHITEOUT_PREFIX.len()..]);
        if victim.is_empty() || victim == "." || victim == ".." {
            return Err(ApplyError::InvalidEntry {
                entry: shown.to_owned(),
                reason: "a whiteout of an empty, `.` or `..` name",
            });
        }
        self.stats.whiteouts += 1;
        let victim_rel = dir_rel.join(victim);
        if self.touched.contains(&victim_rel) {
            // Whiteouts hide lower layers only, never this layer's own entries.
            return Ok(());
        }
        match self.options.whiteouts {
            Whiteouts::Apply => {
                let dir = match self.open_in_root(dir_rel, OFlags::PATH | OFlags::DIRECTORY) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(ioerr(shown, "resolve whiteout directory")(e)),
                };
                self.note_parent(dir_rel, dir.as_fd());
                at::remove_all(dir.as_fd(), victim).map_err(ioerr(shown, "remove whited-out entry"))
            }
            Whiteouts::Overlay | Whiteouts::OverlayUserXattr => {
                let parent = self.parent_for(shown, &victim_rel)?;
                self.clear_slot(shown, parent.as_fd(), victim, false)?;
                rfs::mknodat(
                    &parent,
                    victim,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(ioerr(shown, "create overlay whiteout"))
            }
        }
    }

    fn opaque(&mut self, shown: &Path, dir_rel: &Path) -> Result<(), ApplyError> {
        self.stats.opaque_dirs += 1;
        let dir = match self.options.whiteouts {
            Whiteouts::Apply => {
                match self.open_in_root(dir_rel, OFlags::RDONLY | OFlags::DIRECTORY) {
                    Ok(fd) => fd,
                    // Nothing below to hide.
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(ioerr(shown, "open opaque directory")(e)),
                }
            }
            Whiteouts::Overlay | Whiteouts::OverlayUserXattr => self.ensure_dir(shown, dir_rel)?,
        };
        self.clear_lower(shown, dir.as_fd(), dir_rel)?;
        let marker = match self.options.whiteouts {
            Whiteouts::Apply => None,
            Whiteouts::Overlay => Some(OVERLAY_OPAQUE_XATTR),
            Whiteouts::OverlayUserXattr => Some(OVERLAY_USER_OPAQUE_XATTR),
        };
        if let Some(name) = marker {
            rfs::fsetxattr(&dir, name, b"y", rfs::XattrFlags::empty()).map_err(|e| {
                ApplyError::Xattr {
                    entry: shown.to_owned(),
                    name: name.to_owned(),
                    source: e.into(),
                }
            })?;
        }
        Ok(())
    }

    /// Opens directory `rel`, creating it (mode 0755) when missing.
    fn ensure_dir(&mut self, shown: &Path, rel: &Path) -> Result<OwnedFd, ApplyError> {
        if rel.as_os_str().is_empty() {
            return self
                .open_in_root(rel, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(ioerr(shown, "open target"));
        }
        let parent = self.parent_for(shown, rel)?;
        let (_, name) = split(rel);
        if !self.clear_slot(shown, parent.as_fd(), name, true)? {
            rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
                .map_err(ioerr(shown, "create directory"))?;
            self.touch(rel);
        }
        let fd = at::open_dir(parent.as_fd(), name).map_err(ioerr(shown, "open directory"))?;
        Ok(fd)
    }

    /// Removes from `dir` everything this layer did not put there, descending
    /// into the directories it did.
    fn clear_lower(
        &mut self,
        shown: &Path,
        dir: BorrowedFd<'_>,
        dir_rel: &Path,
    ) -> Result<(), ApplyError> {
        let names = at::list(dir).map_err(ioerr(shown, "list opaque directory"))?;
        for (name, ty) in names {
            let name = OsStr::from_bytes(name.to_bytes());
            let child_rel = dir_rel.join(name);
            if !self.touched.contains(&child_rel) {
                self.note_parent(dir_rel, dir);
                at::remove_all(dir, name).map_err(ioerr(shown, "remove hidden entry"))?;
                continue;
            }
            let is_dir = match ty {
                FileType::Directory => true,
                FileType::Unknown => at::file_type(dir, name)
                    .map_err(ioerr(shown, "stat"))?
                    .is_some_and(|st| at::is_dir(&st)),
                _ => false,
            };
            if is_dir {
                let child = at::open_dir(dir, name).map_err(ioerr(shown, "open directory"))?;
                self.clear_lower(shown, child.as_fd(), &child_rel)?;
            }
        }
        Ok(())
    }

    /// Sets the deferred directory modes and times, deepest first.
    pub(super) fn finish(&mut self) -> Result<(), ApplyError> {
        for (rel, times) in std::mem::take(&mut self.parent_times) {
            let fd = match self
                .open_in_root(&rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(ioerr(&rel, "open directory")(e)),
            };
            rfs::futimens(&fd, &times).map_err(ioerr(&rel, "set times"))?;
        }
        let mut dirs = std::mem::take(&mut self.dirs);
        // Stable: for a directory listed twice the later entry still wins.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.iter().count()));
        for d in &dirs {
            let fd = match self.open_in_root(
                &d.rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Replaced later in the layer by something else, or removed.
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(ioerr(&d.rel, "open directory")(e)),
            };
            rfs::fchmod(&fd, Mode::from_raw_mode(d.mode)).map_err(ioerr(&d.rel, "chmod"))?;
            rfs::futimens(&fd, &d.times).map_err(ioerr(&d.rel, "set times"))?;
        }
        Ok(())
    }
}
