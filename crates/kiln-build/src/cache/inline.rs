//! The inline cache: an image built with `--inline-cache` says in one manifest annotation
//! which key made each of its layers; `--cache-from IMAGE` reads it back, so the image itself
//! (e.g. `app:latest`) is the cache and no cache repository is needed (BuildKit's inline cache,
//! kept in the manifest so the config, and with it the image's content, stays as without).

use crate::types::Layer;
use kiln_oci::{Digest, ImageConfig, ImageManifest};
use kiln_registry::Reference;
use std::collections::HashMap;

/// The manifest annotation: a JSON list of `[key, layer index or null]`, in step order.
pub(crate) const ANNOTATION: &str = "dev.kiln.cache.v1";

/// The annotation's value for an image's recorded keys.
pub(crate) fn annotation(keys: &[(String, Option<usize>)]) -> String {
    serde_json::to_string(keys).expect("keys serialize")
}

/// The entries an image records: key → its layer (none for a step that changed no file).
pub(crate) fn entries(
    source: &Reference,
    manifest: &ImageManifest,
    config: &ImageConfig,
) -> Result<HashMap<String, Option<Layer>>, String> {
    let Some(text) = manifest.annotations.get(ANNOTATION) else {
        return Err("its manifest records no cache keys (build it with --inline-cache)".into());
    };
    let keys: Vec<(String, Option<usize>)> =
        serde_json::from_str(text).map_err(|e| format!("its {ANNOTATION} annotation: {e}"))?;
    let diff_ids: &[Digest] = &config.rootfs.diff_ids;
    let mut found = HashMap::new();
    for (key, index) in keys {
        let layer = match index {
            None => None,
            Some(i) => {
                let (Some(descriptor), Some(diff_id)) = (manifest.layers.get(i), diff_ids.get(i))
                else {
                    return Err(format!(
                        "its cache keys name layer {i}, which it does not have"
                    ));
                };
                Some(Layer {
                    descriptor: descriptor.clone(),
                    diff_id: diff_id.clone(),
                    remote: Some(source.clone()),
                })
            }
        };
        found.insert(key, layer);
    }
    Ok(found)
}
