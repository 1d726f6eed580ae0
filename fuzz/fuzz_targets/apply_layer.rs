//! Two layers of arbitrary entries applied over a temp root: whatever the entries (`..`,
//! absolute paths, symlinks and symlink chains, hardlinks to earlier entries, whiteouts and
//! opaque markers, long PAX names), nothing may be written outside the root. A directory
//! beside the root holds a sentinel; every entry kind may aim at it (`../outside`, its
//! absolute path, a symlink to it), and after both layers it must be exactly as it was. Raw
//! bytes are tried too (a corrupt or compressed-looking stream must only fail).
#![no_main]

use arbitrary::Arbitrary;
use kiln_fs::apply::{apply_layer, ApplyOptions, Whiteouts};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

#[derive(Arbitrary, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(u8),
    Hardlink(u8),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    path: u8,
    extra: u8,
    kind: Kind,
    mode: u16,
}

#[derive(Arbitrary, Debug)]
struct Input {
    layers: [Vec<Entry>; 2],
    overlay_whiteouts: bool,
    raw: Vec<u8>,
}

/// Path pieces an attacker would use; `@OUT@` is the outside directory's absolute path.
const PIECES: [&str; 16] = [
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

fn piece(n: u8, outside: &Path) -> String {
    PIECES[n as usize % PIECES.len()].replace("@OUT@", &outside.display().to_string())
}

fn layer(entries: &[Entry], outside: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries.iter().take(32) {
        let mut path = piece(entry.path, outside);
        if entry.extra % 5 == 0 {
            // A name longer than ustar's 100 bytes: a PAX or GNU long-name record.
            path = format!("{}/{}", "l".repeat(120), path);
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(u32::from(entry.mode) & 0o7777);
        let appended = match &entry.kind {
            Kind::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len().min(4096) as u64);
                builder.append_data(&mut header, &path, &data[..data.len().min(4096)])
            }
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &path, std::io::empty())
            }
            Kind::Symlink(to) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &path, piece(*to, outside))
            }
            Kind::Hardlink(to) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder.append_link(&mut header, &path, piece(*to, outside))
            }
        };
        // The tar crate refuses some names itself (`..` in a link it writes as-is): skip them.
        let _ = appended;
    }
    builder.into_inner().unwrap_or_default()
}

/// Every path under `dir` with its content (directories as empty), sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
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

fuzz_target!(|input: Input| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join("sentinel"), b"untouched").expect("sentinel");
    let before = snapshot(&outside);
    let mut options = ApplyOptions::rootless();
    if input.overlay_whiteouts {
        options.whiteouts = Whiteouts::Overlay;
    }
    for entries in &input.layers {
        let bytes = layer(entries, &outside);
        let _ = apply_layer(&bytes[..], &root, &options);
    }
    let _ = apply_layer(&input.raw[..], &root, &options);
    assert_eq!(snapshot(&outside), before, "a layer wrote outside the root");
    let top: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(top.len(), 2, "a layer made {top:?} beside the root");
});
