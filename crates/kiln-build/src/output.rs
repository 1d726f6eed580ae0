//! Where a built image goes: registries (every blob first, then one manifest per
//! destination), a docker-archive tarball, an OCI layout, and digest files. Files appear
//! atomically (temp + rename).

use crate::error::BuildError;
use crate::layers::LayerServices;
use crate::options::Reporter;
use crate::types::{BuiltImage, Layer};
use kiln_oci::{media_type, Descriptor, DockerArchiveWriter, OciLayoutWriter};
use kiln_registry::Reference;
use std::path::Path;

/// How many blobs a push sends at once.
const PUSH_AT_ONCE: usize = 8;

/// The outputs, written from the layer services (the engine's `Builder` offers them).
impl LayerServices {
    /// Pushes `image` to `destination`: its layers and config at once (each already there,
    /// mounted from its base repository when that is on the same registry, or uploaded; at
    /// most [`PUSH_AT_ONCE`] at a time), then the manifest. Returns the manifest digest the
    /// registry stored.
    pub(crate) fn push(
        &self,
        image: &BuiltImage,
        destination: &Reference,
        reporter: &dyn Reporter,
    ) -> Result<kiln_oci::Digest, BuildError> {
        let push_err = BuildError::registry;
        let on_destination = |layer: &Layer| {
            layer
                .remote
                .as_ref()
                .filter(|s| s.registry == destination.registry)
                .map(|s| s.repository.clone())
        };
        let mut blobs: Vec<(Descriptor, Option<String>, Option<&Layer>)> = Vec::new();
        for layer in &image.layers {
            if media_type::is_foreign(&layer.descriptor.media_type) {
                continue;
            }
            // A base layer from another registry that kiln never downloaded: fetched first.
            let local = self.store().blob_path(&layer.descriptor.digest);
            if !local.is_file() && on_destination(layer).is_none() {
                self.ensure_blob(layer)?;
            }
            // A layer twice in one image is pushed once.
            if blobs
                .iter()
                .all(|(d, _, _)| d.digest != layer.descriptor.digest)
            {
                blobs.push((layer.descriptor.clone(), on_destination(layer), Some(layer)));
            }
        }
        blobs.push((image.config_descriptor.clone(), None, None));
        for batch in blobs.chunks(PUSH_AT_ONCE) {
            let handles: Vec<_> = batch
                .iter()
                .map(|(descriptor, mount_from, _)| {
                    let client = self.shared_client();
                    let (destination, descriptor) = (destination.clone(), descriptor.clone());
                    let local = self.store().blob_path(&descriptor.digest);
                    let mount_from = mount_from.clone();
                    self.spawn(async move {
                        if local.is_file() {
                            return client
                                .push_blob(&destination, &descriptor, &local, mount_from.as_deref())
                                .await
                                .map(|_| true);
                        }
                        // Never downloaded, on this registry: there already, or mounted.
                        if client.blob_exists(&destination, &descriptor.digest).await? {
                            return Ok(true);
                        }
                        let mounted = client
                            .push_blob(&destination, &descriptor, &local, mount_from.as_deref())
                            .await;
                        Ok(mounted.is_ok())
                    })
                })
                .collect();
            let outcomes = self.block_on(async {
                let mut outcomes = Vec::with_capacity(handles.len());
                for handle in handles {
                    outcomes.push(handle.await);
                }
                outcomes
            });
            for ((descriptor, mount_from, layer), outcome) in batch.iter().zip(outcomes) {
                let what = match layer {
                    Some(_) => format!("pushing layer {} to {destination}", descriptor.digest),
                    None => format!("pushing the config to {destination}"),
                };
                let done = match outcome {
                    Ok(result) => result.map_err(push_err(what.clone()))?,
                    Err(e) => {
                        return Err(BuildError::Options(format!("{what}: the task failed: {e}")))
                    }
                };
                if done {
                    continue;
                }
                // The registry would not mount it: download it and upload it.
                let Some(layer) = layer else {
                    return Err(BuildError::Io {
                        what: "missing config blob",
                        path: self.store().blob_path(&descriptor.digest),
                        source: std::io::ErrorKind::NotFound.into(),
                    });
                };
                let local = self.ensure_blob(layer)?;
                self.block_on(self.client().push_blob(
                    destination,
                    descriptor,
                    &local,
                    mount_from.as_deref(),
                ))
                .map_err(push_err(what))?;
            }
        }
        let digest = self
            .block_on(self.client().push_manifest(
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
