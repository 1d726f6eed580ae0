//! The cache in a registry repository (kaniko's `--cache-repo`): one small image per entry,
//! tagged with the entry's key. Its manifest holds the step's layer (none when the step
//! changed no file) and says, in annotations, the layer's diff_id and when the entry was
//! made, so a lookup is one manifest request and never reads a config or a layer.

use super::KeyInputs;
use crate::types::Layer;
use kiln_oci::{media_type, Descriptor, Digest, ImageManifest, Manifest};
use kiln_registry::{Client, Reference};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Annotation: the layer's diff_id.
const DIFF_ID: &str = "dev.kiln.cache.diff-id";
/// Annotation: when the entry was made, in seconds since the epoch (for `--cache-ttl`).
const CREATED_SECS: &str = "dev.kiln.cache.created";
/// Annotation: the key, as the tag says (a copy renamed by hand is not a hit).
const KEY: &str = "dev.kiln.cache.key";

/// What a cache repository lookup found.
pub(super) enum Found {
    /// A usable entry: the step's layer (none for a step that changed no file).
    Entry(Option<Box<Layer>>),
    /// No entry, or one too old for the TTL.
    Missing,
}

/// The config's field holding the key's inputs (to say why a later lookup missed).
const INPUTS: &str = "dev.kiln.cache.inputs";
/// Inputs larger than this are recorded without their per-file inputs (one digest instead).
const MAX_INPUTS_BYTES: usize = 512 * 1024;

/// The entry image for `key` in `repo`.
pub(super) fn entry_reference(repo: &Reference, key: &str) -> Reference {
    repo.with_tag(key)
}

/// The tag naming the latest entry made at `site` (a Dockerfile, stage and step): what a miss
/// is compared with on a machine whose kiln dir has no entries of its own.
pub(super) fn site_reference(repo: &Reference, site: &str) -> Reference {
    repo.with_tag(&format!("site-{site}"))
}

/// The inputs as a pushed entry records them (anyone who may pull the cache repository reads
/// them): variables' values as digests only, and the per-file inputs folded into one digest
/// when they are too many.
fn recorded_inputs(inputs: &KeyInputs) -> KeyInputs {
    let inputs = KeyInputs(
        inputs
            .0
            .iter()
            .map(|(name, value)| {
                if name.starts_with("var ") && !value.starts_with("hidden ") {
                    (
                        name.clone(),
                        format!("hidden {}", Digest::of(value.as_bytes())),
                    )
                } else {
                    (name.clone(), value.clone())
                }
            })
            .collect(),
    );
    let whole = serde_json::to_vec(&inputs.0).unwrap_or_default();
    if whole.len() <= MAX_INPUTS_BYTES {
        return inputs;
    }
    let (files, mut rest): (Vec<_>, Vec<_>) = inputs
        .0
        .iter()
        .cloned()
        .partition(|(n, _)| n.starts_with("file "));
    let digest = Digest::of(&serde_json::to_vec(&files).unwrap_or_default());
    rest.push((format!("files ({})", files.len()), digest.to_string()));
    KeyInputs(rest)
}

/// The inputs of the latest entry made at `site`, when it is another key's.
pub(super) async fn latest_at_site(
    client: &Client,
    repo: &Reference,
    site: &str,
    key: &str,
) -> Option<KeyInputs> {
    let reference = site_reference(repo, site);
    let fetched = client.fetch_manifest_if_present(&reference).await.ok()??;
    let manifest = match Manifest::parse(&fetched.bytes, Some(&fetched.media_type)) {
        Ok(Manifest::Image(m)) => m,
        _ => return None,
    };
    if manifest.annotations.get(KEY).map(String::as_str) == Some(key) {
        return None;
    }
    let config = client
        .fetch_blob_bytes(&fetched.source, &manifest.config)
        .await
        .ok()?;
    let config: serde_json::Value = serde_json::from_slice(&config).ok()?;
    serde_json::from_value(config.get(INPUTS)?.clone()).ok()
}

/// Looks `key` up in `repo`; an answer kiln cannot use is an error naming why.
pub(super) async fn lookup(
    client: &Client,
    repo: &Reference,
    key: &str,
    ttl: Duration,
    now: i64,
) -> Result<Found, String> {
    let reference = entry_reference(repo, key);
    let Some(fetched) = client
        .fetch_manifest_if_present(&reference)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Found::Missing);
    };
    let manifest = match Manifest::parse(&fetched.bytes, Some(&fetched.media_type)) {
        Ok(Manifest::Image(m)) => m,
        Ok(Manifest::Index(_)) => return Err(format!("{reference} is an index, not an entry")),
        Err(e) => return Err(format!("{reference}: {e}")),
    };
    let note = |name: &str| manifest.annotations.get(name).map(String::as_str);
    if note(KEY) != Some(key) {
        return Err(format!(
            "{reference} is not a kiln cache entry for this key"
        ));
    }
    let created: i64 = note(CREATED_SECS)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{reference} has no creation time"))?;
    if now.saturating_sub(created) > ttl.as_secs() as i64 {
        tracing::debug!(entry = %reference, "cache entry older than --cache-ttl");
        return Ok(Found::Missing);
    }
    match manifest.layers.as_slice() {
        [] => Ok(Found::Entry(None)),
        [layer] => {
            let diff_id = note(DIFF_ID)
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| format!("{reference} has no diff_id"))?;
            Ok(Found::Entry(Some(Box::new(Layer {
                descriptor: layer.clone(),
                diff_id,
                remote: Some(fetched.source),
            }))))
        }
        _ => Err(format!("{reference} has more than one layer")),
    }
}

/// What is pushed for one entry: the layer's blob (a file in the store), a config blob and
/// the manifest naming both.
pub(super) struct EntryUpload {
    pub(super) reference: Reference,
    /// The site tag, pointed at the entry too.
    pub(super) site: Reference,
    pub(super) layer: Option<(Descriptor, PathBuf)>,
    pub(super) config: (Descriptor, PathBuf),
    pub(super) manifest: Vec<u8>,
}

/// The config and manifest of the entry for `key` (the config is a minimal image config, so
/// the entry is an image any registry and client accepts).
pub(super) fn entry_documents(
    key: &str,
    inputs: &KeyInputs,
    layer: Option<&Layer>,
    platform: &kiln_oci::Platform,
    created: i64,
) -> (Vec<u8>, Descriptor, Vec<u8>) {
    let diff_ids: Vec<String> = layer.iter().map(|l| l.diff_id.to_string()).collect();
    let config = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": kiln_oci::time::rfc3339(created),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        INPUTS: recorded_inputs(inputs),
    });
    let config = serde_json::to_vec(&config).expect("a JSON value serializes");
    let config_descriptor = Descriptor::for_bytes(media_type::OCI_CONFIG, &config);
    let layers: Vec<Descriptor> = layer
        .iter()
        .map(|l| {
            let mut d = l.descriptor.clone();
            if let Some(c) = media_type::layer_compression(&d.media_type) {
                d.media_type = media_type::oci_layer(c).to_owned();
            }
            d
        })
        .collect();
    let mut annotations = BTreeMap::new();
    annotations.insert(KEY.to_owned(), key.to_owned());
    annotations.insert(CREATED_SECS.to_owned(), created.to_string());
    annotations.insert(
        "org.opencontainers.image.created".to_owned(),
        kiln_oci::time::rfc3339(created),
    );
    if let Some(l) = layer {
        annotations.insert(DIFF_ID.to_owned(), l.diff_id.to_string());
    }
    let manifest = ImageManifest {
        annotations,
        ..ImageManifest::oci(config_descriptor.clone(), layers)
    };
    let manifest = Manifest::Image(manifest)
        .to_canonical_json()
        .expect("a manifest serializes");
    (config, config_descriptor, manifest)
}

/// Pushes one entry: blobs first, the manifest last.
pub(super) async fn push(client: Arc<Client>, upload: EntryUpload) -> Result<(), String> {
    let reference = &upload.reference;
    if let Some((descriptor, path)) = &upload.layer {
        client
            .push_blob(reference, descriptor, path, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let (descriptor, path) = &upload.config;
    client
        .push_blob(reference, descriptor, path, None)
        .await
        .map_err(|e| e.to_string())?;
    client
        .push_manifest(reference, &upload.manifest, media_type::OCI_MANIFEST)
        .await
        .map_err(|e| e.to_string())?;
    client
        .push_manifest(&upload.site, &upload.manifest, media_type::OCI_MANIFEST)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
