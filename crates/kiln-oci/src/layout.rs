//! Writing an OCI image layout directory (`oci-layout`, `blobs/`, `index.json`).
//!
//! The layout is built in a hidden sibling, `<path>.tmp-XXXXXX`, and renamed
//! to `<path>` by [`OciLayoutWriter::finish`], so a reader never sees a
//! half-written layout. A writer dropped without `finish` removes its
//! staging directory. Every blob is streamed through a hasher into a temp
//! file in `blobs/<alg>/` and renamed to its digest only once it matched.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use crate::descriptor::Descriptor;
use crate::digest::{Algorithm, Digest, Digested};
use crate::error::Error;
use crate::fsutil;
use crate::manifest::{ImageIndex, Manifest};
use crate::media_type;

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT_FILE_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Builds an OCI image layout and publishes it atomically.
///
/// If `<path>` already exists it must be an OCI layout (it has an
/// `oci-layout` file) or an empty directory, and [`finish`](Self::finish)
/// replaces it whole: the old directory is renamed aside, the new one renamed
/// into place, then the old one removed. Between those two renames `<path>`
/// briefly does not exist (Linux cannot exchange non-empty directories
/// without `renameat2`); it never holds a mix of old and new. Anything else
/// at `<path>` is refused with [`Error::DestinationExists`]. Layouts are
/// written whole, not appended to.
#[derive(Debug)]
pub struct OciLayoutWriter {
    path: PathBuf,
    staging: TempDir,
    index: ImageIndex,
    blobs: BTreeMap<Digest, u64>,
}

impl OciLayoutWriter {
    /// Starts a layout that will appear at `path`. Its parent directory must exist.
    pub fn create(path: impl AsRef<Path>) -> Result<OciLayoutWriter, Error> {
        let path = path.as_ref().to_owned();
        check_replaceable(&path)?;
        let parent = fsutil::parent_dir(&path);
        let name = fsutil::file_name(&path)?;
        let staging = tempfile::Builder::new()
            .prefix(&format!("{name}.tmp-"))
            .tempdir_in(&parent)
            .map_err(|e| Error::io("create a staging directory in", &parent, e))?;
        let blobs = staging.path().join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| Error::io("create", &blobs, e))?;
        fsutil::write_file(&staging.path().join("oci-layout"), OCI_LAYOUT_FILE_CONTENT)?;
        Ok(OciLayoutWriter {
            path,
            staging,
            index: ImageIndex::default(),
            blobs: BTreeMap::new(),
        })
    }

    /// Where the layout will appear.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if a blob with this digest was added.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    /// The index built so far.
    pub fn index(&self) -> &ImageIndex {
        &self.index
    }

    /// Streams a blob into `blobs/<alg>/<hex>`.
    ///
    /// With `expected`, the content must have its size and digest (hashed with
    /// its algorithm) or the blob is discarded and an error returned; reading
    /// stops one byte past the expected size. Without it the blob is hashed
    /// with sha256. Adding the same content twice is harmless.
    pub fn add_blob<R: Read>(
        &mut self,
        reader: R,
        expected: Option<&Descriptor>,
    ) -> Result<Digested, Error> {
        let algorithm = expected.map_or(Algorithm::Sha256, |d| d.digest.algorithm());
        let dir = self.staging.path().join("blobs").join(algorithm.as_str());
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let tmp =
            NamedTempFile::new_in(&dir).map_err(|e| Error::io("create a blob in", &dir, e))?;
        let what = expected.map_or_else(|| "blob".to_owned(), |d| d.digest.to_string());
        let digested = match expected {
            Some(d) => fsutil::copy_hashed(
                reader.take(d.size.saturating_add(1)),
                tmp.as_file(),
                algorithm,
                &what,
                tmp.path(),
            )?,
            None => fsutil::copy_hashed(reader, tmp.as_file(), algorithm, &what, tmp.path())?,
        };
        if let Some(d) = expected {
            d.verify_digested(&digested)?;
        }
        if self.blobs.contains_key(&digested.digest) {
            return Ok(digested);
        }
        let target = dir.join(digested.digest.hex());
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("sync", tmp.path(), e))?;
        fsutil::set_mode(tmp.path(), 0o644)?;
        tmp.persist(&target)
            .map_err(|e| Error::io("rename into", &target, e.error))?;
        self.blobs.insert(digested.digest.clone(), digested.size);
        Ok(digested)
    }

    /// Stores a manifest or index and lists it in `index.json`, named by
    /// `ref_name` (the `org.opencontainers.image.ref.name` annotation, the
    /// tag skopeo and umoci look up) when given. A ref name already in the
    /// index moves to the new manifest.
    ///
    /// The bytes must parse as `media_type`, and every blob they refer to
    /// (config and layers other than foreign ones, or an index's manifests)
    /// must have been added first.
    pub fn add_manifest(
        &mut self,
        bytes: &[u8],
        media_type: &str,
        ref_name: Option<&str>,
    ) -> Result<Descriptor, Error> {
        media_type::refuse_schema1(media_type)?;
        if !media_type::is_manifest(media_type) && !media_type::is_index(media_type) {
            return Err(Error::UnsupportedMediaType {
                media_type: media_type.to_owned(),
                context: "a manifest in an OCI layout",
            });
        }
        let manifest = Manifest::parse(bytes, Some(media_type))?;
        let required: Vec<&Descriptor> = match &manifest {
            Manifest::Image(m) => m.required_blobs().collect(),
            Manifest::Index(i) => i.manifests.iter().collect(),
        };
        let digest = Digest::of(bytes);
        for d in required {
            if !self.has_blob(&d.digest) {
                return Err(Error::MissingBlob {
                    digest: d.digest.clone(),
                    referrer: format!("manifest {digest}"),
                });
            }
        }
        let digested = self.add_blob(bytes, None)?;
        let mut desc = Descriptor::from_digested(media_type::essence(media_type), digested);
        if let Some(name) = ref_name {
            if name.is_empty() {
                return Err(Error::InvalidManifest {
                    reason: "an OCI layout ref name must not be empty".to_owned(),
                });
            }
            desc = desc.with_annotation(media_type::ANNOTATION_REF_NAME, name);
        }
        self.add_index_entry(desc.clone())?;
        Ok(desc)
    }

    /// Lists an already-added manifest in `index.json` as given (for example
    /// with a `platform`). A ref name already in the index moves to it.
    pub fn add_index_entry(&mut self, descriptor: Descriptor) -> Result<(), Error> {
        if !self.has_blob(&descriptor.digest) {
            return Err(Error::MissingBlob {
                digest: descriptor.digest.clone(),
                referrer: "index.json".to_owned(),
            });
        }
        if let Some(name) = descriptor.ref_name() {
            let name = name.to_owned();
            self.index
                .manifests
                .retain(|d| d.ref_name() != Some(name.as_str()));
        }
        self.index.manifests.push(descriptor);
        Ok(())
    }

    /// Writes `index.json` and moves the layout into place. Returns its path.
    pub fn finish(self) -> Result<PathBuf, Error> {
        let staging = self.staging.path().to_owned();
        fsutil::write_file(
            &staging.join("index.json"),
            &self.index.to_canonical_json()?,
        )?;
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = staging.join("blobs").join(alg.as_str());
            if dir.exists() {
                fsutil::sync_dir(&dir)?;
            }
        }
        fsutil::sync_dir(&staging)?;
        fsutil::set_mode(&staging, 0o755)?;
        // Keep the staging directory from here on: it becomes the layout.
        let staging_dir = self.staging.keep();
        publish_dir(&staging_dir, &self.path).inspect_err(|_| {
            let _ = fs::remove_dir_all(&staging_dir);
        })?;
        Ok(self.path)
    }
}

/// What may sit at the output path: nothing, an empty dir, or an OCI layout.
fn check_replaceable(path: &Path) -> Result<(), Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    let replaceable = meta.is_dir()
        && (path.join("oci-layout").is_file()
            || fs::read_dir(path)
                .map_err(|e| Error::io("read", path, e))?
                .next()
                .is_none());
    if replaceable {
        Ok(())
    } else {
        Err(Error::DestinationExists {
            path: path.to_owned(),
            expected: "an OCI image layout or an empty directory",
        })
    }
}

/// Renames `staging` to `path`, replacing an existing layout there.
fn publish_dir(staging: &Path, path: &Path) -> Result<(), Error> {
    check_replaceable(path)?;
    let parent = fsutil::parent_dir(path);
    if fs::symlink_metadata(path).is_err() {
        fs::rename(staging, path).map_err(|e| Error::io("rename into", path, e))?;
        return fsutil::sync_dir(&parent);
    }
    // rename(2) replaces an empty directory atomically, so move the old
    // layout onto a fresh empty placeholder, then the new one into place.
    let name = fsutil::file_name(path)?;
    let old = tempfile::Builder::new()
        .prefix(&format!("{name}.old-"))
        .tempdir_in(&parent)
        .map_err(|e| Error::io("create a directory in", &parent, e))?
        .keep();
    if let Err(e) = fs::rename(path, &old) {
        let _ = fs::remove_dir(&old);
        return Err(Error::io("move aside", path, e));
    }
    if let Err(e) = fs::rename(staging, path) {
        let _ = fs::rename(&old, path);
        return Err(Error::io("rename into", path, e));
    }
    fsutil::sync_dir(&parent)?;
    fs::remove_dir_all(&old).map_err(|e| Error::io("remove the old layout", &old, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ImageConfig;
    use crate::manifest::ImageManifest;
    use crate::platform::Platform;

    struct Image {
        config: Vec<u8>,
        layer: Vec<u8>,
        manifest: Vec<u8>,
        config_desc: Descriptor,
        layer_desc: Descriptor,
    }

    fn image() -> Image {
        let layer = b"pretend this is a tar".to_vec();
        let mut cfg = ImageConfig::for_platform(&Platform::new("linux", "amd64"));
        cfg.rootfs.diff_ids.push(Digest::of(&layer));
        let config = cfg.to_canonical_json().unwrap();
        let config_desc = Descriptor::for_bytes(media_type::OCI_CONFIG, &config);
        let layer_desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &layer);
        let manifest = ImageManifest::oci(config_desc.clone(), vec![layer_desc.clone()])
            .to_canonical_json()
            .unwrap();
        Image {
            config,
            layer,
            manifest,
            config_desc,
            layer_desc,
        }
    }

    fn write(path: &Path, img: &Image, tag: &str) -> PathBuf {
        let mut w = OciLayoutWriter::create(path).unwrap();
        w.add_blob(&img.config[..], Some(&img.config_desc)).unwrap();
        w.add_blob(&img.layer[..], Some(&img.layer_desc)).unwrap();
        w.add_manifest(&img.manifest, media_type::OCI_MANIFEST, Some(tag))
            .unwrap();
        w.finish().unwrap()
    }

    fn siblings(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_finished_layout_has_the_three_parts() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("img");
        let img = image();
        write(&out, &img, "latest");
        assert_eq!(
            fs::read(out.join("oci-layout")).unwrap(),
            OCI_LAYOUT_FILE_CONTENT
        );
        let blob = |d: &Descriptor| out.join("blobs/sha256").join(d.digest.hex());
        assert_eq!(fs::read(blob(&img.config_desc)).unwrap(), img.config);
        assert_eq!(fs::read(blob(&img.layer_desc)).unwrap(), img.layer);
        let index: ImageIndex =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests.len(), 1);
        assert_eq!(index.manifests[0].digest, Digest::of(&img.manifest));
        assert_eq!(index.manifests[0].ref_name(), Some("latest"));
        assert_eq!(siblings(tmp.path()), vec!["img"], "no staging left behind");
    }

    #[test]
    fn nothing_is_visible_until_finish_and_an_abandoned_writer_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("img");
        let img = image();
        let mut w = OciLayoutWriter::create(&out).unwrap();
        w.add_blob(&img.config[..], None).unwrap();
        assert!(!out.exists());
        drop(w);
        assert!(siblings(tmp.path()).is_empty());
    }

    #[test]
    fn a_blob_with_the_wrong_digest_or_size_is_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = OciLayoutWriter::create(tmp.path().join("img")).unwrap();
        let want = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, b"good");
        let err = w.add_blob(&b"evil"[..], Some(&want)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        let err = w.add_blob(&b"good and more"[..], Some(&want)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SizeMismatch {
                    expected: 4,
                    actual: 5,
                    ..
                }
            ),
            "{err}"
        );
        let err = w.add_blob(&b"goo"[..], Some(&want)).unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        let blobs = w.staging.path().join("blobs/sha256");
        assert!(fs::read_dir(&blobs).unwrap().next().is_none());
        w.add_blob(&b"good"[..], Some(&want)).unwrap();
        assert_eq!(siblings(&blobs), vec![want.digest.hex().to_owned()]);
    }

    #[test]
    fn sha512_blobs_go_to_their_own_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = OciLayoutWriter::create(tmp.path().join("img")).unwrap();
        let want = Descriptor::new(
            media_type::OCI_LAYER_TAR,
            Digest::of_with(Algorithm::Sha512, b"x"),
            1,
        );
        w.add_blob(&b"x"[..], Some(&want)).unwrap();
        let out = w.finish().unwrap();
        assert!(out.join("blobs/sha512").join(want.digest.hex()).is_file());
    }

    #[test]
    fn a_manifest_needs_its_blobs_first() {
        let tmp = tempfile::tempdir().unwrap();
        let img = image();
        let mut w = OciLayoutWriter::create(tmp.path().join("img")).unwrap();
        w.add_blob(&img.config[..], None).unwrap();
        let err = w
            .add_manifest(&img.manifest, media_type::OCI_MANIFEST, Some("t"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::MissingBlob { digest, .. } if *digest == img.layer_desc.digest),
            "{err}"
        );
        let err = w
            .add_manifest(&img.manifest, media_type::DOCKER_MANIFEST_V1, None)
            .unwrap_err();
        assert!(matches!(err, Error::Schema1Unsupported { .. }));
        let err = w
            .add_manifest(&img.manifest, media_type::OCI_LAYER_TAR, None)
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedMediaType { .. }));
    }

    #[test]
    fn an_index_can_be_stored_once_its_manifests_are() {
        let tmp = tempfile::tempdir().unwrap();
        let img = image();
        let mut w = OciLayoutWriter::create(tmp.path().join("img")).unwrap();
        let entry = Descriptor::for_bytes(media_type::OCI_MANIFEST, &img.manifest)
            .with_platform(Platform::new("linux", "amd64"));
        let index = ImageIndex::oci(vec![entry]).to_canonical_json().unwrap();
        let err = w
            .add_manifest(&index, media_type::OCI_INDEX, Some("multi"))
            .unwrap_err();
        assert!(matches!(err, Error::MissingBlob { .. }), "{err}");
        w.add_blob(&img.config[..], None).unwrap();
        w.add_blob(&img.layer[..], None).unwrap();
        w.add_blob(&img.manifest[..], None).unwrap();
        let desc = w
            .add_manifest(&index, media_type::OCI_INDEX, Some("multi"))
            .unwrap();
        assert_eq!(desc.media_type, media_type::OCI_INDEX);
        assert_eq!(w.index().manifests, vec![desc]);
    }

    #[test]
    fn a_ref_name_moves_to_the_newest_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let img = image();
        let mut w = OciLayoutWriter::create(tmp.path().join("img")).unwrap();
        w.add_blob(&img.config[..], None).unwrap();
        w.add_blob(&img.layer[..], None).unwrap();
        w.add_manifest(&img.manifest, media_type::OCI_MANIFEST, Some("t"))
            .unwrap();
        let mut other = ImageManifest::parse_image(&img.manifest);
        other.annotations.insert("x".into(), "y".into());
        let other = other.to_canonical_json().unwrap();
        w.add_manifest(&other, media_type::OCI_MANIFEST, Some("t"))
            .unwrap();
        w.add_manifest(&img.manifest, media_type::OCI_MANIFEST, Some("u"))
            .unwrap();
        let tags: Vec<_> = w
            .index()
            .manifests
            .iter()
            .map(|d| (d.ref_name().unwrap().to_owned(), d.digest.clone()))
            .collect();
        assert_eq!(
            tags,
            vec![
                ("t".to_owned(), Digest::of(&other)),
                ("u".to_owned(), Digest::of(&img.manifest))
            ]
        );
    }

    #[test]
    fn an_existing_layout_is_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("img");
        let img = image();
        write(&out, &img, "old");
        fs::write(out.join("blobs/sha256/stale"), b"x").unwrap();
        write(&out, &img, "new");
        assert!(!out.join("blobs/sha256/stale").exists());
        let index: ImageIndex =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests[0].ref_name(), Some("new"));
        assert_eq!(siblings(tmp.path()), vec!["img"]);
    }

    #[test]
    fn an_empty_directory_is_replaced_but_other_content_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let img = image();
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write(&empty, &img, "t");
        assert!(empty.join("index.json").is_file());

        let busy = tmp.path().join("busy");
        fs::create_dir(&busy).unwrap();
        fs::write(busy.join("precious"), b"keep me").unwrap();
        let err = OciLayoutWriter::create(&busy).unwrap_err();
        assert!(matches!(err, Error::DestinationExists { .. }), "{err}");
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(OciLayoutWriter::create(&file).is_err());
        assert_eq!(fs::read(busy.join("precious")).unwrap(), b"keep me");
    }

    #[cfg(unix)]
    #[test]
    fn published_files_are_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("img");
        let img = image();
        write(&out, &img, "t");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o755);
        assert_eq!(
            mode(&out.join("blobs/sha256").join(img.layer_desc.digest.hex())),
            0o644
        );
    }

    impl ImageManifest {
        fn parse_image(bytes: &[u8]) -> ImageManifest {
            match Manifest::parse(bytes, None).unwrap() {
                Manifest::Image(m) => m,
                Manifest::Index(_) => panic!("not an image"),
            }
        }
    }
}

/// An existing OCI image layout, read in place (nothing is copied).
#[derive(Debug, Clone)]
pub struct OciLayout {
    path: PathBuf,
    index: ImageIndex,
}

impl OciLayout {
    /// Opens the layout at `path`: checks `oci-layout` and reads `index.json`.
    pub fn open(path: impl AsRef<Path>) -> Result<OciLayout, Error> {
        let path = path.as_ref().to_path_buf();
        let marker = path.join("oci-layout");
        fs::metadata(&marker).map_err(|e| Error::io("open", &marker, e))?;
        let index_path = path.join("index.json");
        let bytes = fs::read(&index_path).map_err(|e| Error::io("read", &index_path, e))?;
        let index = match Manifest::parse(&bytes, Some(media_type::OCI_INDEX))? {
            Manifest::Index(index) => index,
            Manifest::Image(_) => {
                return Err(Error::InvalidManifest {
                    reason: format!("{} is not an image index", index_path.display()),
                })
            }
        };
        Ok(OciLayout { path, index })
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> &ImageIndex {
        &self.index
    }

    /// The file holding a blob (it may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Reads a small blob (a manifest or config) whole, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        digest.verify(&bytes)?;
        Ok(bytes)
    }

    /// The manifest tagged `name` (`org.opencontainers.image.ref.name`), or the only one when
    /// `name` is `None` and the index has exactly one.
    pub fn manifest(&self, name: Option<&str>) -> Result<&Descriptor, Error> {
        let entries = &self.index.manifests;
        let found = match name {
            Some(n) => entries.iter().find(|d| d.ref_name() == Some(n)),
            None if entries.len() == 1 => entries.first(),
            None => None,
        };
        found.ok_or_else(|| {
            let names: Vec<&str> = entries.iter().filter_map(|d| d.ref_name()).collect();
            Error::InvalidManifest {
                reason: match name {
                    Some(n) => format!(
                        "no manifest named {n:?} in {} (it has: {})",
                        self.path.display(),
                        names.join(", ")
                    ),
                    None => format!(
                        "{} holds {} manifests; name one (it has: {})",
                        self.path.display(),
                        entries.len(),
                        names.join(", ")
                    ),
                },
            }
        })
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_desc = Descriptor::for_bytes(media_type::OCI_CONFIG, config);
        let manifest = crate::ImageManifest::oci(config_desc.clone(), Vec::new());
        let bytes = manifest.to_canonical_json().unwrap();
        let mut writer = OciLayoutWriter::create(dir.path().join("img")).unwrap();
        writer.add_blob(&config[..], Some(&config_desc)).unwrap();
        let desc = writer
            .add_manifest(&bytes, media_type::OCI_MANIFEST, Some("v1"))
            .unwrap();
        let path = writer.finish().unwrap();
        let layout = OciLayout::open(&path).unwrap();
        assert_eq!(layout.manifest(Some("v1")).unwrap().digest, desc.digest);
        assert_eq!(layout.manifest(None).unwrap().digest, desc.digest);
        assert_eq!(layout.read_blob(&desc.digest).unwrap(), bytes);
        let err = layout.manifest(Some("v2")).unwrap_err().to_string();
        assert!(
            err.contains("no manifest named \"v2\"") && err.contains("it has: v1"),
            "{err}"
        );
        // A tampered blob is refused.
        std::fs::write(layout.blob_path(&config_desc.digest), b"{}").unwrap();
        assert!(layout.read_blob(&config_desc.digest).is_err());
        assert!(OciLayout::open(dir.path()).is_err(), "not a layout");
    }
}
