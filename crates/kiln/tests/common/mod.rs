//! Helpers for the build tests: a registry with the busybox base image, the kiln binary, and
//! independent readers of its output (umoci unpacks, skopeo inspects).
#![allow(dead_code)]

pub(crate) mod runners;

use kiln_test::{BaseImage, ManifestFormat, PushOptions, Registry, RegistryOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A registry holding `busybox:latest` (made offline from busybox-static).
pub(crate) struct World {
    pub registry: Registry,
    /// `127.0.0.1:PORT/busybox:latest`.
    pub base: String,
    pub kiln_dir: tempfile::TempDir,
    pub docker_config: tempfile::TempDir,
    /// `--isolation` for every build (`auto` unless a test picks a backend).
    pub isolation: std::sync::Mutex<String>,
}

/// The RUN backends a test runs its scenario with.
pub(crate) const BACKENDS: [&str; 2] = ["overlay", "chroot"];

impl World {
    pub(crate) fn new() -> World {
        let registry = Registry::start(RegistryOptions::plain()).expect("registry starts");
        let base = BaseImage::busybox().expect("busybox image");
        base.push(
            &registry,
            "busybox:latest",
            &PushOptions::new(ManifestFormat::V2s2),
        )
        .expect("push busybox");
        let docker_config = tempfile::tempdir().unwrap();
        std::fs::write(docker_config.path().join("config.json"), "{}").unwrap();
        World {
            base: format!("{}/busybox:latest", registry.host()),
            registry,
            kiln_dir: tempfile::tempdir().unwrap(),
            docker_config,
            isolation: std::sync::Mutex::new("auto".into()),
        }
    }

    /// Pushes the busybox base image again (after the registry lost its storage).
    pub(crate) fn registry_pushed_busybox_again(&self) {
        BaseImage::busybox()
            .expect("busybox image")
            .push(
                &self.registry,
                "busybox:latest",
                &PushOptions::new(ManifestFormat::V2s2),
            )
            .expect("push busybox");
    }

    /// Pushes another base image as `repo_tag` and returns its full reference.
    pub(crate) fn push_base(&self, image: &BaseImage, repo_tag: &str) -> String {
        image
            .push(
                &self.registry,
                repo_tag,
                &PushOptions::new(ManifestFormat::V2s2),
            )
            .expect("push base");
        format!("{}/{repo_tag}", self.registry.host())
    }

    /// The digest of the busybox image's one layer (a tar.gz), as skopeo sees it.
    pub(crate) fn base_layer(&self) -> String {
        let inspected = kiln_test::skopeo_checked([
            "inspect".to_string(),
            "--tls-verify=false".to_string(),
            format!("docker://{}", self.base),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        v["Layers"][0].as_str().unwrap().to_owned()
    }

    /// Runs kiln with `args` (plain HTTP to the test registry allowed).
    pub(crate) fn kiln(&self, args: &[&str]) -> Output {
        let host = self.registry.host();
        let kiln_dir = self.kiln_dir.path().to_str().unwrap().to_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--insecure-registry",
            host.as_str(),
            "--kiln-dir",
            kiln_dir.as_str(),
        ]);
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&all)
            .env("DOCKER_CONFIG", self.docker_config.path())
            .env("HOME", self.docker_config.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("kiln runs")
    }

    /// Builds `dockerfile` with `files` as the context into an OCI layout; returns it.
    pub(crate) fn build(&self, dockerfile: &str, files: &[(&str, &str)], extra: &[&str]) -> Built {
        let context = context(dockerfile, files);
        let mut built = self.build_in(context.path(), extra);
        built._context = Some(context);
        built
    }

    /// Builds the context dir `context` (`--build-arg BASE=` the busybox image) into an OCI
    /// layout; returns it.
    pub(crate) fn build_in(&self, context: &Path, extra: &[&str]) -> Built {
        let out = tempfile::tempdir().unwrap();
        let layout = out.path().join("layout");
        let ctx = context.to_str().unwrap().to_owned();
        let lay = layout.to_str().unwrap().to_owned();
        let base_arg = format!("BASE={}", self.base);
        let isolation = self.isolation.lock().unwrap().clone();
        let mut args = vec![
            "build",
            "--context",
            &ctx,
            "--no-push",
            "--oci-layout-path",
            &lay,
            "--build-arg",
            &base_arg,
            "--isolation",
            &isolation,
        ];
        args.extend_from_slice(extra);
        let output = self.kiln(&args);
        Built {
            output,
            layout,
            _out: out,
            _context: None,
        }
    }
}

/// `skopeo inspect` of an image on a TLS registry with basic auth, as JSON.
pub(crate) fn inspect_remote(
    image: &str,
    cert_dir: &Path,
    user: &str,
    password: &str,
) -> serde_json::Value {
    let inspected = kiln_test::skopeo_checked([
        "inspect".to_string(),
        format!("--cert-dir={}", cert_dir.display()),
        format!("--creds={user}:{password}"),
        format!("docker://{image}"),
    ])
    .unwrap();
    serde_json::from_str(&inspected).unwrap()
}

/// A context dir with a Dockerfile and files (`dir/name` creates dirs).
pub(crate) fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

pub(crate) struct Built {
    pub output: Output,
    pub layout: PathBuf,
    _out: tempfile::TempDir,
    _context: Option<tempfile::TempDir>,
}

impl Built {
    pub(crate) fn ok(&self) -> &Self {
        assert_success(&self.output);
        self
    }

    /// The stderr of a build that must have failed (asserted).
    pub(crate) fn failure(&self) -> String {
        assert!(
            !self.output.status.success(),
            "kiln build succeeded where it must fail:\n{}",
            self.stderr()
        );
        self.stderr()
    }

    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The image config, read straight from the layout's files.
    pub(crate) fn config(&self) -> serde_json::Value {
        read_config(&self.layout)
    }

    /// The root file system as umoci unpacks it.
    pub(crate) fn unpack(&self) -> Unpacked {
        unpack(&self.layout)
    }
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The manifest digest an OCI layout's index names.
pub(crate) fn layout_digest(layout: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

pub(crate) fn read_manifest(layout: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    serde_json::from_slice(&blob(layout, &digest)).unwrap()
}

pub(crate) fn read_config(layout: &Path) -> serde_json::Value {
    let manifest = read_manifest(layout);
    serde_json::from_slice(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap()
}

pub(crate) struct Unpacked {
    dir: tempfile::TempDir,
}

impl Unpacked {
    pub(crate) fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    pub(crate) fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.rootfs().join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(crate) fn meta(&self, path: &str) -> std::fs::Metadata {
        std::fs::symlink_metadata(self.rootfs().join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(crate) fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(self.rootfs().join(path.trim_start_matches('/'))).is_ok()
    }
}

/// `umoci unpack` of the layout's `latest`-or-only tag into a temp bundle. A Docker-format
/// manifest (kiln's default, stored as built) is first converted by skopeo, since umoci reads
/// OCI media types only.
pub(crate) fn unpack(layout: &Path) -> Unpacked {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut image = format!("{}:{tag}", layout.display());
    if index["manifests"][0]["mediaType"]
        .as_str()
        .is_some_and(|m| m.contains("docker"))
    {
        let converted = format!("{}:{tag}", dir.path().join("oci").display());
        kiln_test::skopeo_checked([
            "copy".to_string(),
            "-q".to_string(),
            "--format".to_string(),
            "oci".to_string(),
            // containers/image finds a Docker-typed manifest in a layout only as its sole
            // entry, not by its ref name.
            format!("oci:{}", layout.display()),
            format!("oci:{converted}"),
        ])
        .unwrap();
        image = converted;
    }
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(&image)
        .arg(dir.path().join("bundle"))
        .output()
        .expect("umoci runs");
    assert!(
        out.status.success(),
        "umoci unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Unpacked { dir }
}

/// Asserts that a kiln run exited 0, showing its stderr when not.
pub(crate) fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "kiln failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `podman` with private storage in `dir`, as this machine allows it (runc, cgroupfs, events to
/// a file); containers it runs need [`PODMAN_RUN_LIMITS`].
pub(crate) fn podman(dir: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ])
        .args(args)
        .output()
        .expect("podman runs")
}

/// `podman run` flags this machine needs: host network (no bridge) and the rlimits root may set.
pub(crate) const PODMAN_RUN_LIMITS: [&str; 6] = [
    "--network",
    "host",
    "--ulimit",
    "nofile=20000:20000",
    "--ulimit",
    "nproc=32768:32768",
];

/// A server process on a free port of 127.0.0.1 (`python3 ARGS… PORT-ARGS`), killed on drop.
pub(crate) struct LocalServer {
    child: std::process::Child,
    pub port: u16,
}

impl LocalServer {
    /// Starts `python3 args` with `{port}` in any argument replaced by a free port, and
    /// waits until the port accepts connections.
    pub(crate) fn python(args: &[&std::ffi::OsStr]) -> LocalServer {
        let port = kiln_test::free_port().unwrap();
        let args: Vec<std::ffi::OsString> = args
            .iter()
            .map(|a| match a.to_str() {
                Some(s) if s.contains("{port}") => s.replace("{port}", &port.to_string()).into(),
                _ => a.to_os_string(),
            })
            .collect();
        let child = Command::new("python3")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        LocalServer { child, port }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tar holding `pkg/` (root) and `pkg/data.txt` ("packed\n", 0640, owned 7:8): an archive
/// whose entries record their own owners, for ADD.
pub(crate) fn owned_tar() -> Vec<u8> {
    kiln_test::LayerTar::new()
        .dir("pkg", 0o755, (0, 0))
        .unwrap()
        .file("pkg/data.txt", 0o640, (7, 8), b"packed\n")
        .unwrap()
        .finish()
        .unwrap()
}

/// Pushes `repo_tag` to `registry`: busybox plus a layer with `/big.bin`, `mib` MiB of
/// incompressible bytes (the same every run).
pub(crate) fn push_big_base(registry: &Registry, repo_tag: &str, mib: usize) {
    let mut random = vec![0u8; mib << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in random.chunks_mut(8) {
        // xorshift: incompressible for gzip.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let big = kiln_test::LayerTar::new()
        .file("big.bin", 0o644, (0, 0), &random)
        .unwrap()
        .finish()
        .unwrap();
    let busybox = kiln_test::busybox_layer().unwrap();
    let image = BaseImage::build(
        vec![busybox, big],
        serde_json::json!({"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}),
    )
    .unwrap();
    image
        .push(registry, repo_tag, &PushOptions::new(ManifestFormat::V2s2))
        .unwrap();
}

/// Every regular file under `dir` whose content holds `needle`.
pub(crate) fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                if let Ok(bytes) = std::fs::read(&path) {
                    if contains(&bytes, needle) {
                        found.push(path);
                    }
                }
            }
        }
    }
    found
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every blob of an OCI layout (manifests, config, layers), gzip layers decompressed.
pub(crate) fn layout_blobs(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let plain = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                .unwrap();
            out
        } else {
            bytes
        };
        blobs.push((path.display().to_string(), plain));
    }
    assert!(blobs.len() >= 3, "a manifest, a config and layers");
    blobs
}

/// The processes whose command line holds `pattern` (`pgrep -f`).
pub(crate) fn processes_matching(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-a", "-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
