//! The engine: plans the Dockerfile with what the base images say, builds the needed stages
//! (independent ones at the same time), and assembles the target stage's image.

use crate::context::ContextView;
use crate::copy::{self, CopySpec, Source};
use crate::error::BuildError;
use crate::image::{self, command_vector, env_pairs, set_env};
use crate::options::{BuildOptions, ImageFormat, Isolation, Reporter, StepInfo};
use crate::paths;
use crate::users;
use kiln_dockerfile::instructions::{Command, CommandLine, CopyArgs, Instruction};
use kiln_dockerfile::{plan, Base, BaseImage, Dockerfile, Plan, PlanOptions, PlannedStage};
use kiln_fs::layer::{LayerOptions, MediaTypes, MtimeRule};
use kiln_fs::snapshot::{self, Change, ChangeKind, Changes, StatIndex};
use kiln_fs::store::ContentStore;
use kiln_oci::{media_type, Descriptor, Digest, ImageConfig, Platform};
use kiln_registry::{BlobOutcome, Client, Reference};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
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

struct Finished {
    image: StageImage,
    /// The stage's root file system, when it was extracted.
    rootfs: Option<PathBuf>,
}

/// A base image as resolved from its registry.
#[derive(Debug, Clone)]
struct Resolved {
    image: StageImage,
}

/// Runs builds; owns the registry client, the content store and this build's directory.
pub struct Builder {
    opts: BuildOptions,
    reporter: Arc<dyn Reporter>,
    client: Client,
    runtime: tokio::runtime::Runtime,
    store: ContentStore,
    build_dir: PathBuf,
    /// Downloads of blobs into the store, one at a time per digest.
    fetch_lock: Mutex<()>,
}

struct BlobLines(Arc<dyn Reporter>);

impl kiln_registry::Reporter for BlobLines {
    fn blob_done(&self, digest: &Digest, outcome: BlobOutcome) {
        let what = match outcome {
            BlobOutcome::Downloaded => "pulled",
            BlobOutcome::Uploaded => "pushed",
            BlobOutcome::Exists => "already there",
            BlobOutcome::Mounted => "mounted",
        };
        self.0.blob(what, digest);
    }

    fn retry(
        &self,
        request: &kiln_registry::error::RequestInfo,
        attempt: u32,
        delay: std::time::Duration,
        reason: &str,
    ) {
        self.0.warn(&format!(
            "retry {attempt} of {request} in {:.1}s: {reason}",
            delay.as_secs_f64()
        ));
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
        let store = ContentStore::open(opts.kiln_dir.join("store"))?;
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
            build_dir,
            fetch_lock: Mutex::new(()),
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

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub(crate) fn store(&self) -> &ContentStore {
        &self.store
    }

    pub(crate) fn reporter(&self) -> &dyn Reporter {
        &*self.reporter
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
        };
        let first = plan(&dockerfile, &plan_options)?;
        self.check_supported(&first)?;
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
        let isolation = self.isolation();
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
                            let run = StageRun::new(
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

    fn isolation(&self) -> Isolation {
        match self.opts.isolation {
            Isolation::Auto => {
                self.reporter.info(
                    "RUN isolation: chroot (the overlay backend is not available in this version)",
                );
                Isolation::Chroot
            }
            Isolation::Overlay => {
                self.reporter
                    .warn("--isolation overlay is not available in this version: using chroot");
                Isolation::Chroot
            }
            Isolation::Chroot => {
                self.reporter.info("RUN isolation: chroot (as asked)");
                Isolation::Chroot
            }
        }
    }

    fn at(&self, instruction: &Instruction) -> String {
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
                        for source in &args.sources {
                            let v = &source.value;
                            if v.starts_with("http://")
                                || v.starts_with("https://")
                                || v.starts_with("git@")
                            {
                                return Err(unsupported(&format!(
                                    "ADD of a URL or git repository ({v})"
                                )));
                            }
                        }
                        if args.checksum.is_some() {
                            return Err(BuildError::Instruction {
                                at: self.at(instruction),
                                keyword: "ADD",
                                message: "--checksum is only valid for an http(s) source".into(),
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn stage_platform(&self, stage: &PlannedStage, plan: &Plan) -> Result<Platform, BuildError> {
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
    fn materialize(&self, layers: &[Layer], dir: &Path) -> Result<(), BuildError> {
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
                &kiln_fs::apply::ApplyOptions::default(),
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
    fn created(&self) -> String {
        match (self.opts.reproducible, self.opts.source_date_epoch) {
            (_, Some(epoch)) => image::rfc3339(epoch),
            (true, None) => image::rfc3339(0),
            (false, None) => image::rfc3339(now_secs()),
        }
    }

    /// Writes the layer for `changes` of `root` into the store.
    fn write_layer(
        &self,
        root: &Path,
        changes: &Changes,
        lazy: bool,
        at: &str,
    ) -> Result<Layer, BuildError> {
        let tmp_dir = self.store.root().join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(BuildError::io("creating", &tmp_dir))?;
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(BuildError::io("creating a file in", &tmp_dir))?;
        let out = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let info = kiln_fs::layer::write_layer(root, changes, out, &self.layer_options(lazy))
            .map_err(|source| BuildError::Layer {
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
        Ok(Layer {
            descriptor: Descriptor::new(info.media_type, info.digest, info.size),
            diff_id: info.diff_id,
            remote: None,
        })
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

/// Collects a RUN step's output: passes it to the reporter and keeps the tail for errors.
struct OutputTail<'a> {
    reporter: &'a dyn Reporter,
    step: &'a StepInfo,
    tail: Vec<u8>,
}

const TAIL_BYTES: usize = 4096;

impl Write for OutputTail<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.reporter.output(self.step, buf);
        self.tail.extend_from_slice(buf);
        if self.tail.len() > 2 * TAIL_BYTES {
            let cut = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..cut);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl OutputTail<'_> {
    fn last_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.tail);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One stage being built.
struct StageRun<'a> {
    builder: &'a Builder,
    stage: &'a PlannedStage,
    label: String,
    position: (usize, usize),
    resolved: &'a HashMap<String, Resolved>,
    finished: &'a Mutex<HashMap<usize, Arc<Finished>>>,
    context: &'a ContextView,
    /// Stage names (lower case) to indexes.
    names: HashMap<String, usize>,
    image: StageImage,
    rootfs: PathBuf,
    /// True when the stage never extracts its base: only files added on top of it.
    lazy: bool,
    /// ARG values in scope (RUN sees them as environment).
    args: BTreeMap<String, String>,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// A stat index of the rootfs as it is now, when known.
    index: Option<StatIndex>,
    /// `--single-snapshot`: the index at the start of the stage.
    single: Option<StatIndex>,
    platform: Platform,
}

impl<'a> StageRun<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        builder: &'a Builder,
        plan: &'a Plan,
        stage: &'a PlannedStage,
        position: (usize, usize),
        resolved: &'a HashMap<String, Resolved>,
        finished: &'a Mutex<HashMap<usize, Arc<Finished>>>,
        context: &'a ContextView,
        _isolation: Isolation,
    ) -> Result<StageRun<'a>, BuildError> {
        let label = match &stage.name {
            Some(n) => n.clone(),
            None => format!("#{}", stage.index),
        };
        let platform = builder.stage_platform(stage, plan)?;
        let rootfs = builder
            .build_dir
            .join(format!("stage-{}", stage.index))
            .join("rootfs");
        let needs_rootfs =
            stage
                .onbuild
                .iter()
                .chain(&stage.instructions)
                .any(|i| match &i.command {
                    Command::Run { .. } => true,
                    Command::Copy(a) | Command::Add(a) => a
                        .chown
                        .as_ref()
                        .is_some_and(|c| users::needs_lookup(&c.value)),
                    _ => false,
                });
        let single = builder.opts.single_snapshot && stage.index == plan.target;
        let (image, rootfs_ready) = match &stage.base {
            Base::Scratch => {
                let mut config = ImageConfig::for_platform(&platform);
                set_env(&mut config, "PATH", kiln_dockerfile::plan::DEFAULT_PATH);
                config.rootfs.kind = "layers".into();
                (
                    StageImage {
                        config,
                        layers: Vec::new(),
                    },
                    true,
                )
            }
            Base::Image { reference } => {
                let r = resolved
                    .get(reference)
                    .expect("base images are resolved before stages run");
                (r.image.clone(), false)
            }
            Base::Stage { index, .. } => {
                let done = finished
                    .lock()
                    .expect("no stage thread panics while holding the lock")
                    .get(index)
                    .cloned()
                    .expect("a base stage is built in an earlier wave");
                (done.image.clone(), false)
            }
        };
        let lazy = !needs_rootfs && !single && !rootfs_ready;
        std::fs::create_dir_all(&rootfs).map_err(BuildError::io("creating", &rootfs))?;
        let mut run = StageRun {
            builder,
            stage,
            label,
            position,
            resolved,
            finished,
            context,
            names: plan
                .stages
                .iter()
                .filter_map(|s| s.name.as_ref().map(|n| (n.to_ascii_lowercase(), s.index)))
                .collect(),
            image,
            rootfs,
            lazy,
            args: BTreeMap::new(),
            cmd_set: false,
            index: None,
            single: None,
            platform,
        };
        if !lazy && !rootfs_ready {
            builder.reporter.info(&format!(
                "[{}/{}] extracting the base of stage {} ({} layers)",
                position.0,
                position.1,
                run.label,
                run.image.layers.len()
            ));
            builder.materialize(&run.image.layers, &run.rootfs)?;
        } else if lazy && matches!(stage.base, Base::Image { .. }) {
            builder.reporter.info(&format!(
                "[{}/{}] stage {} only adds files: its base layers are not downloaded",
                position.0, position.1, run.label
            ));
        }
        if single {
            run.single = Some(run.scan("--single-snapshot")?);
        }
        // Proxy build args reach RUN without being declared (as in BuildKit).
        for name in kiln_dockerfile::plan::PROXY_ARGS {
            if let Some(v) = builder.opts.build_args.get(name) {
                run.args.insert(name.to_owned(), v.clone());
            }
        }
        Ok(run)
    }

    fn at(&self, instruction: &Instruction) -> String {
        self.builder.at(instruction)
    }

    fn scan(&self, at: &str) -> Result<StatIndex, BuildError> {
        let ignored: Vec<PathBuf> = self
            .builder
            .opts
            .ignore_paths
            .iter()
            .map(PathBuf::from)
            .collect();
        let ignored: Vec<&Path> = ignored.iter().map(PathBuf::as_path).collect();
        StatIndex::scan(&self.rootfs, &ignored).map_err(|source| BuildError::Snapshot {
            at: at.to_owned(),
            source,
        })
    }

    fn execute(mut self) -> Result<Finished, BuildError> {
        let stage = self.stage;
        let steps: Vec<&Instruction> = stage.onbuild.iter().chain(&stage.instructions).collect();
        let had_triggers = !stage.onbuild.is_empty();
        let total = steps.len();
        if had_triggers || matches!(stage.base, Base::Image { .. } | Base::Stage { .. }) {
            // Triggers run once: the new image does not inherit them.
            if let Some(c) = self.image.config.config.as_mut() {
                if c.on_build.is_some() {
                    c.on_build = None;
                }
            }
        }
        for (i, instruction) in steps.iter().enumerate() {
            let info = StepInfo {
                stage: self.position,
                stage_name: self.label.clone(),
                step: (i + 1, total),
                text: instruction.command.to_string(),
            };
            self.builder.reporter.step_started(&info);
            let started = Instant::now();
            self.step(instruction, &info)?;
            self.builder
                .reporter
                .step_finished(&info, started.elapsed());
        }
        if let Some(before) = self.single.take() {
            let at = format!("stage {}", self.label);
            let after = self.scan(&at)?;
            let changes = snapshot::diff(&before, &after);
            if !changes.is_empty() {
                let layer = self
                    .builder
                    .write_layer(&self.rootfs, &changes, false, &at)?;
                let created = self.builder.created();
                self.image.config.push_step(
                    Some(layer.diff_id.clone()),
                    image::history(&created, "kiln --single-snapshot".into()),
                );
                self.image.layers.push(layer);
            }
        }
        let rootfs = (!self.lazy).then_some(self.rootfs);
        Ok(Finished {
            image: self.image,
            rootfs,
        })
    }

    fn record(&mut self, instruction: &Instruction, layer: Option<Layer>) {
        let created = self.builder.created();
        let history = image::history(&created, instruction.command.to_string());
        match layer {
            Some(layer) => {
                self.image
                    .config
                    .push_step(Some(layer.diff_id.clone()), history);
                self.image.layers.push(layer);
            }
            None => self.image.config.push_step(None, history),
        }
    }

    fn step(&mut self, instruction: &Instruction, info: &StepInfo) -> Result<(), BuildError> {
        let at = self.at(instruction);
        let bad = |message: String| BuildError::Instruction {
            at: at.clone(),
            keyword: instruction.keyword(),
            message,
        };
        let config = &mut self.image.config;
        match &instruction.command {
            Command::From { .. } => {}
            Command::Arg { args } => {
                for decl in args {
                    if let Some(v) = &decl.default {
                        self.args.insert(decl.name.clone(), v.value.clone());
                    }
                }
            }
            Command::Env { env } => {
                for kv in env {
                    set_env(config, &kv.key.value, &kv.value.value);
                }
                self.record(instruction, None);
            }
            Command::Label { labels } => {
                let map = config
                    .config_mut()
                    .labels
                    .get_or_insert_with(Default::default);
                for kv in labels {
                    map.insert(kv.key.value.clone(), kv.value.value.clone());
                }
                self.record(instruction, None);
            }
            Command::Maintainer { name } => {
                config.author = Some(name.value.clone());
                self.record(instruction, None);
            }
            Command::Expose { ports } => {
                let mut keys = Vec::new();
                for p in ports {
                    keys.extend(image::port_keys(&p.value).map_err(bad)?);
                }
                image::expose(config, keys);
                self.record(instruction, None);
            }
            Command::Volume { paths } => {
                let paths: Vec<String> = paths.iter().map(|p| p.value.clone()).collect();
                image::volumes(config, &paths);
                self.record(instruction, None);
            }
            Command::User { user } => {
                config.config_mut().user = Some(user.value.clone());
                self.record(instruction, None);
            }
            Command::Stopsignal { signal } => {
                config.config_mut().stop_signal = Some(signal.value.clone());
                self.record(instruction, None);
            }
            Command::Healthcheck { health } => {
                config.config_mut().healthcheck = Some(image::healthcheck(health));
                self.record(instruction, None);
            }
            Command::Shell { shell } => {
                config.config_mut().shell = Some(shell.clone());
                self.record(instruction, None);
            }
            Command::Onbuild { expression, .. } => {
                config
                    .config_mut()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(expression.clone());
                self.record(instruction, None);
            }
            Command::Cmd { command } => {
                let v = command_vector(config, command);
                let c = config.config_mut();
                c.cmd = Some(v);
                c.null_fields.remove("Cmd");
                self.cmd_set = true;
                self.record(instruction, None);
            }
            Command::Entrypoint { command } => {
                let v = command_vector(config, command);
                let cmd_set = self.cmd_set;
                let c = config.config_mut();
                c.entrypoint = Some(v);
                c.null_fields.remove("Entrypoint");
                if !cmd_set {
                    // An ENTRYPOINT resets a CMD inherited from the base.
                    c.cmd = None;
                }
                self.record(instruction, None);
            }
            Command::Workdir { path } => {
                let cwd = config
                    .config
                    .as_ref()
                    .and_then(|c| c.working_dir.clone())
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into());
                let dir = paths::absolute(&cwd, &path.value);
                config.config_mut().working_dir = Some(dir.clone());
                let layer = if self.lazy || self.single.is_some() {
                    // Without the base's files kiln cannot tell whether it exists; runtimes
                    // create a missing working directory.
                    None
                } else {
                    self.workdir(&dir, &at)?
                };
                self.record(instruction, layer);
            }
            Command::Run {
                command, heredocs, ..
            } => {
                let layer = self.run(instruction, command, heredocs, info)?;
                self.record(instruction, layer);
            }
            Command::Copy(args) | Command::Add(args) => {
                let layer = self.copy(instruction, args)?;
                self.record(instruction, layer);
            }
        }
        Ok(())
    }

    /// Creates a missing WORKDIR (owned by the stage's USER, as BuildKit does).
    fn workdir(&mut self, dir: &str, at: &str) -> Result<Option<Layer>, BuildError> {
        let rel = paths::resolve_in_root(&self.rootfs, dir, true).map_err(|e| {
            BuildError::Instruction {
                at: at.to_owned(),
                keyword: "WORKDIR",
                message: e.to_string(),
            }
        })?;
        if paths::host(&self.rootfs, &rel).is_dir() {
            return Ok(None);
        }
        let owner = match self.user() {
            Some(spec) => {
                let id = users::resolve_user(&self.rootfs, &spec).map_err(|m| {
                    BuildError::Instruction {
                        at: at.to_owned(),
                        keyword: "WORKDIR",
                        message: m,
                    }
                })?;
                (id.uid, id.gid)
            }
            None => (0, 0),
        };
        let mut created = Vec::new();
        paths::mkdir_all(&self.rootfs, &rel, 0o755, owner, &mut created).map_err(|e| {
            BuildError::Instruction {
                at: at.to_owned(),
                keyword: "WORKDIR",
                message: e.to_string(),
            }
        })?;
        let changes: Vec<Change> = created
            .into_iter()
            .map(|p| Change {
                path: PathBuf::from(p),
                kind: ChangeKind::Added,
            })
            .collect();
        self.index = None;
        if self.single.is_some() {
            return Ok(None);
        }
        Ok(Some(self.builder.write_layer(
            &self.rootfs,
            &Changes::new(changes),
            false,
            at,
        )?))
    }

    fn user(&self) -> Option<String> {
        self.image
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .filter(|u| !u.is_empty())
    }

    fn run(
        &mut self,
        instruction: &Instruction,
        command: &CommandLine,
        heredocs: &[kiln_dockerfile::parser::Heredoc],
        info: &StepInfo,
    ) -> Result<Option<Layer>, BuildError> {
        let at = self.at(instruction);
        let host = Platform::host();
        if self.platform.os != host.os || self.platform.architecture != host.architecture {
            return Err(BuildError::Unsupported {
                at,
                what: format!(
                    "RUN for platform {} on this {} machine (no emulation)",
                    self.platform, host
                ),
            });
        }
        let argv = match command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) => {
                let mut script = text.clone();
                // The shell reads heredoc bodies after the command line, as a script.
                for h in heredocs {
                    script.push('\n');
                    script.push_str(&h.content);
                    script.push_str(&h.name);
                }
                let mut v = image::shell(&self.image.config);
                v.push(script);
                v
            }
        };
        if argv.is_empty() {
            return Err(BuildError::Instruction {
                at,
                keyword: "RUN",
                message: "empty command".into(),
            });
        }
        let mut env: BTreeMap<String, String> = self.args.clone();
        for (k, v) in env_pairs(&self.image.config) {
            env.insert(k, v);
        }
        let identity = match self.user() {
            Some(spec) => {
                users::resolve_user(&self.rootfs, &spec).map_err(|m| BuildError::Instruction {
                    at: at.clone(),
                    keyword: "RUN",
                    message: format!("USER {spec}: {m}"),
                })?
            }
            None => users::Identity {
                uid: 0,
                gid: 0,
                groups: Vec::new(),
            },
        };
        let cwd = self
            .image
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let before = match self.index.take() {
            Some(i) => i,
            None => self.scan(&at)?,
        };
        let hosts = self.builder.build_dir.join("hosts");
        if !hosts.exists() {
            std::fs::write(
                &hosts,
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            )
            .map_err(BuildError::io("writing", &hosts))?;
        }
        let safe_file = |rel: &str| {
            std::fs::symlink_metadata(self.rootfs.join(rel)).map_or(true, |m| m.is_file())
        };
        let resolv = Path::new("/etc/resolv.conf");
        let spec = kiln_sandbox::RunSpec {
            rootfs: self.rootfs.clone(),
            argv,
            env: env.into_iter().collect(),
            cwd,
            uid: identity.uid,
            gid: identity.gid,
            extra_gids: identity.groups,
            hostname: Some("kiln".into()),
            resolv_conf: (resolv.is_file() && safe_file("etc/resolv.conf"))
                .then(|| resolv.to_owned()),
            hosts: safe_file("etc/hosts").then_some(hosts),
        };
        let mut out = OutputTail {
            reporter: &*self.builder.reporter,
            step: info,
            tail: Vec::new(),
        };
        let outcome = {
            // stdout and stderr interleave in one tail, as a terminal shows them.
            let mut err_tail = OutputTail {
                reporter: &*self.builder.reporter,
                step: info,
                tail: Vec::new(),
            };
            let r = kiln_sandbox::run_step(&spec, &mut out, &mut err_tail);
            out.tail.extend_from_slice(&err_tail.tail);
            r
        }
        .map_err(|source| BuildError::Sandbox {
            at: at.clone(),
            source,
        })?;
        // Mount points kiln made are not the step's: remove them before the snapshot.
        let canonical = std::fs::canonicalize(&self.rootfs)
            .map_err(BuildError::io("resolving", &self.rootfs))?;
        for point in outcome.created_mount_points.iter().rev() {
            if point.starts_with(&canonical) {
                let meta = std::fs::symlink_metadata(point);
                let _ = match meta {
                    Ok(m) if m.is_dir() => std::fs::remove_dir(point),
                    Ok(_) => std::fs::remove_file(point),
                    Err(_) => Ok(()),
                };
            }
        }
        if outcome.without_sys {
            self.builder.reporter.warn(&format!(
                "{at}: RUN ran without /sys: this container has none to share"
            ));
        }
        if !outcome.status.success() {
            let status = match outcome.status {
                kiln_sandbox::StepStatus::Exited(code) => format!("exited with status {code}"),
                kiln_sandbox::StepStatus::Signaled(sig) => format!("was killed by signal {sig}"),
            };
            return Err(BuildError::RunFailed {
                at,
                stage: self.label.clone(),
                command: match command {
                    CommandLine::Exec(a) => serde_json::to_string(a).unwrap_or_default(),
                    CommandLine::Shell(t) => t.clone(),
                },
                status,
                tail: out.last_lines(20),
            });
        }
        let after = self.scan(&at)?;
        if self.single.is_some() {
            self.index = Some(after);
            return Ok(None);
        }
        let changes = snapshot::diff(&before, &after);
        self.index = Some(after);
        if changes.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.builder.write_layer(
            &self.rootfs,
            &changes,
            false,
            &at,
        )?))
    }

    fn copy(
        &mut self,
        instruction: &Instruction,
        args: &CopyArgs,
    ) -> Result<Option<Layer>, BuildError> {
        let at = self.at(instruction);
        let keyword = instruction.keyword();
        let bad = |message: String| BuildError::Instruction {
            at: at.clone(),
            keyword,
            message,
        };
        let owner = match &args.chown {
            Some(spec) => Some(
                users::resolve_chown(&self.rootfs, &spec.value)
                    .map_err(|m| bad(format!("--chown={}: {m}", spec.value)))?,
            ),
            None => None,
        };
        let chmod = match &args.chmod {
            Some(c) => Some(
                kiln_dockerfile::mount::parse_chmod(&c.value)
                    .map_err(|m| bad(format!("--chmod={}: {m}", c.value)))?,
            ),
            None => None,
        };
        let exclude = if args.exclude.is_empty() {
            None
        } else {
            Some(
                kiln_dockerfile::ignore::Matcher::from_strings(
                    args.exclude.iter().map(|w| w.value.clone()),
                )
                .map_err(|e| bad(format!("--exclude: {e}")))?,
            )
        };
        let cwd = self
            .image
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let mut dest = paths::absolute(&cwd, &args.dest.value);
        if (args.dest.value.ends_with('/')
            || args.dest.value.ends_with("/.")
            || args.dest.value == ".")
            && dest != "/"
        {
            dest.push('/');
        }
        if args.sources.len() + args.inline.len() > 1 && !dest.ends_with('/') {
            return Err(bad(format!(
                "when using {keyword} with more than one source file, the destination must be a directory and end with a /"
            )));
        }
        let inline: Vec<(String, String)> = args
            .inline
            .iter()
            .map(|s| (s.name.clone(), s.content.clone()))
            .collect();
        let spec = CopySpec {
            sources: args.sources.iter().map(|w| w.value.clone()).collect(),
            inline,
            dest,
            owner,
            chmod: chmod.as_ref(),
            parents: args.parents,
            exclude: exclude.as_ref(),
            unpack_archives: keyword == "ADD" && args.unpack != Some(false),
            // On a tree without the base's files, directories made only to hold the new
            // files stay out of the layer (the base's own keep their metadata).
            record_parents: !self.lazy,
        };
        let changes = match &args.from {
            None => copy::copy(&Source::Context(self.context), &spec, &self.rootfs),
            Some(from) => {
                let dir = self.source_rootfs(&from.value, &at)?;
                copy::copy(&Source::Rootfs(&dir), &spec, &self.rootfs)
            }
        }
        .map_err(bad)?;
        self.index = None;
        if self.single.is_some() {
            return Ok(None);
        }
        if changes.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.builder.write_layer(
            &self.rootfs,
            &Changes::new(changes),
            self.lazy,
            &at,
        )?))
    }

    /// The root file system `COPY --from=X` reads: a built stage's, or an image's.
    fn source_rootfs(&self, from: &str, at: &str) -> Result<PathBuf, BuildError> {
        let stage_index = from
            .parse::<usize>()
            .ok()
            .or_else(|| self.names.get(&from.to_ascii_lowercase()).copied())
            .filter(|i| self.stage.depends_on.contains(i));
        if let Some(index) = stage_index {
            let done = self
                .finished
                .lock()
                .expect("no stage thread panics while holding the lock")
                .get(&index)
                .cloned()
                .expect("a --from stage is built in an earlier wave");
            if let Some(root) = &done.rootfs {
                return Ok(root.clone());
            }
            let dir = self
                .builder
                .build_dir
                .join(format!("from-stage-{index}-for-{}", self.stage.index));
            if !dir.exists() {
                self.builder.materialize(&done.image.layers, &dir)?;
            }
            return Ok(dir);
        }
        let Some(r) = self.resolved.get(from) else {
            return Err(BuildError::Instruction {
                at: at.to_owned(),
                keyword: "COPY",
                message: format!("--from={from}: no such stage or image"),
            });
        };
        let n = self.resolved.keys().position(|k| k == from).unwrap_or(0);
        let dir = self
            .builder
            .build_dir
            .join(format!("image-{n}-for-{}", self.stage.index));
        if !dir.exists() {
            self.builder.materialize(&r.image.layers, &dir)?;
        }
        Ok(dir)
    }
}
