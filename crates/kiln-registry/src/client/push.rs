//! Push: blob HEAD first, cross-repository mounts, monolithic or chunked uploads streamed from
//! files, manifests only after their blobs, a push-permission check.

use super::{BlobOutcome, Client, Reporter, Target};
use crate::error::{RegistryError, RequestInfo};
use crate::reference::Reference;
use crate::transport::Direction;
use futures_util::stream;
use kiln_oci::{media_type, Descriptor, Digest};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

impl Client {
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
            _ => Err(self
                .status_error(RequestInfo::new(&Method::HEAD, &url), response)
                .await),
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
            _ => Err(self.status_error(request, response).await),
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
                // An interrupted or failed upload restarts cleanly with a new session.
                Err(e) if attempt < self.options.push_retries && restarts_upload(&e) => {
                    attempt += 1;
                    let delay = self.backoff(attempt - 1, None);
                    match &e {
                        RegistryError::Connection { request, reason } => {
                            self.reporter.retry(request, attempt, delay, reason)
                        }
                        RegistryError::Status {
                            request, status, ..
                        } => self
                            .reporter
                            .retry(request, attempt, delay, &status.to_string()),
                        _ => {}
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
            .send_with(
                &target,
                Method::PUT,
                &url,
                |r| {
                    r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, descriptor.size.to_string())
                        .body(file_body(
                            path,
                            0,
                            descriptor.size,
                            reporter.clone(),
                            descriptor.digest.clone(),
                        ))
                },
                false,
            )
            .await?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(self.status_error(request, response).await);
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
                .send_with(
                    &target,
                    Method::PATCH,
                    &url,
                    |r| {
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
                    },
                    false,
                )
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(self.status_error(request, response).await);
            }
            url = location(&url, response.headers(), &request)?;
            offset += len;
        }
        url.query_pairs_mut()
            .append_pair("digest", &descriptor.digest.to_string());
        let request = RequestInfo::new(&Method::PUT, &url);
        let response = self
            .send_with(
                &target,
                Method::PUT,
                &url,
                |r| r.header(CONTENT_LENGTH, "0"),
                false,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.status_error(request, response).await);
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
            return Err(self.status_error(request, response).await);
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

/// Whether a failed upload is worth starting over: the connection broke, or the registry
/// was busy or failed (429, 5xx).
fn restarts_upload(error: &RegistryError) -> bool {
    match error {
        RegistryError::Connection { .. } => true,
        RegistryError::Status { status, .. } => super::is_busy(*status),
        _ => false,
    }
}
