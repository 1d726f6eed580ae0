//! A build told to stop: SIGTERM (a deleted pod) and SIGINT (Ctrl-C) during a RUN under every
//! backend, and SIGTERM while kiln waits on a registry that does not answer. kiln must exit
//! within seconds with 128 + the signal and a message that says why and where; the step's
//! processes, its mounts and the build's directory must be gone; and the next build on the
//! same kiln dir must work.

mod common;

use common::processes_matching;
use common::runners::{open_dir, Harness, Runner, RUNNERS};
use kiln_test::{Fault, FaultAction, FaultProxy};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Waits until `log` contains `needle` (the build got there), or fails after a minute.
fn wait_for_log(log: &Path, needle: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "{what}: never saw {needle:?} in the log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` to `child` and waits for it to exit; a hang guard, not a timing target.
fn signal_and_wait(child: &mut Child, signal: &str, what: &str) -> (ExitStatus, Duration) {
    let sent = Instant::now();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "{what}: kill -{signal}");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, sent.elapsed());
        }
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{what}: kiln did not exit within 30 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What of a stopped build may not be left: its directory under `builds/`, mounts under the
/// kiln dir (in this test's mount namespace).
fn assert_nothing_left(kiln_dir: &Path, what: &str) {
    let builds: Vec<String> = std::fs::read_dir(kiln_dir.join("builds"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        builds.is_empty(),
        "{what}: build directories left: {builds:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let kiln_dir = kiln_dir.to_string_lossy();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&*kiln_dir)).collect();
    assert!(left.is_empty(), "{what}: mounts left: {left:?}");
}

#[test]
fn sigterm_and_sigint_during_a_run_stop_the_build_cleanly_under_every_backend() {
    let harness = Harness::new();
    let cases = RUNNERS
        .iter()
        .map(|r| (*r, "TERM"))
        .chain([(Runner::Chroot, "INT")]);
    for (n, (runner, signal)) in cases.enumerate() {
        let what = format!("{runner:?} SIG{signal}");
        // The step leaves a process of its own in the background too.
        let marker = 41_000 + n;
        let context = common::context(
            &format!(
                "ARG BASE\nFROM $BASE\nRUN echo one > /one\nRUN sleep {marker}1 & echo \
                 step-started; sleep {marker}\n"
            ),
            &[],
        );
        let kiln_dir = open_dir();
        let out_dir = open_dir();
        let log = out_dir.path().join("log");
        let mut child = harness
            .command(
                runner,
                context.path(),
                kiln_dir.path(),
                &out_dir.path().join("layout"),
                &[],
                &[],
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_log(&log, "step-started", &what);
        let (status, _) = signal_and_wait(&mut child, signal, &what);
        let stderr = std::fs::read_to_string(&log).unwrap();
        let number = if signal == "TERM" { 15 } else { 2 };
        assert_eq!(
            status.code(),
            Some(128 + number),
            "{what}: exit status {status}\n{stderr}"
        );
        for needle in [
            format!("received SIG{signal}: stopping the build"),
            format!("error: build stopped by SIG{signal}: Dockerfile:4"),
        ] {
            assert!(
                stderr.contains(&needle),
                "{what}: no {needle:?} in:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("did not stop on its own"),
            "{what}: kiln had to give up waiting:\n{stderr}"
        );
        for pattern in [format!("sleep {marker}"), format!("sleep {marker}1")] {
            let left = processes_matching(&pattern);
            assert!(left.is_empty(), "{what}: processes left: {left:?}");
        }
        assert_nothing_left(kiln_dir.path(), &what);
        // The next build on the kiln dir works and reuses the first step.
        let again = common::context("ARG BASE\nFROM $BASE\nRUN echo one > /one\n", &[]);
        let out = harness.build(
            runner,
            again.path(),
            kiln_dir.path(),
            &out_dir.path().join("again"),
            &[],
            &[],
        );
        assert!(
            out.status.success(),
            "{what}: the next build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sigterm_while_a_registry_does_not_answer_exits_after_the_grace_period() {
    let harness = Harness::new();
    // Every blob request waits ten minutes (the proxy ends the wait when dropped).
    let proxy = FaultProxy::start(
        harness.world.registry.addr(),
        vec![Fault::new(FaultAction::Delay(Duration::from_secs(600)))
            .path("/blobs/")
            .times(100)],
    )
    .unwrap();
    let base = harness
        .world
        .base
        .replace(&harness.world.registry.host(), &proxy.host());
    let context = common::context("ARG BASE\nFROM $BASE\nRUN true\n", &[]);
    let kiln_dir = open_dir();
    let out_dir = open_dir();
    let log = out_dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--no-push", "--context"])
        .arg(context.path())
        .arg("--oci-layout-path")
        .arg(out_dir.path().join("layout"))
        .args(["--build-arg", &format!("BASE={base}")])
        .args(["--insecure-registry", &proxy.host(), "--kiln-dir"])
        .arg(kiln_dir.path())
        .env("DOCKER_CONFIG", harness.world.docker_config.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.applied(0) == 0 {
        assert!(Instant::now() < deadline, "kiln never asked for a blob");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, took) = signal_and_wait(&mut child, "TERM", "stalled pull");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("error: build stopped by SIGTERM: the build did not stop on its own within 5 s; exited, \
         this build's temporary files removed"),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(4),
        "exited after {took:?}: {stderr}"
    );
    assert_nothing_left(kiln_dir.path(), "stalled pull");
}
