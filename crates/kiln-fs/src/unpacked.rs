//! Unpacked layers: a layer blob of the store applied into a directory of its own, kept under
//! `layers/<format>/<diff_id hex>` (see the [`store`](crate::store) module docs), where
//! `<format>` says how it was unpacked.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kiln_oci::{Algorithm, Digest};
use rustix::fs::{self as rfs, RenameFlags, CWD};
use rustix::io::Errno;

use crate::apply::{
    apply_tar, ApplyError, ApplyOptions, ApplyStats, Decompressor, Devices, Owners, Whiteouts,
};
use crate::side_hash::SideHashReader;
use crate::store::{errno_err, io_err, ContentStore, StoreError, COPY_BUF};

/// The store's layers unpacked one way ([`ApplyOptions`]); made by
/// [`ContentStore::unpacked`]. Clones share their pending syncs.
#[derive(Clone, Debug)]
pub struct UnpackedLayers {
    store: ContentStore,
    dir: PathBuf,
    options: ApplyOptions,
    /// Syncs of published layers still under way.
    syncs: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl UnpackedLayers {
    pub(crate) fn open(store: ContentStore, options: ApplyOptions) -> Result<Self, StoreError> {
        let dir = store
            .root()
            .join("layers")
            .join(Self::format_name(&options));
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(UnpackedLayers {
            store,
            dir,
            options,
            syncs: Arc::default(),
        })
    }

    /// The directory name for layers unpacked with `options`: what decides the tree's content
    /// (the whiteout format, whether owners are kept, whether device nodes are made).
    pub fn format_name(options: &ApplyOptions) -> String {
        let mut name = match options.whiteouts {
            Whiteouts::Apply => "merged",
            Whiteouts::Overlay => "overlay",
            Whiteouts::OverlayUserXattr => "overlay-userxattr",
        }
        .to_owned();
        if options.owners == Owners::Ignore {
            name.push_str("-noowners");
        }
        if options.devices == Devices::Skip {
            name.push_str("-nodevices");
        }
        name
    }

    /// Where the layer with this diff_id is (or would be) unpacked.
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        let mut name = diff_id.hex().to_owned();
        if diff_id.algorithm() != Algorithm::Sha256 {
            name = format!("{}-{name}", diff_id.algorithm());
        }
        self.dir.join(name)
    }

    /// True when the layer with this diff_id is unpacked.
    pub fn contains(&self, diff_id: &Digest) -> bool {
        self.path(diff_id).is_dir()
    }

    /// Unpacks the stored layer blob `blob` into its directory and returns that directory;
    /// an existing one is reused.
    ///
    /// The blob is applied into a temp directory beside it while both the blob and its
    /// uncompressed tar stream are hashed; only when the blob still matches its digest and
    /// the tar matches `diff_id` is the temp directory renamed into place.
    pub fn unpack(&self, blob: &Digest, diff_id: &Digest) -> Result<PathBuf, StoreError> {
        self.unpack_with_stats(blob, diff_id).map(|(path, _)| path)
    }

    /// [`unpack`](Self::unpack), also giving what was applied (`None` when an existing
    /// unpacked layer was reused).
    pub fn unpack_with_stats(
        &self,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<(PathBuf, Option<ApplyStats>), StoreError> {
        let dest = self.path(diff_id);
        if dest.is_dir() {
            crate::gc::touch(&dest);
            return Ok((dest, None));
        }
        let blob_path = self.store.blob_path(blob);
        let file = self.store.open_blob(blob)?;
        let short = &diff_id.hex()[..12];
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{short}-"))
            .tempdir_in(&self.dir)
            .map_err(io_err("create temp directory in", &self.dir))?;
        let tmp_path = tmp.path().to_owned();
        fs::set_permissions(
            &tmp_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(io_err("chmod", &tmp_path))?;

        let compressed =
            SideHashReader::new(BufReader::with_capacity(COPY_BUF, file), blob.algorithm());
        let apply_err = |source| StoreError::Apply {
            blob: blob.clone(),
            source,
        };
        let decompressor = Decompressor::new(compressed).map_err(|source| {
            apply_err(ApplyError::Decompress {
                target: tmp_path.clone(),
                source,
            })
        })?;
        let mut tar = SideHashReader::new(decompressor, diff_id.algorithm());
        let mut stats = apply_tar(&mut tar, &tmp_path, &self.options).map_err(apply_err)?;
        let (decompressor, actual_diff_id) = tar.finish();
        stats.compression = Some(decompressor.compression());
        let mut compressed = decompressor.into_inner();
        // Hash whatever follows the compressed stream, so the blob digest
        // covers the whole file.
        io::copy(&mut compressed, &mut io::sink()).map_err(io_err("read", &blob_path))?;
        let (_, actual_blob) = compressed.finish();
        if actual_blob.digest != *blob {
            return Err(StoreError::BlobCorrupt {
                path: blob_path,
                actual: actual_blob.digest,
            });
        }
        if actual_diff_id.digest != *diff_id {
            return Err(StoreError::DiffIdMismatch {
                blob: blob.clone(),
                expected: diff_id.clone(),
                actual: actual_diff_id.digest,
            });
        }
        match self.publish(&tmp_path, &dest, true)? {
            true => {
                // Published: the temp directory must not be deleted now.
                let _ = tmp.keep();
                Ok((dest, Some(stats)))
            }
            // Another caller won the race; its copy is identical. Ours is removed when
            // `tmp` drops.
            false => Ok((dest, None)),
        }
    }

    /// Takes `tree` — a directory already holding layer `diff_id` in this format (an overlay
    /// upper dir after its step, on the same file system) — into the cache and returns where it
    /// now is. When the layer is there already, `tree` is removed and the existing one returned.
    ///
    /// Unlike [`unpack`](Self::unpack), the adopted tree is not synced: its files were just
    /// written by a build step and the kernel flushes them in its own time (flushing a big step's
    /// output here would hold up the push that follows by as long). A power loss before that can
    /// leave it damaged, as any unpacked layer: remove `layers/` then.
    pub fn adopt(&self, tree: &Path, diff_id: &Digest) -> Result<PathBuf, StoreError> {
        let dest = self.path(diff_id);
        if !self.publish(tree, &dest, false)? {
            fs::remove_dir_all(tree).map_err(io_err("remove", tree))?;
        }
        Ok(dest)
    }

    /// Renames `tmp` to `dest` unless `dest` exists (false then); with `sync`, has it synced on
    /// a side thread.
    fn publish(&self, tmp: &Path, dest: &Path, sync: bool) -> Result<bool, StoreError> {
        match rfs::renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
            Ok(()) => {
                // Its root keeps the layer's own time; pruning reads it as "last used".
                crate::gc::touch(dest);
                if sync {
                    self.sync_later(dest)?;
                }
                Ok(true)
            }
            Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => Ok(false),
            Err(e) => Err(errno_err("rename into place", dest)(e)),
        }
    }

    /// Syncs the file system holding `dir` (a published layer) on a side thread.
    fn sync_later(&self, dir: &Path) -> Result<(), StoreError> {
        let file = File::open(dir).map_err(io_err("open", dir))?;
        let spawned = std::thread::Builder::new()
            .name("kiln-syncfs".into())
            .spawn(move || {
                // An I/O error here shows again in whatever touches the disk next.
                let _ = rfs::syncfs(&file);
            });
        match spawned {
            Ok(handle) => self
                .syncs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle),
            // No thread to spare: sync here.
            Err(_) => {
                let file = File::open(dir).map_err(io_err("open", dir))?;
                rfs::syncfs(&file).map_err(errno_err("sync", dir))?;
            }
        }
        Ok(())
    }

    /// Waits until every layer these unpacked layers (and their clones) published is on disk.
    pub fn wait_for_syncs(&self) {
        let pending = std::mem::take(&mut *self.syncs.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in pending {
            let _ = handle.join();
        }
    }
}
