//! Hostile input: what a Dockerfile, a context or a server may try against kiln, end to end with
//! the real binary, a real registry (busybox base image) and umoci reading the result.
//!
//! - A RUN step sees nothing of kiln: no credential, no variable of kiln's, no inherited file
//!   descriptor, not the kiln dir; what it leaves running and the mounts kiln made are gone after
//!   the build. Under every RUN backend: overlay, chroot with namespaces, chroot without them (a
//!   pod without CAP_SYS_ADMIN: setpriv drops it) and rootless (`nobody` in a user namespace).
//! - Context symlinks that point outside the context are copied as links, never followed out.
//! - Pathological Dockerfiles and .dockerignore files finish in bounded time and memory.
//! - `ADD URL DIR/` names the file from the URL as BuildKit does, never outside the destination,
//!   whatever the server's Content-Disposition, redirect or the URL's encoded `..` say.

mod common;

use common::runners::{open_dir, open_tree, Harness, Runner, RUNNERS};
use common::{contains, files_containing, layout_blobs, processes_matching};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A build must end within this (a hang guard: each takes seconds).
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// What one build is given besides its context.
#[derive(Default)]
struct Run<'a> {
    extra: Vec<String>,
    /// kiln's whole environment besides PATH and HOME (cleared otherwise).
    envs: Vec<(&'a str, String)>,
    /// `DOCKER_CONFIG` (the world's empty one when not set).
    docker_config: Option<&'a Path>,
    /// A file kiln inherits open on descriptor 7, without close-on-exec.
    fd7: Option<&'a Path>,
    /// The kiln dir (a fresh one when not set).
    kiln_dir: Option<&'a Path>,
}

struct Finished {
    out: Output,
    layout: PathBuf,
    kiln_dir: PathBuf,
    _fresh_kiln_dir: tempfile::TempDir,
    _out_dir: tempfile::TempDir,
}

/// `kiln build` of `context` into an OCI layout, with a fresh kiln dir (unless `run` names
/// one), `--verbosity trace`, under `runner`, with only the environment `run` gives.
fn build(harness: &Harness, runner: Runner, context: &Path, run: &Run<'_>) -> Finished {
    let fresh_kiln_dir = open_dir();
    let kiln_dir = run.kiln_dir.unwrap_or(fresh_kiln_dir.path()).to_owned();
    let out_dir = open_dir();
    let layout = out_dir.path().join("layout");
    let extra: Vec<&str> = run.extra.iter().map(String::as_str).collect();
    let mut cmd = harness.command(runner, context, &kiln_dir, &layout, &extra, &[]);
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", harness.world.docker_config.path())
        .env(
            "DOCKER_CONFIG",
            run.docker_config
                .unwrap_or_else(|| harness.world.docker_config.path()),
        );
    for (k, v) in &run.envs {
        cmd.env(k, v);
    }
    let inherited = run.fd7.map(|p| std::fs::File::open(p).unwrap());
    if let Some(file) = &inherited {
        let raw = std::os::fd::AsRawFd::as_raw_fd(file);
        // SAFETY: dup2 and fcntl only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 || libc::fcntl(7, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = output_within(cmd, BUILD_TIMEOUT, &format!("{runner:?} build"));
    drop(inherited);
    Finished {
        out,
        layout,
        kiln_dir,
        _fresh_kiln_dir: fresh_kiln_dir,
        _out_dir: out_dir,
    }
}

/// Runs `cmd` to its end with its output captured; fails the test (after killing it, by its
/// pid) when it takes longer than `limit`.
fn output_within(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("kiln starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: kiln failed:\n{}",
        stderr(out)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The sandbox lets nothing of kiln's out.

/// The fake credential in kiln's docker config (for the test registry's own host, so kiln loads
/// it) and the variables kiln runs with. Each is written in the Dockerfile only in two pieces,
/// so the history holds none whole.
const CREDENTIAL: &str = "kilnFakeCredQ7x9Z2";
const KILN_VAR: (&str, &str) = ("KILN_SOMETHING", "secretvalue-kiln-73");
const AWS_VAR: (&str, &str) = ("AWS_SECRET_ACCESS_KEY", "awsSecretKey0x5Eb1");
const TOKEN_VAR: (&str, &str) = ("REGISTRY_TOKEN", "registryTokenZq81");

/// The values the step must not see, with the base64 `auth` form of the credential.
fn needles() -> Vec<String> {
    use base64::Engine;
    vec![
        CREDENTIAL.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(format!("kilnuser:{CREDENTIAL}")),
        KILN_VAR.1.to_owned(),
        AWS_VAR.1.to_owned(),
        TOKEN_VAR.1.to_owned(),
        "inherited-descriptor-content".to_owned(),
    ]
}

/// A shell assignment that builds `value` from two pieces (`V=first; V="${V}second"`).
fn split_assign(var: &str, value: &str) -> String {
    let (a, b) = value.split_at(value.len() / 2);
    format!("{var}={a}; {var}=\"${{{var}}}{b}\"")
}

fn sandbox_dockerfile(kiln_dir_probe: &str) -> String {
    let needles = needles();
    let assigns: Vec<String> = needles
        .iter()
        .enumerate()
        .map(|(i, n)| split_assign(&format!("N{i}"), n))
        .collect();
    let printed: Vec<String> = (0..needles.len()).map(|i| format!("\"$N{i}\"")).collect();
    format!(
        "ARG BASE\nFROM $BASE\n\
         RUN env > /env-seen && env | cut -d= -f1 | sort | tr '\\n' ' ' > /env-names\n\
         RUN {assigns}; printf '%s\\n' {printed} > /tmp/.patterns; \
         {{ for d in /*; do case \"$d\" in /proc|/sys|/dev) ;; *) grep -rlF -f /tmp/.patterns \"$d\";; esac; done; \
         if [ -d /proc/1 ]; then grep -lF -f /tmp/.patterns /proc/[0-9]*/environ /proc/[0-9]*/cmdline; fi; \
         }} 2>/dev/null | grep -v '^/tmp/.patterns$' > /tmp/leaks; rm /tmp/.patterns; mv /tmp/leaks /leaks\n\
         RUN if [ -e {kiln_dir_probe} ] || cd {kiln_dir_probe} 2>/dev/null; then echo reachable; \
         else echo unreachable; fi > /kiln-dir-seen\n\
         ARG S1\nARG S2\n\
         RUN sleep $S1 & if [ -n \"$S2\" ]; then setsid sleep $S2 & fi; echo started\n",
        assigns = assigns.join("; "),
        printed = printed.join(" "),
    )
}

/// Under every backend a RUN step sees exactly the environment BuildKit gives it (the image's
/// PATH, HOME; the shell adds PWD and SHLVL), none of kiln's variables or credentials anywhere
/// in its file system or /proc, not the kiln dir; what it left running is gone after the build, as
/// are the mounts kiln made; and the secret values are in no blob, no log line, no file of the
/// kiln dir.
#[test]
fn a_run_step_sees_nothing_of_kiln() {
    let harness = Harness::new();
    let needles = needles();
    // kiln's docker config: a credential for the test registry itself (kiln reads it to pull
    // the base) and one for another registry.
    let docker_config = open_dir();
    let config = serde_json::json!({
        "auths": {
            harness.world.registry.host(): {"auth": &needles[1]},
            "registry.example.com": {"identitytoken": CREDENTIAL},
        },
        "HttpHeaders": {"X-Kiln-Test": CREDENTIAL},
    });
    let config_path = docker_config.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let descriptor = open_dir();
    let fd_file = descriptor.path().join("fd7");
    std::fs::write(&fd_file, "inherited-descriptor-content\n").unwrap();
    std::fs::set_permissions(&fd_file, std::fs::Permissions::from_mode(0o644)).unwrap();

    for (n, runner) in RUNNERS.into_iter().enumerate() {
        let what = format!("{runner:?}");
        // The step probes for the very kiln dir the build is given.
        let kiln_dir = open_dir();
        let context = common::context(&sandbox_dockerfile(kiln_dir.path().to_str().unwrap()), &[]);
        let (s1, s2) = (format!("{}", 30710 + n), format!("{}", 30720 + n));
        // Without namespaces a process that starts its own session escapes the step's process
        // group (documented in kiln-sandbox's plain.rs) and would hold the step's output pipe
        // open: only the plain background process is tried there.
        let s2_arg = if runner == Runner::ChrootNoNamespaces {
            String::new()
        } else {
            s2.clone()
        };
        let run = Run {
            extra: vec![
                "--build-arg".into(),
                format!("S1={s1}"),
                "--build-arg".into(),
                format!("S2={s2_arg}"),
            ],
            envs: vec![
                (KILN_VAR.0, KILN_VAR.1.into()),
                (AWS_VAR.0, AWS_VAR.1.into()),
                (TOKEN_VAR.0, TOKEN_VAR.1.into()),
            ],
            docker_config: Some(docker_config.path()),
            // The descriptor's content must not reach the image (what the step sees of
            // descriptors is the next test's).
            fd7: Some(&fd_file),
            kiln_dir: Some(kiln_dir.path()),
        };
        let built = build(&harness, runner, context.path(), &run);
        assert_ok(&built.out, &what);
        let fs = common::unpack(&built.layout);

        assert_eq!(
            fs.read("/env-names"),
            "HOME PATH PWD SHLVL ",
            "{what}: the step's variables"
        );
        let mut env: Vec<String> = fs.read("/env-seen").lines().map(str::to_owned).collect();
        env.sort();
        assert_eq!(
            env,
            [
                "HOME=/root",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PWD=/",
                "SHLVL=1"
            ],
            "{what}"
        );
        assert_eq!(
            fs.read("/leaks"),
            "",
            "{what}: files of the step holding kiln's secrets"
        );
        assert_eq!(fs.read("/kiln-dir-seen"), "unreachable\n", "{what}");

        // Nothing the steps started is left (a namespace's processes die with its pid 1;
        // without namespaces the step's process group is killed).
        for arg in [&s1, &s2] {
            let left = processes_matching(&format!("sleep {arg}"));
            if !left.is_empty() && runner == Runner::ChrootNoNamespaces {
                // Not started there; a leftover would be another test's: never ours to kill.
                continue;
            }
            assert!(left.is_empty(), "{what}: left running: {left:?}");
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let kiln_path = kiln_dir.path().to_str().unwrap();
        let mounts: Vec<&str> = mountinfo
            .lines()
            .filter(|l| l.contains(kiln_path))
            .collect();
        assert!(
            mounts.is_empty(),
            "{what}: mounts left under the kiln dir: {mounts:?}"
        );

        for needle in &needles {
            let bytes = needle.as_bytes();
            for (name, blob) in layout_blobs(&built.layout) {
                assert!(
                    !contains(&blob, bytes),
                    "{what}: {needle} is in blob {name}"
                );
            }
            assert!(
                !contains(&built.out.stderr, bytes) && !contains(&built.out.stdout, bytes),
                "{what}: {needle} is in kiln's output"
            );
            let left = files_containing(&built.kiln_dir, bytes);
            assert!(left.is_empty(), "{what}: {needle} is left in {left:?}");
        }
        // The history shows the steps, with the value in pieces only.
        let config = common::read_config(&built.layout).to_string();
        assert!(config.contains("N0="), "{what}: {config}");
    }
}

/// A RUN step has only stdin, stdout and stderr open, whatever kiln inherited: kiln is started
/// with a file open on descriptor 7 without close-on-exec (as a CI agent's leaked descriptor,
/// or a credential file a wrapper opened). Probed by an exec'd command per descriptor (a shell
/// builtin's redirections would make descriptors of their own) and, where there is /proc, by
/// listing /proc/self/fd.
#[test]
fn a_run_step_inherits_no_descriptor_from_kiln() {
    let harness = Harness::new();
    let descriptor = open_dir();
    let fd_file = descriptor.path().join("fd7");
    std::fs::write(&fd_file, "inherited-descriptor-content\n").unwrap();
    std::fs::set_permissions(&fd_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fds: Vec<String> = (3..=64).map(|n| n.to_string()).collect();
    let context = common::context(
        &format!(
            "ARG BASE\nFROM $BASE\n\
             RUN exec > /fds-open 2>/dev/null; for fd in {}; do /bin/busybox true <&$fd && echo $fd; \
             done; cat <&7 > /fd7-read; true\n\
             RUN if [ -d /proc/self/fd ]; then ls /proc/self/fd | sort -n | tr '\\n' ' '; \
             else echo no-proc; fi > /fds-proc\n",
            fds.join(" ")
        ),
        &[],
    );
    let mut failures = Vec::new();
    for runner in RUNNERS {
        let what = format!("{runner:?}");
        let run = Run {
            fd7: Some(&fd_file),
            ..Run::default()
        };
        let built = build(&harness, runner, context.path(), &run);
        assert_ok(&built.out, &what);
        let fs = common::unpack(&built.layout);
        let open: Vec<String> = fs.read("/fds-open").lines().map(str::to_owned).collect();
        if !open.is_empty() {
            failures.push(format!("{what}: descriptors {open:?} open in the step"));
        }
        // Without descriptor 7 the redirection fails before `> /fd7-read` is made.
        if fs.exists("/fd7-read") && !fs.read("/fd7-read").is_empty() {
            failures.push(format!("{what}: the step read kiln's descriptor 7"));
        }
        // 3 is the directory `ls` reads; no /proc without namespaces (the probe above covers it).
        let expected = if runner == Runner::ChrootNoNamespaces {
            "no-proc\n"
        } else {
            "0 1 2 3 "
        };
        let listed = fs.read("/fds-proc");
        if listed != expected {
            failures.push(format!("{what}: /proc/self/fd lists {listed:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 2. Context symlinks pointing outside the context.

const OUTSIDE: &str = "OUTSIDE-CONTENT-d41c";

/// A context beside an `outside` directory, with links out of it (absolute, `../`, a chain, a
/// link in a subdirectory) and links that stay inside (relative, and absolute: BuildKit
/// resolves a source path's links with the context as root).
struct LinkedContext {
    root: tempfile::TempDir,
}

impl LinkedContext {
    fn new(dockerfile: &str) -> LinkedContext {
        let root = open_dir();
        let outside = root.path().join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("secret.txt"), OUTSIDE).unwrap();
        std::fs::write(outside.join("dir/inner.txt"), OUTSIDE).unwrap();
        let ctx = root.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(ctx.join("sub/file.txt"), "inside\n").unwrap();
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, ctx.join(name)).unwrap();
        };
        link(&outside.join("secret.txt"), "abs_file");
        link(&outside.join("dir"), "abs_dir");
        link(Path::new("../outside/secret.txt"), "rel_file");
        link(Path::new("../outside/dir"), "rel_dir");
        link(Path::new("chain2"), "chain1");
        link(Path::new("../outside"), "chain2");
        link(Path::new("../../outside/secret.txt"), "sub/deep");
        link(Path::new("sub"), "inside");
        link(Path::new("/sub"), "abs_inside");
        open_tree(root.path());
        LinkedContext { root }
    }

    fn context(&self) -> PathBuf {
        self.root.path().join("ctx")
    }

    fn outside(&self) -> PathBuf {
        self.root.path().join("outside")
    }
}

fn link_target(fs: &common::Unpacked, path: &str) -> String {
    let meta = fs.meta(path);
    assert!(meta.file_type().is_symlink(), "{path} is not a link");
    std::fs::read_link(fs.rootfs().join(path.trim_start_matches('/')))
        .unwrap()
        .display()
        .to_string()
}

/// `COPY . /dst/` copies every link as the link it is (as docker does) and follows none out of
/// the context; a source path through a link resolves with the context as its root (BuildKit),
/// so links inside work and links out find nothing: the build fails naming the line, or copies
/// the source link itself. The outside content is in no layer. With no RUN in the stage (the
/// lazy tree kiln keeps then), and after a RUN under each backend (overlay and directory trees;
/// rootless has its own unpacking formats). COPY itself never runs in the sandbox.
#[test]
#[allow(clippy::print_stderr)] // what each source did, for the reader of `--nocapture`
fn context_symlinks_never_bring_outside_files_in() {
    let harness = Harness::new();
    let copies = "COPY . /dst/\nCOPY inside/file.txt /via-inside\n\
                  COPY abs_inside/file.txt /via-abs-inside\n";
    let cases: Vec<(Option<Runner>, String)> =
        std::iter::once((None, format!("ARG BASE\nFROM $BASE\n{copies}")))
            .chain(
                RUNNERS
                    .into_iter()
                    .map(|r| (Some(r), format!("ARG BASE\nFROM $BASE\nRUN true\n{copies}"))),
            )
            .collect();
    for (runner, dockerfile) in cases {
        let what = format!("{runner:?}");
        let ctx = LinkedContext::new(&dockerfile);
        let built = build(
            &harness,
            runner.unwrap_or(Runner::Chroot),
            &ctx.context(),
            &Run::default(),
        );
        assert_ok(&built.out, &what);
        let fs = common::unpack(&built.layout);
        let outside = ctx.outside();
        for (path, target) in [
            (
                "/dst/abs_file",
                outside.join("secret.txt").display().to_string(),
            ),
            ("/dst/abs_dir", outside.join("dir").display().to_string()),
            ("/dst/rel_file", "../outside/secret.txt".into()),
            ("/dst/rel_dir", "../outside/dir".into()),
            ("/dst/chain1", "chain2".into()),
            ("/dst/chain2", "../outside".into()),
            ("/dst/sub/deep", "../../outside/secret.txt".into()),
            ("/dst/inside", "sub".into()),
            ("/dst/abs_inside", "/sub".into()),
        ] {
            assert_eq!(link_target(&fs, path), target, "{what}: {path}");
        }
        assert_eq!(fs.read("/dst/sub/file.txt"), "inside\n", "{what}");
        assert_eq!(fs.read("/via-inside"), "inside\n", "{what}");
        assert_eq!(
            fs.read("/via-abs-inside"),
            "inside\n",
            "{what}: an absolute link resolves in the context"
        );
        for (name, blob) in layout_blobs(&built.layout) {
            assert!(
                !contains(&blob, OUTSIDE.as_bytes()),
                "{what}: outside content in {name}"
            );
        }
    }

    // Sources whose path leaves the context through a link: an error naming the line, or (a
    // source that is itself a link leading nowhere inside) the link copied as it is. Never the
    // outside file.
    for (source, may_copy_link) in [
        ("rel_dir/inner.txt", false),
        ("abs_dir/inner.txt", false),
        ("chain1/secret.txt", false),
        ("chain1/dir/", false),
        ("abs_file", true),
        ("rel_file", true),
        ("sub/deep", true),
        ("rel_*", true),
    ] {
        for runner in [Runner::Overlay, Runner::ChrootNoNamespaces] {
            let what = format!("{runner:?} COPY {source}");
            let ctx = LinkedContext::new(&format!(
                "ARG BASE\nFROM $BASE\nRUN true\nCOPY {source} /x\n"
            ));
            let built = build(&harness, runner, &ctx.context(), &Run::default());
            if !built.out.status.success() {
                let err = stderr(&built.out);
                let line = err
                    .lines()
                    .find(|l| l.contains("Dockerfile:4"))
                    .unwrap_or("");
                eprintln!("{what}: refused: {line}");
                assert!(err.contains("Dockerfile:4"), "{what}: {err}");
                assert!(!err.contains(OUTSIDE), "{what}: {err}");
                continue;
            }
            assert!(may_copy_link, "{what}: copied: {}", stderr(&built.out));
            let fs = common::unpack(&built.layout);
            let x = fs.meta("/x");
            eprintln!("{what}: copied as a {:?}", x.file_type());
            assert!(
                x.file_type().is_symlink() || x.is_dir(),
                "{what}: /x is a {:?}",
                x.file_type()
            );
            for (name, blob) in layout_blobs(&built.layout) {
                assert!(
                    !contains(&blob, OUTSIDE.as_bytes()),
                    "{what}: outside content in {name}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Pathological Dockerfiles and .dockerignore files.

/// Hang guards (generous: a debug build of kiln; each case takes well under 3 s, where the
/// quadratic position and global ARG code this replaced took 45 s and over a minute).
const OUTLINE_SECONDS: f64 = 20.0;
const OUTLINE_KIB: u64 = 768 * 1024;

struct Measured {
    out: Output,
    seconds: f64,
    max_rss_kib: u64,
}

/// `kiln outline ARGS` in `dir`, timed by `/usr/bin/time` (wall time and peak RSS).
fn outline_measured(dir: &Path, args: &[&str]) -> Measured {
    let times = dir.join(".time");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&times)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("outline")
        .args(args)
        .current_dir(dir);
    let out = output_within(cmd, Duration::from_secs(90), "kiln outline");
    let text = std::fs::read_to_string(&times).unwrap();
    let last = text.lines().last().unwrap_or_default().to_owned();
    let mut parts = last.split_whitespace();
    let seconds: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap();
    let max_rss_kib: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap();
    let _ = std::fs::remove_file(&times);
    Measured {
        out,
        seconds,
        max_rss_kib,
    }
}

/// Every case runs `kiln outline` on a Dockerfile (and .dockerignore) built to push a parser
/// or matcher into super-linear behaviour; each ends in bounded time and memory, and says what
/// it should: the outline, or an error naming the file and line.
#[test]
#[allow(clippy::print_stderr)] // the measurements, for the reader of `--nocapture`
fn pathological_dockerfiles_finish_in_bounded_time_and_memory() {
    struct Case {
        name: &'static str,
        dockerfile: String,
        ignore: Option<String>,
        args: Vec<&'static str>,
        /// `Ok(text in stdout)` or `Err(text in stderr)`.
        expect: Result<String, String>,
    }
    let mb = 1024 * 1024;
    let depth_ok = 60;
    let depth_bad = 2000;
    let nest = |depth: usize| -> String {
        let open: String = (0..depth).map(|i| format!("${{u{i}:-")).collect();
        format!("{open}$Z{}", "}".repeat(depth))
    };
    let cases = vec![
        Case {
            name: "an 8 MiB line",
            dockerfile: format!(
                "FROM scratch\nLABEL big=\"{}\" after=yes\n",
                "x".repeat(8 * mb)
            ),
            ignore: None,
            args: vec!["--format", "json"],
            expect: Ok("\"after\"".into()),
        },
        Case {
            name: "one ENV of 300,000 pairs",
            dockerfile: format!(
                "FROM scratch\nENV {}\n",
                (0..300_000)
                    .map(|i| format!("k{i}=v{i}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            ignore: None,
            args: vec![],
            expect: Ok("k299999".into()),
        },
        Case {
            name: "a COPY continued over 150,000 lines",
            dockerfile: format!(
                "FROM scratch\nCOPY \\\n{}  /dst/\n",
                (0..150_000)
                    .map(|i| format!("  f{i} \\\n"))
                    .collect::<String>()
            ),
            ignore: None,
            args: vec![],
            expect: Ok("f149999".into()),
        },
        Case {
            name: "a RUN continued over 150,000 lines with comments",
            dockerfile: format!(
                "FROM scratch\nRUN echo \\\n{}  end\n",
                "# c\n  a \\\n".repeat(150_000)
            ),
            ignore: None,
            args: vec![],
            expect: Ok("end".into()),
        },
        Case {
            name: "1,500 stages, each copying from the one before",
            dockerfile: (0..1500)
                .map(|i| {
                    if i == 0 {
                        "FROM scratch AS s0\nCOPY a /a\n".to_owned()
                    } else {
                        format!("FROM scratch AS s{i}\nCOPY --from=s{} /a /a\n", i - 1)
                    }
                })
                .collect(),
            ignore: None,
            args: vec!["--format", "json"],
            expect: Ok("\"s1499\"".into()),
        },
        Case {
            name: "a 32 MiB heredoc",
            dockerfile: format!(
                "FROM scratch\nCOPY <<EOF /big\n{}EOF\nLABEL done=yes\n",
                format!("{}\n", "y".repeat(127)).repeat(32 * mb / 128)
            ),
            ignore: None,
            args: vec![],
            expect: Ok("done".into()),
        },
        Case {
            name: "an unterminated 32 MiB heredoc",
            dockerfile: format!(
                "FROM scratch\nCOPY <<EOF /big\n{}",
                format!("{}\n", "y".repeat(127)).repeat(32 * mb / 128)
            ),
            ignore: None,
            args: vec![],
            expect: Err("Dockerfile:2:".into()),
        },
        Case {
            name: "substitutions nested 60 deep",
            dockerfile: format!("FROM scratch\nARG Z=deep\nENV v={}\n", nest(depth_ok)),
            ignore: None,
            args: vec!["--format", "json"],
            expect: Ok("\"deep\"".into()),
        },
        Case {
            name: "substitutions nested 2,000 deep",
            dockerfile: format!("FROM scratch\nARG Z=deep\nENV v={}\n", nest(depth_bad)),
            ignore: None,
            args: vec![],
            expect: Err("Dockerfile:3:".into()),
        },
        Case {
            name: "20,000 chained global ARGs",
            dockerfile: format!(
                "ARG A0=x\n{}FROM scratch\nARG A19999\nENV last=$A19999\n",
                (1..20_000)
                    .map(|i| format!("ARG A{i}=${{A{}}}\n", i - 1))
                    .collect::<String>()
            ),
            ignore: None,
            args: vec!["--format", "json"],
            expect: Ok("\"A19999\"".into()),
        },
        Case {
            name: "a .dockerignore of 40,000 patterns",
            dockerfile: "FROM scratch\nCOPY . /\n".into(),
            ignore: Some(
                (0..20_000)
                    .map(|i| format!("dir{i}/**/*.tmp\n!dir{i}/keep{i}\n"))
                    .collect(),
            ),
            args: vec!["--list-context"],
            expect: Ok("keep.txt".into()),
        },
        Case {
            name: "patterns of 40 `**` against a 60-deep path",
            dockerfile: "FROM scratch\nCOPY . /\n".into(),
            ignore: Some(format!(
                "{0}/x\n{0}/*a*a*a*a*a*a*a*a*a*a*b\n{1}\n",
                ["**"; 40].join("/"),
                "*a".repeat(300) + "*b"
            )),
            args: vec!["--list-context"],
            expect: Ok("d59/y".into()),
        },
    ];
    let mut report = Vec::new();
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), &case.dockerfile).unwrap();
        if let Some(ignore) = &case.ignore {
            std::fs::write(dir.path().join(".dockerignore"), ignore).unwrap();
            std::fs::write(dir.path().join("keep.txt"), "k").unwrap();
            let deep: PathBuf = (0..60).map(|i| format!("d{i}")).collect();
            let deep = dir.path().join(deep);
            std::fs::create_dir_all(&deep).unwrap();
            for name in ["x", "y", &"a".repeat(250)] {
                std::fs::write(deep.join(name), "").unwrap();
            }
            std::fs::create_dir_all(dir.path().join("dir7/sub")).unwrap();
            std::fs::write(dir.path().join("dir7/sub/gone.tmp"), "").unwrap();
        }
        let mut args = case.args.clone();
        args.push(".");
        let m = outline_measured(dir.path(), &args);
        report.push(format!(
            "{}: {:.2} s, {} MiB",
            case.name,
            m.seconds,
            m.max_rss_kib / 1024
        ));
        let (out, err) = (
            String::from_utf8_lossy(&m.out.stdout),
            String::from_utf8_lossy(&m.out.stderr),
        );
        match &case.expect {
            Ok(text) => {
                assert!(m.out.status.success(), "{}: {err}", case.name);
                assert!(out.contains(text.as_str()), "{}: no {text:?}", case.name);
            }
            Err(text) => {
                assert!(!m.out.status.success(), "{}: succeeded", case.name);
                assert!(err.contains(text.as_str()), "{}: {err}", case.name);
                assert!(
                    err.len() < 4096,
                    "{}: a short error: {} bytes: {}",
                    case.name,
                    err.len(),
                    &err[..err.len().min(600)]
                );
            }
        }
        if let Some(ignore) = &case.ignore {
            let deep: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
            let deep = deep.join("/");
            let excluded = if ignore.contains("**/**") {
                // The patterns built to backtrack match nothing: the long name stays.
                assert!(out.contains(&"a".repeat(250)), "{}", case.name);
                vec![format!("{deep}/x\n")]
            } else {
                vec!["gone.tmp".to_owned()]
            };
            for name in excluded {
                assert!(!out.contains(&name), "{}: {name} is excluded", case.name);
            }
        }
        assert!(
            m.seconds < OUTLINE_SECONDS && m.max_rss_kib < OUTLINE_KIB,
            "{}: {:.2} s, {} KiB",
            case.name,
            m.seconds,
            m.max_rss_kib
        );
    }
    eprintln!(
        "kiln outline on pathological inputs:\n  {}",
        report.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// 4. ADD of a URL whose server tries to choose the file name.

/// A loopback HTTP server: a Content-Disposition naming `../../etc/evil` (and `..`), a redirect
/// to another name, and any path ending in an encoded `..%2F`. Answers `path -> body` for the
/// paths it knows; serves until the test process ends.
fn hostile_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !contains(&request, b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (head, body): (String, String) = match path.as_str() {
                "/cd/file.txt" => (
                    "200 OK\r\nContent-Disposition: attachment; filename=\"../../etc/evil\"".into(),
                    "cd-body\n".into(),
                ),
                "/cd-dots/plain" => (
                    "200 OK\r\nContent-Disposition: attachment; filename=\"..\"".into(),
                    "dots-body\n".into(),
                ),
                "/cd-abs/" => (
                    "200 OK\r\nContent-Disposition: attachment; filename=\"/etc/evil3\"".into(),
                    "abs-body\n".into(),
                ),
                "/redirect/first.txt" => (
                    "302 Found\r\nLocation: /target/second.txt".into(),
                    String::new(),
                ),
                "/target/second.txt" => ("200 OK".into(), "redirected-body\n".into()),
                p if p.starts_with("/enc/") => ("200 OK".into(), "encoded-body\n".into()),
                p if p.starts_with("/enc-dots/") => ("200 OK".into(), "enc-dots-body\n".into()),
                _ => ("404 Not Found".into(), String::new()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// `ADD URL DIR/` under every backend: the file is named as BuildKit's Dockerfile frontend
/// names it (the last element of the written URL's decoded path; `__unnamed__` for none),
/// never from Content-Disposition or the redirect target, and lands in its destination only:
/// nothing at /etc/evil*, nothing outside /dst holds a body.
#[test]
fn add_of_a_url_names_the_file_inside_its_destination() {
    let harness = Harness::new();
    let port = hostile_server();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\nRUN mkdir -p /dst/probe\n\
         ADD {} /dst/a/\nADD {} /dst/b/\nADD {} /dst/c/\nADD {} /dst/d/\nADD {} /dst/e/\n\
         ADD {} /dst/f/\nWORKDIR /dst/probe\nADD {} ./\n",
        url("/cd/file.txt"),
        url("/cd-dots/plain"),
        url("/redirect/first.txt"),
        url("/enc/..%2F..%2Fetc%2Fevil2"),
        url("/enc-dots/x%2F.."),
        url("/cd-abs/"),
        url("/cd/file.txt"),
    );
    let expected = [
        ("/dst/a/file.txt", "cd-body\n"),
        ("/dst/b/plain", "dots-body\n"),
        ("/dst/c/first.txt", "redirected-body\n"),
        ("/dst/d/evil2", "encoded-body\n"),
        ("/dst/e/__unnamed__", "enc-dots-body\n"),
        ("/dst/f/cd-abs", "abs-body\n"),
        ("/dst/probe/file.txt", "cd-body\n"),
    ];
    let context = common::context(&dockerfile, &[]);
    for runner in RUNNERS {
        let what = format!("{runner:?}");
        let built = build(&harness, runner, context.path(), &Run::default());
        assert_ok(&built.out, &what);
        let fs = common::unpack(&built.layout);
        for (path, body) in expected {
            assert_eq!(fs.read(path), body, "{what}: {path}");
            assert_eq!(fs.meta(path).mode() & 0o777, 0o600, "{what}: {path}");
        }
        for dir in ["/dst/a", "/dst/b", "/dst/c", "/dst/d", "/dst/e", "/dst/f"] {
            let names: Vec<String> = std::fs::read_dir(fs.rootfs().join(&dir[1..]))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 1, "{what}: {dir}: {names:?}");
        }
        for absent in [
            "/etc/evil",
            "/etc/evil2",
            "/etc/evil3",
            "/evil",
            "/plain",
            "/second.txt",
        ] {
            assert!(!fs.exists(absent), "{what}: {absent}");
        }
        let dst = fs.rootfs().join("dst");
        for (_, body) in expected {
            let found: Vec<PathBuf> = files_containing(&fs.rootfs(), body.as_bytes())
                .into_iter()
                .filter(|p| !p.starts_with(&dst))
                .collect();
            assert!(found.is_empty(), "{what}: {body:?} outside /dst: {found:?}");
        }
    }
}
