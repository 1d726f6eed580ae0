/*!
`kiln-build` is kiln's build engine: from a Dockerfile, a build context and options to an image
in the local content store, then to its outputs (registries, a docker-archive, an OCI layout).

- [`Builder`] plans the Dockerfile (with the base images' ENV and ONBUILD), builds the needed
  stages wave by wave (independent stages in parallel threads), runs RUN steps in the sandbox,
  snapshots them by stat-index diff, writes layers into the store, and assembles the image.
- [`copy`] holds COPY/ADD semantics; [`context`] the build context and `.dockerignore`;
  [`image`] the config semantics of metadata instructions; [`paths`] in-root path resolution;
  [`users`] `/etc/passwd` and `/etc/group` lookups in the image.
- `cache` (private) is the build cache: a key per file-changing step, computed before it
  runs; entries in the kiln dir and, with `--cache=true`, in a registry repository.
- [`output`] writes a built image: push (blobs first, then the manifest), docker-archive, OCI
  layout.

The engine never prints: it reports through [`Reporter`].

Depends on kiln-dockerfile, kiln-oci, kiln-registry, kiln-fs and kiln-sandbox; only the `kiln`
binary depends on it.
*/
#![deny(missing_docs)]

mod cache;
pub mod context;
pub mod copy;
mod engine;
mod error;
mod git;
pub mod image;
mod layers;
mod options;
pub mod output;
pub mod paths;
mod snapshotter;
mod ssh_agent;
mod stage;
mod types;
pub mod users;
pub mod warm;

pub use engine::Builder;
pub use error::BuildError;
pub use options::{
    BuildOptions, CacheOptions, ImageFormat, Isolation, Quiet, RegistryCacheOptions, Reporter,
    SecretSource, SnapshotStats, SshSource, StepDone, StepInfo,
};
pub use types::{BuiltImage, Layer, StageImage};
