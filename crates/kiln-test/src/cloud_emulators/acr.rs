//! An Azure Container Registry front: TLS on its own port, ACR's
//! `POST /oauth2/exchange` (Entra access token → ACR refresh token) and
//! `/oauth2/token` answered there, everything else forwarded to a plain-HTTP
//! Distribution registry with token auth.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use super::entra::{EntraId, Shared as EntraShared};
use super::jwt::{random_uuid, unix_now, JwtKey};
use super::server::{form_value, forward, loopback_tls, HttpServer, Request, Response};
use crate::certs::TestCa;
use crate::error::{Error, Result};
use crate::registry::Registry;

/// The user name that goes with an ACR refresh token (`az acr login` runs
/// `docker login -u 00000000-0000-0000-0000-000000000000 -p REFRESH_TOKEN`).
pub const ACR_REFRESH_TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";

/// Audiences of Entra access tokens ACR exchanges: Azure Resource Manager's
/// and ACR's own.
pub const ACR_TOKEN_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.azure.com/",
    "https://management.core.windows.net/",
    "https://containerregistry.azure.net",
];

/// How long an ACR refresh token lives (ACR's: three hours).
const REFRESH_TOKEN_LIFETIME: i64 = 3 * 3600;

/// One `POST /oauth2/exchange` an [`AcrFront`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrExchange {
    /// `grant_type` (ACR's is `access_token`).
    pub grant_type: Option<String>,
    /// `service` (the registry's login server: the Host it was reached by, `127.0.0.1:PORT` or
    /// a name that resolves to it).
    pub service: Option<String>,
    /// `tenant`.
    pub tenant: Option<String>,
    /// Whether `access_token` was an unexpired token the [`EntraId`] issued
    /// for that tenant with an ACR-usable audience.
    pub access_token_valid: bool,
    /// The refresh token answered, on success.
    pub refresh_token: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// One request the front answered or forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrRequest {
    /// The method.
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    exchanges: Vec<AcrExchange>,
    requests: Vec<AcrRequest>,
    /// Refresh token → expiry.
    refresh_tokens: Vec<(String, i64)>,
}

struct Shared {
    entra: Arc<EntraShared>,
    registry: SocketAddr,
    token_server: SocketAddr,
    /// The token server's realm URL, as the registry's challenges name it.
    token_realm: String,
    token_service: String,
    signer: JwtKey,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_token_valid(&self, token: &str) -> bool {
        let now = unix_now();
        self.state()
            .refresh_tokens
            .iter()
            .any(|(t, exp)| t == token && *exp > now)
    }
}

/// An ACR login server on `https://127.0.0.1:PORT` in front of a
/// [`Registry`] (plain HTTP, token auth), answering what ACR answers itself:
///
/// - `POST /oauth2/exchange`, form `grant_type=access_token&service=LOGIN_SERVER
///   &tenant=TENANT&access_token=ENTRA_TOKEN`: the access token must be an
///   unexpired one the given [`EntraId`] issued, for that tenant (when sent),
///   with an audience in [`ACR_TOKEN_AUDIENCES`]; `service` must be the
///   name the client reached the front by (its `Host`). Answers
///   `{"refresh_token":"…"}` (a JWT, three hours), which from then on is the
///   password of [`ACR_REFRESH_TOKEN_USER`] at the registry's token server
///   (basic auth or the password grant) and a valid `refresh_token` grant;
/// - `GET|POST /oauth2/token`: forwarded to the registry's token server's
///   `/token`, as ACR serves its token endpoint on the login server; the
///   registry's `WWW-Authenticate` challenges are rewritten to
///   `realm="https://HOST/oauth2/token",service="HOST"` accordingly;
/// - everything else is forwarded to the registry with
///   `X-Forwarded-Proto: https`, so the URLs it builds (upload `Location`s)
///   name the front.
///
/// Stopped and joined on drop; the registry is not owned.
pub struct AcrFront {
    shared: Arc<Shared>,
    server: HttpServer,
    ca_pem: String,
}

impl std::fmt::Debug for AcrFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcrFront")
            .field("addr", &self.server.addr())
            .field("registry", &self.shared.registry)
            .finish_non_exhaustive()
    }
}

impl AcrFront {
    /// Starts in front of `registry`, which must serve plain HTTP with token
    /// auth ([`crate::RegistryOptions::token_auth`]), exchanging tokens that
    /// `entra` issued; TLS with a `127.0.0.1`/`localhost` certificate from `ca`.
    pub fn start(registry: &Registry, entra: &EntraId, ca: &TestCa) -> Result<Self> {
        if registry.is_tls() {
            return Err(Error::InvalidOptions(
                "AcrFront forwards plain HTTP: start the registry without TLS".into(),
            ));
        }
        let Some(tokens) = registry.token_server() else {
            return Err(Error::InvalidOptions(
                "AcrFront needs a registry with token auth (RegistryOptions::token_auth)".into(),
            ));
        };
        let shared = Arc::new(Shared {
            entra: entra.shared(),
            registry: registry.addr(),
            token_server: tokens.addr(),
            token_realm: tokens.realm(),
            token_service: tokens.service().to_string(),
            signer: JwtKey::new_es256()?,
            state: Mutex::new(State::default()),
        });
        let handler = {
            let shared = Arc::clone(&shared);
            Arc::new(move |request: &Request| handle(&shared, request))
        };
        let server = HttpServer::start("acr-front", Some(loopback_tls(ca)?), handler)?;
        let checker = Arc::clone(&shared);
        tokens.accept_passwords(ACR_REFRESH_TOKEN_USER, move |password| {
            checker.refresh_token_valid(password)
        });
        Ok(Self {
            shared,
            server,
            ca_pem: ca.cert_pem().to_string(),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `127.0.0.1:PORT`: the login server (the registry host in image references).
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The CA PEM the certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every `/oauth2/exchange` so far, oldest first.
    pub fn exchanges(&self) -> Vec<AcrExchange> {
        self.shared.state().exchanges.clone()
    }

    /// Every request so far (exchanges included), oldest first.
    pub fn requests(&self) -> Vec<AcrRequest> {
        self.shared.state().requests.clone()
    }

    /// Forgets the recorded exchanges and requests.
    pub fn clear_requests(&self) {
        let mut state = self.shared.state();
        state.exchanges.clear();
        state.requests.clear();
    }

    /// Revokes every refresh token issued so far.
    pub fn revoke_refresh_tokens(&self) {
        self.shared.state().refresh_tokens.clear();
    }
}

fn acr_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"errors": [{"code": code, "message": message, "detail": null}]}),
    )
}

fn handle(shared: &Shared, request: &Request) -> Response {
    let path = request.path();
    let response = if path == "/oauth2/exchange" {
        exchange(shared, request)
    } else if path == "/oauth2/token" {
        let target = match request.query() {
            "" => "/token".to_string(),
            query => format!("/token?{query}"),
        };
        let host = shared.token_server.to_string();
        forward_to(shared.token_server, request, &target, ("Host", &host))
    } else {
        let host = request.header("host").unwrap_or("").to_string();
        let mut response = forward_to(
            shared.registry,
            request,
            &request.target,
            ("X-Forwarded-Proto", "https"),
        );
        for (name, value) in &mut response.headers {
            if name.eq_ignore_ascii_case("www-authenticate") {
                *value = value
                    .replace(&shared.token_realm, &format!("https://{host}/oauth2/token"))
                    .replace(
                        &format!("service=\"{}\"", shared.token_service),
                        &format!("service=\"{host}\""),
                    );
            }
        }
        response
    };
    shared.state().requests.push(AcrRequest {
        method: request.method.clone(),
        target: request.target.clone(),
        status: response.status,
    });
    response
}

/// Forwards `request` to `upstream` as `target`, with header `name: value`
/// in place of any of that name; a failure answers 502.
fn forward_to(
    upstream: SocketAddr,
    request: &Request,
    target: &str,
    (name, value): (&str, &str),
) -> Response {
    let mut headers = request.headers.clone();
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value.to_string()));
    forward(upstream, &request.method, target, &headers, &request.body)
        .unwrap_or_else(|e| acr_error(502, "UNAVAILABLE", &e.to_string()))
}

fn exchange(shared: &Shared, request: &Request) -> Response {
    let form = request.form();
    let field = |name: &str| form_value(&form, name).map(str::to_string);
    let mut record = AcrExchange {
        grant_type: field("grant_type"),
        service: field("service"),
        tenant: field("tenant"),
        access_token_valid: false,
        refresh_token: None,
        status: 0,
    };
    let response = exchange_reply(shared, request, &mut record, field("access_token"));
    record.status = response.status;
    shared.state().exchanges.push(record);
    response
}

fn exchange_reply(
    shared: &Shared,
    request: &Request,
    record: &mut AcrExchange,
    access_token: Option<String>,
) -> Response {
    if request.method != "POST" {
        return acr_error(405, "UNSUPPORTED", "use POST");
    }
    let grant_type = record.grant_type.as_deref().unwrap_or("");
    if grant_type != "access_token" {
        let message = format!(
            "unsupported grant_type {grant_type:?}; kiln-test's ACR exchanges access_token only"
        );
        return acr_error(400, "UNSUPPORTED", &message);
    }
    // The login server is the name the client reached it by (its Host), as in ACR, where
    // that is `NAME.azurecr.io`.
    let login_server = request.header("host").unwrap_or_default();
    let service = record.service.as_deref().unwrap_or("");
    if service.is_empty() || !service.eq_ignore_ascii_case(login_server) {
        let message = format!("service {service:?} is not this registry's login server");
        return acr_error(400, "UNAUTHORIZED", &message);
    }
    let Some(token) = access_token
        .as_deref()
        .and_then(|t| shared.entra.access_token(t))
    else {
        return acr_error(
            401,
            "UNAUTHORIZED",
            "the access token is not valid or has expired",
        );
    };
    if record.tenant.as_deref().is_some_and(|t| t != token.tenant) {
        return acr_error(
            401,
            "UNAUTHORIZED",
            "the access token is for another tenant",
        );
    }
    if !ACR_TOKEN_AUDIENCES.contains(&token.audience.as_str()) {
        return acr_error(
            401,
            "UNAUTHORIZED",
            &format!(
                "the access token's audience {:?} is not accepted by ACR",
                token.audience
            ),
        );
    }
    record.access_token_valid = true;
    let now = unix_now();
    let expires = now + REFRESH_TOKEN_LIFETIME;
    let claims = json!({
        "jti": random_uuid(),
        "sub": token.client_id,
        "nbf": now,
        "exp": expires,
        "iat": now,
        "iss": "Azure Container Registry",
        "aud": record.service,
        "version": "1.0",
        "rid": random_uuid(),
        "grant_type": "refresh_token",
        "appid": token.client_id,
        "tenant": token.tenant,
        "permissions": {"actions": ["read", "write", "delete"], "notActions": null},
        "roles": [],
    });
    let refresh = match shared.signer.sign(&json!({}), &claims) {
        Ok(t) => t,
        Err(e) => return acr_error(500, "UNKNOWN", &e.to_string()),
    };
    shared
        .state()
        .refresh_tokens
        .push((refresh.clone(), expires));
    record.refresh_token = Some(refresh.clone());
    Response::json(200, &json!({"refresh_token": refresh}))
}
