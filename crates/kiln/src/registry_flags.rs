//! kaniko's registry flags, shared by every command that talks to registries.

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args};
use kiln_cloud::{CloudCredentials, ProviderSet};
use kiln_registry::credentials::{default_config_paths, AUTH_CONFIG_VARIABLE};
use kiln_registry::{DockerConfig, RegistryOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Booleans take kaniko's `--flag`, `--flag=true` and `--flag=false`.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct RegistryFlags {
    /// Push to destinations over plain HTTP when they do not answer HTTPS.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    insecure: bool,
    /// Pull over plain HTTP when the registry does not answer HTTPS.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    insecure_pull: bool,
    /// A registry (host[:port]) that may use plain HTTP, both ways. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Do not verify TLS certificates of push destinations.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    skip_tls_verify: bool,
    /// Do not verify TLS certificates when pulling.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    skip_tls_verify_pull: bool,
    /// A registry whose TLS certificate is not verified. Repeatable.
    #[arg(long = "skip-tls-verify-registry", value_name = "HOST")]
    skip_tls_verify_registries: Vec<String>,
    /// Trust an extra CA (PEM file) for a registry: HOST=PATH. Repeatable.
    #[arg(long = "registry-certificate", value_name = "HOST=PATH")]
    registry_certificates: Vec<String>,
    /// A client certificate and key (PEM) for mutual TLS: HOST=CERT,KEY. Repeatable.
    #[arg(long = "registry-client-cert", value_name = "HOST=CERT,KEY")]
    registry_client_certs: Vec<String>,
    /// A mirror for Docker Hub images (host[/path]), tried in order. Repeatable.
    #[arg(long = "registry-mirror", value_name = "HOST[/PATH]")]
    registry_mirrors: Vec<String>,
    /// Do not fall back to Docker Hub when every mirror fails.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", require_equals = true)]
    skip_default_registry_fallback: bool,
    /// Use another registry instead of one: ORIG=NEW[;ORIG2=NEW2…] (one ORIG may be given
    /// several times: tried in order). Repeatable.
    #[arg(long = "registry-map", value_name = "ORIG=NEW")]
    registry_maps: Vec<String>,
    /// Retries of a failed push request.
    #[arg(long, value_name = "N", default_value_t = 3)]
    push_retry: u32,
    /// Retries of a failed pull request.
    #[arg(long, value_name = "N", default_value_t = 3)]
    image_download_retry: u32,
    /// Longest wait for a registry's next bytes (a Go duration: 120s, 2m) before the request
    /// is given up as stalled and retried.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    registry_read_timeout: String,
}

fn split_pair<'a>(flag: &str, value: &'a str) -> Result<(&'a str, &'a str)> {
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => bail!(
            "--{flag} {value:?}: expected {}",
            if flag == "registry-client-cert" {
                "HOST=CERT,KEY"
            } else {
                "KEY=VALUE"
            }
        ),
    }
}

impl RegistryFlags {
    /// The registry client options these flags describe. Files named by flags are checked
    /// here, before any build or transfer work.
    pub(crate) fn options(&self) -> Result<RegistryOptions> {
        // kaniko's variables add to the flags.
        let mut mirrors = self.registry_mirrors.clone();
        mirrors.extend(
            std::env::var("KANIKO_REGISTRY_MIRROR")
                .ok()
                .filter(|m| !m.is_empty()),
        );
        let mut map_values = self.registry_maps.clone();
        map_values.extend(
            std::env::var("KANIKO_REGISTRY_MAP")
                .ok()
                .filter(|m| !m.is_empty()),
        );
        let mut options = RegistryOptions {
            mirrors,
            skip_default_registry_fallback: self.skip_default_registry_fallback,
            push_retries: self.push_retry,
            pull_retries: self.image_download_retry,
            ..RegistryOptions::default()
        };
        let t = &mut options.transport;
        t.insecure_push = self.insecure;
        t.insecure_pull = self.insecure_pull;
        t.insecure_registries = self.insecure_registries.clone();
        t.skip_verify_push = self.skip_tls_verify;
        t.skip_verify_pull = self.skip_tls_verify_pull;
        t.skip_verify_registries = self.skip_tls_verify_registries.clone();
        for value in &self.registry_certificates {
            let (host, path) = split_pair("registry-certificate", value)?;
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!(
                    "--registry-certificate {value:?}: {} is not a readable file",
                    path.display()
                );
            }
            t.ca_files.entry(host.to_string()).or_default().push(path);
        }
        for value in &self.registry_client_certs {
            let (host, files) = split_pair("registry-client-cert", value)?;
            let Some((cert, key)) = files.split_once(',') else {
                bail!("--registry-client-cert {value:?}: expected HOST=CERT,KEY");
            };
            for file in [cert, key] {
                if !PathBuf::from(file).is_file() {
                    bail!("--registry-client-cert {value:?}: {file} is not a readable file");
                }
            }
            t.client_certs
                .insert(host.to_string(), (PathBuf::from(cert), PathBuf::from(key)));
        }
        let mut maps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for value in &map_values {
            for pair in value.split(';').filter(|p| !p.is_empty()) {
                let (from, to) = split_pair("registry-map", pair)?;
                maps.entry(from.to_string())
                    .or_default()
                    .push(to.to_string());
            }
        }
        options.registry_map = maps;
        t.connect_timeout = Some(Duration::from_secs(30));
        let read_timeout = crate::units::go_duration(&self.registry_read_timeout)
            .with_context(|| format!("--registry-read-timeout {:?}", self.registry_read_timeout))?;
        if read_timeout.is_zero() {
            bail!("--registry-read-timeout 0: a registry must get some time to answer");
        }
        t.read_timeout = Some(read_timeout);
        Ok(options)
    }
}

/// The docker config kiln uses: `$DOCKER_CONFIG/config.json`, `/kaniko/.docker/config.json`,
/// `~/.docker/config.json`, the first that exists, with `providers` (the clouds' built-in
/// credentials) for what it does not give. A malformed file stops kiln before any work.
/// `DOCKER_AUTH_CONFIG`'s `auths` come first; a malformed value is warned of and left out, as
/// docker does (a GitLab runner's variable for its own pulls may reach the job).
pub(crate) fn docker_config(providers: Arc<CloudCredentials>) -> Result<DockerConfig> {
    let mut config =
        DockerConfig::locate(&default_config_paths()).context("reading registry credentials")?;
    if let Some(value) = std::env::var(AUTH_CONFIG_VARIABLE)
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        match config.add_variable_auths(&value) {
            Ok(taken) => {
                tracing::debug!(
                    "{AUTH_CONFIG_VARIABLE}: logins for {} registries, before the docker config's",
                    taken.registries
                );
                if taken.ignored_helpers {
                    tracing::info!(
                        "{AUTH_CONFIG_VARIABLE}: its credHelpers and credsStore are not read \
                         (only its auths, as docker does)"
                    );
                }
            }
            Err(e) => tracing::warn!("{e}; going on without it"),
        }
    }
    Ok(config.with_provider(providers))
}

/// The clouds' built-in credential providers in `enabled`, reaching the clouds with
/// `registry`'s TLS settings.
pub(crate) fn cloud_credentials(
    enabled: ProviderSet,
    registry: &RegistryOptions,
) -> Arc<CloudCredentials> {
    Arc::new(CloudCredentials::new(enabled, registry.transport.clone()))
}
