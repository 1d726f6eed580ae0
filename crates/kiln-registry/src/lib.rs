/*!
kiln's registry client: it pulls and pushes images with the credentials docker and kaniko users
already have.

- [`reference`](mod@reference): image references, normalised as docker does (`busybox` →
  `docker.io/library/busybox:latest`).
- [`credentials`]: docker's `config.json` (`auths`, `credHelpers`, `credsStore`) and
  `docker-credential-*` helpers; secrets wrapped in [`credentials::Secret`], never printed.
- [`auth`]: `WWW-Authenticate` challenges, basic auth and bearer tokens (Docker Hub's flow),
  cached per registry and scope.
- [`transport`]: per-registry HTTPS settings (CA files, client certificates, skipping
  verification, plain HTTP only when asked) from kaniko's flags.
- [`error`]: errors naming the request, the status and the registry's code and message.
- [`client`]: [`Client`] pulls (manifests, index resolution by platform, blobs streamed and
  verified, mirrors and registry maps) and pushes (HEAD skip, cross-repository mount,
  monolithic or chunked uploads, manifests after blobs), with retries and a [`Reporter`].

Must not depend on: kiln-fs, kiln-sandbox, kiln-build, kiln (only kiln-oci).
*/
#![deny(missing_docs)]

pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
/// Image references (defined in kiln-oci, where the Dockerfile frontend shares them).
pub mod reference {
    pub use kiln_oci::reference::*;
}
pub mod transport;

pub use client::{
    BlobOutcome, BlobSink, Client, Download, RegistryOptions, Reporter, ResolvedImage,
};
pub use credentials::{Credential, DockerConfig, Secret};
pub use error::RegistryError;
pub use reference::Reference;
