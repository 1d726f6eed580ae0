//! ADD of a local archive: kiln-build's copy code opens it with `Decompressor::any_format`
//! (plain, gzip, bzip2, xz or zstd, by magic bytes) and, when it is a tar, extracts it with
//! `apply_tar` and the default (root) options: owners kept, device nodes made. The same path
//! here, over archives of the attacker's entries in each format and over raw bytes:
//! - the sniffer must name the format each archive was written in, and decompress it to
//!   exactly the tar that went in;
//! - nothing outside the extraction directory may change.
#![no_main]

use arbitrary::Arbitrary;
use kiln_fs::apply::{apply_tar, ApplyOptions};
use kiln_fs::decompress::{Decompressor, Format};
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};

mod common;
use common::{layer, Entry, Sandbox};

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<Entry>,
    format: u8,
    raw: Vec<u8>,
}

fn compress(tar: &[u8], format: Format) -> Vec<u8> {
    match format {
        Format::Plain => tar.to_vec(),
        Format::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(tar).expect("gzip");
            w.finish().expect("gzip")
        }
        Format::Bzip2 => {
            let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            w.write_all(tar).expect("bzip2");
            w.finish().expect("bzip2")
        }
        Format::Xz => {
            let mut w = liblzma::write::XzEncoder::new(Vec::new(), 0);
            w.write_all(tar).expect("xz");
            w.finish().expect("xz")
        }
        Format::Zstd => zstd::encode_all(tar, 1).expect("zstd"),
    }
}

/// What copy.rs's extract does with an archive file's bytes.
fn extract(bytes: &[u8], sandbox: &Sandbox) {
    if let Ok(reader) = Decompressor::any_format(bytes) {
        let _ = apply_tar(reader, &sandbox.root, &ApplyOptions::default());
    }
    sandbox.check();
}

fuzz_target!(|input: Input| {
    let formats = [
        Format::Plain,
        Format::Gzip,
        Format::Bzip2,
        Format::Xz,
        Format::Zstd,
    ];
    let format = formats[input.format as usize % formats.len()];
    let sandbox = Sandbox::new();
    let tar = layer(&input.entries, &sandbox.outside);
    let archive = compress(&tar, format);

    let mut reader = Decompressor::any_format(&archive[..]).expect("open");
    assert_eq!(reader.format(), format, "sniffed as another format");
    let mut back = Vec::new();
    reader.read_to_end(&mut back).expect("decompress");
    assert!(back == tar, "{format:?} did not give back the tar");

    extract(&archive, &sandbox);
    extract(&input.raw, &Sandbox::new());
});
