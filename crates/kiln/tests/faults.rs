//! The fault matrix for whole builds: `kiln build` pulls its base image from, and pushes its
//! result to, the real Distribution registry through the fault proxy, which cuts connections
//! mid-pull and mid-push of a large layer, answers with bursts of 503 and with 429 +
//! Retry-After, stalls, or has the registry killed and restarted under the build. Each build
//! either succeeds within its retry budget, with an image skopeo copies whole (every blob
//! there) and byte-identical to the image the same build pushes without faults, or fails with
//! the failed request named, and then no manifest was pushed. The tally is printed
//! (`cargo test -p kiln --test faults -- --nocapture`; scripts/faults.sh runs it).

#![allow(clippy::print_stderr)] // the tally is the report scripts/faults.sh shows

mod common;

use kiln_test::{Fault, FaultAction, FaultProxy, Registry};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Megabytes of incompressible data in the base image's second layer and in the built one.
const BIG_MIB: usize = 12;

fn push_big_base(registry: &Registry) {
    common::push_big_base(registry, "base:latest", BIG_MIB);
}

/// The Dockerfile: reads the base's big layer and writes a big layer of its own.
const DOCKERFILE: &str = "ARG BASE\nFROM $BASE\nRUN cat /big.bin /big.bin | md5sum > /sum && \
                          cp /big.bin /copy.bin && echo x >> /copy.bin\n";

/// `kiln build` through `via` (a proxy or the registry itself), pushing to
/// `via/out/NAME:latest`, reproducibly, with a fresh kiln dir.
fn build(via: &str, name: &str, extra: &[&str]) -> (Output, String) {
    let context = common::context(DOCKERFILE, &[]);
    let kiln_dir = tempfile::tempdir().unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(docker_config.path().join("config.json"), "{}").unwrap();
    let destination = format!("{via}/out/{name}:latest");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--reproducible", "--context"])
        .arg(context.path())
        .args(["--build-arg", &format!("BASE={via}/base:latest")])
        .args(["--destination", &destination, "--insecure-registry", via])
        .arg("--kiln-dir")
        .arg(kiln_dir.path())
        .args(extra)
        .env("DOCKER_CONFIG", docker_config.path())
        .output()
        .unwrap();
    (out, destination)
}

/// The manifest digest of `image` when skopeo can copy it whole (every blob fetched and
/// checked against its digest), else `None`.
fn copied_whole(image: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let copied = kiln_test::skopeo([
        "copy".to_string(),
        "--src-tls-verify=false".to_string(),
        format!("docker://{image}"),
        format!("oci:{}:x", dir.path().join("layout").display()),
    ]);
    if !copied.status.success() {
        return None;
    }
    let digest = kiln_test::skopeo_checked([
        "inspect".to_string(),
        "--tls-verify=false".to_string(),
        "--format={{.Digest}}".to_string(),
        format!("docker://{image}"),
    ])
    .ok()?;
    Some(digest.trim().to_owned())
}

/// Pushes the big base image to `registry`, builds without faults, and returns the manifest
/// digest of that clean image (copied whole): what every build that survives its faults must
/// push too.
fn clean_reference(registry: &Registry) -> String {
    push_big_base(registry);
    let (clean, clean_dest) = build(&registry.host(), "clean", &[]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    copied_whole(&clean_dest).expect("the clean image copies whole")
}

fn manifest_puts(proxy: &FaultProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.target.contains("/manifests/"))
        .count()
}

/// One row of the matrix.
struct Case {
    name: &'static str,
    faults: Vec<Fault>,
    extra: &'static [&'static str],
    /// `None`: the build must succeed; `Some(needles)`: it must fail saying all of these.
    fails_with: Option<&'static [&'static str]>,
}

#[test]
fn whole_builds_survive_registry_faults_or_fail_naming_the_request() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let reference = clean_reference(&registry);

    let big = (BIG_MIB as u64) << 20;
    let cases = vec![
        Case {
            name: "pull cut mid-layer, twice",
            faults: vec![Fault::new(FaultAction::CloseAfterBodyBytes(big / 3))
                .method("GET")
                .path("/blobs/sha256:")
                .times(2)],
            extra: &[],
            fails_with: None,
        },
        Case {
            name: "push cut mid-layer",
            faults: vec![Fault::new(FaultAction::CloseAfterRequestBytes(big / 2))
                .method("PUT")
                .path("/blobs/uploads/")
                .times(1)],
            extra: &[],
            fails_with: None,
        },
        Case {
            name: "503 burst on every kind of request",
            faults: vec![Fault::new(FaultAction::ServiceUnavailable).times(3)],
            extra: &[],
            fails_with: None,
        },
        Case {
            name: "503 burst on blob uploads",
            faults: vec![Fault::new(FaultAction::ServiceUnavailable)
                .path("/blobs/uploads/")
                .times(3)],
            extra: &[],
            fails_with: None,
        },
        Case {
            name: "429 with Retry-After on manifests",
            faults: vec![Fault::new(FaultAction::TooManyRequests)
                .path("/manifests/")
                .times(2)],
            extra: &[],
            fails_with: None,
        },
        Case {
            name: "a blob download stalls once",
            faults: vec![Fault::new(FaultAction::Delay(Duration::from_secs(600)))
                .method("GET")
                .path("/blobs/sha256:")
                .times(1)],
            extra: &["--registry-read-timeout=2s"],
            fails_with: None,
        },
        Case {
            name: "blob downloads stall every time",
            faults: vec![Fault::new(FaultAction::Delay(Duration::from_secs(600)))
                .method("GET")
                .path("/blobs/sha256:")
                .times(1000)],
            extra: &["--registry-read-timeout=1s", "--image-download-retry=1"],
            fails_with: Some(&["GET", "/blobs/sha256:", "timed out"]),
        },
        Case {
            name: "blob uploads refused every time (503)",
            faults: vec![Fault::new(FaultAction::ServiceUnavailable)
                .method("PUT")
                .path("/blobs/uploads/")
                .times(1000)],
            extra: &["--push-retry=1"],
            fails_with: Some(&["PUT", "/blobs/uploads/", "503"]),
        },
    ];

    let mut tally = Tally::default();
    for (n, case) in cases.into_iter().enumerate() {
        let proxy = FaultProxy::start(registry.addr(), case.faults.clone()).unwrap();
        let name = format!("case{n}");
        let started = Instant::now();
        let (out, destination) = build(&proxy.host(), &name, case.extra);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let injected: usize = (0..case.faults.len()).map(|i| proxy.applied(i)).sum();
        assert!(injected > 0, "{}: no fault was injected", case.name);
        tally.injected += injected;
        match case.fails_with {
            None => {
                assert!(out.status.success(), "{}: {stderr}", case.name);
                let direct = destination.replace(&proxy.host(), &registry.host());
                let digest = copied_whole(&direct);
                assert_eq!(
                    digest.as_deref(),
                    Some(reference.as_str()),
                    "{}: the pushed image is not the clean build's, or not whole",
                    case.name
                );
                tally.survived += 1;
            }
            Some(needles) => {
                assert!(!out.status.success(), "{}: the build succeeded", case.name);
                for needle in needles {
                    assert!(
                        stderr.contains(needle),
                        "{}: the error does not say {needle:?}:\n{stderr}",
                        case.name
                    );
                }
                assert_eq!(
                    manifest_puts(&proxy),
                    0,
                    "{}: a manifest was pushed by a failed build",
                    case.name
                );
                tally.failed_clearly += 1;
            }
        }
        eprintln!(
            "fault matrix: {:<40} {injected:>4} faults  {:>6.1} s  {}",
            case.name,
            took.as_secs_f64(),
            if out.status.success() {
                "built, image whole and identical".to_owned()
            } else {
                format!(
                    "failed: {}",
                    stderr.lines().last().unwrap_or_default().trim()
                )
            }
        );
    }
    eprintln!(
        "fault matrix: {} faults injected, {} builds survived, {} failed clearly, 0 images lost",
        tally.injected, tally.survived, tally.failed_clearly
    );
}

#[derive(Default)]
struct Tally {
    injected: usize,
    survived: usize,
    failed_clearly: usize,
}

/// The registry is killed and started again (same port, same storage) while the build pushes
/// its large layer, and again while it pulls: with a retry budget that covers the restart,
/// the build succeeds and its image is whole.
#[test]
fn a_registry_restarted_mid_build_is_survived() {
    let mut registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let reference = clean_reference(&registry);
    for (n, (method, path)) in [("GET", "/blobs/sha256:"), ("PUT", "/blobs/uploads/")]
        .into_iter()
        .enumerate()
    {
        // Slow the big transfer down so the restart lands in the middle of it.
        let proxy = FaultProxy::start(
            registry.addr(),
            vec![Fault::new(FaultAction::Delay(Duration::from_millis(1500)))
                .method(method)
                .path(path)
                .times(1)],
        )
        .unwrap();
        let host = proxy.host();
        let (out, destination) = std::thread::scope(|s| {
            let building = s.spawn(|| {
                build(
                    &host,
                    &format!("restart{n}"),
                    &["--image-download-retry=8", "--push-retry=8"],
                )
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while proxy.applied(0) == 0 {
                assert!(Instant::now() < deadline, "{method} {path} never came");
                std::thread::sleep(Duration::from_millis(10));
            }
            registry.restart(Duration::from_millis(500)).unwrap();
            building.join().unwrap()
        });
        assert!(
            out.status.success(),
            "restart during {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let direct = destination.replace(&proxy.host(), &registry.host());
        assert_eq!(copied_whole(&direct).as_deref(), Some(reference.as_str()));
        eprintln!("fault matrix: registry restarted during {method} {path}: built, image whole");
    }
}
