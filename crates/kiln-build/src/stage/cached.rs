//! The build cache in a stage: each file-changing step (RUN, COPY, ADD, WORKDIR) gets a key
//! from its inputs before it runs; a key found in the cache gives the step's layer without
//! running it (and without the stage's tree: a stage whose steps are all cached never
//! unpacks anything). The inputs of each kind of step are listed in `docs/cache.md`.

use super::StageRun;
use crate::cache::{add_context_files, instruction_text, site, KeyInputs, StepKind};
use crate::error::BuildError;
use crate::image;
use crate::options::StepInfo;
use crate::types::Layer;
use kiln_dockerfile::instructions::{Command, Instruction};
use kiln_dockerfile::mount::MountType;
use kiln_fs::compress::Encoding;

/// The cache's name for a step kind; `None` for a step that changes no file.
fn step_kind(command: &Command) -> Option<StepKind> {
    match command {
        Command::Run { .. } | Command::Workdir { .. } => Some(StepKind::Run),
        Command::Copy(_) | Command::Add(_) => Some(StepKind::Copy),
        _ => None,
    }
}

/// What of the layer options changes a layer's bytes (not the compressor's thread count).
fn layer_format(options: &kiln_fs::layer::LayerOptions) -> String {
    let encoding = match options.encoding {
        Encoding::None => "tar".to_owned(),
        Encoding::Gzip { level, .. } => format!("gzip {level}"),
        Encoding::Zstd { level, .. } => format!("zstd {level}"),
        other => format!("{other:?}"),
    };
    format!(
        "{encoding}; mtimes {:?}; xattrs {:?}; parents omitted {}",
        options.reproducible_mtime, options.xattrs, options.omit_parent_entries
    )
}

impl StageRun<'_> {
    /// Runs one instruction, or takes its result from the build cache; returns where it came
    /// from when it was cached.
    pub(super) fn cached_or_run(
        &mut self,
        instruction: &Instruction,
        info: &StepInfo,
        number: usize,
    ) -> Result<Option<String>, BuildError> {
        let Some(kind) = step_kind(&instruction.command) else {
            self.step(instruction, info)?;
            return Ok(None);
        };
        let services = self.services;
        let keyed = match self.planned_keys.get_mut(number - 1).and_then(Option::take) {
            Some(inputs) => Some(inputs),
            None if self.single => None,
            None => self.key_inputs(instruction)?,
        };
        let site = site(&services.opts.dockerfile_name, &self.label, number);
        if let Some(inputs) = &keyed {
            let key = inputs.key();
            if let Some(hit) = services
                .cache
                .lookup(services.layers, services.reporter, &key, kind)
            {
                tracing::debug!(key, from = %hit.from, "{}: cache hit", self.at(instruction));
                let made = hit.layer.is_some();
                self.take_cached(instruction, hit.layer);
                self.note_key(&key, made);
                self.chain = key;
                return Ok(Some(hit.from));
            }
            if !self.miss_explained && services.cache.takes_steps() {
                self.miss_explained = true;
                if let Some(why) =
                    services
                        .cache
                        .explain_miss(services.layers, &site, &key, inputs, kind)
                {
                    services.reporter.info(&format!(
                        "[{}/{}] STEP {}/{}: not in the cache: {why}",
                        info.stage.0, info.stage.1, info.step.0, info.step.1
                    ));
                }
            }
        }
        self.ensure_fs()?;
        let layer = self
            .step(instruction, info)?
            .expect("a file-changing step returns its layer");
        match keyed {
            Some(inputs) => {
                let key = inputs.key();
                services.cache.store(
                    services.layers,
                    &key,
                    &site,
                    &inputs,
                    layer.as_ref(),
                    kind,
                    &self.platform,
                );
                self.chain = key;
            }
            None => {
                // Keyed after the fact (an ADD of a URL without --checksum, a git source,
                // --single-snapshot): later steps chain to what this one made.
                let mut inputs = KeyInputs::after(&self.chain);
                inputs.add("instruction", instruction_text(&instruction.command));
                inputs.add(
                    "result",
                    layer
                        .as_ref()
                        .map_or("none".into(), |l| l.diff_id.to_string()),
                );
                self.chain = inputs.key();
            }
        }
        let made = layer.is_some();
        self.record(instruction, layer);
        let chain = self.chain.clone();
        self.note_key(&chain, made);
        Ok(None)
    }

    /// Notes the key of the step just recorded, with its layer's index when it made one.
    fn note_key(&mut self, key: &str, made_layer: bool) {
        let index = made_layer.then(|| self.image.layers.len() - 1);
        self.image.cache_keys.push((key.to_owned(), index));
    }

    /// Computes the keys of the stage's steps before any runs (the config instructions are
    /// applied on the way and undone after) and has the cache look them all up at once. Keys
    /// chain through inputs, never through results, so each is known without running the steps
    /// before it; the walk stops at a step keyed only after it ran (an ADD of a URL without
    /// `--checksum`).
    pub(super) fn plan_keys(&mut self, steps: &[&Instruction]) {
        if self.single {
            return;
        }
        let saved = (
            self.image.clone(),
            self.run_env.clone(),
            self.volumes.clone(),
            self.cmd_set,
            self.chain.clone(),
        );
        let mut planned = Vec::new();
        let mut lookups = Vec::new();
        for instruction in steps {
            let Some(kind) = step_kind(&instruction.command) else {
                if self.metadata(instruction).is_err() {
                    break;
                }
                planned.push(None);
                continue;
            };
            let Ok(Some(inputs)) = self.key_inputs(instruction) else {
                break;
            };
            if let Command::Workdir { path } = &instruction.command {
                let dir = self.workdir_target(&path.value);
                self.image.config.config_mut().working_dir = Some(dir);
            }
            let key = inputs.key();
            lookups.push((key.clone(), kind));
            self.chain = key;
            planned.push(Some(inputs));
        }
        (
            self.image,
            self.run_env,
            self.volumes,
            self.cmd_set,
            self.chain,
        ) = saved;
        self.planned_keys = planned;
        let services = self.services;
        services.cache.prefetch(services.layers, &lookups);
    }

    /// A cached step's result: its layer (kept aside until a later step needs the tree) and,
    /// for WORKDIR, the config change it makes.
    fn take_cached(&mut self, instruction: &Instruction, layer: Option<Layer>) {
        if let Command::Workdir { path } = &instruction.command {
            let dir = self.workdir_target(&path.value);
            self.image.config.config_mut().working_dir = Some(dir);
        }
        if let (Some(layer), Some(_)) = (&layer, &self.fs) {
            self.pending.push(layer.clone());
        }
        self.record(instruction, layer);
    }

    /// The inputs of a file-changing step's key; `None` when they are only known once it ran.
    fn key_inputs(&self, instruction: &Instruction) -> Result<Option<KeyInputs>, BuildError> {
        let opts = self.services.opts;
        let mut inputs = KeyInputs::after(&self.chain);
        inputs.add("instruction", instruction_text(&instruction.command));
        inputs.add("platform", self.platform.to_string());
        inputs.add("layer format", layer_format(&opts.layer_options(self.lazy)));
        // --ignore-path keeps paths out of layers: another set, other layers.
        let mut ignored = opts.ignore_paths.clone();
        ignored.sort();
        inputs.add("ignored paths", ignored.join("\n"));
        // Backends cut layers their own way (an upper dir, a stat diff): equal trees, not
        // always equal bytes.
        inputs.add("backend", format!("{:?}", self.services.backend));
        inputs.add("workdir", self.workdir_or_root());
        match &instruction.command {
            Command::Run { mounts, .. } => {
                // What a bind mount shows is an input, as COPY's sources are (BuildKit keys
                // it by content); a cache's content never is, nor a secret's value.
                for mount in mounts {
                    let reads = mount.kind == MountType::Bind
                        || (mount.kind == MountType::Cache && mount.from.is_some());
                    if !reads {
                        continue;
                    }
                    let source = kiln_oci::path::clean(mount.source.as_deref().unwrap_or("/"));
                    match &mount.from {
                        Some(from) => inputs.add(
                            format!("mount from {from} {source}"),
                            self.source_identity(from, false),
                        ),
                        None => {
                            let rel = source.trim_start_matches('/');
                            let rel = if rel.is_empty() { "." } else { rel };
                            add_context_files(&mut inputs, self.context, &[rel.to_owned()])?
                        }
                    }
                }
                let shell = image::shell(&self.image.config);
                inputs.add("shell", serde_json::to_string(&shell).unwrap_or_default());
                inputs.add("user", self.user().unwrap_or_default());
                inputs.add("volumes", self.volumes.join("\n"));
                for (name, value) in &self.run_env {
                    // As BuildKit: the proxy variables reach RUN but never change a key.
                    if kiln_dockerfile::plan::PROXY_ARGS.contains(&name.as_str()) {
                        continue;
                    }
                    inputs.add(
                        format!("var {name}"),
                        crate::cache::recorded_value(name, value),
                    );
                }
            }
            Command::Workdir { .. } => inputs.add("user", self.user().unwrap_or_default()),
            Command::Copy(args) | Command::Add(args) => {
                let is_add = instruction.keyword() == "ADD";
                let mut local = Vec::new();
                for source in &args.sources {
                    let remote = crate::context::is_url(&source.value);
                    let git = crate::context::is_git_url(&source.value);
                    if is_add && (git || (remote && args.checksum.is_none())) {
                        return Ok(None);
                    }
                    if !(is_add && (remote || git)) {
                        local.push(source.value.clone());
                    }
                }
                match &args.from {
                    Some(from) => inputs.add("from", self.source_identity(&from.value, true)),
                    None => add_context_files(&mut inputs, self.context, &local)?,
                }
            }
            _ => return Ok(None),
        }
        Ok(Some(inputs))
    }

    /// What `COPY --from=X` (or a mount's `from=`) reads, as a key input: the stage's last key
    /// or the image's digest. `by_index`: a number names a stage (COPY only).
    pub(super) fn source_identity(&self, from: &str, by_index: bool) -> String {
        let stage_index = from
            .parse::<usize>()
            .ok()
            .filter(|_| by_index)
            .or_else(|| self.names.get(&from.to_ascii_lowercase()).copied())
            .filter(|i| self.stage.depends_on.contains(i));
        if let Some(index) = stage_index {
            if let Some(done) = self
                .finished
                .lock()
                .expect("no stage thread panics while holding the lock")
                .get(&index)
            {
                return format!("stage {}", done.chain);
            }
        }
        match self.resolved.get(from) {
            Some(r) => format!("image {from}@{}", r.digest),
            None => format!("unknown {from}"),
        }
    }
}
