/*!
Real services for kiln's tests, on `127.0.0.1` only: never mocks.

kiln's registry client is tested against the real Distribution registry
(`/usr/bin/docker-registry`, 2.8) and real clients (`skopeo`). This crate
starts and stops those services so that each test stays short:

- [`Registry`] runs `docker-registry serve` with a generated config: plain
  HTTP, TLS or mutual TLS ([`RegistryOptions`]), htpasswd basic auth, or token
  auth backed by a [`TokenServer`].
- [`TokenServer`] issues Docker-Hub-style bearer tokens (ES256 or RS256 JWTs
  with an `x5c` header) from `GET /token` and the OAuth2 `POST /token` form,
  and records every request so tests can assert scopes and retries.
- [`FaultProxy`] sits between a client and a plain-HTTP registry and injects
  failures into chosen requests: cut connections, 503, 429, delays.
- [`TestImage`] writes a tiny OCI layout by hand and [`skopeo`] pushes it, as
  OCI or Docker v2s2, single- or multi-platform.
- [`Moto`] runs moto's AWS emulator (`moto_server`: S3, STS, ECR on one
  port) and documents what its ECR token and STS web identity return.

Every process is started with a known PID and killed and reaped on drop;
every thread is joined on drop.

```no_run
use kiln_test::{Registry, RegistryOptions, TestImage, ManifestFormat, PushOptions};

let registry = Registry::start(RegistryOptions::plain().htpasswd("alice", "s3cret"))?;
let image = TestImage::single(b"hello")?;
let digest = image.push(&registry, "demo/app:v1", &PushOptions::new(ManifestFormat::Oci)
    .creds("alice", "s3cret"))?;
assert!(digest.starts_with("sha256:"));
# Ok::<(), kiln_test::Error>(())
```

This is a dev-dependency only (`publish = false`). Must not depend on: any
kiln crate but kiln-oci, for its RFC 3339 times (it sits below all the others, so
any of them may use it in tests; kiln-oci's own tests do not).
*/
#![deny(missing_docs)]

mod base;
mod certs;
mod cloud_emulators;
mod error;
mod http;
mod image;
mod listener;
mod moto;
mod proxy;
mod registry;
mod skopeo;
mod token;

use std::net::TcpListener;

pub use base::{
    busybox_layer, write_docker_config, BaseImage, LayerTar, BUSYBOX_BIN, GROUP, PASSWD,
};
pub use certs::{CertUse, IssuedCert, KeyAlgorithm, TestCa};
pub use cloud_emulators::{
    azurite_dir, generate_account_key, https_request, shared_key_authorization,
    verify_self_signed_jwt, AcrExchange, AcrFront, AcrRequest, AwsContainerCredentials, Azurite,
    AzuriteOptions, ContainerCredentialsRequest, EntraAccessToken, EntraApp, EntraClientAuth,
    EntraId, EntraOptions, EntraRequest, FederationPool, GoogleAccessToken, GoogleCloud,
    GoogleEndpoint, GoogleOptions, GoogleRequest, GoogleTokenSource, ServiceAccountKey,
    ACR_REFRESH_TOKEN_USER, ACR_TOKEN_AUDIENCES, AZURE_STORAGE_VERSION, AZURITE_DEV_ACCOUNT,
    AZURITE_DEV_KEY, AZURITE_DIR, AZURITE_DIR_ENV, CLIENT_ASSERTION_TYPE, CLOUD_PLATFORM_SCOPE,
    FEDERATED_TOKEN_AUDIENCE, GOOGLE_REGISTRY_USER, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT,
};
pub use error::{Error, Result};
pub use http::{http_get, http_request, HttpResponse};
pub use image::{ImageBlobs, Platform, TestImage};
pub use moto::{AwsCredentials, EcrAuthorization, Moto, MOTO_SERVER_BIN};
pub use proxy::{Fault, FaultAction, FaultProxy, SeenRequest};
pub use registry::{Registry, RegistryOptions, TlsMode, REGISTRY_BIN};
pub use skopeo::{skopeo, skopeo_checked, ManifestFormat, PushOptions, SKOPEO_BIN};
pub use token::{
    SigningAlgorithm, TokenAuthOptions, TokenFields, TokenRequest, TokenServer, TokenUser,
};

/// Returns a TCP port that was free on `127.0.0.1` a moment ago (the OS
/// picks it). Another process may take it before you bind it; callers that
/// spawn servers retry on "address already in use".
pub fn free_port() -> Result<u16> {
    use error::IoContext as _;
    let listener =
        TcpListener::bind("127.0.0.1:0").context(|| "bind 127.0.0.1:0 for a free port".into())?;
    let port = listener
        .local_addr()
        .context(|| "read a free port".into())?
        .port();
    Ok(port)
}
