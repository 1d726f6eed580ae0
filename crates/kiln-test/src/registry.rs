//! A real Distribution registry (`docker-registry serve`) on a free
//! `127.0.0.1` port, with its config, storage, certificates and log in one
//! temp dir; killed and waited for on drop.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::{CertUse, KeyAlgorithm, TestCa};
use crate::error::{Error, IoContext, Result};
use crate::free_port;
use crate::http::request_with_timeout;
use crate::token::{TokenAuthOptions, TokenServer};

/// The registry binary (Debian's `docker-registry` package, Distribution 2.8).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How many times to retry when another process grabbed the chosen port.
const PORT_ATTEMPTS: usize = 5;

/// How the registry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Plain HTTP.
    #[default]
    Plain,
    /// HTTPS with a server certificate from a generated CA.
    Server,
    /// HTTPS that also requires a client certificate (`http.tls.clientcas`).
    Mutual,
}

/// What kind of registry [`Registry::start`] runs.
#[derive(Clone)]
pub struct RegistryOptions {
    /// Plain HTTP, TLS or mutual TLS.
    pub tls: TlsMode,
    /// Users for htpasswd basic auth (bcrypt, made with `htpasswd -Bbn`).
    pub htpasswd_users: Vec<(String, String)>,
    /// Token auth, served by a [`TokenServer`] started alongside.
    pub token_auth: Option<TokenAuthOptions>,
    /// Also run the debug/metrics server on another free port.
    pub debug_server: bool,
    /// How long to wait for `GET /v2/` to answer.
    pub startup_timeout: Duration,
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self
            .htpasswd_users
            .iter()
            .map(|(u, _)| u.as_str())
            .collect();
        f.debug_struct("RegistryOptions")
            .field("tls", &self.tls)
            .field("htpasswd_users", &users)
            .field("token_auth", &self.token_auth)
            .field("debug_server", &self.debug_server)
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            tls: TlsMode::Plain,
            htpasswd_users: Vec::new(),
            token_auth: None,
            debug_server: false,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl RegistryOptions {
    /// A plain-HTTP registry without auth.
    pub fn plain() -> Self {
        Self::default()
    }

    /// Serve HTTPS with a generated CA and a certificate for `127.0.0.1`/`localhost`.
    pub fn tls(mut self) -> Self {
        self.tls = TlsMode::Server;
        self
    }

    /// Serve HTTPS and require a client certificate signed by a generated client CA.
    pub fn mutual_tls(mut self) -> Self {
        self.tls = TlsMode::Mutual;
        self
    }

    /// Require htpasswd basic auth; may be called for several users.
    pub fn htpasswd(mut self, user: &str, password: &str) -> Self {
        self.htpasswd_users.push((user.into(), password.into()));
        self
    }

    /// Require bearer tokens from a token server run with these options.
    pub fn token_auth(mut self, options: TokenAuthOptions) -> Self {
        self.token_auth = Some(options);
        self
    }

    /// Run the debug server (`http.debug.addr`) on another free port.
    pub fn debug_server(mut self) -> Self {
        self.debug_server = true;
        self
    }

    /// How long to wait for the registry to answer.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }
}

/// Files for a TLS registry.
#[derive(Debug)]
struct TlsFiles {
    ca_pem: Vec<u8>,
    ca_pem_path: PathBuf,
    server_cert_path: PathBuf,
    server_key_path: PathBuf,
    cert_dir: PathBuf,
    client: Option<ClientFiles>,
}

#[derive(Debug)]
struct ClientFiles {
    client_ca_path: PathBuf,
    cert_path: PathBuf,
    key_path: PathBuf,
    cert_dir: PathBuf,
}

/// A running `docker-registry serve`. Dropping it kills the process (by PID)
/// and waits for it, then stops its token server if any.
pub struct Registry {
    // Field order is drop order: the process dies before its token server,
    // and the temp dir goes last.
    process: ProcessGuard,
    addr: SocketAddr,
    debug_addr: Option<SocketAddr>,
    tls: Option<TlsFiles>,
    storage_dir: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    htpasswd_users: Vec<(String, String)>,
    token_server: Option<TokenServer>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("pid", &self.process.0.id())
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .field("token_server", &self.token_server)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Writes a config, starts `docker-registry serve` and waits until
    /// `GET /v2/` answers (200 or 401; for TLS, the Go server's plain-HTTP
    /// rejection, which only a serving listener sends).
    pub fn start(options: RegistryOptions) -> Result<Registry> {
        if options.token_auth.is_some() && !options.htpasswd_users.is_empty() {
            return Err(Error::InvalidOptions(
                "Distribution accepts one auth backend: htpasswd or token, not both".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-registry-")
            .tempdir()
            .context(|| "create registry temp dir".into())?;
        let storage_dir = dir.path().join("storage");
        fs::create_dir(&storage_dir).path_context(&storage_dir)?;
        let tls = write_tls_files(dir.path(), options.tls)?;
        let htpasswd_path = if options.htpasswd_users.is_empty() {
            None
        } else {
            Some(write_htpasswd(dir.path(), &options.htpasswd_users)?)
        };
        let token_server = options
            .token_auth
            .clone()
            .map(TokenServer::start)
            .transpose()?;

        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let debug_addr = if options.debug_server {
                Some(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
            } else {
                None
            };
            let config = render_config(&ConfigInput {
                addr,
                debug_addr,
                storage_dir: &storage_dir,
                tls: tls.as_ref(),
                htpasswd_path: htpasswd_path.as_deref(),
                token_server: token_server.as_ref(),
            });
            fs::write(&config_path, config).path_context(&config_path)?;
            let mut process = ProcessGuard(spawn(&config_path, &log_path)?);
            let tls_mode = options.tls != TlsMode::Plain;
            match wait_ready(
                &mut process.0,
                addr,
                tls_mode,
                options.startup_timeout,
                &log_path,
            ) {
                Ok(()) => {
                    return Ok(Registry {
                        process,
                        addr,
                        debug_addr,
                        tls,
                        storage_dir,
                        config_path,
                        log_path,
                        htpasswd_users: options.htpasswd_users,
                        token_server,
                        dir,
                    })
                }
                Err(e) => {
                    drop(process);
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    if !log.contains("address already in use") {
                        return Err(e);
                    }
                    // Another process took the port between probe and bind: retry.
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::InvalidOptions("no start attempt made".into())))
    }

    /// Kills the registry process (SIGKILL: a crash, not a clean shutdown), keeps it down for
    /// `down`, then starts it again on the same port with the same config and storage and
    /// waits until it answers: a registry restarted under its clients.
    pub fn restart(&mut self, down: Duration) -> Result<()> {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        std::thread::sleep(down);
        self.process = ProcessGuard(spawn(&self.config_path, &self.log_path)?);
        wait_ready(
            &mut self.process.0,
            self.addr,
            self.tls.is_some(),
            Duration::from_secs(30),
            &self.log_path,
        )
    }

    /// The `127.0.0.1:PORT` the registry listens on.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Whether the registry serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The CA that issued the server certificate (PEM file), for TLS registries.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_pem_path.as_path())
    }

    /// The CA certificate PEM bytes, for TLS registries.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.tls.as_ref().map(|t| t.ca_pem.as_slice())
    }

    /// A docker/containers `certs.d`-style dir holding only `ca.crt`.
    pub fn cert_dir(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert_dir.as_path())
    }

    /// For mutual TLS: the client certificate and key PEM paths.
    pub fn client_cert_paths(&self) -> Option<(&Path, &Path)> {
        self.tls
            .as_ref()
            .and_then(|t| t.client.as_ref())
            .map(|c| (c.cert_path.as_path(), c.key_path.as_path()))
    }

    /// For mutual TLS: the CA that signs client certificates (PEM file).
    pub fn client_ca_pem_path(&self) -> Option<&Path> {
        self.tls
            .as_ref()
            .and_then(|t| t.client.as_ref())
            .map(|c| c.client_ca_path.as_path())
    }

    /// For mutual TLS: a `certs.d`-style dir with `ca.crt`, `client.cert`, `client.key`.
    pub fn client_cert_dir(&self) -> Option<&Path> {
        self.tls
            .as_ref()
            .and_then(|t| t.client.as_ref())
            .map(|c| c.cert_dir.as_path())
    }

    /// The filesystem storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage_dir
    }

    /// The config file the registry runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The file that receives the registry's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// The debug server's address, when started with [`RegistryOptions::debug_server`].
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.debug_addr
    }

    /// The htpasswd users, when basic auth is on.
    pub fn htpasswd_users(&self) -> &[(String, String)] {
        &self.htpasswd_users
    }

    /// The token server, when token auth is on.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    /// Credentials that work for a push: the first htpasswd user, or the
    /// first token-server user that may push.
    pub fn push_credentials(&self) -> Option<(String, String)> {
        if let Some(user) = self.htpasswd_users.first() {
            return Some(user.clone());
        }
        self.token_server.as_ref().and_then(|t| {
            t.options()
                .users
                .iter()
                .find(|u| u.can_push)
                .map(|u| (u.name.clone(), u.password.clone()))
        })
    }
}

/// Kills (by PID, via `Child::kill`) and reaps a child process on drop.
struct ProcessGuard(Child);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    tls: bool,
    timeout: Duration,
    log_path: &Path,
) -> Result<()> {
    let log = || fs::read_to_string(log_path).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context(|| "poll registry".into())? {
            return Err(Error::RegistryExited {
                pid: child.id(),
                status: status.to_string(),
                log: log(),
            });
        }
        let probe = request_with_timeout(addr, "GET", "/v2/", &[], &[], Duration::from_secs(2));
        if let Ok(response) = probe {
            let ready = if tls {
                // Go's TLS listener answers a plain-HTTP request this way once
                // it serves; no TLS client is needed to see it.
                response.status == 400 && response.text().contains("HTTPS server")
            } else {
                matches!(response.status, 200 | 401)
            };
            if ready {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("docker-registry (pid {}) on {addr}", child.id()),
                timeout,
                log: log(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn spawn(config_path: &Path, log_path: &Path) -> Result<Child> {
    let log = fs::File::create(log_path).path_context(log_path)?;
    let log_err = log.try_clone().path_context(log_path)?;
    let mut command = Command::new(REGISTRY_BIN);
    command
        .arg("serve")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    // REGISTRY_* variables override the config file; keep the config the truth.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(key);
        }
    }
    command.spawn().map_err(|e| Error::Command {
        command: format!("{REGISTRY_BIN} serve {}", config_path.display()),
        status: e.to_string(),
        stderr: String::new(),
    })
}

fn write_tls_files(dir: &Path, mode: TlsMode) -> Result<Option<TlsFiles>> {
    if mode == TlsMode::Plain {
        return Ok(None);
    }
    let tls_dir = dir.join("tls");
    fs::create_dir(&tls_dir).path_context(&tls_dir)?;
    let write = |name: &str, contents: &str| -> Result<PathBuf> {
        let path = tls_dir.join(name);
        fs::write(&path, contents).path_context(&path)?;
        Ok(path)
    };
    let ca = TestCa::new("kiln-test registry CA")?;
    let server = ca.issue_loopback_server()?;
    let ca_pem_path = write("ca.pem", ca.cert_pem())?;
    let server_cert_path = write("server.pem", &server.cert_pem)?;
    let server_key_path = write("server-key.pem", &server.key_pem)?;
    let cert_dir = dir.join("certs.d");
    fs::create_dir(&cert_dir).path_context(&cert_dir)?;
    let ca_crt = cert_dir.join("ca.crt");
    fs::write(&ca_crt, ca.cert_pem()).path_context(&ca_crt)?;

    let client = if mode == TlsMode::Mutual {
        let client_ca = TestCa::new("kiln-test client CA")?;
        let client = client_ca.issue(
            "kiln-test-client",
            &[],
            CertUse::Client,
            KeyAlgorithm::EcdsaP256,
        )?;
        let client_ca_path = write("client-ca.pem", client_ca.cert_pem())?;
        let cert_path = write("client.pem", &client.cert_pem)?;
        let key_path = write("client-key.pem", &client.key_pem)?;
        let client_dir = dir.join("client-certs.d");
        fs::create_dir(&client_dir).path_context(&client_dir)?;
        for (name, contents) in [
            ("ca.crt", ca.cert_pem()),
            ("client.cert", client.cert_pem.as_str()),
            ("client.key", client.key_pem.as_str()),
        ] {
            let path = client_dir.join(name);
            fs::write(&path, contents).path_context(&path)?;
        }
        Some(ClientFiles {
            client_ca_path,
            cert_path,
            key_path,
            cert_dir: client_dir,
        })
    } else {
        None
    };
    Ok(Some(TlsFiles {
        ca_pem: ca.cert_pem().as_bytes().to_vec(),
        ca_pem_path,
        server_cert_path,
        server_key_path,
        cert_dir,
        client,
    }))
}

fn write_htpasswd(dir: &Path, users: &[(String, String)]) -> Result<PathBuf> {
    let mut contents = String::new();
    for (user, password) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .map_err(|e| Error::Command {
                command: format!("htpasswd -Bbn {user} <password>"),
                status: e.to_string(),
                stderr: String::new(),
            })?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("htpasswd -Bbn {user} <password>"),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        contents.push_str(String::from_utf8_lossy(&out.stdout).trim_end());
        contents.push('\n');
    }
    let path = dir.join("htpasswd");
    fs::write(&path, contents).path_context(&path)?;
    Ok(path)
}

struct ConfigInput<'a> {
    addr: SocketAddr,
    debug_addr: Option<SocketAddr>,
    storage_dir: &'a Path,
    tls: Option<&'a TlsFiles>,
    htpasswd_path: Option<&'a Path>,
    token_server: Option<&'a TokenServer>,
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(value: impl AsRef<str>) -> String {
    serde_json::Value::String(value.as_ref().to_string()).to_string()
}

fn qp(path: &Path) -> String {
    q(path.to_string_lossy())
}

/// Renders a Distribution 2.8 config (`configuration/configuration.go`).
fn render_config(input: &ConfigInput<'_>) -> String {
    let mut y = String::new();
    y.push_str("version: 0.1\n");
    y.push_str("log:\n  level: warn\n  formatter: text\n  accesslog:\n    disabled: true\n");
    y.push_str("storage:\n");
    y.push_str(&format!(
        "  filesystem:\n    rootdirectory: {}\n",
        qp(input.storage_dir)
    ));
    y.push_str("  delete:\n    enabled: true\n");
    y.push_str("  maintenance:\n    uploadpurging:\n      enabled: false\n");
    y.push_str("http:\n");
    y.push_str(&format!("  addr: {}\n", q(input.addr.to_string())));
    y.push_str("  secret: \"kiln-test-not-a-secret\"\n");
    if let Some(debug) = input.debug_addr {
        y.push_str(&format!("  debug:\n    addr: {}\n", q(debug.to_string())));
    }
    if let Some(tls) = input.tls {
        y.push_str("  tls:\n");
        y.push_str(&format!("    certificate: {}\n", qp(&tls.server_cert_path)));
        y.push_str(&format!("    key: {}\n", qp(&tls.server_key_path)));
        if let Some(client) = &tls.client {
            y.push_str(&format!(
                "    clientcas:\n      - {}\n",
                qp(&client.client_ca_path)
            ));
        }
    }
    y.push_str("health:\n  storagedriver:\n    enabled: false\n");
    if let Some(path) = input.htpasswd_path {
        y.push_str("auth:\n  htpasswd:\n    realm: \"kiln-test\"\n");
        y.push_str(&format!("    path: {}\n", qp(path)));
    }
    if let Some(token) = input.token_server {
        y.push_str("auth:\n  token:\n");
        y.push_str(&format!("    realm: {}\n", q(token.realm())));
        y.push_str(&format!("    service: {}\n", q(token.service())));
        y.push_str(&format!("    issuer: {}\n", q(token.issuer())));
        y.push_str(&format!(
            "    rootcertbundle: {}\n",
            qp(token.root_cert_bundle_path())
        ));
    }
    y
}
