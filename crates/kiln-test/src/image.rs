//! A tiny OCI image layout written by hand: one config, one small gzip layer
//! per platform, and for multi-platform images an image index, so tests can
//! push known bytes with skopeo and check what a client pulls.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use ring::digest::{digest, SHA256};
use serde_json::json;

use crate::error::{IoContext, Result};
use crate::registry::Registry;
use crate::skopeo::{push_layout, PushOptions};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OS/architecture pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// `os`, e.g. `linux`.
    pub os: &'static str,
    /// `architecture`, e.g. `amd64`.
    pub architecture: &'static str,
}

impl Platform {
    /// `linux/amd64`.
    pub const LINUX_AMD64: Platform = Platform {
        os: "linux",
        architecture: "amd64",
    };
    /// `linux/arm64`.
    pub const LINUX_ARM64: Platform = Platform {
        os: "linux",
        architecture: "arm64",
    };
}

/// What one single-platform image in a [`TestImage`] is made of.
#[derive(Debug, Clone)]
pub struct ImageBlobs {
    /// Its platform.
    pub platform: Platform,
    /// Digest of the OCI manifest in the layout (`sha256:…`).
    pub manifest_digest: String,
    /// Size of that manifest.
    pub manifest_size: u64,
    /// Digest of the config blob.
    pub config_digest: String,
    /// Digest of the gzip layer.
    pub layer_digest: String,
    /// Size of the gzip layer.
    pub layer_size: u64,
    /// Digest of the uncompressed layer tar (the config's `diff_ids[0]`).
    pub diff_id: String,
    /// Path of the one file in the layer.
    pub file_path: String,
    /// Contents of that file.
    pub file_contents: Vec<u8>,
}

/// A hand-written OCI layout in a temp dir, tagged `latest`.
#[derive(Debug)]
pub struct TestImage {
    dir: tempfile::TempDir,
    images: Vec<ImageBlobs>,
    index_digest: Option<String>,
}

impl TestImage {
    /// A linux/amd64 image whose one layer holds `kiln-test.txt` = `contents`.
    pub fn single(contents: &[u8]) -> Result<Self> {
        Self::build(contents, &[Platform::LINUX_AMD64], false)
    }

    /// A linux/amd64 + linux/arm64 image under an OCI image index; each
    /// layer's file is `contents` followed by a line naming the architecture.
    pub fn multi_platform(contents: &[u8]) -> Result<Self> {
        Self::build(
            contents,
            &[Platform::LINUX_AMD64, Platform::LINUX_ARM64],
            true,
        )
    }

    /// The layout's directory.
    pub fn layout_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The tag in the layout (`latest`).
    pub fn tag(&self) -> &str {
        "latest"
    }

    /// The skopeo source reference, `oci:DIR:latest`.
    pub fn oci_reference(&self) -> String {
        format!("oci:{}:{}", self.dir.path().display(), self.tag())
    }

    /// The images, one per platform.
    pub fn images(&self) -> &[ImageBlobs] {
        &self.images
    }

    /// Digest of the image index, for a multi-platform image.
    pub fn index_digest(&self) -> Option<&str> {
        self.index_digest.as_deref()
    }

    /// Whether this is a multi-platform image.
    pub fn is_multi_platform(&self) -> bool {
        self.index_digest.is_some()
    }

    /// Pushes the image to `registry` as `repo:tag` with skopeo (`--all` for a
    /// multi-platform image) and returns the pushed manifest digest.
    pub fn push(
        &self,
        registry: &Registry,
        repo_tag: &str,
        options: &PushOptions,
    ) -> Result<String> {
        push_layout(
            &self.oci_reference(),
            self.is_multi_platform(),
            registry,
            repo_tag,
            options,
        )
    }

    fn build(contents: &[u8], platforms: &[Platform], as_index: bool) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-oci-")
            .tempdir()
            .context(|| "create OCI layout temp dir".into())?;
        let blobs_dir = dir.path().join("blobs").join("sha256");
        fs::create_dir_all(&blobs_dir).path_context(&blobs_dir)?;
        write_file(
            &dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;

        let mut images = Vec::new();
        for platform in platforms {
            let mut file_contents = contents.to_vec();
            if as_index {
                file_contents
                    .extend_from_slice(format!("\n{}\n", platform.architecture).as_bytes());
            }
            images.push(write_image(&blobs_dir, *platform, file_contents)?);
        }

        let descriptor = |image: &ImageBlobs, platform: bool| {
            let mut d = json!({
                "mediaType": OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": image.manifest_size,
            });
            if platform {
                d["platform"] = json!({
                    "architecture": image.platform.architecture,
                    "os": image.platform.os,
                });
            }
            d
        };
        let (top, index_digest) = if as_index {
            let index = json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": images.iter().map(|i| descriptor(i, true)).collect::<Vec<_>>(),
            });
            let (digest, size) = write_blob(&blobs_dir, index.to_string().as_bytes())?;
            let top = json!({
                "mediaType": OCI_INDEX,
                "digest": digest,
                "size": size,
                "annotations": { REF_NAME: "latest" },
            });
            (top, Some(digest))
        } else {
            let mut top = descriptor(&images[0], false);
            top["annotations"] = json!({ REF_NAME: "latest" });
            (top, None)
        };
        let index_json = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [top],
        });
        write_file(
            &dir.path().join("index.json"),
            index_json.to_string().as_bytes(),
        )?;
        Ok(Self {
            dir,
            images,
            index_digest,
        })
    }
}

fn write_image(blobs_dir: &Path, platform: Platform, file_contents: Vec<u8>) -> Result<ImageBlobs> {
    let file_path = "kiln-test.txt".to_string();
    let tar_bytes = layer_tar(&file_path, &file_contents)?;
    let diff_id = sha256(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar_bytes)
        .context(|| "gzip test layer".into())?;
    let gz_bytes = gz.finish().context(|| "gzip test layer".into())?;
    let (layer_digest, layer_size) = write_blob(blobs_dir, &gz_bytes)?;

    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "config": { "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/kiln-test.txt"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "kiln-test TestImage" }],
    });
    let (config_digest, config_size) = write_blob(blobs_dir, config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size }],
    });
    let (manifest_digest, manifest_size) = write_blob(blobs_dir, manifest.to_string().as_bytes())?;
    Ok(ImageBlobs {
        platform,
        manifest_digest,
        manifest_size,
        config_digest,
        layer_digest,
        layer_size,
        diff_id,
        file_path,
        file_contents,
    })
}

fn layer_tar(path: &str, contents: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, path, contents)
        .context(|| "build test layer tar".into())?;
    builder
        .into_inner()
        .context(|| "finish test layer tar".into())
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    let d = digest(&SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

pub(crate) fn write_blob(blobs_dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let digest = sha256(bytes);
    let path: PathBuf = blobs_dir.join(&digest["sha256:".len()..]);
    write_file(&path, bytes)?;
    Ok((digest, bytes.len() as u64))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).path_context(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_platform_layout_nests_an_index_with_two_platforms() {
        let image = TestImage::multi_platform(b"hi").unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(image.layout_dir().join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index["manifests"][0]["mediaType"], OCI_INDEX);
        assert_eq!(
            index["manifests"][0]["digest"],
            image.index_digest().unwrap()
        );
        assert_eq!(image.images().len(), 2);
        assert_ne!(
            image.images()[0].layer_digest,
            image.images()[1].layer_digest
        );
        for blob in [
            &image.images()[0].manifest_digest,
            &image.images()[1].layer_digest,
        ] {
            let path = image.layout_dir().join("blobs/sha256").join(&blob[7..]);
            assert_eq!(&sha256(&fs::read(path).unwrap()), blob);
        }
    }
}
