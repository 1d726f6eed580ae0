//! Registry authentication as docker does it: a request without credentials, the 401's
//! `WWW-Authenticate` challenge, then basic auth or a bearer token from the realm (anonymous, with
//! a user name and password, with a refresh token), tokens cached per registry and scope.

use crate::credentials::{Credential, Secret};
use crate::error::{display_url, RegistryError};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` to ask the token for.
        service: Option<String>,
        /// The scope the registry asked for, if any.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value (`scheme k="v", k2=v2`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',' && !c.is_whitespace()))
                .collect();
        if key.is_empty() {
            break;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value =
                std::iter::from_fn(|| chars.next_if(|c| *c != ',' && !c.is_whitespace())).collect();
        }
        params.insert(key.to_ascii_lowercase(), value);
    }
    params
}

/// What to put in the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthHeader(Secret);

impl AuthHeader {
    /// The header value.
    pub fn value(&self) -> &str {
        self.0.expose()
    }
}

impl std::fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthHeader(<redacted>)")
    }
}

/// `Basic base64(user:password)`.
pub fn basic_header(username: &str, password: &Secret) -> AuthHeader {
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    AuthHeader(Secret::new(format!("Basic {encoded}")))
}

#[derive(Clone)]
struct CachedToken {
    header: AuthHeader,
    expires: Instant,
}

/// Per-registry authentication state: the challenge seen, tokens per scope, the refresh token
/// a password login returned.
#[derive(Default)]
pub struct AuthCache {
    /// (registry, scope) → token.
    tokens: Mutex<BTreeMap<(String, String), CachedToken>>,
    /// registry → challenge from its last 401.
    challenges: Mutex<BTreeMap<String, Challenge>>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCache { .. }")
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl AuthCache {
    /// The header to send to `registry` for `scope` before any 401, if one is known: a cached
    /// unexpired token, or basic credentials for a registry that asked for basic auth.
    pub fn cached(
        &self,
        registry: &str,
        scope: &str,
        credential: &Credential,
    ) -> Option<AuthHeader> {
        let challenge = self
            .challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)
            .cloned();
        match challenge? {
            Challenge::Basic => match credential {
                Credential::Basic { username, password } => Some(basic_header(username, password)),
                _ => None,
            },
            Challenge::Bearer { .. } => {
                if let Credential::RegistryToken(token) = credential {
                    return Some(AuthHeader(Secret::new(format!(
                        "Bearer {}",
                        token.expose()
                    ))));
                }
                let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                let cached = tokens.get(&(registry.to_string(), scope.to_string()))?;
                (cached.expires > Instant::now()).then(|| cached.header.clone())
            }
        }
    }

    /// Forgets the token for (registry, scope) if it is `refused`, the header the registry
    /// just refused. A request sent without one, or with a token another request has since
    /// replaced, leaves the cache alone: with requests in parallel, a refusal of an old or
    /// missing token must not drop the fresh token a concurrent request just fetched.
    pub fn invalidate(&self, registry: &str, scope: &str, refused: Option<&AuthHeader>) {
        let Some(refused) = refused else { return };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let key = (registry.to_string(), scope.to_string());
        if tokens
            .get(&key)
            .is_some_and(|cached| cached.header.value() == refused.value())
        {
            tokens.remove(&key);
        }
    }

    /// Answers a 401 from `registry`: records its challenge and returns the header to retry
    /// with (fetching a token for `scope` from the realm when the challenge is Bearer).
    pub async fn respond(
        &self,
        http: &reqwest::Client,
        registry: &str,
        www_authenticate: Option<&str>,
        scope: &str,
        credential: &Credential,
    ) -> Result<AuthHeader, RegistryError> {
        let auth_err = |reason: String| RegistryError::Auth {
            registry: registry.to_string(),
            reason,
        };
        let challenge = www_authenticate.and_then(parse_challenge).ok_or_else(|| {
            auth_err("the registry answered 401 without a usable WWW-Authenticate challenge".into())
        })?;
        self.challenges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(registry.to_string(), challenge.clone());
        match challenge {
            Challenge::Basic => match credential {
                Credential::Basic { username, password } => Ok(basic_header(username, password)),
                _ => Err(auth_err(
                    "the registry requires a user name and password, and none is configured for it in the docker config".into(),
                )),
            },
            Challenge::Bearer { realm, service, .. } => {
                if let Credential::RegistryToken(token) = credential {
                    return Ok(AuthHeader(Secret::new(format!("Bearer {}", token.expose()))));
                }
                let (token, expires_in) = fetch_token(http, &realm, service.as_deref(), scope, credential)
                    .await
                    .map_err(auth_err)?;
                let header = AuthHeader(Secret::new(format!("Bearer {token}")));
                // Docker's minimum lifetime is 60 s; keep a margin before expiry.
                let lifetime = Duration::from_secs(expires_in.unwrap_or(60).max(60));
                let expires = Instant::now() + lifetime.saturating_sub(Duration::from_secs(10));
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    (registry.to_string(), scope.to_string()),
                    CachedToken {
                        header: header.clone(),
                        expires,
                    },
                );
                Ok(header)
            }
        }
    }
}

/// The most of a token server's reply kiln reads.
const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;

/// Asks the realm for a token: GET with basic credentials (or none), or the OAuth2 refresh
/// grant for an identity token. Accepts both `token` and `access_token`.
async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    credential: &Credential,
) -> Result<(String, Option<u64>), String> {
    let mut url =
        url::Url::parse(realm).map_err(|e| format!("invalid token realm {realm:?}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("invalid token realm {realm:?}: not an http(s) URL"));
    }
    let response = match credential {
        Credential::IdentityToken(refresh) => {
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", refresh.expose().to_string()),
                ("client_id", "kiln".to_string()),
            ];
            if let Some(service) = service {
                form.push(("service", service.to_string()));
            }
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                form.push(("scope", s.to_string()));
            }
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            http.post(url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
                .send()
                .await
        }
        _ => {
            {
                let mut query = url.query_pairs_mut();
                if let Some(service) = service {
                    query.append_pair("service", service);
                }
                for s in scope.split(' ').filter(|s| !s.is_empty()) {
                    query.append_pair("scope", s);
                }
            }
            let mut request = http.get(url.clone());
            if let Credential::Basic { username, password } = credential {
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(username, password).value(),
                );
            }
            request.send().await
        }
    };
    let shown = display_url(&url);
    let refreshing = matches!(credential, Credential::IdentityToken(_));
    let response =
        response.map_err(|e| format!("token request to {shown} failed: {}", without_url(&e)))?;
    let status = response.status();
    // The URL as logs may show it; the credential kind, never its value.
    tracing::debug!(
        "token request to {shown} ({}) -> {status}",
        match credential {
            Credential::IdentityToken(_) => "identity token",
            Credential::Basic { .. } => "basic credentials",
            _ => "anonymous",
        }
    );
    let mut response = response;
    // Tokens are a few KiB: a reply that goes on past the cap (or never ends) is cut off there.
    let (body, whole) = crate::client::read_up_to(&mut response, MAX_TOKEN_RESPONSE_BYTES)
        .await
        .map_err(|e| format!("token response from {shown} broke off: {}", without_url(&e)))?;
    if !status.is_success() {
        let detail = RegistryError::from_status(
            crate::error::RequestInfo {
                // The refresh grant is a POST.
                method: if refreshing { "POST" } else { "GET" }.into(),
                url: shown.clone(),
            },
            status.as_u16(),
            &body,
        );
        let hint = match (status.as_u16(), refreshing) {
            (401, true) => " (the identitytoken in the docker config was refused: log in again)",
            (401, false) => " (check the user name and password in the docker config)",
            _ => "",
        };
        return Err(format!("{detail}{hint}"));
    }
    if !whole {
        return Err(format!(
            "the token endpoint {shown} sent more than {} MiB, which no token is",
            MAX_TOKEN_RESPONSE_BYTES >> 20
        ));
    }
    parse_token_response(&body).map_err(|reason| format!("the token endpoint {shown} {reason}"))
}

/// A token server's answer: its token (`token`, else `access_token`; empty ones do not count)
/// and `expires_in`. Public for the fuzz target only.
#[doc(hidden)]
pub fn parse_token_response(body: &[u8]) -> Result<(String, Option<u64>), &'static str> {
    let parsed: TokenResponse =
        serde_json::from_slice(body).map_err(|_| "did not answer with a JSON token")?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or("answered without a token")?;
    Ok((token, parsed.expires_in))
}

/// reqwest's error text without the URL it may include (kiln prints a cleaned one).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        // Every caller names the request already: reqwest's "for url (…)" would say it twice.
        text = text.replace(&format!(" for url ({})", url.as_str()), "");
        text = text.replace(url.as_str(), &display_url(url));
    }
    crate::error::with_causes(text, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_forgets_only_the_token_refused() {
        let cache = AuthCache::default();
        cache.challenges.lock().unwrap().insert(
            "r".into(),
            Challenge::Bearer {
                realm: "https://auth/token".into(),
                service: None,
                scope: None,
            },
        );
        let token = |t: &str| AuthHeader(Secret::new(format!("Bearer {t}")));
        let store = |t: &str| {
            cache.tokens.lock().unwrap().insert(
                ("r".into(), "s".into()),
                CachedToken {
                    header: token(t),
                    expires: Instant::now() + Duration::from_secs(60),
                },
            );
        };
        let cached = || {
            cache
                .cached("r", "s", &Credential::Anonymous)
                .map(|h| h.value().to_string())
        };
        store("fresh");
        // Refused without a token, or with one already replaced: the fresh one stays.
        cache.invalidate("r", "s", None);
        cache.invalidate("r", "s", Some(&token("old")));
        assert_eq!(cached().as_deref(), Some("Bearer fresh"));
        // Refused with the cached token itself: it goes.
        cache.invalidate("r", "s", Some(&token("fresh")));
        assert_eq!(cached(), None);
    }

    #[test]
    fn parses_docker_hub_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm = "https://r/token", service=r"#),
            Some(Challenge::Bearer {
                realm: "https://r/token".into(),
                service: Some("r".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn token_replies() {
        assert_eq!(
            parse_token_response(br#"{"token":"t","expires_in":300}"#),
            Ok(("t".into(), Some(300)))
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"a"}"#),
            Ok(("a".into(), None))
        );
        assert_eq!(
            parse_token_response(br#"{"token":""}"#),
            Err("answered without a token")
        );
        assert_eq!(
            parse_token_response(b"<html>"),
            Err("did not answer with a JSON token")
        );
    }

    #[test]
    fn headers_never_show_secrets() {
        let h = basic_header("u", &Secret::new("hunter2"));
        assert_eq!(h.value(), "Basic dTpodW50ZXIy");
        assert!(!format!("{h:?}").contains("dTpodW50ZXIy"));
    }
}
