//! `kiln build` end to end: the real binary, a real registry with a busybox base image made
//! offline, and umoci/skopeo reading what kiln wrote. RUN steps need root (chroot backend).

mod common;

use common::{podman, World};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn run_copy_and_metadata_instructions_make_the_expected_image() {
    let world = World::new();
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let dockerfile = r#"ARG BASE
    FROM $BASE
    ENV GREETING=hello TARGET_DIR=/app
    WORKDIR $TARGET_DIR
    COPY hello.txt ./
    RUN echo "$GREETING from $(pwd)" > made.txt && id -u > /app/uid.txt
    USER app
    RUN id -un > /tmp/who.txt
    LABEL org.example.team=kiln
    EXPOSE 8080 53/udp
    ENTRYPOINT ["/bin/sh", "-c"]
    CMD ["cat /app/made.txt"]
    STOPSIGNAL SIGTERM
    "#;
        let built = world.build(dockerfile, &[("hello.txt", "hi there\n")], &[]);
        built.ok();
        let fs = built.unpack();
        assert_eq!(fs.read("/app/hello.txt"), "hi there\n");
        assert_eq!(fs.read("/app/made.txt"), "hello from /app\n");
        assert_eq!(fs.read("/app/uid.txt"), "0\n");
        assert_eq!(fs.read("/tmp/who.txt"), "app\n");
        assert_eq!(fs.meta("/app/hello.txt").uid(), 0);
        assert_eq!(fs.meta("/tmp").permissions().mode() & 0o7777, 0o1777);
        assert!(fs.exists("/bin/busybox"), "base layers are in the image");
        let config = built.config();
        let c = &config["config"];
        assert_eq!(c["WorkingDir"], "/app");
        assert_eq!(c["User"], "app");
        assert_eq!(c["Labels"]["org.example.team"], "kiln");
        assert!(c["ExposedPorts"]["8080/tcp"].is_object());
        assert!(c["ExposedPorts"]["53/udp"].is_object());
        assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
        assert_eq!(c["Cmd"], serde_json::json!(["cat /app/made.txt"]));
        assert_eq!(c["StopSignal"], "SIGTERM");
        let env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
        assert!(env.contains(&"GREETING=hello".to_string()));
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        let history = config["history"].as_array().unwrap();
        let layers = config["rootfs"]["diff_ids"].as_array().unwrap();
        let non_empty = history.iter().filter(|h| h["empty_layer"] != true).count();
        assert_eq!(non_empty, layers.len(), "one history entry per layer");
    }
}

#[test]
fn multi_stage_builds_copy_from_stages_by_name_and_index_and_skip_unused_ones() {
    let world = World::new();
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let dockerfile = r#"ARG BASE
    FROM $BASE AS one
    RUN mkdir -p /out && echo one > /out/one.txt
    FROM $BASE AS two
    RUN mkdir -p /out && echo two > /out/two.txt && ln /out/two.txt /out/two-link.txt
    FROM $BASE AS unused
    RUN exit 3
    FROM one AS derived
    RUN echo derived >> /out/one.txt
    FROM scratch
    COPY --from=derived /out/one.txt /one.txt
    COPY --from=1 /out/ /two/
    "#;
        let built = world.build(dockerfile, &[], &[]);
        built.ok();
        let fs = built.unpack();
        assert_eq!(fs.read("/one.txt"), "one\nderived\n");
        assert_eq!(fs.read("/two/two.txt"), "two\n");
        assert_eq!(
            fs.meta("/two/two.txt").ino(),
            fs.meta("/two/two-link.txt").ino(),
            "a hard link stays a hard link through COPY --from"
        );
        assert!(
            !fs.exists("/bin/busybox"),
            "scratch has only what was copied"
        );
        let config = built.config();
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        let env = config["config"]["Env"].as_array().unwrap();
        assert!(env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")));
    }
}

#[test]
fn target_picks_a_stage_and_stops_there() {
    let world = World::new();
    let dockerfile = "ARG BASE\nFROM $BASE AS first\nRUN echo first > /f\nFROM first\nRUN exit 1\n";
    let built = world.build(dockerfile, &[], &["--target", "first"]);
    built.ok();
    assert_eq!(built.unpack().read("/f"), "first\n");
}

#[test]
fn deletions_and_type_changes_become_whiteouts_that_other_tools_apply() {
    let world = World::new();
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let dockerfile = r#"ARG BASE
    FROM $BASE
    RUN rm /base/file && rm -r /base/dir \
     && rm -r /base/replace-me && echo now-a-file > /base/replace-me \
     && rm /base/link && mkdir /base/link \
     && echo f > /tmp/x && ln /tmp/x /tmp/y \
     && cp /bin/busybox /usr-bin-su && chmod 4755 /usr-bin-su \
     && echo pid > /var/run/app.pid
    "#;
        let built = world.build(dockerfile, &[], &[]);
        built.ok();
        let fs = built.unpack();
        assert!(!fs.exists("/base/file"));
        assert!(!fs.exists("/base/dir"));
        assert_eq!(fs.read("/base/replace-me"), "now-a-file\n");
        assert!(fs.meta("/base/link").is_dir());
        assert_eq!(fs.meta("/tmp/x").ino(), fs.meta("/tmp/y").ino());
        assert_eq!(fs.meta("/usr-bin-su").permissions().mode() & 0o7777, 0o4755);
        assert!(
            fs.meta("/var/run").file_type().is_symlink(),
            "/var/run stays a symlink"
        );
        assert_eq!(fs.read("/run/app.pid"), "pid\n");
    }
}

#[test]
fn copy_and_add_follow_docker_semantics() {
    let world = World::new();
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        // A tar.gz for ADD to unpack, made with busybox tar by a RUN of an earlier stage would
        // need a shell here; make it with the tar crate instead.
        let tarball = {
            let layer = common::owned_tar();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &layer).unwrap();
            gz.finish().unwrap()
        };
        let dockerfile = r#"ARG BASE
FROM $BASE
COPY *.txt /globbed/
COPY dir /contents
COPY dir /named/dir
COPY --chown=app:wheel --chmod=0750 script.sh /usr/local/bin/
COPY --chown=1234 one.txt /owned-by-1234
COPY one.txt /renamed.txt
ADD archive.tar.gz /unpacked/
ADD archive.tar.gz /kept/archive.tgz.dir/
COPY archive.tar.gz /copied/
ENV WHO=works
COPY <<EOF /inline.txt
inline ${WHO} ${BASE:-global-args-need-redeclaring}
EOF
"#;
        let context = common::context(
            dockerfile,
            &[
                ("one.txt", "1\n"),
                ("two.txt", "2\n"),
                ("dir/sub/deep.txt", "deep\n"),
                ("script.sh", "#!/bin/sh\necho hi\n"),
                ("ignored.txt", "secret\n"),
                (".dockerignore", "ignored.txt\n"),
            ],
        );
        std::fs::write(context.path().join("archive.tar.gz"), &tarball).unwrap();
        let built = world.build_in(context.path(), &[]);
        built.ok();
        let fs = built.unpack();
        assert_eq!(fs.read("/globbed/one.txt"), "1\n");
        assert_eq!(fs.read("/globbed/two.txt"), "2\n");
        assert!(
            !fs.exists("/globbed/ignored.txt"),
            ".dockerignore excludes it"
        );
        assert_eq!(fs.read("/contents/sub/deep.txt"), "deep\n");
        assert_eq!(fs.read("/named/dir/sub/deep.txt"), "deep\n");
        let script = fs.meta("/usr/local/bin/script.sh");
        assert_eq!((script.uid(), script.gid()), (1000, 10));
        assert_eq!(script.permissions().mode() & 0o7777, 0o750);
        let owned = fs.meta("/owned-by-1234");
        assert_eq!((owned.uid(), owned.gid()), (1234, 1234));
        assert_eq!(fs.read("/renamed.txt"), "1\n");
        assert_eq!(fs.read("/unpacked/pkg/data.txt"), "packed\n");
        let packed = fs.meta("/unpacked/pkg/data.txt");
        assert_eq!(
            (
                packed.uid(),
                packed.gid(),
                packed.permissions().mode() & 0o777
            ),
            (7, 8, 0o640)
        );
        assert_eq!(fs.read("/kept/archive.tgz.dir/pkg/data.txt"), "packed\n");
        assert!(
            fs.meta("/copied/archive.tar.gz").is_file(),
            "COPY never unpacks"
        );
        assert_eq!(
            fs.read("/inline.txt"),
            "inline works global-args-need-redeclaring\n"
        );
    }
}

#[test]
fn a_missing_copy_source_names_the_pattern_and_the_dockerignore() {
    let world = World::new();
    let built = world.build(
        "ARG BASE\nFROM $BASE\nCOPY secret.txt /\n",
        &[("secret.txt", "s"), (".dockerignore", "secret.txt\n")],
        &[],
    );
    let err = built.failure();
    assert!(err.contains("Dockerfile:3:1"), "{err}");
    assert!(err.contains("\"secret.txt\""), "{err}");
    assert!(err.contains("excluded by .dockerignore"), "{err}");
    assert!(!built.layout.exists(), "nothing is written");
}

#[test]
fn a_failing_run_names_the_line_command_status_and_output_and_writes_nothing() {
    let world = World::new();
    let built = world.build(
        "ARG BASE\nFROM $BASE AS builder\nRUN echo first-line && echo to-stderr >&2 && exit 7\n",
        &[],
        &[],
    );
    let err = built.failure();
    assert!(err.contains("Dockerfile:3:1"), "{err}");
    assert!(err.contains("stage builder"), "{err}");
    assert!(err.contains("exited with status 7"), "{err}");
    assert!(
        err.contains("| to-stderr"),
        "the output's tail is shown: {err}"
    );
    assert!(!built.layout.exists());
}

#[test]
fn run_security_insecure_is_refused_with_the_line() {
    let world = World::new();
    let built = world.build(
        "ARG BASE\nFROM $BASE\nRUN --security=insecure true\n",
        &[],
        &[],
    );
    let err = built.failure();
    assert!(
        err.contains("Dockerfile:3:1") && err.contains("RUN --security=insecure"),
        "{err}"
    );
    assert!(err.contains("not supported yet"), "{err}");
}

#[test]
fn entrypoint_resets_an_inherited_cmd_and_onbuild_triggers_run_in_children() {
    let world = World::new();
    // A parent image with ONBUILD triggers, built by kiln and pushed.
    let parent = common::context(
        "ARG BASE\nFROM $BASE\nONBUILD RUN echo triggered > /onbuild.txt\nONBUILD COPY child.txt /\nCMD [\"parent-cmd\"]\n",
        &[],
    );
    let dest = format!("{}/parent:1", world.registry.host());
    let base_arg = format!("BASE={}", world.base);
    let out = world.kiln(&[
        "build",
        "-c",
        parent.path().to_str().unwrap(),
        "-d",
        &dest,
        "--build-arg",
        &base_arg,
    ]);
    common::assert_success(&out);
    let child = world.build(
        &format!("FROM {dest}\nENTRYPOINT [\"/bin/sh\"]\n"),
        &[("child.txt", "from the child context\n")],
        &[],
    );
    child.ok();
    let fs = child.unpack();
    assert_eq!(fs.read("/onbuild.txt"), "triggered\n");
    assert_eq!(fs.read("/child.txt"), "from the child context\n");
    let config = child.config();
    assert!(
        config["config"]["Cmd"].is_null(),
        "ENTRYPOINT resets the parent's CMD"
    );
    assert!(
        config["config"]["OnBuild"].is_null(),
        "triggers are not inherited"
    );
}

#[test]
fn pushes_over_tls_with_basic_auth_and_writes_the_digest_files() {
    use kiln_test::{BaseImage, ManifestFormat, PushOptions, Registry, RegistryOptions};
    const USER: &str = "builder";
    const PASSWORD: &str = "pa55-never-printed";
    let registry =
        Registry::start(RegistryOptions::plain().tls().htpasswd(USER, PASSWORD)).unwrap();
    let cert_dir = registry.cert_dir().unwrap().to_owned();
    BaseImage::busybox()
        .unwrap()
        .push(
            &registry,
            "library/busybox:1",
            &PushOptions::new(ManifestFormat::V2s2)
                .creds(USER, PASSWORD)
                .cert_dir(&cert_dir),
        )
        .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    kiln_test::write_docker_config(config_dir.path(), &registry.host(), USER, PASSWORD).unwrap();
    let host = registry.host();
    let context = common::context(
        &format!("FROM {host}/library/busybox:1\nCOPY app.txt /\nCMD [\"cat\", \"/app.txt\"]\n"),
        &[("app.txt", "pushed\n")],
    );
    let work = tempfile::tempdir().unwrap();
    let kiln_dir = work.path().join("kiln");
    let digest_file = work.path().join("digest");
    let names_file = work.path().join("names");
    let tags_file = work.path().join("names-tags");
    let ca = format!("{host}={}", registry.ca_pem_path().unwrap().display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--context"])
        .arg(context.path())
        .args(["--destination", &format!("{host}/team/app:v1")])
        .args(["--destination", &format!("{host}/team/app:latest")])
        .args(["--registry-certificate", &ca])
        .arg("--kiln-dir")
        .arg(&kiln_dir)
        .arg("--digest-file")
        .arg(&digest_file)
        .arg("--image-name-with-digest-file")
        .arg(&names_file)
        .arg("--image-name-tag-with-digest-file")
        .arg(&tags_file)
        .args(["--verbosity", "trace"])
        .env("DOCKER_CONFIG", config_dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // At trace: every registry request and the snapshot decisions are shown, the credentials
    // in no form.
    assert!(
        stderr.contains(&format!(
            "debug: GET https://{host}/v2/library/busybox/manifests/1 -> 200 OK (authorized)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("-> 201 Created (authorized)"), "{stderr}");
    assert!(
        stderr.contains("debug: Dockerfile:2:1: snapshot"),
        "{stderr}"
    );
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{USER}:{PASSWORD}"),
    );
    for secret in [PASSWORD, basic.as_str()] {
        assert!(!stderr.contains(secret), "{secret} leaked: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    }
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap(), digest);
    // kaniko's formats: a line per destination.
    assert_eq!(
        std::fs::read_to_string(&names_file).unwrap(),
        format!("{host}/team/app@{digest}\n{host}/team/app@{digest}\n")
    );
    assert_eq!(
        std::fs::read_to_string(&tags_file).unwrap(),
        format!("{host}/team/app:v1@{digest}\n{host}/team/app:latest@{digest}\n")
    );
    // An independent client reads what was pushed and unpacks it.
    let oci = work.path().join("copied");
    for tag in ["v1", "latest"] {
        let v =
            common::inspect_remote(&format!("{host}/team/app:{tag}"), &cert_dir, USER, PASSWORD);
        assert_eq!(v["Digest"], digest.as_str());
    }
    kiln_test::skopeo_checked([
        "copy".to_string(),
        format!("--src-cert-dir={}", cert_dir.display()),
        format!("--src-creds={USER}:{PASSWORD}"),
        format!("docker://{host}/team/app:v1"),
        format!("oci:{}:v1", oci.display()),
    ])
    .unwrap();
    let fs = common::unpack(&oci);
    assert_eq!(fs.read("/app.txt"), "pushed\n");
    assert!(fs.meta("/bin/busybox").is_file());
    // Only COPY on top of the base, to a destination that is a directory whatever the base
    // has: its layers were mounted or skipped, never downloaded.
    let base_layer_blobs = std::fs::read_dir(kiln_dir.join("store/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(
        base_layer_blobs, 2,
        "only kiln's layer and config are stored"
    );
}

#[test]
fn a_destination_without_credentials_fails_before_the_build() {
    use kiln_test::{Registry, RegistryOptions};
    let registry = Registry::start(RegistryOptions::plain().htpasswd("u", "p")).unwrap();
    let world = World::new();
    let context = common::context("ARG BASE\nFROM $BASE\nRUN touch /never\n", &[]);
    let dest = format!("{}/team/app:v1", registry.host());
    let base_arg = format!("BASE={}", world.base);
    let reg_host = registry.host();
    let out = world.kiln(&[
        "build",
        "-c",
        context.path().to_str().unwrap(),
        "-d",
        &dest,
        "--build-arg",
        &base_arg,
        "--insecure-registry",
        &reg_host,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checking push access"), "{err}");
    assert!(err.contains(&reg_host), "{err}");
    assert!(!err.contains("STEP"), "no build work started: {err}");
}

#[test]
fn reproducible_builds_give_the_same_digest_and_a_docker_archive_skopeo_reads() {
    let world = World::new();
    let dockerfile = "ARG BASE\nFROM $BASE\nCOPY a.txt /\nRUN echo built > /b.txt\n";
    let mut digests = Vec::new();
    let out = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let context = common::context(dockerfile, &[("a.txt", "a\n")]);
        let tar = out.path().join(format!("image-{round}.tar"));
        let base_arg = format!("BASE={}", world.base);
        let output = world.kiln(&[
            "build",
            "-c",
            context.path().to_str().unwrap(),
            "--no-push",
            "--reproducible",
            "--tar-path",
            tar.to_str().unwrap(),
            "--build-arg",
            &base_arg,
            "--destination",
            "example.com/app:1",
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        digests.push(String::from_utf8_lossy(&output.stdout).trim().to_owned());
        let inspected = kiln_test::skopeo_checked([
            "inspect".to_string(),
            format!("docker-archive:{}", tar.display()),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        assert_eq!(v["Created"], "1970-01-01T00:00:00Z");
        assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(digests[0], digests[1], "same inputs, same digest");
}

#[test]
fn the_binary_named_executor_is_kiln_build() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let executor = dir.path().join("executor");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), &executor).unwrap();
    let context = common::context("ARG BASE\nFROM $BASE\nRUN echo ok > /ok\n", &[]);
    let tar = dir.path().join("image.tar");
    let base_arg = format!("BASE={}", world.base);
    let host = world.registry.host();
    let out = std::process::Command::new(&executor)
        .args(["--context", context.path().to_str().unwrap()])
        .args(["--no-push", "--tarPath", tar.to_str().unwrap()])
        .args(["--build-arg", &base_arg, "--insecure-registry", &host])
        .arg("--kaniko-dir")
        .arg(world.kiln_dir.path())
        .args(["--snapshot-mode=redo"])
        .env("DOCKER_CONFIG", world.docker_config.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--tarPath is deprecated"), "{err}");
    assert!(
        err.contains("--snapshot-mode is accepted for kaniko compatibility and ignored"),
        "{err}"
    );
    assert!(tar.is_file());
}

#[test]
fn the_image_runs_under_podman_with_its_cmd_entrypoint_user_workdir_and_env() {
    let world = World::new();
    let context = common::context(
        r#"ARG BASE
FROM $BASE
ENV GREETING="hello from kiln"
WORKDIR /srv/app
RUN echo data > data.txt && chown app data.txt
USER app
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo \"$GREETING\"; pwd; id -un; cat data.txt"]
"#,
        &[],
    );
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("image.tar");
    let base_arg = format!("BASE={}", world.base);
    let out = world.kiln(&[
        "build",
        "-c",
        context.path().to_str().unwrap(),
        "--no-push",
        "--tar-path",
        tar.to_str().unwrap(),
        "-d",
        "localhost/kiln-run-test:1",
        "--build-arg",
        &base_arg,
    ]);
    common::assert_success(&out);
    let loaded = podman(work.path(), &["load", "-i", tar.to_str().unwrap()]);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let run = [
        &["run", "--rm"][..],
        &common::PODMAN_RUN_LIMITS,
        &["localhost/kiln-run-test:1"],
    ]
    .concat();
    let ran = podman(work.path(), &run);
    let _ = podman(work.path(), &["rmi", "-a", "-f"]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout),
        "hello from kiln\n/srv/app\napp\ndata\n"
    );
}

#[test]
fn file_capabilities_and_xattrs_survive_copy_from_and_run() {
    // cap_net_raw+ep, VFS capability v2.
    const CAP: [u8; 20] = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let world = World::new();
    let layer = kiln_test::LayerTar::new()
        .dir("caps", 0o755, (0, 0))
        .unwrap()
        .file_with_xattrs(
            "caps/ping",
            0o755,
            b"not really ping\n",
            &[
                ("security.capability", &CAP[..]),
                ("user.kiln.note", b"kept"),
            ],
        )
        .unwrap()
        .finish()
        .unwrap();
    let base = kiln_test::BaseImage::build(
        vec![kiln_test::busybox_layer().unwrap(), layer],
        serde_json::json!({"Env": ["PATH=/bin"]}),
    )
    .unwrap();
    let with_caps = world.push_base(&base, "with-caps:1");
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let built = world.build(
            &format!(
                "FROM {with_caps} AS source\nRUN echo touched > /caps/other\nFROM scratch\nCOPY --from=source /caps/ /copied/\n"
            ),
            &[],
            &[],
        );
        built.ok();
        let fs = built.unpack();
        let copied = fs.rootfs().join("copied/ping");
        assert_eq!(
            xattr::get(&copied, "security.capability")
                .unwrap()
                .as_deref(),
            Some(&CAP[..]),
            "{backend}: the file capability is kept"
        );
        assert_eq!(
            xattr::get(&copied, "user.kiln.note").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(fs.read("/copied/other"), "touched\n");
    }
}

#[test]
fn add_of_a_url_downloads_with_checksum_and_run_heredocs_and_home_behave() {
    let world = World::new();
    // Any HTTP server will do: the registry serves blobs by URL without auth.
    let layer = world.base_layer();
    let url = format!("http://{}/v2/busybox/blobs/{layer}", world.registry.host());
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\nADD --checksum={layer} {url} /downloads/\nADD {url} /named.bin\n\
         USER app\nRUN echo \"$HOME\" > /tmp/home && id > /tmp/id\nUSER root\n\
         RUN <<EOT\nset -e\necho from a heredoc > /heredoc.txt\nEOT\n\
         RUN <<'EOT'\n#!/bin/sh\necho \"script $0\" > /script.txt\nEOT\n"
    );
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let built = world.build(&dockerfile, &[], &[]);
        built.ok();
        let fs = built.unpack();
        let downloaded = fs.meta(&format!("/downloads/{layer}"));
        assert_eq!(downloaded.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs.meta("/named.bin").len(), downloaded.len());
        assert_eq!(fs.read("/tmp/home"), "/home/app\n");
        assert!(
            fs.read("/tmp/id").contains("groups=10(wheel),1000(app)"),
            "{}",
            fs.read("/tmp/id")
        );
        assert_eq!(fs.read("/heredoc.txt"), "from a heredoc\n");
        assert!(fs
            .read("/script.txt")
            .starts_with("script /dev/shm/kiln-heredoc."));
    }
    let wrong = format!(
        "ARG BASE\nFROM $BASE\nADD --checksum=sha256:{} {url} /x\n",
        "0".repeat(64)
    );
    let built = world.build(&wrong, &[], &[]);
    let err = built.failure();
    assert!(
        err.contains("Dockerfile:3:1") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn a_terminal_gets_a_live_status_line_and_a_pipe_gets_plain_lines() {
    let world = World::new();
    let context = common::context("ARG BASE\nFROM $BASE\nRUN sleep 1 && echo slept\n", &[]);
    let work = tempfile::tempdir().unwrap();
    let command = format!(
        "{} build -c {} --no-push --tar-path {} --build-arg BASE={} --insecure-registry {} --kiln-dir {}",
        env!("CARGO_BIN_EXE_kiln"),
        context.path().display(),
        work.path().join("image.tar").display(),
        world.base,
        world.registry.host(),
        world.kiln_dir.path().display()
    );
    // `script` gives kiln a pseudo-terminal.
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("DOCKER_CONFIG", world.docker_config.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // An indicatif spinner for the running step, drawn with escape sequences.
    assert!(
        text.contains("[1/1] RUN sleep 1 && echo slept (") && text.contains("\x1b["),
        "{text:?}"
    );
    assert!(text.contains("slept"));
    // Through a pipe: lines only, no escape sequences.
    let piped = world.build("ARG BASE\nFROM $BASE\nRUN echo plain\n", &[], &[]);
    piped.ok();
    assert!(!piped.stderr().contains('\x1b'), "{:?}", piped.stderr());
    assert!(piped.stderr().contains("[1/1] STEP 1/1: RUN echo plain  ("));
}

#[test]
fn contexts_from_a_tarball_url_stdin_and_a_sub_path() {
    let world = World::new();
    let layer = world.base_layer();
    // The busybox layer is a tar.gz of a rootfs: a fine context.
    let url = format!("http://{}/v2/busybox/blobs/{layer}", world.registry.host());
    let work = tempfile::tempdir().unwrap();
    let dockerfile = work.path().join("Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\nCOPY passwd group /etc/\n").unwrap();
    let layout = work.path().join("from-url");
    let out = world.kiln(&[
        "build",
        "--context",
        &url,
        "--context-sub-path",
        "etc",
        "--dockerfile",
        dockerfile.to_str().unwrap(),
        "--no-push",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    common::assert_success(&out);
    let fs = common::unpack(&layout);
    assert_eq!(fs.read("/etc/passwd"), kiln_test::PASSWD);
    assert_eq!(fs.read("/etc/group"), kiln_test::GROUP);
    // The same tarball on stdin.
    let blob = kiln_test::http_get(
        world.registry.addr(),
        &format!("/v2/busybox/blobs/{layer}"),
        &[],
    )
    .unwrap();
    assert_eq!(blob.status, 200);
    let layout = work.path().join("from-stdin");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "build",
            "--context",
            "tar://stdin",
            "--context-sub-path",
            "etc",
            "--no-push",
        ])
        .arg("--dockerfile")
        .arg(&dockerfile)
        .arg("--oci-layout-path")
        .arg(&layout)
        .arg("--kiln-dir")
        .arg(world.kiln_dir.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &blob.body).unwrap();
    let out = child.wait_with_output().unwrap();
    common::assert_success(&out);
    assert_eq!(
        common::unpack(&layout).read("/etc/passwd"),
        kiln_test::PASSWD
    );
    // An az:// context is refused clearly, pointing at the https form (and nothing is
    // fetched); s3://, gs:// and Azure Blob URLs are tested in cloud.rs.
    let out = world.kiln(&[
        "build",
        "--context",
        "az://container/context.tar.gz",
        "--no-push",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("az://") && err.contains("blob.core.windows.net"),
        "{err}"
    );
}

#[test]
fn build_flags_shape_the_image() {
    let world = World::new();
    let dockerfile = r#"ARG BASE
FROM $BASE
MAINTAINER kiln tests
SHELL ["/bin/sh", "-ec"]
RUN mkdir -p /var/cache/app && echo junk > /var/cache/app/junk && echo kept > /kept
COPY --parents src/./a/one.txt src/./b/two.txt /tree/
COPY --exclude=*.log logs/ /logs/
VOLUME /data
HEALTHCHECK --interval=30s --retries=2 CMD wget -q localhost || exit 1
CMD echo shell-form
"#;
    let files = [
        ("src/a/one.txt", "1"),
        ("src/b/two.txt", "2"),
        ("logs/keep.txt", "k"),
        ("logs/drop.log", "d"),
    ];
    let built = world.build(
        dockerfile,
        &files,
        &[
            "--label",
            "org.example.flag=yes",
            "--image-format",
            "oci",
            "--single-snapshot",
            "--ignore-path",
            "/var/cache",
            "--custom-platform",
            "linux/amd64",
            "--log-format",
            "json",
        ],
    );
    built.ok();
    for line in built.stderr().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["msg"].is_string());
    }
    let manifest = common::read_manifest(&built.layout);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the base layer and one snapshot");
    assert_eq!(
        layers[1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = built.config();
    let c = &config["config"];
    assert_eq!(c["Labels"]["org.example.flag"], "yes");
    assert_eq!(config["author"], "kiln tests");
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/sh", "-ec", "echo shell-form"])
    );
    assert!(c["Volumes"]["/data"].is_object());
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(c["Healthcheck"]["Retries"], 2);
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q localhost || exit 1"])
    );
    let fs = built.unpack();
    assert_eq!(fs.read("/kept"), "kept\n");
    assert!(
        !fs.exists("/var/cache/app/junk"),
        "--ignore-path keeps it out of the layer"
    );
    assert_eq!(fs.read("/tree/a/one.txt"), "1");
    assert_eq!(fs.read("/tree/b/two.txt"), "2");
    assert_eq!(fs.read("/logs/keep.txt"), "k");
    assert!(!fs.exists("/logs/drop.log"), "--exclude");
}

#[test]
fn another_platform_builds_without_run_and_refuses_run_clearly() {
    let world = World::new();
    let built = world.build(
        "FROM scratch\nCOPY a.txt /\n",
        &[("a.txt", "a")],
        &["--custom-platform", "linux/arm64"],
    );
    built.ok();
    let config = built.config();
    assert_eq!(config["architecture"], "arm64");
    let refused = world.build(
        "FROM scratch\nCOPY a.txt /\nRUN true\n",
        &[("a.txt", "a")],
        &["--custom-platform", "linux/arm64"],
    );
    let err = refused.failure();
    assert!(
        err.contains("Dockerfile:3:1") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn add_unpacks_bzip2_xz_and_zstd_archives_by_content() {
    let world = World::new();
    let tar = kiln_test::LayerTar::new()
        .file("inside.txt", 0o644, (0, 0), b"unpacked\n")
        .unwrap()
        .finish()
        .unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    std::io::Write::write_all(&mut bz, &tar).unwrap();
    let bz = bz.finish().unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    std::io::Write::write_all(&mut xz, &tar).unwrap();
    let xz = xz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let context = common::context(
        "ARG BASE\nFROM $BASE\nADD a.bz2 /bz/\nADD b.data /xz/\nADD c /zst/\nADD --unpack=false c /kept/\n",
        &[],
    );
    std::fs::write(context.path().join("a.bz2"), &bz).unwrap();
    std::fs::write(context.path().join("b.data"), &xz).unwrap();
    std::fs::write(context.path().join("c"), &zst).unwrap();
    let built = world.build_in(context.path(), &[]);
    built.ok();
    let fs = built.unpack();
    for dir in ["bz", "xz", "zst"] {
        assert_eq!(
            fs.read(&format!("/{dir}/inside.txt")),
            "unpacked\n",
            "{dir}"
        );
    }
    assert!(
        fs.meta("/kept/c").is_file(),
        "--unpack=false keeps the archive"
    );
}

#[test]
fn zstd_layers_in_an_oci_image_are_read_by_skopeo() {
    let world = World::new();
    let built = world.build(
        "ARG BASE\nFROM $BASE\nRUN echo squeezed > /z.txt\n",
        &[],
        &[
            "--image-format",
            "oci",
            "--compression",
            "zstd",
            "--compression-level",
            "9",
        ],
    );
    built.ok();
    let manifest = common::read_manifest(&built.layout);
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    // umoci reads no zstd: skopeo decompresses and recompresses it as gzip, verifying digests.
    let gz = tempfile::tempdir().unwrap();
    kiln_test::skopeo_checked([
        "copy".to_string(),
        "--dest-compress-format".to_string(),
        "gzip".to_string(),
        format!("oci:{}:latest", built.layout.display()),
        format!("oci:{}:latest", gz.path().display()),
    ])
    .unwrap();
    assert_eq!(common::unpack(gz.path()).read("/z.txt"), "squeezed\n");
    // With the default Docker format, kaniko keeps gzip layers: so does kiln, and says why;
    // kaniko's default level -1 means the default level.
    let docker = world.build(
        "ARG BASE\nFROM $BASE\nRUN echo kept > /z.txt\n",
        &[],
        &["--compression=zstd", "--compression-level=-1"],
    );
    docker.ok();
    assert!(
        docker.stderr().contains("--image-format oci"),
        "{}",
        docker.stderr()
    );
    let manifest = common::read_manifest(&docker.layout);
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(common::unpack(&docker.layout).read("/z.txt"), "kept\n");
}

#[test]
fn without_cap_sys_admin_kiln_builds_chrooted_without_namespaces() {
    // A plain Kubernetes pod: root without CAP_SYS_ADMIN (setpriv drops it from the bounding
    // set, so kiln runs without it).
    let world = World::new();
    let context = common::context(
        "ARG BASE\nFROM $BASE\nRUN echo hi > /dev/null && rm -r /base/dir && echo made > /made && cat /etc/resolv.conf > /dev/null\n",
        &[],
    );
    let out_dir = tempfile::tempdir().unwrap();
    let layout = out_dir.path().join("layout");
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--no-push", "-c"])
        .arg(context.path())
        .arg("--oci-layout-path")
        .arg(&layout)
        .args(["--build-arg", &format!("BASE={}", world.base)])
        .args(["--insecure-registry", &world.registry.host()])
        .arg("--kiln-dir")
        .arg(world.kiln_dir.path())
        .env("DOCKER_CONFIG", world.docker_config.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("RUN isolation: chroot without namespaces"),
        "{err}"
    );
    let fs = common::unpack(&layout);
    assert_eq!(fs.read("/made"), "made\n");
    assert!(!fs.exists("/base/dir"));
    assert!(
        !fs.exists("/dev"),
        "kiln's /dev nodes stay out of the layer"
    );
    assert!(!fs.exists("/etc/resolv.conf"));
}

#[test]
fn a_malformed_config_json_stops_kiln_before_any_build_work_and_names_the_file() {
    let world = World::new();
    std::fs::write(
        world.docker_config.path().join("config.json"),
        "{\"auths\": {oops",
    )
    .unwrap();
    let built = world.build("ARG BASE\nFROM $BASE\nRUN touch /x\n", &[], &[]);
    let err = built.failure();
    assert!(err.contains("config.json"), "{err}");
    assert!(!err.contains("STEP"), "no build work: {err}");
}

#[test]
fn a_base_image_that_does_not_exist_is_a_clear_error_with_the_line() {
    let world = World::new();
    let missing = format!("{}/nothing/here:1", world.registry.host());
    let built = world.build(
        &format!("FROM scratch AS a\nFROM {missing}\nRUN true\n"),
        &[],
        &[],
    );
    let err = built.failure();
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(
        err.contains(&missing) || err.contains("nothing/here"),
        "{err}"
    );
    assert!(
        err.contains("404") || err.contains("MANIFEST_UNKNOWN") || err.contains("unknown"),
        "{err}"
    );
    assert!(!err.contains("STEP"), "{err}");
}

/// A git repository served over git's smart HTTP protocol (`git http-backend` behind
/// `tests/common/git_http_server.py`), stopped on drop.
struct GitServer {
    _server: common::LocalServer,
    url: String,
    _dir: tempfile::TempDir,
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn git_server() -> GitServer {
    git_server_with(None, None)
}

/// [`git_server`] requiring HTTP basic auth with `token` as the user name (kaniko's GIT_TOKEN),
/// over HTTPS with `tls` (certificate and key files).
fn git_server_with(
    token: Option<&str>,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> GitServer {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("sub")).unwrap();
    std::fs::write(
        work.join("sub/Dockerfile"),
        "FROM scratch\nCOPY hello.txt /from-git/\n",
    )
    .unwrap();
    std::fs::write(work.join("sub/hello.txt"), "v1 of the repo\n").unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "v1"]);
    git(&work, &["tag", "v1"]);
    std::fs::write(work.join("sub/hello.txt"), "v2 of the repo\n").unwrap();
    git(&work, &["commit", "-q", "-am", "v2"]);
    let bare = dir.path().join("srv/repo.git");
    let out = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&work)
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success());
    let srv = dir.path().join("srv");
    let (cert, key) = tls.unzip();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/common/git_http_server.py"
        )
        .as_ref(),
        srv.as_os_str(),
        "{port}".as_ref(),
        token.unwrap_or("").as_ref(),
    ];
    args.extend(cert.into_iter().chain(key).map(|p| p.as_os_str()));
    let server = common::LocalServer::python(&args);
    GitServer {
        url: format!(
            "{}://127.0.0.1:{}/repo.git",
            if tls.is_some() { "https" } else { "http" },
            server.port
        ),
        _server: server,
        _dir: dir,
    }
}

#[test]
fn git_repositories_as_contexts_and_add_sources() {
    let world = World::new();
    let server = git_server();
    let work = tempfile::tempdir().unwrap();
    // The context at a ref, in a sub-directory (BuildKit's `#ref:subdir`).
    let layout = work.path().join("ctx");
    let out = world.kiln(&[
        "build",
        "--context",
        &format!("{}#v1:sub", server.url),
        "--no-push",
        "--oci-layout-path",
        layout.to_str().unwrap(),
    ]);
    common::assert_success(&out);
    assert_eq!(
        common::unpack(&layout).read("/from-git/hello.txt"),
        "v1 of the repo\n"
    );
    // ADD of the repository at its main branch, without .git unless asked.
    let built = world.build(
        &format!(
            "FROM scratch\nADD {0}#main /src\nADD --keep-git-dir=true {0}#v1 /with-git\n",
            server.url
        ),
        &[],
        &[],
    );
    built.ok();
    let fs = built.unpack();
    assert_eq!(fs.read("/src/sub/hello.txt"), "v2 of the repo\n");
    assert!(!fs.exists("/src/.git"));
    assert_eq!(fs.read("/with-git/sub/hello.txt"), "v1 of the repo\n");
    assert!(fs.exists("/with-git/.git/HEAD"));
    // A ref that does not exist is a clear error.
    let out = world.kiln(&[
        "build",
        "--context",
        &format!("{}#nope", server.url),
        "--no-push",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("git"), "{err}");
    // kaniko's form: git://, plain http by GIT_PULL_METHOD, the branch from --git (over the
    // URL's ref), credentials from GIT_TOKEN that no message shows.
    let kaniko_url = server.url.replace("http://", "git://");
    let git_build = |git_args: &[&str]| {
        let layout = work.path().join(format!("kaniko-{}", git_args.len()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "--context", &format!("{kaniko_url}#main")])
            .args([
                "--context-sub-path",
                "sub",
                "--no-push",
                "--oci-layout-path",
            ])
            .arg(&layout)
            .args(git_args)
            .arg("--kiln-dir")
            .arg(world.kiln_dir.path())
            .env("DOCKER_CONFIG", world.docker_config.path())
            .env("GIT_PULL_METHOD", "http")
            .env("GIT_TOKEN", "s3cr3t-git-token")
            .output()
            .unwrap();
        (out, layout)
    };
    let (out, layout) = git_build(&["--git", "branch=v1", "--git=single-branch=true"]);
    common::assert_success(&out);
    assert_eq!(
        common::unpack(&layout).read("/from-git/hello.txt"),
        "v1 of the repo\n"
    );
    let (out, _) = git_build(&["--git", "branch=no-such-branch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no-such-branch"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-git-token"), "{err}");
}

#[test]
fn a_private_git_context_is_cloned_with_kanikos_git_token_and_without_a_git_command() {
    let world = World::new();
    let work = tempfile::tempdir().unwrap();
    let ca = kiln_test::TestCa::new("git test CA").unwrap();
    let issued = ca.issue_loopback_server().unwrap();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    // The CA as a private CA is added in kaniko's image: a file in SSL_CERT_DIR.
    let cas = work.path().join("cas");
    std::fs::create_dir(&cas).unwrap();
    std::fs::write(cas.join("corporate.pem"), ca.cert_pem()).unwrap();
    let server = git_server_with(Some("s3cr3t-git-token"), Some((&cert, &key)));
    // No `git` on PATH, as in kiln's images: the clone is kiln's own.
    let no_git = work.path().join("bin");
    std::fs::create_dir(&no_git).unwrap();
    let clone = |name: &str, env: &[(&str, &std::path::Path)], token: bool, extra: &[&str]| {
        let layout = work.path().join(name);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["build", "--context", &format!("{}#v1:sub", server.url)])
            .args(["--no-push", "--oci-layout-path"])
            .arg(&layout)
            .args(extra)
            .arg("--kiln-dir")
            .arg(world.kiln_dir.path())
            .env("DOCKER_CONFIG", world.docker_config.path())
            .env("PATH", &no_git)
            .env_remove("SSL_CERT_DIR")
            .env_remove("GIT_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        if token {
            cmd.env("GIT_TOKEN", "s3cr3t-git-token");
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            layout,
        )
    };
    // Without the token: refused, and the error names the repository.
    let (ok, err, _) = clone("no-token", &[("SSL_CERT_DIR", &cas)], false, &[]);
    assert!(!ok && err.contains(&server.url), "{err}");
    // An unknown CA is refused; trusted from SSL_CERT_DIR, or skipped with kaniko's option.
    let (ok, err, _) = clone("unknown-ca", &[], true, &[]);
    assert!(!ok, "{err}");
    for (name, env, extra) in [
        ("trusted", &[("SSL_CERT_DIR", cas.as_path())][..], &[][..]),
        ("skipped", &[][..], &["--git", "insecure-skip-tls=true"][..]),
    ] {
        let (ok, err, layout) = clone(name, env, true, extra);
        assert!(ok, "{name}: {err}");
        assert!(!err.contains("s3cr3t-git-token"), "{err}");
        assert_eq!(
            common::unpack(&layout).read("/from-git/hello.txt"),
            "v1 of the repo\n"
        );
    }
    // kaniko's other form: GIT_USERNAME and GIT_PASSWORD.
    let user = std::path::Path::new("s3cr3t-git-token");
    let password = std::path::Path::new("an-unused-password");
    let (ok, err, _) = clone(
        "user-password",
        &[
            ("SSL_CERT_DIR", cas.as_path()),
            ("GIT_USERNAME", user),
            ("GIT_PASSWORD", password),
        ],
        false,
        &[],
    );
    assert!(ok, "{err}");
    assert!(!err.contains("an-unused-password"), "{err}");
    // Submodules need the git command, which this PATH (like kiln's images) lacks: said so.
    let (ok, err, _) = clone(
        "submodules",
        &[("SSL_CERT_DIR", cas.as_path())],
        true,
        &["--git", "recurse-submodules=true"],
    );
    assert!(!ok && err.contains("needs the git command"), "{err}");
}

#[test]
fn verbosity_and_timestamps_shape_the_log() {
    let world = World::new();
    let quiet = world.build(
        "ARG BASE\nFROM $BASE\nRUN echo said\n",
        &[],
        &["--verbosity", "warn"],
    );
    quiet.ok();
    assert!(!quiet.stderr().contains("STEP"), "{}", quiet.stderr());
    assert!(
        quiet.stderr().contains("said"),
        "RUN output still shows at warn"
    );
    let silent = world.build(
        "ARG BASE\nFROM $BASE\nRUN echo said\n",
        &[],
        &["-v", "error"],
    );
    silent.ok();
    assert!(!silent.stderr().contains("said") && !silent.stderr().contains("STEP"));
    let stamped = world.build(
        "ARG BASE\nFROM $BASE\nRUN true\n",
        &[],
        &["--log-timestamp"],
    );
    stamped.ok();
    let step = stamped
        .stderr()
        .lines()
        .find(|l| l.contains("STEP 1/1"))
        .unwrap_or_default()
        .to_owned();
    // `2026-11-27T12:00:00Z [1/1] STEP 1/1: …`
    assert!(
        step.len() > 21 && step.as_bytes()[4] == b'-' && step[..21].ends_with("Z "),
        "{step}"
    );
}

#[test]
fn step_lines_give_each_snapshot_its_cost_and_the_layer_sizes() {
    let world = World::new();
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let dockerfile = r#"ARG BASE
FROM $BASE
RUN head -c 100000 /dev/zero > /zeros
RUN true
ENV A=1
COPY one.txt /one.txt
"#;
        let built = world.build(dockerfile, &[("one.txt", "1")], &["--log-format", "json"]);
        built.ok();
        let done: Vec<serde_json::Value> = built
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "step-done")
            .collect();
        assert_eq!(done.len(), 4, "{backend}: {}", built.stderr());
        let (run, noop, env, copy) = (
            &done[0]["snapshot"],
            &done[1]["snapshot"],
            &done[2]["snapshot"],
            &done[3]["snapshot"],
        );
        let tar = run["tar_bytes"].as_u64().unwrap();
        assert!((100_000..110_000).contains(&tar), "{backend}: {run}");
        assert!(run["find_seconds"].as_f64().unwrap() >= 0.0);
        assert!(run["write_seconds"].as_f64().unwrap() > 0.0, "{run}");
        let msg = done[0]["msg"].as_str().unwrap();
        assert!(
            msg.contains(", snapshot ") && msg.contains(" MiB in "),
            "{msg}"
        );
        // The chroot backend indexes the extracted base before its first RUN and keeps the
        // index for the next one; the overlay backend never scans.
        let first_index = run["index_seconds"].as_f64().unwrap();
        match backend {
            "chroot" => assert!(first_index > 0.0, "{run}\n{}", built.stderr()),
            _ => assert_eq!(first_index, 0.0, "{run}"),
        }
        assert_eq!(noop["index_seconds"].as_f64(), Some(0.0), "{noop}");
        assert_eq!(noop["tar_bytes"], 0, "a RUN that changes nothing: {noop}");
        assert!(done[1]["msg"].as_str().unwrap().contains("no changes"));
        assert!(env.is_null(), "ENV takes no snapshot: {env}");
        assert!(copy["tar_bytes"].as_u64().unwrap() > 0, "{copy}");
        // The blob sizes are those of the layers in the manifest.
        let manifest = common::read_manifest(&built.layout);
        let layers = manifest["layers"].as_array().unwrap();
        let n = layers.len();
        assert_eq!(run["blob_bytes"], layers[n - 2]["size"], "{backend}");
        assert_eq!(copy["blob_bytes"], layers[n - 1]["size"], "{backend}");
    }
}
