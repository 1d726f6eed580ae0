//! The layer services a build's stages and outputs receive: blobs fetched from registries into
//! the content store, layers unpacked (as overlay lowers or into a stage's tree), layers written
//! into the store, ADD downloads. The store's layout is kiln-fs's business: everything here goes
//! through its blob writer and unpacked-layer caches.

use crate::error::BuildError;
use crate::options::{BuildOptions, Reporter};
use crate::types::Layer;
use crate::warm::WarmDir;
use kiln_fs::apply::{ApplyOptions, Devices, Whiteouts};
use kiln_fs::layer::{LayerError, LayerInfo, LayerOptions};
use kiln_fs::store::{BlobWriter, ContentStore, UnpackedLayers};
use kiln_oci::{media_type, Descriptor, Digest};
use kiln_registry::{BlobOutcome, BlobSink, Client, Reference};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The registry client, the content store and its unpacked layers, and this build's scratch
/// directory, with what stages and outputs do with them.
pub(crate) struct LayerServices {
    /// Shared with background cache pushes.
    client: Arc<Client>,
    runtime: tokio::runtime::Runtime,
    store: ContentStore,
    /// Layers unpacked as merged trees' parts are not kept: a stage's tree is extracted whole.
    /// These are the overlay backend's lower dirs.
    overlay: UnpackedLayers,
    scratch: PathBuf,
    /// Downloads of blobs into the store, one batch at a time.
    fetch_lock: Mutex<()>,
    /// Base images warmed ahead (`--cache-dir`), and how old they may be.
    warm: Option<(WarmDir, std::time::Duration)>,
}

/// Registry transfer events as the build's reporter lines.
struct BlobLines(Arc<dyn Reporter>);

impl kiln_registry::Reporter for BlobLines {
    fn blob_start(
        &self,
        digest: &Digest,
        size: u64,
        direction: kiln_registry::transport::Direction,
    ) {
        self.0.transfer_started(
            digest,
            size,
            direction == kiln_registry::transport::Direction::Push,
        );
    }

    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        self.0.transfer_progress(digest, bytes);
    }

    fn blob_done(&self, digest: &Digest, outcome: BlobOutcome) {
        let what = outcome.describe();
        self.0.blob(what, digest);
    }

    fn retry(
        &self,
        request: &kiln_registry::error::RequestInfo,
        attempt: u32,
        delay: std::time::Duration,
        reason: &str,
    ) {
        self.0.warn(&request.retry_message(attempt, delay, reason));
    }

    fn note(&self, message: &str) {
        self.0.info(message);
    }
}

/// Fetched blobs go into the store. The registry client hashes every byte it fetches and checks
/// size and digest before it commits (see [`BlobSink`]), so the store takes its word rather than
/// hashing the blob a second time.
/// Fetched blobs go into a content store through its blob writer.
pub(crate) struct StoreSink<'a>(pub(crate) &'a ContentStore);

impl BlobSink for StoreSink<'_> {
    type Writer = BlobWriter;

    fn open(&self, _: &Descriptor) -> std::io::Result<BlobWriter> {
        self.0
            .blob_writer_hashed_by_producer()
            .map_err(std::io::Error::other)
    }

    fn commit(&self, descriptor: &Descriptor, writer: BlobWriter) -> std::io::Result<()> {
        let verified = kiln_oci::Digested {
            digest: descriptor.digest.clone(),
            size: descriptor.size,
        };
        writer
            .commit_as(verified)
            .map(drop)
            .map_err(std::io::Error::other)
    }
}

impl LayerServices {
    /// Opens the store under `opts.kiln_dir` and makes the registry client; `scratch` is this
    /// build's directory.
    pub(crate) fn new(
        opts: &mut BuildOptions,
        reporter: Arc<dyn Reporter>,
        scratch: PathBuf,
    ) -> Result<LayerServices, BuildError> {
        let store = ContentStore::open(opts.kiln_dir.join("store"))?;
        let overlay = store.unpacked(apply_options(true))?;
        let client = Arc::new(
            Client::new(
                opts.registry.clone(),
                std::mem::take(&mut opts.docker_config),
            )
            .with_reporter(Arc::new(BlobLines(reporter))),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(BuildError::io("starting the async runtime", "-"))?;
        let warm = match &opts.cache.warm_dir {
            Some((dir, ttl)) => Some((WarmDir::open(dir)?, *ttl)),
            None => None,
        };
        Ok(LayerServices {
            client,
            runtime,
            store,
            overlay,
            scratch,
            fetch_lock: Mutex::new(()),
            warm,
        })
    }

    /// This build's scratch directory (under the kiln dir, outside the store).
    pub(crate) fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// The registry client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The warmed base images (`--cache-dir`) and their TTL.
    pub(crate) fn warm(&self) -> Option<(&WarmDir, std::time::Duration)> {
        self.warm.as_ref().map(|(dir, ttl)| (dir, *ttl))
    }

    /// Copies a blob from the warmed directory into the store, when it has it.
    fn copy_from_warm(&self, descriptor: &Descriptor) -> bool {
        self.warm
            .as_ref()
            .is_some_and(|(dir, _)| dir.copy_blob(descriptor, &self.store))
    }

    /// The registry client, for work that outlives a borrow (background cache pushes).
    pub(crate) fn shared_client(&self) -> Arc<Client> {
        self.client.clone()
    }

    /// Starts `f` on the build's async runtime and returns at once.
    pub(crate) fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(f)
    }

    /// Runs a registry request to its end.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The content store (read side: blob paths, listings).
    pub(crate) fn store(&self) -> &ContentStore {
        &self.store
    }

    /// The layers unpacked for overlay lower dirs.
    pub(crate) fn overlay_layers(&self) -> &UnpackedLayers {
        &self.overlay
    }

    /// Downloads an ADD source URL into `dest` (a file of this build, not the store).
    pub(crate) fn download(
        &self,
        url: &str,
        dest: &Path,
        checksum: Option<&Digest>,
        at: &str,
    ) -> Result<kiln_registry::Download, BuildError> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(BuildError::io("creating", parent))?;
        }
        self.block_on(self.client.download(url, dest, checksum))
            .map_err(BuildError::registry(format!("{at}: ADD {url}")))
    }

    /// Makes sure a layer's blob is in the store, downloading it when it is a base layer.
    pub(crate) fn ensure_blob(&self, layer: &Layer) -> Result<PathBuf, BuildError> {
        let path = self.store.blob_path(&layer.descriptor.digest);
        if path.is_file() {
            self.store.touch_blob(&layer.descriptor.digest);
            return Ok(path);
        }
        let Some(source) = &layer.remote else {
            return Err(BuildError::Io {
                what: "missing layer blob",
                path,
                source: std::io::ErrorKind::NotFound.into(),
            });
        };
        let _one_at_a_time = self.fetch_lock.lock().unwrap_or_else(|e| e.into_inner());
        if path.is_file() || self.copy_from_warm(&layer.descriptor) {
            return Ok(path);
        }
        tracing::debug!(
            "layer {} is not in the store: pulling it from {source}",
            layer.descriptor.digest
        );
        self.block_on(self.client.fetch_blobs_into(
            source,
            std::slice::from_ref(&layer.descriptor),
            &StoreSink(&self.store),
        ))
        .map_err(BuildError::registry(format!(
            "pulling layer {} of {source}",
            layer.descriptor.digest
        )))?;
        Ok(path)
    }

    /// Fetches the blobs of many layers at once (base images' layers download concurrently).
    fn prefetch(&self, layers: &[Layer]) -> Result<(), BuildError> {
        let mut by_source: BTreeMap<String, (Reference, Vec<Descriptor>)> = BTreeMap::new();
        for layer in layers {
            if let Some(source) = &layer.remote {
                if !self.store.contains(&layer.descriptor.digest)
                    && !media_type::is_foreign(&layer.descriptor.media_type)
                {
                    by_source
                        .entry(source.to_string())
                        .or_insert_with(|| (source.clone(), Vec::new()))
                        .1
                        .push(layer.descriptor.clone());
                }
            }
        }
        for (_, (source, descriptors)) in by_source {
            let _one_at_a_time = self.fetch_lock.lock().unwrap_or_else(|e| e.into_inner());
            let missing: Vec<Descriptor> = descriptors
                .into_iter()
                .filter(|d| !self.store.contains(&d.digest) && !self.copy_from_warm(d))
                .collect();
            if missing.is_empty() {
                continue;
            }
            tracing::debug!(
                "pulling {} layer blob(s) of {source} into the store",
                missing.len()
            );
            self.block_on(
                self.client
                    .fetch_blobs_into(&source, &missing, &StoreSink(&self.store)),
            )
            .map_err(BuildError::registry(format!(
                "pulling the layers of {source}"
            )))?;
        }
        Ok(())
    }

    /// The layers unpacked in the store with overlay whiteouts (downloaded first when they
    /// are a base image's), bottom first: the overlay backend's lower dirs.
    pub(crate) fn unpacked_layers(&self, layers: &[Layer]) -> Result<Vec<PathBuf>, BuildError> {
        self.prefetch(layers)?;
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(layers.len());
        for layer in layers {
            if media_type::is_foreign(&layer.descriptor.media_type) {
                continue;
            }
            let blob = self.ensure_blob(layer)?;
            let (dir, stats) = self
                .overlay
                .unpack_with_stats(&layer.descriptor.digest, &layer.diff_id)?;
            match stats {
                Some(s) => tracing::debug!(
                    "unpacked layer {} for overlay: {} files, {} dirs",
                    layer.diff_id,
                    s.files,
                    s.dirs
                ),
                None => tracing::debug!("layer {} is unpacked already: reused", layer.diff_id),
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
                continue;
            }
            // The same layer twice: overlayfs refuses one directory twice, so unpack a copy
            // (this build's, outside the store).
            let copy = tempfile::Builder::new()
                .prefix("dup-layer-")
                .tempdir_in(&self.scratch)
                .map_err(BuildError::io("creating a directory in", &self.scratch))?
                .keep();
            self.apply_blob(layer, &blob, &copy, &apply_options(true))?;
            dirs.push(copy);
        }
        Ok(dirs)
    }

    /// Extracts `layers` into the new directory `dir` (a stage's tree).
    pub(crate) fn materialize(&self, layers: &[Layer], dir: &Path) -> Result<(), BuildError> {
        std::fs::create_dir_all(dir).map_err(BuildError::io("creating", dir))?;
        self.prefetch(layers)?;
        for layer in layers {
            if media_type::is_foreign(&layer.descriptor.media_type) {
                continue;
            }
            let path = self.ensure_blob(layer)?;
            tracing::debug!(
                "extracting layer {} into {}",
                layer.descriptor.digest,
                dir.display()
            );
            self.apply_blob(layer, &path, dir, &apply_options(false))?;
        }
        Ok(())
    }

    fn apply_blob(
        &self,
        layer: &Layer,
        blob: &Path,
        dir: &Path,
        options: &ApplyOptions,
    ) -> Result<(), BuildError> {
        let file = std::fs::File::open(blob).map_err(BuildError::io("opening", blob))?;
        kiln_fs::apply::apply_layer(
            std::io::BufReader::with_capacity(1 << 20, file),
            dir,
            options,
        )
        .map_err(|source| BuildError::Apply {
            digest: layer.descriptor.digest.to_string(),
            source,
        })?;
        Ok(())
    }

    /// Writes a layer into the store with `write` (given the store's blob writer and
    /// `options`). Returns the layer and its tar's size.
    pub(crate) fn write_layer<F>(
        &self,
        at: &str,
        options: &LayerOptions,
        write: F,
    ) -> Result<(Layer, u64), BuildError>
    where
        F: FnOnce(&mut BlobWriter, &LayerOptions) -> Result<LayerInfo, LayerError>,
    {
        // The layer encoder hashes what it writes (digest and diff_id in one pass): the store
        // takes its digest rather than hashing the blob again.
        let mut blob = self.store.blob_writer_hashed_by_producer()?;
        let info = write(&mut blob, options).map_err(|source| BuildError::Layer {
            at: at.to_owned(),
            source,
        })?;
        blob.commit_as(kiln_oci::Digested {
            digest: info.digest.clone(),
            size: info.size,
        })?;
        tracing::debug!(
            "{at}: stored layer {} ({} bytes, {} uncompressed, diff_id {})",
            info.digest,
            info.size,
            info.uncompressed_size,
            info.diff_id
        );
        Ok((
            Layer {
                descriptor: Descriptor::new(info.media_type, info.digest, info.size),
                diff_id: info.diff_id,
                remote: None,
            },
            info.uncompressed_size,
        ))
    }

    /// Keeps the config blob in the store for the outputs.
    pub(crate) fn store_config(
        &self,
        config: &[u8],
        descriptor: &Descriptor,
    ) -> Result<(), BuildError> {
        self.store.ingest(config, Some(descriptor))?;
        Ok(())
    }
}

/// Writes a stage's layers: the layer services with the build's layer options.
#[derive(Clone, Copy)]
pub(crate) struct LayerWriter<'a> {
    pub(crate) layers: &'a LayerServices,
    pub(crate) opts: &'a BuildOptions,
}

impl LayerWriter<'_> {
    /// Writes a layer with `write`; `lazy` leaves out parent directories the change set does
    /// not hold. Returns the layer and its tar's size.
    pub(crate) fn write<F>(
        &self,
        at: &str,
        lazy: bool,
        write: F,
    ) -> Result<(Layer, u64), BuildError>
    where
        F: FnOnce(&mut BlobWriter, &LayerOptions) -> Result<LayerInfo, LayerError>,
    {
        self.layers
            .write_layer(at, &self.opts.layer_options(lazy), write)
    }
}

impl Drop for LayerServices {
    /// Unpacked layers reach the disk on side threads; a finished build leaves them there.
    fn drop(&mut self) {
        self.overlay.wait_for_syncs();
    }
}

/// How layers are unpacked: for overlay lower dirs or as a merged tree; in a user namespace
/// (rootless) opaque dirs are marked with `user.overlay.opaque` and device nodes are skipped
/// (mknod is not allowed there).
fn apply_options(overlay: bool) -> ApplyOptions {
    let rootless = kiln_sandbox::userns::is_rootless();
    let mut options = ApplyOptions::default();
    if rootless {
        options.devices = Devices::Skip;
    }
    options.whiteouts = match (overlay, rootless) {
        (false, _) => Whiteouts::Apply,
        (true, false) => Whiteouts::Overlay,
        (true, true) => Whiteouts::OverlayUserXattr,
    };
    options
}
