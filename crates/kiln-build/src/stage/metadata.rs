//! The instructions that change the image config (ENV, ARG, LABEL, USER, CMD, …), and WORKDIR,
//! which also makes its directory.

use super::StageRun;
use crate::error::BuildError;
use crate::image::{self, command_vector, set_env};
use crate::paths;
use crate::snapshotter::Writes;
use crate::types::Layer;
use crate::users;
use kiln_dockerfile::instructions::{Command, Instruction};
use kiln_fs::snapshot::{Change, ChangeKind};
use std::path::PathBuf;

impl StageRun<'_> {
    /// An instruction that only changes the image config (and the environment RUN sees).
    pub(super) fn metadata(&mut self, instruction: &Instruction) -> Result<(), BuildError> {
        let at = self.at(instruction);
        let bad = |message: String| BuildError::Instruction {
            at: at.clone(),
            keyword: instruction.keyword(),
            message,
        };
        let config = &mut self.image.config;
        match &instruction.command {
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
            // Dispatched by `step` to their own families.
            Command::From { .. }
            | Command::Workdir { .. }
            | Command::Run { .. }
            | Command::Copy(_)
            | Command::Add(_) => {}
        }
        Ok(())
    }

    /// WORKDIR: the config's working directory, and the directory made when missing.
    pub(super) fn workdir_instruction(
        &mut self,
        instruction: &Instruction,
        path: &kiln_dockerfile::instructions::Word,
    ) -> Result<Option<Layer>, BuildError> {
        let at = self.at(instruction);
        let bad = |message: String| BuildError::Instruction {
            at: at.clone(),
            keyword: instruction.keyword(),
            message,
        };
        let dir = self.workdir_target(&path.value);
        self.image.config.config_mut().working_dir = Some(dir.clone());
        let mut made = dir.clone();
        if self.lazy {
            // Without the base's files, its layers' listing says what is missing (and
            // where its symlinks lead).
            self.load_base_listing(&at, "WORKDIR")?;
            if let Some(listing) = &self.base_listing {
                made = listing.resolve(&dir).map_err(|e| bad(e.to_string()))?;
            }
        }
        self.workdir(&made, &at)
    }

    /// The directory `WORKDIR path` makes the working directory.
    pub(super) fn workdir_target(&self, path: &str) -> String {
        paths::absolute(&image::working_dir(&self.image.config), path)
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
        let fs = self
            .fs
            .as_mut()
            .expect("a file-changing step calls ensure_fs first");
        let (_, layer) = fs.step(&writer, at, false, single, |root| {
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
}
