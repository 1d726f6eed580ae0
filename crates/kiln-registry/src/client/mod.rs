//! The registry client: one request path (auth, retries, scheme) under pull and push.
//!
//! Pull: manifests by tag or digest with an Accept header covering OCI and Docker schema 2,
//! index resolution by platform, blobs streamed to disk with their digest verified (resumed with
//! `Range` after a broken transfer), mirrors and `--registry-map` tried in order.
//! Push: blob HEAD first, cross-repository mounts, monolithic or chunked uploads streamed from
//! files, manifests only after their blobs, a push-permission check.

mod download;
mod pull;
mod push;

pub use download::Download;
pub use pull::BlobSink;
pub use push::is_foreign;

use crate::auth::{without_url, AuthCache, AuthHeader};
use crate::credentials::{ConfigAnswer, Credential, CredentialError, DockerConfig};
use crate::error::{RegistryError, RequestInfo};
use crate::reference::Reference;
use crate::transport::{Clients, Direction, TransportOptions};
use kiln_oci::{Descriptor, Digest, ImageManifest};
use reqwest::{Method, StatusCode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every manifest type kiln reads, for the Accept header.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (the distribution spec's limit is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Image configs larger than this are refused: they are held in memory, and real ones are a
/// few KiB (a long history makes them some hundred).
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// How much of an error response's body is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Registry behaviour not tied to one host.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// TLS and plain-HTTP settings.
    pub transport: TransportOptions,
    /// `--registry-mirror host[/path]` (repeatable): tried in order for Docker Hub images.
    pub mirrors: Vec<String>,
    /// `--skip-default-registry-fallback`: do not fall back to Docker Hub when mirrors fail.
    pub skip_default_registry_fallback: bool,
    /// `--registry-map orig=new[;new2]`: registries to use instead of `orig`, in order.
    pub registry_map: BTreeMap<String, Vec<String>>,
    /// `--image-download-retry`: retries of a failed pull request.
    pub pull_retries: u32,
    /// `--push-retry`: retries of a failed push request.
    pub push_retries: u32,
    /// Blobs larger than this are uploaded in PATCH chunks of this size.
    pub chunk_size: u64,
    /// Blob downloads at the same time.
    pub concurrency: usize,
    /// First retry delay (doubled each time, with jitter).
    pub retry_base_delay: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            transport: TransportOptions::default(),
            mirrors: Vec::new(),
            skip_default_registry_fallback: false,
            registry_map: BTreeMap::new(),
            pull_retries: 3,
            push_retries: 3,
            chunk_size: 32 << 20,
            concurrency: 4,
            retry_base_delay: Duration::from_millis(250),
        }
    }
}

/// What happened to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Downloaded and verified.
    Downloaded,
    /// Uploaded.
    Uploaded,
    /// Already in the registry (HEAD): nothing sent.
    Exists,
    /// Mounted from another repository of the same registry: nothing sent.
    Mounted,
}

impl BlobOutcome {
    /// What happened, in a word for logs: `pulled`, `pushed`, `already there`, `mounted`.
    pub fn describe(self) -> &'static str {
        match self {
            BlobOutcome::Downloaded => "pulled",
            BlobOutcome::Uploaded => "pushed",
            BlobOutcome::Exists => "already there",
            BlobOutcome::Mounted => "mounted",
        }
    }
}

/// Progress events; the binary draws bars, libraries never print.
pub trait Reporter: Send + Sync {
    /// A blob transfer starts.
    fn blob_start(&self, _digest: &Digest, _size: u64, _direction: Direction) {}
    /// `bytes` more bytes moved.
    fn blob_progress(&self, _digest: &Digest, _bytes: u64) {}
    /// A blob is done.
    fn blob_done(&self, _digest: &Digest, _outcome: BlobOutcome) {}
    /// A request failed and is tried again after `delay`.
    fn retry(&self, _request: &RequestInfo, _attempt: u32, _delay: Duration, _reason: &str) {}
    /// Something the user should know that does not stop the work (a cloud's credentials
    /// could not be had, so a registry is tried without them).
    fn note(&self, _message: &str) {}
}

/// A reporter that ignores everything.
#[derive(Debug, Default)]
pub struct NoReporter;
impl Reporter for NoReporter {}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes, exactly as served (their digest is the manifest's digest).
    pub bytes: Vec<u8>,
    /// The media type (from Content-Type or the document).
    pub media_type: String,
    /// The digest of `bytes`.
    pub digest: Digest,
    /// Where it came from (after mirrors and maps).
    pub source: Reference,
}

/// An image resolved for one platform.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Where the blobs are (after mirrors and maps).
    pub source: Reference,
    /// The image manifest (an index already resolved to the platform).
    pub manifest: ImageManifest,
    /// The manifest's bytes and media type.
    pub manifest_bytes: Vec<u8>,
    /// Its media type.
    pub manifest_media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// The digest of the index it was picked from, if any.
    pub index_digest: Option<Digest>,
    /// The config blob.
    pub config: Vec<u8>,
}

/// The registry client.
pub struct Client {
    clients: Clients,
    docker_config: Arc<DockerConfig>,
    credentials: Mutex<BTreeMap<String, Credential>>,
    /// Held while credentials are looked up: a build pulls and checks push access at once, and
    /// one lookup per registry must answer both (one helper run, one provider call, one note).
    lookup: tokio::sync::Mutex<()>,
    /// Registries whose built-in provider failed (so they are tried anonymously), and why.
    provider_failures: Mutex<BTreeMap<String, String>>,
    auth: AuthCache,
    options: RegistryOptions,
    schemes: Mutex<BTreeMap<(String, Direction), &'static str>>,
    reporter: Arc<dyn Reporter>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("docker_config", &self.docker_config.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Where one request goes.
struct Target {
    /// The API host (`registry-1.docker.io` for Docker Hub).
    host: String,
    direction: Direction,
    /// Token scope(s), space separated.
    scope: String,
}

impl Target {
    /// Reading `reference`'s repository.
    fn pull(reference: &Reference, direction: Direction) -> Target {
        Target {
            host: reference.api_host().to_string(),
            direction,
            scope: format!("repository:{}:pull", reference.repository),
        }
    }

    /// Writing `reference`'s repository (and reading `extra_pull`, a mount source).
    fn push(reference: &Reference, extra_pull: Option<&str>) -> Target {
        let mut scope = format!("repository:{}:pull,push", reference.repository);
        if let Some(from) = extra_pull {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        Target {
            host: reference.api_host().to_string(),
            direction: Direction::Push,
            scope,
        }
    }
}

impl Client {
    /// A client with these options and credentials.
    pub fn new(options: RegistryOptions, docker_config: DockerConfig) -> Self {
        Client {
            clients: Clients::new(options.transport.clone()),
            docker_config: Arc::new(docker_config),
            credentials: Mutex::new(BTreeMap::new()),
            lookup: tokio::sync::Mutex::new(()),
            provider_failures: Mutex::new(BTreeMap::new()),
            auth: AuthCache::default(),
            options,
            schemes: Mutex::new(BTreeMap::new()),
            reporter: Arc::new(NoReporter),
        }
    }

    /// Sends progress to `reporter`.
    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The docker config in use.
    pub fn docker_config(&self) -> &DockerConfig {
        &self.docker_config
    }

    async fn credential(&self, registry: &str) -> Result<Credential, RegistryError> {
        let known = || {
            self.credentials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(registry)
                .cloned()
        };
        if let Some(c) = known() {
            return Ok(c);
        }
        let _one_at_a_time = self.lookup.lock().await;
        // Another request may have looked it up while this one waited.
        if let Some(c) = known() {
            return Ok(c);
        }
        let config = self.docker_config.clone();
        let host = registry.to_string();
        // Credential helpers are processes: keep them off the async threads.
        let answer = tokio::task::spawn_blocking(move || config.lookup(&host))
            .await
            .map_err(|e| RegistryError::Auth {
                registry: registry.to_string(),
                reason: format!("credential lookup failed: {e}"),
            })??;
        let from_config = matches!(answer, ConfigAnswer::Found(_));
        let source = match &answer {
            ConfigAnswer::Found(_) => "the docker config".to_string(),
            ConfigAnswer::MissingHelper { helper, .. } => {
                format!("kiln's built-in provider in place of docker-credential-{helper}")
            }
            ConfigAnswer::NoEntry => "kiln's built-in providers (no docker config entry)".into(),
        };
        let credential = self.beyond_config(registry, answer).await?;
        tracing::debug!(
            "credentials for {registry}: {} from {source}",
            match credential {
                Credential::Anonymous => "none",
                Credential::Basic { .. } => "a user name and password",
                Credential::IdentityToken(_) => "an identity token",
                Credential::RegistryToken(_) => "a registry token",
            }
        );
        // A provider's credentials expire (an hour for Google's): it keeps them as long as
        // they are good, so ask it again each time. Having none is kept: a provider that failed
        // is not asked (and its failure not told) again.
        if from_config || credential == Credential::Anonymous {
            self.credentials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(registry.to_string(), credential.clone());
        }
        Ok(credential)
    }

    /// The config's answer, or a built-in provider's where the config names a helper that is
    /// not installed or has nothing for `registry` (kaniko's keychain order: the docker config
    /// first, then the clouds' keychains).
    async fn beyond_config(
        &self,
        registry: &str,
        answer: ConfigAnswer,
    ) -> Result<Credential, CredentialError> {
        let provider = self.docker_config.provider();
        let by_name = match answer {
            ConfigAnswer::Found(credential) => return Ok(credential),
            ConfigAnswer::MissingHelper {
                helper,
                for_this_registry,
            } => match provider {
                // Named for this registry: the built-in provider must answer.
                Some(p) if for_this_registry && p.replaces_helper(&helper) => {
                    return Ok(p
                        .credential(registry, Some(&helper))
                        .await?
                        .unwrap_or_default())
                }
                // The credsStore, named for every registry: as its helper would, the provider
                // answers for its own registries only.
                Some(p) if p.replaces_helper(&helper) => p.credential(registry, None).await,
                _ => {
                    return Err(CredentialError::HelperNotFound {
                        helper,
                        registry: registry.to_string(),
                    })
                }
            },
            ConfigAnswer::NoEntry => match provider {
                Some(p) => p.credential(registry, None).await,
                None => return Ok(Credential::Anonymous),
            },
        };
        match by_name {
            Ok(credential) => Ok(credential.unwrap_or_default()),
            // Asked only because of the registry's name: public images of a cloud's registry
            // need no credentials (kaniko's keychains fall back to anonymous too). Say why, for
            // when the registry then wants them.
            Err(e) => {
                self.reporter
                    .note(&format!("{e}; going on without credentials"));
                let reason = match &e {
                    CredentialError::Provider {
                        provider, reason, ..
                    } => format!("{provider} credentials could not be had: {reason}"),
                    other => other.to_string(),
                };
                self.provider_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(registry.to_string(), reason);
                Ok(Credential::Anonymous)
            }
        }
    }

    /// `https` unless the registry may use plain HTTP and does not answer HTTPS.
    async fn scheme(
        &self,
        host: &str,
        direction: Direction,
    ) -> Result<&'static str, RegistryError> {
        let key = (host.to_string(), direction);
        if let Some(s) = self
            .schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(s);
        }
        let policy = self.options.transport.policy(host, direction);
        let scheme = if !policy.allow_http {
            "https"
        } else {
            // As docker does for insecure registries: HTTPS first, plain HTTP if that fails.
            let client = self.clients.get(host, direction)?;
            let url = format!("https://{host}/v2/");
            match client
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                Ok(_) => "https",
                Err(_) => "http",
            }
        };
        self.schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, scheme);
        Ok(scheme)
    }

    fn retries(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Pull => self.options.pull_retries,
            Direction::Push => self.options.push_retries,
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(Duration::from_secs(60));
        }
        let base = self.options.retry_base_delay.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempt.min(6)).min(10_000);
        Duration::from_millis(exp / 2 + fastrand::u64(0..=exp / 2))
    }

    /// Sends one request with authentication and retries. `build` makes the request anew for
    /// each attempt (bodies are re-created); the response of any status other than 401, 429
    /// and 5xx is returned for the caller to judge.
    async fn send<F>(
        &self,
        target: &Target,
        method: Method,
        url: &url::Url,
        build: F,
    ) -> Result<reqwest::Response, RegistryError>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        self.send_with(target, method, url, build, true).await
    }

    /// [`Client::send`], but a 429 or 5xx answer is returned at once when `retry_busy` is
    /// false: a request to an upload session, which a registry that failed it may have
    /// dropped (Distribution does, answering the same request again with 404
    /// BLOB_UPLOAD_INVALID). The upload then starts over with a new session.
    async fn send_with<F>(
        &self,
        target: &Target,
        method: Method,
        url: &url::Url,
        build: F,
        retry_busy: bool,
    ) -> Result<reqwest::Response, RegistryError>
    where
        F: Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    {
        let client = self.clients.get(&target.host, target.direction)?;
        let credential = self.credential(&target.host).await?;
        let request_info = RequestInfo::new(&method, url);
        let retries = self.retries(target.direction);
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        // The header got by answering this request's own challenge: the next attempt sends it,
        // even if a concurrent request has meanwhile changed the cache.
        let mut answer: Option<AuthHeader> = None;
        loop {
            let mut request = build(client.request(method.clone(), url.clone()));
            let sent = answer
                .take()
                .or_else(|| self.auth.cached(&target.host, &target.scope, &credential));
            let authorized = sent.is_some();
            if let Some(header) = &sent {
                request = request.header(reqwest::header::AUTHORIZATION, header.value());
            }
            let (retry_reason, retry_after) = match request.send().await {
                Err(e) => {
                    if attempt >= retries {
                        return Err(RegistryError::Connection {
                            request: request_info,
                            reason: without_url(&e),
                        });
                    }
                    (without_url(&e), None)
                }
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(
                        "{request_info} -> {status}{}",
                        if authorized { " (authorized)" } else { "" }
                    );
                    if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                        answered_challenge = true;
                        let challenge = response
                            .headers()
                            .get(reqwest::header::WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        self.auth
                            .invalidate(&target.host, &target.scope, sent.as_ref());
                        answer = Some(
                            self.auth
                                .respond(
                                    &client,
                                    &target.host,
                                    challenge.as_deref(),
                                    &target.scope,
                                    &credential,
                                )
                                .await?,
                        );
                        continue;
                    }
                    let retryable = retry_busy && is_busy(status.as_u16());
                    if !retryable || attempt >= retries {
                        if status == StatusCode::UNAUTHORIZED {
                            self.auth
                                .invalidate(&target.host, &target.scope, sent.as_ref());
                        }
                        return Ok(response);
                    }
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (format!("{status}"), retry_after)
                }
            };
            let delay = self.backoff(attempt, retry_after);
            attempt += 1;
            self.reporter
                .retry(&request_info, attempt, delay, &retry_reason);
            tracing::debug!(request = %request_info, attempt, ?delay, reason = %retry_reason, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn url(
        &self,
        host: &str,
        direction: Direction,
        path: &str,
    ) -> Result<url::Url, RegistryError> {
        let scheme = self.scheme(host, direction).await?;
        url::Url::parse(&format!("{scheme}://{host}{path}")).map_err(|e| RegistryError::Manifest {
            reference: host.to_string(),
            reason: format!("cannot form a URL for {path}: {e}"),
        })
    }

    async fn url_for(&self, target: &Target, path: &str) -> Result<url::Url, RegistryError> {
        self.url(&target.host, target.direction, path).await
    }

    /// Reads an error response's body (its first 64 KiB) into an error. A refusal from a
    /// registry whose built-in provider failed says why no credentials were sent.
    async fn status_error(
        &self,
        request: RequestInfo,
        mut response: reqwest::Response,
    ) -> RegistryError {
        let status = response.status().as_u16();
        let host = crate::transport::url_host(response.url());
        let (body, _) = read_up_to(&mut response, MAX_ERROR_BODY_BYTES)
            .await
            .unwrap_or_default();
        let error = RegistryError::from_status(request, status, &body);
        let reason = matches!(status, 401 | 403)
            .then(|| {
                self.provider_failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&host)
                    .cloned()
            })
            .flatten();
        match reason {
            Some(reason) => RegistryError::NoCredentials {
                error: Box::new(error),
                reason,
            },
            None => error,
        }
    }
}

/// Reads at most `cap` bytes of a response body, and whether that was all of it. Reading stops
/// at the cap, so a huge or endless body (a malicious registry's) costs no more than `cap`.
pub(crate) async fn read_up_to(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            body.extend_from_slice(&chunk[..cap - body.len()]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// A status that says "try again later": 429 and the transient 5xx.
pub(crate) fn is_busy(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Checks downloaded content against its descriptor.
fn check_content(
    request: &RequestInfo,
    descriptor: &Descriptor,
    size: u64,
    digest: Digest,
) -> Result<(), RegistryError> {
    if size != descriptor.size {
        return Err(RegistryError::Mismatch {
            request: request.clone(),
            what: "size",
            expected: descriptor.size.to_string(),
            actual: size.to_string(),
        });
    }
    if digest != descriptor.digest {
        return Err(RegistryError::Mismatch {
            request: request.clone(),
            what: "digest",
            expected: descriptor.digest.to_string(),
            actual: digest.to_string(),
        });
    }
    Ok(())
}
