//! kiln's registry client against the real Distribution registry (Debian's `docker-registry`),
//! started on 127.0.0.1 by `kiln-test`, with images checked by skopeo, an independent client.

use kiln_oci::{media_type, Descriptor, Digest, Platform};
use kiln_registry::{
    BlobOutcome, Client, DockerConfig, Reference, RegistryError, RegistryOptions, Reporter,
};
use kiln_test::{
    skopeo_checked, Fault, FaultAction, FaultProxy, ManifestFormat, PushOptions, Registry,
    TestImage, TokenAuthOptions, TokenFields,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::*;

const USER: &str = "builder";
const PASSWORD: &str = "pa55-w0rd-never-printed";

/// Records reporter events.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);
impl Reporter for Events {
    fn blob_done(&self, digest: &Digest, outcome: BlobOutcome) {
        self.0.lock().unwrap().push(format!("{outcome:?} {digest}"));
    }
    fn retry(
        &self,
        request: &kiln_registry::error::RequestInfo,
        _attempt: u32,
        _delay: Duration,
        reason: &str,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(format!("retry {request}: {reason}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_images_pushed_by_skopeo_in_every_format() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let client = Client::new(plain_options(&[registry.host()]), DockerConfig::default());
    let out = tempfile::tempdir().unwrap();
    for (format, repo) in [
        (ManifestFormat::Oci, "oci/app:1"),
        (ManifestFormat::V2s2, "docker/app:1"),
    ] {
        let image = TestImage::single(b"hello from skopeo").unwrap();
        let pushed = image
            .push(&registry, repo, &PushOptions::new(format))
            .unwrap();
        let resolved = client
            .resolve(
                &reference(&registry.host(), repo),
                &Platform::parse("linux/amd64").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resolved.digest.to_string(), pushed, "{repo}");
        let expected_type = match format {
            ManifestFormat::Oci => media_type::OCI_MANIFEST,
            ManifestFormat::V2s2 => media_type::DOCKER_MANIFEST,
        };
        assert_eq!(resolved.manifest_media_type, expected_type);
        assert_eq!(
            Digest::of(&resolved.config).to_string(),
            image.images()[0].config_digest
        );
        client
            .fetch_blobs(&resolved.source, &resolved.manifest.layers, out.path())
            .await
            .unwrap();
        let layer = &resolved.manifest.layers[0];
        assert_eq!(layer.digest.to_string(), image.images()[0].layer_digest);
        let fetched = std::fs::read(out.path().join(layer.digest.hex())).unwrap();
        assert_eq!(Digest::of(&fetched), layer.digest);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_multi_platform_indexes_by_platform() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::multi_platform(b"multi").unwrap();
    let index_digest = image
        .push(
            &registry,
            "multi/app:1",
            &PushOptions::new(ManifestFormat::Oci),
        )
        .unwrap();
    let client = Client::new(plain_options(&[registry.host()]), DockerConfig::default());
    let r = reference(&registry.host(), "multi/app:1");
    let arm = client
        .resolve(&r, &Platform::parse("linux/arm64/v8").unwrap())
        .await
        .unwrap();
    let arm_blobs = image
        .images()
        .iter()
        .find(|i| i.platform.architecture == "arm64")
        .unwrap();
    assert_eq!(arm.digest.to_string(), arm_blobs.manifest_digest);
    assert_eq!(
        arm.index_digest.as_ref().map(|d| d.to_string()),
        Some(index_digest)
    );
    let err = client
        .resolve(&r, &Platform::parse("linux/s390x").unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "lists what the index offers: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_tls_with_basic_auth_and_skopeo_reads_it_back() {
    let source = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"pushed by kiln").unwrap();
    image
        .push(&source, "src/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let dest = Registry::start(
        kiln_test::RegistryOptions::plain()
            .tls()
            .htpasswd(USER, PASSWORD),
    )
    .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let events = Arc::new(Events::default());
    let client = Client::new(
        tls_options(&dest),
        basic_config(config_dir.path(), &dest.host(), USER, PASSWORD),
    )
    .with_reporter(events.clone());

    // Take the image's manifest and blobs from the skopeo-written layout.
    let blobs = &image.images()[0];
    let (manifest_bytes, manifest) = image_manifest(&image);
    let target = reference(&dest.host(), "team/app:v1");
    client.check_push_access(&target).await.unwrap();
    push_blobs(&client, &target, &image, &manifest, None).await;
    let pushed = client
        .push_manifest(&target, &manifest_bytes, media_type::OCI_MANIFEST)
        .await
        .unwrap();
    let second_tag = target.with_tag("latest");
    client
        .push_manifest(&second_tag, &manifest_bytes, media_type::OCI_MANIFEST)
        .await
        .unwrap();
    assert_eq!(pushed.to_string(), blobs.manifest_digest);

    // skopeo, an independent client, sees the same image under both tags.
    let cert_dir = dest.cert_dir().unwrap().display().to_string();
    for tag in ["v1", "latest"] {
        let inspected = skopeo_checked([
            "inspect".to_string(),
            format!("--cert-dir={cert_dir}"),
            format!("--creds={USER}:{PASSWORD}"),
            format!("docker://{}/team/app:{tag}", dest.host()),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        assert_eq!(v["Digest"], blobs.manifest_digest.as_str(), "{tag}");
        assert_eq!(v["Layers"][0], blobs.layer_digest.as_str());
    }

    // Pushing again sends nothing: HEAD finds every blob.
    events.0.lock().unwrap().clear();
    push_blobs(&client, &target, &image, &manifest, None).await;
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|e| e.starts_with("Exists")),
        "{:?}",
        events.0.lock().unwrap()
    );

    // Another repository of the same registry gets the blobs by cross-repository mount.
    events.0.lock().unwrap().clear();
    let other = reference(&dest.host(), "other/app:v1");
    push_blobs(&client, &other, &image, &manifest, Some("team/app")).await;
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|e| e.starts_with("Mounted")),
        "{:?}",
        events.0.lock().unwrap()
    );
    client
        .push_manifest(&other, &manifest_bytes, media_type::OCI_MANIFEST)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_go_up_in_chunks() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let mut options = plain_options(&[registry.host()]);
    options.chunk_size = 64 << 10;
    let client = Client::new(options, DockerConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let descriptor = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &data);
    let target = reference(&registry.host(), "chunks/app:1");
    assert_eq!(
        client
            .push_blob(&target, &descriptor, &path, None)
            .await
            .unwrap(),
        BlobOutcome::Uploaded
    );
    let back = dir.path().join("back");
    client
        .fetch_blob(&target, &descriptor, &back)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_like_docker_hub_with_cached_tokens() {
    for fields in [TokenFields::TokenOnly, TokenFields::AccessTokenOnly] {
        let registry = Registry::start(
            kiln_test::RegistryOptions::plain().token_auth(
                TokenAuthOptions::new()
                    .user(USER, PASSWORD)
                    .public_repository("public/app")
                    .fields(fields),
            ),
        )
        .unwrap();
        let image = TestImage::single(b"token").unwrap();
        let (user, password) = registry.push_credentials().unwrap();
        image
            .push(
                &registry,
                "public/app:1",
                &PushOptions::new(ManifestFormat::Oci).creds(&user, &password),
            )
            .unwrap();
        let token_server = registry.token_server().unwrap();
        token_server.clear_requests();

        // Anonymous pull of a public repository.
        let anonymous = Client::new(plain_options(&[registry.host()]), DockerConfig::default());
        let r = reference(&registry.host(), "public/app:1");
        let resolved = anonymous
            .resolve(&r, &Platform::parse("linux/amd64").unwrap())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        anonymous
            .fetch_blobs(&resolved.source, &resolved.manifest.layers, dir.path())
            .await
            .unwrap();
        let requests = token_server.requests();
        assert_eq!(
            requests.len(),
            1,
            "one token for the manifest, config and layer: {requests:?}"
        );
        assert!(!requests[0].credentials_sent);
        assert_eq!(requests[0].scopes, ["repository:public/app:pull"]);

        // A push with credentials from config.json: one token for the push scope.
        let config_dir = tempfile::tempdir().unwrap();
        let client = Client::new(
            plain_options(&[registry.host()]),
            basic_config(config_dir.path(), &registry.host(), USER, PASSWORD),
        );
        token_server.clear_requests();
        let target = reference(&registry.host(), "private/app:1");
        let (manifest_bytes, manifest) = image_manifest(&image);
        push_blobs(&client, &target, &image, &manifest, None).await;
        client
            .push_manifest(&target, &manifest_bytes, media_type::OCI_MANIFEST)
            .await
            .unwrap();
        let requests = token_server.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert!(requests[0].credentials_sent);
        assert_eq!(requests[0].scopes, ["repository:private/app:pull,push"]);

        // Anonymous access to the private repository fails with the registry's answer.
        let err = anonymous
            .fetch_manifest(&reference(&registry.host(), "private/app:1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("401") || err.contains("authentication"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_fail_clearly_and_never_appear() {
    let registry = Registry::start(
        kiln_test::RegistryOptions::plain()
            .tls()
            .htpasswd(USER, PASSWORD),
    )
    .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-secret-value-42";
    let client = Client::new(
        tls_options(&registry),
        basic_config(config_dir.path(), &registry.host(), USER, wrong),
    );
    let target = reference(&registry.host(), "team/app:v1");
    let err = client.check_push_access(&target).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "POST https://{}/v2/team/app/blobs/uploads/: 401",
            registry.host()
        )),
        "{text}"
    );
    for shown in [text, format!("{err:?}"), format!("{client:?}")] {
        assert!(
            !shown.contains(wrong) && !shown.contains(PASSWORD),
            "{shown}"
        );
        assert!(
            !shown.contains("d3Jvbmct"),
            "no base64 credentials either: {shown}"
        );
    }
    // No credentials at all: anonymous is refused.
    let anonymous = Client::new(tls_options(&registry), DockerConfig::default());
    let err = anonymous
        .check_push_access(&target)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requires a user name and password"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_ca_files_skip_verify_and_mutual_tls() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain().mutual_tls()).unwrap();
    let image = TestImage::single(b"mtls").unwrap();
    image
        .push(&registry, "m/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let r = reference(&registry.host(), "m/app:1");

    // Unknown CA: the error names the request.
    let client = Client::new(RegistryOptions::default(), DockerConfig::default());
    let err = client.fetch_manifest(&r).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "GET https://{}/v2/m/app/manifests/1:",
            registry.host()
        )),
        "{err}"
    );

    // The CA but no client certificate: the registry refuses the handshake.
    let mut options = tls_options(&registry);
    options.pull_retries = 0;
    let err = Client::new(options.clone(), DockerConfig::default())
        .fetch_manifest(&r)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Connection { .. }), "{err}");

    // With the client certificate it works; skipping verification needs the certificate too.
    let (cert, key) = registry.client_cert_paths().unwrap();
    options
        .transport
        .client_certs
        .insert(registry.host(), (cert.to_path_buf(), key.to_path_buf()));
    Client::new(options, DockerConfig::default())
        .fetch_manifest(&r)
        .await
        .unwrap();
    let mut skip = RegistryOptions::default();
    skip.transport.skip_verify_pull = true;
    skip.transport
        .client_certs
        .insert(registry.host(), (cert.to_path_buf(), key.to_path_buf()));
    Client::new(skip, DockerConfig::default())
        .fetch_manifest(&r)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_when_asked() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"http").unwrap();
    image
        .push(&registry, "h/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let r = reference(&registry.host(), "h/app:1");
    let mut options = RegistryOptions {
        pull_retries: 0,
        ..RegistryOptions::default()
    };
    let err = Client::new(options.clone(), DockerConfig::default())
        .fetch_manifest(&r)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("GET https://{}/", registry.host())),
        "HTTPS only by default: {err}"
    );
    options.transport.insecure_pull = true;
    Client::new(options, DockerConfig::default())
        .fetch_manifest(&r)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blobs_are_rejected_and_nothing_is_stored() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"original").unwrap();
    image
        .push(&registry, "t/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let blobs = &image.images()[0];
    // Corrupt the layer inside the registry's own storage.
    let hex = blobs.layer_digest.strip_prefix("sha256:").unwrap();
    let stored = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();

    let client = Client::new(plain_options(&[registry.host()]), DockerConfig::default());
    let r = reference(&registry.host(), "t/app:1");
    let resolved = client
        .resolve(&r, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("layer");
    let err = client
        .fetch_blob(&resolved.source, &resolved.manifest.layers[0], &dest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Mismatch { what: "digest", .. }),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file, not even a partial one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_broken_transfers_503_and_429() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::multi_platform(&vec![7u8; 200_000]).unwrap();
    image
        .push(&registry, "f/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![
            Fault::new(FaultAction::ServiceUnavailable)
                .method("GET")
                .path("/manifests/")
                .times(1),
            Fault::new(FaultAction::TooManyRequests)
                .method("GET")
                .path("/manifests/sha256")
                .times(1),
            Fault::new(FaultAction::CloseAfterBodyBytes(1000))
                .method("GET")
                .path("/blobs/")
                .times(2),
        ],
    )
    .unwrap();
    let events = Arc::new(Events::default());
    let client = Client::new(plain_options(&[proxy.host()]), DockerConfig::default())
        .with_reporter(events.clone());
    let r = reference(&proxy.host(), "f/app:1");
    let resolved = client
        .resolve(&r, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    client
        .fetch_blobs(&resolved.source, &resolved.manifest.layers, dir.path())
        .await
        .unwrap();
    assert_eq!(proxy.applied(0), 1);
    assert_eq!(proxy.applied(1), 1);
    assert!(proxy.applied(2) >= 1);
    let events = events.0.lock().unwrap();
    assert!(events.iter().any(|e| e.contains("503")), "{events:?}");
    assert!(events.iter().any(|e| e.contains("429")), "{events:?}");
    assert!(
        events.iter().any(|e| e.starts_with("Downloaded")),
        "{events:?}"
    );
}

/// A transfer cut mid-way resumes with `Range`; a server that then ignores the range and sends
/// the whole blob again is read past what the writer already has, so the writer sees each byte
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_transfer_whose_range_is_ignored_writes_each_byte_once() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    // Incompressible, so the layer blob is large enough to cut.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let content: Vec<u8> = (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let image = TestImage::single(&content).unwrap();
    image
        .push(&registry, "r/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![
            Fault::new(FaultAction::CloseAfterBodyBytes(50_000))
                .method("GET")
                .path("/blobs/")
                .times(1),
            Fault::new(FaultAction::IgnoreRange)
                .method("GET")
                .path("/blobs/")
                .times(1),
        ],
    )
    .unwrap();
    let client = Client::new(plain_options(&[proxy.host()]), DockerConfig::default());
    let r = reference(&proxy.host(), "r/app:1");
    let resolved = client
        .resolve(&r, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    let layer = resolved.manifest.layers[0].clone();
    let mut sink = Vec::new();
    client
        .fetch_blob_into(&resolved.source, &layer, &mut sink)
        .await
        .unwrap();
    assert_eq!(proxy.applied(0), 1, "the first transfer was cut");
    assert_eq!(proxy.applied(1), 1, "the resumed one got the whole blob");
    let ranged: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.target.contains("/blobs/"))
        .collect();
    assert_eq!(ranged.len(), 2, "{ranged:?}");
    assert_eq!(sink.len() as u64, layer.size);
    assert_eq!(Digest::of(&sink), layer.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_map_and_docker_hub_mirrors() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"mirrored").unwrap();
    let pushed = image
        .push(
            &registry,
            "library/busybox:1.36",
            &PushOptions::new(ManifestFormat::Oci),
        )
        .unwrap();
    image
        .push(
            &registry,
            "prefix/team/tool:2",
            &PushOptions::new(ManifestFormat::Oci),
        )
        .unwrap();

    // A Docker Hub image comes from the mirror; with fallback off, nothing else is tried.
    let mut options = plain_options(&[registry.host()]);
    options.mirrors = vec![registry.host()];
    options.skip_default_registry_fallback = true;
    let client = Client::new(options, DockerConfig::default());
    let fetched = client
        .fetch_manifest(&Reference::parse("busybox:1.36").unwrap())
        .await
        .unwrap();
    assert_eq!(fetched.digest.to_string(), pushed);
    assert_eq!(fetched.source.registry, registry.host());
    let err = client
        .fetch_manifest(&Reference::parse("busybox:missing").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");

    // --registry-map with a path prefix.
    let mut options = plain_options(&[registry.host()]);
    options.registry_map.insert(
        "registry.example.com".into(),
        vec![format!("{}/prefix", registry.host())],
    );
    let client = Client::new(options, DockerConfig::default());
    let sources =
        client.pull_sources(&Reference::parse("registry.example.com/team/tool:2").unwrap());
    assert_eq!(
        sources[0].to_string(),
        format!("{}/prefix/team/tool:2", registry.host())
    );
    let fetched = client
        .fetch_manifest(&Reference::parse("registry.example.com/team/tool:2").unwrap())
        .await
        .unwrap();
    assert_eq!(fetched.source.repository, "prefix/team/tool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_uploads_restart_cleanly() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![
            Fault::new(FaultAction::CloseAfterRequestBytes(50_000))
                .method("PUT")
                .path("/blobs/uploads/")
                .times(1),
            Fault::new(FaultAction::CloseAfterRequestBytes(10_000))
                .method("PATCH")
                .path("/blobs/uploads/")
                .times(1),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let descriptor = Descriptor::for_bytes(media_type::OCI_LAYER_TAR, &data);
    for (chunk_size, repo) in [(1 << 20, "cut/mono:1"), (100_000, "cut/chunked:1")] {
        let mut options = plain_options(&[proxy.host()]);
        options.chunk_size = chunk_size;
        let events = Arc::new(Events::default());
        let client = Client::new(options, DockerConfig::default()).with_reporter(events.clone());
        let target = reference(&proxy.host(), repo);
        assert_eq!(
            client
                .push_blob(&target, &descriptor, &path, None)
                .await
                .unwrap(),
            BlobOutcome::Uploaded
        );
        assert!(
            events
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.starts_with("retry")),
            "{repo}: {:?}",
            events.0.lock().unwrap()
        );
        // What arrived is the whole blob: read it back directly from the registry.
        let direct = Client::new(plain_options(&[registry.host()]), DockerConfig::default());
        let back = dir.path().join(format!("back-{chunk_size}"));
        direct
            .fetch_blob(&reference(&registry.host(), repo), &descriptor, &back)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
    }
    assert_eq!(proxy.applied(0), 1);
    assert_eq!(proxy.applied(1), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_no_trusted_ca_signed_is_refused() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain().tls()).unwrap();
    let image = TestImage::single(b"ca").unwrap();
    image
        .push(&registry, "c/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let r = reference(&registry.host(), "c/app:1");
    // The system's roots (loaded at the first certificate checked) do not vouch for the
    // test CA: refused, and the error says why.
    let options = RegistryOptions {
        pull_retries: 0,
        ..RegistryOptions::default()
    };
    let err = Client::new(options, DockerConfig::default())
        .fetch_manifest(&r)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // With the registry's CA it is trusted.
    Client::new(tls_options(&registry), DockerConfig::default())
        .fetch_manifest(&r)
        .await
        .unwrap();
}
