//! Image manifests, image indexes (manifest lists) and telling them apart.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::canonical::impl_canonical;
use crate::descriptor::Descriptor;
use crate::error::Error;
use crate::media_type::{self, essence};
use crate::platform::{NoMatchingPlatform, Platform, PlatformMatcher};

/// A single-image manifest: OCI, or Docker schema 2 (same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// `application/vnd.oci.image.manifest.v1+json` or the Docker schema 2 type.
    /// Optional in OCI, required by Docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type, for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields kiln does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl_canonical!(ImageManifest, "image manifest");

impl ImageManifest {
    /// An OCI manifest for a config and layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest::with_media_type(media_type::OCI_MANIFEST, config, layers)
    }

    /// A Docker schema 2 manifest for a config and layers.
    pub fn docker(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest::with_media_type(media_type::DOCKER_MANIFEST, config, layers)
    }

    fn with_media_type(mt: &str, config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(mt.to_owned()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// This manifest with OCI media types, as `skopeo copy` converts Docker schema 2 for an
    /// OCI layout: the config and layers keep their bytes and digests, only the types change
    /// (foreign layers become non-distributable ones). An OCI manifest is returned unchanged.
    pub fn to_oci(&self) -> ImageManifest {
        let convert = |d: &Descriptor| {
            let mut d = d.clone();
            let oci = match d.media_type.as_str() {
                media_type::DOCKER_CONFIG => media_type::OCI_CONFIG,
                media_type::DOCKER_LAYER_TAR_GZIP => media_type::OCI_LAYER_TAR_GZIP,
                media_type::DOCKER_LAYER_TAR => media_type::OCI_LAYER_TAR,
                media_type::DOCKER_LAYER_TAR_ZSTD => media_type::OCI_LAYER_TAR_ZSTD,
                media_type::DOCKER_FOREIGN_LAYER_TAR_GZIP => {
                    media_type::OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
                }
                media_type::DOCKER_FOREIGN_LAYER_TAR => media_type::OCI_LAYER_NONDISTRIBUTABLE_TAR,
                other => other,
            };
            d.media_type = oci.to_owned();
            d
        };
        ImageManifest {
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config: convert(&self.config),
            layers: self.layers.iter().map(convert).collect(),
            ..self.clone()
        }
    }

    /// The manifest's media type: its `mediaType` field, or OCI's when absent.
    pub fn media_type(&self) -> &str {
        self.media_type
            .as_deref()
            .unwrap_or(media_type::OCI_MANIFEST)
    }

    /// Every blob this manifest refers to and that must sit beside it:
    /// the config, then layers that are not foreign/non-distributable.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(
            self.layers
                .iter()
                .filter(|l| !media_type::is_foreign(&l.media_type)),
        )
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// `application/vnd.oci.image.index.v1+json` or the Docker manifest list type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type, for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests (or nested indexes) listed. Required, may be empty.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields kiln does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl_canonical!(ImageIndex, "image index");

impl Default for ImageIndex {
    /// An empty OCI index.
    fn default() -> Self {
        ImageIndex::oci(Vec::new())
    }
}

impl ImageIndex {
    /// An OCI index of `manifests`.
    pub fn oci(manifests: Vec<Descriptor>) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The index's media type: its `mediaType` field, or OCI's when absent.
    pub fn media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(media_type::OCI_INDEX)
    }

    /// Entries that are images for a real platform: those with a platform,
    /// other than attestation manifests and `unknown/unknown`.
    pub fn platform_entries(&self) -> impl Iterator<Item = (&Descriptor, &Platform)> {
        self.manifests.iter().filter_map(|d| match &d.platform {
            Some(p) if !d.is_attestation() => Some((d, p)),
            _ => None,
        })
    }

    /// The best entry for `want` (see [`PlatformMatcher`] for what "best" is;
    /// among equally good entries the first wins).
    pub fn select(&self, want: &Platform) -> Result<&Descriptor, NoMatchingPlatform> {
        let matcher = PlatformMatcher::new(want);
        let mut best: Option<(usize, &Descriptor)> = None;
        for (desc, platform) in self.platform_entries() {
            if let Some(rank) = matcher.rank(platform) {
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, desc));
                }
            }
        }
        best.map(|(_, d)| d).ok_or_else(|| NoMatchingPlatform {
            wanted: Box::new(want.clone()),
            available: self.platform_entries().map(|(_, p)| p.clone()).collect(),
        })
    }
}

/// A parsed manifest document: one image, or an index of images.
// Both variants are a few hundred bytes and a manifest is parsed a handful of
// times per build; boxing would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    /// A single-image manifest.
    Image(ImageManifest),
    /// An index or manifest list.
    Index(ImageIndex),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    if media_type::is_manifest(media_type) {
        Some(Kind::Image)
    } else if media_type::is_index(media_type) {
        Some(Kind::Index)
    } else {
        None
    }
}

/// Content types a registry may send that say nothing about the document.
fn is_generic_content_type(ct: &str) -> bool {
    matches!(
        ct,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

/// Just enough of a document to tell what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u64>,
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    config: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
    fs_layers: Option<IgnoredAny>,
}

impl Manifest {
    /// Parses a manifest or index.
    ///
    /// The kind is decided by `content_type` (the registry's `Content-Type`,
    /// parameters ignored) when it names a manifest or index type, else by the
    /// document's `mediaType`, else by its shape (`manifests` → index,
    /// `config`/`layers` → image). When both the content type and `mediaType`
    /// name a kind they must agree. Docker schema 1 (by content type,
    /// `mediaType`, `schemaVersion: 1` or `fsLayers`) is refused with
    /// [`Error::Schema1Unsupported`].
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, Error> {
        let ct = content_type.map(essence).unwrap_or("");
        media_type::refuse_schema1(ct)?;
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::json("manifest", e))?;
        if let Some(mt) = &probe.media_type {
            media_type::refuse_schema1(mt)?;
        }
        if probe.schema_version == Some(1) || probe.fs_layers.is_some() {
            return Err(Error::Schema1Unsupported {
                media_type: "schemaVersion 1".to_owned(),
            });
        }

        let ct_kind = match kind_of(ct) {
            Some(k) => Some(k),
            None if is_generic_content_type(ct) => None,
            None => {
                return Err(Error::UnsupportedMediaType {
                    media_type: ct.to_owned(),
                    context: "a manifest",
                })
            }
        };
        let doc_kind = match probe.media_type.as_deref() {
            None => None,
            Some(mt) => Some(kind_of(mt).ok_or_else(|| Error::UnsupportedMediaType {
                media_type: mt.to_owned(),
                context: "a manifest",
            })?),
        };
        if let (Some(c), Some(d)) = (ct_kind, doc_kind) {
            if c != d {
                return Err(Error::MediaTypeMismatch {
                    content_type: ct.to_owned(),
                    document: probe.media_type.unwrap_or_default(),
                });
            }
        }
        let kind = ct_kind.or(doc_kind).or(if probe.manifests.is_some() {
            Some(Kind::Index)
        } else if probe.config.is_some() || probe.layers.is_some() {
            Some(Kind::Image)
        } else {
            None
        });
        let manifest = match kind {
            Some(Kind::Image) => Manifest::Image(
                serde_json::from_slice(bytes).map_err(|e| Error::json("image manifest", e))?,
            ),
            Some(Kind::Index) => Manifest::Index(
                serde_json::from_slice(bytes).map_err(|e| Error::json("image index", e))?,
            ),
            None => {
                return Err(Error::InvalidManifest {
                    reason: "cannot tell an image manifest from an index: no mediaType, \
                             manifests, config or layers"
                        .to_owned(),
                })
            }
        };
        if manifest.schema_version() != 2 {
            return Err(Error::InvalidManifest {
                reason: format!("schemaVersion is {}, expected 2", manifest.schema_version()),
            });
        }
        Ok(manifest)
    }

    /// The `schemaVersion` field.
    pub fn schema_version(&self) -> u32 {
        match self {
            Manifest::Image(m) => m.schema_version,
            Manifest::Index(i) => i.schema_version,
        }
    }

    /// The media type: the document's `mediaType`, or the OCI type of its kind.
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Image(m) => m.media_type(),
            Manifest::Index(i) => i.media_type(),
        }
    }

    /// The annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            Manifest::Image(m) => &m.annotations,
            Manifest::Index(i) => &i.annotations,
        }
    }

    /// Compact, deterministic JSON (see [`crate::canonical`]).
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, Error> {
        match self {
            Manifest::Image(m) => m.to_canonical_json(),
            Manifest::Index(i) => i.to_canonical_json(),
        }
    }

    /// Compact, deterministic JSON with its sha256 digest.
    pub fn canonical(&self) -> Result<crate::CanonicalJson, Error> {
        match self {
            Manifest::Image(m) => m.canonical(),
            Manifest::Index(i) => i.canonical(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn docker_manifests_convert_to_oci_keeping_digests() {
        let docker = ImageManifest::docker(
            Descriptor::new(media_type::DOCKER_CONFIG, d(1), 10),
            vec![
                Descriptor::new(media_type::DOCKER_LAYER_TAR_GZIP, d(2), 20),
                Descriptor::new(media_type::DOCKER_FOREIGN_LAYER_TAR_GZIP, d(3), 30),
            ],
        );
        let oci = docker.to_oci();
        assert_eq!(oci.media_type(), media_type::OCI_MANIFEST);
        assert_eq!(oci.config.media_type, media_type::OCI_CONFIG);
        assert_eq!(oci.config.digest, d(1));
        assert_eq!(oci.layers[0].media_type, media_type::OCI_LAYER_TAR_GZIP);
        assert_eq!(
            oci.layers[1].media_type,
            media_type::OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
        );
        assert_eq!(oci.layers[1].digest, d(3));
        assert_eq!(oci.to_oci(), oci, "OCI stays as is");
    }

    fn docker_manifest_json() -> String {
        format!(
            r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1469,
      "digest": "{}"
   }},
   "layers": [
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2818413,
         "digest": "{}"
      }}
   ]
}}"#,
            d(1),
            d(2)
        )
    }

    fn index_json(entries: &[(&str, &str)]) -> String {
        let manifests: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, (platform, annotations))| {
                let (os, rest) = platform.split_once('/').unwrap();
                let (arch, variant) = match rest.split_once('/') {
                    Some((a, v)) => (a, format!(r#","variant":"{v}""#)),
                    None => (rest, String::new()),
                };
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":500,"platform":{{"architecture":"{arch}","os":"{os}"{variant}}}{annotations}}}"#,
                    d(i as u8 + 10)
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            manifests.join(",")
        )
    }

    #[test]
    fn docker_schema2_manifest_parses_by_content_type_or_document() {
        let json = docker_manifest_json();
        for ct in [
            Some(media_type::DOCKER_MANIFEST),
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
            Some("application/json"),
            None,
        ] {
            let Manifest::Image(m) = Manifest::parse(json.as_bytes(), ct).unwrap() else {
                panic!("not an image for {ct:?}");
            };
            assert_eq!(m.media_type(), media_type::DOCKER_MANIFEST);
            assert_eq!(m.config.digest, d(1));
            assert_eq!(m.layers[0].size, 2818413);
        }
    }

    #[test]
    fn oci_documents_without_media_type_are_told_by_shape() {
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[]}}"#,
            media_type::OCI_CONFIG,
            d(1)
        );
        assert!(matches!(
            Manifest::parse(image.as_bytes(), None).unwrap(),
            Manifest::Image(_)
        ));
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        let m = Manifest::parse(index.as_bytes(), None).unwrap();
        assert!(matches!(m, Manifest::Index(_)));
        assert_eq!(m.media_type(), media_type::OCI_INDEX);
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":2}"#, None),
            Err(Error::InvalidManifest { .. })
        ));
    }

    #[test]
    fn schema1_is_refused_however_it_is_announced() {
        let schema1 = br#"{"schemaVersion":1,"name":"library/x","tag":"latest","architecture":"amd64","fsLayers":[],"history":[]}"#;
        for (bytes, ct) in [
            (&schema1[..], None),
            (&schema1[..], Some(media_type::DOCKER_MANIFEST_V1_SIGNED)),
            (&b"not even json"[..], Some(media_type::DOCKER_MANIFEST_V1)),
            (
                &br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+json"}"#[..],
                None,
            ),
        ] {
            let err = Manifest::parse(bytes, ct).unwrap_err();
            assert!(matches!(err, Error::Schema1Unsupported { .. }), "{err}");
            assert!(err.to_string().contains(
                "Docker schema 1 manifests are not supported; re-push the image with a current client"
            ));
        }
    }

    #[test]
    fn content_type_and_document_must_agree_on_the_kind() {
        let json = docker_manifest_json();
        let err = Manifest::parse(json.as_bytes(), Some(media_type::OCI_INDEX)).unwrap_err();
        assert!(matches!(err, Error::MediaTypeMismatch { .. }), "{err}");
    }

    #[test]
    fn unsupported_media_types_are_named() {
        let err = Manifest::parse(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json"}"#,
            None,
        )
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("application/vnd.oci.artifact.manifest.v1+json"));
        assert!(matches!(
            Manifest::parse(b"{}", Some("application/vnd.example+json")),
            Err(Error::UnsupportedMediaType { .. })
        ));
        assert!(matches!(
            Manifest::parse(b"{", None),
            Err(Error::Json { .. })
        ));
    }

    #[test]
    fn a_manifest_announced_as_an_index_is_not_read_as_an_empty_index() {
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[]}}"#,
            media_type::OCI_CONFIG,
            d(1)
        );
        let err = Manifest::parse(image.as_bytes(), Some(media_type::OCI_INDEX)).unwrap_err();
        assert!(err.to_string().contains("manifests"), "{err}");
        let err = Manifest::parse(
            br#"{"schemaVersion":2,"manifests":[]}"#,
            Some(media_type::OCI_MANIFEST),
        )
        .unwrap_err();
        assert!(err.to_string().contains("config"), "{err}");
    }

    #[test]
    fn wrong_schema_version_is_refused() {
        let err = Manifest::parse(br#"{"schemaVersion":3,"manifests":[]}"#, None).unwrap_err();
        assert!(err.to_string().contains("schemaVersion is 3"), "{err}");
    }

    #[test]
    fn unknown_fields_survive_and_output_is_canonical() {
        let json = docker_manifest_json().replace(
            "\"schemaVersion\": 2,",
            "\"schemaVersion\": 2, \"x-extra\": {\"b\": 1, \"a\": [true]},",
        );
        let Manifest::Image(m) = Manifest::parse(json.as_bytes(), None).unwrap() else {
            panic!()
        };
        let out = m.to_canonical_json().unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains(' ') && !text.contains('\n'));
        assert!(
            text.starts_with(r#"{"schemaVersion":2,"mediaType":"#),
            "{text}"
        );
        assert!(text.ends_with(r#""x-extra":{"a":[true],"b":1}}"#), "{text}");
        let original: serde_json::Value = serde_json::from_str(&json).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(original, written);
        let c = m.canonical().unwrap();
        assert_eq!(c.bytes, out);
        assert_eq!(c.digest, Digest::of(&out));
        assert_eq!(m.to_canonical_json().unwrap(), out, "deterministic");
    }

    #[test]
    fn select_picks_the_wanted_platform() {
        let idx: ImageIndex = serde_json::from_str(&index_json(&[
            ("linux/amd64", ""),
            ("linux/arm64/v8", ""),
            ("linux/arm/v6", ""),
            ("linux/arm/v7", ""),
        ]))
        .unwrap();
        let pick = |s: &str| {
            idx.select(&Platform::parse(s).unwrap())
                .unwrap()
                .digest
                .clone()
        };
        assert_eq!(pick("linux/amd64"), d(10));
        assert_eq!(pick("linux/x86_64"), d(10));
        assert_eq!(pick("linux/arm64"), d(11));
        assert_eq!(pick("linux/aarch64"), d(11));
        assert_eq!(pick("linux/arm/v7"), d(13), "exact beats fallback");
        assert_eq!(pick("linux/arm/v6"), d(12));
    }

    #[test]
    fn select_falls_back_from_arm_v7_to_v6() {
        let idx: ImageIndex =
            serde_json::from_str(&index_json(&[("linux/arm/v5", ""), ("linux/arm/v6", "")]))
                .unwrap();
        let got = idx.select(&Platform::parse("linux/arm").unwrap()).unwrap();
        assert_eq!(got.digest, d(11));
    }

    #[test]
    fn select_skips_attestations_and_lists_what_the_index_has() {
        let att = r#","annotations":{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"sha256:x"}"#;
        let idx: ImageIndex = serde_json::from_str(&index_json(&[
            ("linux/amd64", ""),
            ("linux/arm64/v8", ""),
            ("unknown/unknown", att),
            ("linux/s390x", att),
        ]))
        .unwrap();
        let err = idx
            .select(&Platform::parse("linux/s390x").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no image for linux/s390x in this index; it has: linux/amd64, linux/arm64/v8"
        );
        assert_eq!(err.available.len(), 2);
    }

    #[test]
    fn select_skips_entries_without_a_platform() {
        let mut idx = ImageIndex::oci(vec![Descriptor::for_bytes(media_type::OCI_MANIFEST, b"x")]);
        let err = idx.select(&Platform::new("linux", "amd64")).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("it has no platform-specific images"));
        idx.manifests.push(
            Descriptor::for_bytes(media_type::OCI_MANIFEST, b"y")
                .with_platform(Platform::new("linux", "amd64")),
        );
        assert_eq!(
            idx.select(&Platform::new("linux", "amd64")).unwrap().digest,
            Digest::of(b"y")
        );
    }

    #[test]
    fn required_blobs_leave_out_foreign_layers() {
        let m = ImageManifest::docker(
            Descriptor::for_bytes(media_type::DOCKER_CONFIG, b"{}"),
            vec![
                Descriptor::for_bytes(media_type::DOCKER_FOREIGN_LAYER_TAR_GZIP, b"f"),
                Descriptor::for_bytes(media_type::DOCKER_LAYER_TAR_GZIP, b"l"),
            ],
        );
        let req: Vec<_> = m.required_blobs().map(|d| d.digest.clone()).collect();
        assert_eq!(req, vec![Digest::of(b"{}"), Digest::of(b"l")]);
    }
}
