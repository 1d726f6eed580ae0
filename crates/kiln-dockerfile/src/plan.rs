//! From a typed Dockerfile and build options to a build plan: ARG scoping, FROM expansion,
//! stage references resolved (stage or image), the dependency graph, `--target` pruning and
//! each needed stage's instructions expanded with what is known before any image is pulled.

use crate::dockerfile::{Dockerfile, Stage};
use crate::error::{suggest, Error, ErrorKind, Located, Warning};
use crate::expand::Expander;
use crate::instructions::{Command, Instruction, Word};
use crate::parser::Directives;
use crate::reference::check_image_reference;
use crate::span::{Pos, Span};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

pub use kiln_oci::Platform;

/// The automatic platform ARGs with `prefix` `TARGET` or `BUILD` (`TARGETPLATFORM`,
/// `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`).
fn platform_args(platform: &Platform, prefix: &str) -> [(String, String); 4] {
    [
        (format!("{prefix}PLATFORM"), platform.to_string()),
        (format!("{prefix}OS"), platform.os.clone()),
        (format!("{prefix}ARCH"), platform.architecture.clone()),
        (
            format!("{prefix}VARIANT"),
            platform.variant.clone().unwrap_or_default(),
        ),
    ]
}

/// The PATH a stage gets when its base image sets none (BuildKit's and docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build args every Dockerfile may use without declaring them; kept out of image history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What the planner needs besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (default: the last).
    pub target: Option<String>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// The platform the image is for.
    pub target_platform: Platform,
    /// What the builder knows of base images, by the reference as the plan names it
    /// ([`Base::Image`]): their ENV (so expansion sees it, as BuildKit's does) and ONBUILD
    /// triggers (they run first in the stage). Images not listed keep references to
    /// variables they might set as written.
    pub base_images: BTreeMap<String, BaseImage>,
    /// Build every stage up to the target, not only those it needs (kaniko's default,
    /// `--skip-unused-stages=false`): a `test` stage nothing copies from still runs.
    pub all_stages: bool,
}

/// A base image's config, as far as planning needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    /// Its `Env`, as `NAME=value` pairs split.
    pub env: Vec<(String, String)>,
    /// Its `OnBuild` triggers, as stored in the config.
    pub onbuild: Vec<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            build_platform: Platform::host(),
            target_platform: Platform::host(),
            base_images: BTreeMap::new(),
            all_stages: false,
        }
    }
}

/// Where an ARG's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArgSource {
    /// `--build-arg`.
    BuildArg,
    /// The default after `=`.
    Default,
    /// The global ARG of the same name (declared before the first FROM).
    Global,
    /// An automatic platform ARG (TARGETPLATFORM, BUILDARCH, …).
    Platform,
    /// Declared without a value in a stage built `FROM` another stage that has it: the
    /// parent stage's value (BuildKit's rule).
    Stage,
    /// Declared without a value and none given: unset.
    Unset,
}

/// An ARG as resolved for the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgValue {
    /// The name.
    pub name: String,
    /// The value, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value came from.
    pub source: ArgSource,
    /// The ARG instruction's line.
    pub line: usize,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Base {
    /// `FROM scratch`: an empty filesystem and config.
    Scratch,
    /// A registry image.
    Image {
        /// The reference as written after expansion (normalised later by the registry client).
        reference: String,
    },
    /// An earlier stage of this Dockerfile.
    Stage {
        /// Its index.
        index: usize,
        /// Its name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

/// Another stage or an image that a stage reads files from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// An earlier stage.
    Stage {
        /// Its index.
        index: usize,
    },
    /// An image (`COPY --from=nginx:1.25`).
    Image {
        /// The reference.
        reference: String,
    },
}

/// A stage in the plan, expanded as far as is known before images are pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStage {
    /// Position in the file (what `--from=N` means).
    pub index: usize,
    /// Name after AS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it starts from.
    pub base: Base,
    /// The FROM image word as written, before expansion.
    pub base_written: String,
    /// `FROM --platform=` after expansion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// FROM to the end of the stage.
    pub span: Span,
    /// Stages this one needs built first (base and `--from` sources), sorted.
    pub depends_on: Vec<usize>,
    /// Images read by `COPY --from=image` or `RUN --mount=from=image`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// ARGs declared in the stage, with their values.
    pub args: Vec<ArgValue>,
    /// Variables the stage's expansions referenced, its FROM line's included (sorted).
    pub uses: Vec<String>,
    /// Variables referenced but unknown before the build: unset, or perhaps set by the base
    /// image's ENV (kept as written in `instructions`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
    /// The ONBUILD triggers of the base stage, expanded: they run first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub onbuild: Vec<Instruction>,
    /// The instructions after FROM, expanded.
    pub instructions: Vec<Instruction>,
}

/// A stage `--target` made unnecessary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedStage {
    /// Its index.
    pub index: usize,
    /// Its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The plan of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The Dockerfile's name.
    pub file: String,
    /// Parser directives.
    pub directives: Directives,
    /// The platform the build runs on.
    pub build_platform: String,
    /// The platform of the image.
    pub target_platform: String,
    /// Index of the stage whose image is the result.
    pub target: usize,
    /// Global ARGs (before the first FROM) with their values.
    pub global_args: Vec<ArgValue>,
    /// Names of the proxy build args given (values withheld: they may hold credentials).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub proxy_args: Vec<String>,
    /// Stages to build, in file order.
    pub stages: Vec<PlannedStage>,
    /// Stages the target does not need.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_stages: Vec<SkippedStage>,
    /// Stages grouped in waves: every stage of a wave depends only on earlier waves, so a wave's
    /// stages can be built in parallel.
    pub build_order: Vec<Vec<usize>>,
    /// Warnings (parse-time and plan-time).
    pub warnings: Vec<Warning>,
}

/// A simple ordered environment: the variables visible to expansion at a point of a stage.
#[derive(Debug, Clone, Default)]
struct Env {
    vars: BTreeMap<String, String>,
    /// True when the stage's base image may define variables kiln cannot see yet.
    base_unknown: bool,
}

impl crate::shell::EnvGetter for Env {
    fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
}

/// The global ARGs (by name, `None` when declared without a value) as expansion sees them: a
/// view of the planner's map, not a copy (a copy per ARG made thousands of global ARGs
/// quadratic).
struct MetaEnv<'a>(&'a BTreeMap<String, Option<String>>);

impl crate::shell::EnvGetter for MetaEnv<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().flatten()
    }
}

/// Plans a build of `dockerfile` with `options`.
pub fn plan(dockerfile: &Dockerfile, options: &PlanOptions) -> Result<Plan, Error> {
    Planner::new(dockerfile, options)
        .run()
        .map_err(|e| e.into_error(&dockerfile.file))
}

struct Planner<'a> {
    df: &'a Dockerfile,
    options: &'a PlanOptions,
    escape: char,
    warnings: Vec<Warning>,
    /// Global ARG values by name (platform args included), for FROM lines and stage ARGs.
    meta: BTreeMap<String, Option<String>>,
    consumed: BTreeSet<String>,
}

impl<'a> Planner<'a> {
    fn new(df: &'a Dockerfile, options: &'a PlanOptions) -> Self {
        Planner {
            df,
            options,
            escape: df.directives.escape,
            warnings: df.warnings.clone(),
            meta: BTreeMap::new(),
            consumed: BTreeSet::new(),
        }
    }

    fn run(mut self) -> Result<Plan, Located> {
        let global_args = self.global_args()?;
        let mut bases = Vec::with_capacity(self.df.stages.len());
        let mut platforms = Vec::with_capacity(self.df.stages.len());
        let mut from_uses = Vec::with_capacity(self.df.stages.len());
        for stage in &self.df.stages {
            let (base, platform, uses) = self.resolve_from(stage)?;
            bases.push(base);
            platforms.push(platform);
            from_uses.push(uses);
        }
        let mut deps: Vec<(BTreeSet<usize>, Vec<String>)> =
            Vec::with_capacity(self.df.stages.len());
        for (stage, base) in self.df.stages.iter().zip(&bases) {
            let mut stage_deps = BTreeSet::new();
            let mut images = Vec::new();
            if let Base::Stage { index, .. } = base {
                stage_deps.insert(*index);
            }
            for source in self.sources(stage, base)? {
                match source {
                    Source::Stage { index } => {
                        stage_deps.insert(index);
                    }
                    Source::Image { reference } => {
                        if !images.contains(&reference) {
                            images.push(reference)
                        }
                    }
                }
            }
            deps.push((stage_deps, images));
        }
        let target = self.target()?;
        let mut needed = BTreeSet::new();
        let mut stack = if self.options.all_stages {
            (0..=target).collect()
        } else {
            vec![target]
        };
        while let Some(i) = stack.pop() {
            if needed.insert(i) {
                stack.extend(deps[i].0.iter().copied());
            }
        }
        let mut planned: Vec<PlannedStage> = Vec::with_capacity(needed.len());
        let mut final_envs: BTreeMap<usize, Env> = BTreeMap::new();
        // The ARG values each stage ends with: a stage built FROM it starts with them.
        let mut final_args: BTreeMap<usize, BTreeMap<String, String>> = BTreeMap::new();
        for &i in &needed {
            let stage = &self.df.stages[i];
            let env = match &bases[i] {
                // BuildKit gives every stage a PATH when its image has none.
                Base::Scratch => Env {
                    vars: BTreeMap::from([("PATH".to_string(), DEFAULT_PATH.to_string())]),
                    base_unknown: false,
                },
                Base::Image { reference } => match self.options.base_images.get(reference) {
                    Some(image) => {
                        let mut vars: BTreeMap<String, String> =
                            image.env.iter().cloned().collect();
                        // As for scratch: an image without PATH gets BuildKit's default.
                        vars.entry("PATH".to_string())
                            .or_insert_with(|| DEFAULT_PATH.to_string());
                        Env {
                            vars,
                            base_unknown: false,
                        }
                    }
                    None => Env {
                        vars: BTreeMap::new(),
                        base_unknown: true,
                    },
                },
                Base::Stage { index, .. } => final_envs.get(index).cloned().unwrap_or_default(),
            };
            let mut args = match &bases[i] {
                Base::Stage { index, .. } => final_args.get(index).cloned().unwrap_or_default(),
                _ => BTreeMap::new(),
            };
            let (planned_stage, env) = self.stage(
                stage,
                bases[i].clone(),
                platforms[i].clone(),
                &deps[i],
                env,
                &args,
            )?;
            for arg in &planned_stage.args {
                if let Some(value) = &arg.value {
                    args.insert(arg.name.clone(), value.clone());
                }
            }
            final_args.insert(i, args);
            final_envs.insert(i, env);
            planned.push(planned_stage);
        }
        self.unused_build_args();
        let build_order = waves(&needed, &deps);
        let skipped_stages = self
            .df
            .stages
            .iter()
            .filter(|s| !needed.contains(&s.index))
            .map(|s| SkippedStage {
                index: s.index,
                name: s.name.clone(),
            })
            .collect();
        let proxy_args = PROXY_ARGS
            .iter()
            .filter(|a| self.options.build_args.contains_key(**a))
            .map(|a| a.to_string())
            .collect();
        Ok(Plan {
            file: self.df.file.clone(),
            directives: self.df.directives.clone(),
            build_platform: self.options.build_platform.to_string(),
            target_platform: self.options.target_platform.to_string(),
            target,
            global_args,
            proxy_args,
            stages: planned,
            skipped_stages,
            build_order,
            warnings: self.warnings,
        })
    }

    /// Global ARGs, each default expanded with the platform args and the global ARGs before it.
    fn global_args(&mut self) -> Result<Vec<ArgValue>, Located> {
        for (k, v) in platform_args(&self.options.target_platform, "TARGET")
            .into_iter()
            .chain(platform_args(&self.options.build_platform, "BUILD"))
        {
            // --build-arg TARGETARCH=… overrides the automatic value (BuildKit's defaultArgs).
            let v = self.options.build_args.get(&k).cloned().unwrap_or(v);
            self.meta.insert(k, Some(v));
        }
        let mut values = Vec::new();
        for instruction in &self.df.global_args {
            let Command::Arg { args } = &instruction.command else {
                continue;
            };
            for decl in args {
                self.consumed.insert(decl.name.clone());
                let (value, source) = if let Some(v) = self.options.build_args.get(&decl.name) {
                    (Some(v.clone()), ArgSource::BuildArg)
                } else if let Some(default) = &decl.default {
                    let env = MetaEnv(&self.meta);
                    let mut expander = Expander::new(self.escape, &env, false);
                    (
                        Some(expander.word(default, "ARG")?.value),
                        ArgSource::Default,
                    )
                } else if let Some(Some(earlier)) = self.meta.get(&decl.name) {
                    // Re-declaring a global ARG without a value keeps its value.
                    let source = if is_platform_arg(&decl.name) {
                        ArgSource::Platform
                    } else {
                        ArgSource::Global
                    };
                    (Some(earlier.clone()), source)
                } else {
                    (None, ArgSource::Unset)
                };
                self.meta.insert(decl.name.clone(), value.clone());
                values.push(ArgValue {
                    name: decl.name.clone(),
                    value,
                    source,
                    line: instruction.span.start.line,
                });
            }
        }
        Ok(values)
    }

    /// Expands FROM's image and platform with the global ARGs and classifies the base.
    fn resolve_from(
        &mut self,
        stage: &Stage,
    ) -> Result<(Base, Option<String>, BTreeSet<String>), Located> {
        let Command::From {
            image, platform, ..
        } = &stage.from.command
        else {
            unreachable!("a stage starts with FROM");
        };
        let env = MetaEnv(&self.meta);
        let mut expander = Expander::new(self.escape, &env, false);
        let name = expander.word(image, "FROM")?;
        let platform = platform
            .as_ref()
            .map(|p| expander.word(p, "FROM"))
            .transpose()?;
        for unset in &expander.unset {
            self.warnings.push(Warning {
                pos: stage.from.span.start,
                rule: "UndefinedArgInFrom",
                message: format!(
                    "FROM uses ${unset}, which is not a global ARG (declare `ARG {unset}` before the first FROM)"
                ),
            });
        }
        if name.value.is_empty() {
            return Err(Located::new(
                image.pos,
                Some("FROM"),
                ErrorKind::Stage(format!("base name ({}) should not be blank", image.value)),
            ));
        }
        let platform = match platform {
            Some(p) => Some(
                Platform::parse_flag(&p.value)
                    .map_err(|e| {
                        let reason = match e {
                            kiln_oci::Error::InvalidPlatform { reason, .. } => reason.to_string(),
                            other => other.to_string(),
                        };
                        Located::new(
                            p.pos,
                            Some("FROM"),
                            ErrorKind::InvalidFlagValue {
                                flag: "platform".into(),
                                value: p.value.clone(),
                                reason,
                            },
                        )
                    })?
                    .to_string(),
            ),
            None => None,
        };
        let base = if name.value == "scratch" {
            Base::Scratch
        } else {
            match self.stage_by_name(&name.value, stage.index, Reference::From, image.pos)? {
                Some(index) => Base::Stage {
                    index,
                    name: self.df.stages[index].name.clone(),
                },
                None => {
                    check_image_reference(&name.value).map_err(|reason| {
                        Located::new(
                            image.pos,
                            Some("FROM"),
                            ErrorKind::Stage(format!(
                                "invalid base image {:?}: {reason}",
                                name.value
                            )),
                        )
                    })?;
                    Base::Image {
                        reference: name.value,
                    }
                }
            }
        };
        Ok((base, platform, expander.used))
    }

    /// Looks a name up among the stages (case-insensitively): `Some(index)` for an earlier
    /// stage; `None` when it names no stage (an image), or names the current stage in FROM
    /// (`FROM nginx AS nginx` uses the image, as in BuildKit); an error for a later stage.
    fn stage_by_name(
        &self,
        name: &str,
        current: usize,
        reference: Reference,
        pos: Pos,
    ) -> Result<Option<usize>, Located> {
        let lower = name.to_ascii_lowercase();
        let Some(found) = self
            .df
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        else {
            return Ok(None);
        };
        let current_stage = &self.df.stages[current];
        let err = |message: String| {
            Located::new(pos, Some(reference.keyword()), ErrorKind::Stage(message))
        };
        match (found.index.cmp(&current), reference) {
            (std::cmp::Ordering::Less, _) => Ok(Some(found.index)),
            (std::cmp::Ordering::Equal, Reference::From) => Ok(None),
            (std::cmp::Ordering::Equal, _) => Err(err(format!(
                "circular dependency detected on stage {lower:?}: a stage cannot read its own files"
            ))),
            (std::cmp::Ordering::Greater, Reference::From) => Err(err(format!(
                "stage {lower:?} is defined later (line {}): a stage can only be based on stages defined before it",
                found.from.span.start.line
            ))),
            (std::cmp::Ordering::Greater, _) => Err(err(format!(
                "cannot copy from stage {lower:?}, it needs to be defined before current stage {:?} (it is at line {})",
                current_stage.label(),
                found.from.span.start.line
            ))),
        }
    }

    /// The ONBUILD triggers a stage runs first: those of its base when the base is a stage.
    fn triggers(&self, base: &Base) -> Result<Vec<Instruction>, Located> {
        let index = match base {
            Base::Stage { index, .. } => index,
            Base::Image { reference } => return self.image_triggers(reference),
            Base::Scratch => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for instruction in &self.df.stages[*index].instructions {
            if let Command::Onbuild { trigger, error, .. } = &instruction.command {
                match (trigger, error) {
                    (Some(trigger), _) => out.push((**trigger).clone()),
                    (None, error) => {
                        return Err(Located::new(
                            instruction.span.start,
                            Some("ONBUILD"),
                            ErrorKind::Syntax(format!(
                                "trigger of the base stage cannot run: {}",
                                error.as_deref().unwrap_or("invalid trigger")
                            )),
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    /// The ONBUILD triggers stored in a base image's config, parsed as Dockerfile lines. They
    /// carry no position of their own in this file: errors name the image.
    fn image_triggers(&self, reference: &str) -> Result<Vec<Instruction>, Located> {
        let Some(image) = self.options.base_images.get(reference) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(image.onbuild.len());
        for trigger in &image.onbuild {
            let bad = |why: String| {
                Located::new(
                    Pos { line: 0, column: 0 },
                    Some("ONBUILD"),
                    ErrorKind::Syntax(format!(
                        "ONBUILD trigger {trigger:?} of base image {reference} cannot run: {why}"
                    )),
                )
            };
            let text = format!("FROM scratch\n{trigger}\n");
            let parsed = Dockerfile::parse(&text, reference).map_err(|e| bad(e.to_string()))?;
            let Some(instruction) = parsed.stages.first().and_then(|s| s.instructions.first())
            else {
                return Err(bad("it is empty".into()));
            };
            if matches!(
                instruction.command,
                Command::From { .. } | Command::Onbuild { .. }
            ) {
                return Err(bad("FROM and ONBUILD are not allowed as triggers".into()));
            }
            // The trigger was written in another Dockerfile: no position here.
            let mut instruction = instruction.clone();
            instruction.span = Span::default();
            out.push(instruction);
        }
        Ok(out)
    }

    /// Stages and images a stage reads with `COPY --from` and `RUN --mount=from=`, its base's
    /// ONBUILD triggers included.
    fn sources(&self, stage: &Stage, base: &Base) -> Result<Vec<Source>, Located> {
        let mut out = Vec::new();
        let triggers = self.triggers(base)?;
        for instruction in triggers.iter().chain(&stage.instructions) {
            match &instruction.command {
                Command::Copy(args) => {
                    if let Some(from) = &args.from {
                        out.extend(self.source(
                            &from.value,
                            stage.index,
                            Reference::CopyFrom,
                            from.pos,
                        )?);
                    }
                }
                Command::Run { mounts, .. } => {
                    for mount in mounts {
                        if let Some(from) = &mount.from {
                            let pos = mount
                                .spec
                                .as_ref()
                                .map_or(instruction.span.start, |s| s.pos);
                            out.extend(self.source(
                                from,
                                stage.index,
                                Reference::MountFrom,
                                pos,
                            )?);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Resolves a `--from` (stage name, stage index for COPY only, or image); `None` for
    /// `scratch`, which reads nothing.
    fn source(
        &self,
        reference: &str,
        current: usize,
        kind: Reference,
        pos: Pos,
    ) -> Result<Option<Source>, Located> {
        let keyword = kind.keyword();
        let err = |message: String| Located::new(pos, Some(keyword), ErrorKind::Stage(message));
        if reference.find('$').is_some_and(|i| i + 1 < reference.len()) {
            return Err(err(format!(
                "--from={reference} doesn't support variable expansion: define an alias stage \
                 (`FROM ${{IMAGE}} AS src`) and use --from=src"
            )));
        }
        if reference == "scratch" {
            return Ok(None);
        }
        // Only COPY --from takes an index; a mount's from=0 names an image, as in BuildKit.
        if let (Reference::CopyFrom, Ok(index)) = (kind, reference.parse::<usize>()) {
            let stages = self.df.stages.len();
            return match index {
                i if i == current => Err(err(format!("circular dependency detected: --from={i} is this stage"))),
                i if i < current => Ok(Some(Source::Stage { index: i })),
                i if i < stages => Err(err(format!(
                    "cannot copy from stage {i}, it needs to be defined before current stage {current}"
                ))),
                i => Err(err(format!(
                    "invalid stage index {i}: the Dockerfile has {stages} stage{}, numbered from 0",
                    if stages == 1 { "" } else { "s" }
                ))),
            };
        }
        if let Some(index) = self.stage_by_name(reference, current, kind, pos)? {
            return Ok(Some(Source::Stage { index }));
        }
        check_image_reference(reference).map_err(|reason| {
            let names: Vec<&str> = self.df.stages.iter().filter_map(|s| s.name.as_deref()).collect();
            let hint = suggest(reference, names.iter().copied())
                .map(|s| format!(" (did you mean stage {s:?}?)"))
                .unwrap_or_default();
            err(format!("--from={reference} is neither a stage name nor a valid image reference: {reason}{hint}"))
        })?;
        Ok(Some(Source::Image {
            reference: reference.to_string(),
        }))
    }

    fn target(&self) -> Result<usize, Located> {
        let Some(target) = &self.options.target else {
            return Ok(self.df.stages.len() - 1);
        };
        let lower = target.to_ascii_lowercase();
        if let Some(stage) = self
            .df
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Ok(stage.index);
        }
        let names: Vec<&str> = self
            .df
            .stages
            .iter()
            .filter_map(|s| s.name.as_deref())
            .collect();
        let hint = match suggest(target, names.iter().copied()) {
            Some(s) => format!(" (did you mean {s:?}?)"),
            None if names.is_empty() => {
                " (no stage has a name: add `AS name` to a FROM line)".into()
            }
            None => format!(" (stages: {})", names.join(", ")),
        };
        Err(Located::new(
            Pos { line: 0, column: 0 },
            None,
            ErrorKind::Stage(format!("target stage {target:?} could not be found{hint}")),
        ))
    }

    /// Walks a needed stage: ARG scoping, ENV, and expansion of every instruction.
    fn stage(
        &mut self,
        stage: &Stage,
        base: Base,
        platform: Option<String>,
        deps: &(BTreeSet<usize>, Vec<String>),
        mut env: Env,
        inherited_args: &BTreeMap<String, String>,
    ) -> Result<(PlannedStage, Env), Located> {
        let mut args = Vec::new();
        let mut used = BTreeSet::new();
        let mut unresolved = BTreeSet::new();
        let mut instructions = Vec::with_capacity(stage.instructions.len());
        let triggers = self.triggers(&base)?;
        let mut onbuild = Vec::with_capacity(triggers.len());
        let all = triggers
            .iter()
            .map(|i| (true, i))
            .chain(stage.instructions.iter().map(|i| (false, i)));
        for (is_trigger, instruction) in all {
            let command = match &instruction.command {
                Command::Arg { args: decls } => {
                    let mut expanded = Vec::with_capacity(decls.len());
                    for decl in decls {
                        self.consumed.insert(decl.name.clone());
                        let (value, source) = if let Some(v) =
                            self.options.build_args.get(&decl.name)
                        {
                            (Some(v.clone()), ArgSource::BuildArg)
                        } else if let Some(default) = &decl.default {
                            let mut expander = Expander::new(self.escape, &env, env.base_unknown);
                            let value = expander.word(default, "ARG")?.value;
                            used.extend(expander.used);
                            unresolved.extend(expander.unset);
                            (Some(value), ArgSource::Default)
                        } else if let Some(v) = inherited_args.get(&decl.name) {
                            (Some(v.clone()), ArgSource::Stage)
                        } else {
                            match self.meta.get(&decl.name) {
                                Some(Some(v)) if is_platform_arg(&decl.name) => {
                                    (Some(v.clone()), ArgSource::Platform)
                                }
                                Some(Some(v)) => (Some(v.clone()), ArgSource::Global),
                                _ => (None, ArgSource::Unset),
                            }
                        };
                        if let Some(v) = &value {
                            env.vars.insert(decl.name.clone(), v.clone());
                        }
                        args.push(ArgValue {
                            name: decl.name.clone(),
                            value: value.clone(),
                            source,
                            line: instruction.span.start.line,
                        });
                        expanded.push(crate::instructions::ArgDecl {
                            name: decl.name.clone(),
                            default: value.map(|v| {
                                Word::new(
                                    v,
                                    decl.default.as_ref().map_or(Pos::default(), |d| d.pos),
                                )
                            }),
                        });
                    }
                    Command::Arg { args: expanded }
                }
                other => {
                    let mut expander = Expander::new(self.escape, &env, env.base_unknown);
                    let expanded = expander.command(other)?;
                    used.extend(expander.used);
                    unresolved.extend(expander.unset);
                    self.warnings.append(&mut expander.warnings);
                    if let Command::Env { env: pairs } = &expanded {
                        for kv in pairs {
                            env.vars
                                .insert(kv.key.value.clone(), kv.value.value.clone());
                        }
                    }
                    expanded
                }
            };
            let planned = Instruction {
                span: instruction.span,
                original: instruction.original.clone(),
                command,
            };
            if is_trigger {
                onbuild.push(planned);
            } else {
                instructions.push(planned);
            }
        }
        let written = match &stage.from.command {
            Command::From { image, .. } => image.value.clone(),
            _ => String::new(),
        };
        Ok((
            PlannedStage {
                index: stage.index,
                name: stage.name.clone(),
                base,
                base_written: written,
                platform,
                span: stage.span(),
                depends_on: deps.0.iter().copied().collect(),
                images: deps.1.clone(),
                args,
                uses: used.into_iter().collect(),
                unresolved: unresolved.into_iter().collect(),
                onbuild,
                instructions,
            },
            env,
        ))
    }

    fn unused_build_args(&mut self) {
        let unused: Vec<&str> = self
            .options
            .build_args
            .keys()
            .filter(|k| {
                !self.consumed.contains(*k)
                    && !PROXY_ARGS.contains(&k.as_str())
                    && !is_platform_arg(k)
                    // BuildKit's switch for its inline cache (kiln's --inline-cache), not an ARG.
                    && k.as_str() != "BUILDKIT_INLINE_CACHE"
            })
            .map(String::as_str)
            .collect();
        if !unused.is_empty() {
            self.warnings.push(Warning {
                pos: Pos { line: 0, column: 0 },
                rule: "UnusedBuildArgs",
                message: format!(
                    "build-arg{} [{}] not consumed: no ARG in the stages being built declares {}",
                    if unused.len() == 1 { " was" } else { "s were" },
                    unused.join(", "),
                    if unused.len() == 1 { "it" } else { "them" }
                ),
            });
        }
    }
}

/// Where a stage name is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    From,
    CopyFrom,
    MountFrom,
}

impl Reference {
    fn keyword(self) -> &'static str {
        match self {
            Reference::From => "FROM",
            Reference::CopyFrom => "COPY",
            Reference::MountFrom => "RUN",
        }
    }
}

fn is_platform_arg(name: &str) -> bool {
    ["TARGET", "BUILD"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| matches!(rest, "PLATFORM" | "OS" | "ARCH" | "VARIANT"))
    })
}

/// Groups needed stages into waves by dependency depth.
fn waves(needed: &BTreeSet<usize>, deps: &[(BTreeSet<usize>, Vec<String>)]) -> Vec<Vec<usize>> {
    let mut depth: BTreeMap<usize, usize> = BTreeMap::new();
    // Dependencies always point to earlier stages, so one pass in index order suffices.
    for &i in needed {
        let d = deps[i]
            .0
            .iter()
            .filter_map(|d| depth.get(d))
            .map(|d| d + 1)
            .max()
            .unwrap_or(0);
        depth.insert(i, d);
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, d) in depth {
        if out.len() <= d {
            out.resize(d + 1, Vec::new());
        }
        out[d].push(i);
    }
    out
}
