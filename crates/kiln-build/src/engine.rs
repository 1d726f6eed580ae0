//! The engine: plans the Dockerfile with what the base images say, builds the needed stages
//! (independent ones at the same time), and assembles the target stage's image.

use crate::context::ContextView;
use crate::error::BuildError;
use crate::image::{self, env_pairs};
use crate::options::{BuildOptions, ImageFormat, Isolation, Reporter};
use kiln_dockerfile::instructions::{Command, Instruction};
use kiln_dockerfile::{plan, Base, BaseImage, Dockerfile, Plan, PlanOptions, PlannedStage};
use kiln_fs::layer::{LayerOptions, MediaTypes, MtimeRule};
use kiln_fs::store::ContentStore;
use kiln_oci::{media_type, Descriptor, Digest, ImageConfig, Platform};
use kiln_registry::{BlobOutcome, Client, Reference};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// A layer of an image being built, and where its blob is.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The manifest's descriptor for it.
    pub descriptor: Descriptor,
    /// Its uncompressed digest.
    pub diff_id: Digest,
    /// The repository it came from, when it is a base image's layer (it may not be in the
    /// local store: outputs mount, download or skip it).
    pub remote: Option<Reference>,
}

/// A stage's image: its config and layers.
#[derive(Debug, Clone)]
pub struct StageImage {
    /// The image config.
    pub config: ImageConfig,
    /// The layers, base first.
    pub layers: Vec<Layer>,
}

/// The finished image of a build.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The config blob.
    pub config: Vec<u8>,
    /// Its descriptor.
    pub config_descriptor: Descriptor,
    /// The manifest.
    pub manifest: Vec<u8>,
    /// Its descriptor (media type, digest, size).
    pub manifest_descriptor: Descriptor,
    /// The layers.
    pub layers: Vec<Layer>,
}

pub(crate) struct Finished {
    pub(crate) image: StageImage,
    /// The stage's root file system, when it was extracted.
    pub(crate) rootfs: Option<PathBuf>,
    /// The environment its RUN steps saw at its end (ENV and ARG values): a stage built FROM
    /// it starts with it, as in BuildKit.
    pub(crate) run_env: BTreeMap<String, String>,
}

/// A base image as resolved from its registry.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) image: StageImage,
}

/// Runs builds; owns the registry client, the content store and this build's directory.
pub struct Builder {
    opts: BuildOptions,
    reporter: Arc<dyn Reporter>,
    client: Client,
    runtime: tokio::runtime::Runtime,
    store: ContentStore,
    /// The same store, unpacking layers with overlay whiteouts (the overlay backend's lowers).
    overlay_store: ContentStore,
    build_dir: PathBuf,
    /// Downloads of blobs into the store, one at a time per digest.
    fetch_lock: Mutex<()>,
    /// RUN steps get their own namespaces (false: chroot only; set by `isolation`).
    namespaces: std::sync::atomic::AtomicBool,
}

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
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Builder {
    /// A builder for `opts`: creates the kiln dir's store and this build's directory.
    pub fn new(mut opts: BuildOptions, reporter: Arc<dyn Reporter>) -> Result<Builder, BuildError> {
        // Overlay lower dirs are symlinks and mounts happen from another directory: every
        // path under the kiln dir must be absolute.
        opts.kiln_dir = std::path::absolute(&opts.kiln_dir)
            .map_err(BuildError::io("resolving", &opts.kiln_dir))?;
        let store = ContentStore::open(opts.kiln_dir.join("store"))?;
        let overlay_apply = apply_options(true);
        let overlay_store =
            ContentStore::open(opts.kiln_dir.join("store"))?.with_apply_options(overlay_apply);
        let builds = opts.kiln_dir.join("builds");
        std::fs::create_dir_all(&builds).map_err(BuildError::io("creating", &builds))?;
        let build_dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&builds)
            .map_err(BuildError::io("creating a build directory in", &builds))?
            .keep();
        let client = Client::new(
            opts.registry.clone(),
            std::mem::take(&mut opts.docker_config),
        )
        .with_reporter(Arc::new(BlobLines(reporter.clone())));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(BuildError::io("starting the async runtime", "-"))?;
        Ok(Builder {
            opts,
            reporter,
            client,
            runtime,
            store,
            overlay_store,
            build_dir,
            fetch_lock: Mutex::new(()),
            namespaces: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// This build's directory under the kiln dir.
    pub fn build_dir(&self) -> &Path {
        &self.build_dir
    }

    /// The registry client (for outputs).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Downloads an ADD source URL into `dest`.
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

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub(crate) fn store(&self) -> &ContentStore {
        &self.store
    }

    pub(crate) fn reporter(&self) -> &dyn Reporter {
        &*self.reporter
    }

    /// Whether RUN steps get namespaces of their own (see [`Builder::isolation`]).
    pub(crate) fn namespaces(&self) -> bool {
        self.namespaces.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The chroot backend, with namespaces when this container allows them.
    fn chroot_backend(&self, why: &str) -> Isolation {
        match kiln_sandbox::namespaces_available() {
            Ok(()) => self.reporter.info(&format!(
                "RUN isolation: chroot, with stat-index snapshots ({why})"
            )),
            Err(no_namespaces) => {
                self.namespaces
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                self.reporter.info(&format!(
                    "RUN isolation: chroot without namespaces ({why}; {no_namespaces}): RUN \
                     steps get no /proc or /sys, /dev nodes and resolv.conf are files for the \
                     step's duration, and what a step leaves running is killed with its \
                     process group"
                ));
            }
        }
        Isolation::Chroot
    }

    pub(crate) fn options(&self) -> &BuildOptions {
        &self.opts
    }

    pub(crate) fn overlay_store(&self) -> &ContentStore {
        &self.overlay_store
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
            let dir = self
                .overlay_store
                .unpack_layer(&layer.descriptor.digest, &layer.diff_id)?;
            if !dirs.contains(&dir) {
                dirs.push(dir);
                continue;
            }
            // The same layer twice: overlayfs refuses one directory twice, so unpack a copy.
            let copy = tempfile::Builder::new()
                .prefix("dup-layer-")
                .tempdir_in(&self.build_dir)
                .map_err(BuildError::io("creating a directory in", &self.build_dir))?
                .keep();
            let file = std::fs::File::open(&blob).map_err(BuildError::io("opening", &blob))?;
            kiln_fs::apply::apply_layer(std::io::BufReader::new(file), &copy, &apply_options(true))
                .map_err(|source| BuildError::Apply {
                    digest: layer.descriptor.digest.to_string(),
                    source,
                })?;
            dirs.push(copy);
        }
        Ok(dirs)
    }

    /// Checks that every destination accepts a push from these credentials, before any
    /// build work (kaniko does the same).
    pub fn check_destinations(&self) -> Result<(), BuildError> {
        if self.opts.no_push || self.opts.skip_push_permission_check {
            return Ok(());
        }
        for destination in &self.opts.destinations {
            self.block_on(self.client.check_push_access(destination))
                .map_err(BuildError::registry(format!(
                    "checking push access to {destination}"
                )))?;
        }
        Ok(())
    }

    /// Removes this build's directory (`--cleanup`): its root file systems and scratch files.
    /// The shared content store stays.
    pub fn cleanup(&self) -> Result<(), BuildError> {
        remove_tree(&self.build_dir)
    }

    /// Builds the target stage.
    pub fn build(&self) -> Result<BuiltImage, BuildError> {
        let started = Instant::now();
        let dockerfile = Dockerfile::parse(&self.opts.dockerfile_text, &self.opts.dockerfile_name)?;
        let mut plan_options = PlanOptions {
            build_args: self.opts.build_args.clone(),
            target: self.opts.target.clone(),
            build_platform: Platform::host(),
            target_platform: self.opts.platform.clone(),
            base_images: BTreeMap::new(),
            all_stages: self.opts.all_stages,
        };
        let first = plan(&dockerfile, &plan_options)?;
        self.check_supported(&first)?;
        let euid = rustix::process::geteuid();
        if !euid.is_root() {
            return Err(BuildError::Unsupported {
                at: format!(
                    "{} (kiln runs as uid {})",
                    self.opts.dockerfile_name,
                    euid.as_raw()
                ),
                what: "building as a non-root user outside a user namespace (run `kiln build`, \
                       which enters one itself)"
                    .into(),
            });
        }
        // Base images: their configs now (ENV and ONBUILD change the plan), layers later.
        let mut resolved: HashMap<String, Resolved> = HashMap::new();
        for stage in &first.stages {
            let platform = self.stage_platform(stage, &first)?;
            let mut wanted: Vec<&String> = stage.images.iter().collect();
            if let Base::Image { reference } = &stage.base {
                wanted.push(reference);
            }
            for reference in wanted {
                if resolved.contains_key(reference) {
                    continue;
                }
                let r = self.resolve(reference, &platform, stage)?;
                let config = r.image.config.config.clone().unwrap_or_default();
                plan_options.base_images.insert(
                    reference.clone(),
                    BaseImage {
                        env: env_pairs(&r.image.config),
                        onbuild: config.on_build.unwrap_or_default(),
                    },
                );
                resolved.insert(reference.clone(), r);
            }
        }
        let plan = plan(&dockerfile, &plan_options)?;
        self.check_supported(&plan)?;
        if !plan.skipped_stages.is_empty() {
            let names: Vec<String> = plan
                .skipped_stages
                .iter()
                .map(|s| match &s.name {
                    Some(name) => format!("{} ({name})", s.index),
                    None => s.index.to_string(),
                })
                .collect();
            let why = if self.opts.all_stages {
                "they come after the target"
            } else {
                "the target does not need them"
            };
            self.reporter.info(&format!(
                "skipping stage{} {}: {why}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ));
        }
        for warning in &plan.warnings {
            let at = if warning.pos.line == 0 {
                self.opts.dockerfile_name.clone()
            } else {
                format!(
                    "{}:{}:{}",
                    self.opts.dockerfile_name, warning.pos.line, warning.pos.column
                )
            };
            self.reporter
                .warn(&format!("{at}: {} ({})", warning.message, warning.rule));
        }
        let context = ContextView::scan(
            &self.opts.context_dir,
            self.opts.dockerfile_in_context.as_deref(),
            self.opts.outside_ignore_file.as_ref(),
        )?;
        let isolation = self.isolation()?;
        let finished: Mutex<HashMap<usize, Arc<Finished>>> = Mutex::new(HashMap::new());
        let total = plan.stages.len();
        let position: HashMap<usize, usize> = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.index, i + 1))
            .collect();
        for wave in &plan.build_order {
            let results: Vec<Result<(usize, Finished), BuildError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = wave
                    .iter()
                    .map(|&index| {
                        let stage = plan
                            .stages
                            .iter()
                            .find(|s| s.index == index)
                            .expect("build_order names planned stages");
                        let (finished, resolved, context, plan) =
                            (&finished, &resolved, &context, &plan);
                        let pos = (position[&index], total);
                        scope.spawn(move || {
                            if isolation == Isolation::Overlay {
                                kiln_sandbox::overlay::private_mount_namespace().map_err(
                                    |source| BuildError::Sandbox {
                                        at: format!(
                                            "stage {index}: entering a private mount namespace"
                                        ),
                                        source,
                                    },
                                )?;
                            }
                            let run = crate::stage::StageRun::new(
                                self, plan, stage, pos, resolved, finished, context, isolation,
                            )?;
                            run.execute().map(|f| (index, f))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(BuildError::Options("a stage thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for result in results {
                let (index, f) = result?;
                finished
                    .lock()
                    .expect("no stage thread panics while holding the lock")
                    .insert(index, Arc::new(f));
            }
        }
        let target = finished
            .lock()
            .expect("no stage thread panics while holding the lock")
            .remove(&plan.target)
            .expect("the target stage was built");
        let image = self.assemble(target.image.clone())?;
        self.reporter.info(&format!(
            "built {} in {:.1}s",
            image.manifest_descriptor.digest,
            started.elapsed().as_secs_f64()
        ));
        Ok(image)
    }

    /// The RUN backend: overlay when this process may mount overlays, else chroot; the log
    /// says which and why.
    pub(crate) fn isolation(&self) -> Result<Isolation, BuildError> {
        let probe = || {
            let dir = self.build_dir.join("overlay-probe");
            let result = kiln_sandbox::overlay::overlay_available(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            result
        };
        match self.opts.isolation {
            Isolation::Auto => match probe() {
                Ok(()) => {
                    self.reporter
                        .info("RUN isolation: overlay (this process may mount overlays)");
                    Ok(Isolation::Overlay)
                }
                Err(why) => Ok(self.chroot_backend(&format!("no overlay: {why}"))),
            },
            Isolation::Overlay => match probe() {
                Ok(()) => {
                    self.reporter.info("RUN isolation: overlay (as asked)");
                    Ok(Isolation::Overlay)
                }
                Err(why) => Err(BuildError::Options(format!(
                    "--isolation overlay: this process cannot mount overlays: {why}"
                ))),
            },
            Isolation::Chroot => Ok(self.chroot_backend("as asked")),
        }
    }

    pub(crate) fn at(&self, instruction: &Instruction) -> String {
        if instruction.span.start.line == 0 {
            format!(
                "{} (ONBUILD trigger of the base image)",
                self.opts.dockerfile_name
            )
        } else {
            format!(
                "{}:{}:{}",
                self.opts.dockerfile_name,
                instruction.span.start.line,
                instruction.span.start.column
            )
        }
    }

    /// Refuses what kiln cannot build yet, before any work, naming the line.
    fn check_supported(&self, plan: &Plan) -> Result<(), BuildError> {
        for stage in &plan.stages {
            for instruction in stage.onbuild.iter().chain(&stage.instructions) {
                let unsupported = |what: &str| BuildError::Unsupported {
                    at: self.at(instruction),
                    what: what.to_owned(),
                };
                match &instruction.command {
                    Command::Run {
                        mounts,
                        network,
                        security,
                        ..
                    } => {
                        if !mounts.is_empty() {
                            return Err(unsupported(
                                "RUN --mount (cache, secret, ssh, bind, tmpfs)",
                            ));
                        }
                        if network.as_deref().is_some_and(|n| n == "none") {
                            return Err(unsupported("RUN --network=none"));
                        }
                        if security.as_deref().is_some_and(|s| s == "insecure") {
                            return Err(unsupported("RUN --security=insecure"));
                        }
                    }
                    Command::Add(args) => {
                        let urls = args.sources.iter().filter(|s| is_url(&s.value)).count();
                        if args.checksum.is_some() && (urls != 1 || args.sources.len() != 1) {
                            return Err(BuildError::Instruction {
                                at: self.at(instruction),
                                keyword: "ADD",
                                message: "--checksum is only valid with one http(s) source".into(),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    pub(crate) fn stage_platform(
        &self,
        stage: &PlannedStage,
        plan: &Plan,
    ) -> Result<Platform, BuildError> {
        match &stage.platform {
            Some(p) => Platform::parse_flag(p).map_err(|e| BuildError::Instruction {
                at: format!(
                    "{}:{}:{}",
                    self.opts.dockerfile_name, stage.span.start.line, stage.span.start.column
                ),
                keyword: "FROM",
                message: format!("--platform={p}: {e}"),
            }),
            None => Platform::parse_flag(&plan.target_platform)
                .map_err(|e| BuildError::Options(format!("--custom-platform: {e}"))),
        }
    }

    fn resolve(
        &self,
        text: &str,
        platform: &Platform,
        stage: &PlannedStage,
    ) -> Result<Resolved, BuildError> {
        let at = format!(
            "{}:{}:{}",
            self.opts.dockerfile_name, stage.span.start.line, stage.span.start.column
        );
        let reference = Reference::parse(text).map_err(|e| BuildError::Instruction {
            at: at.clone(),
            keyword: "FROM",
            message: e.to_string(),
        })?;
        self.reporter
            .info(&format!("resolving {reference} for {platform}"));
        let r = self
            .block_on(self.client.resolve(&reference, platform))
            .map_err(BuildError::registry(format!(
                "{at}: pulling base image {reference}"
            )))?;
        let config = ImageConfig::parse(&r.config).map_err(|e| {
            BuildError::registry(format!("{at}: reading the config of {reference}"))(
                kiln_registry::RegistryError::Manifest {
                    reference: reference.to_string(),
                    reason: e.to_string(),
                },
            )
        })?;
        let layers: Vec<Layer> = r
            .manifest
            .layers
            .iter()
            .zip(config.rootfs.diff_ids.iter())
            .map(|(d, diff_id)| Layer {
                descriptor: d.clone(),
                diff_id: diff_id.clone(),
                remote: Some(r.source.clone()),
            })
            .collect();
        if layers.len() != r.manifest.layers.len() || layers.len() != config.rootfs.diff_ids.len() {
            return Err(BuildError::Instruction {
                at,
                keyword: "FROM",
                message: format!(
                    "image {reference} has {} layers but {} diff_ids in its config",
                    r.manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        Ok(Resolved {
            image: StageImage { config, layers },
        })
    }

    /// Makes sure a layer's blob is in the store, downloading it when it is a base layer.
    pub(crate) fn ensure_blob(&self, layer: &Layer) -> Result<PathBuf, BuildError> {
        let path = self.store.blob_path(&layer.descriptor.digest);
        if path.is_file() {
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
        if path.is_file() {
            return Ok(path);
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(BuildError::io("creating", dir))?;
        self.block_on(self.client.fetch_blob(source, &layer.descriptor, &path))
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
                if !self.store.blob_path(&layer.descriptor.digest).is_file()
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
            let Some(first) = descriptors.first() else {
                continue;
            };
            let dir = self.store.blob_path(&first.digest);
            let dir = dir.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir).map_err(BuildError::io("creating", dir))?;
            let _one_at_a_time = self.fetch_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.block_on(self.client.fetch_blobs(&source, &descriptors, dir))
                .map_err(BuildError::registry(format!(
                    "pulling the layers of {source}"
                )))?;
        }
        Ok(())
    }

    /// Extracts `layers` into the new directory `dir`.
    pub(crate) fn materialize(&self, layers: &[Layer], dir: &Path) -> Result<(), BuildError> {
        std::fs::create_dir_all(dir).map_err(BuildError::io("creating", dir))?;
        self.prefetch(layers)?;
        for layer in layers {
            if media_type::is_foreign(&layer.descriptor.media_type) {
                continue;
            }
            let path = self.ensure_blob(layer)?;
            let file = std::fs::File::open(&path).map_err(BuildError::io("opening", &path))?;
            kiln_fs::apply::apply_layer(
                std::io::BufReader::with_capacity(1 << 20, file),
                dir,
                &apply_options(false),
            )
            .map_err(|source| BuildError::Apply {
                digest: layer.descriptor.digest.to_string(),
                source,
            })?;
        }
        Ok(())
    }

    fn layer_options(&self, lazy: bool) -> LayerOptions {
        let mut o = LayerOptions {
            encoding: self.opts.encoding,
            media_types: match self.opts.image_format {
                ImageFormat::Docker => MediaTypes::Docker,
                ImageFormat::Oci => MediaTypes::Oci,
            },
            ..LayerOptions::default()
        };
        o.reproducible_mtime = match (self.opts.reproducible, self.opts.source_date_epoch) {
            (true, epoch) => Some(MtimeRule::Fixed(epoch.unwrap_or(0))),
            (false, Some(epoch)) => Some(MtimeRule::Clamp(epoch)),
            (false, None) => None,
        };
        o.omit_parent_entries = lazy;
        o
    }

    /// The creation time written into configs and history.
    pub(crate) fn created(&self) -> String {
        match (self.opts.reproducible, self.opts.source_date_epoch) {
            (_, Some(epoch)) => image::rfc3339(epoch),
            (true, None) => image::rfc3339(0),
            (false, None) => image::rfc3339(now_secs()),
        }
    }

    /// Writes a layer into the store with `write` (given the output and the layer options);
    /// `lazy` leaves out parent directories the change set does not hold. Returns the layer and
    /// its tar's size.
    pub(crate) fn write_layer<F>(
        &self,
        at: &str,
        lazy: bool,
        write: F,
    ) -> Result<(Layer, u64), BuildError>
    where
        F: FnOnce(
            std::io::BufWriter<&std::fs::File>,
            &LayerOptions,
        ) -> Result<kiln_fs::layer::LayerInfo, kiln_fs::layer::LayerError>,
    {
        let tmp_dir = self.store.root().join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(BuildError::io("creating", &tmp_dir))?;
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(BuildError::io("creating a file in", &tmp_dir))?;
        let out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let info = write(out, &self.layer_options(lazy)).map_err(|source| BuildError::Layer {
            at: at.to_owned(),
            source,
        })?;
        let dest = self.store.blob_path(&info.digest);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(BuildError::io("creating", parent))?;
        }
        tmp.as_file()
            .sync_all()
            .map_err(BuildError::io("syncing", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| BuildError::Io {
            what: "storing layer",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok((
            Layer {
                descriptor: Descriptor::new(info.media_type, info.digest, info.size),
                diff_id: info.diff_id,
                remote: None,
            },
            info.uncompressed_size,
        ))
    }

    /// The final config and manifest of a stage's image.
    fn assemble(&self, mut image: StageImage) -> Result<BuiltImage, BuildError> {
        let created = self.created();
        image.config.created = Some(created);
        if !self.opts.labels.is_empty() {
            let labels = image
                .config
                .config_mut()
                .labels
                .get_or_insert_with(Default::default);
            for (k, v) in &self.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        let (config_type, manifest_type) = match self.opts.image_format {
            ImageFormat::Docker => (media_type::DOCKER_CONFIG, media_type::DOCKER_MANIFEST),
            ImageFormat::Oci => (media_type::OCI_CONFIG, media_type::OCI_MANIFEST),
        };
        for layer in &mut image.layers {
            layer.descriptor.media_type =
                convert_layer_type(&layer.descriptor.media_type, self.opts.image_format)
                    .map_err(BuildError::Options)?;
        }
        let config = image
            .config
            .to_canonical_json()
            .map_err(|source| BuildError::Output {
                what: "the image config".into(),
                source,
            })?;
        let config_descriptor = Descriptor::for_bytes(config_type, &config);
        let layers: Vec<Descriptor> = image.layers.iter().map(|l| l.descriptor.clone()).collect();
        let manifest = match self.opts.image_format {
            ImageFormat::Docker => {
                kiln_oci::ImageManifest::docker(config_descriptor.clone(), layers)
            }
            ImageFormat::Oci => kiln_oci::ImageManifest::oci(config_descriptor.clone(), layers),
        };
        let manifest = kiln_oci::ImageManifest {
            annotations: self.opts.annotations.clone(),
            ..manifest
        };
        let manifest_bytes = kiln_oci::Manifest::Image(manifest)
            .to_canonical_json()
            .map_err(|source| BuildError::Output {
                what: "the manifest".into(),
                source,
            })?;
        let manifest_descriptor = Descriptor::for_bytes(manifest_type, &manifest_bytes);
        // The config is a blob like the layers: keep it in the store for the outputs.
        self.store.ingest(&config[..], Some(&config_descriptor))?;
        Ok(BuiltImage {
            config,
            config_descriptor,
            manifest: manifest_bytes,
            manifest_descriptor,
            layers: image.layers,
        })
    }
}

/// How layers are unpacked: for overlay lower dirs or as a merged tree; in a user namespace
/// (rootless) opaque dirs are marked with `user.overlay.opaque` and device nodes are skipped
/// (mknod is not allowed there).
fn apply_options(overlay: bool) -> kiln_fs::apply::ApplyOptions {
    let rootless = kiln_sandbox::userns::is_rootless();
    let mut options = kiln_fs::apply::ApplyOptions::default();
    if rootless {
        options.devices = kiln_fs::apply::Devices::Skip;
    }
    options.whiteouts = match (overlay, rootless) {
        (false, _) => kiln_fs::apply::Whiteouts::Apply,
        (true, false) => kiln_fs::apply::Whiteouts::Overlay,
        (true, true) => kiln_fs::apply::Whiteouts::OverlayUserXattr,
    };
    options
}

/// An http(s) URL source of ADD that is not a git repository.
pub(crate) fn is_url(source: &str) -> bool {
    (source.starts_with("http://") || source.starts_with("https://"))
        && !crate::context::is_git_url(source)
}

/// A base layer's media type in the output's family (compression kept).
fn convert_layer_type(current: &str, format: ImageFormat) -> Result<String, String> {
    if media_type::is_foreign(current) {
        return Ok(current.to_owned());
    }
    let compression = media_type::layer_compression(current)
        .ok_or_else(|| format!("unknown layer media type {current}"))?;
    match format {
        ImageFormat::Oci => Ok(media_type::oci_layer(compression).to_owned()),
        ImageFormat::Docker => {
            if compression == kiln_oci::media_type::Compression::Zstd {
                return Err(
                    "zstd layers need --image-format oci (Docker manifests have no zstd layer type)"
                        .into(),
                );
            }
            Ok(media_type::docker_layer(compression).to_owned())
        }
    }
}

fn remove_tree(path: &Path) -> Result<(), BuildError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BuildError::Io {
            what: "removing",
            path: path.to_owned(),
            source: e,
        }),
    }
}

impl Drop for Builder {
    /// Unpacked layers reach the disk on side threads; a finished build leaves them there.
    fn drop(&mut self) {
        self.store.wait_for_syncs();
        self.overlay_store.wait_for_syncs();
    }
}
