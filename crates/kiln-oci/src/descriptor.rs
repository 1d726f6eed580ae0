//! Content descriptors: what a manifest or index says about a blob.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Digested};
use crate::error::Error;
use crate::media_type;
use crate::platform::Platform;

/// An OCI content descriptor (also the shape of Docker schema 2 references).
///
/// Unknown fields (such as `data`) are kept in [`extra`](Self::extra) and
/// written back, so a descriptor read from a registry survives a round trip.
/// Empty `urls` and `annotations` are not written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// The digest of the referenced content.
    pub digest: Digest,
    /// The size in bytes of the referenced content.
    pub size: u64,
    /// Where else the content may be fetched from (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform of a manifest, in an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type of an artifact manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Fields kiln does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Descriptor {
    /// A descriptor with just a media type, digest and size.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
            extra: BTreeMap::new(),
        }
    }

    /// The descriptor of `bytes` (sha256).
    pub fn for_bytes(media_type: impl Into<String>, bytes: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64)
    }

    /// The descriptor of hashed content.
    pub fn from_digested(media_type: impl Into<String>, digested: Digested) -> Descriptor {
        Descriptor::new(media_type, digested.digest, digested.size)
    }

    /// The same descriptor with an annotation added.
    pub fn with_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// The same descriptor with a platform.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// The `org.opencontainers.image.ref.name` annotation (the tag in an OCI layout).
    pub fn ref_name(&self) -> Option<&str> {
        self.annotation(media_type::ANNOTATION_REF_NAME)
    }

    /// True for BuildKit's attestation manifests in an index: annotated
    /// `vnd.docker.reference.type=attestation-manifest`, or on `unknown/unknown`.
    pub fn is_attestation(&self) -> bool {
        self.annotation(media_type::ANNOTATION_DOCKER_REFERENCE_TYPE)
            == Some(media_type::ATTESTATION_MANIFEST)
            || self.platform.as_ref().is_some_and(Platform::is_unknown)
    }

    /// Checks that `bytes` have this descriptor's size and digest.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), Error> {
        Digested {
            digest: Digest::of_with(self.digest.algorithm(), bytes),
            size: bytes.len() as u64,
        }
        .verify(&self.digest, Some(self.size))
    }

    /// Checks hashed content against this descriptor's size and digest.
    pub fn verify_digested(&self, actual: &Digested) -> Result<(), Error> {
        actual.verify(&self.digest, Some(self.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let json = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"urls":["https://example.com/l"],"annotations":{"a":"b"},"data":"","x-custom":{"k":[1,2]}}"#;
        let d: Descriptor = serde_json::from_str(json).unwrap();
        assert_eq!(d.urls.len(), 1);
        assert!(d.extra.contains_key("data") && d.extra.contains_key("x-custom"));
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
    }

    #[test]
    fn empty_optional_fields_are_not_written() {
        let d = Descriptor::for_bytes(media_type::OCI_CONFIG, b"{}");
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":2}}"#,
                media_type::OCI_CONFIG,
                Digest::of(b"{}")
            )
        );
    }

    #[test]
    fn verify_checks_size_then_digest() {
        let d = Descriptor::for_bytes(media_type::OCI_CONFIG, b"{}");
        d.verify(b"{}").unwrap();
        assert!(matches!(d.verify(b"{ }"), Err(Error::SizeMismatch { .. })));
        assert!(matches!(d.verify(b"[]"), Err(Error::DigestMismatch { .. })));
    }

    #[test]
    fn attestations_are_recognised() {
        let base = Descriptor::for_bytes(media_type::OCI_MANIFEST, b"x");
        assert!(!base.is_attestation());
        assert!(base
            .clone()
            .with_annotation("vnd.docker.reference.type", "attestation-manifest")
            .is_attestation());
        assert!(base
            .with_platform(Platform::new("unknown", "unknown"))
            .is_attestation());
    }

    #[test]
    fn negative_or_missing_sizes_are_refused() {
        let d = Digest::of(b"");
        for json in [
            format!(r#"{{"mediaType":"a","digest":"{d}","size":-1}}"#),
            format!(r#"{{"mediaType":"a","digest":"{d}"}}"#),
        ] {
            assert!(serde_json::from_str::<Descriptor>(&json).is_err());
        }
    }
}
