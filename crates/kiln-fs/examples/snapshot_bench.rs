//! Times scan + diff of a tree of N files where one file changed, the
//! snapshot after a RUN step that changed one file.
//!
//! `cargo run --release --example snapshot_bench -- 100000 500000`

#![allow(clippy::print_stdout)]

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_fs::snapshot::{diff, ScanOptions, StatIndex};

/// 100 files per directory, 100 directories per parent (like `/usr/lib`).
fn make_tree(root: &Path, files: usize) {
    for d in 0..files.div_ceil(100) {
        let dir = root.join(format!("p{:03}/d{:03}", d / 100, d % 100));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100.min(files - d * 100) {
            fs::write(dir.join(format!("file-{f:03}.so")), b"x").unwrap();
        }
    }
}

fn scan(root: &Path, threads: usize, settle: bool) -> (StatIndex, Duration) {
    let t = Instant::now();
    let opts = ScanOptions {
        threads,
        settle,
        ..Default::default()
    };
    let idx = StatIndex::scan_with(root, &opts).unwrap();
    (idx, t.elapsed())
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let default_threads = ScanOptions::default().threads;
    for n in if sizes.is_empty() {
        vec![100_000]
    } else {
        sizes
    } {
        let tmp = tempfile::tempdir().unwrap();
        let t = Instant::now();
        make_tree(tmp.path(), n);
        println!("{n} files: tree made in {:.1?}", t.elapsed());
        // The index the previous step left (warm dentry and inode caches).
        let (mut before, _) = scan(tmp.path(), default_threads, true);
        for threads in [1, default_threads] {
            let mut best = (Duration::MAX, Duration::MAX, Duration::MAX);
            let mut settled = Duration::MAX;
            for round in 0..5 {
                // The RUN step: one file changes.
                let victim = tmp.path().join(format!("p000/d0{round:02}/file-050.so"));
                fs::write(&victim, b"y").unwrap();
                let (after, scan_t) = scan(tmp.path(), threads, false);
                let t = Instant::now();
                let changes = diff(&before, &after);
                let diff_t = t.elapsed();
                // The file, and its directory only if its mtime moved.
                assert!(!changes.is_empty() && changes.len() <= 2, "{changes:?}");
                best = (
                    best.0.min(scan_t),
                    best.1.min(diff_t),
                    best.2.min(scan_t + diff_t),
                );
                drop(after);
                // What the settle wait adds when the change is that fresh.
                fs::write(&victim, b"z").unwrap();
                let (again, with_settle) = scan(tmp.path(), threads, true);
                settled = settled.min(with_settle);
                before = again;
            }
            println!(
                "  {} entries, {threads} thread(s): scan {:.0?} + diff {:.1?} = {:.0?} \
                 (best of 5; scan with settle {:.0?})",
                before.len(),
                best.0,
                best.1,
                best.2,
                settled
            );
        }
    }
}
