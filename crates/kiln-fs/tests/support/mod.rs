//! Helpers shared by the integration tests: tree capture, tar listing,
//! umoci application.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_fs::layer::LayerInfo;
use kiln_oci::{
    media_type, Descriptor, Digest, ImageConfig, ImageManifest, OciLayoutWriter, Platform,
};

/// What the tests compare of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: char,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// sha256 of the content, for regular files.
    pub content: Option<Digest>,
    pub target: Option<PathBuf>,
    pub rdev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Other paths sharing the inode (hard links), sorted.
    pub links: Vec<String>,
    /// mtime seconds, for regular files.
    pub mtime: Option<i64>,
}

/// Every path under `root` but those under `skip`, with what matters of it.
pub(crate) fn capture(root: &Path, skip: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut by_ino: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap();
            !skip
                .iter()
                .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
        });
    for e in walk {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            '-'
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = xattr::list(e.path()) {
            for n in names {
                let n = n.to_str().unwrap().to_owned();
                if n == "security.selinux" {
                    continue;
                }
                if let Ok(Some(v)) = xattr::get(e.path(), &n) {
                    xattrs.insert(n, v);
                }
            }
        }
        if kind != 'd' && md.nlink() > 1 {
            by_ino
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        let content = (kind == '-').then(|| {
            let mut v = Vec::new();
            fs::File::open(e.path())
                .unwrap()
                .read_to_end(&mut v)
                .unwrap();
            Digest::of(&v)
        });
        out.insert(
            rel,
            Node {
                kind,
                perm: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                content,
                target: (kind == 'l').then(|| fs::read_link(e.path()).unwrap()),
                rdev: matches!(kind, 'c' | 'b')
                    .then(|| (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()))),
                xattrs,
                links: Vec::new(),
                mtime: (kind == '-').then(|| md.mtime()),
            },
        );
    }
    for group in by_ino.values() {
        for p in group {
            let others: Vec<String> = group.iter().filter(|q| *q != p).cloned().collect();
            out.get_mut(p).unwrap().links = others;
        }
    }
    out
}

/// Asserts two captures are equal, naming the first differences.
pub(crate) fn assert_same_tree(expected: &BTreeMap<String, Node>, actual: &BTreeMap<String, Node>) {
    let mut problems = Vec::new();
    for (p, n) in expected {
        match actual.get(p) {
            None => problems.push(format!("missing {p}")),
            Some(m) if m != n => problems.push(format!("differs {p}:\n  want {n:?}\n  got  {m:?}")),
            _ => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            problems.push(format!("unexpected {p}"));
        }
    }
    assert!(
        problems.is_empty(),
        "trees differ:\n{}",
        problems.join("\n")
    );
}

/// Runs a command, fails the test unless it succeeds, returns stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `sh -c script`.
pub(crate) fn sh(script: &str) -> String {
    run(Command::new("sh").arg("-c").arg(script))
}

/// Checks digest and diff_id against `sha256sum` of the blob and of `gunzip -c` of it.
pub(crate) fn check_digests_with_coreutils(blob: &Path, info: &LayerInfo) {
    let q = blob.display();
    let digest = sh(&format!("sha256sum '{q}'"));
    assert_eq!(digest.split_whitespace().next().unwrap(), info.digest.hex());
    let diff_id = sh(&format!("gunzip -c '{q}' | sha256sum"));
    assert_eq!(
        diff_id.split_whitespace().next().unwrap(),
        info.diff_id.hex()
    );
    assert_eq!(fs::metadata(blob).unwrap().len(), info.size);
    let raw = sh(&format!("gunzip -c '{q}' | wc -c"));
    assert_eq!(raw.trim().parse::<u64>().unwrap(), info.uncompressed_size);
}

/// One entry of a layer as the `tar` crate reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TarEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub dev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub size: u64,
}

/// Reads a gzip (or plain) layer with the `tar` crate.
pub(crate) fn read_layer(blob: &Path) -> Vec<TarEntry> {
    let bytes = fs::read(blob).unwrap();
    let raw: Box<dyn Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(&bytes[..]))
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(&bytes[..]).unwrap())
    } else {
        Box::new(&bytes[..])
    };
    let mut ar = tar::Archive::new(raw);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => '-',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            other => panic!("unexpected entry type {other:?}"),
        };
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                if let Some(name) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_owned(), x.value_bytes().to_vec());
                }
            }
        }
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let dev = matches!(kind, 'c' | 'b').then(|| {
            (
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            )
        });
        out.push(TarEntry {
            path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
            kind,
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            link,
            dev,
            xattrs,
            size: e.size(),
        });
        std::io::copy(&mut e, &mut std::io::sink()).unwrap();
    }
    out
}

/// Unpacks the image made of `layers` (gzip blobs, bottom first) with
/// `umoci raw unpack` into `dest`.
pub(crate) fn umoci_unpack(work: &Path, layers: &[(PathBuf, LayerInfo)], dest: &Path) {
    let mut config = ImageConfig::for_platform(&Platform::parse("linux/amd64").unwrap());
    for (_, info) in layers {
        config.rootfs.diff_ids.push(info.diff_id.clone());
    }
    let config = config.canonical().unwrap();
    let descriptors: Vec<Descriptor> = layers
        .iter()
        .map(|(_, i)| Descriptor::new(i.media_type, i.digest.clone(), i.size))
        .collect();
    let manifest = ImageManifest::oci(
        config.descriptor(media_type::OCI_CONFIG),
        descriptors.clone(),
    );
    let bytes = manifest.to_canonical_json().unwrap();
    let layout = work.join("image");
    let mut w = OciLayoutWriter::create(&layout).unwrap();
    w.add_blob(
        &config.bytes[..],
        Some(&config.descriptor(media_type::OCI_CONFIG)),
    )
    .unwrap();
    for ((path, _), d) in layers.iter().zip(&descriptors) {
        w.add_blob(fs::File::open(path).unwrap(), Some(d)).unwrap();
    }
    w.add_manifest(&bytes, media_type::OCI_MANIFEST, Some("t"))
        .unwrap();
    let layout = w.finish().unwrap();
    run(Command::new("umoci")
        .arg("raw")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:t", layout.display()))
        .arg(dest));
    fs::remove_dir_all(&layout).unwrap();
}
