//! How kiln reaches each registry: HTTPS with the system CA store plus per-registry CA files,
//! client certificates for mutual TLS, verification skipped or plain HTTP only when asked, and
//! the kaniko flags that set these (`--insecure`, `--skip-tls-verify`, `--registry-certificate`, …).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Whether a request pulls (base images) or pushes (destinations): kaniko sets TLS and HTTP
/// options separately for the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Reading images.
    Pull,
    /// Writing images.
    Push,
}

/// Transport options for all registries, as kaniko's flags set them.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// `--insecure`: push destinations may use plain HTTP.
    pub insecure_push: bool,
    /// `--insecure-pull`: base images may be pulled over plain HTTP.
    pub insecure_pull: bool,
    /// `--insecure-registry host` (repeatable): plain HTTP allowed for these, both ways.
    pub insecure_registries: Vec<String>,
    /// `--skip-tls-verify`: do not verify push destinations' certificates.
    pub skip_verify_push: bool,
    /// `--skip-tls-verify-pull`: do not verify certificates when pulling.
    pub skip_verify_pull: bool,
    /// `--skip-tls-verify-registry host` (repeatable).
    pub skip_verify_registries: Vec<String>,
    /// `--registry-certificate host=path`: extra CA certificates (PEM) per registry.
    pub ca_files: BTreeMap<String, Vec<PathBuf>>,
    /// `--registry-client-cert host=cert,key`: a client certificate and key (PEM) per registry.
    pub client_certs: BTreeMap<String, (PathBuf, PathBuf)>,
    /// Timeout of one request's connection phase (default 30 s).
    pub connect_timeout: Option<Duration>,
    /// Longest wait for the next bytes of a response (default 120 s).
    pub read_timeout: Option<Duration>,
}

/// What applies to one registry in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// Plain HTTP may be used (HTTPS is tried first).
    pub allow_http: bool,
    /// Certificates are not verified.
    pub skip_verify: bool,
    /// Extra CA files.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TransportOptions {
    /// The policy for `host` (as written in image references, with port).
    pub fn policy(&self, host: &str, direction: Direction) -> HostPolicy {
        let listed = |list: &[String]| list.iter().any(|h| h == host);
        let (insecure, skip) = match direction {
            Direction::Push => (self.insecure_push, self.skip_verify_push),
            Direction::Pull => (self.insecure_pull, self.skip_verify_pull),
        };
        HostPolicy {
            allow_http: insecure || listed(&self.insecure_registries),
            skip_verify: skip || listed(&self.skip_verify_registries),
            ca_files: self.ca_files.get(host).cloned().unwrap_or_default(),
            client_cert: self.client_certs.get(host).cloned(),
        }
    }
}

/// Why an HTTP client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A CA file that cannot be read or holds no certificate.
    #[error("--registry-certificate for {host}: {path}: {reason}")]
    CaFile {
        /// The registry.
        host: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A client certificate or key that cannot be used.
    #[error("--registry-client-cert for {host}: {reason}")]
    ClientCert {
        /// The registry.
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client itself failed to build.
    #[error("cannot set up HTTPS for {host}: {reason}")]
    Client {
        /// The registry.
        host: String,
        /// What is wrong.
        reason: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's CA certificates (honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), loaded once.
/// Every file of each `SSL_CERT_DIR` entry counts, as in Go (kaniko's image appends private
/// CAs to `/kaniko/ssl/certs/ca-certificates.crt` or drops PEM files beside it), not only the
/// hashed names OpenSSL looks up.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut certs = rustls_native_certs::load_native_certs().certs;
        if let Some(dirs) = std::env::var_os("SSL_CERT_DIR") {
            for dir in std::env::split_paths(&dirs) {
                certs.extend(pem_files_in(&dir));
            }
        }
        certs
    })
}

/// The system's roots parsed into a trust store once. A system's directory usually holds each
/// CA several times (the bundle, its PEM file, its hashed link): each is parsed once here, and
/// every registry's configuration starts from a copy, so a build pays the parsing once.
fn system_root_store() -> &'static RootCertStore {
    static STORE: OnceLock<RootCertStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<CertificateDer<'static>> = system_roots()
            .iter()
            .filter(|c| seen.insert(c.as_ref().to_vec()))
            .cloned()
            .collect();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(unique);
        roots
    })
}

/// The certificates of every readable PEM file directly in `dir` (others are skipped, as Go
/// skips them).
fn pem_files_in(dir: &std::path::Path) -> Vec<CertificateDer<'static>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| CertificateDer::pem_file_iter(p).ok())
        .flat_map(|certs| certs.filter_map(Result::ok))
        .collect()
}

/// The `host[:port]` of `url`, as [`Clients::get`] and the transport policies name hosts.
pub fn url_host(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The TLS configuration kiln uses for `host` under `policy` (its trusted roots, extra CAs,
/// client certificate, or no verification), for HTTP clients beside the registry client's
/// (gix's, for git contexts).
pub fn client_tls_config(
    host: &str,
    policy: &HostPolicy,
) -> Result<rustls::ClientConfig, TransportError> {
    tls_config(host, policy)
}

/// Builds the rustls configuration for one registry.
fn tls_config(host: &str, policy: &HostPolicy) -> Result<rustls::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Client {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
    let builder = if policy.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        // The extra CAs are read now (a bad file is an error before any request); the
        // system's roots only when a server's certificate must be checked.
        let mut extra = RootCertStore::empty();
        for path in &policy.ca_files {
            let ca_err = |reason: String| TransportError::CaFile {
                host: host.to_string(),
                path: path.clone(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            let (added, _) = extra.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ca_err("no usable CA certificate in the file".into()));
            }
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LazyRootsVerifier {
                extra,
                verifier: OnceLock::new(),
                provider: provider(),
            }))
    };
    let config = match &policy.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let cc_err = |reason: String| TransportError::ClientCert {
                host: host.to_string(),
                reason,
            };
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| cc_err(format!("{}: {e}", cert.display())))?
                .collect::<Result<_, _>>()
                .map_err(|e| cc_err(format!("{}: {e}", cert.display())))?;
            if chain.is_empty() {
                return Err(cc_err(format!("{}: no PEM certificate", cert.display())));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| cc_err(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| cc_err(e.to_string()))?
        }
    };
    Ok(config)
}

/// The usual verification (webpki, the system's roots and the registry's extra CAs), with the
/// system's roots loaded at the first certificate it checks: a build that only speaks plain
/// HTTP, or none at all, never reads the system's CA directory (hundreds of files).
#[derive(Debug)]
struct LazyRootsVerifier {
    extra: RootCertStore,
    verifier: OnceLock<Result<Arc<rustls::client::WebPkiServerVerifier>, String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl LazyRootsVerifier {
    fn inner(&self) -> Result<&Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                let mut roots = system_root_store().clone();
                roots.roots.extend(self.extra.roots.iter().cloned());
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(format!("no trusted certificates: {e}")))
    }
}

impl ServerCertVerifier for LazyRootsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // Handshake signatures come after the certificate: the roots are loaded by then.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    // Asked when the handshake starts: from the provider, without the roots.
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `--skip-tls-verify`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// HTTP clients, one per (registry, direction), built on first use.
#[derive(Debug, Default)]
pub struct Clients {
    options: TransportOptions,
    cache: Mutex<BTreeMap<(String, Direction), reqwest::Client>>,
}

impl Clients {
    /// Clients for these options.
    pub fn new(options: TransportOptions) -> Self {
        Clients {
            options,
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// The options.
    pub fn options(&self) -> &TransportOptions {
        &self.options
    }

    /// The client for `host` in `direction`.
    pub fn get(&self, host: &str, direction: Direction) -> Result<reqwest::Client, TransportError> {
        let key = (host.to_string(), direction);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        let policy = self.options.policy(host, direction);
        let tls = tls_config(host, &policy)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(
                self.options
                    .connect_timeout
                    .unwrap_or(Duration::from_secs(30)),
            )
            // Per read, reset by every byte that arrives: a long download is fine, a stall
            // is not.
            .read_timeout(
                self.options
                    .read_timeout
                    .unwrap_or(Duration::from_secs(120)),
            )
            .pool_idle_timeout(Duration::from_secs(60))
            // Redirects to blob storage are followed; credentials are never forwarded.
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError::Client {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
        cache.insert(key, client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_follow_kaniko_flags() {
        let options = TransportOptions {
            insecure_push: true,
            insecure_registries: vec!["mirror:5000".into()],
            skip_verify_pull: true,
            ..TransportOptions::default()
        };
        assert!(options.policy("r", Direction::Push).allow_http);
        assert!(!options.policy("r", Direction::Pull).allow_http);
        assert!(options.policy("mirror:5000", Direction::Pull).allow_http);
        assert!(options.policy("r", Direction::Pull).skip_verify);
        assert!(!options.policy("r", Direction::Push).skip_verify);
    }

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let mut options = TransportOptions::default();
        options
            .ca_files
            .insert("r:5000".into(), vec![empty.clone()]);
        let e = Clients::new(options)
            .get("r:5000", Direction::Pull)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "--registry-certificate for r:5000: {}:",
                empty.display()
            )),
            "{e}"
        );
    }
}
