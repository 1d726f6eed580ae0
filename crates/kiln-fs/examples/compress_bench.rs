//! Throughput of each layer encoding on a 256 MiB file (read from disk,
//! compressed, both digests computed, output discarded).
//!
//! `cargo run --release --example compress_bench -- [MiB | FILE]`: a
//! synthetic input of that many MiB (256 by default), or FILE as it is.

#![allow(clippy::print_stdout)]

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::time::Instant;

use kiln_fs::compress::{Encoding, LayerEncoder};

/// Roughly what a root file system compresses like: text (words, numbers,
/// paths) with stretches of incompressible bytes, about 3:1 with gzip -6.
fn make_input(path: &std::path::Path, mib: usize) {
    let words: Vec<String> = (0..512)
        .map(|i| {
            format!(
                "w{}{}",
                ["lib", "usr", "share", "conf", "x86_64", "locale"][i % 6],
                i * 7919 % 1000
            )
        })
        .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut written = 0;
    let mut line = Vec::with_capacity(4096);
    while written < mib << 20 {
        line.clear();
        if next() % 16 == 0 {
            for _ in 0..32 {
                line.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            for _ in 0..64 {
                let r = next();
                line.extend_from_slice(words[(r % 512) as usize].as_bytes());
                line.push(if r % 5 == 0 { b'\n' } else { b' ' });
                if r % 3 == 0 {
                    line.extend_from_slice(format!("{}", r % 100_000).as_bytes());
                }
            }
        }
        out.write_all(&line).unwrap();
        written += line.len();
    }
    out.flush().unwrap();
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "256".into());
    let tmp = tempfile::tempdir().unwrap();
    let input = match arg.parse::<usize>() {
        Ok(mib) => {
            let input = tmp.path().join("input");
            make_input(&input, mib);
            input
        }
        Err(_) => std::path::PathBuf::from(arg),
    };
    let size = std::fs::metadata(&input).unwrap().len();
    let mut buf = vec![0u8; 256 * 1024];
    // Warm the page cache so the figures are the encoder's.
    io::copy(&mut File::open(&input).unwrap(), &mut io::sink()).unwrap();
    for (name, encoding) in [
        ("none (sha256 only)", Encoding::None),
        (
            "gzip -6, flate2/zlib-rs, 1 thread",
            Encoding::Gzip {
                level: 6,
                threads: 1,
            },
        ),
        (
            "gzip -6, gzp, 2 threads",
            Encoding::Gzip {
                level: 6,
                threads: 2,
            },
        ),
        (
            "gzip -1, flate2/zlib-rs, 1 thread",
            Encoding::Gzip {
                level: 1,
                threads: 1,
            },
        ),
        (
            "gzip -1, gzp, 2 threads",
            Encoding::Gzip {
                level: 1,
                threads: 2,
            },
        ),
        (
            "zstd -3, 0 workers",
            Encoding::Zstd {
                level: 3,
                workers: 0,
            },
        ),
        (
            "zstd -3, 2 workers",
            Encoding::Zstd {
                level: 3,
                workers: 2,
            },
        ),
    ] {
        let t = Instant::now();
        let mut enc = LayerEncoder::new(io::sink(), &encoding).unwrap();
        let mut f = File::open(&input).unwrap();
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            enc.write_all(&buf[..n]).unwrap();
        }
        let (_, c) = enc.finish().unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name:36} {:6.1} MiB/s  ratio {:.2}",
            size as f64 / secs / (1 << 20) as f64,
            size as f64 / c.digest.size as f64
        );
    }
}
