//! Stat index of a directory tree, and the diff of two indexes.
//!
//! A [`StatIndex`] records the `lstat` of every entry under a root (device,
//! inode, mode, owner, size, nanosecond mtime and ctime, link count, rdev, and
//! the target of symlinks). It reads no file content: after a RUN step, the
//! [`diff`] of the index taken before and the one taken after is the change
//! set, and costs one `lstat` per entry instead of a hash of every byte.
//!
//! Entries are kept in *tree order*: a depth-first walk with the entries of
//! each directory in byte order of their names. A directory always comes
//! before its children, and a whole subtree is contiguous, which is what lets
//! [`diff`] merge two indexes in one pass and drop a deleted directory as one
//! deletion.
//!
//! # Why stat fields are enough
//!
//! An entry is unchanged when all recorded fields are equal. Any write to a
//! file moves its mtime and ctime; `chmod`, `chown`, `setxattr`, `link` and
//! `rename` move its ctime, which user space cannot set. The one hole is
//! timestamp granularity: a change made in the same clock tick as the
//! previous change *and* after the scan could keep every field. [`StatIndex::scan`]
//! closes it the way git handles "racily clean" entries: when some entry's
//! ctime is within a tick of the scan, it waits out that tick (4 ms at
//! HZ=250, see [`timestamp_granularity`]) before returning, so any later
//! change gets a later ctime.
//!
//! # Speed
//!
//! The scan is one `getdents` per directory and one `lstat` per entry, and
//! the kernel's name lookup dominates (about a microsecond per entry, warm).
//! Directories are listed by [`ScanOptions::threads`] workers from a shared
//! queue (each worker holds one directory descriptor at a time, opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), then the listings are
//! stitched into tree order.

mod diff;
mod scan;

pub use diff::{diff, Change, ChangeKind, Changes};
use scan::{assemble, relative_to, Listing, Queue, Shared, Task, Worker};
pub(crate) use scan::{is_under, tree_cmp};

use std::cmp::Ordering;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RawDir, ResolveFlags};
use rustix::io::Errno;

/// The most a file-system timestamp may lag real time, whatever the kernel:
/// files are stamped from a clock that advances once per tick (1/HZ s; 10 ms
/// at HZ=100, the slowest common setting).
pub const MAX_TIMESTAMP_GRANULARITY: Duration = Duration::from_millis(20);

/// How long a file-system timestamp may lag real time on this kernel: the
/// resolution of the coarse clock files are stamped from (4 ms at HZ=250),
/// plus a millisecond, never more than [`MAX_TIMESTAMP_GRANULARITY`].
pub fn timestamp_granularity() -> Duration {
    let res = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
    let res = Duration::new(
        u64::try_from(res.tv_sec).unwrap_or(0),
        u32::try_from(res.tv_nsec).unwrap_or(0),
    );
    if res.is_zero() {
        return MAX_TIMESTAMP_GRANULARITY;
    }
    (res + Duration::from_millis(1)).min(MAX_TIMESTAMP_GRANULARITY)
}

/// What went wrong while scanning a tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A system call on `path` failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `lstat`, `read directory`, `read link`).
        op: &'static str,
        /// The path at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A directory was replaced while the tree was scanned (the step that
    /// changes the tree must be finished first).
    #[error("{} was replaced while the tree was scanned", path.display())]
    Changed {
        /// The path at fault.
        path: PathBuf,
    },
    /// The root to scan is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The root that was given.
        path: PathBuf,
    },
}

/// A point in time as the file system records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before 1970).
    pub sec: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Timestamp {
    fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: d.subsec_nanos(),
            },
            Err(_) => Timestamp::default(),
        }
    }

    fn minus(self, d: Duration) -> Timestamp {
        let total = i128::from(self.sec) * 1_000_000_000 + i128::from(self.nsec)
            - i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
        Timestamp {
            sec: i64::try_from(total.div_euclid(1_000_000_000)).unwrap_or(i64::MIN),
            nsec: u32::try_from(total.rem_euclid(1_000_000_000)).unwrap_or(0),
        }
    }
}

/// The kind of a file-system entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket (never put in a layer).
    Socket,
}

/// The `lstat` fields the index keeps for one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stat {
    /// Device of the file system holding the entry.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// `st_mode`: type bits and permission bits (setuid, setgid, sticky included).
    pub mode: u32,
    /// Hard link count.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number, for device nodes.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last inode change (content, mode, owner, xattrs, links).
    pub ctime: Timestamp,
}

impl Stat {
    /// Converts what rustix returns.
    pub(crate) fn from_raw(st: &rfs::Stat) -> Stat {
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        Stat {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u64,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime: Timestamp {
                sec: st.st_mtime as i64,
                nsec: st.st_mtime_nsec as u32,
            },
            ctime: Timestamp {
                sec: st.st_ctime as i64,
                nsec: st.st_ctime_nsec as u32,
            },
        }
    }

    /// The kind of entry, from the type bits of `mode`.
    pub fn kind(&self) -> FileKind {
        match self.mode & 0o170000 {
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            _ => FileKind::Regular,
        }
    }

    /// Permission bits with setuid, setgid and sticky (`mode & 0o7777`).
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.kind() == FileKind::Directory
    }
}

/// Options for [`StatIndex::scan_with`].
#[derive(Clone, Debug)]
pub struct ScanOptions<'a> {
    /// Paths not to record nor enter (kiln's own dir, bind-mounted `/proc`).
    /// Relative to the root; a leading `/` is ignored, and an absolute path
    /// that starts with the root is made relative to it.
    pub excluded: &'a [&'a Path],
    /// Enter directories on another file system (mount points). Off by
    /// default: a mount point is recorded but not entered.
    pub cross_filesystems: bool,
    /// Wait out the timestamp granularity when an entry changed within a
    /// tick of the scan (see the module docs). On by default.
    pub settle: bool,
    /// Threads that list and stat directories (the scan is kernel-bound:
    /// one `lstat` costs about a microsecond). Default: the available
    /// cores, at most 4. 1 scans on the calling thread only.
    pub threads: usize,
}

impl Default for ScanOptions<'_> {
    fn default() -> Self {
        ScanOptions {
            excluded: &[],
            cross_filesystems: false,
            settle: true,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    stat: Stat,
    /// Start of the path in `bytes`; the link target, if any, follows it.
    start: usize,
    path_len: u32,
    target_len: u32,
}

/// The stat of every entry under a root, in tree order.
///
/// Paths are relative to the root (`etc/passwd`); the root itself is not an
/// entry. Memory is one flat array of fixed-size records plus one byte
/// buffer holding every path and link target.
#[derive(Clone, Debug)]
pub struct StatIndex {
    root: PathBuf,
    slots: Vec<Slot>,
    bytes: Vec<u8>,
    started: Timestamp,
    finished: Timestamp,
}

/// One entry of a [`StatIndex`].
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The path relative to the index root.
    pub path: &'a Path,
    /// Its stat.
    pub stat: &'a Stat,
    /// The target, for a symlink.
    pub link_target: Option<&'a Path>,
}

impl StatIndex {
    /// Scans `root`, skipping `excluded` and not crossing file systems.
    pub fn scan(root: &Path, excluded: &[&Path]) -> Result<StatIndex, SnapshotError> {
        StatIndex::scan_with(
            root,
            &ScanOptions {
                excluded,
                ..ScanOptions::default()
            },
        )
    }

    /// Scans `root` with explicit options.
    pub fn scan_with(root: &Path, opts: &ScanOptions<'_>) -> Result<StatIndex, SnapshotError> {
        let started = Timestamp::from_system_time(SystemTime::now());
        let io_err = |op, source: Errno| SnapshotError::Io {
            op,
            path: root.to_owned(),
            source: source.into(),
        };
        let fd = rfs::openat(
            rfs::CWD,
            root,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| io_err("open", e))?;
        let st = rfs::fstat(&fd).map_err(|e| io_err("stat", e))?;
        if Stat::from_raw(&st).kind() != FileKind::Directory {
            return Err(SnapshotError::NotADirectory {
                path: root.to_owned(),
            });
        }
        let excluded = opts
            .excluded
            .iter()
            .map(|p| relative_to(root, p))
            .filter(|p| !p.is_empty())
            .collect();
        let shared = Shared {
            root,
            rootfd: fd,
            excluded,
            root_dev: Stat::from_raw(&st).dev,
            cross: opts.cross_filesystems,
            queue: Mutex::new(Queue {
                tasks: vec![Task {
                    id: 0,
                    rel: Vec::new(),
                    expect: None,
                }],
                active: 0,
                failed: None,
                poisoned: false,
            }),
            wake: Condvar::new(),
            next_id: AtomicU32::new(1),
        };
        let threads = opts.threads.max(1);
        let mut listings: Vec<(u32, Listing)> = if threads == 1 {
            Worker::new(&shared).run()
        } else {
            std::thread::scope(|s| {
                let others: Vec<_> = (1..threads)
                    .map(|_| s.spawn(|| Worker::new(&shared).run()))
                    .collect();
                let mut all = Worker::new(&shared).run();
                for h in others {
                    all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                }
                all
            })
        };
        let queue = shared.queue.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = queue.failed {
            return Err(e);
        }
        // Put the listings in tree order: each directory's entries right
        // after the directory.
        let count = shared.next_id.into_inner() as usize;
        let (entries, bytes) = listings.iter().fold((0, 0), |(n, b), (_, l)| {
            (n + l.slots.len(), b + l.bytes.len())
        });
        let mut by_id: Vec<Option<Listing>> = (0..count).map(|_| None).collect();
        for (id, l) in listings.drain(..) {
            by_id[id as usize] = Some(l);
        }
        let mut slots = Vec::with_capacity(entries);
        let mut out = Vec::with_capacity(bytes * 3);
        assemble(
            &mut by_id,
            0,
            &mut Vec::with_capacity(256),
            &mut slots,
            &mut out,
        );
        let finished = Timestamp::from_system_time(SystemTime::now());
        let index = StatIndex {
            root: root.to_owned(),
            slots,
            bytes: out,
            started,
            finished,
        };
        if opts.settle {
            index.settle();
        }
        Ok(index)
    }

    /// An index with no entries (what a layer is diffed against when it is
    /// the first one).
    pub fn empty(root: &Path) -> StatIndex {
        StatIndex {
            root: root.to_owned(),
            slots: Vec::new(),
            bytes: Vec::new(),
            started: Timestamp::default(),
            finished: Timestamp::default(),
        }
    }

    /// Sleeps until one timestamp tick after the scan ended, if some entry
    /// changed within a tick of the scan's start.
    fn settle(&self) {
        let tick = timestamp_granularity();
        let threshold = self.started.minus(tick);
        if !self.slots.iter().any(|s| s.stat.ctime >= threshold) {
            return;
        }
        let finished = UNIX_EPOCH
            + Duration::new(
                u64::try_from(self.finished.sec).unwrap_or(0),
                self.finished.nsec,
            );
        let until = finished + tick;
        if let Ok(wait) = until.duration_since(SystemTime::now()) {
            std::thread::sleep(wait.min(tick));
        }
    }

    /// The directory that was scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the tree held nothing but its root.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The entries in tree order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Entry<'_>> + '_ {
        self.slots.iter().map(|s| self.entry(s))
    }

    /// The entry at `path` (relative to the root), found by binary search.
    pub fn get(&self, path: &Path) -> Option<Entry<'_>> {
        let key = path.as_os_str().as_bytes();
        self.slots
            .binary_search_by(|s| tree_cmp(self.path_bytes(s), key))
            .ok()
            .map(|i| self.entry(&self.slots[i]))
    }

    fn path_bytes(&self, s: &Slot) -> &[u8] {
        &self.bytes[s.start..s.start + s.path_len as usize]
    }

    fn target_bytes(&self, s: &Slot) -> &[u8] {
        let t = s.start + s.path_len as usize;
        &self.bytes[t..t + s.target_len as usize]
    }

    fn entry<'a>(&'a self, s: &'a Slot) -> Entry<'a> {
        Entry {
            path: Path::new(OsStr::from_bytes(self.path_bytes(s))),
            stat: &s.stat,
            link_target: (s.stat.kind() == FileKind::Symlink)
                .then(|| Path::new(OsStr::from_bytes(self.target_bytes(s)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_order_puts_a_directory_before_its_children_and_siblings_after() {
        let mut paths: Vec<&[u8]> = vec![b"a-c", b"a/b", b"a", b"a/b/c", b"a.d", b"b", b"a/a"];
        paths.sort_by(|x, y| tree_cmp(x, y));
        let expect: Vec<&[u8]> = vec![b"a", b"a/a", b"a/b", b"a/b/c", b"a-c", b"a.d", b"b"];
        assert_eq!(paths, expect);
        // Same as Path's component-wise order.
        let mut p: Vec<&Path> = expect
            .iter()
            .map(|b| Path::new(OsStr::from_bytes(b)))
            .collect();
        p.sort();
        assert_eq!(
            p.iter()
                .map(|p| p.as_os_str().as_bytes())
                .collect::<Vec<_>>(),
            expect
        );
    }

    #[test]
    fn is_under_needs_a_separator() {
        assert!(is_under(b"a/b", b"a"));
        assert!(!is_under(b"ab", b"a"));
        assert!(!is_under(b"a", b"a"));
    }

    #[test]
    fn excluded_paths_are_made_relative() {
        let root = Path::new("/kiln/rootfs");
        assert_eq!(relative_to(root, Path::new("/proc")), b"proc");
        assert_eq!(relative_to(root, Path::new("/kiln/rootfs/kiln")), b"kiln");
        assert_eq!(relative_to(root, Path::new("a/b/")), b"a/b");
    }

    #[test]
    fn timestamp_granularity_is_a_few_milliseconds() {
        let g = timestamp_granularity();
        assert!(
            g > Duration::from_millis(1) && g <= MAX_TIMESTAMP_GRANULARITY,
            "{g:?}"
        );
    }

    #[test]
    fn timestamp_minus_borrows_seconds() {
        let t = Timestamp { sec: 10, nsec: 5 };
        assert_eq!(
            t.minus(Duration::from_millis(20)),
            Timestamp {
                sec: 9,
                nsec: 980_000_005
            }
        );
    }
}
