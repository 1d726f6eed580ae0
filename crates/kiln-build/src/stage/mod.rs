//! One stage being built: its instructions in order, each changing the image config, the tree
//! (through [`StageFs`]) or both. Instructions are handled by family, as BuildKit's Dockerfile
//! converter splits them: [`run`] (RUN), [`copy_add`] (COPY and ADD), [`metadata`] (the config
//! instructions and WORKDIR); this module holds the stage's state and the dispatch.

mod cached;
mod copy_add;
mod metadata;
mod mounts;
mod run;

use crate::cache::{Cache, KeyInputs};
use crate::context::ContextView;
use crate::error::BuildError;
use crate::image::{self, env_pairs, set_env};
use crate::layers::{LayerServices, LayerWriter};
use crate::options::{BuildOptions, Reporter, StepDone, StepInfo};
use crate::snapshotter::StageFs;
use crate::types::{Finished, Layer, Resolved, StageImage};
use kiln_dockerfile::instructions::{Command, Instruction};
use kiln_dockerfile::{Base, Plan, PlannedStage};
use kiln_oci::{ImageConfig, Platform};
use kiln_sandbox::backend::Backend;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a stage is given to work with (the engine's, lent for the stage's run).
#[derive(Clone, Copy)]
pub(crate) struct StageServices<'a> {
    pub(crate) layers: &'a LayerServices,
    pub(crate) cache: &'a Cache,
    pub(crate) opts: &'a BuildOptions,
    pub(crate) reporter: &'a dyn Reporter,
    pub(crate) backend: Backend,
}

/// One stage being built.
pub(crate) struct StageRun<'a> {
    services: StageServices<'a>,
    stage: &'a PlannedStage,
    label: String,
    position: (usize, usize),
    resolved: &'a HashMap<String, Resolved>,
    finished: &'a Mutex<HashMap<usize, Arc<Finished>>>,
    context: &'a ContextView,
    /// Stage names (lower case) to indexes.
    names: HashMap<String, usize>,
    image: StageImage,
    /// The stage's tree, made when the first step that must run needs it (a stage whose
    /// steps are all found in the cache never has one).
    fs: Option<StageFs>,
    /// The tree holds only what the stage adds (its base is read through listings).
    lazy: bool,
    /// Layers taken from the cache since the tree was made: not in it yet.
    pending: Vec<Layer>,
    /// Trees made so far (an overlay tree is made again to take cached layers).
    trees: usize,
    /// The cache key of the last file-changing step (or the base's description).
    chain: String,
    /// The stage's first miss was explained (later ones follow from it).
    miss_explained: bool,
    /// The key inputs of the steps, computed before the first ran (by step index; `None` for
    /// a step without a key, and missing after a step keyed only once it ran).
    planned_keys: Vec<Option<KeyInputs>>,
    stage_dir: PathBuf,
    /// The environment RUN sees, as BuildKit keeps it: the base's, then every ENV and every
    /// ARG with a value in instruction order (the later wins; the image's `Env` gets only the
    /// ENV values). A stage built FROM another starts with that stage's.
    run_env: BTreeMap<String, String>,
    /// Paths this stage declared with VOLUME (made before each later RUN).
    volumes: Vec<String>,
    /// The base's layers (a stage that only adds files reads their listing, never their files).
    base_layers: Vec<Layer>,
    /// Their listing, once read.
    base_listing: Option<kiln_fs::listing::StackListing>,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    /// `--single-snapshot` applies to this stage.
    single: bool,
    platform: Platform,
}

/// Whether a stage must have its base's files (else it only adds files on top, and its base
/// layers are never downloaded): a RUN reads them; a `--chown` COPY names users and makes
/// directories owned by them only where the base lacks them; a WORKDIR under a non-root USER
/// makes its directory owned by that user only where the base lacks it.
fn needs_rootfs(stage: &PlannedStage, base: &ImageConfig) -> bool {
    let non_root = |user: &str| !matches!(user, "" | "root" | "0" | "0:0" | "root:root");
    let mut user_set = base
        .config
        .as_ref()
        .and_then(|c| c.user.as_deref())
        .is_some_and(non_root);
    for instruction in stage.onbuild.iter().chain(&stage.instructions) {
        match &instruction.command {
            Command::Run { .. } => return true,
            Command::Copy(a) | Command::Add(a) if a.chown.is_some() => return true,
            Command::User { user } => user_set = non_root(&user.value),
            Command::Workdir { .. } if user_set => return true,
            _ => {}
        }
    }
    false
}

impl<'a> StageRun<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        services: StageServices<'a>,
        plan: &'a Plan,
        stage: &'a PlannedStage,
        position: (usize, usize),
        resolved: &'a HashMap<String, Resolved>,
        finished: &'a Mutex<HashMap<usize, Arc<Finished>>>,
        context: &'a ContextView,
    ) -> Result<StageRun<'a>, BuildError> {
        let StageServices { layers, opts, .. } = services;
        let label = match &stage.name {
            Some(n) => n.clone(),
            None => format!("#{}", stage.index),
        };
        let platform = opts.stage_platform(stage, plan)?;
        let stage_dir = layers.scratch().join(format!("stage-{}", stage.index));
        let single = opts.single_snapshot && stage.index == plan.target;
        let (mut image, from_scratch, inherited) = match &stage.base {
            Base::Scratch => {
                let mut config = ImageConfig::for_platform(&platform);
                set_env(&mut config, "PATH", kiln_dockerfile::plan::DEFAULT_PATH);
                // BuildKit's empty image works in `/`.
                config.config_mut().working_dir = Some("/".into());
                config.rootfs.kind = "layers".into();
                (
                    StageImage {
                        config,
                        layers: Vec::new(),
                        cache_keys: Vec::new(),
                    },
                    true,
                    None,
                )
            }
            Base::Image { reference } => {
                let r = resolved
                    .get(reference)
                    .expect("base images are resolved before stages run");
                (r.image.clone(), false, None)
            }
            Base::Stage { index, .. } => {
                let done = finished
                    .lock()
                    .expect("no stage thread panics while holding the lock")
                    .get(index)
                    .cloned()
                    .expect("a base stage is built in an earlier wave");
                (done.image.clone(), false, Some(done.run_env.clone()))
            }
        };
        let needs_rootfs = needs_rootfs(stage, &image.config);
        let base_layers = image.layers.clone();
        // BuildKit gives every image a PATH when its base has none.
        if !env_pairs(&image.config).iter().any(|(k, _)| k == "PATH") {
            set_env(
                &mut image.config,
                "PATH",
                kiln_dockerfile::plan::DEFAULT_PATH,
            );
        }
        let run_env = inherited.unwrap_or_else(|| env_pairs(&image.config).into_iter().collect());
        let lazy = !needs_rootfs && !single && !from_scratch;
        let chain = match &stage.base {
            Base::Scratch => "base scratch".to_owned(),
            Base::Image { reference } => {
                let r = resolved
                    .get(reference)
                    .expect("base images are resolved before stages run");
                format!("base image {reference}@{}", r.digest)
            }
            Base::Stage { index, .. } => finished
                .lock()
                .expect("no stage thread panics while holding the lock")
                .get(index)
                .map(|f| f.chain.clone())
                .expect("a base stage is built in an earlier wave"),
        };
        let mut run = StageRun {
            services,
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
            fs: None,
            lazy,
            pending: Vec::new(),
            trees: 0,
            chain,
            miss_explained: false,
            planned_keys: Vec::new(),
            stage_dir,
            run_env,
            volumes: Vec::new(),
            base_layers,
            base_listing: None,
            cmd_set: false,
            single,
            platform,
        };
        if single {
            run.ensure_fs()?;
            run.fs_mut().start_single("--single-snapshot")?;
        }
        // Proxy build args reach RUN without being declared (as in BuildKit).
        for name in kiln_dockerfile::plan::PROXY_ARGS {
            if let Some(v) = opts.build_args.get(name) {
                run.run_env.entry(name.to_owned()).or_insert(v.clone());
            }
        }
        Ok(run)
    }

    /// The stage's tree, once [`StageRun::ensure_fs`] made it.
    fn fs_mut(&mut self) -> &mut StageFs {
        self.fs
            .as_mut()
            .expect("a step that writes the tree calls ensure_fs first")
    }

    /// Makes the stage's tree ready for a step that runs: made from the stage's layers so
    /// far (its base and the steps found in the cache) the first time, and brought up to date
    /// with the layers taken from the cache since.
    fn ensure_fs(&mut self) -> Result<(), BuildError> {
        let StageServices {
            layers,
            opts,
            reporter,
            backend,
            ..
        } = self.services;
        let ignore = &opts.ignore_paths;
        let (position, label) = (self.position, self.label.clone());
        if self.fs.is_some() && self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        if self.lazy {
            // Only the stage's additions are on disk: the base and the cached layers are read
            // through their listing.
            if self.base_layers.len() != self.image.layers.len() {
                self.base_layers = self.image.layers.clone();
                self.base_listing = None;
            }
            if self.fs.is_none() {
                let root = self.stage_dir.join("rootfs");
                std::fs::create_dir_all(&root).map_err(BuildError::io("creating", &root))?;
                if matches!(self.stage.base, Base::Image { .. }) {
                    reporter.info(&format!(
                        "[{}/{}] stage {label} only adds files: its base layers are not downloaded",
                        position.0, position.1
                    ));
                }
                self.fs = Some(StageFs::dir(root, true, ignore));
            }
            return Ok(());
        }
        if backend == Backend::Overlay {
            // Cached layers go on top of the tree as it is (its set-aside `--ignore-path`
            // files stay); a tree that cannot take them is made again.
            if let Some(fs) = &mut self.fs {
                let dirs = layers.unpacked_layers(&pending)?;
                if fs.add_lowers(&dirs) {
                    return Ok(());
                }
            }
            // Lowers are unpacked layers; layers this stage wrote are unpacked already.
            let lowers = layers.unpacked_layers(&self.image.layers)?;
            self.trees += 1;
            let dir = if self.trees == 1 {
                self.stage_dir.clone()
            } else {
                self.stage_dir.join(format!("tree-{}", self.trees))
            };
            self.fs = Some(StageFs::overlay(dir, lowers, ignore));
            return Ok(());
        }
        match &mut self.fs {
            Some(fs) => {
                let root = fs
                    .extracted_root()
                    .expect("a tree that is not lazy is extracted");
                layers.materialize(&pending, &root)?;
                fs.forget_index();
            }
            None => {
                let root = self.stage_dir.join("rootfs");
                if !self.image.layers.is_empty() {
                    reporter.info(&format!(
                        "[{}/{}] extracting the base of stage {label} ({} layers)",
                        position.0,
                        position.1,
                        self.image.layers.len()
                    ));
                }
                layers.materialize(&self.image.layers, &root)?;
                self.fs = Some(StageFs::dir(root, false, ignore));
            }
        }
        Ok(())
    }

    /// Writes this stage's layers into the store.
    fn layer_writer(&self) -> LayerWriter<'a> {
        LayerWriter {
            layers: self.services.layers,
            opts: self.services.opts,
        }
    }

    fn at(&self, instruction: &Instruction) -> String {
        self.services.opts.at(instruction)
    }

    fn workdir_or_root(&self) -> String {
        image::working_dir(&self.image.config)
    }

    pub(crate) fn execute(mut self) -> Result<Finished, BuildError> {
        let stage = self.stage;
        let steps: Vec<&Instruction> = stage.onbuild.iter().chain(&stage.instructions).collect();
        let total = steps.len();
        // Triggers run once: the new image does not inherit them.
        if let Some(c) = self.image.config.config.as_mut() {
            c.on_build = None;
        }
        self.plan_keys(&steps);
        for (i, instruction) in steps.iter().enumerate() {
            let info = StepInfo {
                stage: self.position,
                stage_name: self.label.clone(),
                step: (i + 1, total),
                text: self.shown(instruction),
            };
            if kiln_sandbox::stop::stopping() {
                return Err(BuildError::Stopped {
                    at: format!("stage {}, step {}/{total}", self.label, i + 1),
                });
            }
            self.services.reporter.step_started(&info);
            let started = Instant::now();
            let cached = self.cached_or_run(instruction, &info, i + 1)?;
            let snapshot = match (&cached, &mut self.fs) {
                (None, Some(fs)) => fs.take_snapshot_stats(),
                _ => None,
            };
            let done = StepDone {
                elapsed: started.elapsed(),
                snapshot,
                cached,
            };
            self.services.reporter.step_finished(&info, &done);
        }
        if self.single {
            let at = format!("stage {}", self.label);
            let writer = self.layer_writer();
            if let Some(layer) = self.fs_mut().finish_single(&writer, &at)? {
                let created = self.services.opts.created();
                self.image.config.push_step(
                    Some(layer.diff_id.clone()),
                    image::history(&created, "kiln --single-snapshot".into()),
                );
                self.image.layers.push(layer);
            }
        }
        // A tree missing the cached layers taken after its last step is not the stage's.
        let rootfs = match &self.fs {
            Some(fs) if self.pending.is_empty() => fs.extracted_root(),
            _ => None,
        };
        Ok(Finished {
            image: self.image,
            rootfs,
            run_env: self.run_env,
            chain: self.chain,
        })
    }

    /// An instruction as logs and the image's history show it. An ARG shows the value only when
    /// it is the Dockerfile's own default: a `--build-arg` value (a token, a URL with a
    /// password) is never printed nor written into the image, as BuildKit keeps it out.
    fn shown(&self, instruction: &Instruction) -> String {
        let Command::Arg { args } = &instruction.command else {
            return instruction.command.to_string();
        };
        let line = instruction.span.start.line;
        let shown = args
            .iter()
            .map(|decl| {
                let from_dockerfile = self.stage.args.iter().any(|a| {
                    a.name == decl.name
                        && a.line == line
                        && a.source == kiln_dockerfile::plan::ArgSource::Default
                });
                kiln_dockerfile::instructions::ArgDecl {
                    name: decl.name.clone(),
                    default: decl.default.clone().filter(|_| from_dockerfile),
                }
            })
            .collect();
        Command::Arg { args: shown }.to_string()
    }

    fn record(&mut self, instruction: &Instruction, layer: Option<Layer>) {
        let created = self.services.opts.created();
        let history = image::history(&created, self.shown(instruction));
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

    /// Runs one instruction, dispatched to its family. A step that changes files returns its
    /// layer (none when nothing changed) for the caller to record; the others record
    /// themselves and return `None`.
    fn step(
        &mut self,
        instruction: &Instruction,
        info: &StepInfo,
    ) -> Result<Option<Option<Layer>>, BuildError> {
        match &instruction.command {
            Command::From { .. } => Ok(None),
            Command::Run {
                command,
                heredocs,
                mounts,
                network,
                ..
            } => self
                .run(
                    instruction,
                    command,
                    heredocs,
                    mounts,
                    network.as_deref(),
                    info,
                )
                .map(Some),
            Command::Copy(args) | Command::Add(args) => self.copy(instruction, args).map(Some),
            Command::Workdir { path } => self.workdir_instruction(instruction, path).map(Some),
            _ => self.metadata(instruction).map(|()| None),
        }
    }

    /// A COPY destination (no trailing slash) of a stage without its base's files, as the
    /// base's layers resolve it: symlinks followed in every component, and a trailing `/` when
    /// it is a directory.
    fn through_base(
        &mut self,
        dest: &str,
        at: &str,
        keyword: &'static str,
    ) -> Result<String, BuildError> {
        use kiln_fs::listing::PathKind;
        if self.base_layers.is_empty() {
            return Ok(dest.to_owned());
        }
        self.load_base_listing(at, keyword)?;
        let listing = self.base_listing.as_ref().expect("listed above");
        let path = listing.resolve(dest).map_err(|e| BuildError::Instruction {
            at: at.to_owned(),
            keyword,
            message: e.to_string(),
        })?;
        Ok(match listing.kind(&path) {
            Some(PathKind::Dir) => format!("{path}/"),
            _ => path,
        })
    }

    /// Reads the listing of the base's layers (downloading them, never extracting), once.
    fn load_base_listing(&mut self, at: &str, keyword: &'static str) -> Result<(), BuildError> {
        if self.base_listing.is_some() {
            return Ok(());
        }
        let mut listing = kiln_fs::listing::StackListing::default();
        for layer in &self.base_layers {
            if kiln_oci::media_type::is_foreign(&layer.descriptor.media_type) {
                continue;
            }
            let store = self.services.layers.store();
            let digest = &layer.descriptor.digest;
            // A listing kept from an earlier build needs no blob; else the blob is fetched.
            let entries = match store.layer_entries(digest) {
                Err(kiln_fs::store::StoreError::BlobNotFound { .. }) => {
                    self.services.layers.ensure_blob(layer)?;
                    store.layer_entries(digest)
                }
                other => other,
            };
            let entries = entries.map_err(|e| BuildError::Instruction {
                at: at.to_owned(),
                keyword,
                message: format!("listing the base layer {}: {e}", layer.descriptor.digest),
            })?;
            listing.add(&entries);
        }
        self.base_listing = Some(listing);
        Ok(())
    }

    fn user(&self) -> Option<String> {
        self.image
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .filter(|u| !u.is_empty())
    }
}
