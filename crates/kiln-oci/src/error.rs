//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::platform::NoMatchingPlatform;

/// Everything that can go wrong in `kiln-oci`.
///
/// Each variant carries the context a user needs to act on it: the digest,
/// media type, path or input at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A digest string is malformed.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The text that failed to parse.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Content does not hash to the digest it was expected to have.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the descriptor or caller promised.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },

    /// Content does not have the size it was expected to have.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest of the content that was expected.
        digest: Digest,
        /// What the descriptor promised.
        expected: u64,
        /// What was read (may stop at `expected + 1` when the stream is too long).
        actual: u64,
    },

    /// A Docker schema 1 manifest was offered; kiln refuses them.
    #[error(
        "Docker schema 1 manifests are not supported; re-push the image with a current client \
         (media type {media_type})"
    )]
    Schema1Unsupported {
        /// The schema 1 media type, or `schemaVersion 1` when told by the document.
        media_type: String,
    },

    /// A media type is not one this operation accepts.
    #[error("unsupported media type {media_type:?} for {context}")]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
        /// What was being read or written.
        context: &'static str,
    },

    /// The content type and the document's own `mediaType` disagree.
    #[error(
        "manifest content type {content_type:?} does not match the document's mediaType {document:?}"
    )]
    MediaTypeMismatch {
        /// The content type the registry (or caller) gave.
        content_type: String,
        /// The `mediaType` field inside the document.
        document: String,
    },

    /// A manifest or index is structurally invalid.
    #[error("invalid manifest: {reason}")]
    InvalidManifest {
        /// What is wrong with it.
        reason: String,
    },

    /// JSON could not be parsed or written.
    #[error("invalid {what} JSON: {source}")]
    Json {
        /// What document was being handled (`image config`, `manifest`, …).
        what: &'static str,
        /// The underlying error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A platform string could not be parsed.
    #[error("invalid platform {input:?}: {reason}")]
    InvalidPlatform {
        /// The text that failed to parse.
        input: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// No index entry matches the wanted platform.
    #[error(transparent)]
    NoMatchingPlatform(#[from] NoMatchingPlatform),

    /// A file system operation failed.
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done (`create`, `rename`, `write`, …).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Reading a blob's content failed.
    #[error("reading content for {what}: {source}")]
    Read {
        /// What was being read (a digest or `blob`).
        what: String,
        /// The reader's error.
        #[source]
        source: io::Error,
    },

    /// The output path exists and is not something kiln may replace.
    #[error("{path} exists and is not {expected}; refusing to replace it", path = .path.display())]
    DestinationExists {
        /// The output path.
        path: PathBuf,
        /// What kiln would have replaced (`an OCI image layout`, `a file`).
        expected: &'static str,
    },

    /// A manifest refers to a blob that was not written first.
    #[error("{referrer} refers to {digest}, which has not been added")]
    MissingBlob {
        /// The missing blob.
        digest: Digest,
        /// What refers to it.
        referrer: String,
    },

    /// A docker-archive `RepoTags` entry is not `name:tag`.
    #[error("invalid repo tag {tag:?} for a docker archive: {reason}")]
    InvalidRepoTag {
        /// The offending tag.
        tag: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A writer failed part-way through writing its output and cannot go on.
    #[error("an earlier error left {path} incomplete; nothing was published, start again", path = .path.display())]
    WriterFailed {
        /// The output path that was not written.
        path: PathBuf,
    },

    /// An image's layer list and its config's `rootfs.diff_ids` differ in length.
    #[error("the image has {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCountMismatch {
        /// Layers given.
        layers: usize,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(what: &'static str, source: serde_json::Error) -> Self {
        Error::Json { what, source }
    }
}
