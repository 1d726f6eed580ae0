//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while setting up or driving a test service.
///
/// Every variant names the thing at fault (a path, a command, a process) so
/// that a failing test says what to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `what` says which one.
    #[error("{what}: {source}")]
    Io {
        /// The operation that failed, e.g. "write /tmp/x/config.yml".
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Path {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command could not be started or exited with a failure.
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, without secrets.
        command: String,
        /// Its exit status, or why it could not run.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The registry process exited before it answered.
    #[error("docker-registry (pid {pid}) exited early with {status}; its log:\n{log}")]
    RegistryExited {
        /// Process id of the registry.
        pid: u32,
        /// Its exit status.
        status: String,
        /// The registry's stderr/stdout.
        log: String,
    },
    /// A service did not become ready in time.
    #[error("{what} was not ready after {timeout:?}; log:\n{log}")]
    Timeout {
        /// What we were waiting for.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// Any log that may explain it.
        log: String,
    },
    /// Generating a certificate or key failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// Signing or key parsing with ring failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// The options asked for something Distribution cannot do.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A peer spoke HTTP we could not parse.
    #[error("malformed HTTP: {0}")]
    Http(String),
    /// A service answered a request, but not as expected (status or body).
    #[error("{what}: unexpected answer: {detail}")]
    UnexpectedResponse {
        /// The request, e.g. "moto PUT /bucket".
        what: String,
        /// The status and body, or what was missing from it.
        detail: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Names the operation that failed.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
    /// Names the file that failed.
    fn path_context(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }

    fn path_context(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Path {
            path: path.to_path_buf(),
            source,
        })
    }
}
