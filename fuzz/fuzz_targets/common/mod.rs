//! What the archive targets share: tar entries an attacker would write, aimed at a directory
//! beside the root, and a snapshot of a directory to tell whether anything there changed.
#![allow(dead_code)]

use arbitrary::Arbitrary;
use std::path::{Path, PathBuf};

#[derive(Arbitrary, Debug)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(u8),
    Hardlink(u8),
    Fifo,
    CharDevice(u16),
}

#[derive(Arbitrary, Debug)]
pub struct Entry {
    pub path: u8,
    pub extra: u8,
    pub kind: Kind,
    pub mode: u16,
}

/// Path pieces an attacker would use; `@OUT@` is the outside directory's absolute path.
pub const PIECES: [&str; 16] = [
    "a",
    "a/b",
    "../outside",
    "../outside/x",
    "@OUT@",
    "@OUT@/y",
    "/abs",
    "link",
    "link/through",
    "a/../../outside/z",
    ".wh.a",
    "a/.wh..wh..opq",
    "./c/./d",
    "chain1",
    "chain2/x",
    "",
];

pub fn piece(n: u8, outside: &Path) -> String {
    PIECES[n as usize % PIECES.len()].replace("@OUT@", &outside.display().to_string())
}

/// The entry's name as written: a piece, sometimes under a name longer than ustar's 100 bytes
/// (a PAX or GNU long-name record).
pub fn entry_path(entry: &Entry, outside: &Path) -> String {
    let path = piece(entry.path, outside);
    if entry.extra % 5 == 0 {
        format!("{}/{}", "l".repeat(120), path)
    } else {
        path
    }
}

/// Appends a GNU long-name (`L`) or long-link (`K`) record for `value`.
fn append_long(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    value: &[u8],
) -> std::io::Result<()> {
    let mut long = tar::Header::new_gnu();
    long.as_mut_bytes()[..13].copy_from_slice(b"././@LongLink");
    long.set_entry_type(kind);
    long.set_mode(0o644);
    let mut data = value.to_vec();
    data.push(0);
    long.set_size(data.len() as u64);
    long.set_cksum();
    builder.append(&long, &data[..])
}

/// Appends `header` named `path` (and linking to `link`) with the names written as they are:
/// the tar crate's own setters refuse `..` and absolute names, which are what an attacker
/// writes.
fn append_raw(
    builder: &mut tar::Builder<Vec<u8>>,
    header: &mut tar::Header,
    path: &str,
    link: Option<&str>,
    data: &[u8],
) -> std::io::Result<()> {
    let name = path.as_bytes();
    if name.len() > 100 {
        append_long(builder, tar::EntryType::GNULongName, name)?;
    }
    let n = name.len().min(100);
    header.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    if let Some(link) = link {
        let link = link.as_bytes();
        if link.len() > 100 {
            append_long(builder, tar::EntryType::GNULongLink, link)?;
        }
        let n = link.len().min(100);
        header.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
    }
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(header, data)
}

/// A tar of (at most 32 of) `entries`, names and link targets written byte for byte.
pub fn layer(entries: &[Entry], outside: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries.iter().take(32) {
        let path = entry_path(entry, outside);
        let mut header = tar::Header::new_gnu();
        header.set_mode(u32::from(entry.mode) & 0o7777);
        let (kind, link, data): (_, Option<String>, &[u8]) = match &entry.kind {
            Kind::File(data) => (tar::EntryType::Regular, None, &data[..data.len().min(4096)]),
            Kind::Dir => (tar::EntryType::Directory, None, &[]),
            Kind::Symlink(to) => (tar::EntryType::Symlink, Some(piece(*to, outside)), &[]),
            Kind::Hardlink(to) => (tar::EntryType::Link, Some(piece(*to, outside)), &[]),
            Kind::Fifo => (tar::EntryType::Fifo, None, &[]),
            Kind::CharDevice(dev) => {
                let _ = header.set_device_major(u32::from(dev >> 8));
                let _ = header.set_device_minor(u32::from(dev & 0xff));
                (tar::EntryType::Char, None, &[])
            }
        };
        header.set_entry_type(kind);
        append_raw(&mut builder, &mut header, &path, link.as_deref(), data)
            .expect("writing to a Vec");
    }
    builder.into_inner().unwrap_or_default()
}

/// Every path under `dir` with its content (directories as empty), sorted.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let content = if meta.is_dir() {
                stack.push(path.clone());
                Vec::new()
            } else if meta.is_file() {
                std::fs::read(&path).unwrap_or_default()
            } else {
                b"<other>".to_vec()
            };
            out.push((path.display().to_string(), content));
        }
    }
    out.sort();
    out
}

/// A temp dir holding `root` (empty) and `outside` (a sentinel file): unpack into `root`, then
/// [`Sandbox::check`].
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub outside: PathBuf,
    before: Vec<(String, Vec<u8>)>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&root).expect("root");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("sentinel"), b"untouched").expect("sentinel");
        let before = snapshot(&outside);
        Sandbox {
            tmp,
            root,
            outside,
            before,
        }
    }

    /// Panics if anything outside the root changed: the outside directory, or a new entry
    /// beside the root; and the root must still be a directory.
    pub fn check(&self) {
        assert_eq!(
            snapshot(&self.outside),
            self.before,
            "an archive wrote outside the root"
        );
        let top: Vec<_> = std::fs::read_dir(self.tmp.path())
            .expect("read tmp")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(top.len(), 2, "an archive made {top:?} beside the root");
        let root = std::fs::symlink_metadata(&self.root).expect("lstat root");
        assert!(root.is_dir(), "the root is no longer a directory");
    }
}
