//! Where a built image goes: registries (every blob first, then one manifest per
//! destination), a docker-archive tarball, an OCI layout, and digest files. Files appear
//! atomically (temp + rename).

use crate::error::BuildError;
use crate::layers::LayerServices;
use crate::options::Reporter;
use crate::types::BuiltImage;
use kiln_oci::{media_type, DockerArchiveWriter, OciLayoutWriter};
use kiln_registry::Reference;
use std::path::Path;

/// The outputs, written from the layer services (the engine's `Builder` offers them).
impl LayerServices {
    /// Pushes `image` to `destination`: layers (mounted from their base repository when it
    /// is on the same registry, else uploaded), the config, then the manifest. Returns the
    /// manifest digest the registry stored.
    pub(crate) fn push(
        &self,
        image: &BuiltImage,
        destination: &Reference,
        reporter: &dyn Reporter,
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
        reporter.info(&format!("pushed {destination}@{digest}"));
        Ok(digest)
    }

    /// Writes `image` as a docker-archive (`docker load`) at `path` with these tags.
    pub(crate) fn write_docker_archive(
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

    /// Writes `image` as an OCI image layout at `path`, its manifest named `ref_name`. The
    /// manifest is stored as built (a Docker-format image keeps its Docker media types, as
    /// kaniko writes it), so the layout's manifest digest is the digest pushed.
    pub(crate) fn write_oci_layout(
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
        out.add_blob(&image.config[..], Some(&image.config_descriptor))
            .map_err(out_err)?;
        for layer in &image.layers {
            if media_type::is_foreign(&layer.descriptor.media_type) {
                continue;
            }
            let blob = self.ensure_blob(layer)?;
            let file = std::fs::File::open(&blob).map_err(BuildError::io("opening", &blob))?;
            out.add_blob(
                std::io::BufReader::with_capacity(1 << 20, file),
                Some(&layer.descriptor),
            )
            .map_err(out_err)?;
        }
        out.add_manifest(
            &image.manifest,
            &image.manifest_descriptor.media_type,
            Some(ref_name),
        )
        .map_err(out_err)?;
        out.finish().map_err(out_err)?;
        Ok(())
    }
}

/// Writes `text` to `path` atomically (a temp file beside it, then a rename), creating missing
/// parent directories as kaniko does. A path that cannot be replaced by a rename (a device, or a
/// file bind-mounted into the container such as `/dev/termination-log`) is written in place.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(BuildError::io("creating", dir))?;
    let in_place = || std::fs::write(path, bytes).map_err(BuildError::io("writing", path));
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return in_place();
    }
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(BuildError::io("creating a file in", dir))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(BuildError::io("writing", path))?;
    match tmp.persist(path) {
        Ok(_) => Ok(()),
        // EBUSY: the target is a mount point (a bind-mounted file).
        Err(e) if e.error.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
            in_place()
        }
        Err(e) => Err(BuildError::Io {
            what: "writing",
            path: path.to_owned(),
            source: e.error,
        }),
    }
}
