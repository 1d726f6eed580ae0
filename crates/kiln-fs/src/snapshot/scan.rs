//! The parallel walk behind [`StatIndex::scan`](super::StatIndex::scan): workers list
//! directories from a shared queue, then the listings are stitched into tree order.

use super::*;

/// Makes an excluded path relative to the root, as bytes.
pub(super) fn relative_to(root: &Path, p: &Path) -> Vec<u8> {
    let rel = p.strip_prefix(root).unwrap_or(p);
    let mut out = Vec::new();
    for c in rel.components() {
        if let std::path::Component::Normal(c) = c {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(c.as_bytes());
        }
    }
    out
}

/// Tree order on relative paths: component by component, each in byte
/// order. The same as comparing bytes with `/` ranked below every other
/// byte (names hold neither `/` nor NUL).
pub(crate) fn tree_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => {
            let rank = |c: u8| if c == b'/' { 0 } else { c };
            rank(a[i]).cmp(&rank(b[i]))
        }
        None => a.len().cmp(&b.len()),
    }
}

/// True when `p` lies strictly under directory `dir`.
pub(crate) fn is_under(p: &[u8], dir: &[u8]) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/'
}

const NO_CHILD: u32 = u32::MAX;

/// One entry of a directory listing: its name (and link target) in the
/// listing's bytes, and the listing of its own entries for a directory.
pub(super) struct RawSlot {
    pub(super) stat: Stat,
    pub(super) start: u32,
    pub(super) name_len: u32,
    pub(super) target_len: u32,
    pub(super) child: u32,
}

/// The entries of one directory, sorted by name.
#[derive(Default)]
pub(super) struct Listing {
    pub(super) slots: Vec<RawSlot>,
    pub(super) bytes: Vec<u8>,
}

/// A directory to list.
pub(super) struct Task {
    pub(super) id: u32,
    /// Relative path ("" for the root).
    pub(super) rel: Vec<u8>,
    /// `(dev, ino)` its parent saw, to notice a swap between lstat and open.
    pub(super) expect: Option<(u64, u64)>,
}

pub(super) struct Queue {
    pub(super) tasks: Vec<Task>,
    /// Tasks being worked on: when none are and the queue is empty, the scan is done.
    pub(super) active: usize,
    pub(super) failed: Option<SnapshotError>,
    /// A worker panicked: the others stop instead of waiting for it.
    pub(super) poisoned: bool,
}

pub(super) struct Shared<'a> {
    pub(super) root: &'a Path,
    pub(super) rootfd: OwnedFd,
    pub(super) excluded: Vec<Vec<u8>>,
    pub(super) root_dev: u64,
    pub(super) cross: bool,
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Condvar,
    pub(super) next_id: AtomicU32,
}

impl Shared<'_> {
    fn err(&self, op: &'static str, rel: &[u8], e: Errno) -> SnapshotError {
        SnapshotError::Io {
            op,
            path: self.root.join(OsStr::from_bytes(rel)),
            source: e.into(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the directory `rel` under the root without following any
    /// symlink on the way.
    fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let path = OsStr::from_bytes(rel);
        match rfs::openat2(
            &self.rootfd,
            path,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::NOSYS) => {}
            other => return other,
        }
        // Before Linux 5.6: one component at a time.
        let mut fd: Option<OwnedFd> = None;
        for c in rel.split(|&b| b == b'/') {
            let next = match &fd {
                None => rfs::openat(&self.rootfd, OsStr::from_bytes(c), flags, Mode::empty()),
                Some(d) => rfs::openat(d, OsStr::from_bytes(c), flags, Mode::empty()),
            }?;
            fd = Some(next);
        }
        fd.ok_or(Errno::INVAL)
    }
}

/// Lists directories from the shared queue until it runs dry.
pub(super) struct Worker<'s, 'r> {
    pub(super) sh: &'s Shared<'r>,
    pub(super) done: Vec<(u32, Listing)>,
    pub(super) found: Vec<Task>,
    /// NUL-terminated names of the directory being listed.
    pub(super) names: Vec<u8>,
    pub(super) spans: Vec<(usize, usize)>,
    pub(super) dirbuf: Vec<u8>,
    pub(super) cur: Vec<u8>,
    pub(super) linkbuf: Vec<u8>,
}

impl<'s, 'r> Worker<'s, 'r> {
    pub(super) fn new(sh: &'s Shared<'r>) -> Self {
        Worker {
            sh,
            done: Vec::new(),
            found: Vec::new(),
            names: Vec::with_capacity(16 * 1024),
            spans: Vec::with_capacity(1024),
            dirbuf: Vec::with_capacity(64 * 1024),
            cur: Vec::with_capacity(256),
            linkbuf: Vec::with_capacity(256),
        }
    }

    pub(super) fn run(mut self) -> Vec<(u32, Listing)> {
        /// Wakes the other workers if this one unwinds.
        struct OnPanic<'g, 'r>(&'g Shared<'r>);
        impl Drop for OnPanic<'_, '_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.lock().poisoned = true;
                    self.0.wake.notify_all();
                }
            }
        }
        let _guard = OnPanic(self.sh);
        loop {
            let task = {
                let mut q = self.sh.lock();
                loop {
                    if q.failed.is_some() || q.poisoned {
                        return self.done;
                    }
                    if let Some(t) = q.tasks.pop() {
                        q.active += 1;
                        break t;
                    }
                    if q.active == 0 {
                        return self.done;
                    }
                    q = self.sh.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let result = self.list(&task);
            let mut q = self.sh.lock();
            q.active -= 1;
            match result {
                Ok(listing) => {
                    self.done.push((task.id, listing));
                    q.tasks.append(&mut self.found);
                }
                Err(e) => {
                    q.failed.get_or_insert(e);
                }
            }
            drop(q);
            self.sh.wake.notify_all();
        }
    }

    /// Lists and stats one directory; queues the subdirectories to enter.
    fn list(&mut self, task: &Task) -> Result<Listing, SnapshotError> {
        let sh = self.sh;
        let opened;
        let fd = if task.rel.is_empty() {
            &sh.rootfd
        } else {
            opened = match sh.open_dir(&task.rel) {
                Ok(fd) => fd,
                // Gone since its parent was listed: it is not part of the tree.
                Err(Errno::NOENT) => return Ok(Listing::default()),
                Err(e) => return Err(sh.err("open directory", &task.rel, e)),
            };
            &opened
        };
        if let Some(expect) = task.expect {
            let st = rfs::fstat(fd).map_err(|e| sh.err("stat", &task.rel, e))?;
            let st = Stat::from_raw(&st);
            if (st.dev, st.ino) != expect {
                return Err(SnapshotError::Changed {
                    path: sh.root.join(OsStr::from_bytes(&task.rel)),
                });
            }
        }
        self.names.clear();
        self.spans.clear();
        let mut dir = RawDir::new(fd, self.dirbuf.spare_capacity_mut());
        while let Some(ent) = dir.next() {
            let ent = ent.map_err(|e| sh.err("read directory", &task.rel, e))?;
            let name = ent.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            self.spans.push((self.names.len(), name.len() - 1));
            self.names.extend_from_slice(name);
        }
        let names = &self.names;
        self.spans
            .sort_unstable_by(|a, b| names[a.0..a.0 + a.1].cmp(&names[b.0..b.0 + b.1]));

        let mut out = Listing {
            slots: Vec::with_capacity(self.spans.len()),
            bytes: Vec::with_capacity(self.names.len()),
        };
        for k in 0..self.spans.len() {
            let (start, len) = self.spans[k];
            let name = &self.names[start..start + len];
            self.cur.clear();
            self.cur.extend_from_slice(&task.rel);
            if !self.cur.is_empty() {
                self.cur.push(b'/');
            }
            self.cur.extend_from_slice(name);
            if sh.excluded.contains(&self.cur) {
                continue;
            }
            let cname = CStr::from_bytes_with_nul(&self.names[start..=start + len])
                .expect("directory entry names are NUL-terminated");
            let st = match rfs::statat(fd, cname, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Stat::from_raw(&st),
                // Gone between readdir and lstat: it is not part of the tree.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(sh.err("lstat", &self.cur, e)),
            };
            let slot_start = out.bytes.len();
            out.bytes.extend_from_slice(name);
            let mut slot = RawSlot {
                stat: st,
                start: slot_start as u32,
                name_len: len as u32,
                target_len: 0,
                child: NO_CHILD,
            };
            match st.kind() {
                FileKind::Symlink => {
                    let buf = std::mem::take(&mut self.linkbuf);
                    match rfs::readlinkat(fd, cname, buf) {
                        Ok(target) => {
                            let target = target.into_bytes();
                            out.bytes.extend_from_slice(&target);
                            slot.target_len = target.len() as u32;
                            self.linkbuf = target;
                            self.linkbuf.clear();
                        }
                        Err(Errno::NOENT) => {
                            out.bytes.truncate(slot_start);
                            continue;
                        }
                        Err(e) => return Err(sh.err("read link", &self.cur, e)),
                    }
                }
                FileKind::Directory if sh.cross || st.dev == sh.root_dev => {
                    slot.child = sh.next_id.fetch_add(1, AtomicOrdering::Relaxed);
                    self.found.push(Task {
                        id: slot.child,
                        rel: self.cur.clone(),
                        expect: Some((st.dev, st.ino)),
                    });
                }
                _ => {}
            }
            out.slots.push(slot);
        }
        // Deeper directories first: the stack then walks depth-first.
        self.found.reverse();
        Ok(out)
    }
}

/// Appends the listing `id` and, after each directory in it, that
/// directory's own listing: tree order.
pub(super) fn assemble(
    by_id: &mut [Option<Listing>],
    id: u32,
    cur: &mut Vec<u8>,
    slots: &mut Vec<Slot>,
    bytes: &mut Vec<u8>,
) {
    let Some(listing) = by_id.get_mut(id as usize).and_then(Option::take) else {
        return;
    };
    for rs in &listing.slots {
        let parent_len = cur.len();
        if parent_len > 0 {
            cur.push(b'/');
        }
        let name_end = (rs.start + rs.name_len) as usize;
        cur.extend_from_slice(&listing.bytes[rs.start as usize..name_end]);
        let start = bytes.len();
        bytes.extend_from_slice(cur);
        bytes.extend_from_slice(&listing.bytes[name_end..name_end + rs.target_len as usize]);
        slots.push(Slot {
            stat: rs.stat,
            start,
            path_len: cur.len() as u32,
            target_len: rs.target_len,
        });
        if rs.child != NO_CHILD {
            assemble(by_id, rs.child, cur, slots, bytes);
        }
        cur.truncate(parent_len);
    }
}
