//! Plain downloads (`ADD https://…`, URL contexts): the host's TLS settings, no registry
//! credentials.

use super::Client;
use crate::auth::without_url;
use crate::error::{RegistryError, RequestInfo};
use crate::transport::Direction;
use kiln_oci::{Digest, Hasher};
use reqwest::Method;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

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

impl Client {
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
        let client = self
            .clients
            .get(&crate::transport::url_host(&parsed), Direction::Pull)?;
        let io_err = |path: &Path, source: std::io::Error| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut attempt = 0;
        let response = loop {
            match client.get(parsed.clone()).send().await {
                Ok(r) if r.status().is_success() => break r,
                Ok(r) if r.status().is_server_error() && attempt < self.options.pull_retries => {}
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    let (body, _) = super::read_up_to(&mut r, super::MAX_ERROR_BODY_BYTES)
                        .await
                        .unwrap_or_default();
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
