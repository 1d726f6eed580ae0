//! Helpers shared by the integration tests (each test binary uses a subset).
#![allow(dead_code)]

use kiln_oci::{media_type, ImageManifest, Manifest};
use kiln_registry::{Client, DockerConfig, Reference, RegistryOptions};
use kiln_test::{Registry, TestImage};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) fn reference(registry_host: &str, repo_tag: &str) -> Reference {
    Reference::parse(&format!("{registry_host}/{repo_tag}")).unwrap()
}

/// Options for plain-HTTP test registries, with short retry delays.
pub(crate) fn plain_options(hosts: &[String]) -> RegistryOptions {
    let mut options = RegistryOptions::default();
    options.transport.insecure_registries = hosts.to_vec();
    options.retry_base_delay = Duration::from_millis(20);
    options
}

/// Options trusting a TLS test registry's CA, with short retry delays.
pub(crate) fn tls_options(registry: &Registry) -> RegistryOptions {
    let mut options = RegistryOptions::default();
    options.transport.ca_files.insert(
        registry.host(),
        vec![registry.ca_pem_path().unwrap().to_path_buf()],
    );
    options.retry_base_delay = Duration::from_millis(20);
    options
}

/// Writes `json` as `dir/config.json` and loads it as kiln does.
pub(crate) fn config_file(dir: &Path, json: &str) -> DockerConfig {
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    DockerConfig::locate(&[path]).unwrap()
}

/// A docker config.json with basic credentials (`auth`) for `host`.
pub(crate) fn basic_config(dir: &Path, host: &str, user: &str, password: &str) -> DockerConfig {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    config_file(
        dir,
        &format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
}

/// A blob of a skopeo-made test layout.
pub(crate) fn layout_blob(image: &TestImage, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    image.layout_dir().join("blobs/sha256").join(hex)
}

/// The (first) image manifest of a skopeo-made test layout: its bytes and parsed form.
pub(crate) fn image_manifest(image: &TestImage) -> (Vec<u8>, ImageManifest) {
    let bytes = std::fs::read(layout_blob(image, &image.images()[0].manifest_digest)).unwrap();
    let Manifest::Image(manifest) =
        Manifest::parse(&bytes, Some(media_type::OCI_MANIFEST)).unwrap()
    else {
        panic!("not an image manifest")
    };
    (bytes, manifest)
}

/// Pushes the layers and config of `manifest` (blobs of `image`'s layout) to `target`.
pub(crate) async fn push_blobs(
    client: &Client,
    target: &Reference,
    image: &TestImage,
    manifest: &ImageManifest,
    mount_from: Option<&str>,
) {
    for descriptor in manifest
        .layers
        .iter()
        .chain(std::iter::once(&manifest.config))
    {
        let path = layout_blob(image, &descriptor.digest.to_string());
        client
            .push_blob(target, descriptor, &path, mount_from)
            .await
            .unwrap();
    }
}
