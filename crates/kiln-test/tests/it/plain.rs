use kiln_test::{http_get, ManifestFormat, PushOptions, Registry, RegistryOptions, TestImage};

#[test]
fn plain_registry_accepts_oci_and_v2s2_pushes_and_lists_them() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    assert!(registry.url().starts_with("http://127.0.0.1:"));

    let image = TestImage::single(b"plain").unwrap();
    let oci = image
        .push(
            &registry,
            "demo/oci:v1",
            &PushOptions::new(ManifestFormat::Oci),
        )
        .unwrap();
    // Pushed unchanged, the OCI manifest keeps its digest.
    assert_eq!(oci, image.images()[0].manifest_digest);
    let v2s2 = image
        .push(
            &registry,
            "demo/v2s2:v1",
            &PushOptions::new(ManifestFormat::V2s2),
        )
        .unwrap();
    assert_ne!(v2s2, oci);

    let catalog = http_get(registry.addr(), "/v2/_catalog", &[]).unwrap();
    assert_eq!(catalog.status, 200, "{}", catalog.text());
    let body: serde_json::Value = serde_json::from_slice(&catalog.body).unwrap();
    assert_eq!(
        body["repositories"],
        serde_json::json!(["demo/oci", "demo/v2s2"])
    );

    let manifest = http_get(
        registry.addr(),
        "/v2/demo/v2s2/manifests/v1",
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
    )
    .unwrap();
    assert_eq!(manifest.status, 200);
    assert_eq!(
        manifest.header("content-type"),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(v2s2.as_str())
    );
    assert!(registry
        .storage_dir()
        .join("docker/registry/v2/repositories/demo/oci")
        .is_dir());
}

#[test]
fn multi_platform_index_is_pushed_whole_with_all() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    let image = TestImage::multi_platform(b"multi").unwrap();
    let digest = image
        .push(
            &registry,
            "demo/multi:v1",
            &PushOptions::new(ManifestFormat::Oci),
        )
        .unwrap();
    assert_eq!(Some(digest.as_str()), image.index_digest());
    let index = http_get(
        registry.addr(),
        "/v2/demo/multi/manifests/v1",
        &[("Accept", "application/vnd.oci.image.index.v1+json")],
    )
    .unwrap();
    assert_eq!(index.status, 200, "{}", index.text());
    let body: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let archs: Vec<&str> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    for img in image.images() {
        let path = format!("/v2/demo/multi/blobs/{}", img.layer_digest);
        assert_eq!(http_get(registry.addr(), &path, &[]).unwrap().status, 200);
    }

    let list = image
        .push(
            &registry,
            "demo/multi-v2s2:v1",
            &PushOptions::new(ManifestFormat::V2s2),
        )
        .unwrap();
    let fetched = http_get(
        registry.addr(),
        "/v2/demo/multi-v2s2/manifests/v1",
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )],
    )
    .unwrap();
    assert_eq!(fetched.header("docker-content-digest"), Some(list.as_str()));
    assert_eq!(
        fetched.header("content-type"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json")
    );
}

#[test]
fn dropping_a_registry_kills_and_reaps_its_process() {
    let registry = Registry::start(RegistryOptions::plain().debug_server()).unwrap();
    let pid = registry.pid();
    let addr = registry.addr();
    assert!(registry.debug_addr().is_some());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(registry);
    // Reaped: no zombie left under our PID (it could be reused, but not this fast).
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn debug_output_never_shows_passwords() {
    let options = RegistryOptions::plain()
        .htpasswd("alice", "pw-htpasswd")
        .token_auth(kiln_test::TokenAuthOptions::new().user("bob", "pw-token"));
    let shown = format!("{options:?}");
    assert!(shown.contains("alice") && shown.contains("bob"));
    assert!(!shown.contains("pw-htpasswd") && !shown.contains("pw-token"));
    // Both auth backends at once is refused before anything starts.
    assert!(matches!(
        Registry::start(options),
        Err(kiln_test::Error::InvalidOptions(_))
    ));
}
