//! The built-in registry credential providers and which registries each one serves.

mod azure;
mod ecr;
mod env_vars;
mod gitlab;
mod google;
mod google_external;

pub(crate) use azure::entra_token;
pub(crate) use ecr::{aws_config, describe_sdk_error};
pub(crate) use google::access_token as google_token;

use kiln_registry::credentials::{Credential, CredentialError, CredentialProvider, ProviderFuture};
use kiln_registry::transport::{url_host, Clients, Direction, TransportOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One built-in provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProviderKind {
    /// The kaniko fork's `env` helper: `KANIKO_<HOST>_USER` and `KANIKO_<HOST>_PASSWORD`.
    Env,
    /// Amazon ECR.
    Ecr,
    /// Google Container Registry and Artifact Registry.
    Google,
    /// Azure Container Registry.
    Azure,
    /// GitLab CI's registry.
    GitLab,
}

impl ProviderKind {
    /// Every provider, in the order kaniko's keychain asks them.
    pub const ALL: [ProviderKind; 5] = [
        ProviderKind::Env,
        ProviderKind::Google,
        ProviderKind::Ecr,
        ProviderKind::Azure,
        ProviderKind::GitLab,
    ];

    /// The name users know it by, for messages.
    pub fn title(self) -> &'static str {
        match self {
            ProviderKind::Env => "KANIKO_<HOST>_USER/PASSWORD variables",
            ProviderKind::Ecr => "Amazon ECR",
            ProviderKind::Google => "Google",
            ProviderKind::Azure => "Azure Container Registry",
            ProviderKind::GitLab => "GitLab CI",
        }
    }

    /// The provider standing in for `docker-credential-<helper>`, the helpers kaniko's image
    /// ships (and the names docker users give them).
    pub fn for_helper(helper: &str) -> Option<ProviderKind> {
        match helper {
            "ecr-login" => Some(ProviderKind::Ecr),
            "gcr" | "gcloud" => Some(ProviderKind::Google),
            "acr-env" | "acr" => Some(ProviderKind::Azure),
            "gitlab" | "gitlabci" => Some(ProviderKind::GitLab),
            _ => None,
        }
    }

    /// The provider whose registries `registry` (a host, maybe with a port) is one of.
    /// GitLab's registries are known from `CI_REGISTRY` and `CI_DEPENDENCY_PROXY_SERVER`, read
    /// by the caller.
    fn for_host(registry: &str) -> Option<ProviderKind> {
        let host = host_name(registry);
        if ecr::region_of(host).is_some() {
            Some(ProviderKind::Ecr)
        } else if google::is_google_registry(host) {
            Some(ProviderKind::Google)
        } else if azure::is_acr(host) {
            Some(ProviderKind::Azure)
        } else {
            None
        }
    }
}

/// `host:port` → `host` (an IPv6 literal keeps its brackets).
fn host_name(registry: &str) -> &str {
    match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => registry,
    }
}

/// A `--credential-helpers` value kiln does not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown credential helper {name:?}: kiln's built-in ones are ecr (ecr-login), google (gcr), \
     acr (acr-env), gitlab and env; none turns them all off"
)]
pub struct HelperNameError {
    /// The name given.
    pub name: String,
}

/// Which built-in providers are on (`--credential-helpers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSet(Vec<ProviderKind>);

impl Default for ProviderSet {
    /// All of them, as kaniko.
    fn default() -> Self {
        ProviderSet(ProviderKind::ALL.to_vec())
    }
}

impl ProviderSet {
    /// No provider at all.
    pub fn none() -> Self {
        ProviderSet(Vec::new())
    }

    /// The set `--credential-helpers` values name (repeated, or comma lists). No value: all;
    /// an empty value or `none`: none.
    pub fn from_flag_values(values: &[String]) -> Result<Self, HelperNameError> {
        if values.is_empty() {
            return Ok(ProviderSet::default());
        }
        let mut kinds = Vec::new();
        for name in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
            let kind = match name {
                "" | "none" => continue,
                "env" => ProviderKind::Env,
                "ecr" | "aws" => ProviderKind::Ecr,
                "google" => ProviderKind::Google,
                "azure" => ProviderKind::Azure,
                other => ProviderKind::for_helper(other).ok_or_else(|| HelperNameError {
                    name: other.to_string(),
                })?,
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(ProviderSet(kinds))
    }

    /// Whether `kind` is on.
    pub fn contains(&self, kind: ProviderKind) -> bool {
        self.0.contains(&kind)
    }
}

/// Credentials are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// A credential and when it stops being good.
struct Fetched {
    credential: Credential,
    expires: SystemTime,
}

impl Fetched {
    /// A user and password from environment variables: they do not change while kiln runs.
    fn from_variables(username: String, password: String) -> Fetched {
        Fetched {
            credential: Credential::Basic {
                username,
                password: kiln_registry::Secret::new(password),
            },
            expires: SystemTime::now() + Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// The built-in providers, as a [`CredentialProvider`] for the docker config.
pub struct CloudCredentials {
    enabled: ProviderSet,
    clients: Clients,
    cache: Mutex<BTreeMap<String, Fetched>>,
    /// One fetch at a time, so that parallel pulls do not each ask the cloud.
    fetching: tokio::sync::Mutex<()>,
}

impl fmt::Debug for CloudCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudCredentials")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl CloudCredentials {
    /// The providers in `enabled`, reaching the clouds' endpoints with `transport`'s TLS
    /// settings (the system's roots, `SSL_CERT_FILE`, extra CAs).
    pub fn new(enabled: ProviderSet, transport: TransportOptions) -> Self {
        CloudCredentials {
            enabled,
            clients: Clients::new(transport),
            cache: Mutex::new(BTreeMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Which provider answers for `registry`.
    fn provider_for(&self, registry: &str, helper: Option<&str>) -> Option<ProviderKind> {
        let kind = match helper {
            Some(helper) => ProviderKind::for_helper(helper),
            // The variables, when set for the registry, come first (the fork's keychain order).
            None if self.enabled.contains(ProviderKind::Env)
                && env_vars::lookup(registry).is_some() =>
            {
                Some(ProviderKind::Env)
            }
            None if gitlab::is_gitlab_registry(registry) => Some(ProviderKind::GitLab),
            None => ProviderKind::for_host(registry),
        }?;
        self.enabled.contains(kind).then_some(kind)
    }

    fn cached(&self, registry: &str) -> Option<Credential> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let fetched = cache.get(registry)?;
        (SystemTime::now() + RENEW_BEFORE < fetched.expires).then(|| fetched.credential.clone())
    }

    /// An HTTP client for `url`'s host with kiln's TLS settings.
    pub(crate) fn http_for(&self, url: &str) -> Result<reqwest::Client, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if parsed.host_str().is_none() {
            return Err(format!("{url}: no host"));
        }
        self.clients
            .get(&url_host(&parsed), Direction::Pull)
            .map_err(|e| e.to_string())
    }

    async fn fetch(&self, kind: ProviderKind, registry: &str) -> Result<Fetched, String> {
        match kind {
            ProviderKind::Env => env_vars::credential(registry),
            ProviderKind::Ecr => ecr::credential(registry).await,
            ProviderKind::Google => google::credential(self).await,
            ProviderKind::Azure => azure::credential(self, registry).await,
            ProviderKind::GitLab => gitlab::credential(registry),
        }
    }
}

impl CredentialProvider for CloudCredentials {
    fn credential<'a>(&'a self, registry: &'a str, helper: Option<&'a str>) -> ProviderFuture<'a> {
        Box::pin(async move {
            let Some(kind) = self.provider_for(registry, helper) else {
                return Ok(None);
            };
            if let Some(credential) = self.cached(registry) {
                return Ok(Some(credential));
            }
            let _one_at_a_time = self.fetching.lock().await;
            if let Some(credential) = self.cached(registry) {
                return Ok(Some(credential));
            }
            let fetched =
                self.fetch(kind, registry)
                    .await
                    .map_err(|reason| CredentialError::Provider {
                        provider: kind.title().to_string(),
                        registry: registry.to_string(),
                        reason,
                    })?;
            let credential = fetched.credential.clone();
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(registry.to_string(), fetched);
            Ok(Some(credential))
        })
    }

    fn replaces_helper(&self, helper: &str) -> bool {
        ProviderKind::for_helper(helper).is_some_and(|kind| self.enabled.contains(kind))
    }
}

/// An OAuth2 error reply's `error` and `error_description` (never the request's secrets: the
/// server only echoes its own words), else the start of the body.
pub(crate) fn oauth_error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OauthError {
        error: Option<serde_json::Value>,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<OauthError>(body) {
        Ok(OauthError {
            error: Some(error),
            error_description,
        }) => {
            let error = match error {
                serde_json::Value::String(s) => s,
                // Google's JSON APIs (IAM Credentials, STS errors of some kinds):
                // {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED"}}.
                serde_json::Value::Object(o) if o.get("message").is_some_and(|m| m.is_string()) => {
                    let message = o["message"].as_str().unwrap_or_default();
                    match o.get("status").and_then(serde_json::Value::as_str) {
                        Some(status) => format!("{status}: {message}"),
                        None => message.to_string(),
                    }
                }
                other => other.to_string(),
            };
            match error_description {
                Some(d) => format!("{error}: {d}"),
                None => error,
            }
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            text.chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_string()
        }
    }
}

/// The environment variable `name`, if set and not empty.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_pick_their_provider() {
        for (host, kind) in [
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                Some(ProviderKind::Ecr),
            ),
            (
                "123456789012.dkr-ecr.eu-west-1.on.aws",
                Some(ProviderKind::Ecr),
            ),
            (
                "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
                Some(ProviderKind::Ecr),
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                Some(ProviderKind::Ecr),
            ),
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com:443",
                Some(ProviderKind::Ecr),
            ),
            ("public.ecr.aws", None),
            ("dkr.ecr.eu-west-1.amazonaws.com", None),
            ("gcr.io", Some(ProviderKind::Google)),
            ("eu.gcr.io", Some(ProviderKind::Google)),
            ("europe-west1-docker.pkg.dev", Some(ProviderKind::Google)),
            ("evilgcr.io", None),
            ("gcr.io.example.com", None),
            ("myreg.azurecr.io", Some(ProviderKind::Azure)),
            ("myreg.azurecr.cn", Some(ProviderKind::Azure)),
            ("azurecr.io", None),
            ("docker.io", None),
            ("127.0.0.1:5000", None),
        ] {
            assert_eq!(ProviderKind::for_host(host), kind, "{host}");
        }
    }

    #[test]
    fn flag_values() {
        let set = |v: &[&str]| {
            ProviderSet::from_flag_values(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(set(&[]).unwrap(), ProviderSet::default());
        assert_eq!(set(&[""]).unwrap(), ProviderSet::none());
        assert_eq!(set(&["none"]).unwrap(), ProviderSet::none());
        let some = set(&["ecr-login,gcr", "env"]).unwrap();
        assert!(some.contains(ProviderKind::Ecr) && some.contains(ProviderKind::Google));
        assert!(!some.contains(ProviderKind::Azure) && !some.contains(ProviderKind::GitLab));
        let err = set(&["ecr", "docker"]).unwrap_err();
        assert!(err.to_string().contains("\"docker\""), "{err}");
    }

    #[test]
    fn oauth_errors_are_short_and_plain() {
        assert_eq!(
            oauth_error_message(br#"{"error":"invalid_grant","error_description":"Invalid JWT"}"#),
            "invalid_grant: Invalid JWT"
        );
        assert_eq!(
            oauth_error_message(b"<html>nope</html>"),
            "<html>nope</html>"
        );
        // Google's JSON APIs (IAM Credentials).
        assert_eq!(
            oauth_error_message(
                br#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}"#
            ),
            "PERMISSION_DENIED: Permission 'iam.serviceAccounts.getAccessToken' denied"
        );
    }

    /// A credential is reused while it has more than `RENEW_BEFORE` left, and only then: the
    /// cached answer comes back without the provider being asked (it would have to reach
    /// Entra ID here, which the test does not have).
    #[test]
    fn credentials_are_reused_until_shortly_before_they_expire() {
        let providers = CloudCredentials::new(ProviderSet::default(), TransportOptions::default());
        let registry = "kilnreg.azurecr.io";
        let cached = Credential::IdentityToken(kiln_registry::Secret::new("refresh"));
        let put = |expires: SystemTime| {
            providers.cache.lock().unwrap().insert(
                registry.to_string(),
                Fetched {
                    credential: cached.clone(),
                    expires,
                },
            );
        };
        put(SystemTime::now() + RENEW_BEFORE + Duration::from_secs(60));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answer = runtime
            .block_on(providers.credential(registry, None))
            .unwrap();
        assert_eq!(answer, Some(cached.clone()));
        put(SystemTime::now() + RENEW_BEFORE - Duration::from_secs(1));
        assert_eq!(providers.cached(registry), None, "due for renewal");
        // Not one of a provider's registries: no answer, nothing asked.
        let other = runtime
            .block_on(providers.credential("registry.example.com", None))
            .unwrap();
        assert_eq!(other, None);
    }

    #[test]
    fn ports_are_not_part_of_the_host() {
        assert_eq!(host_name("gcr.io:443"), "gcr.io");
        assert_eq!(host_name("gcr.io"), "gcr.io");
        assert_eq!(host_name("[::1]:5000"), "[::1]");
    }
}
