//! A build context given as a tarball (`--context tar://FILE`, `tar://stdin`, an http(s) URL of
//! one): kiln-build's `context::prepare` unpacks it with `apply_layer` and rootless options
//! into a directory of its own. Whatever the entries (the attacker's pieces of `apply_layer`'s
//! target) and whether gzipped or raw bytes, nothing outside that directory may change. And a
//! tarball of plain files and directories must come out as written: each path holds what its
//! last entry put there.
#![no_main]

use arbitrary::Arbitrary;
use kiln_fs::apply::{apply_layer, ApplyOptions};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

mod common;
use common::{entry_path, layer, Entry, Kind, Sandbox};

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<Entry>,
    gzip: bool,
    raw: Vec<u8>,
}

/// The pieces (indexes into `common::PIECES`) that name a path inside the root plainly.
const PLAIN: [usize; 8] = [0, 1, 6, 7, 8, 12, 13, 14];

fn clean(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fuzz_target!(|input: Input| {
    let sandbox = Sandbox::new();
    // As context::prepare unpacks a tar:// context.
    let options = ApplyOptions::rootless();
    let mut bytes = layer(&input.entries, &sandbox.outside);
    if input.gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).expect("gzip");
        bytes = gz.finish().expect("gzip");
    }
    let result = apply_layer(&bytes[..], &sandbox.root, &options);
    sandbox.check();

    let entries: Vec<&Entry> = input.entries.iter().take(32).collect();
    let plain = entries.iter().all(|e| {
        matches!(e.kind, Kind::File(_) | Kind::Dir)
            && PLAIN.contains(&(e.path as usize % common::PIECES.len()))
    });
    if plain && result.is_ok() {
        let paths: Vec<String> = entries
            .iter()
            .map(|e| clean(&entry_path(e, &sandbox.outside)))
            .collect();
        for (i, (path, entry)) in paths.iter().zip(&entries).enumerate() {
            let later = &paths[i + 1..];
            // Not the last word on this path, or a later file replaced a directory above it.
            let replaced = later.iter().zip(&entries[i + 1..]).any(|(q, e)| {
                q == path
                    || (matches!(e.kind, Kind::File(_)) && path.starts_with(&format!("{q}/")))
            });
            if replaced {
                continue;
            }
            let on_disk = sandbox.root.join(path);
            match &entry.kind {
                Kind::File(data) => assert_eq!(
                    std::fs::read(&on_disk).ok().as_deref(),
                    Some(&data[..data.len().min(4096)]),
                    "{path} does not hold its entry's bytes"
                ),
                _ => assert!(on_disk.is_dir(), "{path} is not a directory"),
            }
        }
    }

    let sandbox = Sandbox::new();
    let _ = apply_layer(&input.raw[..], &sandbox.root, &options);
    sandbox.check();
});
