//! The data a build passes along: layers, stage images, finished stages, the built image.
//! Plain data: every other module may use these, and they use nothing of the engine.

use kiln_oci::{Descriptor, Digest, ImageConfig};
use kiln_registry::Reference;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A layer of an image being built, and where its blob is.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The manifest's descriptor for it.
    pub descriptor: Descriptor,
    /// Its uncompressed digest.
    pub diff_id: Digest,
    /// The repository it came from, when it is a base image's layer (it may not be in the
    /// local store: outputs mount, download or skip it).
    pub remote: Option<Reference>,
}

/// A stage's image: its config and layers.
#[derive(Debug, Clone)]
pub struct StageImage {
    /// The image config.
    pub config: ImageConfig,
    /// The layers, base first.
    pub layers: Vec<Layer>,
    /// The cache key of each file-changing step built into it, with the index in `layers` of
    /// the layer it made (none when it changed no file): what `--inline-cache` records.
    pub cache_keys: Vec<(String, Option<usize>)>,
}

/// The finished image of a build.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The config blob.
    pub config: Vec<u8>,
    /// Its descriptor.
    pub config_descriptor: Descriptor,
    /// The manifest.
    pub manifest: Vec<u8>,
    /// Its descriptor (media type, digest, size).
    pub manifest_descriptor: Descriptor,
    /// The layers.
    pub layers: Vec<Layer>,
}

/// A stage once built.
pub(crate) struct Finished {
    pub(crate) image: StageImage,
    /// The stage's root file system, when it was extracted.
    pub(crate) rootfs: Option<PathBuf>,
    /// The environment its RUN steps saw at its end (ENV and ARG values): a stage built FROM
    /// it starts with it, as in BuildKit.
    pub(crate) run_env: BTreeMap<String, String>,
    /// The cache key its last file-changing step ended on (or its base's): what `COPY --from`
    /// and stages built on it chain their keys to.
    pub(crate) chain: String,
}

/// A base image as resolved from its registry.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) image: StageImage,
    /// Its manifest's digest (the platform's manifest, after an index).
    pub(crate) digest: kiln_oci::Digest,
}
