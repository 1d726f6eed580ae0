//! Google: the GCE/GKE metadata server's token endpoints, the OAuth 2.0
//! token endpoint of a service-account key (`token_uri`, the JWT-bearer
//! grant), Security Token Service's token exchange and IAM Credentials'
//! `generateAccessToken` (workload identity federation), and Cloud Storage's
//! XML API for reading objects; one server, on plain HTTP and optionally also
//! HTTPS.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ring::digest;
use serde_json::{json, Value};

use super::jwt::{decode_path, http_date, random_hex, unix_now, JwtKey, ParsedJwt};
use super::server::{
    form_value, loopback_tls, split_scopes, Handler, HttpServer, Request, Response,
};
use crate::certs::{CertUse, KeyAlgorithm, TestCa};
use crate::error::{Error, IoContext, Result};
use crate::http::parse_form;
use crate::token::TokenServer;

/// The scope every Google client here asks for, and what Cloud Storage and
/// Artifact Registry accept.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The OAuth 2.0 grant type of a service account's token request (RFC 7523).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The grant type of Security Token Service's token exchange (RFC 8693).
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The registry user name that goes with a Google access token
/// (`docker login -u oauth2accesstoken`).
pub const GOOGLE_REGISTRY_USER: &str = "oauth2accesstoken";

/// Scopes that grant reading Cloud Storage objects.
const STORAGE_SCOPES: &[&str] = &[
    CLOUD_PLATFORM_SCOPE,
    "https://www.googleapis.com/auth/cloud-platform.read-only",
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
];

/// How a [`GoogleCloud`] behaves.
#[derive(Debug, Clone)]
pub struct GoogleOptions {
    /// The project id (`/computeMetadata/v1/project/project-id`, key files).
    pub project_id: String,
    /// The email of the metadata server's `default` service account.
    pub metadata_account: String,
    /// `expires_in` of issued access tokens, seconds (Google's is 3599).
    pub token_lifetime: u64,
    /// Whether Cloud Storage serves objects to requests without credentials
    /// (a public bucket; what object_store's `disable_oauth` sends).
    pub anonymous_reads: bool,
    /// The workload identity pool provider STS trusts, if any.
    pub federation: Option<FederationPool>,
}

/// A workload identity pool provider: its `audience`
/// (`//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/R`)
/// and the one subject token it accepts (a real provider checks an OIDC
/// token's issuer and signature; which token is good is the test's choice
/// here).
#[derive(Debug, Clone)]
pub struct FederationPool {
    /// The provider's audience.
    pub audience: String,
    /// The subject token it accepts.
    pub subject_token: String,
}

impl Default for GoogleOptions {
    fn default() -> Self {
        Self {
            project_id: "kiln-test-project".into(),
            metadata_account: "kiln-builder@kiln-test-project.iam.gserviceaccount.com".into(),
            token_lifetime: 3599,
            anonymous_reads: false,
            federation: None,
        }
    }
}

impl GoogleOptions {
    /// Defaults: project `kiln-test-project`, 3599 s tokens, no anonymous reads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the project id.
    pub fn project_id(mut self, project_id: &str) -> Self {
        self.project_id = project_id.into();
        self
    }

    /// Sets the metadata server's default service account email.
    pub fn metadata_account(mut self, email: &str) -> Self {
        self.metadata_account = email.into();
        self
    }

    /// Sets `expires_in` of issued tokens (a token is refused after it).
    pub fn token_lifetime(mut self, seconds: u64) -> Self {
        self.token_lifetime = seconds;
        self
    }

    /// Lets Cloud Storage serve objects without credentials.
    pub fn anonymous_reads(mut self) -> Self {
        self.anonymous_reads = true;
        self
    }

    /// Makes STS exchange `subject_token` for a federated token of the pool
    /// provider `audience`.
    pub fn federation(mut self, audience: &str, subject_token: &str) -> Self {
        self.federation = Some(FederationPool {
            audience: audience.into(),
            subject_token: subject_token.into(),
        });
        self
    }
}

/// Which of Google's services a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoogleEndpoint {
    /// The metadata server (`/computeMetadata/v1/…` or `/`).
    Metadata,
    /// The OAuth 2.0 token endpoint (`POST /token`).
    Token,
    /// Security Token Service (`POST /v1/token`).
    Sts,
    /// IAM Credentials (`POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`).
    IamCredentials,
    /// Cloud Storage's XML API (`/{bucket}/{object}`).
    Storage,
}

/// One request a [`GoogleCloud`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleRequest {
    /// Which service.
    pub endpoint: GoogleEndpoint,
    /// The method.
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Whether it came over HTTPS.
    pub tls: bool,
    /// Whether it carried `Metadata-Flavor: Google`.
    pub metadata_flavor: bool,
    /// The bearer token it carried, if any.
    pub bearer: Option<String>,
    /// The `grant_type` of a token request.
    pub grant_type: Option<String>,
    /// The scopes asked for (token requests) or held (storage requests).
    pub scopes: Vec<String>,
    /// The service account it authenticated as, if any.
    pub account: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// How an access token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoogleTokenSource {
    /// From the metadata server.
    Metadata,
    /// From the token endpoint, for a service-account key's signed JWT.
    JwtBearer,
    /// From STS, for a federated identity's subject token.
    Federated,
    /// From IAM Credentials, for a federated token impersonating a service account.
    Impersonated,
}

/// An access token a [`GoogleCloud`] issued.
#[derive(Clone, PartialEq, Eq)]
pub struct GoogleAccessToken {
    /// The token (`ya29.…`).
    pub token: String,
    /// The service account it stands for.
    pub account: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Unix time after which it is refused.
    pub expires_at: i64,
    /// How it was obtained.
    pub source: GoogleTokenSource,
}

impl std::fmt::Debug for GoogleAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleAccessToken")
            .field("account", &self.account)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A service account's JSON key, as the Cloud console downloads it, for a
/// key pair generated here (RSA 2048). Write it with [`Self::write`] and
/// point `GOOGLE_APPLICATION_CREDENTIALS` (or object_store's
/// `GOOGLE_SERVICE_ACCOUNT`) at the file.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// `client_email`.
    pub client_email: String,
    /// `client_id` (numeric).
    pub client_id: String,
    /// `private_key_id`, sent as the JWT `kid` by object_store.
    pub private_key_id: String,
    /// `private_key`: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_key_pem: String,
    /// `project_id`.
    pub project_id: String,
    /// `token_uri`: the [`GoogleCloud`]'s `POST /token`.
    pub token_uri: String,
    /// `gcs_base_url` (object_store's extension), if set.
    pub gcs_base_url: Option<String>,
    /// `disable_oauth` (object_store's extension).
    pub disable_oauth: bool,
    key_pkcs8_der: Vec<u8>,
    public_key_der: Vec<u8>,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("gcs_base_url", &self.gcs_base_url)
            .field("disable_oauth", &self.disable_oauth)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// A new key pair for `client_email`; `token_uri` as given. Not known to
    /// any [`GoogleCloud`]: use [`GoogleCloud::service_account`] for a key
    /// the emulator accepts.
    pub fn generate(client_email: &str, project_id: &str, token_uri: &str) -> Result<Self> {
        // ring cannot make RSA keys; TestCa gets one from openssl.
        let ca = TestCa::new("kiln-test service account keys")?;
        let cert = ca.issue(client_email, &[], CertUse::Signing, KeyAlgorithm::Rsa2048)?;
        let key = JwtKey::rs256_from_pkcs8(&cert.key_pkcs8_der)?;
        Ok(Self {
            client_email: client_email.to_string(),
            client_id: format!("1{}", &random_digits(20)),
            private_key_id: random_hex(20),
            private_key_pem: cert.key_pem.clone(),
            project_id: project_id.to_string(),
            token_uri: token_uri.to_string(),
            gcs_base_url: None,
            disable_oauth: false,
            public_key_der: key.public_key(),
            key_pkcs8_der: cert.key_pkcs8_der,
        })
    }

    /// Adds `gcs_base_url` (object_store reads Cloud Storage there instead of
    /// `https://storage.googleapis.com`; only from `GOOGLE_SERVICE_ACCOUNT` /
    /// `GOOGLE_SERVICE_ACCOUNT_KEY`, not from `GOOGLE_APPLICATION_CREDENTIALS`).
    pub fn with_gcs_base_url(mut self, url: &str) -> Self {
        self.gcs_base_url = Some(url.to_string());
        self
    }

    /// Adds `"disable_oauth": true` (object_store then sends no credentials).
    pub fn with_disable_oauth(mut self) -> Self {
        self.disable_oauth = true;
        self
    }

    /// The key file's JSON, every field Google writes plus object_store's
    /// `gcs_base_url`/`disable_oauth` when set.
    pub fn to_json(&self) -> Value {
        let mut key = json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                self.client_email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        });
        if let Some(url) = &self.gcs_base_url {
            key["gcs_base_url"] = json!(url);
        }
        if self.disable_oauth {
            key["disable_oauth"] = json!(true);
        }
        key
    }

    /// Writes the key file (mode 0600).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| Error::InvalidOptions(format!("key JSON: {e}")))?;
        std::fs::write(path, text).path_context(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .path_context(path)?;
        }
        Ok(())
    }

    /// The public key, RSAPublicKey DER.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// Signs `claims` with the private key: RS256, `kid` = `private_key_id`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String> {
        JwtKey::rs256_from_pkcs8(&self.key_pkcs8_der)?
            .sign(&json!({"kid": self.private_key_id}), claims)
    }

    /// The assertion a client posts to `token_uri` (as gcp_auth builds it):
    /// `iss` = the email, `aud` = `token_uri`, `scope` space-separated, one hour.
    pub fn jwt_bearer_assertion(&self, scopes: &[&str]) -> Result<String> {
        let now = unix_now();
        self.sign_jwt(&json!({
            "iss": self.client_email,
            "aud": self.token_uri,
            "scope": scopes.join(" "),
            "iat": now,
            "exp": now + 3600,
        }))
    }

    /// A self-signed JWT used directly as a bearer token (as object_store
    /// builds it: `iss` = `sub` = the email, `scope`, one hour; Google
    /// AIP-4111).
    pub fn self_signed_jwt(&self, scope: &str) -> Result<String> {
        let now = unix_now();
        self.sign_jwt(&json!({
            "iss": self.client_email,
            "sub": self.client_email,
            "scope": scope,
            "iat": now,
            "exp": now + 3600,
        }))
    }
}

fn random_digits(n: usize) -> String {
    random_hex(n)
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .collect()
}

/// Verifies a self-signed service-account JWT (Google AIP-4111) the way
/// Google's front ends do, and returns its claims: an RS256 signature by
/// `key`; `kid`, if present, equal to `private_key_id`; `iss` (and `sub`, if
/// present) equal to `client_email`; `iat` not in the future (60 s leeway),
/// `exp` in the future and at most an hour after `iat`; a `scope` or an `aud`.
pub fn verify_self_signed_jwt(jwt: &str, key: &ServiceAccountKey) -> Result<Value> {
    let parsed = ParsedJwt::parse(jwt)?;
    check_service_account_jwt(
        &parsed,
        key.public_key_der(),
        &key.private_key_id,
        &key.client_email,
    )
    .map_err(|why| Error::Crypto(format!("self-signed JWT refused: {why}")))?;
    if parsed.claim("scope").is_none() && parsed.claims.get("aud").is_none() {
        return Err(Error::Crypto(
            "self-signed JWT refused: neither `scope` nor `aud`".into(),
        ));
    }
    Ok(parsed.claims)
}

/// Signature, key id, issuer and lifetime checks shared by self-signed JWTs
/// and JWT-bearer assertions; `Err` says what failed, as Google's messages do.
fn check_service_account_jwt(
    jwt: &ParsedJwt,
    public_key: &[u8],
    key_id: &str,
    email: &str,
) -> std::result::Result<(), String> {
    if jwt.alg() != "RS256" {
        return Err(format!(
            "Invalid JWT: algorithm {:?} is not RS256",
            jwt.alg()
        ));
    }
    if let Some(kid) = jwt.header["kid"].as_str() {
        if kid != key_id {
            return Err(format!("Invalid JWT: unknown key id {kid:?}"));
        }
    }
    if !jwt.verify_rs256(public_key) {
        return Err("Invalid JWT Signature.".into());
    }
    if jwt.claim("iss") != Some(email) {
        return Err("Invalid JWT: issuer is not the service account".into());
    }
    if let Some(sub) = jwt.claim("sub") {
        if sub != email {
            // A `sub` other than the account asks for domain-wide delegation.
            return Err(format!(
                "Invalid JWT: subject {sub:?} is not the service account"
            ));
        }
    }
    let now = unix_now();
    let (Some(iat), Some(exp)) = (jwt.time_claim("iat"), jwt.time_claim("exp")) else {
        return Err("Invalid JWT: missing iat or exp".into());
    };
    if iat > now + 60 || exp <= now || exp - iat > 3600 + 60 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.".into());
    }
    Ok(())
}

struct Account {
    email: String,
    key_id: String,
    public_key: Vec<u8>,
}

struct StoredObject {
    data: Vec<u8>,
    content_type: String,
    generation: i64,
    etag: String,
    updated: i64,
}

#[derive(Default)]
struct State {
    accounts: Vec<Account>,
    tokens: HashMap<String, GoogleAccessToken>,
    buckets: BTreeMap<String, BTreeMap<String, StoredObject>>,
    requests: Vec<GoogleRequest>,
    last_generation: i64,
}

struct Shared {
    options: GoogleOptions,
    state: Mutex<State>,
    /// The `token_uri`s this server answers at (plain, then TLS), for `aud` checks.
    token_uris: Mutex<Vec<String>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Google's side of kiln's Google steps, on `127.0.0.1`:
///
/// - the **metadata server** (what `GCE_METADATA_HOST=127.0.0.1:PORT` points
///   object_store at): `GET /computeMetadata/v1/instance/service-accounts/default/token`
///   (and `…/{email}/token`, `…/email`, `/project/project-id`,
///   `/project/numeric-project-id`, `/`), only with `Metadata-Flavor: Google`
///   (403 without it, and with `X-Forwarded-For`, as the real one), answering
///   `{"access_token","expires_in","token_type":"Bearer"}` and
///   `Metadata-Flavor: Google`; an optional `scopes=` query picks the scopes;
/// - the **OAuth 2.0 token endpoint** of service-account keys, `POST /token`
///   (a key's `token_uri`): the JWT-bearer grant
///   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`)
///   with the assertion's RS256 signature checked against the key made by
///   [`GoogleCloud::service_account`], `aud` = this `token_uri`, a one-hour
///   lifetime and a `scope`; errors as Google's `{"error","error_description"}`;
/// - **Cloud Storage's XML API** for reads, what object_store's GCS client
///   sends for `get`/`head`: `GET|HEAD /{bucket}/{object}` (both
///   percent-encoded), with `Range`, `If-Match`, `If-None-Match` and
///   `?generation=`; answers with `ETag`, `Last-Modified`,
///   `x-goog-generation`; `Authorization: Bearer` must be a token issued here
///   or a self-signed JWT of a key made here (with a storage scope), or
///   absent with [`GoogleOptions::anonymous_reads`]; errors are Google's XML
///   `<Error><Code>NoSuchKey</Code>…` bodies (404, 401, 403, 412, 416).
///
/// Every request is recorded ([`GoogleCloud::requests`]). Stopped and joined
/// on drop.
pub struct GoogleCloud {
    shared: Arc<Shared>,
    plain: HttpServer,
    tls: Option<HttpServer>,
    ca_pem: Option<String>,
}

impl std::fmt::Debug for GoogleCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleCloud")
            .field("plain", &self.plain.addr())
            .field("tls", &self.tls.as_ref().map(HttpServer::addr))
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl GoogleCloud {
    /// Starts on a free port, plain HTTP only (the metadata server is plain
    /// HTTP; object_store needs `GOOGLE_ALLOW_HTTP=true`/`with_allow_http`
    /// for a plain `gcs_base_url`).
    pub fn start(options: GoogleOptions) -> Result<Self> {
        Self::start_inner(options, None)
    }

    /// Starts as [`Self::start`], and also serves the same routes over HTTPS
    /// on a second port with a `127.0.0.1`/`localhost` certificate from `ca`;
    /// [`Self::token_uri`] and [`Self::gcs_base_url`] then name the HTTPS port.
    pub fn start_tls(options: GoogleOptions, ca: &TestCa) -> Result<Self> {
        Self::start_inner(options, Some(ca))
    }

    fn start_inner(options: GoogleOptions, ca: Option<&TestCa>) -> Result<Self> {
        let shared = Arc::new(Shared {
            options,
            state: Mutex::new(State::default()),
            token_uris: Mutex::new(Vec::new()),
        });
        let handler = |tls: bool| -> Handler {
            let shared = Arc::clone(&shared);
            Arc::new(move |request: &Request| handle(&shared, request, tls))
        };
        let plain = HttpServer::start("google", None, handler(false))?;
        let tls = match ca {
            Some(ca) => Some(HttpServer::start(
                "google-tls",
                Some(loopback_tls(ca)?),
                handler(true),
            )?),
            None => None,
        };
        {
            let mut uris = shared.token_uris.lock().unwrap_or_else(|e| e.into_inner());
            uris.push(format!("{}/token", plain.url()));
            if let Some(tls) = &tls {
                uris.push(format!("{}/token", tls.url()));
            }
        }
        Ok(Self {
            shared,
            plain,
            tls,
            ca_pem: ca.map(|ca| ca.cert_pem().to_string()),
        })
    }

    /// The plain-HTTP address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.plain.addr()
    }

    /// The HTTPS address, when started with [`Self::start_tls`].
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.tls.as_ref().map(HttpServer::addr)
    }

    /// The CA PEM the HTTPS port's certificate chains to, with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// `127.0.0.1:PORT`: the value for `GCE_METADATA_HOST`.
    pub fn metadata_host(&self) -> String {
        self.plain.addr().to_string()
    }

    fn base_url(&self) -> String {
        self.tls.as_ref().unwrap_or(&self.plain).url()
    }

    /// `http(s)://127.0.0.1:PORT/token`: the `token_uri` of keys made here
    /// (HTTPS when started with TLS).
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// `http(s)://127.0.0.1:PORT/v1/token`: STS's token exchange, the
    /// `token_url` of an `external_account` file.
    pub fn sts_token_url(&self) -> String {
        format!("{}/v1/token", self.base_url())
    }

    /// `http(s)://…/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`:
    /// the `service_account_impersonation_url` of an `external_account` file.
    pub fn impersonation_url(&self, email: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
            self.base_url()
        )
    }

    /// `http(s)://127.0.0.1:PORT`: Cloud Storage's base URL for object_store
    /// (`gcs_base_url` in a key file, or `GOOGLE_BASE_URL`).
    pub fn gcs_base_url(&self) -> String {
        self.base_url()
    }

    /// Makes a service-account key that this server accepts (its JWT-bearer
    /// assertions at `/token`, its self-signed JWTs at Cloud Storage), with
    /// `token_uri` = [`Self::token_uri`].
    pub fn service_account(&self, client_email: &str) -> Result<ServiceAccountKey> {
        let key = ServiceAccountKey::generate(
            client_email,
            &self.shared.options.project_id,
            &self.token_uri(),
        )?;
        self.shared.state().accounts.push(Account {
            email: key.client_email.clone(),
            key_id: key.private_key_id.clone(),
            public_key: key.public_key_der.clone(),
        });
        Ok(key)
    }

    /// Stores an object (a new generation each time), creating the bucket.
    pub fn put_object(&self, bucket: &str, name: &str, data: &[u8]) {
        let mut state = self.shared.state();
        state.last_generation = state.last_generation.max(unix_now() * 1_000_000) + 1;
        let generation = state.last_generation;
        let hash = digest::digest(&digest::SHA256, data);
        let etag = hash.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        state.buckets.entry(bucket.to_string()).or_default().insert(
            name.to_string(),
            StoredObject {
                data: data.to_vec(),
                content_type: "application/octet-stream".into(),
                generation,
                etag: format!("\"{etag}\""),
                updated: unix_now(),
            },
        );
    }

    /// Creates an empty bucket (reads of missing objects in it answer
    /// `NoSuchKey`, not `NoSuchBucket`).
    pub fn create_bucket(&self, bucket: &str) {
        self.shared
            .state()
            .buckets
            .entry(bucket.to_string())
            .or_default();
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<GoogleRequest> {
        self.shared.state().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Every access token issued so far (revoked ones excluded).
    pub fn access_tokens(&self) -> Vec<GoogleAccessToken> {
        let mut tokens: Vec<_> = self.shared.state().tokens.values().cloned().collect();
        tokens.sort_by_key(|t| t.expires_at);
        tokens
    }

    /// Revokes every access token issued so far: later uses are refused.
    pub fn revoke_tokens(&self) {
        self.shared.state().tokens.clear();
    }

    /// Whether `bearer` is accepted as a Google credential with
    /// `cloud-platform` scope: an unexpired token issued here, or a valid
    /// self-signed JWT of a key made here.
    pub fn accepts_bearer(&self, bearer: &str) -> bool {
        authenticate(&self.shared, bearer, &[CLOUD_PLATFORM_SCOPE]).is_some()
    }

    /// Makes `tokens` (a registry's [`TokenServer`]) accept what Artifact
    /// Registry and gcr.io accept: user [`GOOGLE_REGISTRY_USER`] with a
    /// password [`Self::accepts_bearer`] accepts.
    pub fn link_token_server(&self, tokens: &TokenServer) {
        let shared = Arc::clone(&self.shared);
        tokens.accept_passwords(GOOGLE_REGISTRY_USER, move |password| {
            authenticate(&shared, password, &[CLOUD_PLATFORM_SCOPE]).is_some()
        });
    }
}

/// The account a bearer authenticates, if it is an unexpired token issued
/// here or a valid self-signed JWT, and it holds one of `scopes`.
fn authenticate(shared: &Shared, bearer: &str, scopes: &[&str]) -> Option<(String, Vec<String>)> {
    let now = unix_now();
    let state = shared.state();
    if let Some(token) = state.tokens.get(bearer) {
        let held = token.scopes.iter().any(|s| scopes.contains(&s.as_str()));
        return (token.expires_at > now && held)
            .then(|| (token.account.clone(), token.scopes.clone()));
    }
    let jwt = ParsedJwt::parse(bearer).ok()?;
    let email = jwt.claim("iss")?;
    let account = state.accounts.iter().find(|a| a.email == email)?;
    check_service_account_jwt(&jwt, &account.public_key, &account.key_id, &account.email).ok()?;
    let held = split_scopes(jwt.claim("scope").unwrap_or(""));
    held.iter()
        .any(|s| scopes.contains(&s.as_str()))
        .then(|| (account.email.clone(), held))
}

fn handle(shared: &Shared, request: &Request, tls: bool) -> Response {
    let path = request.path().to_string();
    let mut record = GoogleRequest {
        endpoint: GoogleEndpoint::Storage,
        method: request.method.clone(),
        target: request.target.clone(),
        tls,
        metadata_flavor: request
            .header("metadata-flavor")
            .is_some_and(|v| v == "Google"),
        bearer: request.bearer().map(str::to_string),
        grant_type: None,
        scopes: Vec::new(),
        account: None,
        status: 0,
    };
    let response = if path == "/" || path.starts_with("/computeMetadata/") {
        record.endpoint = GoogleEndpoint::Metadata;
        metadata(shared, request, &mut record)
    } else if path == "/token" {
        record.endpoint = GoogleEndpoint::Token;
        token_endpoint(shared, request, &mut record)
    } else if path == "/v1/token" {
        record.endpoint = GoogleEndpoint::Sts;
        sts(shared, request, &mut record)
    } else if path.starts_with("/v1/projects/") && path.ends_with(":generateAccessToken") {
        record.endpoint = GoogleEndpoint::IamCredentials;
        generate_access_token(shared, request, &mut record)
    } else {
        storage(shared, request, &mut record)
    };
    record.status = response.status;
    shared.state().requests.push(record);
    response
}

fn metadata(shared: &Shared, request: &Request, record: &mut GoogleRequest) -> Response {
    let answer = |status: u16, content_type: &str, body: String| {
        Response::new(status, content_type, body)
            .header("Metadata-Flavor", "Google")
            .header("Server", "Metadata Server for VM")
    };
    if !record.metadata_flavor || request.header("x-forwarded-for").is_some() {
        let reason = if record.metadata_flavor {
            "Request contains an X-Forwarded-For header."
        } else {
            "Missing Metadata-Flavor:Google header."
        };
        return answer(
            403,
            "text/html; charset=UTF-8",
            format!(
                "<!DOCTYPE html>\n<html lang=en><title>Error 403 (Forbidden)!!1</title><p><b>403.</b> <ins>That\u{2019}s an error.</ins><p>Your client does not have permission to get URL <code>{}</code> from this server. {reason} <ins>That\u{2019}s all we know.</ins>",
                request.path()
            ),
        );
    }
    if request.method != "GET" {
        return answer(
            405,
            "text/plain; charset=utf-8",
            "Method Not Allowed\n".into(),
        );
    }
    let options = &shared.options;
    let accounts_prefix = "/computeMetadata/v1/instance/service-accounts/";
    let path = request.path();
    if path == "/" {
        return answer(200, "application/text", "computeMetadata/\n".into());
    }
    if path == "/computeMetadata/v1/project/project-id" {
        return answer(200, "application/text", options.project_id.clone());
    }
    if path == "/computeMetadata/v1/project/numeric-project-id" {
        return answer(200, "application/text", "123456789012".into());
    }
    if let Some(rest) = path.strip_prefix(accounts_prefix) {
        let (who, what) = rest.split_once('/').unwrap_or((rest, ""));
        let who = decode_path(who);
        if who != "default" && who != options.metadata_account {
            return answer(404, "text/html; charset=UTF-8", "Not Found\n".into());
        }
        match what {
            "email" => return answer(200, "application/text", options.metadata_account.clone()),
            "scopes" => {
                return answer(200, "application/text", format!("{CLOUD_PLATFORM_SCOPE}\n"))
            }
            "token" => {
                let query = parse_form(request.query());
                let scopes: Vec<String> = query
                    .iter()
                    .filter(|(k, _)| k == "scopes")
                    .flat_map(|(_, v)| v.split(','))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                let scopes = if scopes.is_empty() {
                    vec![CLOUD_PLATFORM_SCOPE.to_string()]
                } else {
                    scopes
                };
                record.scopes = scopes.clone();
                record.account = Some(options.metadata_account.clone());
                let token = issue(
                    shared,
                    &options.metadata_account,
                    scopes,
                    GoogleTokenSource::Metadata,
                );
                let body = token_body(&token, options.token_lifetime);
                return answer(200, "application/json", body.to_string());
            }
            _ => {}
        }
    }
    answer(404, "text/html; charset=UTF-8", "Not Found\n".into())
}

fn issue(shared: &Shared, account: &str, scopes: Vec<String>, source: GoogleTokenSource) -> String {
    let token = format!("ya29.c.kiln-{}", random_hex(32));
    let expires_at = unix_now() + shared.options.token_lifetime as i64;
    shared.state().tokens.insert(
        token.clone(),
        GoogleAccessToken {
            token: token.clone(),
            account: account.to_string(),
            scopes,
            expires_at,
            source,
        },
    );
    token
}

/// What both token endpoints answer for an issued access token.
fn token_body(token: &str, lifetime: u64) -> Value {
    json!({
        "access_token": token,
        "expires_in": lifetime,
        "token_type": "Bearer",
    })
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn token_endpoint(shared: &Shared, request: &Request, record: &mut GoogleRequest) -> Response {
    if request.method != "POST" {
        return oauth_error(
            405,
            "invalid_request",
            "The token endpoint accepts POST only.",
        );
    }
    let form = request.form();
    let field = |name: &str| form_value(&form, name);
    let grant_type = field("grant_type").unwrap_or("");
    record.grant_type = Some(grant_type.to_string());
    if grant_type != JWT_BEARER_GRANT {
        return oauth_error(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant_type}"),
        );
    }
    let Some(assertion) = field("assertion") else {
        return oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let Ok(jwt) = ParsedJwt::parse(assertion) else {
        return oauth_error(400, "invalid_grant", "Invalid JWT: malformed assertion.");
    };
    let email = jwt.claim("iss").unwrap_or("").to_string();
    let account = {
        let state = shared.state();
        state
            .accounts
            .iter()
            .find(|a| a.email == email)
            .map(|a| (a.public_key.clone(), a.key_id.clone()))
    };
    let Some((public_key, key_id)) = account else {
        return oauth_error(400, "invalid_grant", "Invalid grant: account not found");
    };
    if let Err(why) = check_service_account_jwt(&jwt, &public_key, &key_id, &email) {
        return oauth_error(400, "invalid_grant", &why);
    }
    let audiences = shared
        .token_uris
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if !audiences.iter().any(|uri| jwt.has_audience(uri)) {
        return oauth_error(
            400,
            "invalid_grant",
            &format!(
                "Invalid JWT: Failed audience check. The right audience is {}",
                audiences.join(" or ")
            ),
        );
    }
    let scopes = split_scopes(jwt.claim("scope").unwrap_or(""));
    record.scopes = scopes.clone();
    if scopes.is_empty() {
        return oauth_error(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    record.account = Some(email.clone());
    let token = issue(shared, &email, scopes, GoogleTokenSource::JwtBearer);
    Response::json(200, &token_body(&token, shared.options.token_lifetime))
}

/// STS's token exchange, as for a workload identity pool provider: the
/// subject token for a federated access token of the pool's principal.
fn sts(shared: &Shared, request: &Request, record: &mut GoogleRequest) -> Response {
    if request.method != "POST" {
        return oauth_error(405, "invalid_request", "STS accepts POST only.");
    }
    let form = request.form();
    let field = |name: &str| form_value(&form, name).unwrap_or("");
    let grant_type = field("grant_type");
    record.grant_type = Some(grant_type.to_string());
    if grant_type != TOKEN_EXCHANGE_GRANT {
        return oauth_error(
            400,
            "unsupported_grant_type",
            &format!("Invalid value for \"grant_type\": {grant_type}"),
        );
    }
    if field("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
        return oauth_error(
            400,
            "invalid_request",
            "Invalid value for \"requested_token_type\".",
        );
    }
    let subject_token_type = field("subject_token_type");
    if !subject_token_type.starts_with("urn:ietf:params:oauth:token-type:") {
        return oauth_error(
            400,
            "invalid_request",
            &format!("Invalid value for \"subject_token_type\": {subject_token_type}"),
        );
    }
    let Some(pool) = &shared.options.federation else {
        return oauth_error(
            400,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid.",
        );
    };
    if field("audience") != pool.audience {
        return oauth_error(
            400,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.",
        );
    }
    if field("subject_token") != pool.subject_token {
        return oauth_error(
            400,
            "invalid_grant",
            "The audience in ID Token does not match the expected audience.",
        );
    }
    let scopes = split_scopes(field("scope"));
    record.scopes = scopes.clone();
    let principal = format!("principal:{}", pool.audience);
    record.account = Some(principal.clone());
    let token = issue(shared, &principal, scopes, GoogleTokenSource::Federated);
    let mut body = token_body(&token, shared.options.token_lifetime);
    body["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token".into();
    Response::json(200, &body)
}

/// Google's JSON API error body.
fn api_error(code: u16, status: &str, message: &str) -> Response {
    Response::json(
        code,
        &json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

/// IAM Credentials' `generateAccessToken`: a federated token (STS's) for an
/// access token of the service account named in the path.
fn generate_access_token(
    shared: &Shared,
    request: &Request,
    record: &mut GoogleRequest,
) -> Response {
    if request.method != "POST" {
        return api_error(
            405,
            "METHOD_NOT_ALLOWED",
            "generateAccessToken accepts POST only.",
        );
    }
    let Some(email) = request
        .path()
        .strip_prefix("/v1/projects/-/serviceAccounts/")
        .and_then(|rest| rest.strip_suffix(":generateAccessToken"))
        .map(decode_path)
    else {
        return api_error(404, "NOT_FOUND", "Requested entity was not found.");
    };
    let now = unix_now();
    let federated = request.bearer().and_then(|bearer| {
        let state = shared.state();
        state
            .tokens
            .get(bearer)
            .filter(|t| t.expires_at > now && t.source == GoogleTokenSource::Federated)
            .cloned()
    });
    if federated.is_none() {
        return api_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let scopes: Vec<String> = body["scope"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    record.scopes = scopes.clone();
    if scopes.is_empty() {
        return api_error(400, "INVALID_ARGUMENT", "Scope required.");
    }
    record.account = Some(email.clone());
    let token = issue(shared, &email, scopes, GoogleTokenSource::Impersonated);
    let expires_at = unix_now() + shared.options.token_lifetime as i64;
    Response::json(
        200,
        &json!({"accessToken": token, "expireTime": kiln_oci::time::rfc3339(expires_at)}),
    )
}

fn xml_error(status: u16, code: &str, message: &str, details: Option<&str>) -> Response {
    let details = details
        .map(|d| format!("<Details>{}</Details>", xml_escape(d)))
        .unwrap_or_default();
    Response::new(
        status,
        "application/xml; charset=UTF-8",
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{}</Message>{details}</Error>",
            xml_escape(message)
        ),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn storage(shared: &Shared, request: &Request, record: &mut GoogleRequest) -> Response {
    let path = request.path().trim_start_matches('/');
    let (bucket, object) = path.split_once('/').unwrap_or((path, ""));
    let (bucket, object) = (decode_path(bucket), decode_path(object));
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return xml_error(
            501,
            "NotImplemented",
            "kiln-test's Cloud Storage serves GET and HEAD of objects only.",
            None,
        );
    }
    if bucket.is_empty() || object.is_empty() {
        return xml_error(
            501,
            "NotImplemented",
            "kiln-test's Cloud Storage serves objects only, not bucket listings.",
            None,
        );
    }
    match request.bearer() {
        Some(bearer) => match authenticate(shared, bearer, STORAGE_SCOPES) {
            Some((account, scopes)) => {
                record.account = Some(account);
                record.scopes = scopes;
            }
            None => {
                return xml_error(401, "AuthenticationRequired", "Invalid Credentials", None)
                    .header("WWW-Authenticate", "Bearer realm=\"https://accounts.google.com/\"")
            }
        },
        None if shared.options.anonymous_reads => {}
        None => {
            return xml_error(
                403,
                "AccessDenied",
                "Access denied.",
                Some("Anonymous caller does not have storage.objects.get access to the Google Cloud Storage object. Permission 'storage.objects.get' denied on resource (or it may not exist)."),
            )
        }
    }
    let state = shared.state();
    let Some(objects) = state.buckets.get(&bucket) else {
        return xml_error(
            404,
            "NoSuchBucket",
            "The specified bucket does not exist.",
            None,
        );
    };
    let no_such_key = || {
        xml_error(
            404,
            "NoSuchKey",
            "The specified key does not exist.",
            Some(&format!("No such object: {bucket}/{object}")),
        )
    };
    let Some(stored) = objects.get(&object) else {
        return no_such_key();
    };
    let query = parse_form(request.query());
    if let Some(generation) = form_value(&query, "generation") {
        if generation.parse::<i64>().ok() != Some(stored.generation) {
            return no_such_key();
        }
    }
    if let Some(wanted) = request.header("if-match") {
        if !etag_matches(wanted, &stored.etag) {
            return xml_error(
                412,
                "ConditionNotMet",
                "At least one of the pre-conditions you specified did not hold.",
                None,
            );
        }
    }
    let headers = |response: Response| {
        response
            .header("ETag", stored.etag.clone())
            .header("Last-Modified", http_date(stored.updated))
            .header("x-goog-generation", stored.generation.to_string())
            .header("x-goog-metageneration", "1")
            .header("x-goog-stored-content-encoding", "identity")
            .header(
                "x-goog-stored-content-length",
                stored.data.len().to_string(),
            )
            .header("x-goog-storage-class", "STANDARD")
            .header("Accept-Ranges", "bytes")
    };
    if let Some(wanted) = request.header("if-none-match") {
        if etag_matches(wanted, &stored.etag) {
            return headers(Response::new(304, "application/octet-stream", Vec::new()));
        }
    }
    let len = stored.data.len() as u64;
    match request.header("range").map(|r| parse_range(r, len)) {
        None => headers(Response::new(
            200,
            &stored.content_type,
            stored.data.clone(),
        )),
        Some(Some((start, end))) => headers(Response::new(
            206,
            &stored.content_type,
            stored.data[start as usize..=end as usize].to_vec(),
        ))
        .header("Content-Range", format!("bytes {start}-{end}/{len}")),
        Some(None) => xml_error(
            416,
            "InvalidRange",
            "The requested range cannot be satisfied.",
            None,
        )
        .header("Content-Range", format!("bytes */{len}")),
    }
}

fn etag_matches(list: &str, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    list.split(',')
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == bare)
}

/// A single `bytes=` range within `len` bytes, as inclusive bounds;
/// `None` if it cannot be satisfied.
pub(crate) fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 || len == 0 {
                return None;
            }
            (len.saturating_sub(n), len - 1)
        }
        (start, "") => (start.parse().ok()?, len.checked_sub(1)?),
        (start, end) => (
            start.parse().ok()?,
            end.parse::<u64>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (start <= end && start < len).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-3", 10), Some((0, 3)));
        assert_eq!(parse_range("bytes=4-", 10), Some((4, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(parse_range("bytes=5-100", 10), Some((5, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=3-2", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
    }

    #[test]
    fn etags_match_quoted_weak_and_star() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"x\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }
}
