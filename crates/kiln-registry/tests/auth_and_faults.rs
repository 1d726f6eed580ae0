//! Credentials in every config.json form, malformed configs, Retry-After, uploads through
//! faults, secrets kept out of logs and errors, and refused pushes: kiln's registry client
//! against the real Distribution registry and token server that `kiln-test` starts on
//! 127.0.0.1, with skopeo as the independent reader.

use base64::Engine;
use kiln_oci::{media_type, Digest, Platform};
use kiln_registry::credentials::CredentialError;
use kiln_registry::{Client, Credential, DockerConfig, Reference, RegistryError, Reporter, Secret};
use kiln_test::{
    http_request, skopeo_checked, Fault, FaultAction, FaultProxy, ManifestFormat, PushOptions,
    Registry, TestImage, TokenAuthOptions, TokenServer,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::*;

const USER: &str = "builder";
const PASSWORD: &str = "pa55-w0rd-never-printed";
const WRONG: &str = "wrong-secret-value-42";
const READER: &str = "reader";
const READER_PASSWORD: &str = "reader-pa55-never-printed";

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn token_registry(options: TokenAuthOptions) -> Registry {
    Registry::start(kiln_test::RegistryOptions::plain().token_auth(options)).unwrap()
}

/// Pushes every blob of `image`, then its manifest, to `target`; returns the manifest digest.
async fn push_whole_image(client: &Client, target: &Reference, image: &TestImage) -> Digest {
    let (bytes, manifest) = image_manifest(image);
    push_blobs(client, target, image, &manifest, None).await;
    client
        .push_manifest(target, &bytes, media_type::OCI_MANIFEST)
        .await
        .unwrap()
}

/// Pulls `r` completely: manifest, config and layers, verified.
async fn pull(client: &Client, r: &Reference) -> Result<Digest, RegistryError> {
    let resolved = client.resolve(r, &amd64()).await?;
    let dir = tempfile::tempdir().unwrap();
    client
        .fetch_blobs(&resolved.source, &resolved.manifest.layers, dir.path())
        .await?;
    Ok(resolved.digest)
}

/// The token server's OAuth2 password grant, as `docker login` does for registries that give
/// out identity tokens; returns the refresh token.
fn password_grant(token_server: &TokenServer, user: &str, password: &str, scope: &str) -> String {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "password")
        .append_pair("username", user)
        .append_pair("password", password)
        .append_pair("service", token_server.service())
        .append_pair("scope", scope)
        .append_pair("client_id", "kiln-test")
        .append_pair("access_type", "offline")
        .finish();
    let response = http_request(
        token_server.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let v: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let refresh = v["refresh_token"].as_str().unwrap().to_string();
    assert!(!refresh.is_empty());
    refresh
}

/// Writes `docker-credential-<name>` into `dir` without this process ever holding the
/// executable open for writing (a concurrent fork in another test thread would otherwise make
/// running it fail with ETXTBSY).
fn install_helper(dir: &Path, name: &str, script: &str) {
    let source = dir.join(format!("{name}.sh"));
    std::fs::write(&source, script).unwrap();
    let status = std::process::Command::new("install")
        .arg("-m")
        .arg("0755")
        .arg(&source)
        .arg(dir.join(format!("docker-credential-{name}")))
        .status()
        .unwrap();
    assert!(status.success());
}

/// A helper that logs each call to `calls.log` and knows `host` only.
fn logging_helper(dir: &Path, name: &str, host: &str, user: &str, password: &str) -> PathBuf {
    let log = dir.join(format!("{name}-calls.log"));
    install_helper(
        dir,
        name,
        &format!(
            r#"#!/bin/sh
server=$(cat)
echo "$1 $server" >> '{log}'
if [ "$server" = '{host}' ]; then
  printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{password}"}}' "$server"
  exit 0
fi
echo "credentials not found in native keychain" >&2
exit 1
"#,
            log = log.display()
        ),
    );
    log
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Records retries with their delays.
#[derive(Default)]
struct Retries(Mutex<Vec<(String, Duration)>>);
impl Reporter for Retries {
    fn retry(
        &self,
        request: &kiln_registry::error::RequestInfo,
        _attempt: u32,
        delay: Duration,
        reason: &str,
    ) {
        self.0
            .lock()
            .unwrap()
            .push((format!("{request}: {reason}"), delay));
    }
}

// 1. config.json forms against real registries.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identitytoken_is_exchanged_with_the_refresh_grant() {
    let registry = token_registry(TokenAuthOptions::new().user(USER, PASSWORD));
    let image = TestImage::single(b"identity").unwrap();
    let pushed = image
        .push(
            &registry,
            "private/app:1",
            &PushOptions::new(ManifestFormat::Oci).creds(USER, PASSWORD),
        )
        .unwrap();
    let token_server = registry.token_server().unwrap();
    let refresh = password_grant(token_server, USER, PASSWORD, "repository:private/app:pull");
    token_server.clear_requests();

    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            r#"{{"auths": {{"{}": {{"identitytoken": "{refresh}"}}}}}}"#,
            registry.host()
        ),
    );
    assert_eq!(
        config.credential_for(&registry.host()).unwrap(),
        Credential::IdentityToken(Secret::new(refresh.clone()))
    );
    let client = Client::new(plain_options(&[registry.host()]), config);
    let r = reference(&registry.host(), "private/app:1");
    assert_eq!(pull(&client, &r).await.unwrap().to_string(), pushed);

    let requests = token_server.requests();
    assert_eq!(requests.len(), 1, "one token, cached: {requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.grant_type.as_deref(), Some("refresh_token"));
    assert!(request.refresh_token_sent);
    assert!(!request.credentials_sent, "no password was sent");
    assert_eq!(request.user.as_deref(), Some(USER));
    assert_eq!(request.service.as_deref(), Some(token_server.service()));
    assert_eq!(request.scopes, ["repository:private/app:pull"]);
    assert_eq!(request.status, 200);

    // A refresh token the server never issued: the error names the POST and the 401.
    let bogus = "kiln-refresh-not-issued-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            r#"{{"auths": {{"{}": {{"identitytoken": "{bogus}"}}}}}}"#,
            registry.host()
        ),
    );
    let err = Client::new(plain_options(&[registry.host()]), config)
        .fetch_manifest(&r)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "authentication to {} failed: POST {}: 401",
            registry.host(),
            token_server.realm()
        )),
        "{text}"
    );
    assert!(text.contains("invalid refresh token"), "{text}");
    for shown in [text, format!("{err:?}")] {
        assert!(
            !shown.contains(bogus) && !shown.contains(&refresh),
            "{shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrytoken_is_sent_as_is_without_the_token_server() {
    let registry = token_registry(TokenAuthOptions::new().user(USER, PASSWORD));
    let image = TestImage::single(b"registrytoken").unwrap();
    let pushed = image
        .push(
            &registry,
            "private/app:1",
            &PushOptions::new(ManifestFormat::Oci).creds(USER, PASSWORD),
        )
        .unwrap();
    let token_server = registry.token_server().unwrap();
    token_server.clear_requests();
    let r = reference(&registry.host(), "private/app:1");
    let with_token = |token: &str| {
        let dir = tempfile::tempdir().unwrap();
        let config = config_file(
            dir.path(),
            &format!(
                r#"{{"auths": {{"{}": {{"registrytoken": "{token}"}}}}}}"#,
                registry.host()
            ),
        );
        Client::new(plain_options(&[registry.host()]), config)
    };

    let token = token_server
        .mint_token(Some(USER), &["repository:private/app:pull"])
        .unwrap();
    assert_eq!(
        pull(&with_token(&token), &r).await.unwrap().to_string(),
        pushed
    );

    // The token really is what grants access: one for another repository is refused.
    let other = token_server
        .mint_token(Some(USER), &["repository:other/app:pull"])
        .unwrap();
    let err = with_token(&other).fetch_manifest(&r).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "GET http://{}/v2/private/app/manifests/1: 401",
            registry.host()
        )),
        "{err}"
    );
    assert!(
        token_server.requests().is_empty(),
        "the token server was asked: {:?}",
        token_server.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_password_fields_and_docker_hub_keys_stay_on_docker_hub() {
    let registry = Registry::start(
        kiln_test::RegistryOptions::plain()
            .tls()
            .htpasswd(USER, PASSWORD),
    )
    .unwrap();
    let image = TestImage::single(b"fields").unwrap();
    let pushed = image
        .push(
            &registry,
            "team/app:1",
            &PushOptions::new(ManifestFormat::Oci).creds(USER, PASSWORD),
        )
        .unwrap();
    let r = reference(&registry.host(), "team/app:1");

    // `username` and `password` instead of `auth`.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            r#"{{"auths": {{"https://{}/v2/": {{"username": "{USER}", "password": "{PASSWORD}"}}}}}}"#,
            registry.host()
        ),
    );
    let client = Client::new(tls_options(&registry), config);
    assert_eq!(pull(&client, &r).await.unwrap().to_string(), pushed);
    client.check_push_access(&r).await.unwrap();

    // Every Docker Hub spelling holds the right password, yet none applies to this registry.
    let auth = b64(&format!("{USER}:{PASSWORD}"));
    let hub_keys = [
        "https://index.docker.io/v1/",
        "index.docker.io",
        "docker.io",
        "registry-1.docker.io",
        "https://registry-1.docker.io",
    ];
    let entries: Vec<String> = hub_keys
        .iter()
        .map(|k| format!(r#""{k}": {{"auth": "{auth}"}}"#))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(r#"{{"auths": {{{}}}}}"#, entries.join(", ")),
    );
    assert_eq!(
        config.credential_for("docker.io").unwrap(),
        Credential::Basic {
            username: USER.into(),
            password: Secret::new(PASSWORD),
        }
    );
    assert_eq!(
        config.credential_for(&registry.host()).unwrap(),
        Credential::Anonymous
    );
    let client = Client::new(tls_options(&registry), config);
    let err = client.check_push_access(&r).await.unwrap_err().to_string();
    assert!(err.contains("requires a user name and password"), "{err}");

    // The same for credHelpers under Docker Hub keys: the helper is never run for this host.
    let dir = tempfile::tempdir().unwrap();
    let log = logging_helper(
        dir.path(),
        "hub",
        "https://index.docker.io/v1/",
        USER,
        PASSWORD,
    );
    let helpers: Vec<String> = hub_keys
        .iter()
        .map(|k| format!(r#""{k}": "hub""#))
        .collect();
    let config = config_file(
        dir.path(),
        &format!(r#"{{"credHelpers": {{{}}}}}"#, helpers.join(", ")),
    )
    .with_helper_dir(dir.path());
    let client = Client::new(tls_options(&registry), config);
    let err = client.fetch_manifest(&r).await.unwrap_err().to_string();
    assert!(err.contains("requires a user name and password"), "{err}");
    assert!(calls(&log).is_empty(), "{:?}", calls(&log));
    assert_eq!(
        client.docker_config().credential_for("docker.io").unwrap(),
        Credential::Basic {
            username: USER.into(),
            password: Secret::new(PASSWORD),
        }
    );
    assert_eq!(calls(&log), ["get https://index.docker.io/v1/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_helper_serves_a_tls_registry_with_htpasswd() {
    let registry = Registry::start(
        kiln_test::RegistryOptions::plain()
            .tls()
            .htpasswd(USER, PASSWORD),
    )
    .unwrap();
    let image = TestImage::single(b"helper").unwrap();
    let pushed = image
        .push(
            &registry,
            "team/app:1",
            &PushOptions::new(ManifestFormat::Oci).creds(USER, PASSWORD),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = logging_helper(dir.path(), "kilntest", &registry.host(), USER, PASSWORD);
    let config = config_file(
        dir.path(),
        &format!(
            r#"{{"credHelpers": {{"{}": "kilntest"}}}}"#,
            registry.host()
        ),
    )
    .with_helper_dir(dir.path());
    let client = Client::new(tls_options(&registry), config);
    let r = reference(&registry.host(), "team/app:1");
    assert_eq!(pull(&client, &r).await.unwrap().to_string(), pushed);
    let target = reference(&registry.host(), "team/copy:1");
    client.check_push_access(&target).await.unwrap();
    let digest = push_whole_image(&client, &target, &image).await;
    assert_eq!(digest.to_string(), pushed);
    assert_eq!(
        calls(&log),
        [format!("get {}", registry.host())],
        "asked once, with the registry on stdin"
    );

    // A helper that knows nothing of the registry means anonymous, which it refuses.
    let dir = tempfile::tempdir().unwrap();
    let log = logging_helper(dir.path(), "elsewhere", "other.example.com", USER, PASSWORD);
    let config = config_file(
        dir.path(),
        &format!(
            r#"{{"credHelpers": {{"{}": "elsewhere"}}}}"#,
            registry.host()
        ),
    )
    .with_helper_dir(dir.path());
    let err = Client::new(tls_options(&registry), config)
        .fetch_manifest(&r)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requires a user name and password"), "{err}");
    assert_eq!(calls(&log), [format!("get {}", registry.host())]);
}

// 2. Malformed and misplaced config.

#[test]
fn malformed_configs_name_the_file_and_never_echo_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-in-config";
    let encoded = b64(&format!("{USER}:{secret}"));
    let cases = [
        // Not JSON: cut off.
        (
            "truncated",
            format!(r#"{{"auths": {{"r.example.com": {{"auth": "{encoded}"}}"#),
            None,
        ),
        // Not JSON: an unquoted password.
        (
            "unquoted",
            format!(
                r#"{{"auths": {{"r.example.com": {{"username": "u", "password": {secret}}}}}}}"#
            ),
            None,
        ),
        // JSON, but the entry is the bare base64 string instead of {"auth": …}.
        (
            "bare-string",
            format!(r#"{{"auths": {{"r.example.com": "{encoded}"}}}}"#),
            None,
        ),
        // JSON, but the password is not a string.
        (
            "password-array",
            format!(
                r#"{{"auths": {{"r.example.com": {{"username": "u", "password": ["{secret}"]}}}}}}"#
            ),
            None,
        ),
        // `auth` that is not base64.
        (
            "not-base64",
            format!(r#"{{"auths": {{"r.example.com": {{"auth": "{USER}:{secret}!"}}}}}}"#),
            Some(r#"auths["r.example.com"].auth: not valid base64"#),
        ),
        // base64 of something without a colon.
        (
            "no-colon",
            format!(
                r#"{{"auths": {{"r.example.com": {{"auth": "{}"}}}}}}"#,
                b64(secret)
            ),
            Some(r#"auths["r.example.com"].auth: does not decode to user:password"#),
        ),
    ];
    for (name, json, expected) in cases {
        let path = dir.path().join(name).join("config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &json).unwrap();
        let err = DockerConfig::locate(std::slice::from_ref(&path)).unwrap_err();
        assert!(
            matches!(err, CredentialError::Malformed { .. }),
            "{name}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("docker config {} is not valid: ", path.display())),
            "{name}: {text}"
        );
        if let Some(expected) = expected {
            assert!(text.contains(expected), "{name}: {text}");
        }
        for shown in [text, format!("{err:?}")] {
            for leaked in [secret, encoded.as_str(), &encoded[..12]] {
                assert!(!shown.contains(leaked), "{name} shows {leaked:?}: {shown}");
            }
        }
    }
}

#[test]
fn a_config_path_that_is_a_directory_is_a_clear_error() {
    // A Kubernetes secret mounted as a directory where config.json was expected.
    let dir = tempfile::tempdir().unwrap();
    let mounted = dir.path().join("kaniko/.docker/config.json");
    std::fs::create_dir_all(&mounted).unwrap();
    std::fs::write(
        mounted.join(".dockerconfigjson"),
        format!(
            r#"{{"auths": {{"r.example.com": {{"auth": "{}"}}}}}}"#,
            b64("u:p")
        ),
    )
    .unwrap();
    let fallback = dir.path().join("home/.docker/config.json");
    std::fs::create_dir_all(fallback.parent().unwrap()).unwrap();
    std::fs::write(&fallback, r#"{"auths": {}}"#).unwrap();

    // Not silently skipped in favour of the next file: the error names the directory.
    let err = DockerConfig::locate(&[mounted.clone(), fallback]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("docker config {} ", mounted.display())),
        "{text}"
    );
    assert!(text.contains("is a directory, not a file"), "{text}");
}

// 3. Retry-After.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_503_retries_quickly() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"retry-after").unwrap();
    let pushed = image
        .push(&registry, "r/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();

    for (action, slow) in [
        (FaultAction::TooManyRequests, true),
        (FaultAction::ServiceUnavailable, false),
    ] {
        let proxy = FaultProxy::start(
            registry.addr(),
            vec![Fault::new(action)
                .method("GET")
                .path("/manifests/1")
                .times(1)],
        )
        .unwrap();
        let retries = Arc::new(Retries::default());
        let client = Client::new(plain_options(&[proxy.host()]), DockerConfig::default())
            .with_reporter(retries.clone());
        // Warm up (scheme probe, connection) with a request the fault does not match.
        client
            .fetch_manifest(&reference(&proxy.host(), &format!("r/app@{pushed}")))
            .await
            .unwrap();
        let started = Instant::now();
        let fetched = client
            .fetch_manifest(&reference(&proxy.host(), "r/app:1"))
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(fetched.digest.to_string(), pushed);
        assert_eq!(proxy.applied(0), 1, "{action:?} was injected");
        let retries = retries.0.lock().unwrap().clone();
        assert_eq!(retries.len(), 1, "{retries:?}");
        let (what, delay) = &retries[0];
        assert!(
            what.starts_with(&format!(
                "GET http://{}/v2/r/app/manifests/1: ",
                proxy.host()
            )),
            "{what}"
        );
        if slow {
            assert!(what.contains("429"), "{what}");
            assert_eq!(*delay, Duration::from_secs(1), "Retry-After: 1");
            assert!(
                elapsed >= Duration::from_millis(900),
                "waited only {elapsed:?}"
            );
        } else {
            assert!(what.contains("503"), "{what}");
            // The backoff chosen, not wall time (no timing assertions that a slow machine
            // could break): a 503 without Retry-After waits only the (jittered) base delay.
            assert!(*delay <= Duration::from_millis(20), "{delay:?}");
        }
    }

    // No retries: the 503 is the answer, named with its request and the registry's words.
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::new(FaultAction::ServiceUnavailable)
            .method("GET")
            .path("/manifests/1")
            .times(5)],
    )
    .unwrap();
    let mut options = plain_options(&[proxy.host()]);
    options.pull_retries = 0;
    let err = Client::new(options, DockerConfig::default())
        .fetch_manifest(&reference(&proxy.host(), "r/app:1"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "GET http://{}/v2/r/app/manifests/1: 503",
            proxy.host()
        )),
        "{text}"
    );
    assert!(text.contains("UNAVAILABLE"), "{text}");
    assert_eq!(proxy.matched(0), 1, "asked once, not retried");
}

// 4. Uploads survive faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_503_on_put_and_on_chunked_patch() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    // Incompressible contents, so the gzip layer is several chunks long.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let contents: Vec<u8> = (0..6000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    let image = TestImage::single(&contents).unwrap();
    let blobs = &image.images()[0];
    assert!(blobs.layer_size > 4096, "{}", blobs.layer_size);

    for (method, repo) in [("PUT", "monolithic/app"), ("PATCH", "chunked/app")] {
        let proxy = FaultProxy::start(
            registry.addr(),
            vec![Fault::new(FaultAction::ServiceUnavailable)
                .method(method)
                .path("/blobs/uploads/")
                .times(1)],
        )
        .unwrap();
        let mut options = plain_options(&[proxy.host()]);
        if method == "PATCH" {
            options.chunk_size = 1024;
        }
        let client = Client::new(options, DockerConfig::default());
        let target = reference(&proxy.host(), &format!("{repo}:1"));
        let digest = push_whole_image(&client, &target, &image).await;
        assert_eq!(digest.to_string(), blobs.manifest_digest);
        assert_eq!(proxy.applied(0), 1, "{method}: the 503 was injected");
        let seen = proxy.requests();
        let faulted: Vec<_> = seen.iter().filter(|r| r.fault.is_some()).collect();
        assert_eq!(faulted[0].method, method);
        let patches = seen.iter().filter(|r| r.method == "PATCH").count();
        if method == "PATCH" {
            // 5+ chunks of the layer, plus the one answered 503 and sent again.
            assert!(patches > 5, "{seen:?}");
        } else {
            assert_eq!(patches, 0, "{seen:?}");
            assert!(faulted[0].target.contains("digest=sha256"), "{faulted:?}");
        }

        let inspected = skopeo_checked([
            "inspect".to_string(),
            "--tls-verify=false".to_string(),
            format!("docker://{}/{repo}:1", registry.host()),
        ])
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
        assert_eq!(v["Digest"], blobs.manifest_digest.as_str(), "{method}");
        assert_eq!(v["Layers"][0], blobs.layer_digest.as_str(), "{method}");
        // And the layer bytes are intact: skopeo copies the image out and verifies them.
        let out = tempfile::tempdir().unwrap();
        skopeo_checked([
            "copy".to_string(),
            "--quiet".to_string(),
            "--src-tls-verify=false".to_string(),
            format!("docker://{}/{repo}:1", registry.host()),
            format!("oci:{}:copy", out.path().display()),
        ])
        .unwrap();
        let hex = blobs.layer_digest.strip_prefix("sha256:").unwrap();
        let layer = std::fs::read(out.path().join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(Digest::of(&layer).to_string(), blobs.layer_digest);
    }
}

// 5. Secrets never logged.

/// A `MakeWriter` collecting everything the subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

#[test]
fn secrets_never_appear_in_logs_or_errors() {
    // The only subscriber in this test binary, and global: a thread-local one (`set_default`)
    // misses events whose callsite another test's thread registered first while it was the only
    // dispatcher (tracing then caches that thread's "never" interest). Being global, it also
    // sees the other tests' requests, which use the same secrets.
    // reqwest and rustls log through `log`: forward that to tracing too.
    tracing_log::LogTracer::init().unwrap();
    let buffer = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buffer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        WRONG.into(),
        READER_PASSWORD.into(),
        b64(&format!("{USER}:{PASSWORD}")),
        b64(&format!("{USER}:{WRONG}")),
    ];
    let mut shown: Vec<String> = Vec::new();
    let image = TestImage::single(b"secrets").unwrap();

    let (refresh, minted) = runtime.block_on(async {
        // Basic auth over TLS: pull, push, and a wrong password.
        let basic = Registry::start(
            kiln_test::RegistryOptions::plain()
                .tls()
                .htpasswd(USER, PASSWORD),
        )
        .unwrap();
        image
            .push(
                &basic,
                "team/app:1",
                &PushOptions::new(ManifestFormat::Oci).creds(USER, PASSWORD),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(
            tls_options(&basic),
            basic_config(dir.path(), &basic.host(), USER, PASSWORD),
        );
        pull(&client, &reference(&basic.host(), "team/app:1"))
            .await
            .unwrap();
        let target = reference(&basic.host(), "team/copy:1");
        client.check_push_access(&target).await.unwrap();
        push_whole_image(&client, &target, &image).await;
        shown.push(format!("{client:?}"));
        shown.push(format!("{:?}", client.docker_config()));
        let wrong = Client::new(
            tls_options(&basic),
            basic_config(dir.path(), &basic.host(), USER, WRONG),
        );
        let err = wrong
            .fetch_manifest(&reference(&basic.host(), "team/app:1"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");
        shown.extend([err.to_string(), format!("{err:?}")]);
        let err = wrong.check_push_access(&target).await.unwrap_err();
        shown.extend([err.to_string(), format!("{err:?}"), format!("{wrong:?}")]);

        // Token auth behind a proxy that answers one 503, so a retry is logged.
        let registry = token_registry(TokenAuthOptions::new().user(USER, PASSWORD));
        image
            .push(
                &registry,
                "private/app:1",
                &PushOptions::new(ManifestFormat::Oci).creds(USER, PASSWORD),
            )
            .unwrap();
        let token_server = registry.token_server().unwrap();
        let proxy = FaultProxy::start(
            registry.addr(),
            vec![Fault::new(FaultAction::ServiceUnavailable)
                .method("GET")
                .path("/manifests/")
                .times(1)],
        )
        .unwrap();
        let host = proxy.host();
        let r = reference(&host, "private/app:1");
        let client = Client::new(
            plain_options(std::slice::from_ref(&host)),
            basic_config(dir.path(), &host, USER, PASSWORD),
        );
        pull(&client, &r).await.unwrap();
        let target = reference(&host, "private/copy:1");
        client.check_push_access(&target).await.unwrap();
        push_whole_image(&client, &target, &image).await;
        assert_eq!(proxy.applied(0), 1);

        let refresh = password_grant(token_server, USER, PASSWORD, "repository:private/app:pull");
        let minted = token_server
            .mint_token(Some(USER), &["repository:private/app:pull"])
            .unwrap();
        secrets.extend([refresh.clone(), minted.clone()]);
        for entry in [
            format!(r#"{{"identitytoken": "{refresh}"}}"#),
            format!(r#"{{"registrytoken": "{minted}"}}"#),
        ] {
            let config = config_file(
                dir.path(),
                &format!(r#"{{"auths": {{"{host}": {entry}}}}}"#),
            );
            shown.push(format!("{config:?}"));
            let client = Client::new(plain_options(std::slice::from_ref(&host)), config);
            pull(&client, &r).await.unwrap();
            shown.push(format!("{client:?}"));
        }

        let wrong = Client::new(
            plain_options(std::slice::from_ref(&host)),
            basic_config(dir.path(), &host, USER, WRONG),
        );
        let err = wrong.fetch_manifest(&r).await.unwrap_err();
        assert!(
            err.to_string().contains("incorrect username or password"),
            "{err}"
        );
        shown.extend([err.to_string(), format!("{err:?}")]);
        let err = wrong.check_push_access(&target).await.unwrap_err();
        shown.extend([err.to_string(), format!("{err:?}")]);
        let config = config_file(
            dir.path(),
            &format!(r#"{{"auths": {{"{host}": {{"identitytoken": "{refresh}x"}}}}}}"#),
        );
        let err = Client::new(plain_options(std::slice::from_ref(&host)), config)
            .fetch_manifest(&r)
            .await
            .unwrap_err();
        shown.extend([err.to_string(), format!("{err:?}")]);
        (refresh, minted)
    });

    // Every config form, printed.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            r#"{{"auths": {{
                "a.example.com": {{"auth": "{}"}},
                "b.example.com": {{"username": "{USER}", "password": "{PASSWORD}"}},
                "c.example.com": {{"identitytoken": "{}"}},
                "d.example.com": {{"registrytoken": "{}"}}
            }}}}"#,
            b64(&format!("{USER}:{PASSWORD}")),
            refresh,
            minted
        ),
    );
    shown.push(format!("{config:?}"));
    for host in [
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "d.example.com",
    ] {
        let credential = config.credential_for(host).unwrap();
        assert_ne!(credential, Credential::Anonymous, "{host}");
        shown.push(format!("{credential:?}"));
    }

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let tail = &log[log.char_indices().rev().nth(3000).map_or(0, |(i, _)| i)..];
    assert!(
        log.contains("retrying") && log.contains("503"),
        "the log was captured: …{tail}"
    );
    assert!(
        log.lines().count() > 20,
        "dependencies' logs were captured too: …{tail}"
    );
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "the log shows {secret:?}");
        for text in &shown {
            assert!(!text.contains(secret.as_str()), "{secret:?} in {text}");
        }
    }
    // No JWT at all (their header always encodes as `eyJ…`), not only the ones known here.
    assert!(!log.contains("eyJ"), "a token in the log");
    for text in &shown {
        assert!(!text.contains("eyJ"), "a token in {text}");
    }
}

// 6. Push to a registry that forbids it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_only_user_is_refused_before_anything_is_uploaded() {
    let registry = token_registry(
        TokenAuthOptions::new()
            .user(USER, PASSWORD)
            .pull_only_user(READER, READER_PASSWORD),
    );
    let image = TestImage::single(b"pull only").unwrap();
    let pushed = image
        .push(
            &registry,
            "team/app:1",
            &PushOptions::new(ManifestFormat::Oci).creds(USER, PASSWORD),
        )
        .unwrap();
    let token_server = registry.token_server().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(
        plain_options(&[registry.host()]),
        basic_config(dir.path(), &registry.host(), READER, READER_PASSWORD),
    );
    // The credentials are good: the user can pull.
    let r = reference(&registry.host(), "team/app:1");
    assert_eq!(pull(&client, &r).await.unwrap().to_string(), pushed);

    let repositories = registry
        .storage_dir()
        .join("docker/registry/v2/repositories");
    let uploads = |repo: &str| -> usize {
        std::fs::read_dir(repositories.join(repo).join("_uploads"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = uploads("team/app");
    for (repo, target) in [
        ("team/app", r.clone()),
        ("team/new", reference(&registry.host(), "team/new:1")),
    ] {
        token_server.clear_requests();
        let err = client.check_push_access(&target).await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "POST http://{}/v2/{repo}/blobs/uploads/: 401",
                registry.host()
            )),
            "{text}"
        );
        assert!(
            text.contains("UNAUTHORIZED") || text.contains("DENIED"),
            "{text}"
        );
        let requests = token_server.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!(requests[0].user.as_deref(), Some(READER));
        assert_eq!(requests[0].scopes, [format!("repository:{repo}:pull,push")]);
        assert_eq!(requests[0].granted, [format!("repository:{repo}:pull")]);
    }
    assert_eq!(uploads("team/app"), before, "no upload session was opened");
    assert!(
        !repositories.join("team/new").exists(),
        "nothing was stored for the new repository"
    );
}
