//! Google's and Azure's side of kiln's cloud steps (and AWS's container
//! credentials endpoint, which moto does not serve), on `127.0.0.1`: small
//! servers that follow each provider's documented protocol for exactly the
//! requests kiln's libraries send (object_store 0.14, azure_identity 1.0,
//! gcp_auth 0.12), and the real Azurite for Blob storage.
//!
//! | service | type | point the client at it with |
//! |---|---|---|
//! | GCE/GKE metadata server | [`GoogleCloud`] | `GCE_METADATA_HOST=`[`GoogleCloud::metadata_host`] (object_store; gcp_auth's metadata URL is fixed) |
//! | a service-account key's `token_uri` | [`GoogleCloud`], [`ServiceAccountKey`] | the key file ([`GoogleCloud::service_account`], [`ServiceAccountKey::write`]) via `GOOGLE_APPLICATION_CREDENTIALS` |
//! | Cloud Storage (XML API reads) | [`GoogleCloud`] | `gcs_base_url` in a key file given as `GOOGLE_SERVICE_ACCOUNT`, or `GOOGLE_BASE_URL`; `GOOGLE_ALLOW_HTTP=true` for plain HTTP |
//! | AWS container credentials (EKS Pod Identity agent, ECS task role) | [`AwsContainerCredentials`] | `AWS_CONTAINER_CREDENTIALS_FULL_URI=`[`AwsContainerCredentials::full_uri`], `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` |
//! | Entra ID token endpoint | [`EntraId`] (TLS) | `AZURE_AUTHORITY_HOST=`[`EntraId::authority_host`], `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` or `AZURE_FEDERATED_TOKEN_FILE`; `SSL_CERT_FILE` = the [`crate::TestCa`] PEM |
//! | ACR login server (`/oauth2/exchange`, `/oauth2/token`) | [`AcrFront`] (TLS) in front of a token-auth [`crate::Registry`] | the image reference's host [`AcrFront::host`] |
//! | Azure Blob storage | [`Azurite`] (npm `azurite`) | `AZURE_STORAGE_USE_EMULATOR=true`, `AZURITE_BLOB_STORAGE_URL=`[`Azurite::blob_endpoint`], `AZURE_STORAGE_ACCESS_KEY` |
//!
//! What the libraries send, as read from their sources:
//!
//! - object_store's GCS credentials: with a service-account key
//!   (`GOOGLE_SERVICE_ACCOUNT[_KEY]` or, through application default
//!   credentials, `GOOGLE_APPLICATION_CREDENTIALS`) it never calls
//!   `token_uri`: it signs a self-signed JWT (RS256, `kid` =
//!   `private_key_id`, `iss` = `sub` = `client_email`, `scope` =
//!   cloud-platform, one hour) and sends it as the bearer
//!   ([`verify_self_signed_jwt`] checks one). Without a key it asks the
//!   metadata server at `GCE_METADATA_HOST` (then `GCE_METADATA_IP`):
//!   `GET /computeMetadata/v1/instance/service-accounts/default/token?audience=https://www.googleapis.com/oauth2/v4/token`
//!   with `Metadata-Flavor: Google`.
//! - gcp_auth (with its `ring` feature) posts the JWT-bearer grant to the key's
//!   `token_uri` (`iss`, `aud` = `token_uri`, `scope`, `iat`, `exp`; base64url
//!   *with* padding, no `kid`); its metadata URL is the fixed
//!   `http://metadata.google.internal/…`, and it also reads
//!   `/computeMetadata/v1/project/project-id`.
//! - object_store's GCS `get`: `GET {base}/{bucket}/{object}` (XML API), both
//!   percent-encoded with every non-alphanumeric byte escaped (`/` is `%2F`);
//!   it requires `ETag` and `Last-Modified` in the answer; a cut body is
//!   resumed with `Range` + `If-Match`.
//! - azure_identity 1.0: `ClientSecretCredential` and
//!   `WorkloadIdentityCredential` each send one
//!   `POST {AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token` and nothing
//!   else (no instance discovery); the authority must be `https`; the
//!   federated token file is sent as read, not trimmed. There is no
//!   `EnvironmentCredential`: a client-secret login reads
//!   `AZURE_CLIENT_SECRET` itself.
//! - object_store's Azure client with `AZURE_STORAGE_USE_EMULATOR=true`
//!   goes path-style (`{AZURITE_BLOB_STORAGE_URL}/ACCOUNT/CONTAINER/BLOB`),
//!   keeps the account named by an `https://ACCOUNT.blob.core.windows.net/…`
//!   URL and signs with `AZURE_STORAGE_ACCESS_KEY` (SharedKey,
//!   `x-ms-version: 2023-11-03`).

mod acr;
mod aws_container;
mod azurite;
mod entra;
mod google;
mod jwt;
mod server;

pub use acr::{AcrExchange, AcrFront, AcrRequest, ACR_REFRESH_TOKEN_USER, ACR_TOKEN_AUDIENCES};
pub use aws_container::{AwsContainerCredentials, ContainerCredentialsRequest};
pub use azurite::{
    azurite_dir, generate_account_key, shared_key_authorization, Azurite, AzuriteOptions,
    AZURE_STORAGE_VERSION, AZURITE_DEV_ACCOUNT, AZURITE_DEV_KEY, AZURITE_DIR, AZURITE_DIR_ENV,
};
pub use entra::{
    EntraAccessToken, EntraApp, EntraClientAuth, EntraId, EntraOptions, EntraRequest,
    CLIENT_ASSERTION_TYPE, FEDERATED_TOKEN_AUDIENCE,
};
pub use google::{
    verify_self_signed_jwt, FederationPool, GoogleAccessToken, GoogleCloud, GoogleEndpoint,
    GoogleOptions, GoogleRequest, GoogleTokenSource, ServiceAccountKey, CLOUD_PLATFORM_SCOPE,
    GOOGLE_REGISTRY_USER, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT,
};
pub use server::https_request;
