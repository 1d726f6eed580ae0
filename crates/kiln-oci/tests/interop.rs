//! Interop: what kiln-oci writes, read back by the real skopeo and umoci.
//!
//! These tests need `skopeo` and `umoci` on PATH (Debian: `apt-get install
//! skopeo umoci`). They fail, loudly, when a tool is missing: an interop
//! check that silently skips proves nothing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::write::GzEncoder;
use kiln_oci::{
    media_type, Descriptor, Digest, DockerArchiveWriter, History, ImageConfig, ImageIndex,
    ImageManifest, OciLayoutWriter, Platform,
};

const HELLO: &[u8] = b"hello from kiln\n";
const SCRIPT: &[u8] = b"#!/bin/sh\necho run\n";

/// A one-layer linux/amd64 image, held in memory (it is tiny).
struct TestImage {
    layer_tar: Vec<u8>,
    layer_gz: Vec<u8>,
    config: Vec<u8>,
    config_desc: Descriptor,
}

impl TestImage {
    fn new() -> TestImage {
        let layer_tar = layer_tar();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&layer_tar).unwrap();
        let layer_gz = gz.finish().unwrap();

        let mut config = ImageConfig::for_platform(&Platform::new("linux", "amd64"));
        config.created = Some("2024-01-01T00:00:00Z".to_owned());
        let c = config.config_mut();
        c.env = Some(vec!["PATH=/usr/bin:/bin".to_owned()]);
        c.entrypoint = Some(vec!["/app/run.sh".to_owned()]);
        c.cmd = Some(vec!["--greet".to_owned()]);
        c.working_dir = Some("/app".to_owned());
        config.push_step(
            Some(Digest::of(&layer_tar)),
            History {
                created_by: Some("COPY . /".to_owned()),
                ..History::default()
            },
        );
        let config = config.canonical().unwrap();
        TestImage {
            config_desc: config.descriptor(media_type::OCI_CONFIG),
            config: config.bytes,
            layer_tar,
            layer_gz,
        }
    }

    fn gz_desc(&self) -> Descriptor {
        Descriptor::for_bytes(media_type::OCI_LAYER_TAR_GZIP, &self.layer_gz)
    }

    fn tar_desc(&self) -> Descriptor {
        Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &self.layer_tar)
    }

    fn manifest(&self) -> Vec<u8> {
        ImageManifest::oci(self.config_desc.clone(), vec![self.gz_desc()])
            .to_canonical_json()
            .unwrap()
    }

    fn write_layout(&self, dir: &Path, tag: &str) {
        let mut w = OciLayoutWriter::create(dir).unwrap();
        w.add_blob(&self.config[..], Some(&self.config_desc))
            .unwrap();
        let gz = self.gz_desc();
        w.add_blob(&self.layer_gz[..], Some(&gz)).unwrap();
        w.add_manifest(&self.manifest(), media_type::OCI_MANIFEST, Some(tag))
            .unwrap();
        w.finish().unwrap();
    }

    fn write_docker_archive(&self, file: &Path, compressed: bool, tags: &[&str]) {
        let (desc, bytes) = if compressed {
            (self.gz_desc(), &self.layer_gz)
        } else {
            (self.tar_desc(), &self.layer_tar)
        };
        let mut w = DockerArchiveWriter::create(file).unwrap();
        w.add_image(&self.config, vec![(desc, &bytes[..])], tags)
            .unwrap();
        w.finish().unwrap();
    }
}

fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, path, data).unwrap();
    };
    entry("hello.txt", tar::EntryType::Regular, 0o644, HELLO);
    entry("app/", tar::EntryType::Directory, 0o755, b"");
    entry("app/run.sh", tar::EntryType::Regular, 0o755, SCRIPT);
    b.into_inner().unwrap()
}

/// The path of a required tool, or a panic that says how to get it.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is required by the kiln-oci interop tests and is not on PATH; \
             install it (Debian: apt-get install {name})"
        )
    })
}

/// Runs a command, failing the test with its output unless it succeeds.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn skopeo() -> Command {
    let mut c = Command::new(tool("skopeo"));
    // No trust policy of the machine's: these are local, unsigned images.
    c.arg("--insecure-policy");
    c
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn umoci_unpack(image: &str, bundle: &Path) {
    run(Command::new(tool("umoci"))
        .args(["unpack", "--rootless", "--image", image])
        .arg(bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read(rootfs.join("hello.txt")).unwrap(), HELLO);
    assert_eq!(fs::read(rootfs.join("app/run.sh")).unwrap(), SCRIPT);
}

#[test]
fn skopeo_inspects_an_oci_layout_and_sees_kilns_manifest_bytes() {
    let img = TestImage::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    img.write_layout(&layout, "v1");
    let reference = format!("oci:{}:v1", layout.display());

    let raw = run(skopeo().args(["inspect", "--raw", &reference]));
    assert_eq!(
        raw,
        img.manifest(),
        "skopeo serves the manifest bytes as written"
    );

    let config = run(skopeo().args(["inspect", "--config", "--raw", &reference]));
    assert_eq!(config, img.config);

    let info = json(&run(skopeo().args(["inspect", &reference])));
    assert_eq!(info["Digest"], Digest::of(&img.manifest()).to_string());
    assert_eq!(
        info["Layers"],
        serde_json::json!([img.gz_desc().digest.to_string()])
    );
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Architecture"], "amd64");
}

#[test]
fn skopeo_copies_an_oci_layout_to_a_dir_with_the_same_digests() {
    let img = TestImage::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    img.write_layout(&layout, "v1");
    let dest = tmp.path().join("copied");
    run(skopeo()
        .arg("copy")
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("dir:{}", dest.display())));

    assert_eq!(
        fs::read(dest.join("manifest.json")).unwrap(),
        img.manifest()
    );
    let blob = |d: &Digest| fs::read(dest.join(d.hex())).unwrap();
    assert_eq!(blob(&img.gz_desc().digest), img.layer_gz);
    assert_eq!(blob(&img.config_desc.digest), img.config);
}

#[test]
fn umoci_unpacks_an_oci_layout() {
    let img = TestImage::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    img.write_layout(&layout, "v1");
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&format!("{}:v1", layout.display()), &bundle);
    let runtime = json(&fs::read(bundle.join("config.json")).unwrap());
    assert_eq!(
        runtime["process"]["args"],
        serde_json::json!(["/app/run.sh", "--greet"])
    );
    assert_eq!(runtime["process"]["cwd"], "/app");
}

#[test]
fn skopeo_reads_a_docker_archive_with_a_gzip_layer() {
    let img = TestImage::new();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("image.tar");
    img.write_docker_archive(&archive, true, &["kiln.test/app:v1"]);
    let reference = format!("docker-archive:{}", archive.display());

    let info = json(&run(skopeo().args(["inspect", &reference])));
    // containers/image presents docker-archive layers uncompressed: by diff_id.
    assert_eq!(
        info["Layers"],
        serde_json::json!([Digest::of(&img.layer_tar).to_string()])
    );
    assert_eq!(info["Os"], "linux");
    let config = run(skopeo().args(["inspect", "--config", "--raw", &reference]));
    assert_eq!(config, img.config);

    // The image can also be picked by its tag.
    run(skopeo().args(["inspect", &format!("{reference}:kiln.test/app:v1")]));

    let copied = tmp.path().join("copied");
    run(skopeo()
        .arg("copy")
        .arg(&reference)
        .arg(format!("oci:{}:x", copied.display())));
    umoci_unpack(
        &format!("{}:x", copied.display()),
        &tmp.path().join("bundle"),
    );
}

#[test]
fn skopeo_reads_a_docker_archive_with_an_uncompressed_layer() {
    let img = TestImage::new();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("image.tar");
    img.write_docker_archive(&archive, false, &["app:latest"]);
    let reference = format!("docker-archive:{}", archive.display());
    let copied = tmp.path().join("copied");
    run(skopeo()
        .arg("copy")
        .arg(&reference)
        .arg(format!("oci:{}:x", copied.display())));
    umoci_unpack(
        &format!("{}:x", copied.display()),
        &tmp.path().join("bundle"),
    );
}

#[test]
fn skopeo_copies_an_oci_layout_into_a_docker_archive_kiln_can_match() {
    // The reverse direction: skopeo's own docker-archive of kiln's layout
    // names the same config, so both writers agree on the image.
    let img = TestImage::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    img.write_layout(&layout, "v1");
    let theirs = tmp.path().join("theirs.tar");
    run(skopeo()
        .arg("copy")
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker-archive:{}:app:v1", theirs.display())));
    let ours = tmp.path().join("ours.tar");
    img.write_docker_archive(&ours, true, &["app:v1"]);
    let config_of = |p: &Path| {
        run(skopeo().args([
            "inspect",
            "--config",
            "--raw",
            &format!("docker-archive:{}", p.display()),
        ]))
    };
    assert_eq!(config_of(&theirs), config_of(&ours));
}

#[test]
fn skopeo_resolves_a_platform_from_an_index_kiln_wrote() {
    let img = TestImage::new();
    let manifest = img.manifest();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut w = OciLayoutWriter::create(&layout).unwrap();
    w.add_blob(&img.config[..], Some(&img.config_desc)).unwrap();
    w.add_blob(&img.layer_gz[..], Some(&img.gz_desc())).unwrap();
    w.add_blob(&manifest[..], None).unwrap();
    let index = ImageIndex::oci(vec![Descriptor::for_bytes(
        media_type::OCI_MANIFEST,
        &manifest,
    )
    .with_platform(Platform::new("linux", "amd64"))])
    .to_canonical_json()
    .unwrap();
    w.add_manifest(&index, media_type::OCI_INDEX, Some("multi"))
        .unwrap();
    w.finish().unwrap();

    let reference = format!("oci:{}:multi", layout.display());
    assert_eq!(run(skopeo().args(["inspect", "--raw", &reference])), index);
    // skopeo reports the index's digest, and resolves the platform to read the config.
    let platform_args = ["--override-os", "linux", "--override-arch", "amd64"];
    let info = json(&run(skopeo()
        .args(platform_args)
        .args(["inspect", &reference])));
    assert_eq!(info["Digest"], Digest::of(&index).to_string());
    assert_eq!(info["Architecture"], "amd64");
    let config = run(skopeo()
        .args(platform_args)
        .args(["inspect", "--config", "--raw", &reference]));
    assert_eq!(config, img.config);
    let copied = tmp.path().join("copied");
    run(skopeo()
        .args(["copy", "--all"])
        .arg(&reference)
        .arg(format!("oci:{}:multi", copied.display())));
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&format!("{}:multi", copied.display()), &bundle);
}
