//! `kiln pull` and `kiln push`: images between registries and local OCI layouts or
//! docker-archive tarballs, with kaniko's registry flags and docker's credentials.

use crate::build::{LogFormat, Verbosity};
use crate::printer::Printer;
use crate::registry_flags::{cloud_credentials, docker_config, RegistryFlags};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_cloud::ProviderSet;
use kiln_oci::{media_type, DockerArchiveWriter, Manifest, OciLayout, OciLayoutWriter, Platform};
use kiln_registry::{Client, Reference};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// The image, e.g. busybox:1.36 or registry:5000/team/app@sha256:….
    image: String,
    /// The platform to pick from a multi-platform image (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Write the image as an OCI layout directory here.
    #[arg(long, value_name = "DIR", required_unless_present = "tar_path")]
    oci_layout_path: Option<PathBuf>,
    /// Write the image as a docker-archive tarball (for `docker load`) here.
    #[arg(long, value_name = "FILE")]
    tar_path: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryFlags,
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// The OCI layout directory holding the image.
    #[arg(long, value_name = "DIR")]
    oci_layout_path: PathBuf,
    /// Which manifest of the layout (its `org.opencontainers.image.ref.name`); needed when
    /// the layout holds several. A multi-platform index is pushed with all its images.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where to push, e.g. registry:5000/team/app:v1. Repeatable.
    #[arg(
        long = "destination",
        short = 'd',
        value_name = "IMAGE",
        required = true
    )]
    destinations: Vec<String>,
    /// Write the pushed manifest's digest to this file.
    #[arg(long, value_name = "FILE")]
    digest_file: Option<PathBuf>,
    /// Do not check push access before uploading.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    skip_push_permission_check: bool,
    #[command(flatten)]
    registry: RegistryFlags,
}

/// Pull and push log as `kiln build` does at its default verbosity, with progress bars on a
/// terminal.
fn printer() -> Arc<Printer> {
    Printer::install(Verbosity::Info, LogFormat::Text, false)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[allow(clippy::print_stdout)]
pub(crate) fn pull(args: PullArgs) -> Result<()> {
    let reference = Reference::parse(&args.image)?;
    let platform = match &args.platform {
        Some(p) => Platform::parse_flag(p).map_err(|e| anyhow::anyhow!("--platform: {e}"))?,
        None => Platform::host(),
    };
    let options = args.registry.options()?;
    let providers = cloud_credentials(ProviderSet::default(), &options);
    // The printer first: reading the docker config may warn.
    let printer = printer();
    let client = Client::new(options, docker_config(providers)?).with_reporter(printer);
    for path in args.oci_layout_path.iter().chain(&args.tar_path) {
        let parent = parent_dir(path);
        if !parent.is_dir() {
            bail!(
                "{}: the directory {} does not exist",
                path.display(),
                parent.display()
            );
        }
    }
    runtime()?.block_on(async {
        let image = client.resolve(&reference, &platform).await?;
        // Blobs go next to the output, so the final writes are renames on one file system.
        let anchor = args
            .oci_layout_path
            .as_ref()
            .or(args.tar_path.as_ref())
            .expect("clap requires one");
        let parent = parent_dir(anchor);
        let staging = tempfile::Builder::new()
            .prefix(".kiln-pull-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
        let layers: Vec<_> = image
            .manifest
            .layers
            .iter()
            .filter(|l| !media_type::is_foreign(&l.media_type))
            .cloned()
            .collect();
        client
            .fetch_blobs(&image.source, &layers, staging.path())
            .await?;
        let blob = |d: &kiln_oci::Digest| staging.path().join(d.hex());
        if let Some(dir) = &args.oci_layout_path {
            let mut out = OciLayoutWriter::create(dir)?;
            out.add_blob(&image.config[..], Some(&image.manifest.config))?;
            for layer in &layers {
                let file = std::fs::File::open(blob(&layer.digest))
                    .with_context(|| format!("opening {}", layer.digest))?;
                out.add_blob(file, Some(layer))?;
            }
            let tag = reference.tag.clone().unwrap_or_else(|| "latest".into());
            if image.manifest.media_type() == media_type::OCI_MANIFEST {
                out.add_manifest(&image.manifest_bytes, media_type::OCI_MANIFEST, Some(&tag))?;
            } else {
                // OCI layouts hold OCI manifests (skopeo converts the same way): the blobs keep
                // their digests, the manifest gets a new one.
                let converted = image.manifest.to_oci().to_canonical_json()?;
                out.add_manifest(&converted, media_type::OCI_MANIFEST, Some(&tag))?;
            }
            out.finish()?;
        }
        if let Some(path) = &args.tar_path {
            let mut out = DockerArchiveWriter::create(path)?;
            let mut files = Vec::new();
            for layer in &layers {
                let file = std::fs::File::open(blob(&layer.digest))
                    .with_context(|| format!("opening {}", layer.digest))?;
                files.push((layer.clone(), file));
            }
            let tag = format!(
                "{}:{}",
                reference
                    .name()
                    .trim_start_matches("docker.io/library/")
                    .trim_start_matches("docker.io/"),
                reference.tag.clone().unwrap_or_else(|| "latest".into())
            );
            out.add_image(&image.config, files, &[tag.as_str()])?;
            out.finish()?;
        }
        println!("{}", image.digest);
        Ok(())
    })
}

#[allow(clippy::print_stdout)]
pub(crate) fn push(args: PushArgs) -> Result<()> {
    let destinations: Vec<Reference> = args
        .destinations
        .iter()
        .map(|d| Reference::parse(d).with_context(|| format!("--destination {d:?}")))
        .collect::<Result<_>>()?;
    let layout = OciLayout::open(&args.oci_layout_path)
        .with_context(|| format!("--oci-layout-path {}", args.oci_layout_path.display()))?;
    let entry = layout.manifest(args.name.as_deref())?.clone();
    let manifests = manifest_tree(&layout, &entry)?;
    let options = args.registry.options()?;
    let providers = cloud_credentials(ProviderSet::default(), &options);
    // The printer first: reading the docker config may warn.
    let printer = printer();
    let client = Client::new(options, docker_config(providers)?).with_reporter(printer);
    runtime()?.block_on(async {
        if !args.skip_push_permission_check {
            for destination in &destinations {
                client
                    .check_push_access(destination)
                    .await
                    .with_context(|| format!("checking push access to {destination}"))?;
            }
        }
        let mut pushed_to: Vec<&Reference> = Vec::new();
        for destination in &destinations {
            // Blobs already pushed to another repository of the same registry are mounted.
            let mount_from = pushed_to
                .iter()
                .find(|p| p.registry == destination.registry)
                .map(|p| p.repository.clone());
            // Children first: each image's blobs, then the image manifest by digest; the top
            // manifest (an image, or an index of images) last, under the destination's tag.
            for (i, (descriptor, bytes, image)) in manifests.iter().enumerate() {
                if let Some(image) = image {
                    for blob in image
                        .layers
                        .iter()
                        .filter(|l| !media_type::is_foreign(&l.media_type))
                        .chain(std::iter::once(&image.config))
                    {
                        client
                            .push_blob(
                                destination,
                                blob,
                                &layout.blob_path(&blob.digest),
                                mount_from.as_deref(),
                            )
                            .await?;
                    }
                }
                let top = i + 1 == manifests.len();
                let target = if top {
                    destination.clone()
                } else {
                    Reference {
                        tag: None,
                        ..destination.with_digest(&descriptor.digest.to_string())
                    }
                };
                let digest = client
                    .push_manifest(&target, bytes, &descriptor.media_type)
                    .await?;
                if digest != descriptor.digest {
                    bail!(
                        "{target}: the registry stored digest {digest}, expected {}",
                        descriptor.digest
                    );
                }
            }
            pushed_to.push(destination);
        }
        if let Some(path) = &args.digest_file {
            kiln_build::output::write_file_atomically(path, entry.digest.to_string().as_bytes())?;
        }
        println!("{}", entry.digest);
        Ok(())
    })
}

/// A manifest to push: its descriptor, its bytes and, for an image, the parsed manifest
/// (whose blobs go first).
type ManifestToPush = (
    kiln_oci::Descriptor,
    Vec<u8>,
    Option<kiln_oci::ImageManifest>,
);

/// The manifests to push for `top`, children before parents, `top` last: an image manifest
/// alone, or an index after the image manifests it lists (nested indexes included).
fn manifest_tree(layout: &OciLayout, top: &kiln_oci::Descriptor) -> Result<Vec<ManifestToPush>> {
    fn visit(
        layout: &OciLayout,
        descriptor: &kiln_oci::Descriptor,
        depth: usize,
        out: &mut Vec<ManifestToPush>,
    ) -> Result<()> {
        if depth > 4 {
            bail!("{}: indexes nested more than 4 deep", descriptor.digest);
        }
        let bytes = layout.read_blob(&descriptor.digest)?;
        match Manifest::parse(&bytes, Some(&descriptor.media_type))? {
            Manifest::Image(image) => out.push((descriptor.clone(), bytes, Some(image))),
            Manifest::Index(index) => {
                for child in &index.manifests {
                    if out.iter().all(|(d, _, _)| d.digest != child.digest) {
                        visit(layout, child, depth + 1, out)?;
                    }
                }
                out.push((descriptor.clone(), bytes, None));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    visit(layout, top, 0, &mut out)?;
    Ok(out)
}

/// The directory an output path is created in (`.` for a bare file name).
fn parent_dir(path: &std::path::Path) -> &std::path::Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
}
