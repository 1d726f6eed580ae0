//! Where a built image goes: registries (every blob first, then one manifest per
//! destination), a docker-archive tarball, an OCI layout, and digest files. Files appear
//! atomically (temp + rename).

use crate::engine::{Builder, BuiltImage};
use crate::error::BuildError;
use kiln_oci::{media_type, DockerArchiveWriter, OciLayoutWriter};
use kiln_registry::Reference;
use std::path::Path;

impl Builder {
    /// Pushes `image` to `destination`: layers (mounted from their base repository when it
    /// is on the same registry, else uploaded), the config, then the manifest. Returns the
    /// manifest digest the registry stored.
    pub fn push(
        &self,
        image: &BuiltImage,
        destination: &Reference,
    ) -> Result<kiln_oci::Digest, BuildError> {
        let client = self.client();
        let push_err = BuildError::registry;
        for layer in &image.layers {
            if media_type::is_foreign(&layer.descriptor.media_type) {
                continue;
            }
            let local = self.store().blob_path(&layer.descriptor.digest);
            let what = format!("pushing layer {} to {destination}", layer.descriptor.digest);
            if !local.is_file() {
                if let Some(source) = layer
                    .remote
                    .as_ref()
                    .filter(|s| s.registry == destination.registry)
                {
                    // A base layer kiln never downloaded: ask the registry to mount it.
                    let exists = self
                        .block_on(client.blob_exists(destination, &layer.descriptor.digest))
                        .map_err(push_err(what.clone()))?;
                    if exists {
                        continue;
                    }
                    let mounted = self.block_on(client.push_blob(
                        destination,
                        &layer.descriptor,
                        &local,
                        Some(&source.repository),
                    ));
                    if mounted.is_ok() {
                        continue;
                    }
                }
                self.ensure_blob(layer)?;
            }
            let mount_from = layer
                .remote
                .as_ref()
                .filter(|s| s.registry == destination.registry)
                .map(|s| s.repository.clone());
            self.block_on(client.push_blob(
                destination,
                &layer.descriptor,
                &local,
                mount_from.as_deref(),
            ))
            .map_err(push_err(what))?;
        }
        let config_path = self.store().blob_path(&image.config_descriptor.digest);
        self.block_on(client.push_blob(destination, &image.config_descriptor, &config_path, None))
            .map_err(push_err(format!("pushing the config to {destination}")))?;
        let digest = self
            .block_on(client.push_manifest(
                destination,
                &image.manifest,
                &image.manifest_descriptor.media_type,
            ))
            .map_err(push_err(format!("pushing the manifest to {destination}")))?;
        self.reporter()
            .info(&format!("pushed {destination}@{digest}"));
        Ok(digest)
    }

    /// Writes `image` as a docker-archive (`docker load`) at `path` with these tags.
    pub fn write_docker_archive(
        &self,
        image: &BuiltImage,
        path: &Path,
        tags: &[String],
    ) -> Result<(), BuildError> {
        let out_err = |source| BuildError::Output {
            what: format!("the docker archive {}", path.display()),
            source,
        };
        let mut files = Vec::new();
        for layer in &image.layers {
            let blob = self.ensure_blob(layer)?;
            let file = std::fs::File::open(&blob).map_err(BuildError::io("opening", &blob))?;
            files.push((layer.descriptor.clone(), file));
        }
        let mut out = DockerArchiveWriter::create(path).map_err(out_err)?;
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        out.add_image(&image.config, files, &tags)
            .map_err(out_err)?;
        out.finish().map_err(out_err)?;
        Ok(())
    }

    /// Writes `image` as an OCI image layout at `path`, its manifest named `ref_name`. A
    /// Docker-format image is stored with an OCI manifest (as skopeo does): same blobs,
    /// another manifest digest.
    pub fn write_oci_layout(
        &self,
        image: &BuiltImage,
        path: &Path,
        ref_name: &str,
    ) -> Result<(), BuildError> {
        let out_err = |source| BuildError::Output {
            what: format!("the OCI layout {}", path.display()),
            source,
        };
        let mut out = OciLayoutWriter::create(path).map_err(out_err)?;
        let manifest =
            kiln_oci::Manifest::parse(&image.manifest, Some(&image.manifest_descriptor.media_type))
                .map_err(out_err)?;
        let kiln_oci::Manifest::Image(manifest) = manifest else {
            unreachable!("kiln builds image manifests")
        };
        let oci = manifest.to_oci();
        out.add_blob(&image.config[..], Some(&oci.config))
            .map_err(out_err)?;
        for (layer, descriptor) in image.layers.iter().zip(&oci.layers) {
            if media_type::is_foreign(&descriptor.media_type) {
                continue;
            }
            let blob = self.ensure_blob(layer)?;
            let file = std::fs::File::open(&blob).map_err(BuildError::io("opening", &blob))?;
            out.add_blob(
                std::io::BufReader::with_capacity(1 << 20, file),
                Some(descriptor),
            )
            .map_err(out_err)?;
        }
        let bytes = kiln_oci::Manifest::Image(oci)
            .to_canonical_json()
            .map_err(out_err)?;
        out.add_manifest(&bytes, media_type::OCI_MANIFEST, Some(ref_name))
            .map_err(out_err)?;
        out.finish().map_err(out_err)?;
        Ok(())
    }
}

/// Writes `text` to `path` atomically (a temp file beside it, then a rename).
pub fn write_file_atomically(path: &Path, text: &str) -> Result<(), BuildError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(BuildError::io("creating a file in", dir))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .map_err(BuildError::io("writing", path))?;
    tmp.persist(path).map_err(|e| BuildError::Io {
        what: "writing",
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}
