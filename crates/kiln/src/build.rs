//! `kiln build` (and the binary run as `executor`): kaniko's executor flags, their checks, the
//! build, and its outputs. The engine lives in kiln-build; this file maps flags to options and
//! prints progress.

use crate::printer::Printer;
use crate::registry_flags::{docker_config, RegistryFlags};
use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, ValueEnum};
use kiln_build::{BuildOptions, Builder, ImageFormat, Isolation, Reporter};
use kiln_fs::compress::Encoding;
use kiln_oci::Platform;
use kiln_registry::Reference;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    context: String,
    /// A sub-directory of the context to build from.
    #[arg(long, value_name = "DIR")]
    context_sub_path: Option<String>,
    /// The Dockerfile: a path (from the working directory, else inside the context), an
    /// http(s) URL, or `-` for stdin.
    #[arg(long, short = 'f', value_name = "FILE", default_value = "Dockerfile")]
    dockerfile: String,
    /// Where to push the image, e.g. registry:5000/team/app:v1. Repeatable.
    #[arg(long = "destination", short = 'd', value_name = "IMAGE")]
    destinations: Vec<String>,
    /// A build argument, NAME=value; a bare NAME takes the environment's value. Repeatable.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// A label for the image, KEY=VALUE. Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Build (and write --tar-path / --oci-layout-path) without pushing.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    no_push: bool,
    /// Write the image as a docker-archive tarball (for `docker load`) here.
    #[arg(long, value_name = "FILE")]
    tar_path: Option<PathBuf>,
    /// Write the image as an OCI image layout directory here.
    #[arg(long, value_name = "DIR")]
    oci_layout_path: Option<PathBuf>,
    /// Write the image's manifest digest here.
    #[arg(long, value_name = "FILE")]
    digest_file: Option<PathBuf>,
    /// Write NAME@DIGEST for each destination here (one line each).
    #[arg(long, value_name = "FILE")]
    image_name_with_digest_file: Option<PathBuf>,
    /// Write NAME:TAG@DIGEST for each destination here (one line each).
    #[arg(long, value_name = "FILE")]
    image_name_tag_with_digest_file: Option<PathBuf>,
    /// Fixed timestamps (SOURCE_DATE_EPOCH, else the epoch): the digest depends on the inputs only.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    reproducible: bool,
    /// The platform to build for, e.g. linux/arm64 (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    custom_platform: Option<String>,
    /// One layer for the whole target stage.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    single_snapshot: bool,
    /// Remove this build's directory under the kiln dir afterwards.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    cleanup: bool,
    /// Where kiln keeps its state (default: $KILN_DIR, /kiln when writable, else $XDG_CACHE_HOME/kiln).
    #[arg(long, alias = "kaniko-dir", value_name = "DIR")]
    kiln_dir: Option<PathBuf>,
    /// A path of the image never snapshotted by RUN steps. Repeatable.
    #[arg(long = "ignore-path", value_name = "PATH")]
    ignore_paths: Vec<String>,
    /// Build only the stages the target needs (default for `kiln build`); `=false` builds every
    /// stage up to the target (default when run as `executor`, as kaniko).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    skip_unused_stages: Option<bool>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: CompressionFlag,
    /// Compression level (gzip 0-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,
    /// How much to log.
    #[arg(long, short = 'v', value_enum, default_value = "info")]
    verbosity: Verbosity,
    /// Log as plain text, colored text, or JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Prefix log lines with the time.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    log_timestamp: bool,
    /// RUN isolation backend.
    #[arg(long, value_enum, default_value = "auto")]
    isolation: IsolationFlag,
    /// Manifest format: docker (v2 schema 2, every registry takes it) or oci.
    #[arg(long, value_enum, default_value = "docker")]
    image_format: FormatFlag,
    /// Do not check push access to the destinations before building.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    skip_push_permission_check: bool,
    /// kaniko flags kiln does not need; accepted and ignored with a note.
    #[arg(long = "snapshot-mode", value_name = "MODE", hide = true)]
    snapshot_mode: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    use_new_run: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    force: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    cache: Option<String>,
    #[arg(long, hide = true)]
    cache_repo: Option<String>,
    #[arg(long, hide = true)]
    cache_dir: Option<String>,
    #[arg(long, hide = true)]
    cache_ttl: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    cache_copy_layers: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    cache_run_layers: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    ignore_var_run: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    compressed_caching: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    no_push_cache: Option<String>,
    #[arg(long, hide = true)]
    image_fs_extract_retry: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    push_ignore_immutable_tag_errors: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    preserve_context: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    materialize: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    force_build_metadata: Option<String>,
    /// Git context options, one KEY=VALUE each: branch=, single-branch=, recurse-submodules=,
    /// insecure-skip-tls=. Repeatable.
    #[arg(long = "git", value_name = "KEY=VALUE")]
    git: Vec<String>,
    /// kaniko's hidden bucket flag (a GCS bucket, or any `x://` context): not supported.
    #[arg(long, short = 'b', hide = true)]
    bucket: Option<String>,
    /// An annotation of the image manifest, KEY=VALUE. Repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// kaniko's: wipe the file system before the build. kiln never builds on `/`: nothing to do.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pre_cleanup: Option<String>,
    /// kaniko's deprecated spelling of --ignore-var-run.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    whitelist_var_run: Option<String>,
    /// A build secret for `RUN --mount=type=secret`: id=ID[,type=file|env][,src=PATH][,env=VAR].
    #[arg(long = "secret", value_name = "id=ID,...")]
    secrets: Vec<String>,
    /// Credential helpers of kaniko's fork (env, google, ecr, acr, gitlab). Repeatable.
    #[arg(long = "credential-helpers", value_name = "NAME")]
    credential_helpers: Vec<String>,
    #[command(flatten)]
    registry: RegistryFlags,
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

/// The kiln dir: the flag, $KILN_DIR, $KANIKO_DIR, /kiln when writable, else
/// $XDG_CACHE_HOME/kiln.
fn kiln_dir(flag: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.clone());
    }
    for variable in ["KILN_DIR", "KANIKO_DIR"] {
        if let Some(dir) = std::env::var_os(variable).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
    }
    let default = Path::new("/kiln");
    if std::fs::create_dir_all(default).is_ok()
        && rustix::fs::access(default, rustix::fs::Access::WRITE_OK).is_ok()
    {
        return Ok(default.to_owned());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("no --kiln-dir, KILN_DIR, writable /kiln nor HOME to keep state in")?;
    Ok(cache.join("kiln"))
}

/// `--build-arg` values: `NAME=value`, or a bare `NAME` taking the environment's value, empty
/// when unset (kaniko's rule; `kiln outline` plans the same).
pub(crate) fn build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for arg in raw {
        match arg.split_once('=') {
            Some(("", _)) => bail!("--build-arg {arg:?}: the name before '=' is empty"),
            Some((k, v)) => {
                out.insert(k.to_owned(), v.to_owned());
            }
            None => {
                out.insert(arg.clone(), std::env::var(arg).unwrap_or_default());
            }
        }
    }
    Ok(out)
}

/// An output path made absolute (the build changes no working directory, but the engine
/// hands paths to mounts and symlinks that must not depend on it), its missing parent
/// directories created as kaniko does.
fn output_path(flag: &str, path: &Path) -> Result<PathBuf> {
    let path = absolute(flag, path)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "--{flag} {}: cannot create the directory {}",
                path.display(),
                parent.display()
            )
        })?;
    }
    Ok(path)
}

/// `path` made absolute against the working directory, once, here at the edge.
fn absolute(flag: &str, path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("--{flag} {}", path.display()))
}

pub(crate) fn run(args: BuildArgs, as_executor: bool) -> Result<()> {
    let printer = Printer::install(args.verbosity, args.log_format, args.log_timestamp);
    let result = run_build(args, as_executor, printer.clone());
    printer.finish();
    result
}

#[allow(clippy::print_stdout)]
fn run_build(mut args: BuildArgs, as_executor: bool, reporter: Arc<Printer>) -> Result<()> {
    for (flag, value) in [
        ("--snapshot-mode", args.snapshot_mode.is_some()),
        ("--use-new-run", args.use_new_run.is_some()),
        ("--force", args.force.is_some()),
        ("--ignore-var-run", args.ignore_var_run.is_some()),
        (
            "--image-fs-extract-retry",
            args.image_fs_extract_retry.is_some(),
        ),
        ("--preserve-context", args.preserve_context.is_some()),
        ("--materialize", args.materialize.is_some()),
        (
            "--force-build-metadata",
            args.force_build_metadata.is_some(),
        ),
    ] {
        if value {
            reporter.warn(&format!(
                "{flag} is accepted for kaniko compatibility and ignored: kiln does not need it"
            ));
        }
    }
    for (flag, value) in [
        (
            "--cache",
            args.cache.as_deref().is_some_and(|v| v != "false"),
        ),
        ("--cache-repo", args.cache_repo.is_some()),
        ("--cache-dir", args.cache_dir.is_some()),
        ("--cache-ttl", args.cache_ttl.is_some()),
        ("--cache-copy-layers", args.cache_copy_layers.is_some()),
        ("--cache-run-layers", args.cache_run_layers.is_some()),
        ("--compressed-caching", args.compressed_caching.is_some()),
        ("--no-push-cache", args.no_push_cache.is_some()),
    ] {
        if value {
            reporter.warn(&format!(
                "{flag}: layer caching is not implemented yet; building without a cache"
            ));
        }
    }
    if args.push_ignore_immutable_tag_errors.is_some() {
        reporter.warn(
            "--push-ignore-immutable-tag-errors is not supported yet: a refused tag fails the push",
        );
    }
    if let Some(bucket) = &args.bucket {
        bail!(
            "--bucket {bucket}: object-store contexts are not supported yet: download the \
             context and pass the directory (or tar://FILE) with --context"
        );
    }
    if let Some(url) = args
        .digest_file
        .as_ref()
        .and_then(|p| p.to_str())
        .filter(|p| p.starts_with("https://") || p.starts_with("http://"))
    {
        bail!("--digest-file {url}: sending the digest to a URL (kaniko's HTTP PUT) is not supported; give a file path");
    }
    if let Some(value) = &args.whitelist_var_run {
        reporter.warn("--whitelist-var-run is deprecated: use --ignore-var-run");
        args.ignore_var_run = Some(value.clone());
    }
    if args.pre_cleanup.as_deref().is_some_and(|v| v != "false") {
        reporter.info("--pre-cleanup: nothing to clean, kiln never unpacks images over /");
    }
    for name in &args.credential_helpers {
        if !name.is_empty() {
            reporter.warn(&format!(
                "--credential-helpers {name}: kiln has no built-in cloud credential helpers yet; \
                 it uses the docker config's credHelpers and credsStore"
            ));
        }
    }
    for secret in &args.secrets {
        parse_secret(secret)?;
    }
    if !args.secrets.is_empty() {
        reporter
            .warn("--secret: RUN --mount=type=secret is not supported yet, so no step can read it");
    }
    let git = git_options(&args.git)?;
    let annotations = args
        .annotations
        .iter()
        .map(|a| key_value("annotation", a))
        .collect::<Result<BTreeMap<_, _>>>()?;
    // kaniko's KANIKO_NO_PUSH overrides --no-push either way.
    if let Ok(value) = std::env::var("KANIKO_NO_PUSH") {
        args.no_push = parse_bool(&value)
            .with_context(|| format!("KANIKO_NO_PUSH={value:?}: expected true or false"))?;
    }
    let destinations: Vec<Reference> = args
        .destinations
        .iter()
        .map(|d| Reference::parse(d).with_context(|| format!("--destination {d:?}")))
        .collect::<Result<_>>()?;
    if destinations.is_empty() && !args.no_push {
        bail!("--destination is required unless --no-push is given (kaniko's rule): name where to push, or add --no-push with --tar-path or --oci-layout-path");
    }
    for (flag, set) in [
        (
            "image-name-with-digest-file",
            args.image_name_with_digest_file.is_some(),
        ),
        (
            "image-name-tag-with-digest-file",
            args.image_name_tag_with_digest_file.is_some(),
        ),
    ] {
        if set && destinations.is_empty() {
            bail!("--{flag} needs at least one --destination: its lines name the destinations");
        }
    }
    for (flag, path) in [
        ("tar-path", &mut args.tar_path),
        ("oci-layout-path", &mut args.oci_layout_path),
        ("digest-file", &mut args.digest_file),
        (
            "image-name-with-digest-file",
            &mut args.image_name_with_digest_file,
        ),
        (
            "image-name-tag-with-digest-file",
            &mut args.image_name_tag_with_digest_file,
        ),
    ] {
        if let Some(p) = path {
            *p = output_path(flag, p)?;
        }
    }
    let labels = args
        .labels
        .iter()
        .map(|l| key_value("label", l))
        .collect::<Result<Vec<_>>>()?;
    let platform = match &args.custom_platform {
        Some(p) => {
            Platform::parse_flag(p).map_err(|e| anyhow::anyhow!("--custom-platform: {e}"))?
        }
        None => Platform::host(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // kaniko: a level of 0 or below (its default is -1) means the default level.
    let level = args.compression_level.filter(|l| *l > 0);
    let compression =
        if args.compression == CompressionFlag::Zstd && args.image_format == FormatFlag::Docker {
            reporter.warn(
                "--compression zstd: Docker-format images have no zstd layer type, so layers stay \
             gzip (as kaniko does); add --image-format oci for zstd layers",
            );
            CompressionFlag::Gzip
        } else {
            args.compression
        };
    let encoding = match compression {
        CompressionFlag::Gzip => {
            let level = level.unwrap_or(6);
            if !(0..=9).contains(&level) {
                bail!("--compression-level {level}: gzip levels are 0 to 9");
            }
            Encoding::Gzip {
                level: level as u32,
                threads,
            }
        }
        CompressionFlag::Zstd => {
            let level = level.unwrap_or(3);
            if !(1..=22).contains(&level) {
                bail!("--compression-level {level}: zstd levels are 1 to 22");
            }
            Encoding::Zstd {
                level,
                workers: threads as u32,
            }
        }
    };
    let source_date_epoch =
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) if !v.is_empty() => Some(v.parse::<i64>().map_err(|_| {
                anyhow::anyhow!("SOURCE_DATE_EPOCH {v:?} is not a number of seconds")
            })?),
            _ => None,
        };
    let registry = args.registry.options()?;
    let credentials = docker_config()?;
    let kiln_dir = absolute("kiln-dir", &kiln_dir(args.kiln_dir.as_ref())?)?;
    std::fs::create_dir_all(&kiln_dir)
        .with_context(|| format!("--kiln-dir {}: cannot create it", kiln_dir.display()))?;
    // The context and Dockerfile. An http(s) URL of a tarball is downloaded first (a git
    // repository URL is refused by `prepare`).
    let contexts = kiln_dir.join("contexts");
    let downloaded = download_context(&args.context, &registry, &contexts)?;
    let spec = match &downloaded {
        Some(file) => format!("tar://{}", file.path().display()),
        None => args.context.clone(),
    };
    let context =
        kiln_build::context::prepare(&spec, args.context_sub_path.as_deref(), &contexts, &git)
            .with_context(|| format!("--context {}", args.context))?;
    drop(downloaded);
    let (dockerfile_text, dockerfile_name, in_context, outside_ignore) = if args.dockerfile == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the Dockerfile from stdin")?;
        (text, "Dockerfile (stdin)".to_owned(), None, None)
    } else if args.dockerfile.starts_with("https://") || args.dockerfile.starts_with("http://") {
        // kaniko fetches a Dockerfile given as a URL.
        let file = download(&args.dockerfile, &registry, &contexts)
            .with_context(|| format!("--dockerfile {}: downloading it", args.dockerfile))?;
        let text = std::fs::read_to_string(file.path())
            .with_context(|| format!("--dockerfile {}: not UTF-8 text", args.dockerfile))?;
        (text, args.dockerfile.clone(), None, None)
    } else {
        // kaniko's order: the working directory first, then the context.
        let given = Path::new(&args.dockerfile);
        let path = if given.is_absolute() || given.exists() {
            absolute("dockerfile", given)?
        } else {
            context.dir.join(given)
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "--dockerfile {}: cannot read {}",
                args.dockerfile,
                path.display()
            )
        })?;
        let canon_ctx = std::fs::canonicalize(&context.dir).unwrap_or(context.dir.clone());
        let canon = std::fs::canonicalize(&path).unwrap_or(path.clone());
        let rel = canon
            .strip_prefix(&canon_ctx)
            .ok()
            .and_then(|r| r.to_str())
            .map(str::to_owned);
        let outside = if rel.is_none() {
            let mut beside = canon.as_os_str().to_os_string();
            beside.push(".dockerignore");
            std::fs::read_to_string(&beside)
                .ok()
                .map(|t| (PathBuf::from(beside).display().to_string(), t))
        } else {
            None
        };
        (text, args.dockerfile.clone(), rel, outside)
    };
    let options = BuildOptions {
        context_dir: context.dir.clone(),
        dockerfile_text,
        dockerfile_name,
        dockerfile_in_context: in_context,
        outside_ignore_file: outside_ignore,
        build_args: build_args(&args.build_args)?,
        target: args.target.clone(),
        platform,
        labels,
        kiln_dir: kiln_dir.clone(),
        registry,
        docker_config: credentials,
        reproducible: args.reproducible,
        source_date_epoch,
        single_snapshot: args.single_snapshot,
        ignore_paths: args.ignore_paths.clone(),
        encoding,
        image_format: match args.image_format {
            FormatFlag::Docker => ImageFormat::Docker,
            FormatFlag::Oci => ImageFormat::Oci,
        },
        isolation: match args.isolation {
            IsolationFlag::Auto => Isolation::Auto,
            IsolationFlag::Overlay => Isolation::Overlay,
            IsolationFlag::Chroot => Isolation::Chroot,
        },
        destinations: destinations.clone(),
        no_push: args.no_push,
        skip_push_permission_check: args.skip_push_permission_check,
        all_stages: !args.skip_unused_stages.unwrap_or(!as_executor),
        annotations,
    };
    let builder = Builder::new(options, reporter.clone())?;
    let result = build_and_write(&builder, &args, &destinations);
    if args.cleanup {
        if let Err(e) = builder.cleanup() {
            reporter.warn(&format!("--cleanup: {e}"));
        }
    }
    drop(context);
    let digest = result?;
    println!("{digest}");
    Ok(())
}

/// Downloads an http(s) tarball context into `dir` (a temp file removed when dropped).
fn download_context(
    context: &str,
    registry: &kiln_registry::RegistryOptions,
    dir: &Path,
) -> Result<Option<tempfile::NamedTempFile>> {
    if !(context.starts_with("https://") || context.starts_with("http://"))
        || kiln_build::context::is_git_url(context)
    {
        return Ok(None);
    }
    download(context, registry, dir)
        .with_context(|| format!("--context {context}: downloading the tarball"))
        .map(Some)
}

/// Downloads `url` into a temp file in `dir` (removed when dropped).
fn download(
    url: &str,
    registry: &kiln_registry::RegistryOptions,
    dir: &Path,
) -> Result<tempfile::NamedTempFile> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let client =
        kiln_registry::Client::new(registry.clone(), kiln_registry::DockerConfig::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(client.download(url, file.path(), None))?;
    Ok(file)
}

/// `KEY=VALUE` of a repeatable flag.
fn key_value(flag: &str, value: &str) -> Result<(String, String)> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("--{flag} {value:?}: expected KEY=VALUE"),
    }
}

/// A boolean as kaniko (Go's strconv.ParseBool) spells it.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// kaniko's `--git KEY=VALUE` options (one per flag: commas are part of the value, as in
/// kaniko) and its `GIT_*` variables.
fn git_options(values: &[String]) -> Result<kiln_build::context::GitOptions> {
    let mut options = kiln_build::context::GitOptions::default();
    for value in values {
        let (key, v) = key_value("git", value)?;
        let flag =
            || parse_bool(&v).with_context(|| format!("--git {value:?}: expected true or false"));
        match key.as_str() {
            "branch" => options.branch = Some(v.clone()).filter(|b| !b.is_empty()),
            "single-branch" => options.single_branch = flag()?,
            "recurse-submodules" => options.recurse_submodules = flag()?,
            "insecure-skip-tls" => options.insecure_skip_tls = flag()?,
            _ => bail!(
                "--git {value:?}: unknown option {key:?} (branch, single-branch, \
                 recurse-submodules, insecure-skip-tls)"
            ),
        }
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    options.plain_http = var("GIT_PULL_METHOD").as_deref() == Some("http");
    options.credentials = match (var("GIT_TOKEN"), var("GIT_USERNAME"), var("GIT_PASSWORD")) {
        (Some(token), _, _) => Some((token, String::new())),
        (None, None, None) => None,
        (None, user, password) => Some((user.unwrap_or_default(), password.unwrap_or_default())),
    };
    Ok(options)
}

/// Checks a `--secret` value: `id=ID[,type=file|env][,src=PATH|source=PATH][,env=VAR]`.
fn parse_secret(value: &str) -> Result<()> {
    let mut id = None;
    for part in value.split(',') {
        let (key, v) = part
            .split_once('=')
            .with_context(|| format!("--secret {value:?}: {part:?} is not KEY=VALUE"))?;
        match key {
            "id" => id = Some(v),
            "type" if v == "file" || v == "env" => {}
            "src" | "source" | "env" => {}
            _ => bail!("--secret {value:?}: unknown key {key:?} (id, type, src, env)"),
        }
    }
    if id.is_none_or(str::is_empty) {
        bail!("--secret {value:?}: id= is required");
    }
    Ok(())
}

/// A destination as kaniko names it in its digest files (go-containerregistry's form: Docker
/// Hub is `index.docker.io`).
fn kaniko_name(destination: &Reference) -> String {
    let registry = match destination.registry.as_str() {
        "docker.io" => "index.docker.io",
        other => other,
    };
    format!("{registry}/{}", destination.repository)
}

fn build_and_write(
    builder: &Builder,
    args: &BuildArgs,
    destinations: &[Reference],
) -> Result<kiln_oci::Digest> {
    builder.check_destinations()?;
    let image = builder.build()?;
    let tags: Vec<String> = destinations.iter().map(|d| d.to_string()).collect();
    if let Some(path) = &args.tar_path {
        builder.write_docker_archive(&image, path, &tags)?;
    }
    if let Some(path) = &args.oci_layout_path {
        let name = destinations
            .first()
            .and_then(|d| d.tag.clone())
            .unwrap_or_else(|| "latest".into());
        builder.write_oci_layout(&image, path, &name)?;
    }
    let mut digest = image.manifest_descriptor.digest.clone();
    if !args.no_push {
        for destination in destinations {
            digest = builder.push(&image, destination)?;
        }
    }
    if let Some(path) = &args.digest_file {
        kiln_build::output::write_file_atomically(path, &digest.to_string())?;
    }
    // kaniko's formats: one line per destination, NAME@DIGEST and NAME:TAG@DIGEST.
    if let Some(path) = &args.image_name_with_digest_file {
        let text: String = destinations
            .iter()
            .map(|d| format!("{}@{digest}\n", kaniko_name(d)))
            .collect();
        kiln_build::output::write_file_atomically(path, &text)?;
    }
    if let Some(path) = &args.image_name_tag_with_digest_file {
        let text: String = destinations
            .iter()
            .map(|d| {
                let tag = d.tag.as_deref().unwrap_or("latest");
                format!("{}:{tag}@{digest}\n", kaniko_name(d))
            })
            .collect();
        kiln_build::output::write_file_atomically(path, &text)?;
    }
    Ok(digest)
}
