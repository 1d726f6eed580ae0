//! `kiln warm` (kaniko's warmer; also run as `warmer`): fills a directory with base images for
//! builds to read with `--cache-dir`, e.g. a volume shared read-only by build pods.

use crate::build::{build_args, LogFormat, Verbosity};
use crate::printer::Printer;
use crate::registry_flags::{cloud_credentials, docker_config, RegistryFlags};
use anyhow::{Context, Result};
use clap::{ArgAction, Args};
use kiln_cloud::ProviderSet;
use kiln_oci::Platform;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(crate) struct WarmArgs {
    /// The directory to fill (kaniko's default: /cache).
    #[arg(long, short = 'c', value_name = "DIR", default_value = "/cache")]
    cache_dir: PathBuf,
    /// An image to warm, e.g. debian:bookworm. Repeatable.
    #[arg(long = "image", short = 'i', value_name = "IMAGE")]
    images: Vec<String>,
    /// Also warm the base images of this Dockerfile.
    #[arg(long, short = 'd', value_name = "PATH")]
    dockerfile: Option<PathBuf>,
    /// A build arg for --dockerfile's FROM lines: NAME=VALUE (a bare NAME takes the
    /// environment's value). Repeatable.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    build_args: Vec<String>,
    /// Fetch images again even when they are in the directory.
    #[arg(long, short = 'f', action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    force: bool,
    /// The platform to pick from multi-platform images (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    custom_platform: Option<String>,
    #[command(flatten)]
    registry: RegistryFlags,
}

pub(crate) fn run(args: WarmArgs) -> Result<()> {
    let printer = Printer::install(Verbosity::Info, LogFormat::Text, false);
    let result = warm(args, &printer);
    printer.finish();
    result
}

fn warm(args: WarmArgs, printer: &Printer) -> Result<()> {
    let platform = match &args.custom_platform {
        Some(p) => {
            Platform::parse_flag(p).map_err(|e| anyhow::anyhow!("--custom-platform: {e}"))?
        }
        None => Platform::host(),
    };
    let dockerfile = match &args.dockerfile {
        Some(path) => Some((
            std::fs::read_to_string(path)
                .with_context(|| format!("--dockerfile {}", path.display()))?,
            path.display().to_string(),
        )),
        None => None,
    };
    let dir = std::path::absolute(&args.cache_dir)
        .with_context(|| format!("--cache-dir {}", args.cache_dir.display()))?;
    let registry = args.registry.options()?;
    let (fetched, present) = kiln_build::warm::warm(
        kiln_build::warm::WarmOptions {
            dir: dir.clone(),
            images: args.images,
            dockerfile,
            build_args: build_args(&args.build_args)?,
            platform,
            force: args.force,
            docker_config: docker_config(cloud_credentials(ProviderSet::default(), &registry))?,
            registry,
        },
        printer,
    )?;
    kiln_build::Reporter::info(
        printer,
        &format!(
            "{}: {fetched} images warmed, {present} already there",
            dir.display()
        ),
    );
    Ok(())
}
