//! Garbage collection: what the store holds, when each piece was last used, and removing the
//! least recently used until it fits a size, or what was not used for a while.
//!
//! Builds hold a shared lock on the store ([`ContentStore::lock_shared`]) for as long as they
//! run; pruning takes it exclusively ([`ContentStore::try_lock_exclusive`]), so nothing a
//! running build uses is ever removed. Under the exclusive lock the store's temporary files
//! (`ingest/`, `.tmp*`) belong to no live build and are removed too.
//!
//! "Last used" is a file's (or an unpacked layer directory's) modification time: unpacked
//! layers are touched when a build uses them ([`touch`]), cache records when they are read. A
//! blob's own inode is never touched (its change time is what [`ContentStore::blob_stamp`]
//! vouches with): its use is marked on `used/<algorithm>/<hex>` beside it
//! ([`ContentStore::touch_blob`]), and its last use is the later of the two times. A cache
//! mount's last use is its lock file's time ([`crate::cache_mounts`]).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::store::{io_err, ContentStore, StoreError};

/// A lock on the store: shared by builds, exclusive for pruning. Released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// A stored blob's identity on disk ([`ContentStore::blob_stamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobStamp {
    /// Its inode.
    pub inode: u64,
    /// Its size.
    pub size: u64,
    /// Its change time (seconds, nanoseconds).
    pub changed: (i64, i64),
}

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    /// Everything.
    pub all: bool,
    /// What was not used for this long.
    pub unused_for: Option<Duration>,
    /// Then the least recently used until the store takes at most this many bytes.
    pub keep_bytes: Option<u64>,
}

/// What a prune did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Items removed (blobs, unpacked layers, listings, cache records, temporary files).
    pub removed: usize,
    /// Bytes they took on disk.
    pub freed: u64,
    /// Bytes the store takes now.
    pub kept: u64,
}

/// One removable piece of the store.
struct Item {
    path: PathBuf,
    /// A blob's use marker, removed with it.
    marker: Option<PathBuf>,
    dir: bool,
    bytes: u64,
    used: SystemTime,
}

/// Whether `name` in the store directory `dir` is something being written: everything in
/// `ingest/`, and `.tmp*` names (kiln-fs's own `.tmp-*` and tempfile's default `.tmpXXXXXX`).
fn is_temporary(dir: &Path, name: &str) -> bool {
    dir.ends_with("ingest") || name.starts_with(".tmp")
}

/// Marks a file or directory as used now (best effort: a read-only kiln dir still works).
pub fn touch(path: &Path) {
    let _ = File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
}

fn disk_bytes(meta: &fs::Metadata) -> u64 {
    meta.blocks() * 512
}

/// Bytes a tree takes on disk (not following links).
fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = disk_bytes(&meta);
    if meta.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                total += tree_bytes(&entry.path());
            }
        }
    }
    total
}

fn remove(item: &Item) -> io::Result<()> {
    let result = if item.dir {
        // Unpacked layers keep their modes: make every directory writable first so that a
        // tree with read-only directories can go.
        make_dirs_writable(&item.path);
        fs::remove_dir_all(&item.path)
    } else {
        fs::remove_file(&item.path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}

impl ContentStore {
    fn lock_file(&self) -> Result<File, StoreError> {
        let path = self.root().join("gc.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))
    }

    /// A shared lock for a build: pruning waits until every build let go.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        let file = self.lock_file()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| io_err("lock", &self.root().join("gc.lock"))(e.into()))?;
        Ok(StoreLock { _file: file })
    }

    /// The exclusive lock for pruning, if no build holds the store now.
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>, StoreError> {
        let file = self.lock_file()?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(StoreLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io_err("lock", &self.root().join("gc.lock"))(e.into())),
        }
    }

    /// Where the use of the blob `digest` is marked.
    fn use_marker(&self, digest: &kiln_oci::Digest) -> PathBuf {
        self.root()
            .join("used")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Marks the blob `digest` as used now (best effort).
    pub fn touch_blob(&self, digest: &kiln_oci::Digest) {
        let marker = self.use_marker(digest);
        let touched = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&marker)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if touched.is_err() {
            if let Some(dir) = marker.parent() {
                let _ = fs::create_dir_all(dir);
                let _ = fs::write(&marker, b"");
            }
        }
    }

    /// What vouches for a stored blob not having changed since: its inode, size and change
    /// time (nothing but a write, a chmod or a replacement changes those, and no one can set a
    /// change time). `None` when the blob is not there.
    pub fn blob_stamp(&self, digest: &kiln_oci::Digest) -> Option<BlobStamp> {
        let meta = fs::metadata(self.blob_path(digest)).ok()?;
        Some(BlobStamp {
            inode: meta.ino(),
            size: meta.len(),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// Hashes the stored blob `digest`: true when it is what its name says.
    pub fn verify_blob(&self, digest: &kiln_oci::Digest) -> bool {
        let Ok(mut file) = File::open(self.blob_path(digest)) else {
            return false;
        };
        let mut hashed = kiln_oci::DigestWriter::with_algorithm(io::sink(), digest.algorithm());
        io::copy(&mut file, &mut hashed).is_ok() && hashed.digested().digest == *digest
    }

    /// Everything pruning may remove, with sizes and last use; temporary files first.
    fn items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        let root = self.root();
        // blobs/<alg>/<hex>, listings/<alg>/<hex>, cache/entries/<key>: files.
        for dir in [
            root.join("blobs/sha256"),
            root.join("blobs/sha512"),
            root.join("listings/sha256"),
            root.join("cache/entries"),
            root.join("ingest"),
            root.join("cache"),
        ] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                let name = entry.file_name();
                let temp = is_temporary(&dir, &name.to_string_lossy());
                if !meta.is_file() || (dir.ends_with("cache") && !temp) {
                    continue;
                }
                let mut used = if temp {
                    SystemTime::UNIX_EPOCH
                } else {
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
                };
                // A blob's use is marked beside it (see the module docs).
                let marker = dir
                    .strip_prefix(root.join("blobs"))
                    .ok()
                    .map(|alg| root.join("used").join(alg).join(&name));
                if let Some(marked) = marker
                    .as_ref()
                    .and_then(|m| fs::metadata(m).and_then(|m| m.modified()).ok())
                {
                    used = used.max(marked);
                }
                items.push(Item {
                    path: entry.path(),
                    dir: false,
                    bytes: disk_bytes(&meta),
                    used,
                    marker,
                });
            }
        }
        // mounts/<id>/<n>: cache mount trees; `<n>.lock` beside each marks its last use.
        if let Ok(ids) = fs::read_dir(root.join("mounts")) {
            for id in ids.flatten() {
                let Ok(instances) = fs::read_dir(id.path()) else {
                    continue;
                };
                for instance in instances.flatten() {
                    let Ok(meta) = instance.metadata() else {
                        continue;
                    };
                    let name = instance.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".lock") {
                        continue;
                    }
                    let temp = is_temporary(&id.path(), &name);
                    let marker = id.path().join(format!("{name}.lock"));
                    let used = if temp {
                        SystemTime::UNIX_EPOCH
                    } else {
                        fs::metadata(&marker)
                            .and_then(|m| m.modified())
                            .or_else(|_| meta.modified())
                            .unwrap_or(SystemTime::UNIX_EPOCH)
                    };
                    items.push(Item {
                        path: instance.path(),
                        marker: Some(marker),
                        dir: meta.is_dir(),
                        bytes: tree_bytes(&instance.path()),
                        used,
                    });
                }
            }
        }
        // layers/<format>/<name>: trees.
        if let Ok(formats) = fs::read_dir(root.join("layers")) {
            for format in formats.flatten() {
                let Ok(trees) = fs::read_dir(format.path()) else {
                    continue;
                };
                for tree in trees.flatten() {
                    let Ok(meta) = tree.metadata() else { continue };
                    let temp = is_temporary(&format.path(), &tree.file_name().to_string_lossy());
                    items.push(Item {
                        path: tree.path(),
                        marker: None,
                        dir: meta.is_dir(),
                        bytes: tree_bytes(&tree.path()),
                        used: if temp {
                            SystemTime::UNIX_EPOCH
                        } else {
                            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
                        },
                    });
                }
            }
        }
        items
    }

    /// Removes what builds that are gone (killed, crashed) left half-written: blobs being
    /// ingested, layers being unpacked, cache mounts being made, records and listings being
    /// written (all under a `.tmp` name, or in `ingest/`). Only a few directories are read, so
    /// this is cheap enough for the end of every build. Takes the exclusive lock as proof
    /// that no live build owns one of them. Returns how many were removed.
    pub fn remove_temporaries(&self, _exclusive: &StoreLock) -> usize {
        let root = self.root();
        let mut dirs = vec![
            root.join("cache"),
            root.join("listings/sha256"),
            root.join("listings/sha512"),
        ];
        for parent in ["layers", "mounts"] {
            if let Ok(entries) = fs::read_dir(root.join(parent)) {
                dirs.extend(entries.flatten().map(|e| e.path()));
            }
        }
        let mut removed = 0;
        dirs.push(root.join("ingest"));
        for dir in dirs {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !is_temporary(&dir, &entry.file_name().to_string_lossy()) {
                    continue;
                }
                let Ok(meta) = entry.file_type() else {
                    continue;
                };
                let item = Item {
                    path: entry.path(),
                    marker: None,
                    dir: meta.is_dir(),
                    bytes: 0,
                    used: SystemTime::UNIX_EPOCH,
                };
                if remove(&item).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Bytes the store takes on disk.
    pub fn disk_usage(&self) -> u64 {
        self.items().iter().map(|i| i.bytes).sum()
    }

    /// Removes what `policy` says, least recently used first. Takes the exclusive lock as
    /// proof that no build uses the store.
    pub fn prune(
        &self,
        policy: &PrunePolicy,
        _exclusive: &StoreLock,
    ) -> Result<PruneReport, StoreError> {
        let mut items = self.items();
        items.sort_by_key(|i| i.used);
        let now = SystemTime::now();
        let mut total: u64 = items.iter().map(|i| i.bytes).sum();
        let mut report = PruneReport::default();
        for item in &items {
            let stale = policy
                .unused_for
                .is_some_and(|d| now.duration_since(item.used).is_ok_and(|age| age > d));
            let over = policy.keep_bytes.is_some_and(|keep| total > keep);
            // Temporary files belong to no live build under the exclusive lock: they always go.
            let temp = item.used == SystemTime::UNIX_EPOCH;
            if !(policy.all || stale || over || temp) {
                continue;
            }
            remove(item).map_err(io_err("remove", &item.path))?;
            if let Some(marker) = &item.marker {
                let _ = fs::remove_file(marker);
            }
            total -= item.bytes;
            report.removed += 1;
            report.freed += item.bytes;
        }
        // Site markers of removed cache records.
        if let Ok(sites) = fs::read_dir(self.root().join("cache/sites")) {
            for site in sites.flatten() {
                let Ok(markers) = fs::read_dir(site.path()) else {
                    continue;
                };
                let mut left = 0;
                for marker in markers.flatten() {
                    let entry = self.root().join("cache/entries").join(marker.file_name());
                    if entry.exists() {
                        left += 1;
                    } else {
                        let _ = fs::remove_file(marker.path());
                    }
                }
                if left == 0 {
                    let _ = fs::remove_dir(site.path());
                }
            }
        }
        report.kept = total;
        Ok(report)
    }
}

/// Bytes of the file system holding `path`: (its size, what is used on it).
pub fn file_system_bytes(path: &Path) -> Result<(u64, u64), StoreError> {
    let stat = rustix::fs::statvfs(path).map_err(|e| io_err("statvfs", path)(e.into()))?;
    let size = stat.f_blocks * stat.f_frsize;
    let free = stat.f_bfree * stat.f_frsize;
    Ok((size, size.saturating_sub(free)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::{media_type, Descriptor};

    fn age(path: &Path, secs: u64) {
        let when = SystemTime::now() - Duration::from_secs(secs);
        File::open(path).unwrap().set_modified(when).unwrap();
    }

    #[test]
    fn temporaries_of_dead_builds_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let content = vec![7u8; 1024];
        let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &content);
        store.ingest(&content[..], Some(&desc)).unwrap();
        let records = store.records().unwrap();
        records.put("ab", "cd", b"entry").unwrap();
        let root = store.root().to_owned();
        let temps = [
            "ingest/.ingest-abc",
            "layers/overlay/.tmp-1234-xyz/usr/bin/tool",
            "mounts/feed/.tmp-0-abc/file",
            "cache/.tmp-record",
            "listings/sha256/.tmpAbCdEf",
        ];
        for temp in temps {
            let path = root.join(temp);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, b"half").unwrap();
        }
        let kept_tree = root.join("layers/overlay/sha256-kept/etc");
        fs::create_dir_all(&kept_tree).unwrap();
        let kept_mount = root.join("mounts/feed/0");
        fs::create_dir_all(&kept_mount).unwrap();

        let lock = store.try_lock_exclusive().unwrap().unwrap();
        assert_eq!(store.remove_temporaries(&lock), temps.len());
        for temp in temps {
            let top: PathBuf = root
                .join(temp)
                .ancestors()
                .find(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy().starts_with(".tmp")
                            || n.to_string_lossy().starts_with(".ingest")
                    })
                })
                .unwrap()
                .to_owned();
            assert!(!top.exists(), "{temp} is left");
        }
        assert!(store.contains(&desc.digest));
        assert_eq!(records.get("ab").unwrap().as_deref(), Some(&b"entry"[..]));
        assert!(kept_tree.is_dir() && kept_mount.is_dir());
    }

    #[test]
    fn prune_removes_the_least_recently_used_first_and_waits_for_builds() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let blob = |n: u8| {
            let content = vec![n; 64 * 1024];
            let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &content);
            store.ingest(&content[..], Some(&desc)).unwrap();
            desc.digest
        };
        let (old, recent) = (blob(1), blob(2));
        age(&store.blob_path(&old), 3600);
        age(&store.blob_path(&recent), 60);
        let records = store.records().unwrap();
        records.put("ab", "cd", b"entry").unwrap();

        // A build holds the store: no prune.
        let build = store.lock_shared().unwrap();
        assert!(store.try_lock_exclusive().unwrap().is_none());
        drop(build);
        let lock = store.try_lock_exclusive().unwrap().unwrap();

        // Unused for 10 minutes: only the old blob goes.
        let report = store
            .prune(
                &PrunePolicy {
                    unused_for: Some(Duration::from_secs(600)),
                    ..PrunePolicy::default()
                },
                &lock,
            )
            .unwrap();
        assert_eq!(report.removed, 1);
        assert!(!store.contains(&old) && store.contains(&recent));

        // A cap below the blob: the blob goes (older than the record), the record stays.
        let report = store
            .prune(
                &PrunePolicy {
                    keep_bytes: Some(16 * 1024),
                    ..PrunePolicy::default()
                },
                &lock,
            )
            .unwrap();
        assert!(!store.contains(&recent));
        assert!(report.kept <= 16 * 1024, "{report:?}");
        assert!(records.get("ab").unwrap().is_some());

        let report = store
            .prune(
                &PrunePolicy {
                    all: true,
                    ..PrunePolicy::default()
                },
                &lock,
            )
            .unwrap();
        assert_eq!(report.kept, 0);
        assert!(records.get("ab").unwrap().is_none());
        assert!(records.at_site("cd").unwrap().is_empty());
    }
}
