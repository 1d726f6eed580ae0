//! The registry client: one request path (auth, retries, scheme) under pull and push.
//!
//! Pull: manifests by tag or digest with an Accept header covering OCI and Docker schema 2,
//! index resolution by platform, blobs streamed to disk with their digest verified (resumed with
//! `Range` after a broken transfer), mirrors and `--registry-map` tried in order.
//! Push: blob HEAD first, cross-repository mounts, monolithic or chunked uploads streamed from
//! files, manifests only after their blobs, a push-permission check.

use crate::auth::{without_url, AuthCache};
use crate::credentials::{Credential, DockerConfig};
use crate::error::{RegistryError, RequestInfo};
use crate::reference::{Reference, DOCKER_HUB};
use crate::transport::{Clients, Direction, TransportOptions};
use futures_util::stream::{self, StreamExt};
use kiln_oci::{media_type, Descriptor, Digest, Hasher, ImageManifest, Manifest, Platform};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RANGE,
};
use reqwest::{Method, StatusCode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Every manifest type kiln reads, for the Accept header.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Manifests larger than this are refused (the distribution spec's limit is 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

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

/// What [`Client::download`] fetched.
#[derive(Debug, Clone)]
pub struct Download {
    /// Its digest (sha256 unless a checksum of another algorithm was given).
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The file name: `Content-Disposition`'s, else the URL path's last segment.
    pub file_name: Option<String>,
    /// `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<i64>,
}

/// The registry client.
pub struct Client {
    clients: Clients,
    docker_config: Arc<DockerConfig>,
    credentials: Mutex<BTreeMap<String, Credential>>,
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
        if let Some(c) = self
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
        {
            return Ok(c.clone());
        }
        let config = self.docker_config.clone();
        let host = registry.to_string();
        // Credential helpers are processes: keep them off the async threads.
        let credential = tokio::task::spawn_blocking(move || config.credential_for(&host))
            .await
            .map_err(|e| RegistryError::Auth {
                registry: registry.to_string(),
                reason: format!("credential lookup failed: {e}"),
            })??;
        self.credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry.to_string(), credential.clone());
        Ok(credential)
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
        let client = self.clients.get(&target.host, target.direction)?;
        let credential = self.credential(&target.host).await?;
        let request_info = RequestInfo::new(&method, url);
        let retries = self.retries(target.direction);
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        loop {
            let mut request = build(client.request(method.clone(), url.clone()));
            let mut authorized = false;
            if let Some(header) = self.auth.cached(&target.host, &target.scope, &credential) {
                request = request.header(reqwest::header::AUTHORIZATION, header.value());
                authorized = true;
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
                        self.auth.invalidate(&target.host, &target.scope);
                        self.auth
                            .respond(
                                &client,
                                &target.host,
                                challenge.as_deref(),
                                &target.scope,
                                &credential,
                            )
                            .await?;
                        continue;
                    }
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || matches!(status.as_u16(), 500 | 502 | 503 | 504);
                    if !retryable || attempt >= retries {
                        if status == StatusCode::UNAUTHORIZED {
                            self.auth.invalidate(&target.host, &target.scope);
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

    /// Reads an error response's body into an error.
    async fn status_error(request: RequestInfo, response: reqwest::Response) -> RegistryError {
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        RegistryError::from_status(request, status, &body)
    }

    /// The registries to try for a pull, in order: `--registry-map` targets, then mirrors
    /// (Docker Hub only), then the registry itself unless told not to fall back.
    pub fn pull_sources(&self, reference: &Reference) -> Vec<Reference> {
        let mut sources = Vec::new();
        let redirect = |spec: &str| {
            let (host, prefix) = match spec.split_once('/') {
                Some((h, p)) => (h.to_string(), Some(p.trim_matches('/').to_string())),
                None => (spec.to_string(), None),
            };
            let repository = match prefix.filter(|p| !p.is_empty()) {
                Some(p) => format!("{p}/{}", reference.repository),
                None => reference.repository.clone(),
            };
            Reference {
                registry: host,
                repository,
                ..reference.clone()
            }
        };
        let mapped = self
            .options
            .registry_map
            .get(&reference.registry)
            .or_else(|| {
                (reference.registry == DOCKER_HUB)
                    .then(|| self.options.registry_map.get("index.docker.io"))
                    .flatten()
            });
        if let Some(targets) = mapped {
            sources.extend(targets.iter().map(|t| redirect(t)));
        }
        if reference.registry == DOCKER_HUB {
            sources.extend(self.options.mirrors.iter().map(|m| redirect(m)));
        }
        let fallback_allowed = !self.options.skip_default_registry_fallback || sources.is_empty();
        if fallback_allowed {
            sources.push(reference.clone());
        }
        sources
    }

    /// Fetches a manifest (by tag or digest), trying the pull sources in order.
    pub async fn fetch_manifest(
        &self,
        reference: &Reference,
    ) -> Result<FetchedManifest, RegistryError> {
        let mut last_error = None;
        for source in self.pull_sources(reference) {
            match self.fetch_manifest_from(&source, Direction::Pull).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tracing::debug!(source = %source, error = %e, "manifest source failed");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| RegistryError::Manifest {
            reference: reference.to_string(),
            reason: "no registry to pull from (mirrors failed and fallback is disabled)".into(),
        }))
    }

    async fn fetch_manifest_from(
        &self,
        source: &Reference,
        direction: Direction,
    ) -> Result<FetchedManifest, RegistryError> {
        let target = Target::pull(source, direction);
        let url = self
            .url_for(
                &target,
                &format!("/v2/{}/manifests/{}", source.repository, source.target()),
            )
            .await?;
        let response = self
            .send(&target, Method::GET, &url, |r| {
                r.header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let request = RequestInfo::new(&Method::GET, &url);
        if !response.status().is_success() {
            return Err(Self::status_error(request, response).await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let mut bytes = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| RegistryError::connection(request.clone(), &e))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_MANIFEST_BYTES {
                return Err(RegistryError::Manifest {
                    reference: source.to_string(),
                    reason: "the manifest is larger than 4 MiB".into(),
                });
            }
        }
        let digest = match source.digest.as_deref() {
            Some(d) => {
                let expected = Digest::parse(d).map_err(|e| RegistryError::Manifest {
                    reference: source.to_string(),
                    reason: e.to_string(),
                })?;
                let actual = Digest::of_with(expected.algorithm(), &bytes);
                if actual != expected {
                    return Err(RegistryError::Mismatch {
                        request,
                        what: "digest",
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    });
                }
                expected
            }
            None => Digest::of(&bytes),
        };
        let parsed = Manifest::parse(&bytes, content_type.as_deref()).map_err(|e| {
            RegistryError::Manifest {
                reference: source.to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(FetchedManifest {
            media_type: parsed.media_type().to_string(),
            bytes,
            digest,
            source: source.clone(),
        })
    }

    /// Resolves `reference` to one image for `platform` (an index picks the platform), with
    /// its config.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        let fetched = self.fetch_manifest(reference).await?;
        let bad = |reason: String| RegistryError::Manifest {
            reference: reference.to_string(),
            reason,
        };
        let parsed = Manifest::parse(&fetched.bytes, Some(&fetched.media_type))
            .map_err(|e| bad(e.to_string()))?;
        let (fetched, manifest, index_digest) = match parsed {
            Manifest::Image(m) => (fetched, m, None),
            Manifest::Index(index) => {
                let entry = index.select(platform).map_err(|e| bad(e.to_string()))?;
                let pinned = fetched.source.with_digest(&entry.digest.to_string());
                let child = self.fetch_manifest_from(&pinned, Direction::Pull).await?;
                match Manifest::parse(&child.bytes, Some(&child.media_type))
                    .map_err(|e| bad(e.to_string()))?
                {
                    Manifest::Image(m) => (child, m, Some(fetched.digest)),
                    Manifest::Index(_) => {
                        return Err(bad("an index entry points to another index".into()))
                    }
                }
            }
        };
        let config = self
            .fetch_blob_bytes(&fetched.source, &manifest.config)
            .await?;
        Ok(ResolvedImage {
            source: fetched.source,
            manifest,
            manifest_bytes: fetched.bytes,
            manifest_media_type: fetched.media_type,
            digest: fetched.digest,
            index_digest,
            config,
        })
    }

    fn blob_url_path(reference: &Reference, digest: &Digest) -> String {
        format!("/v2/{}/blobs/{digest}", reference.repository)
    }

    /// Fetches a small blob (a config) into memory, verified.
    pub async fn fetch_blob_bytes(
        &self,
        source: &Reference,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size > MAX_MANIFEST_BYTES as u64 * 4 {
            return Err(RegistryError::Manifest {
                reference: source.to_string(),
                reason: format!(
                    "blob {} of {} bytes is too large to hold in memory",
                    descriptor.digest, descriptor.size
                ),
            });
        }
        let target = Target::pull(source, Direction::Pull);
        let url = self
            .url_for(&target, &Self::blob_url_path(source, &descriptor.digest))
            .await?;
        let request = RequestInfo::new(&Method::GET, &url);
        let response = self.send(&target, Method::GET, &url, |r| r).await?;
        if !response.status().is_success() {
            return Err(Self::status_error(request, response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RegistryError::connection(request.clone(), &e))?;
        check_content(
            &request,
            descriptor,
            bytes.len() as u64,
            Digest::of_with(descriptor.digest.algorithm(), &bytes),
        )?;
        Ok(bytes.to_vec())
    }

    /// Downloads a blob to `dest`, streamed and verified; `dest` appears only when complete and
    /// correct. A transfer that breaks off resumes with `Range` where the registry allows.
    pub async fn fetch_blob(
        &self,
        source: &Reference,
        descriptor: &Descriptor,
        dest: &Path,
    ) -> Result<(), RegistryError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        let sink = FileSink {
            dir,
            dest: Some(dest),
        };
        self.fetch_blob_to_sink(source, descriptor, &sink).await
    }

    async fn fetch_blob_to_sink<S: BlobSink>(
        &self,
        source: &Reference,
        descriptor: &Descriptor,
        sink: &S,
    ) -> Result<(), RegistryError> {
        let sink_err = |source: std::io::Error| RegistryError::Sink {
            digest: descriptor.digest.clone(),
            source,
        };
        let mut writer = sink.open(descriptor).map_err(sink_err)?;
        self.fetch_blob_into(source, descriptor, &mut writer)
            .await?;
        sink.commit(descriptor, writer).map_err(sink_err)?;
        self.reporter
            .blob_done(&descriptor.digest, BlobOutcome::Downloaded);
        Ok(())
    }

    /// Streams a blob into `sink`, verified against `descriptor` (size and digest); on a
    /// mismatch an error is returned after the bytes were written, so the sink must not publish
    /// before this returns `Ok`. A transfer that breaks off resumes with `Range`; when the
    /// registry ignores `Range`, the bytes `sink` already has are skipped in the new answer, so
    /// it sees every byte once, in order. The client knows nothing of where the bytes go.
    pub async fn fetch_blob_into<W: std::io::Write + Send>(
        &self,
        source: &Reference,
        descriptor: &Descriptor,
        sink: &mut W,
    ) -> Result<(), RegistryError> {
        let target = Target::pull(source, Direction::Pull);
        let url = self
            .url_for(&target, &Self::blob_url_path(source, &descriptor.digest))
            .await?;
        let request = RequestInfo::new(&Method::GET, &url);
        let sink_err = |source: std::io::Error| RegistryError::Sink {
            digest: descriptor.digest.clone(),
            source,
        };
        let mut hasher = Hasher::new(descriptor.digest.algorithm());
        let mut written: u64 = 0;
        let mut breaks = 0u32;
        self.reporter
            .blob_start(&descriptor.digest, descriptor.size, Direction::Pull);
        'transfer: loop {
            let resume_from = written;
            let response = self
                .send(&target, Method::GET, &url, |r| {
                    if resume_from > 0 {
                        r.header(RANGE, format!("bytes={resume_from}-"))
                    } else {
                        r
                    }
                })
                .await?;
            let status = response.status();
            // The registry ignored Range: its answer starts at byte 0 again.
            let mut skip = if resume_from > 0 && status == StatusCode::OK {
                resume_from
            } else {
                0
            };
            if !status.is_success() {
                return Err(Self::status_error(request.clone(), response).await);
            }
            let mut response = response;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let fresh = if skip >= chunk.len() as u64 {
                            skip -= chunk.len() as u64;
                            continue;
                        } else {
                            let from = skip as usize;
                            skip = 0;
                            &chunk[from..]
                        };
                        written += fresh.len() as u64;
                        if written > descriptor.size {
                            return Err(RegistryError::Mismatch {
                                request: request.clone(),
                                what: "size",
                                expected: descriptor.size.to_string(),
                                actual: format!("more than {}", descriptor.size),
                            });
                        }
                        hasher.update(fresh);
                        sink.write_all(fresh).map_err(sink_err)?;
                        self.reporter
                            .blob_progress(&descriptor.digest, fresh.len() as u64);
                    }
                    Ok(None) if skip > 0 => {
                        return Err(RegistryError::Mismatch {
                            request: request.clone(),
                            what: "size",
                            expected: descriptor.size.to_string(),
                            actual: format!("{} on a restarted transfer", resume_from - skip),
                        })
                    }
                    Ok(None) => break 'transfer,
                    Err(e) => {
                        breaks += 1;
                        if breaks > self.options.pull_retries {
                            return Err(RegistryError::connection(request.clone(), &e));
                        }
                        let delay = self.backoff(breaks - 1, None);
                        self.reporter
                            .retry(&request, breaks, delay, &without_url(&e));
                        tokio::time::sleep(delay).await;
                        continue 'transfer;
                    }
                }
            }
        }
        sink.flush().map_err(sink_err)?;
        check_content(&request, descriptor, written, hasher.finish())
    }

    /// Downloads a plain URL (`ADD https://…`) into `dest` (a temp file beside it, then a
    /// rename), with the TLS settings of its host, no registry credentials, and retries of
    /// failed connections. Returns what was downloaded; `expected` (`--checksum`) must match.
    pub async fn download(
        &self,
        url: &str,
        dest: &Path,
        expected: Option<&Digest>,
    ) -> Result<Download, RegistryError> {
        let parsed = url::Url::parse(url).map_err(|e| RegistryError::Manifest {
            reference: url.to_owned(),
            reason: format!("not a valid URL: {e}"),
        })?;
        let request = RequestInfo::new(&Method::GET, &parsed);
        let host = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_owned(),
        };
        let client = self.clients.get(&host, Direction::Pull)?;
        let io_err = |path: &Path, source: std::io::Error| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut attempt = 0;
        let response = loop {
            match client.get(parsed.clone()).send().await {
                Ok(r) if r.status().is_success() => break r,
                Ok(r) if r.status().is_server_error() && attempt < self.options.pull_retries => {}
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.unwrap_or_default();
                    let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                    return Err(RegistryError::Status {
                        request,
                        status,
                        code: None,
                        message: (!text.trim().is_empty()).then(|| text.trim().to_owned()),
                    });
                }
                Err(e) if attempt < self.options.pull_retries => {
                    let delay = self.backoff(attempt, None);
                    self.reporter
                        .retry(&request, attempt + 1, delay, &without_url(&e));
                }
                Err(e) => return Err(RegistryError::connection(request, &e)),
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt, None)).await;
        };
        let last_modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(kiln_oci::time::parse_http_date);
        let disposition_name = response
            .headers()
            .get(reqwest::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(';')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix("filename="))
                    .map(|n| n.trim_matches('"').to_owned())
            })
            .filter(|n| !n.is_empty() && !n.contains('/'));
        let temp = temp_path(dest);
        let result = async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| io_err(&temp, e))?;
            let mut hasher =
                Hasher::new(expected.map_or(kiln_oci::Algorithm::Sha256, |d| d.algorithm()));
            let mut size = 0u64;
            let mut response = response;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| RegistryError::connection(request.clone(), &e))?
            {
                size += chunk.len() as u64;
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| io_err(&temp, e))?;
            }
            file.flush().await.map_err(|e| io_err(&temp, e))?;
            drop(file);
            let digest = hasher.finish();
            if let Some(expected) = expected {
                if *expected != digest {
                    return Err(RegistryError::Mismatch {
                        request: request.clone(),
                        what: "checksum",
                        expected: expected.to_string(),
                        actual: digest.to_string(),
                    });
                }
            }
            tokio::fs::rename(&temp, dest)
                .await
                .map_err(|e| io_err(dest, e))?;
            Ok((digest, size))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        let (digest, size) = result?;
        let url_name = parsed
            .path_segments()
            .and_then(|mut s| s.next_back().map(str::to_owned))
            .filter(|n| !n.is_empty());
        Ok(Download {
            digest,
            size,
            file_name: disposition_name.or(url_name),
            last_modified,
        })
    }

    /// Downloads several blobs at once (up to `concurrency`), each into `dir/<hex>`.
    pub async fn fetch_blobs(
        &self,
        source: &Reference,
        descriptors: &[Descriptor],
        dir: &Path,
    ) -> Result<(), RegistryError> {
        self.fetch_blobs_into(source, descriptors, &FileSink { dir, dest: None })
            .await
    }

    /// Downloads several blobs at once (up to `concurrency`) into writers `sink` opens, each
    /// committed once it arrived whole and verified.
    pub async fn fetch_blobs_into<S: BlobSink>(
        &self,
        source: &Reference,
        descriptors: &[Descriptor],
        sink: &S,
    ) -> Result<(), RegistryError> {
        let results: Vec<Result<(), RegistryError>> = stream::iter(descriptors)
            .map(|d| self.fetch_blob_to_sink(source, d, sink))
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Whether the repository already has the blob (HEAD).
    pub async fn blob_exists(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let target = Target::push(reference, None);
        let url = self
            .url_for(&target, &Self::blob_url_path(reference, digest))
            .await?;
        let response = self.send(&target, Method::HEAD, &url, |r| r).await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::status_error(RequestInfo::new(&Method::HEAD, &url), response).await),
        }
    }

    /// Starts an upload session, or mounts `digest` from `mount_from` (a repository of the same
    /// registry). Returns `None` when the mount succeeded, else the upload URL.
    async fn start_upload(
        &self,
        reference: &Reference,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Option<url::Url>, RegistryError> {
        let target = Target::push(reference, mount.map(|(_, from)| from));
        let mut url = self
            .url_for(
                &target,
                &format!("/v2/{}/blobs/uploads/", reference.repository),
            )
            .await?;
        if let Some((digest, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
        }
        let request = RequestInfo::new(&Method::POST, &url);
        let response = self
            .send(&target, Method::POST, &url, |r| {
                r.header(CONTENT_LENGTH, "0")
            })
            .await?;
        match response.status() {
            StatusCode::CREATED if mount.is_some() => Ok(None),
            StatusCode::ACCEPTED | StatusCode::CREATED => {
                Ok(Some(location(&url, response.headers(), &request)?))
            }
            _ => Err(Self::status_error(request, response).await),
        }
    }

    /// Checks, before any build work, that kiln may push to `reference` (kaniko does the same):
    /// starts an upload session and cancels it.
    pub async fn check_push_access(&self, reference: &Reference) -> Result<(), RegistryError> {
        let Some(upload) = self.start_upload(reference, None).await? else {
            return Ok(());
        };
        let target = Target::push(reference, None);
        // Cancelling is a courtesy; registries expire abandoned uploads anyway.
        let _ = self.send(&target, Method::DELETE, &upload, |r| r).await;
        Ok(())
    }

    /// Pushes the blob at `path` (described by `descriptor`) unless the repository has it or it
    /// can be mounted from `mount_from` (another repository of the same registry).
    pub async fn push_blob(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        path: &Path,
        mount_from: Option<&str>,
    ) -> Result<BlobOutcome, RegistryError> {
        if self.blob_exists(reference, &descriptor.digest).await? {
            self.reporter
                .blob_done(&descriptor.digest, BlobOutcome::Exists);
            return Ok(BlobOutcome::Exists);
        }
        let mount_from = mount_from.filter(|from| *from != reference.repository);
        let mut upload = self
            .start_upload(reference, mount_from.map(|from| (&descriptor.digest, from)))
            .await?;
        if upload.is_none() {
            self.reporter
                .blob_done(&descriptor.digest, BlobOutcome::Mounted);
            return Ok(BlobOutcome::Mounted);
        }
        self.reporter
            .blob_start(&descriptor.digest, descriptor.size, Direction::Push);
        let mut attempt = 0;
        loop {
            let url = match upload.take() {
                Some(u) => u,
                None => self.start_upload(reference, None).await?.ok_or_else(|| {
                    RegistryError::Manifest {
                        reference: reference.to_string(),
                        reason: "the registry finished an upload it was not sent".into(),
                    }
                })?,
            };
            let result = if descriptor.size > self.options.chunk_size {
                self.upload_chunked(reference, descriptor, path, url).await
            } else {
                self.upload_monolithic(reference, descriptor, path, url)
                    .await
            };
            match result {
                Ok(()) => {
                    self.reporter
                        .blob_done(&descriptor.digest, BlobOutcome::Uploaded);
                    return Ok(BlobOutcome::Uploaded);
                }
                // An interrupted upload restarts cleanly with a new session.
                Err(e @ RegistryError::Connection { .. })
                    if attempt < self.options.push_retries =>
                {
                    attempt += 1;
                    let delay = self.backoff(attempt - 1, None);
                    if let RegistryError::Connection { request, reason } = &e {
                        self.reporter.retry(request, attempt, delay, reason);
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_monolithic(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        path: &Path,
        mut url: url::Url,
    ) -> Result<(), RegistryError> {
        let target = Target::push(reference, None);
        url.query_pairs_mut()
            .append_pair("digest", &descriptor.digest.to_string());
        let request = RequestInfo::new(&Method::PUT, &url);
        let reporter = self.reporter.clone();
        let response = self
            .send(&target, Method::PUT, &url, |r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, descriptor.size.to_string())
                    .body(file_body(
                        path,
                        0,
                        descriptor.size,
                        reporter.clone(),
                        descriptor.digest.clone(),
                    ))
            })
            .await?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(Self::status_error(request, response).await);
        }
        Ok(())
    }

    async fn upload_chunked(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        path: &Path,
        mut url: url::Url,
    ) -> Result<(), RegistryError> {
        let target = Target::push(reference, None);
        let chunk = self.options.chunk_size.max(1);
        let mut offset = 0u64;
        while offset < descriptor.size {
            let len = chunk.min(descriptor.size - offset);
            let request = RequestInfo::new(&Method::PATCH, &url);
            let start = offset;
            let reporter = self.reporter.clone();
            let response = self
                .send(&target, Method::PATCH, &url, |r| {
                    r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, len.to_string())
                        .header("Content-Range", format!("{start}-{}", start + len - 1))
                        .body(file_body(
                            path,
                            start,
                            len,
                            reporter.clone(),
                            descriptor.digest.clone(),
                        ))
                })
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(Self::status_error(request, response).await);
            }
            url = location(&url, response.headers(), &request)?;
            offset += len;
        }
        url.query_pairs_mut()
            .append_pair("digest", &descriptor.digest.to_string());
        let request = RequestInfo::new(&Method::PUT, &url);
        let response = self
            .send(&target, Method::PUT, &url, |r| {
                r.header(CONTENT_LENGTH, "0")
            })
            .await?;
        if !response.status().is_success() {
            return Err(Self::status_error(request, response).await);
        }
        Ok(())
    }

    /// Pushes a manifest under `reference`'s tag (or digest). Call only after every blob it
    /// names is in the repository. Returns the manifest's digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let target = Target::push(reference, None);
        let digest = Digest::of(bytes);
        let tag = reference.tag.clone().unwrap_or_else(|| digest.to_string());
        let url = self
            .url_for(
                &target,
                &format!("/v2/{}/manifests/{tag}", reference.repository),
            )
            .await?;
        let request = RequestInfo::new(&Method::PUT, &url);
        let body = bytes.to_vec();
        let response = self
            .send(&target, Method::PUT, &url, |r| {
                r.header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(Self::status_error(request, response).await);
        }
        if let Some(served) = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
        {
            if served != digest.to_string() {
                return Err(RegistryError::Mismatch {
                    request,
                    what: "digest",
                    expected: digest.to_string(),
                    actual: served.to_string(),
                });
            }
        }
        Ok(digest)
    }
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

/// The upload URL from a `Location` header, resolved against the request's URL.
fn location(
    base: &url::Url,
    headers: &HeaderMap<HeaderValue>,
    request: &RequestInfo,
) -> Result<url::Url, RegistryError> {
    let value = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Manifest {
            reference: request.to_string(),
            reason: "the registry answered without a Location for the upload".into(),
        })?;
    base.join(value).map_err(|e| RegistryError::Manifest {
        reference: request.to_string(),
        reason: format!("invalid upload Location {value:?}: {e}"),
    })
}

/// Where fetched blobs go ([`Client::fetch_blobs_into`]): a writer per blob, committed only when
/// the blob arrived whole and matched its descriptor. A writer dropped uncommitted should leave
/// nothing behind.
pub trait BlobSink: Sync {
    /// The writer one blob's bytes go into.
    type Writer: std::io::Write + Send;
    /// A new writer for `descriptor`'s blob.
    fn open(&self, descriptor: &Descriptor) -> std::io::Result<Self::Writer>;
    /// Publishes a verified blob.
    fn commit(&self, descriptor: &Descriptor, writer: Self::Writer) -> std::io::Result<()>;
}

/// Blobs as files: `dest`, or `dir/<hex>`, written under a temp name beside it and renamed
/// when complete.
struct FileSink<'a> {
    dir: &'a Path,
    dest: Option<&'a Path>,
}

impl BlobSink for FileSink<'_> {
    type Writer = tempfile::NamedTempFile;

    fn open(&self, descriptor: &Descriptor) -> std::io::Result<Self::Writer> {
        tempfile::Builder::new()
            .prefix(&format!(".{}.partial-", descriptor.digest.hex()))
            .tempfile_in(self.dir)
    }

    fn commit(&self, descriptor: &Descriptor, writer: Self::Writer) -> std::io::Result<()> {
        writer.as_file().sync_all()?;
        let dest = match self.dest {
            Some(dest) => dest.to_path_buf(),
            None => self.dir.join(descriptor.digest.hex()),
        };
        writer.persist(dest).map(drop).map_err(|e| e.error)
    }
}

/// A sibling temp path, so the final rename stays within one directory.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "blob".into());
    dest.with_file_name(format!(
        ".{name}.partial-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// A request body streaming `len` bytes of `path` from `offset`, in 256 KiB reads. The file
/// is opened on the first read, so a body can be made anew for every attempt of a request.
fn file_body(
    path: &Path,
    offset: u64,
    len: u64,
    reporter: Arc<dyn Reporter>,
    digest: Digest,
) -> reqwest::Body {
    enum State {
        Closed(PathBuf),
        Open(tokio::io::Take<tokio::fs::File>),
        Done,
    }
    let chunks = stream::unfold(State::Closed(path.to_path_buf()), move |state| {
        let reporter = reporter.clone();
        let digest = digest.clone();
        async move {
            let mut reader = match state {
                State::Done => return None,
                State::Open(reader) => reader,
                State::Closed(path) => {
                    let opened = async {
                        let mut file = tokio::fs::File::open(&path).await?;
                        file.seek(std::io::SeekFrom::Start(offset)).await?;
                        Ok::<_, std::io::Error>(file.take(len))
                    }
                    .await;
                    match opened {
                        Ok(reader) => reader,
                        Err(e) => return Some((Err(e), State::Done)),
                    }
                }
            };
            let mut buf = vec![0u8; 256 << 10];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    reporter.blob_progress(&digest, n as u64);
                    Some((Ok(buf), State::Open(reader)))
                }
                Err(e) => Some((Err(e), State::Done)),
            }
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// Whether a layer media type may be skipped when pushing (foreign layers live elsewhere).
pub fn is_foreign(descriptor: &Descriptor) -> bool {
    media_type::is_foreign(&descriptor.media_type)
}
