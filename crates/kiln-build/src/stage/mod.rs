//! One stage being built: its instructions in order, each changing the image config, the tree
//! (through [`StageFs`]) or both. Instructions are handled by family, as BuildKit's Dockerfile
//! converter splits them: [`run`] (RUN), [`copy_add`] (COPY and ADD), [`metadata`] (the config
//! instructions and WORKDIR); this module holds the stage's state and the dispatch.

mod copy_add;
mod metadata;
mod run;

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
    fs: StageFs,
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
        let StageServices {
            layers,
            opts,
            reporter,
            backend,
        } = services;
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
        let ignore = &opts.ignore_paths;
        let fs = if lazy {
            let root = stage_dir.join("rootfs");
            std::fs::create_dir_all(&root).map_err(BuildError::io("creating", &root))?;
            if matches!(stage.base, Base::Image { .. }) {
                reporter.info(&format!(
                    "[{}/{}] stage {label} only adds files: its base layers are not downloaded",
                    position.0, position.1
                ));
            }
            StageFs::dir(root, true, ignore)
        } else if backend == Backend::Overlay {
            let lowers = layers.unpacked_layers(&image.layers)?;
            StageFs::overlay(stage_dir.clone(), lowers, ignore)
        } else {
            let root = stage_dir.join("rootfs");
            if !from_scratch {
                reporter.info(&format!(
                    "[{}/{}] extracting the base of stage {label} ({} layers)",
                    position.0,
                    position.1,
                    image.layers.len()
                ));
            }
            layers.materialize(&image.layers, &root)?;
            StageFs::dir(root, false, ignore)
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
            fs,
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
            run.fs.start_single("--single-snapshot")?;
        }
        // Proxy build args reach RUN without being declared (as in BuildKit).
        for name in kiln_dockerfile::plan::PROXY_ARGS {
            if let Some(v) = opts.build_args.get(name) {
                run.run_env.entry(name.to_owned()).or_insert(v.clone());
            }
        }
        Ok(run)
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
        for (i, instruction) in steps.iter().enumerate() {
            let info = StepInfo {
                stage: self.position,
                stage_name: self.label.clone(),
                step: (i + 1, total),
                text: instruction.command.to_string(),
            };
            self.services.reporter.step_started(&info);
            let started = Instant::now();
            self.step(instruction, &info)?;
            let done = StepDone {
                elapsed: started.elapsed(),
                snapshot: self.fs.take_snapshot_stats(),
            };
            self.services.reporter.step_finished(&info, &done);
        }
        if self.single {
            let at = format!("stage {}", self.label);
            if let Some(layer) = self.fs.finish_single(&self.layer_writer(), &at)? {
                let created = self.services.opts.created();
                self.image.config.push_step(
                    Some(layer.diff_id.clone()),
                    image::history(&created, "kiln --single-snapshot".into()),
                );
                self.image.layers.push(layer);
            }
        }
        let rootfs = self.fs.extracted_root();
        Ok(Finished {
            image: self.image,
            rootfs,
            run_env: self.run_env,
        })
    }

    fn record(&mut self, instruction: &Instruction, layer: Option<Layer>) {
        let created = self.services.opts.created();
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

    /// Runs one instruction: dispatched to its family.
    fn step(&mut self, instruction: &Instruction, info: &StepInfo) -> Result<(), BuildError> {
        match &instruction.command {
            Command::From { .. } => Ok(()),
            Command::Run {
                command, heredocs, ..
            } => {
                let layer = self.run(instruction, command, heredocs, info)?;
                self.record(instruction, layer);
                Ok(())
            }
            Command::Copy(args) | Command::Add(args) => {
                let layer = self.copy(instruction, args)?;
                self.record(instruction, layer);
                Ok(())
            }
            Command::Workdir { path } => self.workdir_instruction(instruction, path),
            _ => self.metadata(instruction),
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
