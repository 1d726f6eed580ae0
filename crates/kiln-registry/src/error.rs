//! Registry errors: each names the request (method and URL, never credentials), the status and
//! the registry's own error code and message.

use crate::credentials::CredentialError;
use crate::reference::ReferenceError;
use crate::transport::TransportError;
use serde::Deserialize;
use std::path::PathBuf;

/// One failed request, described for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// `GET`, `PUT`, …
    pub method: String,
    /// The URL without user info, and with upload state tokens shortened.
    pub url: String,
}

impl RequestInfo {
    /// Describes a request for an error message.
    pub fn new(method: &reqwest::Method, url: &url::Url) -> Self {
        RequestInfo {
            method: method.to_string(),
            url: display_url(url),
        }
    }
}

impl RequestInfo {
    /// A log line for a retry of this request: `retry 2 of GET … in 1.5s: reason`.
    pub fn retry_message(&self, attempt: u32, delay: std::time::Duration, reason: &str) -> String {
        format!(
            "retry {attempt} of {self} in {:.1}s: {reason}",
            delay.as_secs_f64()
        )
    }
}

impl std::fmt::Display for RequestInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.url)
    }
}

/// A URL as it may appear in logs and errors: no user info, no password, and no long opaque
/// upload state.
pub fn display_url(url: &url::Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    let pairs: Vec<(String, String)> = clean
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "_state"
                || k.contains("token")
                || k.contains("password")
                || k.contains("secret")
            {
                "redacted".to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    if pairs.is_empty() {
        clean.set_query(None);
    } else {
        clean.query_pairs_mut().clear().extend_pairs(pairs);
    }
    clean.to_string()
}

/// The registry's error body (distribution spec).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ErrorEntry {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry answered with an error status.
    #[error("{request}: {status}{}", registry_says(code.as_deref(), message.as_deref()))]
    Status {
        /// The request.
        request: RequestInfo,
        /// HTTP status code.
        status: u16,
        /// The registry's error code (`MANIFEST_UNKNOWN`, `DENIED`, …).
        code: Option<String>,
        /// The registry's message.
        message: Option<String>,
    },
    /// A refusal (401 or 403) from a registry kiln sent no credentials to, because the built-in
    /// provider for it could not get them.
    #[error("{error}; no credentials were sent because {reason}")]
    NoCredentials {
        /// The registry's refusal.
        error: Box<RegistryError>,
        /// Why the provider had none (what it lacked and what to set).
        reason: String,
    },
    /// No answer: connection refused, TLS failure, timeout, broken transfer.
    #[error("{request}: {reason}")]
    Connection {
        /// The request.
        request: RequestInfo,
        /// What happened (with its causes).
        reason: String,
    },
    /// Authentication failed (token endpoint, unsupported challenge).
    #[error("authentication to {registry} failed: {reason}")]
    Auth {
        /// The registry host.
        registry: String,
        /// What happened.
        reason: String,
    },
    /// Content did not match its digest or size; nothing was stored.
    #[error("{what} from {request} does not match: expected {expected}, got {actual}")]
    Mismatch {
        /// The request.
        request: RequestInfo,
        /// `digest` or `size`.
        what: &'static str,
        /// What the manifest says.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// A manifest kiln cannot use.
    #[error("{reference}: {reason}")]
    Manifest {
        /// The image.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// A local file problem.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The place a fetched blob was going refused it (a full disk, the store's check).
    #[error("storing blob {digest}: {source}")]
    Sink {
        /// The blob.
        digest: kiln_oci::Digest,
        /// What the sink said.
        source: std::io::Error,
    },
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// TLS set-up failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

fn registry_says(code: Option<&str>, message: Option<&str>) -> String {
    match (
        code.filter(|c| !c.is_empty()),
        message.filter(|m| !m.is_empty()),
    ) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

impl RegistryError {
    /// Builds a status error from a response's body.
    pub(crate) fn from_status(request: RequestInfo, status: u16, body: &[u8]) -> Self {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let first = parsed.errors.into_iter().next();
        let (code, message) = match first {
            Some(e) => (Some(e.code), Some(e.message)),
            None => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = (!text.is_empty() && text.len() < 300 && !text.contains('<'))
                    .then(|| text.to_string());
                (None, message)
            }
        };
        RegistryError::Status {
            request,
            status,
            code,
            message,
        }
    }

    /// The HTTP status, for status errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            RegistryError::NoCredentials { error, .. } => error.status(),
            _ => None,
        }
    }

    pub(crate) fn connection(request: RequestInfo, error: &dyn std::error::Error) -> Self {
        RegistryError::Connection {
            request,
            reason: with_causes(error.to_string(), error),
        }
    }
}

/// `text` (an error's message) followed by the messages of the error's causes, joined by
/// `: `, leaving out a cause whose text is already there (libraries often repeat it).
pub fn with_causes(mut text: String, error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    while let Some(cause) = source {
        let t = cause.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_state() {
        let url = url::Url::parse(
            "https://user:pw@r.example.com/v2/a/blobs/uploads/x?_state=abcdef&digest=sha256:1",
        )
        .unwrap();
        assert_eq!(
            display_url(&url),
            "https://r.example.com/v2/a/blobs/uploads/x?_state=redacted&digest=sha256%3A1"
        );
    }

    #[test]
    fn status_errors_carry_the_registry_message() {
        let request = RequestInfo {
            method: "PUT".into(),
            url: "https://r/v2/a/manifests/t".into(),
        };
        let e = RegistryError::from_status(
            request,
            400,
            br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:1"}]}"#,
        );
        assert_eq!(
            e.to_string(),
            "PUT https://r/v2/a/manifests/t: 400 (MANIFEST_BLOB_UNKNOWN: blob unknown to registry)"
        );
    }
}
