//! `--context` (and kaniko's `--bucket`) in an object store: downloaded with kiln-cloud into
//! the contexts scratch dir, then prepared like any tarball context (`tar://FILE`).

use anyhow::{Context, Result};
use kiln_build::context::{GitOptions, PreparedContext};
use kiln_build::BuildError;
use kiln_cloud::contexts::{download, ObjectStoreContext};
use kiln_cloud::CloudCredentials;
use kiln_registry::RegistryOptions;
use std::path::Path;
use std::sync::Arc;

/// The context `spec` (or `bucket`, which wins as in kaniko) made a local directory.
pub(crate) fn prepare(
    spec: &str,
    bucket: Option<&str>,
    sub_path: Option<&str>,
    scratch: &Path,
    git: &GitOptions,
    registry: &RegistryOptions,
    providers: &Arc<CloudCredentials>,
) -> Result<PreparedContext> {
    let object = match bucket {
        Some(bucket) => Some(ObjectStoreContext::from_bucket_flag(bucket).context("--bucket")?),
        None => ObjectStoreContext::parse(spec)
            .transpose()
            .with_context(|| format!("--context {spec}"))?,
    };
    let Some(object) = object else {
        return kiln_build::context::prepare(spec, sub_path, scratch, git, registry)
            .with_context(|| format!("--context {spec}"));
    };
    let url = object.url();
    std::fs::create_dir_all(scratch)
        .with_context(|| format!("--context {url}: creating {}", scratch.display()))?;
    let file = tempfile::Builder::new()
        .prefix("object-")
        .tempfile_in(scratch)
        .with_context(|| format!("--context {url}: creating a file in {}", scratch.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(download(&object, providers, file.path()))
        .with_context(|| format!("--context {url}"))?;
    let local = format!("tar://{}", file.path().display());
    // The tarball is unpacked now; the file goes when `file` is dropped.
    kiln_build::context::prepare(&local, sub_path, scratch, git, registry)
        .map_err(|e| match e {
            BuildError::Context { message, .. } => BuildError::Context {
                context: url.clone(),
                message,
            },
            other => other,
        })
        .with_context(|| format!("--context {url}"))
}
