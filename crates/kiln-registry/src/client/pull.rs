//! Pull: manifests (with mirrors and maps tried in order), index resolution by platform, and
//! blobs streamed into a writer with size and digest checked.

use super::{
    check_content, read_up_to, BlobOutcome, Client, FetchedManifest, ResolvedImage, Target,
    MANIFEST_ACCEPT, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
use crate::auth::without_url;
use crate::error::{RegistryError, RequestInfo};
use crate::reference::{Reference, DOCKER_HUB};
use crate::transport::Direction;
use futures_util::stream::{self, StreamExt};
use kiln_oci::{Descriptor, Digest, Hasher, Manifest, Platform};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};
use std::path::Path;

impl Client {
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

    /// Fetches a manifest from exactly this repository (no mirrors, no registry map):
    /// `None` when the registry has nothing under that tag or digest (404). The build cache
    /// asks this of its cache repository.
    pub async fn fetch_manifest_if_present(
        &self,
        reference: &Reference,
    ) -> Result<Option<FetchedManifest>, RegistryError> {
        match self.fetch_manifest_from(reference, Direction::Pull).await {
            Ok(m) => Ok(Some(m)),
            Err(RegistryError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
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
            return Err(self.status_error(request, response).await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let too_large = || RegistryError::Manifest {
            reference: source.to_string(),
            reason: format!("{request}: the manifest is larger than 4 MiB"),
        };
        let mut response = response;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
        {
            return Err(too_large());
        }
        // Streamed up to the cap: a registry that sends more (or never stops) is cut off there.
        let (bytes, whole) = read_up_to(&mut response, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| RegistryError::connection(request.clone(), &e))?;
        if !whole {
            return Err(too_large());
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

    pub(super) fn blob_url_path(reference: &Reference, digest: &Digest) -> String {
        format!("/v2/{}/blobs/{digest}", reference.repository)
    }

    /// Fetches a small blob (a config, at most 16 MiB) into memory, verified.
    pub async fn fetch_blob_bytes(
        &self,
        source: &Reference,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        if descriptor.size > MAX_CONFIG_BYTES {
            return Err(RegistryError::Manifest {
                reference: source.to_string(),
                reason: format!(
                    "the config blob {} is {} bytes, more than the {} MiB kiln holds in memory",
                    descriptor.digest,
                    descriptor.size,
                    MAX_CONFIG_BYTES >> 20
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
            return Err(self.status_error(request, response).await);
        }
        // No more than the descriptor's size is read: a registry sending more is cut off.
        let mut response = response;
        let (bytes, whole) = read_up_to(&mut response, descriptor.size as usize)
            .await
            .map_err(|e| RegistryError::connection(request.clone(), &e))?;
        if !whole {
            return Err(RegistryError::Mismatch {
                request,
                what: "size",
                expected: descriptor.size.to_string(),
                actual: format!("more than {}", descriptor.size),
            });
        }
        check_content(
            &request,
            descriptor,
            bytes.len() as u64,
            Digest::of_with(descriptor.digest.algorithm(), &bytes),
        )?;
        Ok(bytes)
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
        let sink_err = sink_error(&descriptor.digest);
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
        let sink_err = sink_error(&descriptor.digest);
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
                return Err(self.status_error(request.clone(), response).await);
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
}

/// The error of a sink that refused `digest`'s bytes.
fn sink_error(digest: &Digest) -> impl Fn(std::io::Error) -> RegistryError + Copy + '_ {
    move |source| RegistryError::Sink {
        digest: digest.clone(),
        source,
    }
}

/// Where fetched blobs go ([`Client::fetch_blobs_into`]): a writer per blob, committed only when
/// the blob arrived whole and matched its descriptor. A writer dropped uncommitted should leave
/// nothing behind.
pub trait BlobSink: Sync {
    /// The writer one blob's bytes go into.
    type Writer: std::io::Write + Send;
    /// A new writer for `descriptor`'s blob.
    fn open(&self, descriptor: &Descriptor) -> std::io::Result<Self::Writer>;
    /// Publishes a blob: called only once every byte arrived and the client checked the size and
    /// the digest against `descriptor`, so a sink may take them as the blob's.
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
