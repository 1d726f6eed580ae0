//! The Jenkins agent container, for real: kiln's debug image (built by kiln with
//! scripts/images.sh) runs under podman (runc) with `cat` and a tty, not privileged, with only the
//! capabilities the Kubernetes examples grant the chroot backend; the workspace is bind-mounted
//! and a docker config.json is mounted at /kaniko/.docker/. As the Jenkins `sh` step does,
//! `podman exec` runs /kaniko/executor three times (single-stage, multi-stage, `--cleanup`),
//! pushing to a TLS registry with basic auth; after each build the workspace is still there and
//! the container's own files are unchanged (kaniko issue 1586).
//!
//! The image holds `KILN_IMAGE_BIN` when set (scripts/test.sh sets it to a static musl build
//! when it can make one), else this test's kiln with its shared libraries.

mod common;

use kiln_test::{BaseImage, ManifestFormat, PushOptions, Registry, RegistryOptions};
use std::path::Path;
use std::process::{Command, Output};

const USER: &str = "jenkins";
const PASSWORD: &str = "agent-secret-never-logged";
/// The capabilities examples/kubernetes gives the chroot backend (see its README).
const CAPS: &str = "CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETUID,SETGID,SYS_CHROOT,MKNOD,KILL,SETFCAP";

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn run(&self, args: &[&str]) -> Output {
        common::podman(self.dir.path(), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-f", "-t", "0", "agent"]);
    }
}

fn inventory_cmd() -> &'static str {
    // Every file of the container's own file system (bind mounts, /proc, /sys, /dev are other
    // file systems), the kiln dir excepted.
    "find / -xdev -path /kiln -prune -o -print | sort | while read -r f; do stat -c '%n %f %u %g %s %Y' \"$f\"; done"
}

#[test]
fn the_executor_runs_again_and_again_in_a_jenkins_agent_container() {
    let registry =
        Registry::start(RegistryOptions::plain().tls().htpasswd(USER, PASSWORD)).unwrap();
    let host = registry.host();
    let cert_dir = registry.cert_dir().unwrap().to_owned();
    let ca = registry.ca_pem_path().unwrap().to_owned();
    let push = PushOptions::new(ManifestFormat::V2s2)
        .creds(USER, PASSWORD)
        .cert_dir(&cert_dir);
    BaseImage::busybox()
        .unwrap()
        .push(&registry, "library/busybox:1", &push)
        .unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    kiln_test::write_docker_config(docker_config.path(), &host, USER, PASSWORD).unwrap();

    // kiln's images, built and pushed by kiln.
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let image_bin = std::env::var("KILN_IMAGE_BIN").unwrap_or_else(|_| kiln.to_owned());
    let kiln_dir = tempfile::tempdir().unwrap();
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(repo_root.join("scripts/images.sh"))
        .args([&format!("{host}/kiln"), "test", "--"])
        .args([
            "--registry-certificate",
            &format!("{host}={}", ca.display()),
        ])
        .arg("--kiln-dir")
        .arg(kiln_dir.path())
        .env("KILN_BIN", &image_bin)
        .env("KILN_BUILDER", kiln)
        .env("DOCKER_CONFIG", docker_config.path())
        .current_dir(&repo_root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "images.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for tag in ["test", "test-debug"] {
        let v = common::inspect_remote(&format!("{host}/kiln:{tag}"), &cert_dir, USER, PASSWORD);
        let env: Vec<String> = serde_json::from_value(v["Env"].clone()).unwrap();
        assert!(
            env.contains(&"DOCKER_CONFIG=/kaniko/.docker/".to_string()),
            "{env:?}"
        );
        assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_string()));
    }

    // The agent pod's builder container: the debug image kept alive by `cat` with a tty.
    let podman = Podman {
        dir: tempfile::tempdir().unwrap(),
    };
    let creds = format!("{USER}:{PASSWORD}");
    let cert_arg = format!("--cert-dir={}", cert_dir.display());
    let debug_image = format!("{host}/kiln:test-debug");
    let image = format!("{host}/kiln:test");
    for pulled in [&debug_image, &image] {
        podman.ok(&["pull", "-q", &cert_arg, "--creds", &creds, pulled]);
    }
    // The executor image runs too: its entrypoint is /kaniko/executor, i.e. `kiln build`.
    let help = podman.ok(&[
        &["run", "--rm"][..],
        &common::PODMAN_RUN_LIMITS,
        &[&image, "--help"],
    ]
    .concat());
    assert!(
        help.contains("--destination") && help.contains("--kiln-dir"),
        "{help}"
    );
    let workspace = tempfile::tempdir().unwrap();
    let ws = workspace.path();
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(ws.join("src/app.txt"), "app\n").unwrap();
    std::fs::write(
        ws.join("Dockerfile"),
        format!("FROM {host}/library/busybox:1\nCOPY src /app\nRUN echo built > /app/built && rm -rf /base\n"),
    )
    .unwrap();
    std::fs::write(
        ws.join("multi.Dockerfile"),
        format!(
            "FROM {host}/library/busybox:1 AS build\nRUN mkdir /out && echo artifact > /out/a\n\
             FROM {host}/library/busybox:1\nCOPY --from=build /out /out\n"
        ),
    )
    .unwrap();
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, certs.path().join("ca.pem")).unwrap();
    let mounts = [
        format!("{}:/home/jenkins/agent/workspace/app", ws.display()),
        format!("{}:/kaniko/.docker:ro", docker_config.path().display()),
        format!("{}:/kaniko/certs:ro", certs.path().display()),
    ];
    let agent = [
        &["run", "-d", "-t", "--name", "agent"][..],
        &common::PODMAN_RUN_LIMITS,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            CAPS,
            "-v",
            &mounts[0],
            "-v",
            &mounts[1],
            "-v",
            &mounts[2],
            "-e",
            "WORKSPACE=/home/jenkins/agent/workspace/app",
            "--entrypoint",
            "cat",
            &debug_image,
        ],
    ]
    .concat();
    podman.ok(&agent);
    let before = podman.ok(&["exec", "agent", "sh", "-c", inventory_cmd()]);
    assert!(before.contains("/busybox/sh"), "{before}");
    let workspace_before = common_inventory(ws);
    let registry_cert = format!("{host}=/kaniko/certs/ca.pem");
    let runs: [Vec<String>; 3] = [
        vec!["--destination".into(), format!("{host}/team/app:one")],
        vec![
            "--dockerfile".into(),
            "multi.Dockerfile".into(),
            "--destination".into(),
            format!("{host}/team/app:two"),
        ],
        // kaniko's spellings as pipelines write them: booleans with `=true`/`=false`, the
        // digest files (into directories that do not exist yet).
        vec![
            "--destination".into(),
            format!("{host}/team/app:three"),
            "--cleanup=true".into(),
            "--skip-tls-verify=false".into(),
            "--insecure=false".into(),
            "--digest-file=/kiln/out/digest".into(),
            "--image-name-with-digest-file=/kiln/out/names".into(),
            "--image-name-tag-with-digest-file=/kiln/out/tags".into(),
        ],
    ];
    for extra in &runs {
        let mut args: Vec<&str> = vec![
            "exec",
            "agent",
            "/kaniko/executor",
            "--context",
            "/home/jenkins/agent/workspace/app",
        ];
        args.extend(["--registry-certificate", &registry_cert]);
        args.extend(extra.iter().map(String::as_str));
        let out = podman.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "executor {extra:?}: {err}");
        assert!(
            err.contains("RUN isolation: chroot without namespaces"),
            "{err}"
        );
        assert!(!err.contains(PASSWORD));
        // What the next Jenkins `sh` step does.
        let listed = podman.ok(&["exec", "agent", "sh", "-c", "cd $WORKSPACE && ls"]);
        assert!(
            listed.contains("Dockerfile") && listed.contains("src"),
            "{listed}"
        );
    }
    let after = podman.ok(&["exec", "agent", "sh", "-c", inventory_cmd()]);
    assert_eq!(before, after, "the container's files changed");
    assert_eq!(
        workspace_before,
        common_inventory(ws),
        "the workspace changed"
    );
    let digest = podman.ok(&["exec", "agent", "cat", "/kiln/out/digest"]);
    let pushed =
        common::inspect_remote(&format!("{host}/team/app:three"), &cert_dir, USER, PASSWORD);
    assert_eq!(pushed["Digest"], digest.as_str());
    assert_eq!(
        podman.ok(&["exec", "agent", "cat", "/kiln/out/names"]),
        format!("{host}/team/app@{digest}\n")
    );
    assert_eq!(
        podman.ok(&["exec", "agent", "cat", "/kiln/out/tags"]),
        format!("{host}/team/app:three@{digest}\n")
    );
    for (tag, path, content) in [
        ("one", "/app/built", "built\n"),
        ("two", "/out/a", "artifact\n"),
        ("three", "/app/app.txt", "app\n"),
    ] {
        let oci = tempfile::tempdir().unwrap();
        kiln_test::skopeo_checked([
            "copy".to_string(),
            format!("--src-cert-dir={}", cert_dir.display()),
            format!("--src-creds={USER}:{PASSWORD}"),
            format!("docker://{host}/team/app:{tag}"),
            format!("oci:{}:{tag}", oci.path().display()),
        ])
        .unwrap();
        assert_eq!(common::unpack(oci.path()).read(path), content, "{tag}");
    }
}

/// Path, type, mode, size and content length of everything under `root`.
fn common_inventory(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let content = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            out.push(format!(
                "{} {:?} {} {:?}",
                path.display(),
                meta.file_type(),
                meta.len(),
                content
            ));
        }
    }
    out.sort();
    out
}
