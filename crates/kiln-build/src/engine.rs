//! The engine: plans the Dockerfile with what the base images say, builds the needed stages
//! (independent ones at the same time), and assembles the target stage's image.

use crate::cache::Cache;
use crate::context::ContextView;
use crate::error::BuildError;
use crate::image::env_pairs;
use crate::layers::LayerServices;
use crate::options::{BuildOptions, ImageFormat, Isolation, Reporter};
use crate::types::{BuiltImage, Finished, Layer, Resolved, StageImage};
use kiln_dockerfile::instructions::Command;
use kiln_dockerfile::mount::MountType;
use kiln_dockerfile::{plan, Base, BaseImage, Dockerfile, Plan, PlanOptions, PlannedStage};
use kiln_oci::{media_type, Descriptor, ImageConfig, Platform};
use kiln_registry::Reference;
use kiln_sandbox::backend::{Backend, Preference};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Runs builds: plans, resolves base images, builds stages wave by wave, assembles the image.
/// Stages and outputs get the layer services it owns; they never call back into it.
pub struct Builder {
    opts: BuildOptions,
    reporter: Arc<dyn Reporter>,
    layers: LayerServices,
    cache: Cache,
    build_dir: PathBuf,
    /// Held while the build runs: pruning never removes what a running build uses.
    store_lock: Mutex<Option<kiln_fs::gc::StoreLock>>,
    /// Push-access checks under way.
    push_checks: Mutex<Vec<tokio::task::JoinHandle<Result<(), BuildError>>>>,
    /// The lock on `build_dir/.alive`, held while this build lives.
    _alive: Option<std::fs::File>,
    /// Deleting the directories of builds that are gone: waited for before the store lock is
    /// let go (so `kiln prune` never races it) and on drop.
    sweeper: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Builder {
    fn wait_for_sweeper(&self) {
        let sweeper = self
            .sweeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(sweeper) = sweeper {
            let _ = sweeper.join();
        }
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        self.wait_for_sweeper();
    }
}

/// Marks `build_dir` as a live build's: an exclusive lock on its `.alive` file, taken before
/// the file has its name (so no one sees it unlocked), held as long as the returned file. Where
/// the file system cannot lock (some network file systems), the directory gets no `.alive`:
/// no build sweeps it, and `kiln prune` removes it.
fn hold_alive(build_dir: &Path) -> Option<std::fs::File> {
    let temp = build_dir.join(".alive.tmp");
    let file = std::fs::File::create(&temp).ok()?;
    if let Err(e) = rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
        tracing::debug!(
            "{}: no lock ({e}): ended builds' directories stay",
            temp.display()
        );
        let _ = std::fs::remove_file(&temp);
        return None;
    }
    std::fs::rename(&temp, build_dir.join(".alive")).ok()?;
    Some(file)
}

/// Removes the directories of builds that are gone (finished, or killed: their trees, and a
/// secret file a step without namespaces had): a live build holds its `.alive` lock. A
/// directory without one (a build just starting, or an older kiln's) is left to `kiln prune`.
/// Each dead directory is renamed to `.dead-*` at once (so no later build looks at it again)
/// and deleted in the background, not in the build's way (the builder waits for it when it is
/// dropped); `.dead-*` left by a kiln that exited before it finished deleting go too.
fn sweep_dead_builds(builds: &Path) -> Option<std::thread::JoinHandle<()>> {
    let entries = std::fs::read_dir(builds).ok()?;
    let mut doomed = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(".dead-") {
            doomed.push(dir);
            continue;
        }
        let Ok(file) = std::fs::File::options()
            .write(true)
            .open(dir.join(".alive"))
        else {
            continue;
        };
        let unlocked =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok();
        let dead = builds.join(format!(".dead-{}", name.to_string_lossy()));
        if unlocked && std::fs::rename(&dir, &dead).is_ok() {
            tracing::debug!("removing {}: its build is gone", dir.display());
            doomed.push(dead);
        }
    }
    (!doomed.is_empty()).then(|| {
        std::thread::spawn(move || {
            for dir in doomed {
                let _ = remove_tree(&dir);
            }
        })
    })
}

impl Builder {
    /// A builder for `opts`: creates the kiln dir's store and this build's directory.
    pub fn new(mut opts: BuildOptions, reporter: Arc<dyn Reporter>) -> Result<Builder, BuildError> {
        // Overlay lower dirs are symlinks and mounts happen from another directory: every
        // path under the kiln dir must be absolute.
        opts.kiln_dir = std::path::absolute(&opts.kiln_dir)
            .map_err(BuildError::io("resolving", &opts.kiln_dir))?;
        // The store is held before this build makes anything in the kiln dir: pruning never
        // removes a starting build's directory.
        let store_lock = Mutex::new(Some(
            kiln_fs::store::ContentStore::open(opts.kiln_dir.join("store"))?.lock_shared()?,
        ));
        let builds = opts.kiln_dir.join("builds");
        std::fs::create_dir_all(&builds).map_err(BuildError::io("creating", &builds))?;
        let sweeper = sweep_dead_builds(&builds);
        let build_dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&builds)
            .map_err(BuildError::io("creating a build directory in", &builds))?
            .keep();
        let alive = hold_alive(&build_dir);
        let layers = LayerServices::new(&mut opts, reporter.clone(), build_dir.clone())?;
        let mut cache = Cache::new(&opts.cache, &layers)?;
        cache.load_inline(&layers, &*reporter, &opts.cache.from_images, &opts.platform);
        Ok(Builder {
            opts,
            reporter,
            layers,
            cache,
            build_dir,
            store_lock,
            push_checks: Mutex::new(Vec::new()),
            _alive: alive,
            sweeper: Mutex::new(sweeper),
        })
    }

    /// This build's directory under the kiln dir.
    pub fn build_dir(&self) -> &Path {
        &self.build_dir
    }

    /// Starts checking that every destination accepts a push from these credentials (kaniko
    /// checks before building too). The checks run while [`Builder::build`] resolves the
    /// base images; a refusal fails the build before its first step.
    pub fn check_destinations(&self) -> Result<(), BuildError> {
        if self.opts.no_push || self.opts.skip_push_permission_check {
            return Ok(());
        }
        let mut checks = self.push_checks.lock().unwrap_or_else(|e| e.into_inner());
        for destination in &self.opts.destinations {
            let client = self.layers.shared_client();
            let destination = destination.clone();
            checks.push(self.layers.spawn(async move {
                client
                    .check_push_access(&destination)
                    .await
                    .map_err(BuildError::registry(format!(
                        "checking push access to {destination}"
                    )))
            }));
        }
        Ok(())
    }

    /// Waits for the push-access checks [`Builder::check_destinations`] started.
    fn push_checks_passed(&self) -> Result<(), BuildError> {
        let checks: Vec<_> =
            std::mem::take(&mut *self.push_checks.lock().unwrap_or_else(|e| e.into_inner()));
        for check in checks {
            self.layers
                .block_on(check)
                .map_err(|e| BuildError::Options(format!("checking push access: {e}")))??;
        }
        Ok(())
    }

    /// Pushes `image` to `destination`: layers (mounted from their base repository when it
    /// is on the same registry, else uploaded), the config, then the manifest. Returns the
    /// manifest digest the registry stored.
    pub fn push(
        &self,
        image: &BuiltImage,
        destination: &Reference,
    ) -> Result<kiln_oci::Digest, BuildError> {
        self.layers.push(image, destination, &*self.reporter)
    }

    /// Writes `image` as a docker-archive (`docker load`) at `path` with these tags.
    pub fn write_docker_archive(
        &self,
        image: &BuiltImage,
        path: &Path,
        tags: &[String],
    ) -> Result<(), BuildError> {
        self.layers.write_docker_archive(image, path, tags)
    }

    /// Writes `image` as an OCI image layout at `path`, its manifest named `ref_name`. The
    /// manifest is stored as built (a Docker-format image keeps its Docker media types, as
    /// kaniko writes it), so the layout's manifest digest is the digest pushed.
    pub fn write_oci_layout(
        &self,
        image: &BuiltImage,
        path: &Path,
        ref_name: &str,
    ) -> Result<(), BuildError> {
        self.layers.write_oci_layout(image, path, ref_name)
    }

    /// Waits for the cache entries still being pushed to the cache repository (call after the
    /// image's own push: entries never delay it). A failure is a warning, never an error.
    pub fn finish_cache(&self) {
        self.cache.finish_pushes(&self.layers, &*self.reporter);
    }

    /// Keeps the content store under `keep_bytes` (default: half of its file system), as the
    /// last thing a build does: when no other build holds the store, the least recently used
    /// blobs, unpacked layers and cache entries are removed until it fits. Before that, what
    /// killed builds left half-written goes. Returns what was removed to fit, or `None` when
    /// nothing had to be or other builds still run (the last one to finish collects).
    pub fn collect_garbage(
        &self,
        keep_bytes: Option<u64>,
    ) -> Result<Option<kiln_fs::gc::PruneReport>, BuildError> {
        self.wait_for_sweeper();
        drop(
            self.store_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let store = self.layers.store();
        // The last build to finish (none other holds the store) removes what killed builds
        // left half-written.
        let Some(lock) = store.try_lock_exclusive()? else {
            return Ok(None);
        };
        let removed = store.remove_temporaries(&lock);
        if removed > 0 {
            tracing::debug!("removed {removed} temporary files of builds that are gone");
        }
        let (fs_size, fs_used) = kiln_fs::gc::file_system_bytes(store.root())?;
        let keep = keep_bytes.unwrap_or(fs_size / 2);
        // The store cannot take more than its file system has in use: nothing to measure.
        if fs_used <= keep || store.disk_usage() <= keep {
            return Ok(None);
        }
        let policy = kiln_fs::gc::PrunePolicy {
            keep_bytes: Some(keep),
            ..Default::default()
        };
        Ok(Some(store.prune(&policy, &lock)?))
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
            let platform = self.opts.stage_platform(stage, &first)?;
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
        self.push_checks_passed()?;
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
        let backend = self.backend()?;
        if backend == (Backend::Chroot { namespaces: false }) {
            Self::check_without_namespaces(&plan, &self.opts)?;
        }
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
                            if backend == Backend::Overlay {
                                kiln_sandbox::overlay::private_mount_namespace().map_err(
                                    |source| BuildError::Sandbox {
                                        at: format!(
                                            "stage {index}: entering a private mount namespace"
                                        ),
                                        source,
                                    },
                                )?;
                            }
                            let services = crate::stage::StageServices {
                                layers: &self.layers,
                                cache: &self.cache,
                                opts: &self.opts,
                                reporter: &*self.reporter,
                                backend,
                            };
                            let run = crate::stage::StageRun::new(
                                services, plan, stage, pos, resolved, finished, context,
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
        let (hits, keyed) = self.cache.counts();
        if keyed > 0 {
            self.reporter
                .info(&format!("{hits} of {keyed} steps from cache"));
        }
        self.reporter.info(&format!(
            "built {} in {:.1}s",
            image.manifest_descriptor.digest,
            started.elapsed().as_secs_f64()
        ));
        Ok(image)
    }

    /// The RUN backend kiln-sandbox finds for this process and the `--isolation` asked for;
    /// the log says which and why.
    fn backend(&self) -> Result<Backend, BuildError> {
        let preference = match self.opts.isolation {
            Isolation::Auto => Preference::Auto,
            Isolation::Overlay => Preference::Overlay,
            Isolation::Chroot => Preference::Chroot,
        };
        let choice =
            kiln_sandbox::backend::choose(preference, &self.build_dir.join("overlay-probe"))
                .map_err(|why| {
                    BuildError::Options(format!(
                        "--isolation overlay: this process cannot mount overlays: {why}"
                    ))
                })?;
        self.reporter.info(&choice.reason);
        Ok(choice.backend)
    }

    /// Refuses, before any step runs, what steps without namespaces cannot do: `RUN
    /// --network=none` (no network of their own) and one cache mounted twice in a step (a cache
    /// is moved to its target, and one directory cannot be at two).
    fn check_without_namespaces(plan: &Plan, opts: &BuildOptions) -> Result<(), BuildError> {
        for stage in &plan.stages {
            for instruction in stage.onbuild.iter().chain(&stage.instructions) {
                let Command::Run {
                    network, mounts, ..
                } = &instruction.command
                else {
                    continue;
                };
                let refuse = |what: String| BuildError::Unsupported {
                    at: opts.at(instruction),
                    what,
                };
                if network.as_deref() == Some("none") {
                    return Err(refuse(
                        "RUN --network=none in a container that may not create namespaces (the \
                         chroot backend without namespaces has no network of its own to give a \
                         step)"
                            .into(),
                    ));
                }
                let mut ids = std::collections::BTreeSet::new();
                for mount in mounts.iter().filter(|m| m.kind == MountType::Cache) {
                    let id = mount.id.clone().unwrap_or_else(|| {
                        kiln_oci::path::clean(mount.target.as_deref().unwrap_or("."))
                    });
                    if !ids.insert(id.clone()) {
                        return Err(refuse(format!(
                            "cache {id:?} mounted twice in one RUN without namespaces (a cache is \
                             moved to its target, and one directory cannot be at two targets)"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuses what kiln cannot build yet, before any work, naming the line.
    fn check_supported(&self, plan: &Plan) -> Result<(), BuildError> {
        for stage in &plan.stages {
            for instruction in stage.onbuild.iter().chain(&stage.instructions) {
                let unsupported = |what: &str| BuildError::Unsupported {
                    at: self.opts.at(instruction),
                    what: what.to_owned(),
                };
                match &instruction.command {
                    Command::Run {
                        mounts, security, ..
                    } => {
                        for mount in mounts.iter().filter(|m| m.required) {
                            let id = mount.id.as_deref().unwrap_or("default");
                            let (kind, given, flag) = match mount.kind {
                                MountType::Secret => (
                                    "secret",
                                    self.opts.secrets.get(id).is_some_and(|s| s.available()),
                                    format!("--secret id={id},src=PATH (or env=VARIABLE)"),
                                ),
                                MountType::Ssh => (
                                    "ssh",
                                    self.opts.ssh.contains_key(id),
                                    format!("--ssh {id}=$SSH_AUTH_SOCK"),
                                ),
                                _ => continue,
                            };
                            if !given {
                                return Err(BuildError::Instruction {
                                    at: self.opts.at(instruction),
                                    keyword: "RUN",
                                    message: format!(
                                        "{kind} {id}: not found: the mount is required, pass {flag}"
                                    ),
                                });
                            }
                        }
                        if security.as_deref().is_some_and(|s| s == "insecure") {
                            return Err(unsupported("RUN --security=insecure"));
                        }
                    }
                    Command::Add(args) => {
                        let urls = args
                            .sources
                            .iter()
                            .filter(|s| crate::context::is_url(&s.value))
                            .count();
                        if args.checksum.is_some() && (urls != 1 || args.sources.len() != 1) {
                            return Err(BuildError::Instruction {
                                at: self.opts.at(instruction),
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
        let warmed = self
            .layers
            .warm()
            .and_then(|(dir, ttl)| dir.image(&reference, platform, ttl));
        let r = match warmed {
            Some(r) => {
                self.reporter.info(&format!(
                    "{reference} for {platform}: {} from --cache-dir",
                    r.digest
                ));
                r
            }
            None => {
                self.reporter
                    .info(&format!("resolving {reference} for {platform}"));
                self.layers
                    .block_on(self.layers.client().resolve(&reference, platform))
                    .map_err(BuildError::registry(format!(
                        "{at}: pulling base image {reference}"
                    )))?
            }
        };
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
            image: StageImage {
                config,
                layers,
                cache_keys: Vec::new(),
            },
            digest: r.digest,
        })
    }

    /// The final config and manifest of a stage's image.
    fn assemble(&self, mut image: StageImage) -> Result<BuiltImage, BuildError> {
        let created = self.opts.created();
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
        let mut annotations = self.opts.annotations.clone();
        if self.opts.cache.inline && !image.cache_keys.is_empty() {
            annotations.insert(
                crate::cache::inline::ANNOTATION.to_owned(),
                crate::cache::inline::annotation(&image.cache_keys),
            );
        }
        let manifest = kiln_oci::ImageManifest {
            annotations,
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
        self.layers.store_config(&config, &config_descriptor)?;
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
