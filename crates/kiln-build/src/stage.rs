//! One stage being built: its instructions in order, each changing the image config, the tree
//! (through [`StageFs`]) or both.

use crate::context::ContextView;
use crate::copy::{self, CopySpec, Source};
use crate::error::BuildError;
use crate::image::{self, command_vector, env_pairs, set_env};
use crate::layers::{LayerServices, LayerWriter};
use crate::options::{BuildOptions, Reporter, StepDone, StepInfo};
use crate::paths;
use crate::rootfs::{read_only_view, StageFs, Writes};
use crate::types::{Finished, Layer, Resolved, StageImage};
use crate::users;
use kiln_dockerfile::instructions::{Command, CommandLine, CopyArgs, Instruction};
use kiln_dockerfile::{Base, Plan, PlannedStage};
use kiln_fs::snapshot::{Change, ChangeKind};
use kiln_oci::{ImageConfig, Platform};
use kiln_sandbox::backend::Backend;
use kiln_sandbox::overlay::OverlayMount;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// `RUN <<EOF` (nothing but one heredoc on the command line): its body is the script.
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

fn heredoc_is_command(text: &str, heredocs: &[kiln_dockerfile::parser::Heredoc]) -> bool {
    let [heredoc] = heredocs else { return false };
    let word = text.trim();
    let Some(rest) = word.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    rest.trim_matches(|c| c == '\'' || c == '"') == heredoc.name
}

/// What `COPY --from` reads: an extracted tree, or a read-only overlay mounted for it.
pub(crate) enum SourceView {
    Dir(PathBuf),
    Overlay(OverlayMount),
}

impl SourceView {
    fn path(&self) -> &Path {
        match self {
            SourceView::Dir(p) => p,
            SourceView::Overlay(m) => m.path(),
        }
    }
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
        let rootfs = match &self.fs {
            StageFs::Dir(d) if !d.lazy => Some(d.root.clone()),
            _ => None,
        };
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
                        self.run_env.insert(decl.name.clone(), v.value.clone());
                    }
                }
                // A history entry, as BuildKit writes one.
                self.record(instruction, None);
            }
            Command::Env { env } => {
                for kv in env {
                    set_env(config, &kv.key.value, &kv.value.value);
                    self.run_env
                        .insert(kv.key.value.clone(), kv.value.value.clone());
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
                let cwd = image::working_dir(config);
                self.volumes
                    .extend(paths.iter().map(|p| paths::absolute(&cwd, p)));
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
                // BuildKit marks every CMD so (a Windows matter, but part of the config).
                c.args_escaped = Some(true);
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
                let dir = paths::absolute(&image::working_dir(config), &path.value);
                config.config_mut().working_dir = Some(dir.clone());
                let mut made = dir.clone();
                if self.fs.lazy() {
                    // Without the base's files, its layers' listing says what is missing (and
                    // where its symlinks lead).
                    self.load_base_listing(&at, "WORKDIR")?;
                    if let Some(listing) = &self.base_listing {
                        made = listing.resolve(&dir).map_err(|e| bad(e.to_string()))?;
                    }
                }
                let layer = self.workdir(&made, &at)?;
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
        let bad = |message: String| BuildError::Instruction {
            at: at.to_owned(),
            keyword: "WORKDIR",
            message,
        };
        let user = self.user();
        let single = self.single;
        let writer = self.layer_writer();
        let listing = self.base_listing.as_ref();
        let in_base = |path: &str| {
            listing.is_some_and(|l| l.kind(path) == Some(&kiln_fs::listing::PathKind::Dir))
        };
        let (_, layer) = self.fs.step(&writer, at, false, single, |root| {
            let rel = paths::resolve_in_root(root, dir, true).map_err(|e| bad(e.to_string()))?;
            if paths::host(root, &rel).is_dir() || in_base(&rel) {
                return Ok(((), Writes::default()));
            }
            // A file operation: BuildKit's owner rules, not RUN's.
            let owner = user
                .as_ref()
                .map_or((0, 0), |spec| users::resolve_chown(root, spec));
            let mut created = Vec::new();
            paths::mkdir_all(root, &rel, 0o755, owner, &mut created)
                .map_err(|e| bad(e.to_string()))?;
            let changes = created
                .into_iter()
                .filter(|p| !in_base(p))
                .map(|p| Change {
                    path: PathBuf::from(p),
                    kind: ChangeKind::Added,
                })
                .collect();
            Ok(((), Writes::known(changes)))
        })?;
        Ok(layer)
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
            CommandLine::Shell(text) if heredoc_is_command(text, heredocs) => {
                let body = &heredocs[0].content;
                let mut v = image::shell(&self.image.config);
                if let Some(line) = body.strip_prefix("#!").and_then(|b| b.lines().next()) {
                    // A script with its own interpreter (BuildKit runs it as a file): kept in
                    // the step's /dev/shm, so it never reaches the layer, and handed to the
                    // interpreter, since /dev/shm is noexec.
                    let line = line.trim();
                    let (interpreter, arg) = match line.split_once(char::is_whitespace) {
                        Some((i, a)) => (i, format!(" '{}'", a.trim().replace('\'', "'\\''"))),
                        None => (line, String::new()),
                    };
                    v.push(format!(
                        "f=$(mktemp /dev/shm/kiln-heredoc.XXXXXX) && cat > \"$f\" <<'KILN_HEREDOC_END'\n{body}KILN_HEREDOC_END\n'{interpreter}'{arg} \"$f\"; s=$?; rm -f \"$f\"; exit $s"
                    ));
                } else {
                    v.push(body.clone());
                }
                v
            }
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
        let env = self.run_env.clone();
        let user = self.user();
        let cwd = self.workdir_or_root();
        let hosts = self.services.layers.scratch().join("hosts");
        if !hosts.exists() {
            std::fs::write(
                &hosts,
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            )
            .map_err(BuildError::io("writing", &hosts))?;
        }
        let reporter = self.services.reporter;
        let label = self.label.clone();
        let shown_command = match command {
            CommandLine::Exec(a) => serde_json::to_string(a).unwrap_or_default(),
            CommandLine::Shell(t) => t.clone(),
        };
        let single = self.single;
        let writer = self.layer_writer();
        let namespaces = self.services.backend != (Backend::Chroot { namespaces: false });
        let volumes = self.volumes.clone();
        let (_, layer) = self.fs.step(&writer, &at, true, single, |root| {
            // A VOLUME declared in this stage exists for the RUN steps after it (kaniko and
            // buildah make it; BuildKit's RUN would fail to write there): made here, it lands
            // in this step's layer.
            for volume in &volumes {
                let rel = paths::resolve_in_root(root, volume, true)
                    .map_err(BuildError::io("resolving", Path::new(volume)))?;
                paths::mkdir_all(root, &rel, 0o755, (0, 0), &mut Vec::new())
                    .map_err(BuildError::io("creating the volume", Path::new(volume)))?;
            }
            let identity = match &user {
                Some(spec) => {
                    users::resolve_user(root, spec).map_err(|m| BuildError::Instruction {
                        at: at.clone(),
                        keyword: "RUN",
                        message: format!("USER {spec}: {m}"),
                    })?
                }
                None => users::resolve_user(root, "0").unwrap_or(users::Identity {
                    uid: 0,
                    gid: 0,
                    groups: vec![0],
                    home: "/root".into(),
                }),
            };
            // As runc does: HOME from /etc/passwd unless the image or an ARG sets it.
            let mut env = env;
            env.entry("HOME".into()).or_insert(identity.home.clone());
            let safe_file =
                |rel: &str| std::fs::symlink_metadata(root.join(rel)).map_or(true, |m| m.is_file());
            let resolv = Path::new("/etc/resolv.conf");
            let spec = kiln_sandbox::RunSpec {
                rootfs: root.to_owned(),
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
                namespaces,
            };
            // stdout and stderr interleave in one tail, as a terminal shows them.
            let mut out = OutputTail {
                reporter,
                step: info,
                tail: Vec::new(),
            };
            let mut err = OutputTail {
                reporter,
                step: info,
                tail: Vec::new(),
            };
            let outcome = kiln_sandbox::run_step(&spec, &mut out, &mut err);
            out.tail.extend_from_slice(&err.tail);
            let outcome = outcome.map_err(|source| BuildError::Sandbox {
                at: format!("{at}: RUN"),
                source,
            })?;
            // Mount points kiln made are not the step's: remove them before the snapshot.
            let canonical =
                std::fs::canonicalize(root).map_err(BuildError::io("resolving", root))?;
            let mut kiln_touched = Vec::new();
            for point in outcome.created_mount_points.iter().rev() {
                let Ok(rel) = point.strip_prefix(&canonical) else {
                    continue;
                };
                let _ = match std::fs::symlink_metadata(point) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir(point),
                    Ok(_) => std::fs::remove_file(point),
                    Err(_) => Ok(()),
                };
                if let Some(parent) = rel.parent() {
                    kiln_touched.push(parent.to_owned());
                }
            }
            if outcome.without_sys {
                reporter.warn(&format!(
                    "{at}: RUN ran without /sys: this container has none to share"
                ));
            }
            if !outcome.status.success() {
                let status = match outcome.status {
                    kiln_sandbox::StepStatus::Exited(code) => format!("exited with status {code}"),
                    kiln_sandbox::StepStatus::Signaled(sig) => {
                        format!("was killed by signal {sig}")
                    }
                };
                return Err(BuildError::RunFailed {
                    at: at.clone(),
                    stage: label,
                    command: shown_command,
                    status,
                    tail: out.last_lines(20),
                });
            }
            Ok((
                (),
                Writes {
                    kiln_touched,
                    ..Writes::default()
                },
            ))
        })?;
        Ok(layer)
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
        let cwd = self.workdir_or_root();
        let mut dest = paths::absolute(&cwd, &args.dest.value);
        if (args.dest.value.ends_with('/')
            || args.dest.value.ends_with("/.")
            || args.dest.value == ".")
            && dest != "/"
        {
            dest.push('/');
        }
        if self.fs.lazy() && !dest.ends_with('/') {
            // Without the base's files: whether the destination is a directory (or a link to
            // one) in the base decides where the files go; its layers' tar headers tell.
            dest = self.through_base(&dest, &at, keyword)?;
        }
        let inline: Vec<(String, String)> = args
            .inline
            .iter()
            .map(|s| (s.name.clone(), s.content.clone()))
            .collect();
        let source_view = match &args.from {
            None => None,
            Some(from) => Some(self.source_view(&from.value, &at)?),
        };
        let lazy = self.fs.lazy();
        let context = self.context;
        let single = self.single;
        let writer = self.layer_writer();
        let chown = args.chown.as_ref().map(|c| c.value.clone());
        let checksum = match &args.checksum {
            Some(c) => Some(
                c.value
                    .parse::<kiln_oci::Digest>()
                    .map_err(|e| bad(format!("--checksum={}: {e}", c.value)))?,
            ),
            None => None,
        };
        let mut downloads = Vec::new();
        for (n, url) in args
            .sources
            .iter()
            .filter(|s| keyword == "ADD" && crate::context::is_url(&s.value))
            .enumerate()
        {
            let file = self.stage_dir.join("downloads").join(n.to_string());
            let got = self
                .services
                .layers
                .download(&url.value, &file, checksum.as_ref(), &at)?;
            let name = got.file_name.unwrap_or_else(|| "download".into());
            downloads.push((name, file, got.last_modified));
        }
        // ADD of a git repository: cloned first; its files are copied like a directory's.
        let mut repos = Vec::new();
        for (n, repo) in args
            .sources
            .iter()
            .filter(|s| keyword == "ADD" && crate::context::is_git_url(&s.value))
            .enumerate()
        {
            let dir = self.stage_dir.join("git").join(n.to_string());
            let _ = std::fs::remove_dir_all(&dir);
            let keep = args.keep_git_dir.unwrap_or(false);
            let checkout = crate::context::clone_git(&repo.value, &dir, keep, &Default::default())
                .map_err(|e| bad(e.to_string()))?;
            repos.push(checkout);
        }
        let sources: Vec<String> = args
            .sources
            .iter()
            .filter(|s| {
                !(keyword == "ADD"
                    && (crate::context::is_url(&s.value) || crate::context::is_git_url(&s.value)))
            })
            .map(|w| w.value.clone())
            .collect();
        let only_repos = sources.is_empty() && !repos.is_empty();
        let (_, layer) = self.fs.step(&writer, &at, false, single, |root| {
            let owner = chown.as_ref().map(|spec| users::resolve_chown(root, spec));
            let spec = CopySpec {
                sources,
                inline,
                downloads,
                dest,
                owner,
                chmod: chmod.as_ref(),
                parents: args.parents,
                exclude: exclude.as_ref(),
                unpack_archives: keyword == "ADD" && args.unpack != Some(false),
                // On a tree without the base's files, directories made only to hold the new
                // files stay out of the layer (the base's own keep their metadata).
                record_parents: !lazy,
            };
            let mut changes = if only_repos && spec.inline.is_empty() && spec.downloads.is_empty() {
                Vec::new()
            } else {
                match &source_view {
                    None => copy::copy(&Source::Context(context), &spec, root),
                    Some(view) => copy::copy(&Source::Rootfs(view.path()), &spec, root),
                }
                .map_err(bad)?
            };
            for repo in &repos {
                let repo_spec = CopySpec {
                    sources: vec![".".into()],
                    inline: Vec::new(),
                    downloads: Vec::new(),
                    dest: format!("{}/", spec.dest.trim_end_matches('/')),
                    unpack_archives: false,
                    ..spec
                };
                changes.extend(copy::copy(&Source::Rootfs(repo), &repo_spec, root).map_err(bad)?);
            }
            Ok(((), Writes::known(changes)))
        })?;
        Ok(layer)
    }

    /// What `COPY --from=X` reads: a built stage's tree, or an image's.
    fn source_view(&self, from: &str, at: &str) -> Result<SourceView, BuildError> {
        let stage_index = from
            .parse::<usize>()
            .ok()
            .or_else(|| self.names.get(&from.to_ascii_lowercase()).copied())
            .filter(|i| self.stage.depends_on.contains(i));
        let (layers, name) = if let Some(index) = stage_index {
            let done = self
                .finished
                .lock()
                .expect("no stage thread panics while holding the lock")
                .get(&index)
                .cloned()
                .expect("a --from stage is built in an earlier wave");
            if let Some(root) = &done.rootfs {
                return Ok(SourceView::Dir(root.clone()));
            }
            (done.image.layers.clone(), format!("stage-{index}"))
        } else {
            let Some(r) = self.resolved.get(from) else {
                return Err(BuildError::Instruction {
                    at: at.to_owned(),
                    keyword: "COPY",
                    message: format!("--from={from}: no such stage or image"),
                });
            };
            let n = self.resolved.keys().position(|k| k == from).unwrap_or(0);
            (r.image.layers.clone(), format!("image-{n}"))
        };
        let dir = self.stage_dir.join(format!("from-{name}"));
        if self.services.backend == Backend::Overlay {
            let lowers = self.services.layers.unpacked_layers(&layers)?;
            return Ok(SourceView::Overlay(read_only_view(&lowers, &dir, at)?));
        }
        if !dir.exists() {
            self.services.layers.materialize(&layers, &dir)?;
        }
        Ok(SourceView::Dir(dir))
    }
}
