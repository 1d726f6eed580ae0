//! What a build can fail with. Every variant says where (file:line:column, flag, image or
//! request) and what to do; the binary adds no more than a prefix.

use std::path::PathBuf;

/// A failed build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse or plan.
    #[error(transparent)]
    Dockerfile(#[from] kiln_dockerfile::Error),
    /// An instruction cannot be carried out (a missing COPY source, an unknown user, …).
    #[error("{at}: {keyword}: {message}")]
    Instruction {
        /// `Dockerfile:12:1` (or the base image for an ONBUILD trigger).
        at: String,
        /// The instruction keyword.
        keyword: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A RUN step exited non-zero or was killed.
    #[error("{at}: RUN in stage {stage}: `{command}` {status}\n{tail}")]
    RunFailed {
        /// `Dockerfile:12:1`.
        at: String,
        /// The stage's name or number.
        stage: String,
        /// The command as written.
        command: String,
        /// `exited with status 2` or `was killed by signal 9`.
        status: String,
        /// The last lines of its output.
        tail: String,
    },
    /// A feature kiln does not have yet; the build would silently differ without it.
    #[error("{at}: {what} is not supported yet")]
    Unsupported {
        /// Where it is used.
        at: String,
        /// What it is.
        what: String,
    },
    /// A registry request failed.
    #[error("{what}: {source}")]
    Registry {
        /// What kiln was doing (`pulling busybox:1.36`).
        what: String,
        /// The request that failed.
        #[source]
        source: Box<kiln_registry::RegistryError>,
    },
    /// The build context cannot be read or prepared.
    #[error("build context {context}: {message}")]
    Context {
        /// The context as given.
        context: String,
        /// What is wrong.
        message: String,
    },
    /// The Dockerfile cannot be found, fetched or read.
    #[error("Dockerfile {spec}: {message}")]
    DockerfileSource {
        /// The Dockerfile as given (a path, `-` for stdin, or a URL).
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// The RUN sandbox or a step's overlay failed to start (not the command: see
    /// [`BuildError::RunFailed`]). `at` names the instruction.
    #[error("{at}: {source}")]
    Sandbox {
        /// Where.
        at: String,
        /// Why.
        #[source]
        source: kiln_sandbox::SandboxError,
    },
    /// The build was told to stop (kiln's SIGTERM/SIGINT handling called
    /// [`kiln_sandbox::stop::stop_all_steps`]); `at` names the instruction it stopped at.
    #[error("{at}: stopped")]
    Stopped {
        /// Where.
        at: String,
    },
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What kiln was doing.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Applying a layer failed.
    #[error("applying layer {digest}: {source}")]
    Apply {
        /// The layer.
        digest: String,
        /// Why.
        #[source]
        source: kiln_fs::apply::ApplyError,
    },
    /// Writing a layer failed.
    #[error("{at}: writing the layer: {source}")]
    Layer {
        /// The step.
        at: String,
        /// Why.
        #[source]
        source: kiln_fs::layer::LayerError,
    },
    /// Scanning the rootfs for changes failed.
    #[error("{at}: scanning the root file system: {source}")]
    Snapshot {
        /// The step.
        at: String,
        /// Why.
        #[source]
        source: kiln_fs::snapshot::SnapshotError,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] kiln_fs::store::StoreError),
    /// Writing an output failed.
    #[error("writing {what}: {source}")]
    Output {
        /// Which output.
        what: String,
        /// Why.
        #[source]
        source: kiln_oci::Error,
    },
    /// An option is invalid (the binary maps these to the flag).
    #[error("{0}")]
    Options(String),
}

impl BuildError {
    /// A registry failure while doing `what`.
    pub(crate) fn registry(
        what: impl Into<String>,
    ) -> impl FnOnce(kiln_registry::RegistryError) -> BuildError {
        let what = what.into();
        move |source| BuildError::Registry {
            what,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> BuildError {
        let path = path.into();
        move |source| BuildError::Io { what, path, source }
    }
}
