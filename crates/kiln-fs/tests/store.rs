//! The content store: verified ingest, nothing left behind on mismatch,
//! diff_id-checked unpacking, reuse, and concurrent callers.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

use common::{gzip, zstd, Layer};
use kiln_fs::store::{ContentStore, StoreError};
use kiln_oci::{media_type, Algorithm, Descriptor, Digest};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn sample_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc/", 0o755)
        .file("etc/os-release", b"ID=kiln\n")
        .hardlink("etc/os-release.link", "etc/os-release")
        .symlink("lib", "usr/lib")
        .finish()
}

#[test]
fn ingest_verifies_and_stores_the_blob_read_only() {
    let (_d, store) = store();
    let data = b"some blob bytes".repeat(1000);
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &data);
    assert!(!store.contains(&desc.digest));
    let got = store.ingest(&data[..], Some(&desc)).unwrap();
    assert_eq!(
        (got.digest.clone(), got.size),
        (desc.digest.clone(), desc.size)
    );
    assert!(store.contains(&desc.digest));
    let path = store.blob_path(&desc.digest);
    assert_eq!(
        path,
        store.root().join("blobs/sha256").join(desc.digest.hex())
    );
    assert_eq!(fs::read(&path).unwrap(), data);
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o444);
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut store.open_blob(&desc.digest).unwrap(), &mut back).unwrap();
    assert_eq!(back, data);
    assert!(names(&store.root().join("ingest")).is_empty());
    // Present already: the reader is not even consulted.
    let again = store.ingest(&b"not read"[..], Some(&desc)).unwrap();
    assert_eq!(again.digest, desc.digest);
}

#[test]
fn ingest_without_a_descriptor_names_the_blob_by_its_sha256() {
    let (_d, store) = store();
    let got = store.ingest(&b"hello"[..], None).unwrap();
    assert_eq!(got.digest, Digest::of(b"hello"));
    assert_eq!(got.size, 5);
    assert!(store.contains(&Digest::of(b"hello")));
}

#[test]
fn ingest_of_a_sha512_descriptor_stores_under_sha512() {
    let (_d, store) = store();
    let digest = Digest::of_with(Algorithm::Sha512, b"abc");
    let desc = Descriptor::new(media_type::OCI_LAYER_TAR, digest.clone(), 3);
    store.ingest(&b"abc"[..], Some(&desc)).unwrap();
    assert!(store
        .root()
        .join("blobs/sha512")
        .join(digest.hex())
        .is_file());
}

#[test]
fn an_ingest_mismatch_leaves_nothing() {
    let (_d, store) = store();
    let good = b"the real content";
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, good);
    for (bad, want_size_error) in [
        (&b"the fake content"[..], false), // same size, other digest
        (&b"the real content and more"[..], true),
        (&b"the real"[..], true),
    ] {
        let err = store.ingest(bad, Some(&desc)).unwrap_err();
        match &err {
            StoreError::Verify { expected, source } => {
                assert_eq!(expected, &desc.digest);
                let is_size = matches!(source, kiln_oci::Error::SizeMismatch { .. });
                assert_eq!(is_size, want_size_error, "{err}");
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains(&desc.digest.to_string()), "{err}");
        assert!(!store.contains(&desc.digest));
        assert!(names(&store.root().join("ingest")).is_empty());
        assert!(names(&store.root().join("blobs/sha256")).is_empty());
    }
}

#[test]
fn a_failing_reader_leaves_nothing() {
    struct Broken(usize);
    impl std::io::Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            self.0 -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }
    let (_d, store) = store();
    let err = store.ingest(Broken(10), None).unwrap_err();
    assert!(matches!(err, StoreError::Read { .. }), "{err}");
    assert!(names(&store.root().join("ingest")).is_empty());
    assert!(names(&store.root().join("blobs/sha256")).is_empty());
}

#[test]
fn unpack_layer_verifies_the_diff_id_and_publishes_only_on_success() {
    let (_d, store) = store();
    let tar = sample_layer();
    let blob = gzip(&tar);
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR_GZIP, &blob);
    store.ingest(&blob[..], Some(&desc)).unwrap();

    let wrong = Digest::of(b"not the tar");
    let err = store.unpack_layer(&desc.digest, &wrong).unwrap_err();
    match &err {
        StoreError::DiffIdMismatch {
            blob,
            expected,
            actual,
        } => {
            assert_eq!(
                (blob, expected, actual),
                (&desc.digest, &wrong, &Digest::of(&tar))
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(
        names(&store.root().join("layers")).is_empty(),
        "temp dir left behind"
    );
    assert!(!store.contains_layer(&wrong));

    let diff_id = Digest::of(&tar);
    let (path, stats) = store
        .unpack_layer_with_stats(&desc.digest, &diff_id)
        .unwrap();
    assert_eq!(path, store.root().join("layers").join(diff_id.hex()));
    let stats = stats.expect("freshly unpacked");
    assert_eq!(stats.compression, Some(kiln_oci::Compression::Gzip));
    assert_eq!(fs::read(path.join("etc/os-release")).unwrap(), b"ID=kiln\n");
    assert_eq!(
        fs::metadata(path.join("etc/os-release")).unwrap().ino(),
        fs::metadata(path.join("etc/os-release.link"))
            .unwrap()
            .ino()
    );
    assert_eq!(
        fs::read_link(path.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(names(&store.root().join("layers")), [diff_id.hex()]);
}

#[test]
fn an_unpacked_layer_is_reused() {
    let (_d, store) = store();
    let tar = sample_layer();
    let blob = zstd(&tar);
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR_ZSTD, &blob);
    store.ingest(&blob[..], Some(&desc)).unwrap();
    let diff_id = Digest::of(&tar);
    let (first, stats) = store
        .unpack_layer_with_stats(&desc.digest, &diff_id)
        .unwrap();
    assert!(stats.is_some());
    let marker = first.join("marker");
    fs::write(&marker, b"proves no re-extraction").unwrap();
    let (second, stats) = store
        .unpack_layer_with_stats(&desc.digest, &diff_id)
        .unwrap();
    assert_eq!(first, second);
    assert!(stats.is_none());
    assert!(marker.exists());
    assert!(store.contains_layer(&diff_id));
}

#[test]
fn unpacking_a_missing_blob_names_it() {
    let (_d, store) = store();
    let digest = Digest::of(b"never stored");
    let err = store.unpack_layer(&digest, &digest).unwrap_err();
    assert!(
        matches!(&err, StoreError::BlobNotFound { digest: d, .. } if *d == digest),
        "{err}"
    );
    assert!(err.to_string().contains(&digest.to_string()));
}

#[test]
fn a_damaged_blob_is_not_unpacked() {
    let (_d, store) = store();
    let tar = sample_layer();
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &tar);
    store.ingest(&tar[..], Some(&desc)).unwrap();
    // Flip a byte in the padding at the end: the tar still applies, but
    // the blob no longer hashes to its name.
    let path = store.blob_path(&desc.digest);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = store
        .unpack_layer(&desc.digest, &Digest::of(&tar))
        .unwrap_err();
    assert!(matches!(err, StoreError::BlobCorrupt { .. }), "{err}");
    assert!(names(&store.root().join("layers")).is_empty());
}

#[test]
fn a_broken_layer_publishes_nothing() {
    let (_d, store) = store();
    let tar = Layer::new()
        .raw(b"../escape", tar::EntryType::Regular, b"", b"x")
        .finish();
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &tar);
    store.ingest(&tar[..], Some(&desc)).unwrap();
    let err = store
        .unpack_layer(&desc.digest, &Digest::of(&tar))
        .unwrap_err();
    assert!(matches!(err, StoreError::Apply { .. }), "{err}");
    assert!(names(&store.root().join("layers")).is_empty());
    assert!(!store.root().join("escape").exists());
}

#[test]
fn concurrent_unpacks_of_one_layer_agree() {
    let (_d, store) = store();
    let mut layer = Layer::new();
    for i in 0..200 {
        layer.file(&format!("d{}/f{i}", i % 10), &vec![i as u8; 4096]);
    }
    let tar = layer.finish();
    let blob = gzip(&tar);
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR_GZIP, &blob);
    let diff_id = Digest::of(&tar);
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, barrier, blob, desc, diff_id) = (
                store.clone(),
                barrier.clone(),
                blob.clone(),
                desc.clone(),
                diff_id.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                store.ingest(&blob[..], Some(&desc)).unwrap();
                store.unpack_layer(&desc.digest, &diff_id).unwrap()
            })
        })
        .collect();
    let paths: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        names(&store.root().join("layers")),
        [diff_id.hex()],
        "temp dirs left"
    );
    assert!(names(&store.root().join("ingest")).is_empty());
    assert_eq!(fs::read(paths[0].join("d3/f13")).unwrap(), vec![13u8; 4096]);
    let files = walkdir::WalkDir::new(&paths[0])
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(files, 200);
}

#[test]
fn a_layers_listing_is_read_from_its_tar_headers_once_and_kept_without_the_blob() {
    use kiln_fs::listing::{PathKind, StackListing};
    let (_d, store) = store();
    let blob = gzip(&sample_layer());
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR_GZIP, &blob);
    // Not stored yet: said so, the way a caller knows to fetch it.
    assert!(matches!(
        store.layer_entries(&desc.digest),
        Err(StoreError::BlobNotFound { .. })
    ));
    store.ingest(&blob[..], Some(&desc)).unwrap();
    let first = store.layer_entries(&desc.digest).unwrap();
    let mut listing = StackListing::default();
    listing.add(&first);
    assert_eq!(listing.kind("/etc"), Some(&PathKind::Dir));
    assert_eq!(listing.kind("/etc/os-release"), Some(&PathKind::Other));
    assert_eq!(
        listing.kind("/lib"),
        Some(&PathKind::Symlink("usr/lib".into()))
    );
    assert_eq!(listing.kind("/usr"), None, "only what the headers list");
    // Kept: the blob is no longer needed.
    let path = store.blob_path(&desc.digest);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(&path).unwrap();
    assert_eq!(store.layer_entries(&desc.digest).unwrap(), first);
}
