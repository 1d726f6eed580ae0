//! A Docker-Hub-style token server: `GET /token` (basic credentials or
//! anonymous) and the OAuth2 `POST /token` form (password and refresh_token
//! grants), issuing JWTs that Distribution 2.8 accepts.
//!
//! What Distribution 2.8 checks (`registry/auth/token`): `iss` equals the
//! configured `issuer`; `aud` equals `service`; `exp` + 60 s leeway is in the
//! future and `nbf` − 60 s is in the past; the header names the key by `x5c`
//! (tried first: the leaf must chain to a certificate in `rootcertbundle`,
//! any key usage), `jwk`, or `kid` (a libtrust fingerprint of a key in the
//! bundle); `alg` must suit the key (ES256 for P-256, RS256/384/512 for RSA);
//! ECDSA signatures are the raw 64-byte `r||s` form; every requested
//! `(type, name, action)` must appear in the `access` claim. This server signs
//! with a leaf certificate and sends it as a one-element `x5c`.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

use crate::certs::{CertUse, KeyAlgorithm, TestCa};
use crate::error::{Error, IoContext, Result};
use crate::http::{self, parse_form, read_head};

/// The JWT signing algorithm of a [`TokenServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256.
    #[default]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit key).
    Rs256,
}

/// Which field(s) carry the token in a token response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenFields {
    /// Both `token` and `access_token`, as Docker Hub does.
    #[default]
    Both,
    /// Only `token` (the original Docker token spec).
    TokenOnly,
    /// Only `access_token` (OAuth2 spelling).
    AccessTokenOnly,
}

/// A user of the token server.
#[derive(Clone)]
pub struct TokenUser {
    /// User name.
    pub name: String,
    /// Password.
    pub password: String,
    /// Whether the user may push (and delete); if not, pull only.
    pub can_push: bool,
}

impl std::fmt::Debug for TokenUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("can_push", &self.can_push)
            .finish()
    }
}

/// How a [`TokenServer`] authenticates and what its tokens say.
#[derive(Debug, Clone)]
pub struct TokenAuthOptions {
    /// The `service` (token audience); the registry's `auth.token.service`.
    pub service: String,
    /// The `iss` claim; the registry's `auth.token.issuer`.
    pub issuer: String,
    /// Users with passwords; an authenticated user with `can_push` gets every
    /// action asked for on any repository, plus `registry:catalog:*`.
    pub users: Vec<TokenUser>,
    /// Repositories anyone (even anonymous) may pull; `"*"` means all.
    pub public_repositories: Vec<String>,
    /// `expires_in` of responses, and the token lifetime unless
    /// `claim_lifetime` overrides it. Mind Distribution's 60 s leeway.
    pub expires_in: u64,
    /// If set, `exp = iat + claim_lifetime` in the JWT regardless of
    /// `expires_in`; a value below -60 makes tokens the registry rejects.
    pub claim_lifetime: Option<i64>,
    /// Which response field(s) carry the token.
    pub fields: TokenFields,
    /// The JWT signing algorithm.
    pub algorithm: SigningAlgorithm,
}

impl Default for TokenAuthOptions {
    fn default() -> Self {
        Self {
            service: "kiln-test-registry".into(),
            issuer: "kiln-test-token-issuer".into(),
            users: Vec::new(),
            public_repositories: Vec::new(),
            expires_in: 300,
            claim_lifetime: None,
            fields: TokenFields::Both,
            algorithm: SigningAlgorithm::Es256,
        }
    }
}

impl TokenAuthOptions {
    /// Defaults: no users, nothing public, 300 s tokens, ES256, both fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user with pull, push and delete rights.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push(TokenUser {
            name: name.into(),
            password: password.into(),
            can_push: true,
        });
        self
    }

    /// Adds a user with pull rights only.
    pub fn pull_only_user(mut self, name: &str, password: &str) -> Self {
        self.users.push(TokenUser {
            name: name.into(),
            password: password.into(),
            can_push: false,
        });
        self
    }

    /// Lets anyone pull `repository` (`"*"`: every repository).
    pub fn public_repository(mut self, repository: &str) -> Self {
        self.public_repositories.push(repository.into());
        self
    }

    /// Sets `expires_in` (and the token lifetime).
    pub fn expires_in(mut self, seconds: u64) -> Self {
        self.expires_in = seconds;
        self
    }

    /// Sets the JWT lifetime independently of `expires_in` (may be negative).
    pub fn claim_lifetime(mut self, seconds: i64) -> Self {
        self.claim_lifetime = Some(seconds);
        self
    }

    /// Chooses which response field(s) carry the token.
    pub fn fields(mut self, fields: TokenFields) -> Self {
        self.fields = fields;
        self
    }

    /// Chooses the signing algorithm.
    pub fn algorithm(mut self, algorithm: SigningAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }
}

/// One request the token server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The `service` parameter, if sent.
    pub service: Option<String>,
    /// Every requested scope, in order (`scope` parameters, space-split).
    pub scopes: Vec<String>,
    /// The OAuth2 `grant_type` of a `POST`.
    pub grant_type: Option<String>,
    /// Whether credentials came with it (basic auth or a password grant).
    pub credentials_sent: bool,
    /// Whether a refresh token came with it.
    pub refresh_token_sent: bool,
    /// The user it authenticated as, if any.
    pub user: Option<String>,
    /// The granted access, as `type:name:actions` strings.
    pub granted: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// Decides whether a password (or refresh token) is valid for one user name;
/// added at run time with [`TokenServer::accept_passwords`].
type PasswordCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    requests: Vec<TokenRequest>,
    refresh_tokens: HashMap<String, String>,
    /// Users whose passwords another service issues (a cloud's access
    /// tokens, ACR refresh tokens), checked by these closures; they may push.
    checked_users: Vec<(String, PasswordCheck)>,
}

enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct Signer {
    key: SigningKey,
    /// Base64 (standard, padded) DER of the signing certificate.
    x5c: String,
    rng: SystemRandom,
}

impl Signer {
    fn new(cert: &crate::certs::IssuedCert) -> Result<Self> {
        let rng = SystemRandom::new();
        let key = match cert.algorithm {
            KeyAlgorithm::EcdsaP256 => SigningKey::Ecdsa(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &cert.key_pkcs8_der,
                    &rng,
                )
                .map_err(|e| Error::Crypto(format!("ECDSA key: {e}")))?,
            ),
            KeyAlgorithm::Rsa2048 => SigningKey::Rsa(
                RsaKeyPair::from_pkcs8(&cert.key_pkcs8_der)
                    .map_err(|e| Error::Crypto(format!("RSA key: {e}")))?,
            ),
        };
        Ok(Self {
            key,
            x5c: STANDARD.encode(&cert.cert_der),
            rng,
        })
    }

    fn alg(&self) -> &'static str {
        match self.key {
            SigningKey::Ecdsa(_) => "ES256",
            SigningKey::Rsa(_) => "RS256",
        }
    }

    fn sign_jwt(&self, claims: &Value) -> Result<String> {
        let header = json!({ "typ": "JWT", "alg": self.alg(), "x5c": [self.x5c] });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.key {
            SigningKey::Ecdsa(key) => key
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|e| Error::Crypto(format!("ES256 sign: {e}")))?
                .as_ref()
                .to_vec(),
            SigningKey::Rsa(key) => {
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &self.rng,
                    signing_input.as_bytes(),
                    &mut sig,
                )
                .map_err(|e| Error::Crypto(format!("RS256 sign: {e}")))?;
                sig
            }
        };
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

struct Inner {
    options: TokenAuthOptions,
    signer: Signer,
    state: Mutex<State>,
}

/// A token server on a free `127.0.0.1` port, serving one connection at a
/// time on one thread; stopped and joined on drop.
///
/// It records every request ([`TokenServer::requests`]) so tests can assert
/// which scopes a client asked for, how often, and with which credentials.
pub struct TokenServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    root_bundle_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Generates a token CA and signing certificate, writes the CA to a
    /// `rootcertbundle` file and starts serving `/token`.
    pub fn start(options: TokenAuthOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-token-")
            .tempdir()
            .context(|| "create token server temp dir".into())?;
        let ca = TestCa::new("kiln-test token CA")?;
        let algorithm = match options.algorithm {
            SigningAlgorithm::Es256 => KeyAlgorithm::EcdsaP256,
            SigningAlgorithm::Rs256 => KeyAlgorithm::Rsa2048,
        };
        let signing_cert = ca.issue("kiln-test token signer", &[], CertUse::Signing, algorithm)?;
        let root_bundle_path = dir.path().join("token-root-bundle.pem");
        std::fs::write(&root_bundle_path, ca.cert_pem()).path_context(&root_bundle_path)?;

        let listener =
            TcpListener::bind("127.0.0.1:0").context(|| "bind token server on 127.0.0.1".into())?;
        let addr = listener
            .local_addr()
            .context(|| "token server address".into())?;
        let inner = Arc::new(Inner {
            options,
            signer: Signer::new(&signing_cert)?,
            state: Mutex::new(State::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let inner = Arc::clone(&inner);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("kiln-test-token-server".into())
                .spawn(move || serve(listener, &inner, &stop))
                .context(|| "spawn token server thread".into())?
        };
        Ok(Self {
            addr,
            inner,
            stop,
            thread: Some(thread),
            root_bundle_path,
            _dir: dir,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The realm URL, `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The service (token audience).
    pub fn service(&self) -> &str {
        &self.inner.options.service
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.inner.options.issuer
    }

    /// The options the server runs with.
    pub fn options(&self) -> &TokenAuthOptions {
        &self.inner.options
    }

    /// PEM file with the CA that issued the signing certificate (the
    /// registry's `rootcertbundle`).
    pub fn root_cert_bundle_path(&self) -> &Path {
        &self.root_bundle_path
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.inner.state).requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.inner.state).requests.clear();
    }

    /// Mints a token directly, as if `user` (or anonymous) had asked for
    /// `scopes` (e.g. `repository:foo:pull,push`); grants follow the options.
    pub fn mint_token(&self, user: Option<&str>, scopes: &[&str]) -> Result<String> {
        let user = user.and_then(|u| self.inner.find_user(u));
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let (token, _) = self.inner.issue(user.as_ref(), &scopes)?;
        Ok(token)
    }
}

impl TokenServer {
    /// Accepts, from now on, any password of user `user` for which `check`
    /// returns true, with pull, push and delete rights; the same check
    /// accepts such a password presented as an OAuth2 refresh token (a
    /// `refresh_token` grant). This is how a registry login with a cloud's
    /// credential is emulated: Google's `oauth2accesstoken` with an access
    /// token, ACR's `00000000-0000-0000-0000-000000000000` with a refresh
    /// token (see `GoogleCloud::link_token_server` and `AcrFront`).
    pub fn accept_passwords(
        &self,
        user: &str,
        check: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) {
        lock(&self.inner.state)
            .checked_users
            .push((user.to_string(), Arc::new(check)));
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call; the loop sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn serve(listener: TcpListener, inner: &Inner, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        // A broken client must not take the server down; errors end only
        // that connection.
        let _ = handle(&stream, inner);
        let _ = stream.shutdown(Shutdown::Both);
    }
}

struct Reply {
    status: u16,
    body: Value,
}

fn handle(stream: &TcpStream, inner: &Inner) -> Result<()> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .context(|| "token server set timeout".into())?;
    let mut reader = BufReader::new(stream);
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let (method, target) = head
        .request_line()
        .map(|(m, t)| (m.to_string(), t.to_string()))
        .ok_or_else(|| Error::Http(format!("bad request line {:?}", head.start_line)))?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut body = Vec::new();
    match head.request_framing()? {
        http::Framing::Length(n) if n <= 64 * 1024 => {
            (&mut reader)
                .take(n)
                .read_to_end(&mut body)
                .context(|| "read token request body".into())?;
        }
        http::Framing::Length(_) => return Err(Error::Http("token request body too large".into())),
        framing => {
            let mut raw = Vec::new();
            http::copy_body(&mut reader, &mut raw, framing)
                .context(|| "read token request body".into())?;
            body = raw;
        }
    }
    let basic = head.header("authorization").and_then(parse_basic);

    let mut record = TokenRequest {
        method: method.clone(),
        path: path.to_string(),
        service: None,
        scopes: Vec::new(),
        grant_type: None,
        credentials_sent: basic.is_some(),
        refresh_token_sent: false,
        user: None,
        granted: Vec::new(),
        status: 0,
    };
    let reply = if path != "/token" {
        Reply {
            status: 404,
            body: json!({"errors": [{"code": "NOT_FOUND", "message": "only /token is served"}]}),
        }
    } else {
        match method.as_str() {
            "GET" => inner.get_token(&parse_form(query), basic, &mut record),
            "POST" => inner.post_token(&parse_form(&String::from_utf8_lossy(&body)), &mut record),
            _ => Reply {
                status: 405,
                body: json!({"errors": [{"code": "UNSUPPORTED", "message": "use GET or POST"}]}),
            },
        }
    };
    record.status = reply.status;
    lock(&inner.state).requests.push(record);

    let body = reply.body.to_string();
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let response = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reply.status,
        body.len()
    );
    let mut writer = stream;
    writer
        .write_all(response.as_bytes())
        .context(|| "write token response".into())?;
    Ok(())
}

fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn params<'a>(form: &'a [(String, String)], name: &str) -> impl Iterator<Item = &'a str> {
    let name = name.to_string();
    form.iter()
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn scopes_of(form: &[(String, String)]) -> Vec<String> {
    params(form, "scope")
        .flat_map(|v| v.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn unauthorized(message: &str) -> Reply {
    Reply {
        status: 401,
        body: json!({"errors": [{"code": "UNAUTHORIZED", "message": message}], "details": message}),
    }
}

impl Inner {
    fn authenticate(&self, user: &str, password: &str) -> Option<TokenUser> {
        if let Some(found) = self
            .options
            .users
            .iter()
            .find(|u| u.name == user && u.password == password)
        {
            return Some(found.clone());
        }
        // Clone the checks out: a check may take its own locks.
        let checks: Vec<PasswordCheck> = lock(&self.state)
            .checked_users
            .iter()
            .filter(|(name, _)| name == user)
            .map(|(_, check)| Arc::clone(check))
            .collect();
        checks
            .iter()
            .any(|check| check(password))
            .then(|| checked_user(user))
    }

    /// The user called `name`: a configured one, or one with checked passwords.
    fn find_user(&self, name: &str) -> Option<TokenUser> {
        if let Some(found) = self.options.users.iter().find(|u| u.name == name) {
            return Some(found.clone());
        }
        lock(&self.state)
            .checked_users
            .iter()
            .any(|(user, _)| user == name)
            .then(|| checked_user(name))
    }

    /// The checked user whose check accepts `secret` as a refresh token.
    fn refresh_token_owner(&self, secret: &str) -> Option<TokenUser> {
        let checks: Vec<(String, PasswordCheck)> = lock(&self.state)
            .checked_users
            .iter()
            .map(|(name, check)| (name.clone(), Arc::clone(check)))
            .collect();
        checks
            .into_iter()
            .find(|(_, check)| check(secret))
            .map(|(name, _)| checked_user(&name))
    }

    fn get_token(
        &self,
        query: &[(String, String)],
        basic: Option<(String, String)>,
        record: &mut TokenRequest,
    ) -> Reply {
        record.service = params(query, "service").next().map(str::to_string);
        record.scopes = scopes_of(query);
        let user = match &basic {
            Some((name, password)) => match self.authenticate(name, password) {
                Some(user) => Some(user),
                None => return unauthorized("incorrect username or password"),
            },
            None => None,
        };
        record.user = user.as_ref().map(|u| u.name.clone());
        let offline = params(query, "offline_token").any(|v| v == "true");
        let refresh = (offline && user.is_some()).then(|| self.new_refresh_token(user.as_ref()));
        self.token_reply(user.as_ref(), record, refresh.flatten())
    }

    fn post_token(&self, form: &[(String, String)], record: &mut TokenRequest) -> Reply {
        record.service = params(form, "service").next().map(str::to_string);
        record.scopes = scopes_of(form);
        let grant_type = params(form, "grant_type").next().unwrap_or("").to_string();
        record.grant_type = Some(grant_type.clone());
        match grant_type.as_str() {
            "password" => {
                record.credentials_sent = true;
                let name = params(form, "username").next().unwrap_or("");
                let password = params(form, "password").next().unwrap_or("");
                let Some(user) = self.authenticate(name, password) else {
                    return unauthorized("incorrect username or password");
                };
                record.user = Some(user.name.clone());
                let refresh = self.new_refresh_token(Some(&user));
                self.token_reply(Some(&user), record, refresh)
            }
            "refresh_token" => {
                record.refresh_token_sent = true;
                let presented = params(form, "refresh_token").next().unwrap_or("");
                let owner = lock(&self.state).refresh_tokens.get(presented).cloned();
                let Some(user) = owner
                    .and_then(|o| self.find_user(&o))
                    .or_else(|| self.refresh_token_owner(presented))
                else {
                    return unauthorized("invalid refresh token");
                };
                record.user = Some(user.name.clone());
                self.token_reply(Some(&user), record, Some(presented.to_string()))
            }
            other => Reply {
                status: 400,
                body: json!({"error": "unsupported_grant_type", "error_description": format!("grant_type {other:?}")}),
            },
        }
    }

    fn new_refresh_token(&self, user: Option<&TokenUser>) -> Option<String> {
        let user = user?;
        let token = format!("kiln-refresh-{}", random_hex(&self.signer.rng, 16));
        lock(&self.state)
            .refresh_tokens
            .insert(token.clone(), user.name.clone());
        Some(token)
    }

    fn token_reply(
        &self,
        user: Option<&TokenUser>,
        record: &mut TokenRequest,
        refresh_token: Option<String>,
    ) -> Reply {
        let (token, granted) = match self.issue(user, &record.scopes) {
            Ok(x) => x,
            Err(e) => {
                return Reply {
                    status: 500,
                    body: json!({"errors": [{"code": "UNKNOWN", "message": e.to_string()}]}),
                }
            }
        };
        record.granted = granted;
        let mut body = serde_json::Map::new();
        if self.options.fields != TokenFields::AccessTokenOnly {
            body.insert("token".into(), json!(token));
        }
        if self.options.fields != TokenFields::TokenOnly {
            body.insert("access_token".into(), json!(token));
        }
        body.insert("expires_in".into(), json!(self.options.expires_in));
        body.insert(
            "issued_at".into(),
            json!(kiln_oci::time::rfc3339(unix_now())),
        );
        if let Some(refresh) = refresh_token {
            body.insert("refresh_token".into(), json!(refresh));
        }
        Reply {
            status: 200,
            body: Value::Object(body),
        }
    }

    /// Signs a token for `user` covering what `scopes` ask and the options allow.
    fn issue(&self, user: Option<&TokenUser>, scopes: &[String]) -> Result<(String, Vec<String>)> {
        let mut access = Vec::new();
        let mut granted = Vec::new();
        for scope in scopes {
            let Some((kind, name, actions)) = parse_scope(scope) else {
                continue;
            };
            let allowed: Vec<&str> = actions
                .iter()
                .copied()
                .filter(|a| self.allows(user, kind, name, a))
                .collect();
            if allowed.is_empty() {
                continue;
            }
            granted.push(format!("{kind}:{name}:{}", allowed.join(",")));
            access.push(json!({"type": kind, "name": name, "actions": allowed}));
        }
        let now = unix_now();
        let lifetime = self
            .options
            .claim_lifetime
            .unwrap_or(self.options.expires_in as i64);
        let claims = json!({
            "iss": self.options.issuer,
            "sub": user.map(|u| u.name.as_str()).unwrap_or(""),
            "aud": self.options.service,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": random_hex(&self.signer.rng, 16),
            "access": access,
        });
        Ok((self.signer.sign_jwt(&claims)?, granted))
    }

    fn allows(&self, user: Option<&TokenUser>, kind: &str, name: &str, action: &str) -> bool {
        let public = self
            .options
            .public_repositories
            .iter()
            .any(|r| r == "*" || r == name);
        match (kind, user) {
            ("repository", Some(user)) if user.can_push => {
                matches!(action, "pull" | "push" | "delete" | "*")
            }
            ("repository", _) => action == "pull" && (user.is_some() || public),
            ("registry", Some(_)) => name == "catalog" && action == "*",
            _ => false,
        }
    }
}

/// A user whose password a [`PasswordCheck`] accepted: full rights.
fn checked_user(name: &str) -> TokenUser {
    TokenUser {
        name: name.to_string(),
        password: String::new(),
        can_push: true,
    }
}

/// Splits `type[(class)]:name:actions`; the name may contain `:` (a port).
fn parse_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let kind = kind.split('(').next().unwrap_or(kind);
    let actions = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some((kind, name, actions))
}

fn random_hex(rng: &SystemRandom, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SystemRandom only fails if the OS has no randomness at all.
    rng.fill(&mut buf).expect("system randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_first_and_last_colon() {
        assert_eq!(
            parse_scope("repository:localhost:5000/a/b:pull,push"),
            Some(("repository", "localhost:5000/a/b", vec!["pull", "push"]))
        );
        assert_eq!(
            parse_scope("repository(plugin):x:pull"),
            Some(("repository", "x", vec!["pull"]))
        );
        assert_eq!(parse_scope("bogus"), None);
    }

    #[test]
    fn es256_tokens_carry_x5c_and_the_expected_claims() {
        let server = TokenServer::start(TokenAuthOptions::new().user("u", "p")).unwrap();
        let token = server
            .mint_token(Some("u"), &["repository:a/b:pull,push"])
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["x5c"].as_array().unwrap().len(), 1);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "kiln-test-registry");
        assert_eq!(claims["sub"], "u");
        assert_eq!(claims["access"][0]["actions"], json!(["pull", "push"]));
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
    }
}
