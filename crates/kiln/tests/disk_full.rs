//! A full disk. The kiln dir is a small tmpfs (mounted in a mount namespace of the test's
//! own), sized so that a build runs out of space while unpacking its base image, during a
//! RUN, or while writing a layer; and the registry's storage fills up while kiln pushes. Each
//! such build must fail with an error that says what kiln was doing and that the disk is full,
//! and must leave the kiln dir so that, once there is space again, the same build on it
//! succeeds with an image byte-identical to a clean build's.

#![allow(clippy::print_stderr)] // each case's error is shown for scripts/faults.sh

mod common;

use common::{layout_digest, World};
use std::path::Path;
use std::process::Command;

/// MiB of incompressible data in the big base image's second layer.
const BIG_MIB: usize = 12;

/// Builds `context` on a kiln dir that is a tmpfs of `mib` MiB and then, with `again`, once
/// more after growing it to 1 GiB (into `out/layout2`). Returns (first exit code, first
/// stderr, second exit code, second stderr); the first build's peak RSS is in `out/1.rss`.
fn build_on_small_disk(
    world: &World,
    context: &Path,
    mib: usize,
    out: &Path,
    again: bool,
) -> (i32, String, i32, String) {
    let kiln_dir = out.join("kiln");
    std::fs::create_dir_all(&kiln_dir).unwrap();
    let script = r#"
        set -u
        mount -t tmpfs -o size="$SIZE" tmpfs "$KILN_DIR" || exit 90
        build() {
            /usr/bin/time -f %M -o "$OUT/$1.rss" \
            "$KILN" build --context "$CONTEXT" --no-push --reproducible \
                --oci-layout-path "$OUT/layout$1" --build-arg "BASE=$BASE" \
                --insecure-registry "$REGISTRY" --kiln-dir "$KILN_DIR" \
                > "$OUT/$1.out" 2> "$OUT/$1.err"
            echo $? > "$OUT/$1.rc"
        }
        build 1
        [ "$AGAIN" = 1 ] || exit 0
        mount -o remount,size=1g "$KILN_DIR" || exit 91
        build 2
    "#;
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .env("SIZE", format!("{mib}m"))
        .env("AGAIN", if again { "1" } else { "0" })
        .env("KILN_DIR", &kiln_dir)
        .env("KILN", env!("CARGO_BIN_EXE_kiln"))
        .env("CONTEXT", context)
        .env("OUT", out)
        .env("BASE", &world.base)
        .env("REGISTRY", world.registry.host())
        .env("DOCKER_CONFIG", world.docker_config.path())
        .status()
        .unwrap();
    assert!(status.success(), "the tmpfs script failed: {status}");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let code = |name: &str| read(name).trim().parse::<i32>().unwrap_or(-1);
    (code("1.rc"), read("1.err"), code("2.rc"), read("2.err"))
}

#[test]
fn a_full_kiln_dir_fails_clearly_and_spoils_nothing() {
    let world = World::new();
    common::push_big_base(&world.registry, "big:latest", BIG_MIB);
    let big = format!("{}/big:latest", world.registry.host());
    // (name, base, Dockerfile after FROM, tmpfs MiB, what the error must say)
    let cases: [(&str, &str, &str, usize, &[&str]); 3] = [
        (
            "unpacking the base image",
            &big,
            "RUN cat /big.bin > /dev/null\n",
            BIG_MIB + 8,
            &["No space left on device"],
        ),
        (
            "a RUN",
            &world.base,
            "RUN head -c 40000000 /dev/zero > /fill\n",
            24,
            &[
                "RUN",
                "exited with status 1",
                "the file system of the kiln dir is full",
            ],
        ),
        (
            "writing a layer",
            &big,
            "RUN cp /big.bin /copy && echo x >> /copy\n",
            3 * BIG_MIB + 10,
            &["writing the layer", "No space left on device"],
        ),
    ];
    for (what, base, steps, mib, needles) in cases {
        let dockerfile = format!("ARG BASE\nFROM {base}\n{steps}");
        let context = common::context(&dockerfile, &[]);
        let out = tempfile::tempdir().unwrap();
        let (rc1, err1, rc2, err2) =
            build_on_small_disk(&world, context.path(), mib, out.path(), true);
        eprintln!(
            "{what}: exit {rc1}: {}",
            err1.lines().last().unwrap_or_default()
        );
        assert_ne!(rc1, 0, "{what}: the build on a full disk succeeded");
        assert!(!err1.contains("panicked"), "{what}: {err1}");
        for needle in needles {
            assert!(err1.contains(needle), "{what}: no {needle:?} in:\n{err1}");
        }
        assert_eq!(
            rc2, 0,
            "{what}: the build after space was freed failed:\n{err2}"
        );
        let reference = world.build_in(context.path(), &["--reproducible"]);
        reference.ok();
        assert_eq!(
            layout_digest(&out.path().join("layout2")),
            layout_digest(&reference.layout),
            "{what}: the build after space was freed differs from a clean one"
        );
    }
}

/// A decompression bomb: `ADD bomb.tar.gz` whose 256 MiB file of zeros compresses to about
/// 250 KiB (1000:1), into a 32 MiB kiln dir. kiln streams it to disk, so the build fails when the
/// disk is full, saying so, and its memory stays small.
#[test]
fn a_decompression_bomb_is_bounded_by_the_disk_not_memory() {
    let world = World::new();
    let context = common::context("ARG BASE\nFROM $BASE\nADD bomb.tar.gz /bomb/\n", &[]);
    let made = Command::new("sh")
        .arg("-c")
        .arg("truncate -s 256M zeros && tar -cf - zeros | gzip -9 > bomb.tar.gz && rm zeros")
        .current_dir(context.path())
        .status()
        .unwrap();
    assert!(made.success());
    let compressed = std::fs::metadata(context.path().join("bomb.tar.gz"))
        .unwrap()
        .len();
    assert!(compressed < 1 << 20, "the bomb is {compressed} bytes");
    let out = tempfile::tempdir().unwrap();
    let (rc, err, _, _) = build_on_small_disk(&world, context.path(), 32, out.path(), false);
    eprintln!(
        "decompression bomb: exit {rc}: {}",
        err.lines().last().unwrap_or_default()
    );
    assert_ne!(rc, 0, "the bomb fit in 32 MiB");
    for needle in ["Dockerfile:3:1", "No space left on device"] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    // time(1) writes "Command exited with non-zero status 1" first.
    let rss_kib: u64 = std::fs::read_to_string(out.path().join("1.rss"))
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("decompression bomb: peak RSS {} MiB", rss_kib / 1024);
    assert!(rss_kib < 256 * 1024, "kiln's peak RSS was {rss_kib} KiB");
}

/// Mounts a tmpfs of `mib` MiB on the registry's storage in a mount namespace of its own and
/// restarts the registry in it (the registry starts empty).
fn registry_on_small_disk(registry: &mut kiln_test::Registry, mib: usize) {
    let storage = std::ffi::CString::new(registry.storage_dir().to_str().unwrap()).unwrap();
    let options = std::ffi::CString::new(format!("size={mib}m")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls on valid C strings; the new mount namespace is this
            // thread's (and the registry's it starts) only.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0);
                assert_eq!(
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ),
                    0
                );
                assert_eq!(
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        storage.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        options.as_ptr().cast(),
                    ),
                    0
                );
            }
            registry.restart(std::time::Duration::ZERO).unwrap();
        });
    });
}

#[test]
fn a_full_registry_fails_the_push_naming_it_and_pushes_no_manifest() {
    let mut world = World::new();
    registry_on_small_disk(&mut world.registry, 8);
    world.registry_pushed_busybox_again();
    let destination = format!("{}/out:latest", world.registry.host());
    let context = common::context(
        "ARG BASE\nFROM $BASE\nRUN head -c 12000000 /dev/urandom > /rand\n",
        &[],
    );
    let push = |world: &World| {
        world.kiln(&[
            "build",
            "--context",
            context.path().to_str().unwrap(),
            "--build-arg",
            &format!("BASE={}", world.base),
            "--destination",
            &destination,
        ])
    };
    let failed = push(&world);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success(),
        "the push to a full registry succeeded"
    );
    // Distribution answers 500 UNKNOWN and says why only in its log: kiln names the layer,
    // the request and the status.
    assert!(
        world.registry.log().contains("no space left on device"),
        "the registry's disk did not fill up"
    );
    for needle in ["pushing layer", "/blobs/uploads/", ": 500"] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    let inspected = kiln_test::skopeo([
        "inspect".to_string(),
        "--tls-verify=false".to_string(),
        format!("docker://{destination}"),
    ]);
    assert!(!inspected.status.success(), "a manifest was pushed");

    // Space again (the registry's storage grows): the same build on the same kiln dir pushes.
    let grown = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", world.registry.pid()))
        .args(["mount", "-o", "remount,size=1g"])
        .arg(world.registry.storage_dir())
        .status()
        .unwrap();
    assert!(grown.success());
    let pushed = push(&world);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let copied = tempfile::tempdir().unwrap();
    let whole = kiln_test::skopeo([
        "copy".to_string(),
        "--src-tls-verify=false".to_string(),
        format!("docker://{destination}"),
        format!("oci:{}:x", copied.path().join("layout").display()),
    ]);
    assert!(whole.status.success(), "the pushed image is not whole");
}
