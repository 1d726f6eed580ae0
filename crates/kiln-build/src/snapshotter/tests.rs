//! One suite, run against both snapshot backends: what a step changes is what its layer holds
//! (additions, modifications, deletions as whiteouts), a step that changes nothing makes no
//! layer, a step's known writes are its layer, and `--ignore-path` keeps paths out of layers
//! while later steps still see them. Needs root (the overlay backend mounts overlays in this
//! thread's own mount namespace).

use super::{StageFs, Writes};
use crate::layers::{LayerServices, LayerWriter};
use crate::options::{BuildOptions, ImageFormat, Isolation, Quiet};
use crate::types::Layer;
use kiln_fs::snapshot::{Change, ChangeKind};
use kiln_oci::{media_type, Descriptor, Digest};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const BACKENDS: [&str; 2] = ["dir", "overlay"];

fn options(kiln_dir: &Path) -> BuildOptions {
    BuildOptions {
        context_dir: kiln_dir.to_owned(),
        dockerfile_text: String::new(),
        dockerfile_name: "Dockerfile".into(),
        dockerfile_in_context: None,
        outside_ignore_file: None,
        build_args: Default::default(),
        target: None,
        platform: kiln_oci::Platform::host(),
        labels: Vec::new(),
        kiln_dir: kiln_dir.to_owned(),
        registry: Default::default(),
        docker_config: Default::default(),
        reproducible: true,
        source_date_epoch: None,
        single_snapshot: false,
        ignore_paths: Vec::new(),
        encoding: kiln_fs::compress::Encoding::None,
        image_format: ImageFormat::Oci,
        isolation: Isolation::Auto,
        destinations: Vec::new(),
        no_push: true,
        skip_push_permission_check: true,
        all_stages: false,
        annotations: Default::default(),
        cache: Default::default(),
        secrets: Default::default(),
        ssh: Default::default(),
    }
}

/// A kiln dir with a store holding one base layer, and a stage tree of each backend over it.
struct Fixture {
    _dir: tempfile::TempDir,
    opts: BuildOptions,
    layers: LayerServices,
    base: Layer,
    scratch: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        let scratch = dir.path().join("build");
        std::fs::create_dir_all(&scratch).unwrap();
        let layers = LayerServices::new(&mut opts, Arc::new(Quiet), scratch.clone()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            match link {
                Some(target) => tar.append_link(&mut h, path, target).unwrap(),
                None => tar.append_data(&mut h, path, data).unwrap(),
            }
        };
        add("a.txt", tar::EntryType::Regular, b"a\n", None);
        add("untouched.txt", tar::EntryType::Regular, b"same\n", None);
        add("dir/", tar::EntryType::Directory, b"", None);
        add("dir/b", tar::EntryType::Regular, b"b\n", None);
        add("dir/c", tar::EntryType::Regular, b"c\n", None);
        add("var/cache/", tar::EntryType::Directory, b"", None);
        let bytes = tar.into_inner().unwrap();
        let descriptor = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &bytes);
        layers
            .store()
            .ingest(&bytes[..], Some(&descriptor))
            .unwrap();
        let base = Layer {
            diff_id: Digest::of(&bytes),
            descriptor,
            remote: None,
        };
        Fixture {
            _dir: dir,
            opts,
            layers,
            base,
            scratch,
        }
    }

    fn writer(&self) -> LayerWriter<'_> {
        LayerWriter {
            layers: &self.layers,
            opts: &self.opts,
        }
    }

    /// A stage tree of `backend` over the base layer.
    fn stage(&self, backend: &str, ignore: &[&str]) -> StageFs {
        let ignore: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
        let dir = self.scratch.join(format!("stage-{backend}"));
        match backend {
            "dir" => {
                let root = dir.join("rootfs");
                self.layers
                    .materialize(std::slice::from_ref(&self.base), &root)
                    .unwrap();
                StageFs::dir(root, false, &ignore)
            }
            _ => {
                kiln_sandbox::overlay::private_mount_namespace().unwrap();
                let lowers = self
                    .layers
                    .unpacked_layers(std::slice::from_ref(&self.base))
                    .unwrap();
                StageFs::overlay(dir, lowers, &ignore)
            }
        }
    }

    /// The entry names of a layer written to the store (directories without their `/`).
    fn entries(&self, layer: &Layer) -> BTreeSet<String> {
        let blob = self
            .layers
            .store()
            .open_blob(&layer.descriptor.digest)
            .unwrap();
        let mut archive = tar::Archive::new(blob);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                e.path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect()
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    std::fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
    std::fs::write(root.join(rel), text).unwrap();
}

#[test]
fn a_scanned_steps_layer_holds_what_it_added_changed_and_removed() {
    for backend in BACKENDS {
        let fixture = Fixture::new();
        let mut fs = fixture.stage(backend, &[]);
        let (_, layer) = fs
            .step(&fixture.writer(), "RUN", true, false, |root| {
                write(root, "new.txt", "new\n");
                write(root, "a.txt", "changed\n");
                std::fs::remove_file(root.join("dir/b")).unwrap();
                Ok(((), Writes::default()))
            })
            .unwrap();
        let layer = layer.unwrap_or_else(|| panic!("{backend}: a layer"));
        let entries = fixture.entries(&layer);
        for expected in ["new.txt", "a.txt", "dir/.wh.b"] {
            assert!(
                entries.contains(expected),
                "{backend}: {expected} in {entries:?}"
            );
        }
        for absent in ["untouched.txt", "dir/c", "dir/b"] {
            assert!(
                !entries.contains(absent),
                "{backend}: {absent} in {entries:?}"
            );
        }
        assert!(fs.take_snapshot_stats().is_some(), "{backend}");

        // The next step sees the tree as the last one left it; changing nothing makes no layer.
        let (seen, layer) = fs
            .step(&fixture.writer(), "RUN", true, false, |root| {
                let seen = (
                    std::fs::read_to_string(root.join("a.txt")).unwrap(),
                    root.join("dir/b").exists(),
                    std::fs::read_to_string(root.join("dir/c")).unwrap(),
                );
                Ok((seen, Writes::default()))
            })
            .unwrap();
        assert_eq!(seen, ("changed\n".into(), false, "c\n".into()), "{backend}");
        assert!(layer.is_none(), "{backend}: nothing changed");
    }
}

#[test]
fn a_copy_steps_layer_is_what_it_wrote() {
    for backend in BACKENDS {
        let fixture = Fixture::new();
        let mut fs = fixture.stage(backend, &[]);
        let (_, layer) = fs
            .step(&fixture.writer(), "COPY", false, false, |root| {
                write(root, "app/main.txt", "main\n");
                let known = ["app", "app/main.txt"]
                    .iter()
                    .map(|p| Change {
                        path: PathBuf::from(p),
                        kind: ChangeKind::Added,
                    })
                    .collect();
                Ok(((), Writes::known(known)))
            })
            .unwrap();
        let entries = fixture.entries(&layer.unwrap());
        assert!(entries.contains("app/main.txt"), "{backend}: {entries:?}");
        assert!(!entries.contains("a.txt"), "{backend}: {entries:?}");
    }
}

#[test]
fn ignored_paths_stay_out_of_layers_and_later_steps_see_them() {
    for backend in BACKENDS {
        let fixture = Fixture::new();
        let mut fs = fixture.stage(backend, &["/var/cache"]);
        let (_, layer) = fs
            .step(&fixture.writer(), "RUN", true, false, |root| {
                write(root, "var/cache/junk", "junk\n");
                write(root, "kept.txt", "kept\n");
                Ok(((), Writes::default()))
            })
            .unwrap();
        let entries = fixture.entries(&layer.unwrap());
        assert!(entries.contains("kept.txt"), "{backend}: {entries:?}");
        assert!(
            !entries.iter().any(|e| e.starts_with("var/cache/")),
            "{backend}: {entries:?}"
        );
        let (junk, _) = fs
            .step(&fixture.writer(), "RUN", true, false, |root| {
                Ok((root.join("var/cache/junk").exists(), Writes::default()))
            })
            .unwrap();
        assert!(junk, "{backend}: the ignored file is still there");
    }
}

#[test]
fn a_failed_step_makes_no_layer_and_the_tree_goes_on() {
    for backend in BACKENDS {
        let fixture = Fixture::new();
        let mut fs = fixture.stage(backend, &[]);
        let failed = fs.step(&fixture.writer(), "RUN", true, false, |root| {
            write(root, "half.txt", "half\n");
            Err::<((), Writes), _>(crate::error::BuildError::Options("the step failed".into()))
        });
        assert!(failed.is_err(), "{backend}");
        // The tree can be prepared again (the overlay was unmounted).
        let (_, layer) = fs
            .step(&fixture.writer(), "RUN", true, false, |root| {
                write(root, "after.txt", "after\n");
                Ok(((), Writes::default()))
            })
            .unwrap();
        let entries = fixture.entries(&layer.unwrap());
        assert!(entries.contains("after.txt"), "{backend}: {entries:?}");
    }
}

#[test]
fn single_snapshot_makes_one_layer_at_the_end() {
    for backend in BACKENDS {
        let fixture = Fixture::new();
        let mut fs = fixture.stage(backend, &[]);
        fs.start_single("stage").unwrap();
        for name in ["one.txt", "two.txt"] {
            let (_, layer) = fs
                .step(&fixture.writer(), "RUN", true, true, |root| {
                    write(root, name, name);
                    Ok(((), Writes::default()))
                })
                .unwrap();
            assert!(layer.is_none(), "{backend}: deferred");
        }
        let layer = fs.finish_single(&fixture.writer(), "stage").unwrap();
        let entries = fixture.entries(&layer.unwrap());
        assert!(
            entries.contains("one.txt") && entries.contains("two.txt"),
            "{backend}: {entries:?}"
        );
    }
}
