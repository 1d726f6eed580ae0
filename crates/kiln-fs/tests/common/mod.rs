//! Shared helpers: building layer tars (including hostile ones), a sandbox
//! with a sentinel outside the target, and tree snapshots for comparisons.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_oci::Digest;
use tar::{EntryType, Header};

/// The mtime every helper entry gets unless told otherwise.
pub(crate) const MTIME: u64 = 1_600_000_000;

/// Builds a layer tar entry by entry.
pub(crate) struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new()
    }
}

fn header(ty: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

impl Layer {
    pub(crate) fn new() -> Self {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// A regular file, mode 0644, owned by root.
    pub(crate) fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_with(path, data, 0o644, 0, 0, MTIME)
    }

    pub(crate) fn file_with(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        let mut h = header(EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.tar.append_data(&mut h, path, data).unwrap();
        self
    }

    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.dir_with(path, mode, 0, 0, MTIME)
    }

    pub(crate) fn dir_with(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        let mut h = header(EntryType::Directory, mode, 0);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.tar.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = header(EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub(crate) fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = header(EntryType::Link, 0o644, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub(crate) fn device(
        &mut self,
        path: &str,
        ty: EntryType,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Self {
        let mut h = header(ty, mode, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.tar.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    /// PAX records for the next entry.
    pub(crate) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.tar
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    /// An entry with a name (and link name) written byte for byte into the
    /// header, bypassing the `tar` crate's checks: for hostile archives.
    pub(crate) fn raw(
        &mut self,
        name: &[u8],
        ty: EntryType,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        assert!(name.len() <= 100 && link.len() <= 100);
        let mut h = header(ty, 0o644, data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.tar.append(&h, data).unwrap();
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let tar = std::mem::replace(&mut self.tar, tar::Builder::new(Vec::new()));
        tar.into_inner().unwrap()
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A temp dir holding `target/` (where layers go) and `outside/sentinel`,
/// which no layer may change.
pub(crate) struct Sandbox {
    pub dir: tempfile::TempDir,
    pub target: PathBuf,
    pub outside: PathBuf,
    pub sentinel: PathBuf,
    outside_owner: (u32, u32),
}

pub(crate) const SENTINEL: &[u8] = b"do not touch\n";

impl Sandbox {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let outside = dir.path().join("outside");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&outside).unwrap();
        let sentinel = outside.join("sentinel");
        fs::write(&sentinel, SENTINEL).unwrap();
        fs::set_permissions(&sentinel, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
        let md = fs::metadata(&outside).unwrap();
        Sandbox {
            outside_owner: (md.uid(), md.gid()),
            dir,
            target,
            outside,
            sentinel,
        }
    }

    /// The outside dir as an absolute path string, for hostile symlinks.
    pub(crate) fn outside_str(&self) -> String {
        self.outside.to_str().unwrap().to_owned()
    }

    /// Fails unless the outside dir still holds exactly the sentinel, unchanged
    /// (content, mode, owner, link count) and nothing else.
    pub(crate) fn assert_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("sentinel")],
            "outside dir changed"
        );
        let md = fs::symlink_metadata(&self.sentinel).unwrap();
        assert!(md.file_type().is_file(), "sentinel replaced");
        assert_eq!(
            fs::read(&self.sentinel).unwrap(),
            SENTINEL,
            "sentinel rewritten"
        );
        assert_eq!(md.mode() & 0o7777, 0o644, "sentinel chmodded");
        assert_eq!(md.nlink(), 1, "sentinel hard-linked from inside the target");
        let outside_md = fs::symlink_metadata(&self.outside).unwrap();
        assert_eq!(outside_md.mode() & 0o7777, 0o755, "outside dir chmodded");
        assert_eq!(
            (outside_md.uid(), outside_md.gid()),
            self.outside_owner,
            "outside dir chowned"
        );
    }
}

/// One file system object in a tree snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// sha256 of the content for files.
    pub content: Option<String>,
    pub size: u64,
    pub link: Option<PathBuf>,
    pub rdev: Option<(u32, u32)>,
    /// The other paths sharing this inode (hard links), sorted.
    pub hardlinks: Vec<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Which fields [`snapshot`] records.
#[derive(Clone, Copy)]
pub(crate) struct Fields {
    pub mtime_dirs: bool,
    pub mtime_symlinks: bool,
    pub xattrs: bool,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            mtime_dirs: true,
            mtime_symlinks: true,
            xattrs: true,
        }
    }
}

/// Every path under `root` (not `root` itself) with its metadata.
pub(crate) fn snapshot(root: &Path, fields: Fields) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_owned();
        let md = fs::symlink_metadata(entry.path()).unwrap();
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let content = ft
            .is_file()
            .then(|| Digest::of(&fs::read(entry.path()).unwrap()).to_string());
        let link = ft
            .is_symlink()
            .then(|| fs::read_link(entry.path()).unwrap());
        let rdev = (ft.is_char_device() || ft.is_block_device())
            .then(|| (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev())));
        let mtime = match kind {
            "dir" if !fields.mtime_dirs => 0,
            "symlink" if !fields.mtime_symlinks => 0,
            _ => md.mtime(),
        };
        let mut xattrs = BTreeMap::new();
        if fields.xattrs {
            if let Ok(names) = xattr::list(entry.path()) {
                for name in names {
                    let value = xattr::get(entry.path(), &name).unwrap().unwrap_or_default();
                    xattrs.insert(name.to_string_lossy().into_owned(), value);
                }
            }
        }
        if !ft.is_dir() && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime,
                content,
                size: if ft.is_file() { md.size() } else { 0 },
                link,
                rdev,
                hardlinks: Vec::new(),
                xattrs,
            },
        );
    }
    for group in inodes.values() {
        for p in group {
            let mut others: Vec<PathBuf> = group.iter().filter(|o| *o != p).cloned().collect();
            others.sort();
            out.get_mut(p).unwrap().hardlinks = others;
        }
    }
    out
}

/// Asserts two snapshots are equal, listing every difference.
pub(crate) fn assert_same_tree(
    ours: &BTreeMap<PathBuf, Node>,
    theirs: &BTreeMap<PathBuf, Node>,
    who: &str,
) {
    let mut diffs = Vec::new();
    for (p, n) in ours {
        match theirs.get(p) {
            None => diffs.push(format!("only in kiln: {}", p.display())),
            Some(t) if t != n => {
                diffs.push(format!("{}:\n  kiln: {n:?}\n  {who}: {t:?}", p.display()))
            }
            _ => {}
        }
    }
    for p in theirs.keys() {
        if !ours.contains_key(p) {
            diffs.push(format!("only in {who}: {}", p.display()));
        }
    }
    assert!(diffs.is_empty(), "trees differ:\n{}", diffs.join("\n"));
}

/// True when `dir`'s file system accepts `user.*` xattrs.
pub(crate) fn user_xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").unwrap();
    let ok = xattr::set(&probe, "user.kiln.probe", b"1").is_ok();
    fs::remove_file(&probe).unwrap();
    ok
}
