//! Canonical JSON: the bytes kiln writes for manifests and configs.
//!
//! "Canonical" here means compact (no whitespace) and deterministic: fields in
//! the order the types declare them (the OCI spec's order), then unknown
//! fields sorted by name, every map a `BTreeMap`. The same value always gives
//! the same bytes and so the same digest.

use serde::Serialize;

use crate::descriptor::Descriptor;
use crate::digest::Digest;
use crate::error::Error;

/// Serialized JSON with its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalJson {
    /// The compact JSON.
    pub bytes: Vec<u8>,
    /// The sha256 of `bytes`.
    pub digest: Digest,
}

impl CanonicalJson {
    /// The byte length.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// A descriptor for these bytes.
    pub fn descriptor(&self, media_type: impl Into<String>) -> Descriptor {
        Descriptor::new(media_type, self.digest.clone(), self.size())
    }
}

pub(crate) fn to_vec<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::json(what, e))
}

pub(crate) fn canonical<T: Serialize>(
    what: &'static str,
    value: &T,
) -> Result<CanonicalJson, Error> {
    let bytes = to_vec(what, value)?;
    let digest = Digest::of(&bytes);
    Ok(CanonicalJson { bytes, digest })
}

/// Adds `to_canonical_json` and `canonical` to a serializable type.
macro_rules! impl_canonical {
    ($ty:ty, $what:literal) => {
        impl $ty {
            /// Compact, deterministic JSON (see [`crate::canonical`]).
            pub fn to_canonical_json(&self) -> Result<Vec<u8>, $crate::Error> {
                $crate::canonical::to_vec($what, self)
            }

            /// Compact, deterministic JSON with its sha256 digest.
            pub fn canonical(&self) -> Result<$crate::canonical::CanonicalJson, $crate::Error> {
                $crate::canonical::canonical($what, self)
            }
        }
    };
}
pub(crate) use impl_canonical;
