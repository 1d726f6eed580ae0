//! Google Container Registry and Artifact Registry: an OAuth2 access token from application
//! default credentials, sent as the password of `oauth2accesstoken`.
//!
//! Written here rather than taken from a crate: `gcp_auth` ignores `GCE_METADATA_HOST` and
//! runs the `gcloud` command as a fallback, and `object_store`'s chain signs its own JWTs for
//! service accounts instead of getting the access token the registries take. What is needed
//! is a few documented requests: the JWT-bearer grant for a service-account key, the
//! refresh-token grant for gcloud's user credentials, the metadata server's token, and for
//! workload identity federation the token exchange of `google_external`.

use super::{env, oauth_error_message, CloudCredentials, Fetched};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use kiln_registry::credentials::{Credential, Secret};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The scope of the token: every Google Cloud API, as docker-credential-gcr asks.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// `gcr.io`, its regional hosts, and Artifact Registry's `REGION-docker.pkg.dev`.
pub(super) fn is_google_registry(host: &str) -> bool {
    host == "gcr.io"
        || host
            .strip_suffix(".gcr.io")
            .is_some_and(|l| !l.is_empty() && !l.contains('.'))
        || host
            .strip_suffix("-docker.pkg.dev")
            .is_some_and(|l| !l.is_empty() && !l.contains('.'))
}

/// A credentials file of application default credentials.
#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type")]
    kind: String,
    // service_account
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    // authorized_user
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The credentials file of application default credentials: `GOOGLE_APPLICATION_CREDENTIALS`,
/// else gcloud's `application_default_credentials.json` if it exists.
fn credentials_file() -> Option<PathBuf> {
    if let Some(path) = env("GOOGLE_APPLICATION_CREDENTIALS") {
        return Some(PathBuf::from(path));
    }
    let config = env("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))?;
    let path = config.join("application_default_credentials.json");
    path.is_file().then_some(path)
}

pub(super) async fn credential(providers: &CloudCredentials) -> Result<Fetched, String> {
    let (token, expires) = access_token(providers).await?;
    Ok(Fetched {
        credential: Credential::Basic {
            username: "oauth2accesstoken".to_string(),
            password: Secret::new(token),
        },
        expires,
    })
}

/// An access token (scope cloud-platform) and when it expires.
pub(crate) async fn access_token(
    providers: &CloudCredentials,
) -> Result<(String, SystemTime), String> {
    match credentials_file() {
        Some(path) => {
            let text = std::fs::read(&path)
                .map_err(|e| format!("cannot read credentials file {}: {e}", path.display()))?;
            let file: CredentialsFile = serde_json::from_slice(&text).map_err(|e| {
                format!(
                    "credentials file {} is not a Google credentials JSON (line {}, column {})",
                    path.display(),
                    e.line(),
                    e.column()
                )
            })?;
            let origin = path.display().to_string();
            match file.kind.as_str() {
                "service_account" => service_account_token(providers, &file, &origin).await,
                "authorized_user" => authorized_user_token(providers, &file, &origin).await,
                "external_account" => {
                    let external = serde_json::from_slice(&text).map_err(|e| {
                        format!(
                            "external account {origin}: {e} (line {}, column {})",
                            e.line(),
                            e.column()
                        )
                    })?;
                    super::google_external::access_token(providers, &external, SCOPE, &origin).await
                }
                other => Err(format!(
                    "credentials file {origin} is of type {other:?}; kiln reads service_account \
                     keys, gcloud's authorized_user credentials and external_account \
                     (workload identity federation) files"
                )),
            }
        }
        None => metadata_token(providers).await,
    }
}

async fn service_account_token(
    providers: &CloudCredentials,
    file: &CredentialsFile,
    origin: &str,
) -> Result<(String, SystemTime), String> {
    let missing = |field: &str| format!("service-account key {origin} has no {field}");
    let email = file
        .client_email
        .as_deref()
        .ok_or_else(|| missing("client_email"))?;
    let pem = file
        .private_key
        .as_deref()
        .ok_or_else(|| missing("private_key"))?;
    let token_uri = file.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &file.private_key_id {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({
        "iss": email,
        "scope": SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = sign_rs256(pem, signing_input.as_bytes())
        .map_err(|e| format!("service-account key {origin}: private_key {e}"))?;
    let assertion = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.as_str()),
    ];
    post_token_form(providers, token_uri, &form, origin).await
}

async fn authorized_user_token(
    providers: &CloudCredentials,
    file: &CredentialsFile,
    origin: &str,
) -> Result<(String, SystemTime), String> {
    let missing = |field: &str| format!("user credentials {origin} have no {field}");
    let form = [
        ("grant_type", "refresh_token"),
        (
            "client_id",
            file.client_id
                .as_deref()
                .ok_or_else(|| missing("client_id"))?,
        ),
        (
            "client_secret",
            file.client_secret
                .as_deref()
                .ok_or_else(|| missing("client_secret"))?,
        ),
        (
            "refresh_token",
            file.refresh_token
                .as_deref()
                .ok_or_else(|| missing("refresh_token"))?,
        ),
    ];
    let token_uri = file.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
    post_token_form(providers, token_uri, &form, origin).await
}

async fn post_token_form(
    providers: &CloudCredentials,
    token_uri: &str,
    form: &[(&str, &str)],
    origin: &str,
) -> Result<(String, SystemTime), String> {
    let client = providers.http_for(token_uri)?;
    let reply = client
        .post(token_uri)
        .form(form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("token request to {token_uri} (for {origin}) failed: {e}"))?;
    read_token_reply(
        reply,
        &format!("token request to {token_uri} (for {origin})"),
    )
    .await
}

/// An OAuth 2.0 token reply's access token and when it expires; an error reply's status and
/// message as an error about `what`.
pub(super) async fn read_token_reply(
    reply: reqwest::Response,
    what: &str,
) -> Result<(String, SystemTime), String> {
    let body = success_body(reply, what).await?;
    let parsed: TokenReply = serde_json::from_slice(&body)
        .map_err(|_| format!("{what}: the reply has no access_token"))?;
    let expires = SystemTime::now() + Duration::from_secs(parsed.expires_in.unwrap_or(3600));
    Ok((parsed.access_token, expires))
}

/// The body of a successful reply; otherwise an error about `what` with the status and the
/// service's message.
pub(super) async fn success_body(reply: reqwest::Response, what: &str) -> Result<Vec<u8>, String> {
    let status = reply.status();
    let body = reply
        .bytes()
        .await
        .map_err(|e| format!("{what}: reading the reply: {e}"))?;
    if !status.is_success() {
        return Err(format!("{what}: {status}: {}", oauth_error_message(&body)));
    }
    Ok(body.to_vec())
}

/// The GCE/GKE metadata server's token for the default service account (GKE Workload
/// Identity answers here). `GCE_METADATA_HOST` moves it, as in Google's own libraries.
async fn metadata_token(providers: &CloudCredentials) -> Result<(String, SystemTime), String> {
    let host = env("GCE_METADATA_HOST").unwrap_or_else(|| "metadata.google.internal".into());
    let url = format!("http://{host}{TOKEN_PATH}");
    let client = providers.http_for(&url)?;
    let reply = client
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| {
            format!(
                "no GOOGLE_APPLICATION_CREDENTIALS, and the metadata server {host} is \
                 unreachable ({e}): on GKE enable Workload Identity for the pod's service \
                 account; elsewhere set GOOGLE_APPLICATION_CREDENTIALS to a service-account key"
            )
        })?;
    read_token_reply(reply, &format!("metadata server {host}")).await
}

/// Signs `message` with RS256 (RSASSA-PKCS1-v1_5, SHA-256) with a PEM PKCS#8 RSA key.
pub(crate) fn sign_rs256(pem: &str, message: &[u8]) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| "is not a PEM key".to_string())?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("is not a PKCS#8 RSA key: {e}"))?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        message,
        &mut signature,
    )
    .map_err(|_| "could not sign".to_string())?;
    Ok(signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_hosts() {
        assert!(is_google_registry("gcr.io"));
        assert!(is_google_registry("us.gcr.io"));
        assert!(is_google_registry("us-central1-docker.pkg.dev"));
        assert!(!is_google_registry("a.b.gcr.io"));
        assert!(!is_google_registry("-docker.pkg.dev"));
        assert!(!is_google_registry("pkg.dev"));
    }
}
