//! The local content store: blobs by digest, unpacked layers by diff_id and
//! unpacking format.
//!
//! ```text
//! <root>/blobs/sha256/<hex>               verified blobs (read-only files)
//! <root>/blobs/sha512/<hex>
//! <root>/ingest/.ingest-*                 blobs being written (temp files)
//! <root>/layers/<format>/<diff_id hex>/   unpacked layers (sha512: `sha512-<hex>`)
//! <root>/layers/<format>/.tmp-*           layers being unpacked
//! <root>/listings/sha256/<hex>            a layer blob's tar-header listing (a cache)
//! ```
//!
//! `<format>` names how a layer was unpacked ([`UnpackedLayers::format_name`]):
//! whiteouts applied or kept for overlayfs (root's `trusted.` or a user
//! namespace's `user.` xattrs), owners kept or not, device nodes made or not.
//! Trees unpacked one way are never handed to a caller that asked for another,
//! so root and rootless builds can share one kiln dir.
//!
//! Nothing outside this crate writes under the store's root: blobs arrive
//! through [`ContentStore::blob_writer`] (or [`ContentStore::ingest`]), trees
//! through [`UnpackedLayers::unpack`] or [`UnpackedLayers::adopt`].
//!
//! Everything appears atomically: content is written under a temp name,
//! verified, then renamed into place. A name never holds anything but
//! the content it names, so concurrent callers (threads or processes) may race
//! freely: a blob written again replaces the one there (equal content, a new
//! inode; readers keep the file they opened), which also heals a stored blob that
//! was damaged on disk.
//! Blobs are synced before the rename (the directory is not: a crash may lose a
//! just-published name, never give a name other content). An unpacked layer is synced to disk on a
//! side thread after it is published (flushing thousands of fresh files
//! otherwise holds up the first step); [`UnpackedLayers::wait_for_syncs`]
//! waits for that. A power loss in between can leave a damaged unpacked layer,
//! as with docker's and containerd's defaults: remove `<root>/layers` then.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kiln_oci::{Algorithm, Descriptor, Digest, Digested, Hasher};

use crate::apply::{ApplyError, ApplyOptions};
pub use crate::records::{Records, SiteRecord};
pub use crate::unpacked::UnpackedLayers;

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

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn errno_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> StoreError + 'a {
    move |e| StoreError::Io {
        op,
        path: path.to_owned(),
        source: e.into(),
    }
}

pub(crate) const COPY_BUF: usize = 256 * 1024;

/// A content store rooted at one directory; see the module docs for its layout.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating when missing) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore, StoreError> {
        let root = root.into();
        for sub in ["blobs/sha256", "blobs/sha512", "ingest", "layers"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(ContentStore { root })
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
        let what = expected.map_or_else(|| "blob".to_owned(), |e| e.digest.to_string());
        let mut reader: Box<dyn Read> = match expected {
            // One byte past the promised size is enough to tell it is too long.
            Some(e) => Box::new(reader.take(e.size.saturating_add(1))),
            None => Box::new(reader),
        };
        let mut writer = self.blob_writer(expected)?;
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StoreError::Read { what, source }),
            };
            writer
                .write_all(&buf[..n])
                .map_err(|source| StoreError::Io {
                    op: "write",
                    path: writer.temp_path().to_owned(),
                    source,
                })?;
        }
        writer.commit()
    }

    /// A writer for a new blob: what is written goes to a temp file under
    /// `ingest/`, hashed on the way; [`BlobWriter::commit`] checks it against
    /// `expected` (when given) and publishes it under its digest. Dropped
    /// uncommitted, it leaves nothing behind.
    pub fn blob_writer(&self, expected: Option<&Descriptor>) -> Result<BlobWriter, StoreError> {
        let algorithm = expected.map_or(Algorithm::Sha256, |e| e.digest.algorithm());
        self.new_writer(expected.cloned(), Some(Hasher::new(algorithm)))
    }

    /// A writer for a blob whose producer hashes it already (kiln's layer encoder computes
    /// the digest of what it writes): the bytes are not hashed a second time, and
    /// [`BlobWriter::commit_as`] publishes them under the producer's digest once their size
    /// matches. Layers are hashed once.
    pub fn blob_writer_hashed_by_producer(&self) -> Result<BlobWriter, StoreError> {
        self.new_writer(None, None)
    }

    fn new_writer(
        &self,
        expected: Option<Descriptor>,
        hasher: Option<Hasher>,
    ) -> Result<BlobWriter, StoreError> {
        let ingest_dir = self.root.join("ingest");
        let tmp = tempfile::Builder::new()
            .prefix(".ingest-")
            .tempfile_in(&ingest_dir)
            .map_err(io_err("create temp file in", &ingest_dir))?;
        let file = tmp.reopen().map_err(io_err("open", tmp.path()))?;
        Ok(BlobWriter {
            blobs: self.root.join("blobs"),
            expected,
            // Layer encoders hand over large blocks: a buffer of 1 MiB keeps write calls few.
            file: io::BufWriter::with_capacity(1 << 20, file),
            hasher,
            size: 0,
            tmp,
        })
    }

    /// The unpacked layers of this store made with `options` (each whiteout
    /// format, owner and device rule has its own directory under `layers/`).
    pub fn unpacked(&self, options: ApplyOptions) -> Result<UnpackedLayers, StoreError> {
        UnpackedLayers::open(self.clone(), options)
    }
}

/// A blob being written into the store (see [`ContentStore::blob_writer`]).
#[derive(Debug)]
pub struct BlobWriter {
    blobs: PathBuf,
    expected: Option<Descriptor>,
    file: io::BufWriter<File>,
    /// `None` for a writer whose producer computes the digest.
    hasher: Option<Hasher>,
    size: u64,
    tmp: tempfile::NamedTempFile,
}

impl BlobWriter {
    /// The temp file being written (for error messages).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Verifies what was written against the expected descriptor (size and
    /// digest), syncs it and renames it to `blobs/<algorithm>/<hex>`, replacing a blob
    /// already there (an equal one, or a damaged one: names are digests). A writer made
    /// by [`ContentStore::blob_writer_hashed_by_producer`] has no digest of its own: use
    /// [`commit_as`](Self::commit_as).
    pub fn commit(mut self) -> Result<Digested, StoreError> {
        let Some(hasher) = self.hasher.take() else {
            return Err(StoreError::Io {
                op: "commit (the producer's digest is needed: commit_as)",
                path: self.tmp.path().to_owned(),
                source: io::ErrorKind::InvalidInput.into(),
            });
        };
        let digested = Digested {
            digest: hasher.finish(),
            size: self.size,
        };
        if let Some(exp) = &self.expected {
            exp.verify_digested(&digested)
                .map_err(|source| StoreError::Verify {
                    expected: exp.digest.clone(),
                    source,
                })?;
        }
        self.publish(digested)
    }

    /// Publishes what was written under `digested`, the digest its producer computed over the
    /// same bytes; the size must match what was written.
    pub fn commit_as(self, digested: Digested) -> Result<Digested, StoreError> {
        if digested.size != self.size {
            return Err(StoreError::Verify {
                expected: digested.digest.clone(),
                source: kiln_oci::Error::SizeMismatch {
                    digest: digested.digest,
                    expected: digested.size,
                    actual: self.size,
                },
            });
        }
        self.publish(digested)
    }

    fn publish(self, digested: Digested) -> Result<Digested, StoreError> {
        let BlobWriter {
            blobs, file, tmp, ..
        } = self;
        let tmp_path = tmp.path().to_owned();
        let file = file.into_inner().map_err(|e| StoreError::Io {
            op: "write",
            path: tmp_path.clone(),
            source: e.into_error(),
        })?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(io_err("chmod", &tmp_path))?;
        file.sync_all().map_err(io_err("sync", &tmp_path))?;
        let dest = blobs
            .join(digested.digest.algorithm().as_str())
            .join(digested.digest.hex());
        // A blob already there is replaced rather than trusted: ours was just verified, the
        // stored one may have been damaged on disk since (same name, other bytes), and only
        // a hash would tell; the rename costs nothing.
        tmp.persist(&dest).map_err(|e| StoreError::Io {
            op: "rename into place",
            path: dest.clone(),
            source: e.error,
        })?;
        // The directory is not synced: after a crash a just-published name may be missing (the
        // blob is fetched or built again), never present with other content (the file was
        // synced before its name appeared).
        Ok(digested)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
