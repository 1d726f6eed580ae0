//! `kiln outline` end to end: the real binary on real files.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn kiln(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("kiln runs")
}

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

#[test]
fn json_outline_resolves_args_stages_and_the_ignore_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "Dockerfile",
        "ARG TAG=1\nFROM busybox:${TAG} AS base\nARG MSG=hi\nENV GREETING=\"$MSG there\"\nFROM scratch\nCOPY --from=base /bin/busybox /bb\n",
    );
    write(dir, ".dockerignore", "# comment\n*.log\n!keep.log\n");
    write(dir, "a.log", "x");
    write(dir, "keep.log", "x");
    write(dir, "src/main.rs", "x");
    let out = kiln(
        &[
            "outline",
            "--format",
            "json",
            "--build-arg",
            "MSG=hello",
            "--list-context",
            ".",
        ],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["stages"][0]["base"]["reference"], "busybox:1");
    assert_eq!(
        v["stages"][0]["instructions"][1]["env"][0]["value"],
        "hello there"
    );
    assert_eq!(v["stages"][1]["depends_on"], serde_json::json!([0]));
    assert_eq!(v["build_order"], serde_json::json!([[0], [1]]));
    assert_eq!(
        v["dockerignore"]["patterns"],
        serde_json::json!(["*.log", "!keep.log"])
    );
    assert_eq!(
        v["context_files"],
        serde_json::json!([
            ".dockerignore",
            "Dockerfile",
            "keep.log",
            "src/",
            "src/main.rs"
        ])
    );
}

#[test]
fn dockerfile_beside_ignore_file_takes_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "build/app.Dockerfile", "FROM scratch\nCOPY . /\n");
    write(dir, "build/app.Dockerfile.dockerignore", "secret\n");
    write(dir, ".dockerignore", "other\n");
    let out = kiln(
        &[
            "outline",
            "--format",
            "json",
            "-f",
            "build/app.Dockerfile",
            ".",
        ],
        dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dockerignore"]["patterns"], serde_json::json!(["secret"]));
}

#[test]
fn errors_name_file_line_column_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "Dockerfile",
        "FROM busybox\n\n\nWORKDIR /app\nCOPY --chwon=1000 . .\n",
    );
    let out = kiln(&["outline", "."], dir);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Dockerfile:5:6: COPY: unknown flag --chwon (did you mean --chown?)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn text_outline_shows_expanded_steps_and_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "Dockerfile", "FROM busybox AS build\nENV DIR /opt/app\nWORKDIR $DIR/bin\nFROM build AS test\nRUN true\nFROM build\n");
    let out = kiln(&["outline", "--build-arg", "NOPE=1", "."], dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("WORKDIR /opt/app/bin"), "{stdout}");
    assert!(stdout.contains("skipped stages: 1 (test)"), "{stdout}");
    assert!(stdout.contains("[LegacyKeyValueFormat]"), "{stdout}");
    assert!(
        stdout.contains("build-arg was [NOPE] not consumed"),
        "{stdout}"
    );
}

#[test]
fn missing_dockerfile_and_bad_target_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln(&["outline", "."], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the Dockerfile"));
    write(
        tmp.path(),
        "Dockerfile",
        "FROM busybox AS builder\nFROM scratch\n",
    );
    let out = kiln(&["outline", "--target", "bulider", "."], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("target stage \"bulider\" could not be found (did you mean \"builder\"?)"),
        "{stderr}"
    );
}

#[test]
fn invoked_as_executor_without_a_destination_names_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("executor");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), &exe).unwrap();
    let out = Command::new(&exe)
        .args(["--context", "."])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--destination is required unless --no-push"),
        "{err}"
    );
}

#[test]
fn dockerfile_from_stdin_and_build_args_from_the_environment() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "outline",
            "-f",
            "-",
            "--build-arg",
            "GREETING",
            "--format",
            "json",
            ".",
        ])
        .current_dir(tmp.path())
        .env("GREETING", "from-env")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nARG GREETING\nLABEL g=$GREETING\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["stages"][0]["instructions"][1]["labels"][0]["value"],
        "from-env"
    );
    assert_eq!(v["stages"][0]["args"][0]["source"], "build-arg");
}

#[test]
fn a_bad_flag_is_named_before_any_file_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln(&["outline", "--platform", "linux//x", "."], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--platform"), "{stderr}");
}
