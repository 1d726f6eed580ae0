/*!
`kiln-fs` is kiln's file system layer: it turns image layers into directories
and keeps the local content store.

Its one job: put image content on disk, safely and verified. It never writes
outside the directory it is given, whatever a layer contains.

Main types:

- [`apply::apply_layer`] applies a layer (plain, gzip or zstd tar, detected by
  magic bytes) over a directory with OCI/Docker semantics: whiteouts, opaque
  directories, hard links, devices, owners, modes, times, xattrs. Paths are
  resolved with `openat2(RESOLVE_IN_ROOT)` and every change is made with `*at`
  calls, so no entry, symlink or hard link can reach outside the target.
  [`apply::ApplyOptions`] chooses root or rootless behaviour;
  [`apply::ApplyStats`] says what was done.
- [`store::ContentStore`]: blobs by digest (`blobs/sha256/<hex>`), written
  through a verifying [`store::BlobWriter`], and [`store::UnpackedLayers`]:
  layers unpacked by diff_id and format (`layers/<format>/<hex>/`), published
  atomically and verified while they stream. Only this crate writes there.
- [`snapshot`]: [`snapshot::StatIndex`] records the `lstat` of every entry
  under a root without reading content; [`snapshot::diff`] turns two of them
  into [`snapshot::Changes`] (what a RUN step changed).
- [`layer`]: [`layer::write_layer`] writes the layer tar for a change set,
  [`layer::layer_from_overlay_upper`] the one an overlayfs upper dir stands
  for.
- [`compress`]: [`compress::LayerEncoder`] compresses (gzip, parallel gzip,
  zstd, or none) and computes diff_id and digest in the same pass.

# Example

```
use kiln_fs::apply::{apply_layer, ApplyOptions};
use kiln_fs::store::ContentStore;
use kiln_oci::{media_type, Descriptor, Digest};

# fn main() -> Result<(), Box<dyn std::error::Error>> {
// A one-file layer.
let mut tar = tar::Builder::new(Vec::new());
let mut header = tar::Header::new_gnu();
header.set_entry_type(tar::EntryType::Regular);
header.set_mode(0o644);
header.set_size(3);
tar.append_data(&mut header, "etc/motd", &b"hi\n"[..])?;
let layer = tar.into_inner()?;

// Apply it directly…
let dir = tempfile::tempdir()?;
let stats = apply_layer(&layer[..], dir.path(), &ApplyOptions::default())?;
assert_eq!(stats.files, 1);
assert_eq!(std::fs::read(dir.path().join("etc/motd"))?, b"hi\n");

// …or store the blob and unpack it by diff_id (an uncompressed layer's
// diff_id is its digest).
let store = ContentStore::open(dir.path().join("store"))?;
let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &layer);
store.ingest(&layer[..], Some(&desc))?;
let layers = store.unpacked(ApplyOptions::default())?;
let unpacked = layers.unpack(&desc.digest, &Digest::of(&layer))?;
assert!(unpacked.join("etc/motd").is_file());
# Ok(())
# }
```

A RUN step's layer from two stat indexes (no content is hashed to find what changed):

```
use std::path::Path;
use kiln_fs::{layer, snapshot};

# fn main() -> Result<(), Box<dyn std::error::Error>> {
let dir = tempfile::tempdir()?;
let root = dir.path();
std::fs::write(root.join("kept"), "same")?;
let before = snapshot::StatIndex::scan(root, &[Path::new("/kiln")])?;

// ... the step changes the tree ...
std::fs::write(root.join("new"), "hello")?;

let after = snapshot::StatIndex::scan(root, &[Path::new("/kiln")])?;
let changes = snapshot::diff(&before, &after);
assert_eq!(changes.len(), 1);
let mut blob = Vec::new();
let info = layer::write_layer(root, &changes, &mut blob, &layer::LayerOptions::default())?;
assert_eq!(info.digest, kiln_oci::Digest::of(&blob));
# Ok(())
# }
```

Must not depend on: any kiln crate but `kiln-oci`.
*/
#![deny(missing_docs)]

pub mod apply;
mod at;
pub mod cache_mounts;
pub mod compress;
pub mod decompress;
pub mod gc;
pub mod image_path;
pub mod layer;
pub mod listing;
mod pax;
mod records;
mod side_hash;
pub mod snapshot;
pub mod store;
mod unpacked;
pub mod xattr;
