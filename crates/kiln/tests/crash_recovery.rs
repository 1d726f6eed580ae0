//! `kill -9` at random moments of a build, again and again on one kiln dir: after each, the
//! next build on that kiln dir must succeed and give an image byte-identical (`--reproducible`)
//! to the one a fresh kiln dir gives, so nothing half-written was ever taken for whole. Killed
//! builds' directories and the store's temporary files must be gone afterwards.
//!
//! `KILN_CRASH_ROUNDS` sets the number of kills (default 12; scripts/faults.sh runs 50).

#![allow(clippy::print_stderr)] // the tally is the report scripts/faults.sh shows

mod common;

use common::{layout_digest, World};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Two stages, a COPY of the context, RUNs that write many files, a COPY --from.
const DOCKERFILE: &str = "ARG BASE
FROM $BASE AS build
COPY src/ /src/
RUN mkdir -p /out && for i in $(seq 1 300); do echo $i > /out/f$i; done && cat /src/* > /out/all
RUN head -c 3000000 /dev/zero | tr '\\0' x > /out/big
FROM $BASE
COPY --from=build /out /out
RUN ls /out | wc -l > /count && md5sum /out/big > /sum
";

/// Files and directories in the store with a temporary's name.
fn store_temporaries(store: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(".tmp") || name.starts_with(".ingest-") {
                found.push(path.display().to_string());
            } else if entry.file_type().is_ok_and(|t| t.is_dir())
                && !path.starts_with(store.join("layers"))
                && !path.starts_with(store.join("mounts"))
            {
                // Unpacked layers and cache mounts are trees of image files: only their names
                // (below) can be a temporary's.
                stack.push(path);
            }
        }
    }
    // layers/<format>/.tmp-*: one level below layers/.
    if let Ok(formats) = std::fs::read_dir(store.join("layers")) {
        for format in formats.flatten() {
            for tree in std::fs::read_dir(format.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if tree.file_name().to_string_lossy().starts_with(".tmp") {
                    found.push(tree.path().display().to_string());
                }
            }
        }
    }
    found
}

fn kiln(world: &World, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("DOCKER_CONFIG", world.docker_config.path())
        .output()
        .unwrap()
}

#[test]
fn builds_killed_at_random_moments_never_spoil_the_kiln_dir() {
    let rounds: usize = std::env::var("KILN_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let world = World::new();
    let files: Vec<(String, String)> = (0..40)
        .map(|i| (format!("src/part{i:02}"), format!("part {i}\n").repeat(200)))
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let context = common::context(DOCKERFILE, &files);

    // The reference: a fresh kiln dir (World's own).
    let reference = world.build_in(context.path(), &["--reproducible"]);
    reference.ok();
    let expected = layout_digest(&reference.layout);

    let kiln_dir = tempfile::tempdir().unwrap();
    let kiln_dir_s = kiln_dir.path().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound.max(1)
    };
    // The kills are spread over the time a --no-cache build takes on a warm kiln dir.
    let build_args = |layout: &Path| -> Vec<String> {
        vec![
            "build".to_string(),
            "--context".into(),
            context.path().to_str().unwrap().into(),
            "--no-push".into(),
            "--reproducible".into(),
            "--no-cache".into(),
            "--oci-layout-path".into(),
            layout.to_str().unwrap().into(),
            "--build-arg".into(),
            format!("BASE={}", world.base),
            "--insecure-registry".into(),
            world.registry.host(),
            "--kiln-dir".into(),
            kiln_dir_s.into(),
        ]
    };
    let warm = out.path().join("warm");
    let args = build_args(&warm);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // (Twice: the first pulls the base image.)
    assert!(kiln(&world, &args).status.success());
    let started = Instant::now();
    let warmed = kiln(&world, &args);
    let window = (started.elapsed().as_millis() as u64 * 9 / 10).max(100);
    assert!(
        warmed.status.success(),
        "{}",
        String::from_utf8_lossy(&warmed.stderr)
    );
    assert_eq!(
        layout_digest(&warm),
        expected,
        "--no-cache gives another image"
    );
    let (mut finished_before_kill, mut identical) = (0, 0);
    for round in 0..rounds {
        if round % 4 == 0 {
            // Now and then from nothing: pulls and unpacking get killed too.
            let pruned = kiln(&world, &["prune", "--all", "--kiln-dir", kiln_dir_s]);
            assert!(
                pruned.status.success(),
                "{}",
                String::from_utf8_lossy(&pruned.stderr)
            );
        }
        let layout = out.path().join(format!("killed{round}"));
        // Every step runs (and writes its layer and cache entry) again.
        let args = build_args(&layout);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&args)
            .env("DOCKER_CONFIG", world.docker_config.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at = next(window);
        std::thread::sleep(Duration::from_millis(at));
        if child.try_wait().unwrap().is_some() {
            finished_before_kill += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();

        // The next build on the same kiln dir: whole, and the same image.
        let again = out.path().join(format!("again{round}"));
        let rebuilt = kiln(
            &world,
            &[
                "build",
                "--context",
                context.path().to_str().unwrap(),
                "--no-push",
                "--reproducible",
                "--cleanup",
                "--oci-layout-path",
                again.to_str().unwrap(),
                "--build-arg",
                &format!("BASE={}", world.base),
                "--insecure-registry",
                &world.registry.host(),
                "--kiln-dir",
                kiln_dir_s,
            ],
        );
        assert!(
            rebuilt.status.success(),
            "round {round} (killed after {at} ms): the next build failed:\n{}",
            String::from_utf8_lossy(&rebuilt.stderr)
        );
        assert_eq!(
            layout_digest(&again),
            expected,
            "round {round} (killed after {at} ms): the next build's image differs"
        );
        identical += 1;
        std::fs::remove_dir_all(&layout).ok();
        std::fs::remove_dir_all(&again).ok();
    }
    // The last build ran alone with --cleanup: no build directory, no temporary file is left.
    let builds: Vec<_> = std::fs::read_dir(kiln_dir.path().join("builds"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(builds.is_empty(), "build directories left: {builds:?}");
    let temporaries = store_temporaries(&kiln_dir.path().join("store"));
    assert!(
        temporaries.is_empty(),
        "temporary files left: {temporaries:?}"
    );
    eprintln!(
        "crash recovery: {rounds} builds killed with SIGKILL at random moments within {window} ms \
         ({finished_before_kill} had finished first), {identical} next builds identical to a \
         clean build, 0 lost"
    );
}
