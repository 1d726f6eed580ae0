//! The real AWS emulator: moto's standalone server (`moto_server`, PyPI
//! `moto[server]` 5.x, installed by `scripts/test.sh` into a venv at
//! `/opt/kiln-test/moto`) on a free `127.0.0.1` port, its log in a temp dir;
//! killed (by PID) and reaped on drop.
//!
//! One server speaks every service on one port: it routes a request by the
//! service named in its SigV4 `Authorization` header's credential scope
//! (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`), so an SDK pointed at
//! [`Moto::endpoint_url`] with `AWS_ENDPOINT_URL` reaches S3, STS and ECR
//! alike. What follows was found by experiment against moto 5.2.6 (and read
//! in its source); the tests in `tests/it/moto.rs` pin the parts kiln relies on.
//!
//! # Signatures and accounts
//!
//! - moto checks no signature (its `INITIAL_NO_AUTH_ACTION_COUNT` defaults to
//!   infinity; [`Moto::start`] clears that variable and every `MOTO_*` and
//!   `AWS_*` variable from the server's environment): any access key and any
//!   `Signature=` value is accepted, also a session token nobody issued.
//! - The *account* of a request is that of its access key: keys moto issued
//!   through STS belong to the account in the assumed role's ARN; any other
//!   key belongs to [`Moto::DEFAULT_ACCOUNT`] (`123456789012`).
//! - The region is the credential scope's region; it is not checked against
//!   where a bucket lives for reads.
//!
//! # ECR `GetAuthorizationToken`
//!
//! `POST /` with `X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken`,
//! `Content-Type: application/x-amz-json-1.1`, body `{}` and a SigV4-looking
//! `Authorization` header whose scope names `ecr` (without one moto cannot
//! route the request and answers 500) returns
//!
//! ```json
//! {"authorizationData": [{"authorizationToken": "QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu",
//!   "expiresAt": 1420070400, "proxyEndpoint": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"}]}
//! ```
//!
//! - `authorizationToken` is base64 (standard, padded) of `AWS:{account}-auth-token`:
//!   user [`Moto::ECR_USER`] (`AWS`), password [`Moto::ecr_password`]`(account)`.
//!   `account` is the caller's (above) or, one entry each, the `registryIds` of the body.
//! - `expiresAt` is always [`Moto::ECR_EXPIRES_AT`], 2015-01-01T00:00:00Z (epoch
//!   seconds, a JSON number): a token that is *already expired*. A client that
//!   refuses or never caches expired tokens must cope (each lookup then asks again).
//! - `proxyEndpoint` is `https://{account}.dkr.ecr.{region}.amazonaws.com` with the
//!   scope's region ([`Moto::ecr_proxy_endpoint`]). No region is checked, and the
//!   suffix is `.amazonaws.com` for China regions too (AWS says `.amazonaws.com.cn`).
//!
//! # STS `AssumeRoleWithWebIdentity` (IRSA)
//!
//! - The AWS SDKs send it unsigned, as a form body (`Action=AssumeRoleWithWebIdentity&
//!   Version=2011-06-15&RoleArn=…&RoleSessionName=…&WebIdentityToken=…`); moto routes an
//!   unsigned request to STS by that `Action` in a form body. Any token is accepted (it
//!   need not even look like a JWT; [`Moto::web_identity_token`] makes one that does),
//!   the role need not exist, nothing is verified.
//! - It returns `AccessKeyId` `ASIA` + 16 random upper-case letters and digits,
//!   a random `SecretAccessKey`, a `SessionToken` starting `FQoGZXIvYXdzEBYaD`,
//!   `Expiration` = now + `DurationSeconds` (default 3600 s) and the
//!   `AssumedRoleUser` ARN `arn:aws:sts::{account}:assumed-role/{role}/{session}`.
//! - Those keys then work for S3 and ECR (nothing is checked) and carry the role's
//!   account: `GetAuthorizationToken` signed with them answers
//!   `AWS:{role account}-auth-token` and `https://{role account}.dkr.ecr.…`.
//!   Checked with a real SDK (boto3, whose chain reads `AWS_WEB_IDENTITY_TOKEN_FILE`,
//!   `AWS_ROLE_ARN` and `AWS_ENDPOINT_URL` as the Rust SDK's does): credentials
//!   method `assume-role-with-web-identity`, `GetCallerIdentity`, ECR and S3 all worked.
//! - Not routable: the request with its parameters in the *query string* and no
//!   body and no `Authorization` (what `object_store`'s own web-identity provider,
//!   `AWS_ENDPOINT_URL_STS`, sends): moto routes it to S3 and answers 500. Fetch
//!   credentials with aws-config and give them to `object_store` instead.
//!
//! # S3
//!
//! - Path-style only (`http://127.0.0.1:PORT/BUCKET/KEY`): a virtual-hosted
//!   request would need `BUCKET.127.0.0.1` to resolve. `object_store`: endpoint
//!   [`Moto::endpoint_url`], `virtual_hosted_style_request` false (its default;
//!   kaniko's `S3_FORCE_PATH_STYLE=true`), and `allow_http` true (`AWS_ALLOW_HTTP`),
//!   or it refuses the `http://` endpoint.
//! - A request without an `Authorization` header is anonymous: `GetObject` of a
//!   private object answers 403. Any signed-looking request reads it.
//! - `PutObject` must not carry `Content-Type: application/x-www-form-urlencoded`
//!   (curl's default for `--data-binary`): moto's router consumes such a body and
//!   stores an empty object. [`Moto::put_object`] sends `application/octet-stream`.
//! - `CreateBucket` without a `LocationConstraint` must be scoped `us-east-1`
//!   (otherwise `IllegalLocationConstraintException`); creating an existing bucket
//!   of the same account there answers 200. Missing keys: 404 `NoSuchKey`. `Range`
//!   requests work.
//!
//! # Other
//!
//! - `POST /moto-api/reset` forgets all state ([`Moto::reset`]).
//! - The server starts in about 0.25 s on this machine; each service loads on its
//!   first request (well under 0.1 s). A taken port makes it print `Address already
//!   in use` and exit 1, and [`Moto::start`] then retries on another port.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::free_port;
use crate::http::{percent_encode, percent_encode_path, request_with_timeout, HttpResponse};

/// Where `scripts/test.sh` installs moto's server (a venv outside the repository).
pub const MOTO_SERVER_BIN: &str = "/opt/kiln-test/moto/bin/moto_server";

/// How many times to retry when another process grabbed the chosen port.
const PORT_ATTEMPTS: usize = 5;

/// How long [`Moto::start`] waits for the server to answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one request to moto may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The ECR `authorizationData` moto returns, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrAuthorization {
    /// The token as sent: base64 of `user:password`.
    pub authorization_token: String,
    /// The user in the token: always [`Moto::ECR_USER`].
    pub user: String,
    /// The password in the token: [`Moto::ecr_password`] of the account.
    pub password: String,
    /// `expiresAt` in epoch seconds: always [`Moto::ECR_EXPIRES_AT`].
    pub expires_at: i64,
    /// `proxyEndpoint`, e.g. `https://123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub proxy_endpoint: String,
}

/// Temporary credentials from STS (`AssumeRoleWithWebIdentity`).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `ASIA…`: moto maps it to the assumed role's account.
    pub access_key_id: String,
    /// The secret key (moto never checks it).
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
    /// `Expiration` as sent (ISO 8601, e.g. `2026-12-07T09:39:42.808539Z`).
    pub expiration: String,
    /// The `AssumedRoleUser` ARN, e.g. `arn:aws:sts::111122223333:assumed-role/ci/kiln`.
    pub assumed_role_arn: String,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish_non_exhaustive()
    }
}

/// A running `moto_server` on `127.0.0.1`: S3, STS, ECR and the rest of
/// moto's AWS services on one port ([`Moto::endpoint_url`]). Dropping it kills
/// the process (by PID) and waits for it.
///
/// The facts kiln's tests rely on (no signature checks, the ECR token and
/// password, STS web identity, S3 path style) are the module docs of
/// `src/moto.rs`; in short: any `Authorization` that looks like SigV4 is
/// accepted, ECR's password is [`Moto::ecr_password`]`(account)` for user
/// [`Moto::ECR_USER`], and keys from [`Moto::assume_role_with_web_identity`]
/// belong to the role's account.
///
/// ```no_run
/// use kiln_test::Moto;
///
/// let moto = Moto::start()?;
/// moto.create_bucket("contexts")?;
/// moto.put_object("contexts", "app/context.tar.gz", b"...")?;
/// // The product: S3_ENDPOINT / AWS_ENDPOINT_URL = moto.endpoint_url().
/// let auth = moto.ecr_authorization_token("AKIAIOSFODNN7EXAMPLE", "us-east-1")?;
/// assert_eq!(auth.password, Moto::ecr_password(Moto::DEFAULT_ACCOUNT));
/// # Ok::<(), kiln_test::Error>(())
/// ```
pub struct Moto {
    // Field order is drop order: the process dies before its temp dir goes.
    process: ProcessGuard,
    addr: SocketAddr,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("pid", &self.process.0.id())
            .field("endpoint_url", &self.endpoint_url())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Moto {
    /// The account of every access key moto did not issue itself.
    pub const DEFAULT_ACCOUNT: &'static str = "123456789012";

    /// The user in every ECR authorization token.
    pub const ECR_USER: &'static str = "AWS";

    /// ECR tokens' `expiresAt`: 2015-01-01T00:00:00Z, in the past.
    pub const ECR_EXPIRES_AT: i64 = 1_420_070_400;

    /// The region [`Moto::create_bucket`] and the other helpers sign for.
    pub const REGION: &'static str = "us-east-1";

    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port and waits
    /// until it answers (an S3 `ListBuckets`), retrying on another port when
    /// the chosen one was taken meanwhile.
    pub fn start() -> Result<Moto> {
        if !Path::new(MOTO_SERVER_BIN).is_file() {
            return Err(Error::Command {
                command: MOTO_SERVER_BIN.into(),
                status: "not installed".into(),
                stderr: "bash scripts/test.sh installs it (python3 -m venv /opt/kiln-test/moto \
                         && /opt/kiln-test/moto/bin/pip install 'moto[server]==5.2.6')"
                    .into(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-moto-")
            .tempdir()
            .context(|| "create moto temp dir".into())?;
        let log_path = dir.path().join("moto.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let mut process = ProcessGuard(spawn(addr, dir.path(), &log_path)?);
            match wait_ready(&mut process.0, addr, &log_path) {
                Ok(()) => {
                    return Ok(Moto {
                        process,
                        addr,
                        log_path,
                        dir,
                    })
                }
                Err(e) => {
                    drop(process);
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    if !log.contains("Address already in use") {
                        return Err(e);
                    }
                    // Another process took the port between probe and bind: retry.
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::InvalidOptions("no start attempt made".into())))
    }

    /// `http://127.0.0.1:PORT`: the one endpoint of every service
    /// (`AWS_ENDPOINT_URL`, kaniko's `S3_ENDPOINT`).
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// The file that receives the server's stdout and stderr (one line per request).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The ECR password moto hands out for `account`: `{account}-auth-token`
    /// (user [`Moto::ECR_USER`]). Configure a test registry's users with it.
    pub fn ecr_password(account: &str) -> String {
        format!("{account}-auth-token")
    }

    /// The `proxyEndpoint` moto returns for `account` when asked in `region`.
    pub fn ecr_proxy_endpoint(account: &str, region: &str) -> String {
        format!("https://{account}.dkr.ecr.{region}.amazonaws.com")
    }

    /// A JWT-looking web identity token (header, claims of an EKS service
    /// account `subject`, a dummy signature; base64url) for
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`. moto does not look inside it.
    pub fn web_identity_token(subject: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let header = serde_json::json!({"alg": "RS256", "kid": "kiln-test", "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": "https://oidc.eks.us-east-1.amazonaws.com/id/KILNTEST",
            "sub": subject,
            "aud": ["sts.amazonaws.com"],
            "iat": now,
            "exp": now + 3600,
        });
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(b"kiln-test: not a signature"),
        )
    }

    /// `CreateBucket` (path style, scoped `us-east-1`, no location constraint).
    /// Creating a bucket that exists succeeds.
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.s3("PUT", bucket, None, &[], &[]).map(drop)
    }

    /// `PutObject` of `bytes` at `bucket/key` (path style, `application/octet-stream`).
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) -> Result<()> {
        let content_type = ("Content-Type", "application/octet-stream");
        self.s3("PUT", bucket, Some(key), &[content_type], bytes)
            .map(drop)
    }

    /// `GetObject` of `bucket/key` (path style, signed-looking), the whole body.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        self.s3("GET", bucket, Some(key), &[], &[])
            .map(|response| response.body)
    }

    /// ECR `GetAuthorizationToken` (awsJson 1.1, body `{}`) as a caller with
    /// `access_key_id` in `region` would send it, decoded. The account in the
    /// answer is that of the key (see [`Moto::assume_role_with_web_identity`]).
    pub fn ecr_authorization_token(
        &self,
        access_key_id: &str,
        region: &str,
    ) -> Result<EcrAuthorization> {
        let auth = sigv4_stub(access_key_id, region, "ecr");
        let what = "ECR GetAuthorizationToken";
        let response = self.expect_ok(
            "POST",
            "/",
            &[
                ("Authorization", auth.as_str()),
                (
                    "X-Amz-Target",
                    "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
                ),
                ("Content-Type", "application/x-amz-json-1.1"),
            ],
            b"{}",
        )?;
        let body: Value = serde_json::from_slice(&response.body)
            .map_err(|e| unexpected(what, format!("not JSON ({e}): {}", response.text())))?;
        let data = &body["authorizationData"][0];
        let field = |name: &str| {
            data[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| unexpected(what, format!("no {name}: {body}")))
        };
        let authorization_token = field("authorizationToken")?;
        let proxy_endpoint = field("proxyEndpoint")?;
        let expires_at = data["expiresAt"]
            .as_f64()
            .ok_or_else(|| unexpected(what, format!("no expiresAt: {body}")))?
            as i64;
        let decoded = STANDARD
            .decode(&authorization_token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unexpected(what, format!("token is not base64 text: {body}")))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| unexpected(what, format!("token has no `user:`: {body}")))?;
        Ok(EcrAuthorization {
            user: user.to_string(),
            password: password.to_string(),
            authorization_token,
            expires_at,
            proxy_endpoint,
        })
    }

    /// STS `AssumeRoleWithWebIdentity`, sent as the AWS SDKs send it (an
    /// unsigned form `POST /`). moto accepts any token and any role ARN; the
    /// keys it returns belong to the account in `role_arn`.
    pub fn assume_role_with_web_identity(
        &self,
        role_arn: &str,
        session_name: &str,
        web_identity_token: &str,
    ) -> Result<AwsCredentials> {
        let what = "STS AssumeRoleWithWebIdentity";
        let body = format!(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}\
             &RoleSessionName={}&WebIdentityToken={}",
            percent_encode(role_arn),
            percent_encode(session_name),
            percent_encode(web_identity_token),
        );
        let response = self.expect_ok(
            "POST",
            "/",
            &[(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            body.as_bytes(),
        )?;
        let text = response.text();
        let element = |tag: &str| {
            xml_element(&text, tag)
                .map(xml_unescape)
                .ok_or_else(|| unexpected(what, format!("no <{tag}> in {text}")))
        };
        Ok(AwsCredentials {
            access_key_id: element("AccessKeyId")?,
            secret_access_key: element("SecretAccessKey")?,
            session_token: element("SessionToken")?,
            expiration: element("Expiration")?,
            assumed_role_arn: element("Arn")?,
        })
    }

    /// Forgets every bucket, object and issued key (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<()> {
        self.expect_ok("POST", "/moto-api/reset", &[], &[])
            .map(drop)
    }

    /// Sends one S3 request for `bucket` or, with a `key`, an object in it
    /// (path style, percent-encoded with `/` kept), signed-looking for
    /// [`DUMMY_ACCESS_KEY`] in [`Moto::REGION`] (an unsigned payload), with
    /// `headers` added; requires a 2xx answer.
    fn s3(
        &self,
        method: &str,
        bucket: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let mut path = format!("/{}", percent_encode_path(bucket));
        if let Some(key) = key {
            path = format!("{path}/{}", percent_encode_path(key));
        }
        let auth = sigv4_stub(DUMMY_ACCESS_KEY, Self::REGION, "s3");
        let mut all = vec![
            ("Authorization", auth.as_str()),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ];
        all.extend_from_slice(headers);
        self.expect_ok(method, &path, &all, body)
    }

    /// Sends one request and requires a 2xx answer.
    fn expect_ok(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        let response =
            request_with_timeout(self.addr, method, path, headers, body, REQUEST_TIMEOUT)?;
        if !(200..300).contains(&response.status) {
            return Err(unexpected(
                &format!("moto {method} {path}"),
                format!("status {}: {}", response.status, response.text()),
            ));
        }
        Ok(response)
    }
}

/// The access key the S3 helpers sign with (account [`Moto::DEFAULT_ACCOUNT`]).
const DUMMY_ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// A SigV4-shaped `Authorization` value: moto reads the access key, region
/// and service from its scope and checks nothing else.
fn sigv4_stub(access_key_id: &str, region: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20260101/{region}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={}",
        "0".repeat(64)
    )
}

fn unexpected(what: &str, detail: String) -> Error {
    Error::UnexpectedResponse {
        what: what.to_string(),
        detail,
    }
}

/// The text of the first `<tag>…</tag>` (no attributes, no nesting of the same tag).
fn xml_element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Kills (by PID, via `Child::kill`) and reaps a child process on drop.
struct ProcessGuard(Child);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(addr: SocketAddr, dir: &Path, log_path: &Path) -> Result<Child> {
    let log = fs::File::create(log_path).path_context(log_path)?;
    let log_err = log.try_clone().path_context(log_path)?;
    let port = addr.port().to_string();
    let mut command = Command::new(MOTO_SERVER_BIN);
    command
        .args(["-H", "127.0.0.1", "-p", &port])
        .current_dir(dir)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    // Keep moto's behaviour the documented one whatever the test process has
    // set: no auth checks, the default account, no AWS endpoint of its own.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("MOTO_")
            || name.starts_with("AWS_")
            || name == "INITIAL_NO_AUTH_ACTION_COUNT"
        {
            command.env_remove(&key);
        }
    }
    command.spawn().map_err(|e| Error::Command {
        command: format!("{MOTO_SERVER_BIN} -H 127.0.0.1 -p {port}"),
        status: e.to_string(),
        stderr: String::new(),
    })
}

fn wait_ready(child: &mut Child, addr: SocketAddr, log_path: &Path) -> Result<()> {
    let log = || fs::read_to_string(log_path).unwrap_or_default();
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let auth = sigv4_stub(DUMMY_ACCESS_KEY, Moto::REGION, "s3");
    loop {
        if let Some(status) = child.try_wait().context(|| "poll moto_server".into())? {
            return Err(Error::Command {
                command: format!("{MOTO_SERVER_BIN} -H 127.0.0.1 -p {}", addr.port()),
                status: format!("exited early with {status}"),
                stderr: log(),
            });
        }
        let probe = request_with_timeout(
            addr,
            "GET",
            "/",
            &[("Authorization", auth.as_str())],
            &[],
            Duration::from_secs(2),
        );
        if probe.is_ok_and(|response| response.status == 200) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("moto_server (pid {}) on {addr}", child.id()),
                timeout: STARTUP_TIMEOUT,
                log: log(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_helpers() {
        let xml = "<R><Arn>a&amp;b</Arn><Other/></R>";
        assert_eq!(
            xml_element(xml, "Arn").map(xml_unescape),
            Some("a&b".into())
        );
        assert_eq!(xml_element(xml, "Missing"), None);
    }

    #[test]
    fn web_identity_token_looks_like_a_jwt() {
        let token = Moto::web_identity_token("system:serviceaccount:ci:kiln");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:ci:kiln");
    }
}
