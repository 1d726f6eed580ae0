//! What a build is asked to do ([`BuildOptions`]) and how it tells the caller what happens
//! ([`Reporter`]: the library never prints).

use crate::error::BuildError;
use kiln_dockerfile::instructions::Instruction;
use kiln_dockerfile::{Plan, PlannedStage};
use kiln_fs::compress::Encoding;
use kiln_fs::layer::{LayerOptions, MediaTypes, MtimeRule};
use kiln_oci::Platform;
use kiln_registry::{DockerConfig, Reference, RegistryOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Which manifest and media types the image gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// Docker image manifest v2 schema 2: what every registry accepts.
    #[default]
    Docker,
    /// OCI image manifest.
    Oci,
}

/// How RUN steps are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Pick the best backend this machine allows.
    #[default]
    Auto,
    /// Overlay of the layers, snapshot = upper dir (not available yet: falls back with a
    /// log line only under `Auto`).
    Overlay,
    /// chroot into an extracted rootfs, snapshot by stat-index diff.
    Chroot,
}

/// Everything a build needs besides the reporter.
#[derive(Debug)]
pub struct BuildOptions {
    /// The build context, already prepared as a local directory.
    pub context_dir: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile_text: String,
    /// The Dockerfile's name in messages (`Dockerfile`, `docker/app.Dockerfile`).
    pub dockerfile_name: String,
    /// The Dockerfile's path relative to the context (for `<Dockerfile>.dockerignore`);
    /// `None` when it lies outside the context or came from stdin.
    pub dockerfile_in_context: Option<String>,
    /// An ignore file found beside a Dockerfile outside the context (its text).
    pub outside_ignore_file: Option<(String, String)>,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// The platform to build for (`--custom-platform`); the host's by default.
    pub platform: Platform,
    /// `--label` (added to the final image).
    pub labels: Vec<(String, String)>,
    /// The kiln dir: all state lives below it.
    pub kiln_dir: PathBuf,
    /// Registry client options.
    pub registry: RegistryOptions,
    /// Credentials.
    pub docker_config: DockerConfig,
    /// `--reproducible`: fixed timestamps (SOURCE_DATE_EPOCH, else 0).
    pub reproducible: bool,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: Option<i64>,
    /// `--single-snapshot`: one layer for the whole target stage.
    pub single_snapshot: bool,
    /// `--ignore-path`: paths of the rootfs never snapshotted.
    pub ignore_paths: Vec<String>,
    /// Layer compression.
    pub encoding: Encoding,
    /// Manifest and media types.
    pub image_format: ImageFormat,
    /// RUN isolation.
    pub isolation: Isolation,
    /// Where the image goes (checked for push access before the build unless `no_push`).
    pub destinations: Vec<Reference>,
    /// Build without pushing.
    pub no_push: bool,
    /// Skip the push-access check before the build.
    pub skip_push_permission_check: bool,
    /// Build every stage up to the target, also those it does not need (kaniko's
    /// `--skip-unused-stages=false`, its default).
    pub all_stages: bool,
    /// Annotations of the image manifest (`--annotation KEY=VALUE`).
    pub annotations: BTreeMap<String, String>,
    /// The build cache: where steps are looked up and stored.
    pub cache: CacheOptions,
    /// Build secrets by id (`--secret`), read when a step mounts one, never kept.
    pub secrets: BTreeMap<String, SecretSource>,
    /// SSH agents by id (`--ssh`), served to the steps that mount one.
    pub ssh: BTreeMap<String, SshSource>,
}

/// Where a build secret's value comes from (`--secret id=ID,src=PATH` or `,env=VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable of kiln's process.
    Env(String),
}

impl SecretSource {
    /// The secret's value, read now; `None` when its variable is not set (the secret is then
    /// missing, as BuildKit has it). Errors name the id and the file, never a value.
    pub(crate) fn read(&self, id: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            SecretSource::File(path) => std::fs::read(path)
                .map(Some)
                .map_err(|e| format!("secret {id}: reading {}: {e}", path.display())),
            SecretSource::Env(var) => Ok(std::env::var_os(var).map(|v| v.into_encoded_bytes())),
        }
    }

    /// Whether the secret has a value to give (its variable is set, or it is a file).
    pub(crate) fn available(&self) -> bool {
        match self {
            SecretSource::File(_) => true,
            SecretSource::Env(var) => std::env::var_os(var).is_some(),
        }
    }
}

/// What a `--ssh` id serves (`ID=SOCKET` or `ID=KEY[,KEY]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An agent's socket, forwarded (read-only use: list keys and sign).
    Agent(PathBuf),
    /// Private key files (unencrypted OpenSSH or PEM), served by an agent of kiln's own.
    Keys(Vec<PathBuf>),
}

impl SshSource {
    /// Checks that key files can be served (read, unencrypted, a supported type); an agent
    /// socket is checked when a step connects. The error names the file, never key material.
    pub fn check(&self) -> Result<(), String> {
        match self {
            SshSource::Agent(_) => Ok(()),
            SshSource::Keys(files) => files
                .iter()
                .try_for_each(|f| crate::ssh_agent::AgentKey::load(f).map(drop)),
        }
    }
}

/// Where the build cache is read and written. Entries are always written to the kiln dir.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Take steps from the cache at all (off with `--no-cache`: every step runs, entries are
    /// still recorded and pushed).
    pub lookups: bool,
    /// A registry repository holding entries (`--cache=true`, `--cache-repo`).
    pub registry: Option<RegistryCacheOptions>,
    /// Images whose manifests record their steps' keys (`--cache-from`), looked up after the
    /// kiln dir.
    pub from_images: Vec<Reference>,
    /// Record the steps' keys in the built image's manifest (`--inline-cache`), for a later
    /// build's `--cache-from`.
    pub inline: bool,
    /// Base images warmed into a directory (`--cache-dir`), used while younger than the
    /// duration (`--cache-ttl`).
    pub warm_dir: Option<(PathBuf, Duration)>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            lookups: true,
            registry: None,
            from_images: Vec::new(),
            inline: false,
            warm_dir: None,
        }
    }
}

/// kaniko's registry cache flags.
#[derive(Debug, Clone)]
pub struct RegistryCacheOptions {
    /// The repository (`--cache-repo`; its tag or digest, if any, is ignored).
    pub repo: Reference,
    /// Entries older than this are misses (`--cache-ttl`, two weeks by default).
    pub ttl: Duration,
    /// Push new entries (off with `--no-push-cache`).
    pub push: bool,
    /// Cache RUN (and WORKDIR) steps (`--cache-run-layers`, on by default).
    pub run_layers: bool,
    /// Cache COPY and ADD steps (`--cache-copy-layers`, off by default as in kaniko).
    pub copy_layers: bool,
}

/// One step of a stage, as the reporter sees it.
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// The stage's position among the stages built (1-based) and how many there are.
    pub stage: (usize, usize),
    /// The stage's name, or its index.
    pub stage_name: String,
    /// The step's position in the stage (1-based) and the number of steps.
    pub step: (usize, usize),
    /// The instruction as it ran (after expansion).
    pub text: String,
}

/// How a finished step went: its time and, for a step that may change the tree, what its
/// snapshot cost.
#[derive(Debug, Clone, Default)]
pub struct StepDone {
    /// The whole step.
    pub elapsed: Duration,
    /// The snapshot's share (none for a step that changes no files: ENV, LABEL, …).
    pub snapshot: Option<SnapshotStats>,
    /// Where the step's result came from when it was found in the build cache (`kiln dir`,
    /// `cache repo NAME`); none when it ran.
    pub cached: Option<String>,
}

/// The cost of turning a step's changes into a layer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SnapshotStats {
    /// Indexing the tree before the step (chroot backend, when the previous step left no
    /// index: the first RUN after the base's extraction or after a COPY).
    pub index: Duration,
    /// Finding what changed: the stat-index scans and diff (chroot backend), or cleaning the
    /// upper dir (overlay backend).
    pub find: Duration,
    /// Writing the layer: tar, compression, both digests, fsync (zero when nothing changed).
    pub write: Duration,
    /// Bytes of the layer's tar (zero when nothing changed).
    pub tar_bytes: u64,
    /// Bytes of the compressed blob.
    pub blob_bytes: u64,
}

/// Receives what happens during a build. Implementations must be cheap: the engine calls
/// them from its worker threads.
pub trait Reporter: Send + Sync {
    /// A general message.
    fn info(&self, message: &str);
    /// Something the user should know (an unused build arg, a fallback).
    fn warn(&self, message: &str);
    /// A step starts.
    fn step_started(&self, step: &StepInfo);
    /// A step finished.
    fn step_finished(&self, step: &StepInfo, done: &StepDone);
    /// Output of a RUN step (raw bytes, possibly partial lines).
    fn output(&self, step: &StepInfo, bytes: &[u8]);
    /// A blob moved (pulled, pushed, mounted, already there).
    fn blob(&self, what: &str, digest: &kiln_oci::Digest);
    /// A blob transfer starts: `size` bytes, pushed (`true`) or pulled.
    fn transfer_started(&self, _digest: &kiln_oci::Digest, _size: u64, _push: bool) {}
    /// `bytes` more bytes of a transfer moved.
    fn transfer_progress(&self, _digest: &kiln_oci::Digest, _bytes: u64) {}
}

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Reporter for Quiet {
    fn info(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn step_started(&self, _: &StepInfo) {}
    fn step_finished(&self, _: &StepInfo, _: &StepDone) {}
    fn output(&self, _: &StepInfo, _: &[u8]) {}
    fn blob(&self, _: &str, _: &kiln_oci::Digest) {}
}

/// What every part of a build derives from the options the same way.
impl BuildOptions {
    /// Where an instruction is, for messages: `file:line:column`.
    pub(crate) fn at(&self, instruction: &Instruction) -> String {
        if instruction.span.start.line == 0 {
            format!(
                "{} (ONBUILD trigger of the base image)",
                self.dockerfile_name
            )
        } else {
            format!(
                "{}:{}:{}",
                self.dockerfile_name, instruction.span.start.line, instruction.span.start.column
            )
        }
    }

    /// The platform a stage builds for: its `FROM --platform`, else the target platform.
    pub(crate) fn stage_platform(
        &self,
        stage: &PlannedStage,
        plan: &Plan,
    ) -> Result<Platform, BuildError> {
        match &stage.platform {
            Some(p) => Platform::parse_flag(p).map_err(|e| BuildError::Instruction {
                at: format!(
                    "{}:{}:{}",
                    self.dockerfile_name, stage.span.start.line, stage.span.start.column
                ),
                keyword: "FROM",
                message: format!("--platform={p}: {e}"),
            }),
            None => Platform::parse_flag(&plan.target_platform)
                .map_err(|e| BuildError::Options(format!("--custom-platform: {e}"))),
        }
    }

    /// How layers are written: the output's media types, compression and time rules; `lazy`
    /// leaves out parent directories the change set does not hold.
    pub(crate) fn layer_options(&self, lazy: bool) -> LayerOptions {
        let mut o = LayerOptions {
            encoding: self.encoding,
            media_types: match self.image_format {
                ImageFormat::Docker => MediaTypes::Docker,
                ImageFormat::Oci => MediaTypes::Oci,
            },
            ..LayerOptions::default()
        };
        o.reproducible_mtime = match (self.reproducible, self.source_date_epoch) {
            (true, epoch) => Some(MtimeRule::Fixed(epoch.unwrap_or(0))),
            (false, Some(epoch)) => Some(MtimeRule::Clamp(epoch)),
            (false, None) => None,
        };
        o.omit_parent_entries = lazy;
        o
    }

    /// The creation time written into configs and history.
    pub(crate) fn created(&self) -> String {
        match (self.reproducible, self.source_date_epoch) {
            (_, Some(epoch)) => kiln_oci::time::rfc3339(epoch),
            (true, None) => kiln_oci::time::rfc3339(0),
            (false, None) => kiln_oci::time::rfc3339(now_secs()),
        }
    }
}

/// Seconds since the epoch, now.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
