//! Build contexts in object stores, as kaniko reads them: `s3://BUCKET/KEY`,
//! `gs://BUCKET/PATH` and Azure Blob `https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`.
//! A context is one tarball (a tar or tar.gz); without a key or path it is `context.tar.gz`.
//! [`download`] streams it to a file; kiln then unpacks that like any tarball context.

use crate::providers::{
    aws_config, describe_sdk_error, entra_token, env, google_token, CloudCredentials,
};
use aws_credential_types::provider::ProvideCredentials;
use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// kaniko's name of the object when the URL names only a bucket.
pub const DEFAULT_OBJECT: &str = "context.tar.gz";

/// The Azure Blob hosts kaniko takes for Azure (the public, China, Germany and US Government
/// clouds); any other https URL is a plain tarball download.
const AZURE_BLOB_SUFFIXES: [&str; 4] = [
    ".blob.core.windows.net",
    ".blob.core.chinacloudapi.cn",
    ".blob.core.cloudapi.de",
    ".blob.core.usgovcloudapi.net",
];

/// One object-store context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreContext {
    /// `s3://BUCKET/KEY`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
    },
    /// `gs://BUCKET/PATH`.
    Gcs {
        /// The bucket.
        bucket: String,
        /// The object's path.
        path: String,
    },
    /// `https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`.
    AzureBlob {
        /// The storage account's blob host (`ACCOUNT.blob.core.windows.net`).
        host: String,
        /// The storage account.
        account: String,
        /// The container.
        container: String,
        /// The blob's path in it.
        path: String,
    },
}

/// Why an object-store context could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The URL is of an object store but not well formed.
    #[error("{url}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading the object failed.
    #[error("reading {url}: {reason}")]
    Read {
        /// The URL.
        url: String,
        /// What failed, with what to set where credentials were missing.
        reason: String,
    },
    /// Writing the downloaded file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ObjectStoreContext {
    /// The object-store context `spec` names, `None` if it names none (a directory, a plain
    /// https tarball, git, …).
    pub fn parse(spec: &str) -> Option<Result<ObjectStoreContext, ContextError>> {
        let bad = |reason: &str| ContextError::BadUrl {
            url: spec.to_string(),
            reason: reason.to_string(),
        };
        let bucket_and_path = |rest: &str| -> Result<(String, String), ContextError> {
            let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket named"));
            }
            let path = path.trim_start_matches('/');
            let path = if path.is_empty() {
                DEFAULT_OBJECT
            } else {
                path
            };
            Ok((bucket.to_string(), path.to_string()))
        };
        if let Some(rest) = spec.strip_prefix("s3://") {
            return Some(
                bucket_and_path(rest).map(|(bucket, key)| ObjectStoreContext::S3 { bucket, key }),
            );
        }
        if let Some(rest) = spec.strip_prefix("gs://") {
            return Some(
                bucket_and_path(rest)
                    .map(|(bucket, path)| ObjectStoreContext::Gcs { bucket, path }),
            );
        }
        let rest = spec.strip_prefix("https://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let account = AZURE_BLOB_SUFFIXES
            .iter()
            .find_map(|s| host.strip_suffix(s))
            .filter(|a| !a.is_empty() && !a.contains('.'))?;
        // A URL carrying a shared access signature is its own credential: a plain download.
        if path
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("sig=")))
        {
            return None;
        }
        let path = path.split(['?', '#']).next().unwrap_or_default();
        Some(match path.split_once('/') {
            Some((container, blob)) if !container.is_empty() => Ok(ObjectStoreContext::AzureBlob {
                host: host.to_string(),
                account: account.to_string(),
                container: container.to_string(),
                path: if blob.is_empty() { DEFAULT_OBJECT } else { blob }.to_string(),
            }),
            _ => Err(bad("an Azure Blob context names a container and a blob: https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH")),
        })
    }

    /// kaniko's `--bucket`: a bucket name (the GCS object `context.tar.gz` in it), or a URL.
    pub fn from_bucket_flag(bucket: &str) -> Result<ObjectStoreContext, ContextError> {
        let spec = if bucket.contains("://") {
            bucket.to_string()
        } else {
            format!("gs://{bucket}")
        };
        Self::parse(&spec).unwrap_or_else(|| {
            Err(ContextError::BadUrl {
                url: bucket.to_string(),
                reason: "--bucket takes a GCS bucket name or an s3://, gs:// or Azure Blob URL"
                    .to_string(),
            })
        })
    }

    /// The context as a URL, for messages.
    pub fn url(&self) -> String {
        match self {
            ObjectStoreContext::S3 { bucket, key } => format!("s3://{bucket}/{key}"),
            ObjectStoreContext::Gcs { bucket, path } => format!("gs://{bucket}/{path}"),
            ObjectStoreContext::AzureBlob {
                host,
                container,
                path,
                ..
            } => format!("https://{host}/{container}/{path}"),
        }
    }
}

/// Lets object_store use kiln's HTTP client (its TLS roots and CAs).
#[derive(Debug)]
struct KilnHttp(reqwest::Client);

impl object_store::client::HttpConnector for KilnHttp {
    fn connect(
        &self,
        _options: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}

/// AWS credentials from the SDK's standard chain (the one ECR uses), for object_store.
#[derive(Debug)]
struct AwsChain(aws_credential_types::provider::SharedCredentialsProvider);

#[async_trait::async_trait]
impl object_store::client::CredentialProvider for AwsChain {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let credentials =
            self.0
                .provide_credentials()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: describe_sdk_error(&e).into(),
                })?;
        Ok(Arc::new(object_store::aws::AwsCredential {
            key_id: credentials.access_key_id().to_string(),
            secret_key: credentials.secret_access_key().to_string(),
            token: credentials.session_token().map(str::to_string),
        }))
    }
}

/// Google access tokens from kiln's chain (the one its registries use), for object_store.
#[derive(Debug)]
struct GoogleChain(Arc<CloudCredentials>);

#[async_trait::async_trait]
impl object_store::client::CredentialProvider for GoogleChain {
    type Credential = object_store::gcp::GcpCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let (bearer, _) =
            google_token(&self.0)
                .await
                .map_err(|reason| object_store::Error::Generic {
                    store: "GCS",
                    source: reason.into(),
                })?;
        Ok(Arc::new(object_store::gcp::GcpCredential { bearer }))
    }
}

/// Microsoft Entra tokens for Azure Storage, for object_store.
#[derive(Debug)]
struct AzureChain(Arc<CloudCredentials>);

#[async_trait::async_trait]
impl object_store::client::CredentialProvider for AzureChain {
    type Credential = object_store::azure::AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let (token, _) = entra_token(&self.0, "https://storage.azure.com/.default")
            .await
            .map_err(|reason| object_store::Error::Generic {
                store: "MicrosoftAzure",
                source: reason.into(),
            })?;
        Ok(Arc::new(object_store::azure::AzureCredential::BearerToken(
            token,
        )))
    }
}

/// The store and the object's path in it.
async fn open(
    context: &ObjectStoreContext,
    providers: &Arc<CloudCredentials>,
) -> Result<(Box<dyn ObjectStore>, String), String> {
    match context {
        ObjectStoreContext::S3 { bucket, key } => {
            let config = aws_config(None).await;
            let region = config
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".to_string());
            let credentials = config
                .credentials_provider()
                .ok_or("the AWS SDK has no credential chain")?;
            // kaniko's variables for S3-compatible stores, then the SDK's own.
            let endpoint = env("S3_ENDPOINT")
                .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                .or_else(|| env("AWS_ENDPOINT_URL"));
            let http = match &endpoint {
                Some(e) => providers.http_for(e)?,
                None => providers.http_for(&format!("https://s3.{region}.amazonaws.com"))?,
            };
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&region)
                .with_credentials(Arc::new(AwsChain(credentials)))
                .with_http_connector(KilnHttp(http));
            if let Some(endpoint) = endpoint {
                let path_style =
                    env("S3_FORCE_PATH_STYLE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
                builder = builder.with_allow_http(endpoint.starts_with("http://"));
                builder = if path_style {
                    builder.with_endpoint(endpoint)
                } else {
                    // Virtual-hosted style, as the AWS SDKs: the bucket in front of the host.
                    let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", &endpoint));
                    builder
                        .with_endpoint(format!("{scheme}://{bucket}.{host}"))
                        .with_virtual_hosted_style_request(true)
                };
            }
            let store = builder.build().map_err(|e| e.to_string())?;
            Ok((Box::new(store), key.clone()))
        }
        ObjectStoreContext::Gcs { bucket, path } => {
            // GOOGLE_BASE_URL (object_store's) moves the endpoint, for emulators.
            let base = env("GOOGLE_BASE_URL")
                .unwrap_or_else(|| "https://storage.googleapis.com".to_string());
            let store = object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_base_url(&base)
                .with_client_options(
                    object_store::ClientOptions::new().with_allow_http(base.starts_with("http://")),
                )
                .with_credentials(Arc::new(GoogleChain(providers.clone())))
                .with_http_connector(KilnHttp(providers.http_for(&base)?))
                .build()
                .map_err(|e| e.to_string())?;
            Ok((Box::new(store), path.clone()))
        }
        ObjectStoreContext::AzureBlob {
            host,
            account,
            container,
            path,
        } => {
            let emulator =
                env("AZURE_STORAGE_USE_EMULATOR").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            // object_store's variables move the endpoint: Azurite's, or any other
            // (`AZURE_STORAGE_ENDPOINT`, e.g. a private endpoint or a proxy).
            let endpoint = if emulator {
                env("AZURITE_BLOB_STORAGE_URL")
                    .unwrap_or_else(|| "http://127.0.0.1:10000".to_string())
            } else {
                env("AZURE_STORAGE_ENDPOINT").unwrap_or_else(|| format!("https://{host}"))
            };
            let mut builder = object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(account)
                .with_container_name(container)
                .with_http_connector(KilnHttp(providers.http_for(&endpoint)?));
            builder = if emulator {
                builder.with_use_emulator(true)
            } else {
                builder.with_endpoint(endpoint)
            };
            // kaniko's variable, then object_store's name for it.
            builder = match env("AZURE_STORAGE_ACCESS_KEY")
                .or_else(|| env("AZURE_STORAGE_ACCOUNT_KEY"))
            {
                Some(key) => builder.with_access_key(key),
                None => builder.with_credentials(Arc::new(AzureChain(providers.clone()))),
            };
            let store = builder.build().map_err(|e| e.to_string())?;
            Ok((Box::new(store), path.clone()))
        }
    }
}

/// Streams `context`'s object into the file `dest` (created or truncated); returns its size.
pub async fn download(
    context: &ObjectStoreContext,
    providers: &Arc<CloudCredentials>,
    dest: &Path,
) -> Result<u64, ContextError> {
    let read_err = |reason: String| ContextError::Read {
        url: context.url(),
        reason,
    };
    let write_err = |source| ContextError::Write {
        path: dest.display().to_string(),
        source,
    };
    let (store, path) = open(context, providers).await.map_err(read_err)?;
    let object = store
        .get(&object_store::path::Path::from(path.as_str()))
        .await
        .map_err(|e| read_err(describe_store_error(&e)))?;
    let mut file = tokio::fs::File::create(dest).await.map_err(write_err)?;
    let mut stream = object.into_stream();
    let mut size = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| read_err(describe_store_error(&e)))?;
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.flush().await.map_err(write_err)?;
    Ok(size)
}

/// object_store's error with its causes, on one line.
fn describe_store_error(error: &object_store::Error) -> String {
    let text = kiln_registry::error::with_causes(error.to_string(), error);
    match error {
        object_store::Error::NotFound { .. } => format!("no such object ({text})"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Option<ObjectStoreContext> {
        ObjectStoreContext::parse(spec).map(|r| r.unwrap())
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse("s3://bucket/dir/ctx.tar.gz"),
            Some(ObjectStoreContext::S3 {
                bucket: "bucket".into(),
                key: "dir/ctx.tar.gz".into()
            })
        );
        assert_eq!(
            parse("gs://bucket"),
            Some(ObjectStoreContext::Gcs {
                bucket: "bucket".into(),
                path: DEFAULT_OBJECT.into()
            })
        );
        assert_eq!(
            parse("https://acct.blob.core.windows.net/ctr/a/b.tar"),
            Some(ObjectStoreContext::AzureBlob {
                host: "acct.blob.core.windows.net".into(),
                account: "acct".into(),
                container: "ctr".into(),
                path: "a/b.tar".into()
            })
        );
        assert_eq!(parse("https://example.com/ctx.tar.gz"), None);
        assert_eq!(
            parse("https://acct.blob.core.windows.net.evil.com/c/p"),
            None
        );
        assert_eq!(parse("dir"), None);
        assert_eq!(
            parse("https://acct.blob.core.windows.net/c/p.tar?sv=1&sig=abc"),
            None
        );
        assert!(ObjectStoreContext::parse("s3://").unwrap().is_err());
        assert!(
            ObjectStoreContext::parse("https://acct.blob.core.windows.net/")
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn bucket_flag() {
        assert_eq!(
            ObjectStoreContext::from_bucket_flag("mybucket")
                .unwrap()
                .url(),
            "gs://mybucket/context.tar.gz"
        );
        assert_eq!(
            ObjectStoreContext::from_bucket_flag("s3://b/k.tar")
                .unwrap()
                .url(),
            "s3://b/k.tar"
        );
        assert!(ObjectStoreContext::from_bucket_flag("ftp://x").is_err());
    }
}
