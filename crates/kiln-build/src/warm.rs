//! Base images kept in a directory ahead of builds (kaniko's warmer and `--cache-dir`): `kiln
//! warm` fills it, builds read it (it may be a read-only volume shared by build pods).
//!
//! ```text
//! <dir>/images/<hex>.json        one image: reference, platform, manifest, config (the name
//!                                is the digest of "reference platform")
//! <dir>/store/blobs/sha256/<hex> its layers, in a content store of its own
//! ```
//!
//! A build with `--cache-dir` takes a base image from here instead of its registry while the
//! entry is younger than `--cache-ttl` (kaniko's rule: the file's age), and copies layer blobs
//! from here, verified, into its own store instead of downloading them.

use crate::error::BuildError;
use crate::layers::StoreSink;
use crate::options::Reporter;
use kiln_dockerfile::{plan, Base, Dockerfile, PlanOptions};
use kiln_fs::store::ContentStore;
use kiln_oci::{media_type, Descriptor, Digest, Platform};
use kiln_registry::{Client, DockerConfig, Reference, RegistryOptions, ResolvedImage};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An image as the warm directory keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    reference: String,
    platform: String,
    source: String,
    manifest: String,
    manifest_media_type: String,
    digest: Digest,
    config: String,
}

/// A directory of warmed base images.
pub(crate) struct WarmDir {
    root: PathBuf,
    store: ContentStore,
}

fn entry_name(reference: &Reference, platform: &Platform) -> String {
    format!(
        "{}.json",
        Digest::of(format!("{reference} {platform}").as_bytes()).hex()
    )
}

impl WarmDir {
    /// The directory at `root` (its store is created when missing and the volume allows).
    pub(crate) fn open(root: &Path) -> Result<WarmDir, BuildError> {
        Ok(WarmDir {
            root: root.to_owned(),
            store: ContentStore::open(root.join("store"))?,
        })
    }

    /// The image `reference` for `platform`, if it was warmed less than `ttl` ago.
    pub(crate) fn image(
        &self,
        reference: &Reference,
        platform: &Platform,
        ttl: Duration,
    ) -> Option<ResolvedImage> {
        let path = self
            .root
            .join("images")
            .join(entry_name(reference, platform));
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()?
            .elapsed()
            .unwrap_or_default();
        if age > ttl {
            tracing::debug!(image = %reference, "warmed image older than --cache-ttl: not used");
            return None;
        }
        let entry: Entry = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        let manifest = match kiln_oci::Manifest::parse(
            entry.manifest.as_bytes(),
            Some(&entry.manifest_media_type),
        ) {
            Ok(kiln_oci::Manifest::Image(m)) => m,
            _ => return None,
        };
        if Digest::of(entry.manifest.as_bytes()) != entry.digest
            || Digest::of(entry.config.as_bytes()) != manifest.config.digest
        {
            return None;
        }
        Some(ResolvedImage {
            source: Reference::parse(&entry.source).ok()?,
            manifest,
            manifest_bytes: entry.manifest.into_bytes(),
            manifest_media_type: entry.manifest_media_type,
            digest: entry.digest,
            index_digest: None,
            config: entry.config.into_bytes(),
        })
    }

    /// Copies the blob `descriptor` names into `store`, verified; false when this directory
    /// does not have it (or its copy does not verify).
    pub(crate) fn copy_blob(&self, descriptor: &Descriptor, store: &ContentStore) -> bool {
        let path = self.store.blob_path(&descriptor.digest);
        let Ok(mut file) = std::fs::File::open(&path) else {
            return false;
        };
        let copied = store.blob_writer(Some(descriptor)).and_then(|mut writer| {
            std::io::copy(&mut file, &mut writer).map_err(|source| {
                kiln_fs::store::StoreError::Read {
                    what: descriptor.digest.to_string(),
                    source,
                }
            })?;
            writer.commit()
        });
        match copied {
            Ok(_) => {
                tracing::debug!(blob = %descriptor.digest, "copied from the warmed directory");
                true
            }
            Err(e) => {
                tracing::debug!(blob = %descriptor.digest, error = %e, "warmed blob not used");
                false
            }
        }
    }
}

/// What `kiln warm` is asked to do.
pub struct WarmOptions {
    /// The directory to fill (`--cache-dir`).
    pub dir: PathBuf,
    /// Images named on the command line (`--image`).
    pub images: Vec<String>,
    /// A Dockerfile whose base images are warmed too: its text and name (`--dockerfile`).
    pub dockerfile: Option<(String, String)>,
    /// Its build args.
    pub build_args: BTreeMap<String, String>,
    /// The platform to pick from multi-platform images.
    pub platform: Platform,
    /// Fetch again even what is there (`--force`).
    pub force: bool,
    /// Registry client options.
    pub registry: RegistryOptions,
    /// Credentials.
    pub docker_config: DockerConfig,
}

/// Warms `options.dir`; returns how many images were fetched and how many were there already.
pub fn warm(options: WarmOptions, reporter: &dyn Reporter) -> Result<(usize, usize), BuildError> {
    let mut wanted: Vec<String> = options.images.clone();
    if let Some((text, name)) = &options.dockerfile {
        let dockerfile = Dockerfile::parse(text, name)?;
        let planned = plan(
            &dockerfile,
            &PlanOptions {
                build_args: options.build_args.clone(),
                target: None,
                build_platform: Platform::host(),
                target_platform: options.platform.clone(),
                base_images: BTreeMap::new(),
                all_stages: true,
            },
        )?;
        for stage in &planned.stages {
            if let Base::Image { reference } = &stage.base {
                wanted.push(reference.clone());
            }
            wanted.extend(stage.images.iter().cloned());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    wanted.retain(|w| seen.insert(w.clone()));
    if wanted.is_empty() {
        return Err(BuildError::Options(
            "nothing to warm: name images with --image or a Dockerfile with --dockerfile".into(),
        ));
    }
    let dir = WarmDir::open(&options.dir)?;
    let images_dir = options.dir.join("images");
    std::fs::create_dir_all(&images_dir).map_err(BuildError::io("creating", &images_dir))?;
    let client = Client::new(options.registry, options.docker_config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BuildError::io("starting the async runtime", "-"))?;
    let (mut fetched, mut present) = (0, 0);
    for text in &wanted {
        let reference = Reference::parse(text)
            .map_err(|e| BuildError::Options(format!("--image {text}: {e}")))?;
        let path = images_dir.join(entry_name(&reference, &options.platform));
        if !options.force
            && dir
                .image(&reference, &options.platform, Duration::MAX)
                .is_some()
        {
            reporter.info(&format!("{reference}: already warm"));
            present += 1;
            continue;
        }
        let image = runtime
            .block_on(client.resolve(&reference, &options.platform))
            .map_err(BuildError::registry(format!("warming {reference}")))?;
        let layers: Vec<Descriptor> = image
            .manifest
            .layers
            .iter()
            .filter(|l| !media_type::is_foreign(&l.media_type) && !dir.store.contains(&l.digest))
            .cloned()
            .collect();
        runtime
            .block_on(client.fetch_blobs_into(&image.source, &layers, &StoreSink(&dir.store)))
            .map_err(BuildError::registry(format!(
                "warming the layers of {reference}"
            )))?;
        let entry = Entry {
            reference: reference.to_string(),
            platform: options.platform.to_string(),
            source: image.source.to_string(),
            manifest: String::from_utf8_lossy(&image.manifest_bytes).into_owned(),
            manifest_media_type: image.manifest_media_type.clone(),
            digest: image.digest.clone(),
            config: String::from_utf8_lossy(&image.config).into_owned(),
        };
        let bytes = serde_json::to_vec(&entry).expect("an entry serializes");
        crate::output::write_file_atomically(&path, &bytes)?;
        reporter.info(&format!(
            "{reference}: warmed {} ({} layers)",
            image.digest,
            image.manifest.layers.len()
        ));
        fetched += 1;
    }
    Ok((fetched, present))
}
