//! The content store: verified ingest, nothing left behind on mismatch,
//! diff_id-checked unpacking, reuse, and concurrent callers.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

use common::{gzip, zstd, Layer};
use kiln_fs::apply::{ApplyOptions, Whiteouts};
use kiln_fs::store::{ContentStore, StoreError, UnpackedLayers};
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

fn merged(store: &ContentStore) -> UnpackedLayers {
    store.unpacked(ApplyOptions::default()).unwrap()
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
    let err = merged(&store).unpack(&desc.digest, &wrong).unwrap_err();
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
        names(&store.root().join("layers/merged")).is_empty(),
        "temp dir left behind"
    );
    assert!(!merged(&store).contains(&wrong));

    let diff_id = Digest::of(&tar);
    let (path, stats) = merged(&store)
        .unpack_with_stats(&desc.digest, &diff_id)
        .unwrap();
    assert_eq!(path, store.root().join("layers/merged").join(diff_id.hex()));
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
    assert_eq!(names(&store.root().join("layers/merged")), [diff_id.hex()]);
}

#[test]
fn an_unpacked_layer_is_reused() {
    let (_d, store) = store();
    let tar = sample_layer();
    let blob = zstd(&tar);
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR_ZSTD, &blob);
    store.ingest(&blob[..], Some(&desc)).unwrap();
    let diff_id = Digest::of(&tar);
    let (first, stats) = merged(&store)
        .unpack_with_stats(&desc.digest, &diff_id)
        .unwrap();
    assert!(stats.is_some());
    let marker = first.join("marker");
    fs::write(&marker, b"proves no re-extraction").unwrap();
    let (second, stats) = merged(&store)
        .unpack_with_stats(&desc.digest, &diff_id)
        .unwrap();
    assert_eq!(first, second);
    assert!(stats.is_none());
    assert!(marker.exists());
    assert!(merged(&store).contains(&diff_id));
}

#[test]
fn unpacking_a_missing_blob_names_it() {
    let (_d, store) = store();
    let digest = Digest::of(b"never stored");
    let err = merged(&store).unpack(&digest, &digest).unwrap_err();
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
    let err = merged(&store)
        .unpack(&desc.digest, &Digest::of(&tar))
        .unwrap_err();
    assert!(matches!(err, StoreError::BlobCorrupt { .. }), "{err}");
    assert!(names(&store.root().join("layers/merged")).is_empty());
}

#[test]
fn a_broken_layer_publishes_nothing() {
    let (_d, store) = store();
    let tar = Layer::new()
        .raw(b"../escape", tar::EntryType::Regular, b"", b"x")
        .finish();
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &tar);
    store.ingest(&tar[..], Some(&desc)).unwrap();
    let err = merged(&store)
        .unpack(&desc.digest, &Digest::of(&tar))
        .unwrap_err();
    assert!(matches!(err, StoreError::Apply { .. }), "{err}");
    assert!(names(&store.root().join("layers/merged")).is_empty());
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
                merged(&store).unpack(&desc.digest, &diff_id).unwrap()
            })
        })
        .collect();
    let paths: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        names(&store.root().join("layers/merged")),
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

#[test]
fn a_blob_writer_publishes_only_verified_content_and_never_replaces_a_blob() {
    let (_d, store) = store();
    let content = b"layer bytes".to_vec();
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &content);

    // Wrong content for the descriptor: refused, nothing stored or left in ingest/.
    let mut writer = store.blob_writer(Some(&desc)).unwrap();
    std::io::Write::write_all(&mut writer, b"other bytes").unwrap();
    let err = writer.commit().unwrap_err();
    assert!(matches!(err, StoreError::Verify { .. }), "{err}");
    assert!(!store.contains(&desc.digest));
    assert!(names(&store.root().join("ingest")).is_empty());

    // Dropped before commit: nothing left either.
    let mut writer = store.blob_writer(None).unwrap();
    std::io::Write::write_all(&mut writer, &content).unwrap();
    drop(writer);
    assert!(names(&store.root().join("ingest")).is_empty());
    assert!(!store.contains(&desc.digest));

    // Without a descriptor: stored under what it hashes to.
    let mut writer = store.blob_writer(None).unwrap();
    std::io::Write::write_all(&mut writer, &content).unwrap();
    assert_eq!(writer.commit().unwrap().digest, desc.digest);
    let path = store.blob_path(&desc.digest);
    let inode = fs::metadata(&path).unwrap().ino();

    // The same blob again: it replaces the copy there (equal content, a new inode; a reader of
    // the old one keeps it).
    let reader = fs::File::open(&path).unwrap();
    let mut writer = store.blob_writer(Some(&desc)).unwrap();
    std::io::Write::write_all(&mut writer, &content).unwrap();
    writer.commit().unwrap();
    assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
    assert_eq!(reader.metadata().unwrap().ino(), inode);
    assert_eq!(fs::read(&path).unwrap(), content);

    // A stored blob damaged on disk (cut short, or other bytes of the same size): the same
    // content written again heals it.
    for damage in [
        content[..content.len() / 2].to_vec(),
        vec![0u8; content.len()],
    ] {
        fs::remove_file(&path).unwrap();
        fs::write(&path, &damage).unwrap();
        let mut writer = store.blob_writer(Some(&desc)).unwrap();
        std::io::Write::write_all(&mut writer, &content).unwrap();
        writer.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), content);
    }
}

#[test]
fn layers_unpacked_for_overlay_and_merged_are_kept_apart() {
    let (_d, store) = store();
    // A layer that deletes a file: merged, the whiteout is applied (nothing there); for
    // overlay it becomes a 0:0 character device.
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.gone", b"")
        .finish();
    let desc = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &tar);
    store.ingest(&tar[..], Some(&desc)).unwrap();
    let diff_id = Digest::of(&tar);
    let mut options = ApplyOptions::default();
    options.whiteouts = Whiteouts::Overlay;
    let overlay = store.unpacked(options).unwrap();
    let for_overlay = overlay.unpack(&desc.digest, &diff_id).unwrap();
    let for_merge = merged(&store).unpack(&desc.digest, &diff_id).unwrap();
    assert_ne!(for_overlay, for_merge);
    assert!(fs::symlink_metadata(for_merge.join("etc/gone")).is_err());
    let whiteout = fs::symlink_metadata(for_overlay.join("etc/gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(whiteout.rdev(), 0);
    assert!(!merged(&store).contains(&Digest::of(b"x")));
    assert_eq!(
        UnpackedLayers::format_name(&ApplyOptions::rootless()),
        "merged-noowners-nodevices"
    );
}

#[test]
fn adopting_a_tree_publishes_it_once() {
    let (d, store) = store();
    let layers = merged(&store);
    let diff_id = Digest::of(b"some layer");
    let first = d.path().join("store/first");
    fs::create_dir_all(first.join("a")).unwrap();
    fs::write(first.join("a/file"), b"1").unwrap();
    let adopted = layers.adopt(&first, &diff_id).unwrap();
    assert_eq!(adopted, layers.path(&diff_id));
    assert_eq!(fs::read(adopted.join("a/file")).unwrap(), b"1");
    assert!(!first.exists());
    // A second tree for the same layer: the published one stays, the new one goes.
    let second = d.path().join("store/second");
    fs::create_dir_all(&second).unwrap();
    assert_eq!(layers.adopt(&second, &diff_id).unwrap(), adopted);
    assert!(!second.exists());
    assert!(adopted.join("a/file").exists());
}

#[test]
fn a_producer_hashed_blob_is_published_under_its_digest_once_the_size_matches() {
    let (_d, store) = store();
    let content = b"a layer the encoder hashed".to_vec();
    let digested = kiln_oci::Digested {
        digest: Digest::of(&content),
        size: content.len() as u64,
    };
    // A size that is not what was written: refused, nothing stored or left behind.
    let mut writer = store.blob_writer_hashed_by_producer().unwrap();
    std::io::Write::write_all(&mut writer, &content[1..]).unwrap();
    let err = writer.commit_as(digested.clone()).unwrap_err();
    assert!(matches!(err, StoreError::Verify { .. }), "{err}");
    assert!(!store.contains(&digested.digest));
    assert!(names(&store.root().join("ingest")).is_empty());
    // Without the producer's digest there is nothing to publish under.
    let mut writer = store.blob_writer_hashed_by_producer().unwrap();
    std::io::Write::write_all(&mut writer, &content).unwrap();
    assert!(writer.commit().is_err());
    assert!(names(&store.root().join("ingest")).is_empty());
    // The right size: published under the producer's digest.
    let mut writer = store.blob_writer_hashed_by_producer().unwrap();
    std::io::Write::write_all(&mut writer, &content).unwrap();
    assert_eq!(writer.commit_as(digested.clone()).unwrap(), digested);
    assert_eq!(
        fs::read(store.blob_path(&digested.digest)).unwrap(),
        content
    );
}
