//! Azure Container Registry: a Microsoft Entra token (azure_identity: workload identity,
//! service principal or managed identity), exchanged at the registry's `/oauth2/exchange` for
//! an ACR refresh token, used as docker's identity token (what `docker-credential-acr-env`,
//! kaniko's helper, does).

use super::{env, oauth_error_message, CloudCredentials, Fetched};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use kiln_registry::credentials::{Credential, Secret};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The Azure Resource Manager scope ACR's exchange accepts tokens of, per cloud: by the
/// `AZURE_ENVIRONMENT` name kaniko's ACR helper reads, else by the registry's suffix
/// (`.azurecr.cn` is Azure China's, `.azurecr.us` US Government's), else the public cloud's.
fn arm_scope(registry: &str, environment: Option<&str>) -> &'static str {
    const PUBLIC: &str = "https://management.azure.com/.default";
    const CHINA: &str = "https://management.chinacloudapi.cn/.default";
    const US_GOVERNMENT: &str = "https://management.usgovcloudapi.net/.default";
    const GERMANY: &str = "https://management.microsoftazure.de/.default";
    match environment.map(str::to_ascii_lowercase).as_deref() {
        Some("azurechinacloud") => return CHINA,
        Some("azureusgovernmentcloud" | "azureusgovernment") => return US_GOVERNMENT,
        Some("azuregermancloud") => return GERMANY,
        Some("azurepubliccloud" | "azurecloud") => return PUBLIC,
        _ => {}
    }
    let host = super::host_name(registry);
    if host.ends_with(".azurecr.cn") {
        CHINA
    } else if host.ends_with(".azurecr.us") {
        US_GOVERNMENT
    } else if host.ends_with(".azurecr.de") {
        GERMANY
    } else {
        PUBLIC
    }
}

/// ACR's hosts in the public, China, Germany and US Government clouds.
pub(super) fn is_acr(host: &str) -> bool {
    [".azurecr.io", ".azurecr.cn", ".azurecr.de", ".azurecr.us"]
        .iter()
        .any(|s| host.strip_suffix(s).is_some_and(|name| !name.is_empty()))
}

/// Which Entra credential the environment sets up.
enum Source {
    Workload,
    Secret,
    Managed,
}

impl Source {
    /// In the order of the Azure SDKs' default chain: a service principal's secret, then
    /// workload identity, then managed identity.
    fn from_env() -> Source {
        if env("AZURE_CLIENT_SECRET").is_some() {
            Source::Secret
        } else if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            Source::Workload
        } else {
            Source::Managed
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Source::Workload => {
                "workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID)"
            }
            Source::Secret => {
                "a service principal (AZURE_CLIENT_SECRET, AZURE_CLIENT_ID, AZURE_TENANT_ID)"
            }
            Source::Managed => {
                "managed identity (no AZURE_FEDERATED_TOKEN_FILE or AZURE_CLIENT_SECRET set)"
            }
        }
    }
}

/// An Entra access token for `scope`, from the credential the environment sets up.
pub(crate) async fn entra_token(
    providers: &CloudCredentials,
    scope: &str,
) -> Result<(String, SystemTime), String> {
    let source = Source::from_env();
    let authority = env("AZURE_AUTHORITY_HOST")
        .unwrap_or_else(|| "https://login.microsoftonline.com".to_string());
    let http = providers.http_for(&authority)?;
    let client_options = ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        ..Default::default()
    };
    let fail = |e: azure_core::Error| {
        // azure_identity's messages end with a troubleshooting link on a line of its own.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default().to_string();
        format!("{} failed: {first}", source.describe())
    };
    let credential: Arc<dyn TokenCredential> = match source {
        Source::Workload => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                ..Default::default()
            }))
            .map_err(fail)?
        }
        Source::Secret => {
            let (Some(tenant), Some(client), Some(secret)) = (
                env("AZURE_TENANT_ID"),
                env("AZURE_CLIENT_ID"),
                env("AZURE_CLIENT_SECRET"),
            ) else {
                return Err(
                    "AZURE_CLIENT_SECRET is set but AZURE_TENANT_ID or AZURE_CLIENT_ID is not"
                        .to_string(),
                );
            };
            ClientSecretCredential::new(
                &tenant,
                client,
                secret.into(),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(fail)?
        }
        Source::Managed => ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: env("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
            client_options,
        }))
        .map_err(fail)?,
    };
    let token = credential.get_token(&[scope], None).await.map_err(fail)?;
    let expires = SystemTime::from(token.expires_on);
    Ok((token.token.secret().to_string(), expires))
}

#[derive(Deserialize)]
struct ExchangeReply {
    refresh_token: String,
}

pub(super) async fn credential(
    providers: &CloudCredentials,
    registry: &str,
) -> Result<Fetched, String> {
    let scope = arm_scope(registry, env("AZURE_ENVIRONMENT").as_deref());
    let (access_token, _) = entra_token(providers, scope).await?;
    let url = format!("https://{registry}/oauth2/exchange");
    let tenant = env("AZURE_TENANT_ID").unwrap_or_default();
    let mut form = vec![
        ("grant_type", "access_token"),
        ("service", registry),
        ("access_token", access_token.as_str()),
    ];
    if !tenant.is_empty() {
        form.push(("tenant", tenant.as_str()));
    }
    let reply = providers
        .http_for(&url)?
        .post(&url)
        .form(&form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            format!("POST {url} (the Entra token for an ACR refresh token) failed: {e}")
        })?;
    let status = reply.status();
    let body = reply
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: reading the reply: {e}"))?;
    if !status.is_success() {
        let hint = match status.as_u16() {
            401 | 403 => "; the identity needs a role on the registry such as AcrPush",
            _ => "",
        };
        return Err(format!(
            "POST {url} (the Entra token for an ACR refresh token): {status}: {}{hint}",
            oauth_error_message(&body)
        ));
    }
    let parsed: ExchangeReply = serde_json::from_slice(&body)
        .map_err(|_| format!("POST {url}: the reply has no refresh_token"))?;
    Ok(Fetched {
        credential: Credential::IdentityToken(Secret::new(parsed.refresh_token)),
        // ACR's refresh tokens last three hours.
        expires: SystemTime::now() + Duration::from_secs(3 * 3600),
    })
}

#[cfg(test)]
mod tests {
    use super::{arm_scope, is_acr};

    #[test]
    fn arm_scopes_of_sovereign_clouds() {
        let public = "https://management.azure.com/.default";
        let china = "https://management.chinacloudapi.cn/.default";
        let us = "https://management.usgovcloudapi.net/.default";
        assert_eq!(arm_scope("r.azurecr.io", None), public);
        assert_eq!(arm_scope("r.azurecr.cn", None), china);
        assert_eq!(arm_scope("r.azurecr.us:443", None), us);
        assert_eq!(arm_scope("127.0.0.1:5000", None), public);
        // kaniko's ACR helper's variable wins over the name.
        assert_eq!(arm_scope("acr.example.com", Some("AzureChinaCloud")), china);
        assert_eq!(
            arm_scope("r.azurecr.io", Some("AzureUSGovernmentCloud")),
            us
        );
        assert_eq!(arm_scope("r.azurecr.cn", Some("something-else")), china);
    }

    #[test]
    fn acr_hosts() {
        assert!(is_acr("myregistry.azurecr.io"));
        assert!(is_acr("myregistry.azurecr.us"));
        assert!(!is_acr("azurecr.io"));
        assert!(!is_acr("myregistry.azurecr.io.example.com"));
    }
}
