use base64::Engine as _;
use kiln_test::{
    http_get, skopeo, ManifestFormat, PushOptions, Registry, RegistryOptions, TestImage,
};

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn htpasswd_registry_answers_401_anonymously_and_200_with_credentials() {
    let registry = Registry::start(RegistryOptions::plain().htpasswd("alice", "s3cret")).unwrap();
    let anonymous = http_get(registry.addr(), "/v2/", &[]).unwrap();
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"kiln-test\"")
    );
    let wrong = http_get(
        registry.addr(),
        "/v2/",
        &[("Authorization", &basic("alice", "nope"))],
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let ok = http_get(
        registry.addr(),
        "/v2/",
        &[("Authorization", &basic("alice", "s3cret"))],
    )
    .unwrap();
    assert_eq!(ok.status, 200);
}

#[test]
fn tls_registry_with_htpasswd_serves_only_verified_authenticated_clients() {
    let registry = Registry::start(
        RegistryOptions::plain()
            .tls()
            .htpasswd("alice", "s3cret")
            .htpasswd("bob", "hunter2"),
    )
    .unwrap();
    assert!(registry.url().starts_with("https://127.0.0.1:"));
    let ca = std::fs::read(registry.ca_pem_path().unwrap()).unwrap();
    assert_eq!(ca, registry.ca_pem().unwrap());
    assert!(String::from_utf8_lossy(&ca).starts_with("-----BEGIN CERTIFICATE-----"));
    let cert_dir = registry.cert_dir().unwrap().to_str().unwrap().to_string();

    // Push verifies the server certificate against the generated CA.
    let image = TestImage::single(b"tls").unwrap();
    let digest = image
        .push(
            &registry,
            "demo/app:v1",
            &PushOptions::new(ManifestFormat::Oci).creds("alice", "s3cret"),
        )
        .unwrap();
    let target = format!("docker://{}/demo/app:v1", registry.host());

    let anonymous = skopeo(["inspect", "--cert-dir", &cert_dir, &target]);
    assert!(!anonymous.status.success());
    assert!(
        stderr(&anonymous).contains("authentication required"),
        "{}",
        stderr(&anonymous)
    );

    let wrong = skopeo([
        "inspect",
        "--cert-dir",
        &cert_dir,
        "--creds",
        "bob:nope",
        &target,
    ]);
    assert!(!wrong.status.success());

    let ok = skopeo([
        "inspect",
        "--cert-dir",
        &cert_dir,
        "--creds",
        "bob:hunter2",
        &target,
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let info: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(info["Digest"], digest);

    // Without the CA the certificate is not trusted.
    let untrusted = skopeo(["inspect", "--creds", "bob:hunter2", &target]);
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("unknown authority"),
        "{}",
        stderr(&untrusted)
    );
}

#[test]
fn mutual_tls_registry_requires_the_client_certificate() {
    let registry = Registry::start(RegistryOptions::plain().mutual_tls()).unwrap();
    let (cert, key) = registry.client_cert_paths().unwrap();
    assert!(std::fs::read_to_string(cert)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(key)
        .unwrap()
        .contains("BEGIN PRIVATE KEY"));
    assert!(registry.client_ca_pem_path().unwrap().exists());

    // The push helper uses the client cert dir (ca.crt + client.cert + client.key).
    let image = TestImage::single(b"mtls").unwrap();
    let digest = image
        .push(
            &registry,
            "demo/mtls:v1",
            &PushOptions::new(ManifestFormat::V2s2),
        )
        .unwrap();
    let target = format!("docker://{}/demo/mtls:v1", registry.host());

    let ca_only = registry.cert_dir().unwrap().to_str().unwrap().to_string();
    let without = skopeo(["inspect", "--cert-dir", &ca_only, &target]);
    assert!(!without.status.success());
    assert!(
        stderr(&without).contains("bad certificate"),
        "{}",
        stderr(&without)
    );

    let with_dir = registry
        .client_cert_dir()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let with = skopeo(["inspect", "--cert-dir", &with_dir, &target]);
    assert!(with.status.success(), "{}", stderr(&with));
    let info: serde_json::Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(info["Digest"], digest);
}
