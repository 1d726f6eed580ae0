//! Amazon ECR: the AWS SDK's standard credential chain, then `GetAuthorizationToken`.

use super::Fetched;
use aws_config::{BehaviorVersion, Region};
use base64::Engine;
use kiln_registry::credentials::{Credential, Secret};
use std::time::{Duration, SystemTime};

/// The host suffixes of ECR's private registries, in every partition.
const SUFFIXES: [&str; 7] = [
    "amazonaws.com",
    "amazonaws.com.cn",
    "on.aws",
    "sc2s.sgov.gov",
    "c2s.ic.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

/// The region of an ECR registry host (`ACCOUNT.dkr.ecr[-fips].REGION.SUFFIX`, or `dkr-ecr`
/// for dual-stack), `None` for any other host.
pub(super) fn region_of(host: &str) -> Option<&str> {
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = ["dkr.ecr-fips.", "dkr-ecr-fips.", "dkr.ecr.", "dkr-ecr."]
        .iter()
        .find_map(|p| rest.strip_prefix(p))?;
    let (region, suffix) = rest.split_once('.')?;
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (region_ok && SUFFIXES.contains(&suffix)).then_some(region)
}

/// The AWS configuration of the standard chain, in `region` if given (else the chain's:
/// `AWS_REGION`, the profile).
pub(crate) async fn aws_config(region: Option<&str>) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls;
    // rustls with ring, the system's roots (`SSL_CERT_FILE` honoured).
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    loader.load().await
}

/// What to set when the chain found no credentials.
pub(crate) const NO_AWS_CREDENTIALS_HINT: &str =
    "no AWS credentials found (tried the environment, the profile, web identity, container and \
     instance metadata): on EKS give the pod's service account an IAM role (IRSA sets \
     AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE), or set AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY";

/// An SDK error as one line (its causes' messages, not the SDK's debug dump of them), with the
/// hint where the credentials were missing, or the variables to check where the container
/// credentials endpoint (EKS Pod Identity, ECS task roles) refused.
pub(crate) fn describe_sdk_error(error: &dyn std::error::Error) -> String {
    let text = kiln_registry::error::with_causes(error.to_string(), error);
    // The chain's kinds (CredentialsNotLoaded) show only in the debug form; it is matched,
    // never shown.
    let detail = format!("{error:?}");
    if text.contains("no providers in chain provided credentials")
        || detail.contains("CredentialsNotLoaded")
    {
        NO_AWS_CREDENTIALS_HINT.to_string()
    } else if text.contains("HTTP credential provider") {
        format!(
            "{text} (the container credentials endpoint: check AWS_CONTAINER_CREDENTIALS_FULL_URI \
             and the token in AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)"
        )
    } else {
        text
    }
}

pub(super) async fn credential(registry: &str) -> Result<Fetched, String> {
    let region = region_of(super::host_name(registry));
    let config = aws_config(region).await;
    if config.region().is_none() {
        return Err(format!(
            "{registry} is not an ECR host naming its region: set AWS_REGION"
        ));
    }
    let client = aws_sdk_ecr::Client::new(&config);
    let reply = client
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| format!("GetAuthorizationToken failed: {}", describe_sdk_error(&e)))?;
    let data = reply
        .authorization_data()
        .first()
        .ok_or("GetAuthorizationToken returned no authorization data")?;
    let token = data
        .authorization_token()
        .ok_or("GetAuthorizationToken returned no token")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("GetAuthorizationToken's token is not base64 of user:password")?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or("GetAuthorizationToken's token is not base64 of user:password")?;
    let expires = data
        .expires_at()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
    Ok(Fetched {
        credential: Credential::Basic {
            username: username.to_string(),
            password: Secret::new(password),
        },
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::region_of;

    #[test]
    fn regions_from_hosts() {
        assert_eq!(
            region_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            Some("us-east-1")
        );
        assert_eq!(
            region_of("12345678901.dkr.ecr.eu-west-1.amazonaws.com"),
            None
        );
        assert_eq!(
            region_of("123456789012.dkr.ecr.eu-west-1.example.com"),
            None
        );
    }
}
