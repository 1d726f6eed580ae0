//! From kaniko's flags to the engine's `BuildOptions`: every check that names a flag, the flags
//! accepted and ignored (with a warning), the kaniko variables, and the context and Dockerfile
//! made ready.

use super::args::{BuildArgs, CompressionFlag, FormatFlag, IsolationFlag};
use crate::printer::Printer;
use crate::registry_flags::{cloud_credentials, docker_config};
use anyhow::{bail, Context, Result};
use kiln_build::context::PreparedContext;
use kiln_build::{
    BuildOptions, CacheOptions, ImageFormat, Isolation, RegistryCacheOptions, Reporter,
    SecretSource, SshSource,
};
use kiln_cloud::ProviderSet;
use kiln_fs::compress::Encoding;
use kiln_oci::Platform;
use kiln_registry::Reference;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a build needs besides the builder: the options, the prepared context (kept until the
/// build ends) and the destinations.
pub(super) struct Translated {
    pub(super) options: BuildOptions,
    pub(super) context: PreparedContext,
    pub(super) destinations: Vec<Reference>,
    /// The kiln dir's store, held shared from before the context is prepared: `kiln prune`
    /// never removes a starting build's context or directory.
    pub(super) store_lock: kiln_fs::gc::StoreLock,
}

/// Checks `args` and turns them into the engine's options; output paths in `args` are made
/// absolute on the way.
pub(super) fn translate(
    args: &mut BuildArgs,
    as_executor: bool,
    reporter: &Printer,
) -> Result<Translated> {
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
    if args.compressed_caching.is_some() {
        reporter.info("--compressed-caching: kiln never holds cached layers in memory; ignored");
    }
    if args.push_ignore_immutable_tag_errors.is_some() {
        reporter.warn(
            "--push-ignore-immutable-tag-errors is not supported yet: a refused tag fails the push",
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
    let cloud_providers =
        ProviderSet::from_flag_values(&args.credential_helpers).context("--credential-helpers")?;
    let mut secrets = BTreeMap::new();
    for secret in &args.secrets {
        let (id, source) = parse_secret(secret)?;
        if secrets.insert(id.clone(), source).is_some() {
            bail!("--secret: id {id:?} is given twice");
        }
    }
    let mut ssh = BTreeMap::new();
    for agent in &args.ssh {
        let (id, source) = parse_ssh(agent)?;
        if ssh.insert(id.clone(), source).is_some() {
            bail!("--ssh: id {id:?} is given twice");
        }
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
                bail!("--compression-level {level}: gzip levels are 1 to 9 (0 or less: the default, 6)");
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
    let providers = cloud_credentials(cloud_providers, &registry);
    let credentials = docker_config(providers.clone())?;
    let kiln_dir = absolute("kiln-dir", &kiln_dir(args.kiln_dir.as_ref())?)?;
    std::fs::create_dir_all(&kiln_dir)
        .with_context(|| format!("--kiln-dir {}: cannot create it", kiln_dir.display()))?;
    let store_lock = kiln_fs::store::ContentStore::open(kiln_dir.join("store"))
        .and_then(|store| store.lock_shared())
        .with_context(|| format!("--kiln-dir {}", kiln_dir.display()))?;
    // The context (a tarball URL is downloaded, a git repository cloned) and the Dockerfile.
    let contexts = kiln_dir.join("contexts");
    let context = crate::cloud_context::prepare(
        &args.context,
        args.bucket.as_deref(),
        args.context_sub_path.as_deref(),
        &contexts,
        &git,
        &registry,
        &providers,
    )?;
    let dockerfile =
        kiln_build::context::read_dockerfile(&args.dockerfile, &context.dir, &registry, &contexts)
            .with_context(|| format!("--dockerfile {}", args.dockerfile))?;
    let cache = cache_options(args, &destinations)?;
    let options = BuildOptions {
        context_dir: context.dir.clone(),
        dockerfile_text: dockerfile.text,
        dockerfile_name: dockerfile.name,
        dockerfile_in_context: dockerfile.in_context,
        outside_ignore_file: dockerfile.outside_ignore_file,
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
        cache,
        secrets,
        ssh,
    };
    Ok(Translated {
        options,
        context,
        destinations,
        store_lock,
    })
}

/// The kiln dir: the flag, $KILN_DIR, $KANIKO_DIR, /kiln when writable, else
/// $XDG_CACHE_HOME/kiln.
pub(crate) fn kiln_dir(flag: Option<&PathBuf>) -> Result<PathBuf> {
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

/// `KEY=VALUE` of a repeatable flag.
fn key_value(flag: &str, value: &str) -> Result<(String, String)> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("--{flag} {value:?}: expected KEY=VALUE"),
    }
}

/// The build cache flags: the kiln dir always; a registry repository with `--cache=true`.
fn cache_options(args: &BuildArgs, destinations: &[Reference]) -> Result<CacheOptions> {
    let buildkit_inline = args.build_args.iter().any(|a| {
        a.strip_prefix("BUILDKIT_INLINE_CACHE=")
            .is_some_and(|v| parse_bool(v) == Some(true))
    });
    let from_images = args
        .cache_from
        .iter()
        .map(|i| Reference::parse(i).with_context(|| format!("--cache-from {i:?}")))
        .collect::<Result<Vec<_>>>()?;
    let ttl = match &args.cache_ttl {
        Some(text) => {
            crate::units::go_duration(text).with_context(|| format!("--cache-ttl {text:?}"))?
        }
        None => Duration::from_secs(14 * 24 * 3600),
    };
    let warm_dir = match &args.cache_dir {
        Some(dir) => Some((absolute("cache-dir", Path::new(dir))?, ttl)),
        None => None,
    };
    let mut options = CacheOptions {
        lookups: !args.no_cache,
        warm_dir,
        registry: None,
        from_images,
        inline: args.inline_cache || buildkit_inline,
    };
    if !args.cache {
        return Ok(options);
    }
    let repo = match &args.cache_repo {
        Some(text) => Reference::parse(text).with_context(|| format!("--cache-repo {text:?}"))?,
        // kaniko's default: the first destination's repository + /cache.
        None => match destinations.first() {
            Some(d) => Reference::parse(&format!("{}/{}/cache", d.registry, d.repository))
                .with_context(|| format!("--cache-repo (from --destination {d})"))?,
            None => bail!("--cache=true needs --cache-repo when there is no --destination"),
        },
    };
    options.registry = Some(RegistryCacheOptions {
        repo,
        ttl,
        push: !args.no_push_cache,
        run_layers: args.cache_run_layers,
        copy_layers: args.cache_copy_layers,
    });
    Ok(options)
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
fn parse_secret(value: &str) -> Result<(String, SecretSource)> {
    let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
    for part in value.split(',') {
        let (key, v) = part
            .split_once('=')
            .with_context(|| format!("--secret {value:?}: {part:?} is not KEY=VALUE"))?;
        match key.to_ascii_lowercase().as_str() {
            "id" => id = Some(v.to_owned()),
            "type" if v == "file" || v == "env" => kind = Some(v.to_owned()),
            "type" => bail!("--secret {value:?}: type={v:?}: expected file or env"),
            "src" | "source" => src = Some(v.to_owned()),
            "env" => env = Some(v.to_owned()),
            _ => bail!("--secret {value:?}: unknown key {key:?} (id, type, src, env)"),
        }
    }
    // BuildKit's rules: the id defaults to src's; type=env reads src as a variable name; a
    // bare id is the variable of that name when set, else the file of that name.
    let id = id
        .or_else(|| src.clone())
        .filter(|i| !i.is_empty())
        .with_context(|| format!("--secret {value:?}: id= is required"))?;
    let file = |path: &str| -> Result<SecretSource> {
        let path =
            std::path::absolute(path).with_context(|| format!("--secret id={id}: src={path:?}"))?;
        std::fs::metadata(&path)
            .with_context(|| format!("--secret id={id}: cannot read {}", path.display()))?;
        Ok(SecretSource::File(path))
    };
    let source = match (kind.as_deref(), src, env) {
        (_, _, Some(var)) => SecretSource::Env(var),
        (Some("env"), Some(var), None) => SecretSource::Env(var),
        (Some("env"), None, None) => SecretSource::Env(id.clone()),
        (_, Some(path), None) => file(&path)?,
        (Some("file"), None, None) => file(&id)?,
        (_, None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (_, None, None) => file(&id)?,
    };
    Ok((id, source))
}

/// `--ssh ID`, `ID=SOCKET` or `ID=KEY[,KEY]` (BuildKit's syntax): an empty id is `default`, no
/// path means $SSH_AUTH_SOCK.
fn parse_ssh(value: &str) -> Result<(String, SshSource)> {
    let (id, paths) = match value.split_once('=') {
        Some((id, paths)) => (id, paths.split(',').filter(|p| !p.is_empty()).collect()),
        None => (value, Vec::new()),
    };
    let id = if id.is_empty() { "default" } else { id }.to_owned();
    if paths.is_empty() {
        let socket = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .with_context(|| {
                format!("--ssh {value:?}: no socket given and SSH_AUTH_SOCK is not set")
            })?;
        return Ok((id, SshSource::Agent(PathBuf::from(socket))));
    }
    let (mut sockets, mut keys) = (Vec::new(), Vec::new());
    for path in paths {
        use std::os::unix::fs::FileTypeExt;
        let path = std::path::absolute(path).with_context(|| format!("--ssh {value:?}"))?;
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("--ssh {id}: cannot read {}", path.display()))?;
        if meta.file_type().is_socket() {
            sockets.push(path);
        } else {
            keys.push(path);
        }
    }
    match (sockets.len(), keys.is_empty()) {
        (0, _) => {
            let source = SshSource::Keys(keys);
            source
                .check()
                .map_err(|e| anyhow::anyhow!("--ssh {id}: {e}"))?;
            Ok((id, source))
        }
        (1, true) => Ok((id, SshSource::Agent(sockets.remove(0)))),
        _ => bail!("--ssh {id}: give one agent socket or key files, not both or several sockets"),
    }
}
