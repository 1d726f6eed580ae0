//! Microsoft Entra ID's token endpoint (`POST /{tenant}/oauth2/v2.0/token`)
//! for the client-credentials grant, with a client secret or a federated
//! (workload identity) client assertion, over TLS.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use super::jwt::{entra_timestamp, random_hex, random_uuid, unix_now, JwtKey, ParsedJwt};
use super::server::{form_value, loopback_tls, split_scopes, HttpServer, Request, Response};
use crate::certs::TestCa;
use crate::error::{IoContext, Result};

/// The `client_assertion_type` of a federated credential (RFC 7523).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The audience Entra requires in a federated (workload identity) token.
pub const FEDERATED_TOKEN_AUDIENCE: &str = "api://AzureADTokenExchange";

/// An application (service principal) registered in the emulated tenant.
#[derive(Clone)]
pub struct EntraApp {
    /// The application (client) id.
    pub client_id: String,
    /// Its client secret, if it has one.
    pub secret: Option<String>,
    /// Subjects of its federated identity credentials (issuer: the
    /// emulator's own [`EntraId::oidc_issuer`]), e.g.
    /// `system:serviceaccount:ci:kiln`.
    pub federated_subjects: Vec<String>,
}

impl std::fmt::Debug for EntraApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraApp")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("federated_subjects", &self.federated_subjects)
            .finish()
    }
}

/// How an [`EntraId`] behaves.
#[derive(Debug, Clone)]
pub struct EntraOptions {
    /// The tenant (directory) id.
    pub tenant_id: String,
    /// Registered applications.
    pub apps: Vec<EntraApp>,
    /// `expires_in` of access tokens, seconds (Entra's is about 3599).
    pub token_lifetime: u64,
}

impl EntraOptions {
    /// A tenant with a random id and no applications; 3599 s tokens.
    pub fn new() -> Self {
        Self {
            tenant_id: random_uuid(),
            apps: Vec::new(),
            token_lifetime: 3599,
        }
    }

    /// Sets the tenant id.
    pub fn tenant_id(mut self, tenant_id: &str) -> Self {
        self.tenant_id = tenant_id.into();
        self
    }

    fn app(&mut self, client_id: &str) -> &mut EntraApp {
        if let Some(i) = self.apps.iter().position(|a| a.client_id == client_id) {
            return &mut self.apps[i];
        }
        self.apps.push(EntraApp {
            client_id: client_id.into(),
            secret: None,
            federated_subjects: Vec::new(),
        });
        self.apps.last_mut().expect("just pushed")
    }

    /// Registers `client_id` (if new) with a client secret.
    pub fn client_secret(mut self, client_id: &str, secret: &str) -> Self {
        self.app(client_id).secret = Some(secret.into());
        self
    }

    /// Registers `client_id` (if new) with a federated identity credential for
    /// `subject` (a Kubernetes service account: `system:serviceaccount:NS:NAME`).
    pub fn workload_identity(mut self, client_id: &str, subject: &str) -> Self {
        self.app(client_id).federated_subjects.push(subject.into());
        self
    }

    /// Sets `expires_in` of access tokens (a token is refused after it).
    pub fn token_lifetime(mut self, seconds: u64) -> Self {
        self.token_lifetime = seconds;
        self
    }
}

impl Default for EntraOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// How a token request authenticated its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraClientAuth {
    /// Neither a secret nor an assertion.
    None,
    /// `client_secret`.
    Secret,
    /// `client_assertion` (a federated token).
    Assertion,
}

/// One token request an [`EntraId`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraRequest {
    /// The method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The tenant in the path.
    pub tenant: String,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `scope`, space-split.
    pub scopes: Vec<String>,
    /// How the client authenticated.
    pub client_auth: EntraClientAuth,
    /// The status answered.
    pub status: u16,
    /// The AADSTS error code answered, if any.
    pub error_code: Option<u32>,
}

/// An access token an [`EntraId`] issued.
#[derive(Clone, PartialEq, Eq)]
pub struct EntraAccessToken {
    /// The token (a JWT).
    pub token: String,
    /// The tenant.
    pub tenant: String,
    /// The application it was issued to.
    pub client_id: String,
    /// Its audience (the scope's resource, without `/.default`).
    pub audience: String,
    /// Unix time after which it is refused.
    pub expires_at: i64,
}

impl std::fmt::Debug for EntraAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraAccessToken")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    requests: Vec<EntraRequest>,
    tokens: HashMap<String, EntraAccessToken>,
}

pub(crate) struct Shared {
    options: EntraOptions,
    /// Signs access tokens.
    token_key: JwtKey,
    /// The emulated cluster's service-account issuer key (federated tokens).
    issuer_key: JwtKey,
    issuer: String,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The unexpired access token `token`, if issued here.
    pub(crate) fn access_token(&self, token: &str) -> Option<EntraAccessToken> {
        self.state()
            .tokens
            .get(token)
            .filter(|t| t.expires_at > unix_now())
            .cloned()
    }
}

/// Entra ID's token endpoint on `127.0.0.1` over TLS, what `azure_identity`
/// 1.0's `ClientSecretCredential` and `WorkloadIdentityCredential` (and
/// object_store's Azure client-secret and workload-identity providers) call:
/// `POST /{tenant}/oauth2/v2.0/token` with the form
/// `grant_type=client_credentials&client_id=…&scope=RESOURCE/.default` and
/// either `client_secret=…` or
/// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=…`.
///
/// Point clients at it with `AZURE_AUTHORITY_HOST=`[`Self::authority_host`]
/// (azure_identity requires `https`; trust the [`TestCa`] through
/// `SSL_CERT_FILE`). azure_identity sends nothing else first: no instance
/// discovery, no OpenID configuration.
///
/// It checks the tenant (AADSTS90002), the application (AADSTS700016), the
/// secret (AADSTS7000215) or the assertion (a JWT signed by this emulator's
/// cluster issuer, [`Self::federated_token`], with `aud`
/// `api://AzureADTokenExchange`, a registered subject, unexpired:
/// AADSTS700211/700212/700213/700024/50027), the grant type (AADSTS70003)
/// and that the scope ends in `/.default` (AADSTS1002012). Success answers
/// exactly Entra's shape, `{"token_type":"Bearer","expires_in":3599,
/// "ext_expires_in":3599,"access_token":"…"}`; errors carry `error`,
/// `error_description`, `error_codes`, `timestamp`, `trace_id`,
/// `correlation_id` and `error_uri`. Access tokens are ES256 JWTs with
/// Entra's v1 claims (`aud`, `iss` = `https://sts.windows.net/{tenant}/`,
/// `tid`, `appid`, `oid`, `sub`, `iat`, `nbf`, `exp`).
pub struct EntraId {
    shared: Arc<Shared>,
    server: HttpServer,
    ca_pem: String,
}

impl std::fmt::Debug for EntraId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraId")
            .field("addr", &self.server.addr())
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl EntraId {
    /// Starts on a free port with a `127.0.0.1`/`localhost` certificate from `ca`.
    pub fn start(options: EntraOptions, ca: &TestCa) -> Result<Self> {
        let issuer = format!("https://oidc.kiln-test.invalid/{}/", random_uuid());
        let shared = Arc::new(Shared {
            options,
            token_key: JwtKey::new_es256()?,
            issuer_key: JwtKey::new_es256()?,
            issuer,
            state: Mutex::new(State::default()),
        });
        let handler = {
            let shared = Arc::clone(&shared);
            Arc::new(move |request: &Request| handle(&shared, request))
        };
        let server = HttpServer::start("entra", Some(loopback_tls(ca)?), handler)?;
        Ok(Self {
            shared,
            server,
            ca_pem: ca.cert_pem().to_string(),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The CA PEM the certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// `https://127.0.0.1:PORT`: the value for `AZURE_AUTHORITY_HOST`.
    pub fn authority_host(&self) -> String {
        self.server.url()
    }

    /// The tenant id (`AZURE_TENANT_ID`).
    pub fn tenant_id(&self) -> &str {
        &self.shared.options.tenant_id
    }

    /// `https://127.0.0.1:PORT/{tenant}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.server.url(),
            self.tenant_id()
        )
    }

    /// The issuer of federated tokens (the emulated cluster's OIDC issuer).
    pub fn oidc_issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// A projected service-account token as a Kubernetes cluster would put in
    /// `AZURE_FEDERATED_TOKEN_FILE`: a JWT signed by [`Self::oidc_issuer`],
    /// `sub` = `subject`, `aud` = `["api://AzureADTokenExchange"]`, valid for
    /// an hour.
    pub fn federated_token(&self, subject: &str) -> Result<String> {
        let now = unix_now();
        self.shared.issuer_key.sign(
            &json!({"kid": "kiln-test-cluster"}),
            &json!({
                "aud": [FEDERATED_TOKEN_AUDIENCE],
                "exp": now + 3600,
                "iat": now,
                "nbf": now,
                "iss": self.shared.issuer,
                "sub": subject,
                "kubernetes.io": {"namespace": "kiln", "serviceaccount": {"name": "kiln"}},
            }),
        )
    }

    /// Writes [`Self::federated_token`] to `path`, without a trailing newline
    /// (azure_identity sends the file's bytes as they are).
    pub fn write_federated_token_file(&self, path: &Path, subject: &str) -> Result<()> {
        let token = self.federated_token(subject)?;
        std::fs::write(path, token).path_context(path)
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<EntraRequest> {
        self.shared.state().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Every access token issued so far (revoked ones excluded).
    pub fn access_tokens(&self) -> Vec<EntraAccessToken> {
        let mut tokens: Vec<_> = self.shared.state().tokens.values().cloned().collect();
        tokens.sort_by_key(|t| t.expires_at);
        tokens
    }

    /// The unexpired access token `token`, if issued here.
    pub fn access_token(&self, token: &str) -> Option<EntraAccessToken> {
        self.shared.access_token(token)
    }

    /// Revokes every access token issued so far.
    pub fn revoke_tokens(&self) {
        self.shared.state().tokens.clear();
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}

struct EntraError {
    status: u16,
    error: &'static str,
    code: u32,
    description: String,
}

fn entra_error(status: u16, error: &'static str, code: u32, description: String) -> EntraError {
    EntraError {
        status,
        error,
        code,
        description,
    }
}

fn error_response(e: &EntraError) -> Response {
    let trace = random_uuid();
    let correlation = random_uuid();
    let now = unix_now();
    let description = format!(
        "AADSTS{}: {} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {}",
        e.code,
        e.description,
        entra_timestamp(now)
    );
    Response::json(
        e.status,
        &json!({
            "error": e.error,
            "error_description": description,
            "error_codes": [e.code],
            "timestamp": entra_timestamp(now),
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", e.code),
        }),
    )
}

fn handle(shared: &Shared, request: &Request) -> Response {
    let path = request.path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut record = EntraRequest {
        method: request.method.clone(),
        path: path.clone(),
        tenant: segments.first().copied().unwrap_or("").to_string(),
        client_id: None,
        grant_type: None,
        scopes: Vec::new(),
        client_auth: EntraClientAuth::None,
        status: 0,
        error_code: None,
    };
    let result = if segments.len() != 4 || segments[1..] != ["oauth2", "v2.0", "token"] {
        Err(entra_error(
            404,
            "invalid_request",
            900_561,
            format!("The endpoint {path} is not served by kiln-test's Entra ID (only /{{tenant}}/oauth2/v2.0/token)."),
        ))
    } else if request.method != "POST" {
        Err(entra_error(
            400,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests.".into(),
        ))
    } else {
        token(shared, request, &mut record)
    };
    let response = match result {
        Ok(body) => Response::json(200, &body),
        Err(e) => {
            record.error_code = Some(e.code);
            error_response(&e)
        }
    };
    record.status = response.status;
    shared.state().requests.push(record);
    response
        .header("Cache-Control", "no-store, no-cache")
        .header("Pragma", "no-cache")
}

fn token(
    shared: &Shared,
    request: &Request,
    record: &mut EntraRequest,
) -> std::result::Result<Value, EntraError> {
    let options = &shared.options;
    let form = request.form();
    let field = |name: &str| form_value(&form, name);
    record.client_id = field("client_id").map(str::to_string);
    record.grant_type = field("grant_type").map(str::to_string);
    record.scopes = split_scopes(field("scope").unwrap_or(""));
    record.client_auth = if field("client_assertion").is_some() {
        EntraClientAuth::Assertion
    } else if field("client_secret").is_some() {
        EntraClientAuth::Secret
    } else {
        EntraClientAuth::None
    };

    if record.tenant != options.tenant_id {
        return Err(entra_error(
            400,
            "invalid_request",
            90_002,
            format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.",
                record.tenant
            ),
        ));
    }
    let grant_type = field("grant_type").unwrap_or("");
    if grant_type != "client_credentials" {
        return Err(entra_error(
            400,
            "unsupported_grant_type",
            70_003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = field("client_id").unwrap_or("");
    let Some(app) = options.apps.iter().find(|a| a.client_id == client_id) else {
        return Err(entra_error(
            400,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                options.tenant_id
            ),
        ));
    };
    match record.client_auth {
        EntraClientAuth::Secret => {
            if app.secret.as_deref() != field("client_secret") {
                return Err(entra_error(
                    401,
                    "invalid_client",
                    7_000_215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".into(),
                ));
            }
        }
        EntraClientAuth::Assertion => {
            if field("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) {
                return Err(entra_error(
                    400,
                    "invalid_request",
                    700_023,
                    "Client assertion type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.".into(),
                ));
            }
            check_assertion(shared, app, field("client_assertion").unwrap_or(""))?;
        }
        EntraClientAuth::None => {
            return Err(entra_error(
                401,
                "invalid_client",
                7_000_218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
            ));
        }
    }
    let scope = field("scope").unwrap_or("");
    let resource = match scope.split_once(' ') {
        None => scope.strip_suffix("/.default"),
        Some(_) => None,
    };
    let Some(resource) = resource.filter(|r| !r.is_empty()) else {
        return Err(entra_error(
            400,
            "invalid_scope",
            1_002_012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        ));
    };
    let now = unix_now();
    let expires_at = now + options.token_lifetime as i64;
    let object_id = random_uuid();
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{}/", options.tenant_id),
        "iat": now,
        "nbf": now,
        "exp": expires_at,
        "aio": random_hex(16),
        "appid": client_id,
        "appidacr": if record.client_auth == EntraClientAuth::Secret { "1" } else { "2" },
        "idp": format!("https://sts.windows.net/{}/", options.tenant_id),
        "idtyp": "app",
        "oid": object_id,
        "sub": object_id,
        "tid": options.tenant_id,
        "ver": "1.0",
    });
    let token = shared
        .token_key
        .sign(
            &json!({"kid": "kiln-test-entra", "x5t": "kiln-test-entra"}),
            &claims,
        )
        .map_err(|e| entra_error(500, "server_error", 90_033, e.to_string()))?;
    shared.state().tokens.insert(
        token.clone(),
        EntraAccessToken {
            token: token.clone(),
            tenant: options.tenant_id.clone(),
            client_id: client_id.to_string(),
            audience: resource.to_string(),
            expires_at,
        },
    );
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": options.token_lifetime,
        "ext_expires_in": options.token_lifetime,
        "access_token": token,
    }))
}

fn check_assertion(
    shared: &Shared,
    app: &EntraApp,
    assertion: &str,
) -> std::result::Result<(), EntraError> {
    let Ok(jwt) = ParsedJwt::parse(assertion) else {
        return Err(entra_error(
            400,
            "invalid_client",
            50_027,
            "JWT token is invalid or malformed.".into(),
        ));
    };
    if jwt.claim("iss") != Some(shared.issuer.as_str()) {
        return Err(entra_error(
            400,
            "invalid_client",
            700_211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
                jwt.claim("iss").unwrap_or("")
            ),
        ));
    }
    if !jwt.verify_with(&shared.issuer_key) {
        return Err(entra_error(
            400,
            "invalid_client",
            50_027,
            "JWT token is invalid or malformed: the signature does not verify with the issuer's keys.".into(),
        ));
    }
    if !jwt.has_audience(FEDERATED_TOKEN_AUDIENCE) {
        return Err(entra_error(
            400,
            "invalid_client",
            700_212,
            "No matching federated identity record found for presented assertion audience. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.".into(),
        ));
    }
    let subject = jwt.claim("sub").unwrap_or("");
    if !app.federated_subjects.iter().any(|s| s == subject) {
        return Err(entra_error(
            400,
            "invalid_client",
            700_213,
            format!("No matching federated identity record found for presented assertion subject '{subject}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion."),
        ));
    }
    let now = unix_now();
    let valid = jwt.time_claim("exp").is_some_and(|exp| exp > now)
        && jwt.time_claim("nbf").is_none_or(|nbf| nbf <= now + 300);
    if !valid {
        return Err(entra_error(
            400,
            "invalid_client",
            700_024,
            "Client assertion is not within its valid time range.".into(),
        ));
    }
    Ok(())
}
