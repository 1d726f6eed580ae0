//! kiln as a drop-in for kaniko's `/kaniko/executor`: kaniko's spellings of flags and
//! variables, its output files, and the Dockerfile semantics pipelines moving from kaniko rely
//! on (BuildKit's, where kaniko and BuildKit agree). Against the real registry; images read
//! back by skopeo and umoci.

mod common;

use common::World;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The kiln binary under kaniko's name, in its own directory.
struct Executor {
    dir: tempfile::TempDir,
}

impl Executor {
    fn new() -> Executor {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), dir.path().join("executor"))
            .unwrap();
        Executor { dir }
    }

    /// `executor ARGS` in `cwd` with the world's docker config and `env`.
    fn run(&self, world: &World, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.dir.path().join("executor"));
        cmd.current_dir(cwd)
            .args(args)
            .env("DOCKER_CONFIG", world.docker_config.path())
            .env_remove("KILN_DIR")
            .env_remove("KANIKO_DIR")
            .env_remove("KANIKO_NO_PUSH")
            .env_remove("KANIKO_REGISTRY_MAP")
            .env_remove("KANIKO_REGISTRY_MIRROR");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("executor runs")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `skopeo inspect` of an image in the plain-HTTP test registry; None when it is not there.
fn remote_digest(image: &str) -> Option<String> {
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v["Digest"].as_str().unwrap().to_owned())
}

/// The digest of the only manifest of an OCI layout, as skopeo reads it.
fn layout_digest(layout: &Path) -> String {
    let raw = kiln_test::skopeo_checked([
        "inspect".to_string(),
        "--raw".to_string(),
        format!("oci:{}", layout.display()),
    ])
    .unwrap();
    kiln_oci::Digest::of(raw.as_bytes()).to_string()
}

#[test]
fn relative_paths_work_with_the_default_backend_and_outputs_get_their_directories() {
    let world = World::new();
    let exec = Executor::new();
    let base = format!("BASE={}", world.base);
    let host = world.registry.host();
    for backend in common::BACKENDS {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::write(
            cwd.path().join("Dockerfile"),
            "ARG BASE\nFROM $BASE\nRUN echo relative > /r.txt\n",
        )
        .unwrap();
        let out = exec.run(
            &world,
            cwd.path(),
            &[
                "--context=.",
                "--no-push",
                "--build-arg",
                &base,
                "--insecure-registry",
                &host,
                "--isolation",
                backend,
                "--kaniko-dir",
                "state/kiln",
                "--oci-layout-path",
                "out/new/layout",
                "--tar-path",
                "out/tar/image.tar",
                "--digest-file",
                "out/digest/deep/file",
            ],
            &[],
        );
        common::assert_success(&out);
        let digest = stdout(&out);
        assert_eq!(
            std::fs::read_to_string(cwd.path().join("out/digest/deep/file")).unwrap(),
            digest,
            "kaniko's digest file: the digest, no newline"
        );
        // The layout holds the manifest as built: its digest is the image's.
        assert_eq!(layout_digest(&cwd.path().join("out/new/layout")), digest);
        assert!(cwd.path().join("state/kiln/store").is_dir());
        let fs = common::unpack(&cwd.path().join("out/new/layout"));
        assert_eq!(fs.read("/r.txt"), "relative\n");
        kiln_test::skopeo_checked([
            "inspect".to_string(),
            format!(
                "docker-archive:{}",
                cwd.path().join("out/tar/image.tar").display()
            ),
        ])
        .unwrap();
    }
}

#[test]
fn kaniko_boolean_spellings_variables_and_digest_files() {
    let world = World::new();
    let exec = Executor::new();
    let context = common::context("ARG BASE\nFROM $BASE\nRUN echo pushed > /p.txt\n", &[]);
    let ctx = context.path().to_str().unwrap();
    let host = world.registry.host();
    let base = format!("BASE={}", world.base);
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let kiln_dir = w("kiln");
    // Plain HTTP through kaniko's own flags, each boolean spelled `=true`/`=false`.
    let out = exec.run(
        &world,
        work.path(),
        &[
            "--context",
            ctx,
            "--build-arg",
            &base,
            "--destination",
            &format!("{host}/team/app:1"),
            "--destination",
            &format!("{host}/team/app"),
            "--insecure=true",
            "--insecure-pull=true",
            "--skip-tls-verify=false",
            "--skip-tls-verify-pull=false",
            "--skip-default-registry-fallback=false",
            "--skip-push-permission-check=true",
            "--cleanup=true",
            "--reproducible=false",
            "--kaniko-dir",
            &kiln_dir,
            "--digest-file",
            &w("digest"),
            "--image-name-with-digest-file",
            &w("names"),
            "--image-name-tag-with-digest-file",
            &w("tags"),
            "--oci-layout-path",
            &w("layout"),
        ],
        &[],
    );
    common::assert_success(&out);
    let digest = stdout(&out);
    assert_eq!(
        remote_digest(&format!("{host}/team/app:1")),
        Some(digest.clone())
    );
    assert_eq!(std::fs::read_to_string(w("digest")).unwrap(), digest);
    assert_eq!(
        std::fs::read_to_string(w("names")).unwrap(),
        format!("{host}/team/app@{digest}\n{host}/team/app@{digest}\n")
    );
    assert_eq!(
        std::fs::read_to_string(w("tags")).unwrap(),
        format!("{host}/team/app:1@{digest}\n{host}/team/app:latest@{digest}\n")
    );
    assert_eq!(
        layout_digest(Path::new(&w("layout"))),
        digest,
        "the OCI layout's manifest is the one pushed"
    );
    // `--flag value` is not kaniko's spelling of a boolean: refused, not misread.
    let out = exec.run(
        &world,
        work.path(),
        &["--context", ctx, "--no-push", "false"],
        &[],
    );
    assert!(!out.status.success());
    // KANIKO_NO_PUSH overrides a destination; KANIKO_DIR holds the state; KANIKO_REGISTRY_MAP
    // sends a registry's images to another.
    let kaniko_dir = w("kaniko-dir");
    let mapped = common::context("FROM fake.invalid/busybox:latest\nRUN true\n", &[]);
    let out = exec.run(
        &world,
        work.path(),
        &[
            "--context",
            mapped.path().to_str().unwrap(),
            "--destination",
            &format!("{host}/team/app:not-pushed"),
            "--insecure-registry",
            &host,
        ],
        &[
            ("KANIKO_NO_PUSH", "true"),
            ("KANIKO_DIR", &kaniko_dir),
            ("KANIKO_REGISTRY_MAP", &format!("fake.invalid={host}")),
        ],
    );
    common::assert_success(&out);
    assert_eq!(remote_digest(&format!("{host}/team/app:not-pushed")), None);
    assert!(Path::new(&kaniko_dir).join("store").is_dir());
    let out = exec.run(
        &world,
        work.path(),
        &["--context", ctx, "--no-push"],
        &[("KANIKO_NO_PUSH", "maybe")],
    );
    assert!(stderr(&out).contains("KANIKO_NO_PUSH"), "{}", stderr(&out));
    // The name files need destinations to name.
    let out = exec.run(
        &world,
        work.path(),
        &[
            "--context",
            ctx,
            "--no-push",
            "--image-name-with-digest-file",
            &w("n2"),
        ],
        &[],
    );
    assert!(
        stderr(&out).contains("--image-name-with-digest-file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kanikos_registry_mirror_variable_serves_docker_hub_images() {
    let world = World::new();
    world.push_base(
        &kiln_test::BaseImage::busybox().unwrap(),
        "library/busybox:latest",
    );
    let exec = Executor::new();
    let context = common::context("FROM busybox\nRUN echo mirrored > /m.txt\n", &[]);
    let layout = tempfile::tempdir().unwrap();
    let host = world.registry.host();
    let out = exec.run(
        &world,
        layout.path(),
        &[
            "--context",
            context.path().to_str().unwrap(),
            "--no-push",
            "--oci-layout-path",
            "layout",
            "--insecure-registry",
            &host,
            "--skip-default-registry-fallback",
        ],
        &[("KANIKO_REGISTRY_MIRROR", &host)],
    );
    common::assert_success(&out);
    assert_eq!(
        common::unpack(&layout.path().join("layout")).read("/m.txt"),
        "mirrored\n"
    );
}

#[test]
fn the_executor_builds_every_stage_up_to_the_target_as_kaniko_does() {
    let world = World::new();
    let exec = Executor::new();
    let dockerfile = "ARG BASE\nFROM $BASE AS test\nRUN echo unit tests fail && exit 3\n\
                      FROM $BASE AS app\nRUN echo app > /app.txt\nFROM app AS later\nRUN exit 4\n";
    let context = common::context(dockerfile, &[]);
    let ctx = context.path().to_str().unwrap();
    let base = format!("BASE={}", world.base);
    let host = world.registry.host();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--context",
            ctx,
            "--no-push",
            "--build-arg",
            &base,
            "--insecure-registry",
            &host,
            "--target",
            "app",
        ];
        args.extend_from_slice(extra);
        exec.run(&world, context.path(), &args, &[])
    };
    // kaniko's default: the `test` stage runs (and fails the build); `later` never does.
    let out = run(&[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:3") && err.contains("exit"),
        "{err}"
    );
    assert!(!err.contains("exit 4"), "{err}");
    // --skip-unused-stages (and =true) skips it and says so.
    for flag in ["--skip-unused-stages", "--skip-unused-stages=true"] {
        let out = run(&[flag]);
        common::assert_success(&out);
        let err = stderr(&out);
        assert!(err.contains("skipping stages 0 (test), 2 (later)"), "{err}");
    }
    // `kiln build` skips by default; =false builds every stage there too.
    let kiln = |extra: &[&str]| {
        let mut args = vec!["build", "--context", ctx, "--no-push", "--build-arg", &base];
        args.extend_from_slice(&["--target", "app"]);
        args.extend_from_slice(extra);
        world.kiln(&args)
    };
    common::assert_success(&kiln(&[]));
    assert!(!kiln(&["--skip-unused-stages=false"]).status.success());
}

#[test]
fn version_annotations_and_the_flags_of_kanikos_forks() {
    let world = World::new();
    let exec = Executor::new();
    let here = tempfile::tempdir().unwrap();
    for args in [&["version"][..], &["--version"][..]] {
        let out = exec.run(&world, here.path(), args, &[]);
        common::assert_success(&out);
        assert_eq!(
            stdout(&out),
            format!("kiln version :  v{}", env!("CARGO_PKG_VERSION"))
        );
    }
    let context = common::context("FROM scratch\nCOPY a.txt /\n", &[("a.txt", "a\n")]);
    let ctx = context.path().to_str().unwrap();
    let out = exec.run(
        &world,
        here.path(),
        &[
            "--context",
            ctx,
            "--no-push",
            "--oci-layout-path",
            "layout",
            "--annotation",
            "org.opencontainers.image.source=https://git.example/app",
            "--annotation=team=kiln",
            "--whitelist-var-run=false",
            "--pre-cleanup=true",
            "--credential-helpers=ecr",
            "--secret",
            "id=token,env=TOKEN",
        ],
        &[],
    );
    common::assert_success(&out);
    let err = stderr(&out);
    assert!(err.contains("--whitelist-var-run is deprecated"), "{err}");
    // `--credential-helpers` now chooses kiln's built-in providers: accepted without a word.
    assert!(!err.contains("credential-helpers"), "{err}");
    let manifest = common::read_manifest(&here.path().join("layout"));
    assert_eq!(manifest["annotations"]["team"], "kiln");
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.source"],
        "https://git.example/app"
    );
    // Bad values name their flag.
    for (args, flag) in [
        (&["--secret", "type=env"][..], "--secret"),
        (&["--git", "depth=1"][..], "--git"),
        (&["--git", "single-branch=perhaps"][..], "--git"),
        (&["--annotation", "novalue"][..], "--annotation"),
        (
            &["--digest-file", "https://example.invalid/d"][..],
            "--digest-file",
        ),
        (&["-b", "ftp://bucket/context.tar.gz"][..], "--bucket"),
    ] {
        let mut all = vec!["--context", ctx, "--no-push"];
        all.extend_from_slice(args);
        let out = exec.run(&world, here.path(), &all, &[]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(flag), "{flag}: {}", stderr(&out));
    }
}

#[test]
fn dockerfile_from_the_working_directory_then_the_context_or_a_url_and_bare_build_args() {
    let world = World::new();
    let exec = Executor::new();
    let context = common::context(
        "FROM scratch\nCOPY from-context.txt /\n",
        &[("from-context.txt", "context\n"), ("cwd.txt", "cwd\n")],
    );
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("Dockerfile"),
        "FROM scratch\nCOPY cwd.txt /\n",
    )
    .unwrap();
    let ctx = context.path().to_str().unwrap();
    let build = |args: &[&str], env: &[(&str, &str)]| -> (Output, PathBuf) {
        let layout = cwd.path().join(format!("layout-{}", rand_suffix()));
        let mut all = vec!["--context", ctx, "--no-push", "--oci-layout-path"];
        let l = layout.to_str().unwrap().to_owned();
        all.push(&l);
        all.extend_from_slice(args);
        (exec.run(&world, cwd.path(), &all, env), layout)
    };
    // kaniko's order: ./Dockerfile in the working directory wins over the context's.
    let (out, layout) = build(&[], &[]);
    common::assert_success(&out);
    assert_eq!(common::unpack(&layout).read("/cwd.txt"), "cwd\n");
    // A name only the context has is found there.
    std::fs::rename(
        context.path().join("Dockerfile"),
        context.path().join("Dockerfile.ctx"),
    )
    .unwrap();
    let (out, layout) = build(&["--dockerfile", "Dockerfile.ctx"], &[]);
    common::assert_success(&out);
    assert_eq!(
        common::unpack(&layout).read("/from-context.txt"),
        "context\n"
    );
    // An http(s) URL is fetched.
    let served = tempfile::tempdir().unwrap();
    std::fs::write(
        served.path().join("Dockerfile.web"),
        "FROM scratch\nARG NAME=default\nARG OTHER=kept\nCOPY <<EOF /args.txt\n[${NAME}] [${OTHER}]\nEOF\n",
    )
    .unwrap();
    let server = common::LocalServer::python(&[
        "-m".as_ref(),
        "http.server".as_ref(),
        "--bind".as_ref(),
        "127.0.0.1".as_ref(),
        "{port}".as_ref(),
        "--directory".as_ref(),
        served.path().as_os_str(),
    ]);
    let url = format!("http://127.0.0.1:{}/Dockerfile.web", server.port);
    // A bare --build-arg NAME unset in the environment is NAME="" (kaniko's rule).
    let (out, layout) = build(
        &[
            "-f",
            &url,
            "--build-arg",
            "NAME",
            "--build-arg",
            "KILN_TEST_UNSET_OTHER",
        ],
        &[],
    );
    common::assert_success(&out);
    assert_eq!(common::unpack(&layout).read("/args.txt"), "[] [kept]\n");
    let (out, layout) = build(
        &["-f", &url, "--build-arg", "NAME"],
        &[("NAME", "from-env")],
    );
    common::assert_success(&out);
    assert_eq!(
        common::unpack(&layout).read("/args.txt"),
        "[from-env] [kept]\n"
    );
    let (out, _) = build(&["-f", &format!("{url}.missing")], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--dockerfile"), "{}", stderr(&out));
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// Dockerfiles that build under BuildKit (dockerd 20.10's builder) and kaniko, with BuildKit's
/// results, on both backends.
#[test]
fn buildkit_semantics_that_kaniko_pipelines_rely_on() {
    let world = World::new();
    let tarball = common::owned_tar();
    let dockerfile = r#"# a licence header first
# escape=`
ARG BASE
FROM $BASE AS img
FROM $BASE AS parent
ARG FLAVOR=from-parent
ARG HIDDEN=parent-only
FROM parent AS child
ARG FLAVOR
RUN echo "$FLAVOR $HIDDEN" > /args.txt \
 && echo continued >> /args.txt
ARG EMPTY
WORKDIR /start
WORKDIR $EMPTY
RUN pwd > /pwd.txt
COPY --from=img /bin/busybox /from-image/busybox
COPY nomatch* only.txt /single
COPY srcdir/ /dest
ADD --chmod=777 srcdir /dest2
COPY --chown=7:8 only.txt ./newdir/
ADD --chown=9:9 owned.tar /owned/
VOLUME /vol
RUN echo in-volume > /vol/f
FROM scratch AS bare
COPY --from=child /bin/busybox /bin/busybox
USER root
WORKDIR /w
FROM child
COPY --from=bare /w /bare-w
"#;
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let context = common::context(
            dockerfile,
            &[("only.txt", "one\n"), ("srcdir/f", "in dir\n")],
        );
        std::fs::write(context.path().join("owned.tar"), &tarball).unwrap();
        std::fs::set_permissions(
            context.path().join("srcdir"),
            std::fs::Permissions::from_mode(0o775),
        )
        .unwrap();
        let built = world.build_in(context.path(), &[]);
        built.ok();
        let fs = built.unpack();
        let mode = |p: &str| fs.meta(p).permissions().mode() & 0o7777;
        let owner = |p: &str| (fs.meta(p).uid(), fs.meta(p).gid());
        // ARG without a value takes the parent stage's; undeclared ones still reach RUN; the
        // misplaced `# escape=` is a comment, so `\` continues lines.
        assert_eq!(fs.read("/args.txt"), "from-parent parent-only\ncontinued\n");
        // WORKDIR of an empty expansion keeps the directory.
        assert_eq!(fs.read("/pwd.txt"), "/start\n");
        // COPY --from an image of one layer (an overlay view needs two lower dirs).
        assert!(fs.meta("/from-image/busybox").is_file());
        // Sources counted after matching: one file, so the destination is that file.
        assert_eq!(fs.read("/single"), "one\n");
        // A directory's destination is made 0755 whatever the source's mode or --chmod.
        assert_eq!(mode("/dest"), 0o755);
        assert_eq!(fs.read("/dest/f"), "in dir\n");
        assert_eq!(mode("/dest2"), 0o755);
        assert_eq!(mode("/dest2/f"), 0o777);
        // The directory a --chown COPY creates belongs to that owner.
        assert_eq!(owner("/start/newdir"), (7, 8));
        assert_eq!(owner("/start/newdir/only.txt"), (7, 8));
        // ADD --chown keeps the owners an archive records for its entries.
        assert_eq!(owner("/owned/pkg/data.txt"), (7, 8));
        assert_eq!(fs.read("/owned/pkg/data.txt"), "packed\n");
        // VOLUME then RUN writing into it (kaniko and buildah make the directory).
        assert_eq!(fs.read("/vol/f"), "in-volume\n");
        // USER root then WORKDIR in a stage without /etc/passwd.
        assert!(fs.meta("/bare-w").is_dir());
        let config = built.config();
        assert_eq!(config["config"]["WorkingDir"], "/start");
    }
}

#[test]
fn a_ca_dropped_into_ssl_cert_dir_is_trusted_as_in_kanikos_image() {
    let registry = kiln_test::Registry::start(kiln_test::RegistryOptions::plain().tls()).unwrap();
    let host = registry.host();
    let certs = tempfile::tempdir().unwrap();
    // Any file name, as Go reads them (not only OpenSSL's hashed names).
    std::fs::copy(
        registry.ca_pem_path().unwrap(),
        certs.path().join("corporate-ca.crt"),
    )
    .unwrap();
    let context = common::context("FROM scratch\nCOPY a.txt /\n", &[("a.txt", "a\n")]);
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("config.json"), "{}").unwrap();
    let kiln_dir = tempfile::tempdir().unwrap();
    let push = |cert_dir: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["build", "--context"])
            .arg(context.path())
            .args(["--destination", &format!("{host}/team/ca:1")])
            .arg("--kiln-dir")
            .arg(kiln_dir.path())
            .env("DOCKER_CONFIG", config.path())
            .env_remove("SSL_CERT_DIR");
        if let Some(dir) = cert_dir {
            cmd.env("SSL_CERT_DIR", dir);
        }
        cmd.output().unwrap()
    };
    let refused = push(None);
    assert!(!refused.status.success(), "an unknown CA must be refused");
    common::assert_success(&push(Some(certs.path())));
}

/// A stage without RUN never unpacks its base, yet lands its files where BuildKit would: into a
/// directory the base has, through the base's symlinks.
#[test]
fn a_stage_without_run_reads_its_base_listing_without_unpacking_it() {
    let world = World::new();
    let dockerfile = "ARG BASE\nFROM $BASE\nWORKDIR /var/run/app\nCOPY f /var/run/app-file\n\
                      COPY g /base/dir\nCOPY f /base/link\nCOPY f ./here\n";
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let built = world.build(dockerfile, &[("f", "f\n"), ("g", "g\n")], &[]);
        built.ok();
        let fs = built.unpack();
        assert!(
            fs.meta("/var/run").file_type().is_symlink(),
            "the base's link stays"
        );
        assert!(fs.meta("/run/app").is_dir());
        assert_eq!(fs.read("/run/app-file"), "f\n");
        assert_eq!(fs.read("/run/app/here"), "f\n");
        assert_eq!(fs.read("/base/dir/g"), "g\n", "into the base's directory");
        assert_eq!(fs.read("/base/dir/a"), "a\n", "which keeps its files");
        // Written through the base's link to a file.
        assert!(fs.meta("/base/link").file_type().is_symlink());
        assert_eq!(fs.read("/base/file"), "f\n");
        assert_eq!(built.config()["config"]["WorkingDir"], "/var/run/app");
        // store/layers/<format>/<diff_id>: no format directory holds a layer.
        let unpacked = world.kiln_dir.path().join("store/layers");
        let count: usize = std::fs::read_dir(&unpacked).map_or(0, |formats| {
            formats
                .map(|f| std::fs::read_dir(f.unwrap().path()).map_or(0, |d| d.count()))
                .sum()
        });
        assert_eq!(
            count,
            0,
            "no base layer was unpacked ({})",
            unpacked.display()
        );
    }
}
