//! Writing a docker-archive tarball (what `docker save` makes and `docker
//! load`, `podman load` and `skopeo copy docker-archive:…` read).
//!
//! Layout of the tar:
//!
//! ```text
//! <config hex>.json            the image config, as given
//! <layer hex>/layer.tar        each layer blob, as given (see below)
//! manifest.json                [{"Config":…,"RepoTags":[…],"Layers":[…]}]
//! repositories                 {"repo":{"tag":"<top layer hex>"}} (legacy)
//! ```
//!
//! `<layer hex>` is the hex of the layer descriptor's digest. Layers are
//! written as they come, without recompression: `docker load` (1.10 and
//! later) and containers/image (podman, skopeo) detect compression by magic
//! number, so gzip layers load, and are smaller and faster to write than
//! decompressing them. zstd layers load with Docker 23 and later and with
//! containers/image; older Docker needs gzip or plain tar. Either way the
//! uncompressed content must match the config's `rootfs.diff_ids`, which
//! the loaders check. The tarball is written to a temp file beside the target
//! and renamed over it when [`DockerArchiveWriter::finish`] succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tempfile::NamedTempFile;

use crate::config::ImageConfig;
use crate::descriptor::Descriptor;
use crate::digest::{Digest, VerifyingReader};
use crate::error::Error;
use crate::fsutil;
use crate::media_type;

/// One `manifest.json` entry.
#[derive(Serialize)]
struct ArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Builds a docker-archive tarball of one or more images.
pub struct DockerArchiveWriter {
    path: PathBuf,
    tmp: NamedTempFile,
    tar: tar::Builder<BufWriter<File>>,
    entries: Vec<ArchiveEntry>,
    repositories: BTreeMap<String, BTreeMap<String, String>>,
    written: BTreeSet<String>,
    /// Set when a write failed: the tar may be cut mid-entry.
    failed: bool,
}

impl std::fmt::Debug for DockerArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerArchiveWriter")
            .field("path", &self.path)
            .field("images", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl DockerArchiveWriter {
    /// Starts an archive that will appear at `path` (a file there is replaced;
    /// a directory is refused). The parent directory must exist.
    pub fn create(path: impl AsRef<Path>) -> Result<DockerArchiveWriter, Error> {
        let path = path.as_ref().to_owned();
        if path.is_dir() {
            return Err(Error::DestinationExists {
                path,
                expected: "a file",
            });
        }
        let parent = fsutil::parent_dir(&path);
        let name = fsutil::file_name(&path)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempfile_in(&parent)
            .map_err(|e| Error::io("create a temp file in", &parent, e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| Error::io("open", tmp.path(), e))?;
        Ok(DockerArchiveWriter {
            path,
            tar: tar::Builder::new(BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            entries: Vec::new(),
            repositories: BTreeMap::new(),
            written: BTreeSet::new(),
            failed: false,
        })
    }

    /// Adds an image: its config blob, its layers in order (base first), each
    /// a descriptor with a reader of exactly that content, and its tags
    /// (`name:tag`, e.g. `registry.example.com/app:1.2`).
    ///
    /// Each layer is streamed into the tar and verified against its
    /// descriptor's size and digest on the way; a mismatch fails the whole
    /// archive. The number of layers must equal the config's
    /// `rootfs.diff_ids`. A layer already in the archive is not written twice.
    /// Arguments are checked before anything is written; an error while
    /// writing leaves the writer failed (later calls return
    /// [`Error::WriterFailed`]) and dropping it removes the temp file.
    pub fn add_image<I, R>(
        &mut self,
        config: &[u8],
        layers: I,
        repo_tags: &[&str],
    ) -> Result<(), Error>
    where
        I: IntoIterator<Item = (Descriptor, R)>,
        R: Read,
    {
        let parsed = ImageConfig::parse(config)?;
        let layers: Vec<(Descriptor, R)> = layers.into_iter().collect();
        if layers.len() != parsed.rootfs.diff_ids.len() {
            return Err(Error::LayerCountMismatch {
                layers: layers.len(),
                diff_ids: parsed.rootfs.diff_ids.len(),
            });
        }
        let tags = repo_tags
            .iter()
            .map(|t| split_repo_tag(t))
            .collect::<Result<Vec<_>, _>>()?;
        for (desc, _) in &layers {
            if !media_type::is_layer(&desc.media_type) {
                return Err(Error::UnsupportedMediaType {
                    media_type: desc.media_type.clone(),
                    context: "a layer in a docker archive",
                });
            }
        }

        if self.failed {
            return Err(Error::WriterFailed {
                path: self.path.clone(),
            });
        }
        let result = self.write_image(config, layers, repo_tags, &tags);
        self.failed = result.is_err();
        result
    }

    fn write_image<R: Read>(
        &mut self,
        config: &[u8],
        layers: Vec<(Descriptor, R)>,
        repo_tags: &[&str],
        tags: &[(&str, &str)],
    ) -> Result<(), Error> {
        let config_digest = Digest::of(config);
        let config_name = format!("{}.json", config_digest.hex());
        if self.written.insert(config_name.clone()) {
            self.append_bytes(&config_name, config)?;
        }

        let mut layer_names = Vec::with_capacity(layers.len());
        for (desc, reader) in layers {
            let dir = desc.digest.hex().to_owned();
            let name = format!("{dir}/layer.tar");
            if self.written.insert(name.clone()) {
                self.append_dir(&format!("{dir}/"))?;
                self.append_layer(&name, &desc, reader)?;
            }
            layer_names.push(name);
        }

        if let Some(top) = layer_names.last() {
            let top = top.trim_end_matches("/layer.tar").to_owned();
            for (repo, tag) in tags {
                self.repositories
                    .entry((*repo).to_owned())
                    .or_default()
                    .insert((*tag).to_owned(), top.clone());
            }
        }
        self.entries.push(ArchiveEntry {
            config: config_name,
            repo_tags: repo_tags.iter().map(|t| (*t).to_owned()).collect(),
            layers: layer_names,
        });
        Ok(())
    }

    /// Writes `manifest.json` and `repositories`, then moves the archive into place.
    pub fn finish(mut self) -> Result<PathBuf, Error> {
        if self.failed {
            return Err(Error::WriterFailed { path: self.path });
        }
        let manifest = serde_json::to_vec(&self.entries)
            .map_err(|e| Error::json("docker archive manifest", e))?;
        self.append_bytes("manifest.json", &manifest)?;
        let repositories = serde_json::to_vec(&self.repositories)
            .map_err(|e| Error::json("docker archive repositories", e))?;
        self.append_bytes("repositories", &repositories)?;

        let tmp_path = self.tmp.path().to_owned();
        let io = |e| Error::io("write", &tmp_path, e);
        self.tar.finish().map_err(io)?;
        let mut out = self.tar.into_inner().map_err(io)?;
        out.flush().map_err(io)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        fsutil::set_mode(&tmp_path, 0o644)?;
        self.tmp
            .persist(&self.path)
            .map_err(|e| Error::io("rename into", &self.path, e.error))?;
        fsutil::sync_dir(&fsutil::parent_dir(&self.path))?;
        Ok(self.path)
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn append_dir(&mut self, name: &str) -> Result<(), Error> {
        let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.tar
            .append_data(&mut h, name, std::io::empty())
            .map_err(|e| Error::io("write", self.tmp.path(), e))
    }

    fn append_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut h = Self::header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
        self.tar
            .append_data(&mut h, name, bytes)
            .map_err(|e| Error::io("write", self.tmp.path(), e))
    }

    fn append_layer(
        &mut self,
        name: &str,
        desc: &Descriptor,
        reader: impl Read,
    ) -> Result<(), Error> {
        let mut h = Self::header(tar::EntryType::Regular, desc.size, 0o644);
        let mut verifying = VerifyingReader::new(reader, desc.digest.clone(), desc.size);
        self.tar
            .append_data(&mut h, name, &mut verifying)
            .map_err(|e| Error::from_io(format!("layer {}", desc.digest), e))?;
        if !verifying.is_verified() {
            // The tar crate stops at end of stream; make sure it was the end we expected.
            let mut probe = [0u8; 1];
            verifying
                .read(&mut probe)
                .map_err(|e| Error::from_io(format!("layer {}", desc.digest), e))?;
        }
        Ok(())
    }
}

/// Splits `name:tag` at the tag colon (the last `:` after the last `/`).
fn split_repo_tag(tag: &str) -> Result<(&str, &str), Error> {
    let invalid = |reason| Error::InvalidRepoTag {
        tag: tag.to_owned(),
        reason,
    };
    if tag.contains('@') {
        return Err(invalid("a docker archive holds tags, not digests"));
    }
    let slash = tag.rfind('/').map_or(0, |i| i + 1);
    let colon = tag[slash..]
        .rfind(':')
        .map(|i| i + slash)
        .ok_or_else(|| invalid("expected name:tag"))?;
    let (repo, tag_part) = (&tag[..colon], &tag[colon + 1..]);
    if repo.is_empty() || tag_part.is_empty() {
        return Err(invalid("expected name:tag"));
    }
    Ok((repo, tag_part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;
    use std::fs;
    use std::io::Read;

    fn config_for(layers: &[&[u8]]) -> Vec<u8> {
        let mut cfg = ImageConfig::for_platform(&Platform::new("linux", "amd64"));
        for l in layers {
            cfg.rootfs.diff_ids.push(Digest::of(l));
        }
        cfg.to_canonical_json().unwrap()
    }

    fn entries(path: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut ar = tar::Archive::new(File::open(path).unwrap());
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data)
            })
            .collect()
    }

    #[test]
    fn the_archive_has_config_layers_manifest_and_repositories() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("image.tar");
        let (l1, l2): (&[u8], &[u8]) = (b"first layer", b"second layer");
        let config = config_for(&[l1, l2]);
        let d1 = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, l1);
        let d2 = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, l2);
        let mut w = DockerArchiveWriter::create(&out).unwrap();
        w.add_image(
            &config,
            vec![(d1.clone(), l1), (d2.clone(), l2)],
            &["registry.example.com:5000/team/app:1.0", "app:latest"],
        )
        .unwrap();
        assert!(!out.exists(), "nothing visible before finish");
        w.finish().unwrap();

        let files = entries(&out);
        let cfg_name = format!("{}.json", Digest::of(&config).hex());
        assert_eq!(files[&cfg_name], config);
        assert_eq!(files[&format!("{}/layer.tar", d1.digest.hex())], l1);
        assert_eq!(files[&format!("{}/layer.tar", d2.digest.hex())], l2);
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(
            manifest,
            serde_json::json!([{
                "Config": cfg_name,
                "RepoTags": ["registry.example.com:5000/team/app:1.0", "app:latest"],
                "Layers": [
                    format!("{}/layer.tar", d1.digest.hex()),
                    format!("{}/layer.tar", d2.digest.hex()),
                ],
            }])
        );
        let repos: serde_json::Value = serde_json::from_slice(&files["repositories"]).unwrap();
        assert_eq!(
            repos,
            serde_json::json!({
                "registry.example.com:5000/team/app": {"1.0": d2.digest.hex()},
                "app": {"latest": d2.digest.hex()},
            })
        );
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[test]
    fn a_layer_that_does_not_match_its_descriptor_fails_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("image.tar");
        let layer: &[u8] = b"the real layer";
        let config = config_for(&[layer]);
        let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, layer);
        for (content, want) in [
            (&b"the fake layer"[..], "digest mismatch"),
            (&b"the real"[..], "size mismatch"),
            (&b"the real layer, longer"[..], "size mismatch"),
        ] {
            let mut w = DockerArchiveWriter::create(&out).unwrap();
            let err = w
                .add_image(&config, vec![(desc.clone(), content)], &["a:b"])
                .unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
            let again = w.add_image(&config, vec![(desc.clone(), layer)], &["a:b"]);
            assert!(matches!(again, Err(Error::WriterFailed { .. })));
            assert!(matches!(w.finish(), Err(Error::WriterFailed { .. })));
            assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn layer_count_must_match_the_config() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = DockerArchiveWriter::create(tmp.path().join("x.tar")).unwrap();
        let err = w
            .add_image(
                &config_for(&[b"a", b"b"]),
                Vec::<(Descriptor, &[u8])>::new(),
                &[],
            )
            .unwrap_err();
        assert!(matches!(
            err,
            Error::LayerCountMismatch {
                layers: 0,
                diff_ids: 2
            }
        ));
    }

    #[test]
    fn repo_tags_must_be_name_colon_tag() {
        assert_eq!(split_repo_tag("a:b").unwrap(), ("a", "b"));
        assert_eq!(
            split_repo_tag("localhost:5000/a/b:c").unwrap(),
            ("localhost:5000/a/b", "c")
        );
        for bad in ["a", "localhost:5000/a", "a:", ":b", "a@sha256:00"] {
            assert!(
                matches!(split_repo_tag(bad), Err(Error::InvalidRepoTag { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn non_layer_media_types_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = DockerArchiveWriter::create(tmp.path().join("x.tar")).unwrap();
        let l: &[u8] = b"l";
        let err = w
            .add_image(
                &config_for(&[l]),
                vec![(Descriptor::for_bytes(media_type::OCI_CONFIG, l), l)],
                &[],
            )
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType { .. }));
    }

    #[test]
    fn shared_layers_are_written_once_and_an_existing_file_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("x.tar");
        fs::write(&out, b"old content").unwrap();
        let l: &[u8] = b"shared";
        let d = Descriptor::for_bytes(media_type::DOCKER_LAYER_TAR, l);
        let mut w = DockerArchiveWriter::create(&out).unwrap();
        w.add_image(&config_for(&[l]), vec![(d.clone(), l)], &["a:1"])
            .unwrap();
        w.add_image(
            &config_for(&[l, l]),
            vec![(d.clone(), l), (d.clone(), l)],
            &["b:2"],
        )
        .unwrap();
        w.finish().unwrap();
        let mut ar = tar::Archive::new(File::open(&out).unwrap());
        let layer_entries = ar
            .entries()
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().unwrap().ends_with("layer.tar"))
            .count();
        assert_eq!(layer_entries, 1);
        let files = entries(&out);
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest.as_array().unwrap().len(), 2);
        assert_eq!(manifest[1]["Layers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_directory_target_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = DockerArchiveWriter::create(tmp.path()).unwrap_err();
        assert!(matches!(err, Error::DestinationExists { .. }));
    }
}
