//! Media type constants for OCI and Docker images, and what they mean.
//!
//! Docker schema 1 types are listed only so they can be recognised and
//! refused with [`Error::Schema1Unsupported`].

use crate::error::Error;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI empty descriptor content (`{}`), used by artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, uncompressed (deprecated by the spec, still found).
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Docker schema 2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker container (image) config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip-compressed tar.
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, uncompressed tar (written by containers/image; not in Docker's spec).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer, zstd (written by some tools; not in Docker's spec).
pub const DOCKER_LAYER_TAR_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker foreign layer (Windows base layers), gzip.
pub const DOCKER_FOREIGN_LAYER_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker foreign layer, uncompressed.
pub const DOCKER_FOREIGN_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";

/// Docker schema 1 manifest (refused).
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker schema 1 signed manifest (refused).
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Annotation naming a manifest in an OCI layout's `index.json` (the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation BuildKit puts on attestation manifests in an index.
pub const ANNOTATION_DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The value of [`ANNOTATION_DOCKER_REFERENCE_TYPE`] that marks an attestation.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The media type without parameters (`; charset=utf-8`) and surrounding space.
pub fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

/// True for an image index or a Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    matches!(essence(media_type), OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// True for a single-image manifest (OCI or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(essence(media_type), OCI_MANIFEST | DOCKER_MANIFEST)
}

/// True for a Docker schema 1 manifest, which kiln refuses.
pub fn is_schema1(media_type: &str) -> bool {
    matches!(
        essence(media_type),
        DOCKER_MANIFEST_V1 | DOCKER_MANIFEST_V1_SIGNED
    )
}

/// Fails with the schema 1 message when `media_type` is schema 1.
pub fn refuse_schema1(media_type: &str) -> Result<(), Error> {
    if is_schema1(media_type) {
        Err(Error::Schema1Unsupported {
            media_type: essence(media_type).to_owned(),
        })
    } else {
        Ok(())
    }
}

/// True for an image config (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    matches!(essence(media_type), OCI_CONFIG | DOCKER_CONFIG)
}

/// The compression of a layer media type, or `None` when it is not a layer type
/// kiln knows.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match essence(media_type) {
        OCI_LAYER_TAR
        | OCI_LAYER_NONDISTRIBUTABLE_TAR
        | DOCKER_LAYER_TAR
        | DOCKER_FOREIGN_LAYER_TAR => Some(Compression::None),
        OCI_LAYER_TAR_GZIP
        | OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
        | DOCKER_LAYER_TAR_GZIP
        | DOCKER_FOREIGN_LAYER_TAR_GZIP => Some(Compression::Gzip),
        OCI_LAYER_TAR_ZSTD | OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD | DOCKER_LAYER_TAR_ZSTD => {
            Some(Compression::Zstd)
        }
        _ => None,
    }
}

/// True for any layer media type kiln knows.
pub fn is_layer(media_type: &str) -> bool {
    layer_compression(media_type).is_some()
}

/// True for Docker foreign layers and OCI non-distributable layers: blobs that
/// registries may not hold and that are fetched from the descriptor's `urls`.
pub fn is_foreign(media_type: &str) -> bool {
    matches!(
        essence(media_type),
        DOCKER_FOREIGN_LAYER_TAR
            | DOCKER_FOREIGN_LAYER_TAR_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_TAR
            | OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD
    )
}

/// Same as [`is_foreign`]: the OCI spelling.
pub fn is_non_distributable(media_type: &str) -> bool {
    is_foreign(media_type)
}

/// The OCI layer media type for a compression.
pub fn oci_layer(compression: Compression) -> &'static str {
    match compression {
        Compression::None => OCI_LAYER_TAR,
        Compression::Gzip => OCI_LAYER_TAR_GZIP,
        Compression::Zstd => OCI_LAYER_TAR_ZSTD,
    }
}

/// The Docker schema 2 layer media type for a compression.
///
/// Docker's spec only has gzip; the others are the spellings containers/image uses.
pub fn docker_layer(compression: Compression) -> &'static str {
    match compression {
        Compression::None => DOCKER_LAYER_TAR,
        Compression::Gzip => DOCKER_LAYER_TAR_GZIP,
        Compression::Zstd => DOCKER_LAYER_TAR_ZSTD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_manifest_types_are_told_apart() {
        assert!(is_index(OCI_INDEX));
        assert!(is_index(DOCKER_MANIFEST_LIST));
        assert!(!is_index(OCI_MANIFEST));
        assert!(is_manifest(OCI_MANIFEST));
        assert!(is_manifest(&format!("{DOCKER_MANIFEST}; charset=utf-8")));
        assert!(!is_manifest(DOCKER_MANIFEST_V1));
        assert!(is_config(DOCKER_CONFIG) && is_config(OCI_CONFIG));
    }

    #[test]
    fn schema1_is_refused_with_the_repush_hint() {
        for mt in [DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED] {
            let err = refuse_schema1(mt).unwrap_err();
            assert!(err
                .to_string()
                .starts_with("Docker schema 1 manifests are not supported; re-push the image"));
        }
        refuse_schema1(OCI_MANIFEST).unwrap();
    }

    #[test]
    fn layer_compression_follows_the_suffix() {
        assert_eq!(layer_compression(OCI_LAYER_TAR), Some(Compression::None));
        assert_eq!(
            layer_compression(OCI_LAYER_TAR_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression(OCI_LAYER_TAR_ZSTD),
            Some(Compression::Zstd)
        );
        assert_eq!(
            layer_compression(DOCKER_LAYER_TAR_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression(DOCKER_FOREIGN_LAYER_TAR_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression(OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD),
            Some(Compression::Zstd)
        );
        assert_eq!(layer_compression(OCI_CONFIG), None);
        assert_eq!(layer_compression("application/octet-stream"), None);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(layer_compression(oci_layer(c)), Some(c));
            assert_eq!(layer_compression(docker_layer(c)), Some(c));
        }
    }

    #[test]
    fn foreign_and_non_distributable_layers_are_flagged() {
        assert!(is_foreign(DOCKER_FOREIGN_LAYER_TAR_GZIP));
        assert!(is_non_distributable(OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP));
        assert!(!is_foreign(OCI_LAYER_TAR_GZIP));
        assert!(!is_foreign(DOCKER_LAYER_TAR_GZIP));
    }
}
