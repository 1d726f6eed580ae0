//! `kiln build`'s flags: kaniko's executor flags with their spellings (`--flag=true`, the
//! deprecated camelCase forms), as clap parses them.

use crate::registry_flags::RegistryFlags;
use clap::{ArgAction, Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Color,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Verbosity {
    Panic,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompressionFlag {
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum IsolationFlag {
    Auto,
    Overlay,
    Chroot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatFlag {
    Docker,
    Oci,
}

/// kaniko's executor flags. Booleans also take `=true`/`=false`, as kaniko's do.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The build context: a directory, dir://DIR, tar://FILE (tar or tar.gz), tar://stdin.
    #[arg(long, short = 'c', value_name = "CONTEXT", default_value = ".")]
    pub(super) context: String,
    /// A sub-directory of the context to build from.
    #[arg(long, value_name = "DIR")]
    pub(super) context_sub_path: Option<String>,
    /// The Dockerfile: a path (from the working directory, else inside the context), an
    /// http(s) URL, or `-` for stdin.
    #[arg(long, short = 'f', value_name = "FILE", default_value = "Dockerfile")]
    pub(super) dockerfile: String,
    /// Where to push the image, e.g. registry:5000/team/app:v1. Repeatable.
    #[arg(long = "destination", short = 'd', value_name = "IMAGE")]
    pub(super) destinations: Vec<String>,
    /// A build argument, NAME=value; a bare NAME takes the environment's value. Repeatable.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    pub(super) build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long, value_name = "STAGE")]
    pub(super) target: Option<String>,
    /// A label for the image, KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(super) labels: Vec<String>,
    /// Build (and write --tar-path / --oci-layout-path) without pushing.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) no_push: bool,
    /// Write the image as a docker-archive tarball (for `docker load`) here.
    #[arg(long, value_name = "FILE")]
    pub(super) tar_path: Option<PathBuf>,
    /// Write the image as an OCI image layout directory here.
    #[arg(long, value_name = "DIR")]
    pub(super) oci_layout_path: Option<PathBuf>,
    /// Write the image's manifest digest here.
    #[arg(long, value_name = "FILE")]
    pub(super) digest_file: Option<PathBuf>,
    /// Write NAME@DIGEST for each destination here (one line each).
    #[arg(long, value_name = "FILE")]
    pub(super) image_name_with_digest_file: Option<PathBuf>,
    /// Write NAME:TAG@DIGEST for each destination here (one line each).
    #[arg(long, value_name = "FILE")]
    pub(super) image_name_tag_with_digest_file: Option<PathBuf>,
    /// Fixed timestamps (SOURCE_DATE_EPOCH, else the epoch): the digest depends on the inputs only.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) reproducible: bool,
    /// The platform to build for, e.g. linux/arm64 (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub(super) custom_platform: Option<String>,
    /// One layer for the whole target stage.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) single_snapshot: bool,
    /// Remove this build's directory under the kiln dir afterwards.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) cleanup: bool,
    /// Where kiln keeps its state (default: $KILN_DIR, /kiln when writable, else $XDG_CACHE_HOME/kiln).
    #[arg(long, alias = "kaniko-dir", value_name = "DIR")]
    pub(super) kiln_dir: Option<PathBuf>,
    /// A path of the image never snapshotted by RUN steps. Repeatable.
    #[arg(long = "ignore-path", value_name = "PATH")]
    pub(super) ignore_paths: Vec<String>,
    /// Build only the stages the target needs (default for `kiln build`); `=false` builds every
    /// stage up to the target (default when run as `executor`, as kaniko).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) skip_unused_stages: Option<bool>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub(super) compression: CompressionFlag,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3; 0 or less: the default, as
    /// kaniko).
    #[arg(long, value_name = "N")]
    pub(super) compression_level: Option<i32>,
    /// How much to log.
    #[arg(long, short = 'v', value_enum, default_value = "info")]
    pub(super) verbosity: Verbosity,
    /// Log as plain text, colored text, or JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    pub(super) log_format: LogFormat,
    /// Prefix log lines with the time.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) log_timestamp: bool,
    /// RUN isolation backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub(super) isolation: IsolationFlag,
    /// Manifest format: docker (v2 schema 2, every registry takes it) or oci.
    #[arg(long, value_enum, default_value = "docker")]
    pub(super) image_format: FormatFlag,
    /// Also look steps up in, and push them to, a registry cache repository (kaniko's flag).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) cache: bool,
    /// The cache repository for --cache (default: the first destination's repository + /cache).
    #[arg(long, value_name = "REPO")]
    pub(super) cache_repo: Option<String>,
    /// Cache entries older than this are not used (Go duration, default 336h = two weeks).
    #[arg(long, value_name = "DURATION")]
    pub(super) cache_ttl: Option<String>,
    /// Cache RUN steps in the cache repository (default true).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", require_equals = true)]
    pub(super) cache_run_layers: bool,
    /// Cache COPY and ADD steps in the cache repository too (default false, as kaniko).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) cache_copy_layers: bool,
    /// Use the cache repository without pushing new entries to it.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) no_push_cache: bool,
    /// Base images warmed into this directory by `kiln warm` are taken from it (while younger
    /// than --cache-ttl) instead of their registry.
    #[arg(long, value_name = "DIR")]
    pub(super) cache_dir: Option<String>,
    /// An image built with --inline-cache whose steps this build may reuse (BuildKit's inline
    /// cache; e.g. the previous build's app:latest). Repeatable.
    #[arg(long, value_name = "IMAGE")]
    pub(super) cache_from: Vec<String>,
    /// Record each step's cache key in the image's manifest, for a later build's --cache-from
    /// (also `--build-arg BUILDKIT_INLINE_CACHE=1`, as BuildKit).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) inline_cache: bool,
    /// Keep the kiln dir's store under this size (e.g. 20GB, 512MiB): after the build, the
    /// least recently used content is removed (default: half of its file system).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    pub(super) keep_storage: Option<u64>,
    /// Run every step again instead of taking it from the cache (entries are still recorded).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) no_cache: bool,
    /// Do not check push access to the destinations before building.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    pub(super) skip_push_permission_check: bool,
    /// kaniko flags kiln does not need; accepted and ignored with a note.
    #[arg(long = "snapshot-mode", value_name = "MODE", hide = true)]
    pub(super) snapshot_mode: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) use_new_run: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) force: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) ignore_var_run: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) compressed_caching: Option<String>,
    #[arg(long, hide = true)]
    pub(super) image_fs_extract_retry: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) push_ignore_immutable_tag_errors: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) preserve_context: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) materialize: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) force_build_metadata: Option<String>,
    /// Git context options, one KEY=VALUE each: branch=, single-branch=, recurse-submodules=,
    /// insecure-skip-tls=. Repeatable.
    #[arg(long = "git", value_name = "KEY=VALUE")]
    pub(super) git: Vec<String>,
    /// kaniko's hidden bucket flag (a GCS bucket, or any `x://` context): not supported.
    #[arg(long, short = 'b', hide = true)]
    pub(super) bucket: Option<String>,
    /// An annotation of the image manifest, KEY=VALUE. Repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub(super) annotations: Vec<String>,
    /// kaniko's: wipe the file system before the build. kiln never builds on `/`: nothing to do.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) pre_cleanup: Option<String>,
    /// kaniko's deprecated spelling of --ignore-var-run.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(super) whitelist_var_run: Option<String>,
    /// A build secret for `RUN --mount=type=secret`: id=ID[,type=file|env][,src=PATH][,env=VAR].
    #[arg(long = "secret", value_name = "id=ID,...")]
    pub(super) secrets: Vec<String>,
    /// An SSH agent for `RUN --mount=type=ssh`: ID (default: $SSH_AUTH_SOCK), ID=SOCKET, or
    /// ID=KEY[,KEY]. Repeatable.
    #[arg(long = "ssh", value_name = "ID[=SOCKET|KEY[,KEY]]")]
    pub(super) ssh: Vec<String>,
    /// Credential helpers of kaniko's fork (env, google, ecr, acr, gitlab). Repeatable.
    #[arg(long = "credential-helpers", value_name = "NAME")]
    pub(super) credential_helpers: Vec<String>,
    #[command(flatten)]
    pub(super) registry: RegistryFlags,
}

/// kaniko's camelCase spellings and the flag kiln knows them as.
const CAMEL_CASE: &[(&str, &str)] = &[
    ("--tarPath", "--tar-path"),
    ("--snapshotMode", "--snapshot-mode"),
    ("--digestFile", "--digest-file"),
    ("--imageNameDigestFile", "--image-name-with-digest-file"),
    ("--ociLayoutPath", "--oci-layout-path"),
    ("--contextSubPath", "--context-sub-path"),
    ("--buildArg", "--build-arg"),
    ("--skipTLSVerify", "--skip-tls-verify"),
    ("--noPush", "--no-push"),
    ("--singleSnapshot", "--single-snapshot"),
    ("--customPlatform", "--custom-platform"),
    ("--insecureRegistry", "--insecure-registry"),
    ("--registryMirror", "--registry-mirror"),
    ("--cacheRepo", "--cache-repo"),
    ("--cacheDir", "--cache-dir"),
    ("--skipUnusedStages", "--skip-unused-stages"),
];

/// Rewrites kaniko's camelCase flags to the kebab-case ones, with a warning for each.
#[allow(clippy::print_stderr)]
pub(crate) fn rewrite_camel_case(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            for (camel, kebab) in CAMEL_CASE {
                let rest = text.strip_prefix(camel);
                if let Some(rest) = rest.filter(|r| r.is_empty() || r.starts_with('=')) {
                    eprintln!("warning: {camel} is deprecated: use {kebab}");
                    return format!("{kebab}{rest}").into();
                }
            }
            arg
        })
        .collect()
}
