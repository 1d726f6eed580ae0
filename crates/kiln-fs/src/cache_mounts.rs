//! Cache mounts (`RUN --mount=type=cache`): directories kept in the store across builds, by id.
//!
//! Layout: `mounts/<sha256 of the id>/<n>/` is instance `n` of a cache, `<n>.lock` beside it is
//! what its users hold (flock) and when it was last used (its modification time, for pruning).
//! Instance `0` is the one every `shared` and `locked` user takes; `private` users take the
//! first instance nobody holds, making a new one when all are held (BuildKit's rule). A new
//! instance is made under a temporary name, given its first content and owner by the caller,
//! and renamed into place, so no user ever sees it half made.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::store::{io_err, StoreError};

/// How concurrent users of one cache id share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Everyone uses the one directory at once.
    Shared,
    /// Concurrent users get their own directories.
    Private,
    /// Users take turns.
    Locked,
}

/// The cache directories of a store (`<store>/mounts`).
#[derive(Debug, Clone)]
pub struct CacheMounts {
    root: PathBuf,
}

/// A cache directory held for one step: released (and marked used) when dropped.
#[derive(Debug)]
pub struct HeldCache {
    /// The directory.
    pub dir: PathBuf,
    /// It was made for this use (the caller's `init` gave it its first content).
    pub created: bool,
    lock: File,
    lock_path: PathBuf,
}

impl Drop for HeldCache {
    fn drop(&mut self) {
        crate::gc::touch(&self.lock_path);
        let _ = rustix::fs::flock(&self.lock, FlockOperation::Unlock);
    }
}

impl CacheMounts {
    /// The cache directories of the store at `store_root`.
    pub fn new(store_root: &Path) -> CacheMounts {
        CacheMounts {
            root: store_root.join("mounts"),
        }
    }

    /// Where the instances of cache `id` live.
    fn id_dir(&self, id: &str) -> PathBuf {
        self.root.join(kiln_oci::Digest::of(id.as_bytes()).hex())
    }

    /// Takes cache `id` for one step, waiting for a `locked` one. `init` fills a new instance
    /// (mode, owner, first content) before anyone can use it. `exclusive`: the caller moves the
    /// directory away while it holds it (no mounts), so even `shared` users take turns.
    pub fn acquire(
        &self,
        id: &str,
        sharing: Sharing,
        exclusive: bool,
        init: &dyn Fn(&Path) -> io::Result<()>,
    ) -> Result<HeldCache, StoreError> {
        let dir = self.id_dir(id);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let open_lock = |n: usize| -> Result<(File, PathBuf), StoreError> {
            let path = dir.join(format!("{n}.lock"));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            Ok((file, path))
        };
        let lock_err = |path: &Path, e: rustix::io::Errno| io_err("lock", path)(e.into());
        let (instance, lock, lock_path) = match sharing {
            Sharing::Private => {
                let mut n = 0;
                loop {
                    let (file, path) = open_lock(n)?;
                    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                        Ok(()) => break (n, file, path),
                        Err(rustix::io::Errno::WOULDBLOCK) => n += 1,
                        Err(e) => return Err(lock_err(&path, e)),
                    }
                }
            }
            Sharing::Shared | Sharing::Locked => {
                let (file, path) = open_lock(0)?;
                let op = if sharing == Sharing::Shared && !exclusive {
                    FlockOperation::LockShared
                } else {
                    FlockOperation::LockExclusive
                };
                rustix::fs::flock(&file, op).map_err(|e| lock_err(&path, e))?;
                (0, file, path)
            }
        };
        let instance_dir = dir.join(instance.to_string());
        let mut created = false;
        match fs::symlink_metadata(&instance_dir) {
            Ok(meta) if meta.is_dir() => {}
            // Anything but a directory (a symlink a step left where its cache was) goes: a cache
            // is only ever a directory of the store's own.
            Ok(_) => fs::remove_file(&instance_dir).map_err(io_err("remove", &instance_dir))?,
            Err(_) => {}
        }
        if fs::symlink_metadata(&instance_dir).is_err() {
            // A name of its own: stage threads of one build may make the same cache at once.
            let temp = tempfile::Builder::new()
                .prefix(&format!(".tmp-{instance}-"))
                .tempdir_in(&dir)
                .map_err(io_err("create a temporary directory in", &dir))?
                .keep();
            // As a plain mkdir would make it (tempfile's are 0700); `init` may change it.
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&temp, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", &temp))?;
            if let Err(e) = init(&temp) {
                let _ = fs::remove_dir_all(&temp);
                return Err(io_err("fill the new cache", &instance_dir)(e));
            }
            match fs::rename(&temp, &instance_dir) {
                Ok(()) => created = true,
                // Another shared user made it first: theirs stands.
                Err(_) if instance_dir.is_dir() => {
                    let _ = fs::remove_dir_all(&temp);
                }
                Err(e) => return Err(io_err("publish", &instance_dir)(e)),
            }
        }
        Ok(HeldCache {
            dir: instance_dir,
            created,
            lock,
            lock_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_users_get_their_own_instance_and_shared_ones_the_same() {
        let store = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(store.path());
        let fill = |dir: &Path| fs::write(dir.join("seed"), "x");
        let first = caches
            .acquire("go", Sharing::Private, false, &fill)
            .unwrap();
        assert!(first.created);
        assert!(first.dir.join("seed").exists());
        let second = caches
            .acquire("go", Sharing::Private, false, &fill)
            .unwrap();
        assert_ne!(first.dir, second.dir);
        drop(second);
        let again = caches
            .acquire("go", Sharing::Private, false, &fill)
            .unwrap();
        assert!(!again.created, "a released instance is reused");
        drop((first, again));
        let a = caches.acquire("go", Sharing::Shared, false, &fill).unwrap();
        let b = caches.acquire("go", Sharing::Shared, false, &fill).unwrap();
        assert_eq!(a.dir, b.dir);
        let other = caches
            .acquire("npm", Sharing::Shared, false, &fill)
            .unwrap();
        assert_ne!(other.dir.parent(), a.dir.parent());
    }

    #[test]
    fn a_locked_cache_waits_for_its_holder() {
        let store = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(store.path());
        let fill = |_: &Path| -> io::Result<()> { Ok(()) };
        let held = caches
            .acquire("apt", Sharing::Locked, false, &fill)
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let caches = caches.clone();
            std::thread::spawn(move || {
                let _second = caches
                    .acquire("apt", Sharing::Locked, false, &fill)
                    .unwrap();
                tx.send(()).unwrap();
            })
        };
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }
}
