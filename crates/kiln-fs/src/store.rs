//! The local content store: blobs by digest, unpacked layers by diff_id.
//!
//! ```text
//! <root>/blobs/sha256/<hex>      verified blobs (read-only files)
//! <root>/blobs/sha512/<hex>
//! <root>/ingest/.ingest-*        blobs being written (temp files)
//! <root>/layers/<diff_id hex>/   unpacked layers (sha512: `sha512-<hex>`)
//! <root>/layers/.tmp-*           layers being unpacked
//! <root>/listings/sha256/<hex>   a layer blob's tar-header listing (a cache)
//! ```
//!
//! Everything appears atomically: content is written under a temp name,
//! verified, then renamed into place. A name never holds anything but
//! the content it names, so concurrent callers (threads or processes) may race
//! freely: the loser of a rename keeps the winner's copy and drops its own.
//! Blobs are synced before the rename. An unpacked layer is synced to disk on a
//! side thread after it is published (flushing thousands of fresh files
//! otherwise holds up the first step); [`ContentStore::wait_for_syncs`]
//! waits for that. A power loss in between can leave a damaged unpacked layer,
//! as with docker's and containerd's defaults: remove `<root>/layers` then.
//!
//! Unpacked layers are keyed by diff_id alone, so one store should use one
//! [`ApplyOptions`] for all of them (see [`ContentStore::with_apply_options`]).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kiln_oci::{Algorithm, Descriptor, Digest, DigestWriter, Digested};
use rustix::fs::{self as rfs, RenameFlags, CWD};
use rustix::io::Errno;

use crate::apply::{apply_tar, ApplyError, ApplyOptions, ApplyStats, Decompressor};
use crate::side_hash::SideHashReader;

/// Everything that can go wrong in the content store. Each variant names the
/// path, digest or blob at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation in the store failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Reading the content being ingested failed.
    #[error("reading {what}: {source}")]
    Read {
        /// The content (its expected digest, or `blob`).
        what: String,
        /// The reader's error.
        #[source]
        source: io::Error,
    },

    /// Ingested content does not match its descriptor; nothing was stored.
    #[error("content for {expected} was not stored: {source}")]
    Verify {
        /// The digest the descriptor promised.
        expected: Digest,
        /// The size or digest mismatch.
        #[source]
        source: kiln_oci::Error,
    },

    /// A blob is not in the store.
    #[error("blob {digest} is not in the store (looked for {})", path.display())]
    BlobNotFound {
        /// The blob asked for.
        digest: Digest,
        /// Where it would be.
        path: PathBuf,
    },

    /// A stored blob no longer hashes to its name (damaged on disk).
    #[error("stored blob {} is damaged: it hashes to {actual}; delete it and pull again", path.display())]
    BlobCorrupt {
        /// The blob's path.
        path: PathBuf,
        /// What it hashes to now.
        actual: Digest,
    },

    /// Applying a blob as a layer failed; nothing was published.
    #[error("unpacking blob {blob}: {source}")]
    Apply {
        /// The layer blob.
        blob: Digest,
        /// What went wrong.
        #[source]
        source: ApplyError,
    },

    /// A layer's uncompressed content does not hash to the expected diff_id;
    /// nothing was published.
    #[error("layer blob {blob} has diff_id {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        blob: Digest,
        /// The diff_id the image config lists.
        expected: Digest,
        /// The digest of the uncompressed tar.
        actual: Digest,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn errno_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> StoreError + 'a {
    move |e| StoreError::Io {
        op,
        path: path.to_owned(),
        source: e.into(),
    }
}

const COPY_BUF: usize = 256 * 1024;

/// A content store rooted at one directory; see the module docs for its layout.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
    apply: ApplyOptions,
    /// Syncs of published layers still under way.
    syncs: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ContentStore {
    /// Opens (creating when missing) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore, StoreError> {
        let root = root.into();
        for sub in ["blobs/sha256", "blobs/sha512", "ingest", "layers"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(ContentStore {
            root,
            apply: ApplyOptions::default(),
            syncs: Arc::default(),
        })
    }

    /// The same store, unpacking layers with `options` (the default suits root).
    pub fn with_apply_options(mut self, options: ApplyOptions) -> Self {
        self.apply = options;
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        // The hex part is validated lowercase hex, so it is a safe file name.
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// True when the blob `digest` is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound {
                    digest: digest.clone(),
                    path: path.clone(),
                }
            } else {
                StoreError::Io {
                    op: "open",
                    path: path.clone(),
                    source,
                }
            }
        })
    }

    /// The entries of the stored layer blob `digest` as its tar headers list them (what a
    /// stage that never unpacks its base asks about it). Read once and kept beside the blob
    /// in `listings/`, so later builds do not read the blob again.
    pub fn layer_entries(
        &self,
        digest: &Digest,
    ) -> Result<crate::listing::LayerEntries, StoreError> {
        let cached = self
            .root
            .join("listings")
            .join(digest.algorithm().as_str())
            .join(digest.hex());
        if let Some(entries) = std::fs::read_to_string(&cached)
            .ok()
            .and_then(|t| crate::listing::LayerEntries::from_text(&t))
        {
            return Ok(entries);
        }
        let blob = self.open_blob(digest)?;
        let entries =
            crate::listing::LayerEntries::read(io::BufReader::with_capacity(1 << 20, blob))
                .map_err(
                    |crate::listing::ListingError::Read(source)| StoreError::Read {
                        what: format!("the tar headers of layer {digest}"),
                        source,
                    },
                )?;
        // A cache: written whole (temp + rename) or not at all.
        let dir = cached.parent().expect("a listing path has a parent");
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| tempfile::NamedTempFile::new_in(dir))
            .and_then(|mut tmp| {
                io::Write::write_all(&mut tmp, entries.to_text().as_bytes())?;
                tmp.persist(&cached).map(drop).map_err(|e| e.error)
            });
        drop(written);
        Ok(entries)
    }

    /// Streams `reader` into the store, hashing while writing.
    ///
    /// With `expected`, at most `expected.size + 1` bytes are read and the
    /// size and digest must match, or [`StoreError::Verify`] is returned and
    /// nothing is stored. A blob already present is not read again. Without
    /// `expected` the content is stored under its sha256 digest.
    pub fn ingest<R: Read>(
        &self,
        reader: R,
        expected: Option<&Descriptor>,
    ) -> Result<Digested, StoreError> {
        if let Some(exp) = expected {
            if self.contains(&exp.digest) {
                return Ok(Digested {
                    digest: exp.digest.clone(),
                    size: exp.size,
                });
            }
        }
        let algorithm = expected.map_or(Algorithm::Sha256, |e| e.digest.algorithm());
        let what = expected.map_or_else(|| "blob".to_owned(), |e| e.digest.to_string());
        let ingest_dir = self.root.join("ingest");
        let tmp = tempfile::Builder::new()
            .prefix(".ingest-")
            .tempfile_in(&ingest_dir)
            .map_err(io_err("create temp file in", &ingest_dir))?;
        let tmp_path = tmp.path().to_owned();

        let mut reader: Box<dyn Read> = match expected {
            // One byte past the promised size is enough to tell it is too long.
            Some(e) => Box::new(reader.take(e.size.saturating_add(1))),
            None => Box::new(reader),
        };
        let mut out = DigestWriter::with_algorithm(tmp.as_file(), algorithm);
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StoreError::Read { what, source }),
            };
            out.write_all(&buf[..n])
                .map_err(io_err("write", &tmp_path))?;
        }
        let (_, digested) = out.finish();
        if let Some(exp) = expected {
            exp.verify_digested(&digested)
                .map_err(|source| StoreError::Verify {
                    expected: exp.digest.clone(),
                    source,
                })?;
        }
        let file = tmp.as_file();
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(io_err("chmod", &tmp_path))?;
        file.sync_all().map_err(io_err("sync", &tmp_path))?;

        let dest = self.blob_path(&digested.digest);
        match tmp.persist_noclobber(&dest) {
            Ok(_) => {}
            // Someone stored the same content first: theirs is as good.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Io {
                    op: "rename into place",
                    path: dest,
                    source: e.error,
                })
            }
        }
        sync_dir(dest.parent().unwrap_or(&self.root))?;
        Ok(digested)
    }

    /// Where the layer with this diff_id is (or would be) unpacked.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        let mut name = diff_id.hex().to_owned();
        if diff_id.algorithm() != Algorithm::Sha256 {
            name = format!("{}-{name}", diff_id.algorithm());
        }
        self.root.join("layers").join(name)
    }

    /// True when the layer with this diff_id is unpacked.
    pub fn contains_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// Unpacks the stored layer blob `blob` into `layers/<diff_id hex>` and
    /// returns that directory; an existing one is reused.
    ///
    /// The blob is applied into a temp directory beside it while both the
    /// blob and its uncompressed tar stream are hashed; only when the blob
    /// still matches its digest and the tar matches `diff_id` is the temp
    /// directory synced and renamed into place.
    pub fn unpack_layer(&self, blob: &Digest, diff_id: &Digest) -> Result<PathBuf, StoreError> {
        self.unpack_layer_with_stats(blob, diff_id)
            .map(|(path, _)| path)
    }

    /// [`unpack_layer`](Self::unpack_layer), also giving what was applied
    /// (`None` when an existing unpacked layer was reused).
    pub fn unpack_layer_with_stats(
        &self,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<(PathBuf, Option<ApplyStats>), StoreError> {
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            return Ok((dest, None));
        }
        let blob_path = self.blob_path(blob);
        let file = self.open_blob(blob)?;
        let layers = self.root.join("layers");
        let short = &diff_id.hex()[..12];
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{short}-"))
            .tempdir_in(&layers)
            .map_err(io_err("create temp directory in", &layers))?;
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
        let mut stats = apply_tar(&mut tar, &tmp_path, &self.apply).map_err(apply_err)?;
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

        match rfs::renameat_with(CWD, &tmp_path, CWD, &dest, RenameFlags::NOREPLACE) {
            Ok(()) => {
                // Published: the temp directory must not be deleted now.
                let _ = tmp.keep();
                self.sync_later(&dest)?;
                Ok((dest, Some(stats)))
            }
            // Another caller won the race; its copy is identical. Ours is
            // removed when `tmp` drops.
            Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => Ok((dest, None)),
            Err(e) => Err(errno_err("rename into place", &dest)(e)),
        }
    }
}

impl ContentStore {
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

    /// Waits until every layer this store (and its clones) published is on disk.
    pub fn wait_for_syncs(&self) {
        let pending = std::mem::take(&mut *self.syncs.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in pending {
            let _ = handle.join();
        }
    }
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", path))
}
