//! Many builds at once on one machine: `KILN_LOAD_BUILDS` (default 8; scripts/faults.sh also
//! runs 32) builds each on a kiln dir of its own, then as many on one shared kiln dir. Every
//! build must succeed with its own result (no interference: build n's image holds n), and
//! each kiln process's peak memory and open file descriptors are measured (sampled from
//! /proc while it runs) and bounded, so a leak that grows with the work shows.

#![allow(clippy::print_stderr)] // the figures are the report scripts/faults.sh shows

mod common;

use common::World;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DOCKERFILE: &str = "ARG BASE
FROM $BASE
ARG N
COPY . /ctx/
RUN for i in $(seq 1 100); do echo $N-$i > /f$i; done && echo $N > /id
";

/// Peak resident memory (KiB) and open file descriptors seen for a process.
#[derive(Default, Clone, Copy)]
struct Peak {
    rss_kib: u64,
    fds: usize,
}

fn sample(pid: u32, peak: &mut Peak) {
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("VmHWM:") {
                let kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                peak.rss_kib = peak.rss_kib.max(kib);
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        peak.fds = peak.fds.max(fds.count());
    }
}

/// The content of `/id` in the image of the OCI layout: its last layer holds it.
fn image_id(layout: &Path) -> String {
    let manifest = common::read_manifest(layout);
    let layers = manifest["layers"].as_array().unwrap();
    let digest = layers.last().unwrap()["digest"].as_str().unwrap();
    let blob = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(&blob)
        .arg("id")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts `n` builds at once (on `kiln_dirs[i]`), samples them until all are done and checks
/// every result. Returns the peaks and the wall time.
fn run_at_once(
    world: &World,
    context: &Path,
    kiln_dirs: &[PathBuf],
    out: &Path,
) -> (Vec<Peak>, Duration) {
    let started = Instant::now();
    let mut children: Vec<(usize, Child, Peak)> = kiln_dirs
        .iter()
        .enumerate()
        .map(|(n, kiln_dir)| {
            let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["build", "--no-push", "--context"])
                .arg(context)
                .arg("--oci-layout-path")
                .arg(out.join(format!("layout{n}")))
                .args(["--build-arg", &format!("BASE={}", world.base)])
                .args(["--build-arg", &format!("N={n}")])
                .args(["--insecure-registry", &world.registry.host()])
                .arg("--kiln-dir")
                .arg(kiln_dir)
                .env("DOCKER_CONFIG", world.docker_config.path())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(out.join(format!("log{n}"))).unwrap())
                .spawn()
                .unwrap();
            (n, child, Peak::default())
        })
        .collect();
    let mut peaks = Vec::new();
    while !children.is_empty() {
        let mut still = Vec::new();
        for (n, mut child, mut peak) in children {
            sample(child.id(), &mut peak);
            match child.try_wait().unwrap() {
                Some(status) => {
                    let log = std::fs::read_to_string(out.join(format!("log{n}"))).unwrap();
                    assert!(status.success(), "build {n} failed:\n{log}");
                    assert_eq!(image_id(&out.join(format!("layout{n}"))), n.to_string());
                    peaks.push(peak);
                }
                None => still.push((n, child, peak)),
            }
        }
        children = still;
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "builds still running after 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    (peaks, started.elapsed())
}

fn report(what: &str, peaks: &[Peak], took: Duration) {
    let mut rss: Vec<u64> = peaks.iter().map(|p| p.rss_kib).collect();
    rss.sort_unstable();
    let fds = peaks.iter().map(|p| p.fds).max().unwrap_or(0);
    eprintln!(
        "load: {what}: {} builds in {:.1} s; peak RSS per kiln median {} MiB, max {} MiB; \
         most open fds in one kiln {fds}",
        peaks.len(),
        took.as_secs_f64(),
        rss[rss.len() / 2] / 1024,
        rss[rss.len() - 1] / 1024,
    );
    // Guards against a leak that grows with the work, not timing targets.
    assert!(
        rss[rss.len() - 1] < 1 << 20,
        "{what}: a kiln used over 1 GiB"
    );
    assert!(fds < 1024, "{what}: a kiln had {fds} files open");
}

#[test]
fn many_builds_at_once_all_correct_with_bounded_memory_and_fds() {
    let n: usize = std::env::var("KILN_LOAD_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let world = World::new();
    let files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("src/file{i}"), format!("{i}\n").repeat(100)))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let context = common::context(DOCKERFILE, &files);
    let root = tempfile::tempdir().unwrap();

    let distinct: Vec<PathBuf> = (0..n)
        .map(|i| root.path().join(format!("kiln{i}")))
        .collect();
    let out = root.path().join("distinct");
    std::fs::create_dir_all(&out).unwrap();
    let (peaks, took) = run_at_once(&world, context.path(), &distinct, &out);
    report(&format!("{n} kiln dirs"), &peaks, took);

    let shared: Vec<PathBuf> = vec![root.path().join("shared"); n];
    let out = root.path().join("shared-out");
    std::fs::create_dir_all(&out).unwrap();
    let (peaks, took) = run_at_once(&world, context.path(), &shared, &out);
    report("one shared kiln dir", &peaks, took);
}
