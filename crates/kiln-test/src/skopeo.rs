//! Running the real `skopeo` client against test registries.

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::error::{Error, IoContext, Result};

use crate::registry::Registry;

/// The skopeo binary.
pub const SKOPEO_BIN: &str = "/usr/bin/skopeo";

/// Upper bound on one skopeo command, so a broken test cannot hang.
const COMMAND_TIMEOUT: &str = "120s";

/// Runs `skopeo --insecure-policy --command-timeout 120s ARGS…` and returns
/// its output, whatever the exit status.
///
/// # Panics
/// If `/usr/bin/skopeo` cannot be started (not installed).
pub fn skopeo<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(SKOPEO_BIN)
        .args(["--insecure-policy", "--command-timeout", COMMAND_TIMEOUT])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SKOPEO_BIN} (apt-get install skopeo): {e}"))
}

/// Like [`skopeo`], but a non-zero exit is an [`Error::Command`] carrying
/// stderr (with `--creds` values redacted); returns stdout.
pub fn skopeo_checked<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = skopeo(&args);
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("skopeo {}", redact_creds(&args)),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Joins args for display, hiding the value after any `--*creds` flag.
fn redact_creds(args: &[String]) -> String {
    let mut shown = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for arg in args {
        if hide_next {
            shown.push("<redacted>".to_string());
            hide_next = false;
        } else if let Some((flag, _)) = arg.split_once('=').filter(|(f, _)| f.ends_with("creds")) {
            shown.push(format!("{flag}=<redacted>"));
        } else {
            hide_next = arg.starts_with("--") && arg.ends_with("creds");
            shown.push(arg.clone());
        }
    }
    shown.join(" ")
}

/// The manifest format a push writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// OCI manifest (and OCI index for multi-platform), unchanged from the layout.
    #[default]
    Oci,
    /// Docker v2 schema 2 (and a Docker manifest list for multi-platform).
    V2s2,
}

/// How [`crate::TestImage::push`] talks to the registry.
#[derive(Clone, Default)]
pub struct PushOptions {
    /// Manifest format to push.
    pub format: ManifestFormat,
    /// `user`, `password` for `--dest-creds`.
    pub creds: Option<(String, String)>,
    /// Override the cert dir (`--dest-cert-dir`); by default a TLS
    /// registry's own (with the client cert for mutual TLS).
    pub cert_dir: Option<PathBuf>,
    /// Push to this `HOST:PORT` instead of the registry's own (e.g. a
    /// [`crate::FaultProxy`] in front of it).
    pub host: Option<String>,
    /// More arguments for `skopeo copy`, e.g. `--retry-times 2`.
    pub extra_args: Vec<String>,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("format", &self.format)
            .field(
                "creds",
                &self.creds.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("cert_dir", &self.cert_dir)
            .field("host", &self.host)
            .field("extra_args", &self.extra_args)
            .finish()
    }
}

impl PushOptions {
    /// Push in `format` with no credentials.
    pub fn new(format: ManifestFormat) -> Self {
        Self {
            format,
            ..Self::default()
        }
    }

    /// Push with these credentials.
    pub fn creds(mut self, user: &str, password: &str) -> Self {
        self.creds = Some((user.into(), password.into()));
        self
    }

    /// Push through `host` (`127.0.0.1:PORT`) instead of the registry's address.
    pub fn via(mut self, host: &str) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Adds arguments to `skopeo copy`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Use this cert dir (`ca.crt`, `client.cert`, `client.key`).
    pub fn cert_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cert_dir = Some(dir.into());
        self
    }
}

/// `skopeo copy [--all] --format … oci:LAYOUT:latest docker://HOST/REPO:TAG`.
pub(crate) fn push_layout(
    oci_reference: &str,
    multi_platform: bool,
    registry: &Registry,
    repo_tag: &str,
    options: &PushOptions,
) -> Result<String> {
    let digest_dir = tempfile::Builder::new()
        .prefix("kiln-test-digest-")
        .tempdir()
        .context(|| "create digest temp dir".into())?;
    let digest_file = digest_dir.path().join("digest");
    let mut args: Vec<String> = vec!["copy".into(), "--quiet".into()];
    if multi_platform {
        args.push("--all".into());
    }
    args.push("--format".into());
    args.push(
        match options.format {
            ManifestFormat::Oci => "oci",
            ManifestFormat::V2s2 => "v2s2",
        }
        .into(),
    );
    args.push("--digestfile".into());
    args.push(digest_file.to_string_lossy().into_owned());
    if let Some((user, password)) = &options.creds {
        args.push("--dest-creds".into());
        args.push(format!("{user}:{password}"));
    }
    let cert_dir = options
        .cert_dir
        .as_deref()
        .or_else(|| registry.client_cert_dir())
        .or_else(|| registry.cert_dir());
    match cert_dir {
        Some(dir) if registry.is_tls() => {
            args.push(format!("--dest-cert-dir={}", dir.display()));
            args.push("--dest-tls-verify=true".into());
        }
        _ => args.push("--dest-tls-verify=false".into()),
    }
    args.extend(options.extra_args.iter().cloned());
    args.push(oci_reference.to_owned());
    let host = options.host.clone().unwrap_or_else(|| registry.host());
    args.push(format!("docker://{host}/{repo_tag}"));
    skopeo_checked(&args)?;
    let digest = fs::read_to_string(&digest_file).path_context(&digest_file)?;
    Ok(digest.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creds_are_redacted_in_both_spellings() {
        let args: Vec<String> = ["copy", "--dest-creds", "u:p", "--src-creds=a:b", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            redact_creds(&args),
            "copy --dest-creds <redacted> --src-creds=<redacted> x"
        );
    }
}
