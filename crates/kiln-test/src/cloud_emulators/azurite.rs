//! Azurite, Microsoft's own Azure Storage emulator (npm `azurite`), running
//! its Blob service on a free `127.0.0.1` port; plus a SharedKey signer
//! (Microsoft's documented string-to-sign) to put blobs into it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;

use super::jwt::{http_date, random_hex, unix_now};
use super::server::https_request;
use crate::certs::TestCa;
use crate::error::{Error, IoContext, Result};
use crate::http::{http_request, percent_encode_path, HttpResponse};

/// Where `scripts/test.sh` installs Azurite (`npm install --prefix`).
pub const AZURITE_DIR: &str = "/opt/kiln-test/azurite";

/// The variable that overrides [`AZURITE_DIR`].
pub const AZURITE_DIR_ENV: &str = "KILN_TEST_AZURITE_DIR";

/// Azurite's well-known development account (`devstoreaccount1`).
pub const AZURITE_DEV_ACCOUNT: &str = "devstoreaccount1";

/// The well-known key of [`AZURITE_DEV_ACCOUNT`] (public, in Microsoft's docs).
pub const AZURITE_DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The storage service version the helpers send (object_store 0.14's).
pub const AZURE_STORAGE_VERSION: &str = "2023-11-03";

/// How an [`Azurite`] runs.
#[derive(Clone)]
pub struct AzuriteOptions {
    /// Storage accounts and their base64 keys (`AZURITE_ACCOUNTS`); empty:
    /// only [`AZURITE_DEV_ACCOUNT`].
    pub accounts: Vec<(String, String)>,
    /// Serve HTTPS (`--cert`/`--key`) with a certificate from a new CA.
    pub tls: bool,
    /// Accept Entra ID bearer tokens (`--oauth basic`: any JWT with an
    /// `https://sts.windows.net/…` issuer and a storage audience; needs TLS).
    pub oauth: bool,
    /// How long to wait for Azurite to listen.
    pub startup_timeout: Duration,
}

impl std::fmt::Debug for AzuriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.accounts.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AzuriteOptions")
            .field("accounts", &names)
            .field("tls", &self.tls)
            .field("oauth", &self.oauth)
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

impl Default for AzuriteOptions {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            tls: false,
            oauth: false,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl AzuriteOptions {
    /// Plain HTTP, the development account only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a storage account with a base64 key (see [`generate_account_key`]).
    pub fn account(mut self, name: &str, key: &str) -> Self {
        self.accounts.push((name.into(), key.into()));
        self
    }

    /// Serves HTTPS.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Accepts Entra ID bearer tokens (turns TLS on: Azurite requires it).
    pub fn oauth(mut self) -> Self {
        self.oauth = true;
        self.tls = true;
        self
    }
}

/// A new random storage account key: 64 bytes, base64, as Azure's.
pub fn generate_account_key() -> String {
    let hex = random_hex(64);
    let bytes: Vec<u8> = (0..64)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect();
    STANDARD.encode(bytes)
}

/// The `Authorization: SharedKey ACCOUNT:SIGNATURE` value for a Blob service
/// request, per Microsoft's "Authorize with Shared Key" (version 2009-09-19
/// and later): HMAC-SHA256 with the base64-decoded `key` over
///
/// ```text
/// VERB\nContent-Encoding\nContent-Language\nContent-Length (empty if 0)\n
/// Content-MD5\nContent-Type\nDate\nIf-Modified-Since\nIf-Match\n
/// If-None-Match\nIf-Unmodified-Since\nRange\n
/// CanonicalizedHeaders (x-ms-*: lowercased, sorted, "name:value\n")
/// CanonicalizedResource ("/ACCOUNT" + URI path, then "\nname:v1,v2" per
///                        query parameter, names lowercased and sorted)
/// ```
///
/// `path_and_query` is the request target as sent (still percent-encoded;
/// path-style emulator URLs include the account: `/ACCOUNT/container/blob`).
/// `headers` are the request's headers, `Content-Length` included when the
/// body is not empty.
pub fn shared_key_authorization(
    account: &str,
    key: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<String> {
    let key = STANDARD
        .decode(key)
        .map_err(|e| Error::Crypto(format!("storage account key is not base64: {e}")))?;
    let header = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect::<Vec<_>>()
            .join(",")
    };
    let content_length = header("content-length");
    let content_length = if content_length == "0" {
        String::new()
    } else {
        content_length
    };
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    ms.sort();
    let canonical_headers: String = ms.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut resource = format!("/{account}{path}");
    let mut params: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in crate::http::parse_form(query) {
        params
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value);
    }
    for (name, mut values) in params {
        values.sort();
        resource.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    let string_to_sign = format!(
        "{method}\n{}\n{}\n{content_length}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{canonical_headers}{resource}",
        header("content-encoding"),
        header("content-language"),
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let signature = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    );
    Ok(format!(
        "SharedKey {account}:{}",
        STANDARD.encode(signature.as_ref())
    ))
}

/// A running Azurite Blob service (`azurite-blob`), started from
/// [`AZURITE_DIR`] (or `$KILN_TEST_AZURITE_DIR`) with
/// `--blobHost 127.0.0.1 --blobPort 0` (the OS picks the port; Azurite prints
/// it), `--disableTelemetry`, `--skipApiVersionCheck --loose`, its data in a
/// temp dir. Dropping it kills the process (by PID) and waits for it.
///
/// How object_store 0.14 reaches it for
/// `https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`:
/// `AZURE_STORAGE_USE_EMULATOR=true`,
/// `AZURITE_BLOB_STORAGE_URL=`[`Self::blob_endpoint`],
/// `AZURE_STORAGE_ACCESS_KEY=KEY`: it keeps the account from the URL, goes
/// path-style (`/ACCOUNT/CONTAINER/PATH`) and allows plain HTTP; or
/// `AZURE_STORAGE_ENDPOINT=`[`Self::account_endpoint`] (+
/// `AZURE_ALLOW_HTTP=true` without TLS).
pub struct Azurite {
    process: Child,
    addr: SocketAddr,
    tls_ca: Option<TestCa>,
    accounts: Vec<(String, String)>,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Azurite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azurite")
            .field("pid", &self.process.id())
            .field("addr", &self.addr)
            .field("tls", &self.tls_ca.is_some())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The directory Azurite is installed in.
pub fn azurite_dir() -> PathBuf {
    std::env::var_os(AZURITE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(AZURITE_DIR))
}

impl Azurite {
    /// Whether Azurite is installed (see `scripts/test.sh`).
    pub fn available() -> bool {
        main_js(&azurite_dir()).is_file()
    }

    /// Starts the Blob service and waits until it listens.
    pub fn start(options: AzuriteOptions) -> Result<Self> {
        let install = azurite_dir();
        let main = main_js(&install);
        if !main.is_file() {
            return Err(Error::InvalidOptions(format!(
                "Azurite is not installed at {} (scripts/test.sh installs it: npm install --prefix {AZURITE_DIR} azurite@3.35.0)",
                install.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-azurite-")
            .tempdir()
            .context(|| "create Azurite temp dir".into())?;
        let data = dir.path().join("data");
        fs::create_dir(&data).path_context(&data)?;
        let log_path = dir.path().join("azurite.log");
        let log = fs::File::create(&log_path).path_context(&log_path)?;
        let log_err = log.try_clone().path_context(&log_path)?;

        let mut command = Command::new("node");
        command
            .arg(&main)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--location"])
            .arg(&data)
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--loose"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .env_remove("AZURITE_ACCOUNTS");
        let tls_ca = if options.tls {
            let ca = TestCa::new("kiln-test Azurite CA")?;
            let cert = ca.issue_loopback_server()?;
            let cert_path = dir.path().join("cert.pem");
            let key_path = dir.path().join("key.pem");
            fs::write(&cert_path, &cert.cert_pem).path_context(&cert_path)?;
            fs::write(&key_path, &cert.key_pem).path_context(&key_path)?;
            command
                .arg("--cert")
                .arg(&cert_path)
                .arg("--key")
                .arg(&key_path);
            Some(ca)
        } else {
            None
        };
        if options.oauth {
            command.args(["--oauth", "basic"]);
        }
        let accounts = if options.accounts.is_empty() {
            vec![(AZURITE_DEV_ACCOUNT.to_string(), AZURITE_DEV_KEY.to_string())]
        } else {
            let spec: Vec<String> = options
                .accounts
                .iter()
                .map(|(name, key)| format!("{name}:{key}"))
                .collect();
            command.env("AZURITE_ACCOUNTS", spec.join(";"));
            options.accounts.clone()
        };
        let process = command.spawn().map_err(|e| Error::Command {
            command: format!("node {}", main.display()),
            status: e.to_string(),
            stderr: String::new(),
        })?;
        let mut azurite = Self {
            process,
            // Replaced once Azurite prints its port.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_ca,
            accounts,
            log_path,
            dir,
        };
        azurite.addr = azurite.wait_listening(options.startup_timeout)?;
        Ok(azurite)
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        let marker = if self.tls_ca.is_some() {
            "successfully listens on https://127.0.0.1:"
        } else {
            "successfully listens on http://127.0.0.1:"
        };
        loop {
            let log = self.log();
            if let Some(rest) = log.split(marker).nth(1) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port) = port.parse::<u16>() {
                    return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
                }
            }
            if let Some(status) = self.process.try_wait().context(|| "poll Azurite".into())? {
                return Err(Error::Command {
                    command: "azurite-blob".into(),
                    status: status.to_string(),
                    stderr: log,
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("Azurite (pid {})", self.process.id()),
                    timeout,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Azurite's process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Azurite's output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls_ca.is_some()
    }

    /// The CA PEM its certificate chains to, with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls_ca.as_ref().map(TestCa::cert_pem)
    }

    /// `http(s)://127.0.0.1:PORT`: object_store's `AZURITE_BLOB_STORAGE_URL`.
    pub fn blob_endpoint(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `http(s)://127.0.0.1:PORT/ACCOUNT`: object_store's `AZURE_STORAGE_ENDPOINT`.
    pub fn account_endpoint(&self, account: &str) -> String {
        format!("{}/{account}", self.blob_endpoint())
    }

    /// The base64 key of `account`.
    pub fn account_key(&self, account: &str) -> Option<&str> {
        self.accounts
            .iter()
            .find(|(name, _)| name == account)
            .map(|(_, key)| key.as_str())
    }

    /// Sends one request signed with `account`'s key (path-style target
    /// `/ACCOUNT/…`), with `x-ms-date` and `x-ms-version` added.
    pub fn signed_request(
        &self,
        account: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let key = self
            .account_key(account)
            .ok_or_else(|| Error::InvalidOptions(format!("Azurite has no account {account:?}")))?;
        let date = http_date(unix_now());
        let length = body.len().to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("x-ms-date", date.as_str()),
            ("x-ms-version", AZURE_STORAGE_VERSION),
        ];
        all.extend_from_slice(headers);
        let mut signed = all.clone();
        if !body.is_empty() || method == "PUT" || method == "POST" {
            signed.push(("Content-Length", length.as_str()));
        }
        let authorization = shared_key_authorization(account, key, method, target, &signed)?;
        all.push(("Authorization", authorization.as_str()));
        self.request(method, target, &all, body)
    }

    /// Sends one request as it is (no signing).
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        match self.ca_pem() {
            Some(ca) => https_request(self.addr, ca, method, target, headers, body),
            None => http_request(self.addr, method, target, headers, body),
        }
    }

    /// Creates a container (Create Container); an existing one is fine.
    pub fn create_container(&self, account: &str, container: &str) -> Result<()> {
        let target = format!("/{account}/{container}?restype=container");
        let response = self.signed_request(account, "PUT", &target, &[], &[])?;
        match response.status {
            201 | 409 => Ok(()),
            status => Err(Error::Http(format!(
                "Azurite Create Container {account}/{container}: {status} {}",
                response.text()
            ))),
        }
    }

    /// Uploads a block blob (Put Blob), creating the container first.
    pub fn put_blob(&self, account: &str, container: &str, blob: &str, data: &[u8]) -> Result<()> {
        self.create_container(account, container)?;
        let target = format!("/{account}/{container}/{}", percent_encode_path(blob));
        let response = self.signed_request(
            account,
            "PUT",
            &target,
            &[
                ("x-ms-blob-type", "BlockBlob"),
                ("Content-Type", "application/octet-stream"),
            ],
            data,
        )?;
        if response.status != 201 {
            return Err(Error::Http(format!(
                "Azurite Put Blob {account}/{container}/{blob}: {} {}",
                response.status,
                response.text()
            )));
        }
        Ok(())
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

fn main_js(install: &Path) -> PathBuf {
    install.join("node_modules/azurite/dist/src/blob/main.js")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the string-to-sign layout of Microsoft's "Authorize with Shared
    /// Key" (empty standard headers, `x-ms-*` sorted, the path-style resource
    /// with the account twice, query parameters one per line); the
    /// integration tests check Azurite accepts what it signs.
    #[test]
    fn shared_key_signs_the_documented_string() {
        let key = STANDARD.encode(b"kiln-test-key");
        let auth = shared_key_authorization(
            "acct",
            &key,
            "GET",
            "/acct/c/b.txt?comp=metadata&timeout=20",
            &[
                ("x-ms-version", "2023-11-03"),
                ("x-ms-date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ("Range", "bytes=0-9"),
            ],
        )
        .unwrap();
        let expected_string = "GET\n\n\n\n\n\n\n\n\n\n\nbytes=0-9\nx-ms-date:Sun, 06 Nov 1994 08:49:37 GMT\nx-ms-version:2023-11-03\n/acct/acct/c/b.txt\ncomp:metadata\ntimeout:20";
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"kiln-test-key"),
            expected_string.as_bytes(),
        );
        assert_eq!(
            auth,
            format!("SharedKey acct:{}", STANDARD.encode(expected.as_ref()))
        );
        assert_eq!(generate_account_key().len(), 88);
    }
}
