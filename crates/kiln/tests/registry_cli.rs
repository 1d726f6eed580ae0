//! `kiln pull` and `kiln push` end to end: the real binary, the real registry, skopeo to check.

use kiln_test::{
    skopeo_checked, ManifestFormat, PushOptions, Registry, RegistryOptions, TestImage,
};
use std::path::Path;
use std::process::{Command, Output};

const USER: &str = "ci";
const PASSWORD: &str = "correct-horse-battery";

fn kiln(args: &[&str], docker_config_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config_dir)
        .env("HOME", docker_config_dir)
        .output()
        .expect("kiln runs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "kiln failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn write_auth(dir: &Path, host: &str) {
    kiln_test::write_docker_config(dir, host, USER, PASSWORD).unwrap();
}

#[test]
fn pull_to_a_layout_and_push_it_over_tls_with_docker_config_credentials() {
    let source = Registry::start(RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"round trip").unwrap();
    let pushed = image
        .push(
            &source,
            "src/app:1",
            &PushOptions::new(ManifestFormat::V2s2),
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let layout_arg = layout.display().to_string();

    // Pull from the plain-HTTP registry (allowed explicitly).
    let out = kiln(
        &[
            "pull",
            &format!("{}/src/app:1", source.host()),
            "--insecure-registry",
            &source.host(),
            "--oci-layout-path",
            &layout_arg,
        ],
        work.path(),
    );
    assert_eq!(ok(&out), pushed, "kiln prints the pulled digest");
    // The layout holds the OCI form of the Docker manifest, with the same blobs.
    let inspected = skopeo_checked(["inspect".to_string(), format!("oci:{layout_arg}:1")]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(
        v["Layers"][0],
        image.images()[0].layer_digest.as_str(),
        "skopeo reads kiln's layout"
    );
    let converted = v["Digest"].as_str().unwrap().to_string();
    assert_ne!(converted, pushed);
    let raw = skopeo_checked([
        "inspect".to_string(),
        "--raw".to_string(),
        format!("oci:{layout_arg}:1"),
    ])
    .unwrap();
    assert!(
        raw.contains("application/vnd.oci.image.manifest.v1+json"),
        "{raw}"
    );
    let pushed = converted;

    // Push it to a TLS registry with basic auth, credentials from $DOCKER_CONFIG/config.json,
    // under two tags.
    let dest = Registry::start(RegistryOptions::plain().tls().htpasswd(USER, PASSWORD)).unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    write_auth(config_dir.path(), &dest.host());
    let ca = format!("{}={}", dest.host(), dest.ca_pem_path().unwrap().display());
    let digest_file = work.path().join("digest");
    let out = kiln(
        &[
            "push",
            "--oci-layout-path",
            &layout_arg,
            "--destination",
            &format!("{}/team/app:v1", dest.host()),
            "-d",
            &format!("{}/team/app:latest", dest.host()),
            "--registry-certificate",
            &ca,
            "--digest-file",
            &digest_file.display().to_string(),
        ],
        config_dir.path(),
    );
    assert_eq!(ok(&out), pushed);
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap(), pushed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    for tag in ["v1", "latest"] {
        let inspected = skopeo_checked([
            "inspect".to_string(),
            format!("--cert-dir={}", dest.cert_dir().unwrap().display()),
            format!("--creds={USER}:{PASSWORD}"),
            format!("docker://{}/team/app:{tag}", dest.host()),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        assert_eq!(v["Digest"], pushed.as_str());
    }
}

#[test]
fn pull_to_a_docker_archive_that_skopeo_and_podman_load() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"archive").unwrap();
    image
        .push(&registry, "a/app:2", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("image.tar");
    let out = kiln(
        &[
            "pull",
            &format!("{}/a/app:2", registry.host()),
            "--insecure-pull",
            "--tar-path",
            &tar.display().to_string(),
        ],
        work.path(),
    );
    ok(&out);
    let inspected = skopeo_checked([
        "inspect".to_string(),
        format!(
            "docker-archive:{}:{}/a/app:2",
            tar.display(),
            registry.host()
        ),
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(
        v["Layers"][0],
        image.images()[0].diff_id.as_str(),
        "skopeo lists docker-archive layers by diff_id"
    );
    // podman loads it (into a private store in the temp dir, never the machine's).
    let store = work.path().join("podman");
    let loaded = Command::new("podman")
        .args(["--root", &store.join("root").display().to_string()])
        .args(["--runroot", &store.join("run").display().to_string()])
        .args([
            "--storage-driver",
            "vfs",
            "load",
            "-i",
            &tar.display().to_string(),
        ])
        .output()
        .expect("podman runs (scripts/test.sh installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&loaded.stdout),
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(loaded.status.success(), "podman load failed: {said}");
    assert!(
        said.contains(&format!("Loaded image: {}/a/app:2", registry.host())),
        "{said}"
    );
    // And it copies out of the archive into an OCI layout.
    let copy = work.path().join("copy");
    skopeo_checked([
        "copy".to_string(),
        format!("docker-archive:{}", tar.display()),
        format!("oci:{}:x", copy.display()),
    ])
    .unwrap();
}

#[test]
fn credential_and_flag_problems_stop_kiln_before_any_transfer() {
    let registry =
        Registry::start(RegistryOptions::plain().tls().htpasswd(USER, PASSWORD)).unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("config.json"), "{ this is not json").unwrap();
    let image = format!("{}/x/y:1", registry.host());
    let out = kiln(&["pull", &image, "--oci-layout-path", "out"], work.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "docker config {}/config.json is not valid",
            work.path().display()
        )),
        "{stderr}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = kiln(
        &[
            "pull",
            &image,
            "--oci-layout-path",
            "out",
            "--registry-certificate",
            "nohost",
        ],
        empty.path(),
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--registry-certificate \"nohost\": expected KEY=VALUE"));

    // No credentials for the destination: the push-permission check fails before uploading.
    let layout_dir = tempfile::tempdir().unwrap();
    let source = Registry::start(RegistryOptions::plain()).unwrap();
    TestImage::single(b"z")
        .unwrap()
        .push(&source, "z/z:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let layout = layout_dir.path().join("l").display().to_string();
    ok(&kiln(
        &[
            "pull",
            &format!("{}/z/z:1", source.host()),
            "--insecure-pull",
            "--oci-layout-path",
            &layout,
        ],
        empty.path(),
    ));
    let ca = format!(
        "{}={}",
        registry.host(),
        registry.ca_pem_path().unwrap().display()
    );
    let out = kiln(
        &[
            "push",
            "--oci-layout-path",
            &layout,
            "-d",
            &image,
            "--registry-certificate",
            &ca,
        ],
        empty.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("checking push access to")
            && stderr.contains("requires a user name and password"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("pushed sha256"),
        "nothing was uploaded: {stderr}"
    );
}

#[test]
fn pushes_a_multi_platform_index_from_a_layout() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    let image = TestImage::multi_platform(b"both platforms").unwrap();
    let index_digest = image
        .push(
            &registry,
            "multi/src:1",
            &PushOptions::new(ManifestFormat::Oci),
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout").display().to_string();
    // An OCI layout holding the whole index, made by skopeo (an independent client).
    skopeo_checked([
        "copy".to_string(),
        "--all".to_string(),
        "--src-tls-verify=false".to_string(),
        format!("docker://{}/multi/src:1", registry.host()),
        format!("oci:{layout}:1"),
    ])
    .unwrap();
    let out = kiln(
        &[
            "push",
            "--oci-layout-path",
            &layout,
            "-d",
            &format!("{}/multi/copy:1", registry.host()),
            "--insecure",
        ],
        work.path(),
    );
    assert_eq!(ok(&out), index_digest);
    let raw = skopeo_checked([
        "inspect".to_string(),
        "--raw".to_string(),
        "--tls-verify=false".to_string(),
        format!("docker://{}/multi/copy:1", registry.host()),
    ])
    .unwrap();
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{raw}");
    // Every platform's image is there: kiln pulls the arm64 one back.
    let arm = image
        .images()
        .iter()
        .find(|i| i.platform.architecture == "arm64")
        .unwrap();
    let pulled = work.path().join("arm").display().to_string();
    let out = kiln(
        &[
            "pull",
            &format!("{}/multi/copy:1", registry.host()),
            "--platform",
            "linux/arm64",
            "--insecure-pull",
            "--oci-layout-path",
            &pulled,
        ],
        work.path(),
    );
    assert_eq!(ok(&out), arm.manifest_digest);
}
