//! Google workload identity federation: an `external_account` credentials file (what
//! `gcloud iam workload-identity-pools create-cred-config` writes) turns a token from another
//! identity provider (a GitLab CI job's ID token, a Kubernetes service-account token, an
//! Entra or Okta token) into a Google access token, as Google's auth libraries do:
//!
//! 1. the subject token is read from `credential_source` (a file, or a URL with headers), as
//!    text or as a field of a JSON document;
//! 2. Security Token Service's token exchange (RFC 8693) at `token_url` gives a federated
//!    access token for the pool's `audience`;
//! 3. with `service_account_impersonation_url`, IAM Credentials' `generateAccessToken` turns
//!    that into the service account's access token.
//!
//! AWS-sourced (`environment_id`) and executable-sourced credentials are not read: on AWS, a
//! service-account key or Google's own tooling is needed.

use super::google::{read_token_reply, success_body};
use super::CloudCredentials;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const DEFAULT_STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// The longest a subject token is read: Google's libraries read at most 1 MiB too.
const SUBJECT_TOKEN_LIMIT: usize = 1 << 20;

/// The fields of an `external_account` file kiln reads.
#[derive(Deserialize)]
pub(super) struct ExternalAccount {
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    service_account_impersonation_url: Option<String>,
    /// Workforce pools (people, not workloads): the project billed for the exchange.
    workforce_pool_user_project: Option<String>,
    #[serde(default)]
    service_account_impersonation: Option<ImpersonationOptions>,
    credential_source: Option<CredentialSource>,
}

#[derive(Deserialize)]
struct ImpersonationOptions {
    token_lifetime_seconds: Option<u64>,
}

#[derive(Deserialize)]
struct CredentialSource {
    file: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    format: Option<SourceFormat>,
    environment_id: Option<String>,
    executable: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SourceFormat {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject_token_field_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImpersonationReply {
    access_token: String,
    expire_time: String,
}

/// The access token (scope `scope`) for the federated identity of `file`, and when it
/// expires. `origin` names the file in errors.
pub(super) async fn access_token(
    providers: &CloudCredentials,
    file: &ExternalAccount,
    scope: &str,
    origin: &str,
) -> Result<(String, SystemTime), String> {
    let missing = |field: &str| format!("external account {origin} has no {field}");
    let audience = file
        .audience
        .as_deref()
        .ok_or_else(|| missing("audience"))?;
    let subject_token_type = file
        .subject_token_type
        .as_deref()
        .ok_or_else(|| missing("subject_token_type"))?;
    let source = file
        .credential_source
        .as_ref()
        .ok_or_else(|| missing("credential_source"))?;
    let subject_token = subject_token(providers, source, origin).await?;

    let sts_url = file.token_url.as_deref().unwrap_or(DEFAULT_STS_URL);
    let what = format!("token exchange at {sts_url} (for {origin})");
    let options = file
        .workforce_pool_user_project
        .as_ref()
        .map(|project| serde_json::json!({ "userProject": project }).to_string());
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("audience", audience),
        ("scope", scope),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
        ("subject_token", subject_token.as_str()),
        ("subject_token_type", subject_token_type),
    ];
    if let Some(options) = &options {
        form.push(("options", options));
    }
    let reply = providers
        .http_for(sts_url)?
        .post(sts_url)
        .form(&form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{what} failed: {e}"))?;
    // STS answers as an OAuth 2.0 token endpoint does.
    let (federated_token, expires) = read_token_reply(reply, &what).await?;
    let Some(impersonation_url) = file.service_account_impersonation_url.as_deref() else {
        return Ok((federated_token, expires));
    };

    let what = format!("service account impersonation at {impersonation_url} (for {origin})");
    let lifetime = file
        .service_account_impersonation
        .as_ref()
        .and_then(|o| o.token_lifetime_seconds)
        .unwrap_or(3600);
    let reply = providers
        .http_for(impersonation_url)?
        .post(impersonation_url)
        .bearer_auth(&federated_token)
        .json(&serde_json::json!({"scope": [scope], "lifetime": format!("{lifetime}s")}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("{what} failed: {e}"))?;
    let body = success_body(reply, &what).await?;
    let impersonated: ImpersonationReply = serde_json::from_slice(&body)
        .map_err(|_| format!("{what}: the reply has no accessToken and expireTime"))?;
    let expires = impersonated
        .expire_time
        .parse::<jiff::Timestamp>()
        .map_err(|_| {
            format!(
                "{what}: expireTime {:?} is not an RFC 3339 time",
                impersonated.expire_time
            )
        })?;
    let expires = UNIX_EPOCH + Duration::from_secs(u64::try_from(expires.as_second()).unwrap_or(0));
    Ok((impersonated.access_token, expires))
}

/// The token from the other identity provider, as `credential_source` says where it is.
async fn subject_token(
    providers: &CloudCredentials,
    source: &CredentialSource,
    origin: &str,
) -> Result<String, String> {
    let (raw, from) = if let Some(path) = &source.file {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("external account {origin}: cannot read {path}: {e}"))?;
        (bytes, format!("file {path}"))
    } else if let Some(url) = &source.url {
        let mut request = providers
            .http_for(url)?
            .get(url)
            .timeout(Duration::from_secs(30));
        for (name, value) in &source.headers {
            request = request.header(name, value);
        }
        let what = format!("external account {origin}: the subject token from {url}");
        let reply = request.send().await.map_err(|e| format!("{what}: {e}"))?;
        (success_body(reply, &what).await?, format!("URL {url}"))
    } else if source.environment_id.is_some() || source.executable.is_some() {
        let kind = if source.environment_id.is_some() {
            "AWS-sourced (environment_id)"
        } else {
            "executable-sourced"
        };
        return Err(format!(
            "external account {origin}: {kind} credentials are not supported by kiln; use a \
             file- or URL-sourced configuration, or a service-account key"
        ));
    } else {
        return Err(format!(
            "external account {origin}: credential_source has neither file nor url"
        ));
    };
    if raw.len() > SUBJECT_TOKEN_LIMIT {
        return Err(format!(
            "external account {origin}: the subject token in {from} is larger than 1 MiB"
        ));
    }
    let text = String::from_utf8(raw).map_err(|_| {
        format!("external account {origin}: the subject token in {from} is not UTF-8")
    })?;
    let format = source.format.as_ref();
    let token = match format.and_then(|f| f.kind.as_deref()).unwrap_or("text") {
        "text" => text.trim().to_string(),
        "json" => {
            let field = format
                .and_then(|f| f.subject_token_field_name.as_deref())
                .ok_or_else(|| {
                    format!(
                        "external account {origin}: format json without subject_token_field_name"
                    )
                })?;
            let document: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| format!("external account {origin}: {from} is not JSON"))?;
            document
                .get(field)
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| {
                    format!("external account {origin}: {from} has no string field {field:?}")
                })?
                .to_string()
        }
        other => {
            return Err(format!(
                "external account {origin}: credential_source format {other:?} is neither text \
                 nor json"
            ))
        }
    };
    if token.is_empty() {
        return Err(format!(
            "external account {origin}: the subject token in {from} is empty"
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProviderSet;
    use kiln_registry::transport::TransportOptions;

    /// The subject token `source` (JSON) names, read as `subject_token` reads it.
    fn read(source: serde_json::Value) -> Result<String, String> {
        let providers = CloudCredentials::new(ProviderSet::default(), TransportOptions::default());
        let source: CredentialSource = serde_json::from_value(source).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(subject_token(&providers, &source, "creds.json"))
    }

    #[test]
    fn subject_tokens_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("token");
        std::fs::write(&text, "  header.claims.sig\n").unwrap();
        let json = dir.path().join("token.json");
        std::fs::write(&json, r#"{"id_token": "a.b.c", "other": 1}"#).unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();

        // Text is the whole file, trimmed; text is the default format.
        assert_eq!(
            read(serde_json::json!({"file": text})).unwrap(),
            "header.claims.sig"
        );
        let json_source = |field: &str| {
            serde_json::json!({
                "file": json,
                "format": {"type": "json", "subject_token_field_name": field},
            })
        };
        assert_eq!(read(json_source("id_token")).unwrap(), "a.b.c");
        let err = read(json_source("access_token")).unwrap_err();
        assert!(err.contains("no string field \"access_token\""), "{err}");
        let err = read(json_source("other")).unwrap_err();
        assert!(err.contains("no string field"), "{err}");

        let err = read(serde_json::json!({"file": empty})).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        let err = read(serde_json::json!({"file": dir.path().join("absent")})).unwrap_err();
        assert!(
            err.contains("creds.json") && err.contains("cannot read"),
            "{err}"
        );
        let err = read(serde_json::json!({"file": text, "format": {"type": "xml"}})).unwrap_err();
        assert!(err.contains("\"xml\""), "{err}");
    }

    #[test]
    fn unsupported_sources_are_named() {
        let err = read(serde_json::json!({
            "environment_id": "aws1",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com",
        }))
        .unwrap_err();
        assert!(
            err.contains("AWS-sourced") && err.contains("not supported"),
            "{err}"
        );
        let err = read(serde_json::json!({"executable": {"command": "/bin/true"}})).unwrap_err();
        assert!(err.contains("executable-sourced"), "{err}");
        let err = read(serde_json::json!({})).unwrap_err();
        assert!(err.contains("neither file nor url"), "{err}");
    }
}
