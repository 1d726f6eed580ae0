//! What a build pod on a cloud needs without extra setup, as kaniko's binary gives it:
//!
//! - **Registry credentials** from the pod's identity ([`CloudCredentials`], a
//!   [`kiln_registry::credentials::CredentialProvider`]): Amazon ECR through the AWS credential
//!   chain and `GetAuthorizationToken`; Google's registries through application default
//!   credentials (key files, user credentials, workload identity federation) or the metadata
//!   server; Azure Container Registry through Microsoft Entra
//!   credentials and ACR's refresh-token exchange; GitLab CI's registry through the job's
//!   variables. The docker config is asked first; a provider is asked only for its own
//!   registries (or when the config names the helper it stands in for), so a build that needs
//!   no cloud never waits on a metadata server.
//! - **Object-store contexts** ([`contexts`]): `s3://`, `gs://` and Azure Blob URLs, downloaded
//!   to a file the build then unpacks path-safely like any tarball context.
//!
//! Nothing here prints: errors carry what was tried and what to set, and never a secret.

pub mod contexts;
mod providers;

pub use providers::{CloudCredentials, HelperNameError, ProviderKind, ProviderSet};
