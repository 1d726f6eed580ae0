/*!
`kiln-oci` is kiln's image model: the types every other kiln crate uses to
talk about images, and the two local output formats.

Its one job: say what an image *is* (digests, descriptors, media types,
manifests, indexes, configs, platforms) and write one to disk as an OCI
image layout or a docker-archive tarball. It does no networking and knows
nothing about Dockerfiles or file systems beyond writing those outputs.

Main types:

- [`Digest`] (`sha256:<hex>`, sha512 accepted), [`DigestWriter`] /
  [`DigestReader`] (hash while streaming), [`VerifyingReader`] (fail unless
  a stream matches its descriptor).
- [`media_type`]: OCI and Docker schema 2 constants and what they mean
  (index or manifest, layer compression, foreign layers). Docker schema 1 is
  recognised only to be refused.
- [`Descriptor`], [`ImageManifest`], [`ImageIndex`], and [`Manifest::parse`],
  which decides between them from a content type or the document itself.
- [`ImageConfig`] with [`ContainerConfig`], [`History`], [`Healthcheck`]:
  round-trips a base image's config, unknown fields and `null`s included.
- [`Platform`] and [`PlatformMatcher`] (containerd's normalisation and
  variant fallback); [`ImageIndex::select`] picks an index entry.
- [`OciLayoutWriter`] and [`DockerArchiveWriter`]: streamed, verified,
  published atomically (temp sibling, then rename).

All JSON kiln writes is canonical: compact, fields in spec order, maps
sorted (see [`canonical`]), so the same image always has the same digest.

# Example

```
use kiln_oci::{media_type, Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest,
               Manifest, OciLayoutWriter, Platform};

# fn main() -> Result<(), Box<dyn std::error::Error>> {
// A one-layer image (the "layer" would be a tar; any bytes do here).
let layer = b"not really a tar".to_vec();
let mut config = ImageConfig::for_platform(&Platform::parse("linux/amd64")?);
config.rootfs.diff_ids.push(Digest::of(&layer));
config.config_mut().cmd = Some(vec!["sh".into()]);
let config = config.canonical()?;

let manifest = ImageManifest::oci(
    config.descriptor(media_type::OCI_CONFIG),
    vec![Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &layer)],
);
let manifest_bytes = manifest.to_canonical_json()?;

// Write it as an OCI layout; the directory appears only at `finish`.
let dir = tempfile::tempdir()?;
let mut out = OciLayoutWriter::create(dir.path().join("image"))?;
out.add_blob(&config.bytes[..], Some(&config.descriptor(media_type::OCI_CONFIG)))?;
out.add_blob(&layer[..], Some(&manifest.layers[0]))?;
let desc = out.add_manifest(&manifest_bytes, media_type::OCI_MANIFEST, Some("latest"))?;
let path = out.finish()?;
assert!(path.join("blobs/sha256").join(desc.digest.hex()).is_file());

// Read it back, and pick a platform from an index.
let Manifest::Image(back) = Manifest::parse(&manifest_bytes, Some(media_type::OCI_MANIFEST))?
    else { unreachable!() };
assert_eq!(back, manifest);
let index = ImageIndex::oci(vec![desc.with_platform(Platform::parse("linux/amd64")?)]);
assert!(index.select(&Platform::parse("linux/x86_64")?).is_ok());
let err = index.select(&Platform::parse("linux/s390x")?).unwrap_err();
assert_eq!(err.to_string(), "no image for linux/s390x in this index; it has: linux/amd64");
# Ok(())
# }
```

Must not depend on: any other kiln crate. Everything else depends on this one.
*/
#![deny(missing_docs)]

pub mod canonical;
mod config;
mod descriptor;
mod digest;
mod docker_archive;
mod error;
mod fsutil;
mod layout;
mod manifest;
pub mod media_type;
pub mod path;
mod platform;
pub mod reference;
pub mod time;

pub use canonical::CanonicalJson;
pub use config::{ContainerConfig, EmptyObject, Extra, Healthcheck, History, ImageConfig, RootFs};
pub use descriptor::Descriptor;
pub use digest::{
    Algorithm, Digest, DigestReader, DigestWriter, Digested, Hasher, VerifyingReader,
};
pub use docker_archive::DockerArchiveWriter;
pub use error::Error;
pub use layout::{OciLayout, OciLayoutWriter, OCI_LAYOUT_FILE_CONTENT};
pub use manifest::{ImageIndex, ImageManifest, Manifest};
pub use media_type::Compression;
pub use platform::{NoMatchingPlatform, Platform, PlatformMatcher};
pub use reference::{Reference, ReferenceError};
