//! Credentials as docker and kaniko users already have them: `config.json` (`auths`,
//! `credHelpers`, `credsStore`) found in `$DOCKER_CONFIG`, `/kaniko/.docker/` or `~/.docker/`,
//! and `docker-credential-*` helpers speaking docker's stdin/stdout protocol.
//!
//! Credentials from elsewhere (the clouds' registries, built into the binary) come through a
//! [`CredentialProvider`] attached with [`DockerConfig::with_provider`]: it is asked when the
//! config names a helper that is not installed, and when the config has nothing for a registry.
//!
//! Secret values live in [`Secret`], whose `Debug` and `Display` never show them.

use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// A secret string: shown as `<redacted>` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What to authenticate to one registry with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// No credentials: anonymous token or no auth.
    #[default]
    Anonymous,
    /// A user name and password (or access token used as a password).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    IdentityToken(Secret),
    /// A bearer token sent as is (`registrytoken`).
    RegistryToken(Secret),
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// A config file that exists but cannot be read.
    #[error("cannot read docker config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A config file that is not valid JSON of docker's shape.
    #[error("docker config {path} is not valid: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong (never includes secret values).
        reason: String,
    },
    /// The `DOCKER_AUTH_CONFIG` variable is not a docker auth config.
    #[error("{AUTH_CONFIG_VARIABLE} is not a valid docker auth config: {reason}")]
    MalformedVariable {
        /// What is wrong (never includes secret values).
        reason: String,
    },
    /// A credential helper named by the config is not installed (no `docker-credential-NAME`
    /// on `PATH`).
    #[error(
        "credential helper docker-credential-{helper} (named by the docker config for {registry}) \
         is not installed, and kiln has no built-in provider in its place"
    )]
    HelperNotFound {
        /// The helper's name (after `docker-credential-`).
        helper: String,
        /// The registry asked for.
        registry: String,
    },
    /// A built-in credential provider (a cloud's) could not give credentials.
    #[error("registry {registry}: {provider} credentials: {reason}")]
    Provider {
        /// The provider, as users know it (`Amazon ECR`, `Google`, `Azure Container Registry`).
        provider: String,
        /// The registry asked for.
        registry: String,
        /// What it lacked and what to set (never a secret).
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} failed for {registry}: {reason}")]
    Helper {
        /// The helper's name (after `docker-credential-`).
        helper: String,
        /// The registry asked for.
        registry: String,
        /// What happened (the helper's stderr, never its stdout, which holds secrets).
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthEntry")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A boxed future of a [`CredentialProvider`].
pub type ProviderFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Credential>, CredentialError>> + Send + 'a>>;

/// Credentials that do not come from the docker config: the built-in providers of the clouds'
/// registries. kiln-registry only asks; what a provider reads is its own business.
pub trait CredentialProvider: Send + Sync {
    /// Credentials for `registry` (a host, with its port if any). `helper` is the name of a
    /// helper a `credHelpers` entry names for this registry but that is not installed: a
    /// provider that stands in for that helper answers for the registry whatever its name.
    /// With `helper` `None`, a provider answers only for the registries it knows by name.
    /// `Ok(None)`: not one of its registries, or not a helper it stands in for.
    fn credential<'a>(&'a self, registry: &'a str, helper: Option<&'a str>) -> ProviderFuture<'a>;

    /// Whether it stands in for the credential helper `docker-credential-<helper>`.
    fn replaces_helper(&self, helper: &str) -> bool;
}

/// What the docker config says about one registry.
#[derive(Debug)]
pub enum ConfigAnswer {
    /// A credential (possibly [`Credential::Anonymous`] from an empty entry or a helper that
    /// had none).
    Found(Credential),
    /// The config names a helper that is not installed.
    MissingHelper {
        /// The helper's name (after `docker-credential-`).
        helper: String,
        /// Whether a `credHelpers` entry named it for this registry (else it is the
        /// `credsStore`, named for every registry).
        for_this_registry: bool,
    },
    /// The config has no entry for the registry.
    NoEntry,
}

/// The variable docker (from 28) and the kaniko fork read registry logins from: a JSON document
/// with a docker config's `auths`, which come before the config file for their registries.
pub const AUTH_CONFIG_VARIABLE: &str = "DOCKER_AUTH_CONFIG";

/// What [`DockerConfig::add_variable_auths`] took from the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableAuths {
    /// How many `auths` entries.
    pub registries: usize,
    /// Whether it also had `credHelpers` or `credsStore`, which are not read from it (docker
    /// reads only `auths` there; a GitLab runner's variable may have them for its own pulls).
    pub ignored_helpers: bool,
}

/// A loaded docker `config.json`.
#[derive(Default)]
pub struct DockerConfig {
    /// Where it was read from (`None`: no config file found).
    pub path: Option<PathBuf>,
    file: ConfigFile,
    /// `auths` from [`AUTH_CONFIG_VARIABLE`], asked before `file`.
    variable_auths: BTreeMap<String, AuthEntry>,
    helper_dir: Option<PathBuf>,
    provider: Option<Arc<dyn CredentialProvider>>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("path", &self.path)
            .field("file", &self.file)
            .field(
                "variable_auths",
                &self.variable_auths.keys().collect::<Vec<_>>(),
            )
            .field("helper_dir", &self.helper_dir)
            .field("provider", &self.provider.is_some())
            .finish()
    }
}

/// The places docker config files are looked for, in order: `$DOCKER_CONFIG/config.json`,
/// `/kaniko/.docker/config.json`, `~/.docker/config.json`.
pub fn default_config_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        paths.push(PathBuf::from(dir).join("config.json"));
    }
    paths.push(PathBuf::from("/kaniko/.docker/config.json"));
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        paths.push(PathBuf::from(home).join(".docker").join("config.json"));
    }
    paths
}

/// The keys under which docker may have stored Docker Hub credentials.
const DOCKER_HUB_KEYS: [&str; 5] = [
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
    "https://registry-1.docker.io",
];

fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The entry of `auths` for `registry`: its own key, else a key that names it as a URL
/// (`https://host/v1/`), with Docker Hub's several keys.
fn auth_entry<'a>(auths: &'a BTreeMap<String, AuthEntry>, registry: &str) -> Option<&'a AuthEntry> {
    if is_docker_hub(registry) {
        if let Some(entry) = DOCKER_HUB_KEYS.iter().find_map(|k| auths.get(*k)) {
            return Some(entry);
        }
    }
    auths.get(registry).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| {
                hostname_of_key(k) == registry
                    || (is_docker_hub(registry) && is_docker_hub(hostname_of_key(k)))
            })
            .map(|(_, v)| v)
    })
}

/// A docker config's JSON, with every `auth` checked to be base64 of `user:password`; the
/// error says what is wrong and where, never a value.
fn parse_config(bytes: &[u8]) -> Result<ConfigFile, String> {
    let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| json_error_reason(&e))?;
    for (key, entry) in &file.auths {
        if let Some(auth) = &entry.auth {
            decode_auth(auth).map_err(|reason| format!("auths[{key:?}].auth: {reason}"))?;
        }
    }
    Ok(file)
}

/// docker's `ConvertToHostname`: `https://host:5000/v2/` → `host:5000` (how docker config keys
/// and registry URLs given by users name a registry).
pub fn hostname_of_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

impl DockerConfig {
    /// Loads the first config file that exists among `paths` (see [`default_config_paths`]).
    /// No file at all is not an error: every registry is then anonymous.
    pub fn locate(paths: &[PathBuf]) -> Result<DockerConfig, CredentialError> {
        for path in paths {
            match std::fs::read(path) {
                Ok(bytes) => return Self::from_bytes(path, &bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::IsADirectory || path.is_dir() => {
                    return Err(CredentialError::Malformed {
                        path: path.clone(),
                        reason: "it is a directory, not a file (mount the secret's config.json item as a file)".into(),
                    })
                }
                Err(source) => {
                    return Err(CredentialError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(DockerConfig::default())
    }

    /// Parses a config file's bytes.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<DockerConfig, CredentialError> {
        let file = parse_config(bytes).map_err(|reason| CredentialError::Malformed {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(DockerConfig {
            path: Some(path.to_path_buf()),
            file,
            variable_auths: BTreeMap::new(),
            helper_dir: None,
            provider: None,
        })
    }

    /// Puts the `auths` of `value`, the [`AUTH_CONFIG_VARIABLE`] variable's, before the file's
    /// entries: for a registry they name, they win over the file's `auths`, `credHelpers` and
    /// `credsStore`, as docker's. A value that is not one (bad JSON, an `auth` that is not
    /// base64 of `user:password`) is an error naming the variable and the place, never a value;
    /// nothing of it is then used.
    pub fn add_variable_auths(&mut self, value: &str) -> Result<VariableAuths, CredentialError> {
        let parsed = parse_config(value.as_bytes())
            .map_err(|reason| CredentialError::MalformedVariable { reason })?;
        let taken = VariableAuths {
            registries: parsed.auths.len(),
            ignored_helpers: !parsed.cred_helpers.is_empty() || parsed.creds_store.is_some(),
        };
        self.variable_auths = parsed.auths;
        Ok(taken)
    }

    /// Asks `provider` for what the config does not give (see [`CredentialProvider`]).
    pub fn with_provider(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The provider attached with [`DockerConfig::with_provider`].
    pub fn provider(&self) -> Option<&Arc<dyn CredentialProvider>> {
        self.provider.as_ref()
    }

    /// Looks credential helpers up in `dir` instead of `PATH` (tests).
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.helper_dir = Some(dir.into());
        self
    }

    /// Whether the file has any entry (auth, helper or store) that applies to `registry`.
    pub fn has_entry_for(&self, registry: &str) -> bool {
        self.file.creds_store.is_some()
            || self.helper_for(registry).is_some()
            || auth_entry(&self.file.auths, registry).is_some()
            || auth_entry(&self.variable_auths, registry).is_some()
    }

    fn helper_for(&self, registry: &str) -> Option<&str> {
        let keys: Vec<&str> = if is_docker_hub(registry) {
            DOCKER_HUB_KEYS.to_vec()
        } else {
            vec![registry]
        };
        keys.iter()
            .find_map(|k| self.file.cred_helpers.get(*k))
            .map(String::as_str)
    }

    /// The credential for `registry` (a host, `docker.io` for Docker Hub), with docker's
    /// precedence: its `credHelpers` entry, else the `credsStore`, else `auths`, else anonymous.
    /// A helper that is not installed is an error here; [`DockerConfig::lookup`] tells it apart.
    pub fn credential_for(&self, registry: &str) -> Result<Credential, CredentialError> {
        match self.lookup(registry)? {
            ConfigAnswer::Found(credential) => Ok(credential),
            ConfigAnswer::NoEntry => Ok(Credential::Anonymous),
            ConfigAnswer::MissingHelper { helper, .. } => Err(CredentialError::HelperNotFound {
                helper,
                registry: registry.to_string(),
            }),
        }
    }

    /// What the config says about `registry`, with docker's precedence (see
    /// [`DockerConfig::credential_for`]); a named helper that is not installed is
    /// [`ConfigAnswer::MissingHelper`], for a [`CredentialProvider`] to stand in for.
    pub fn lookup(&self, registry: &str) -> Result<ConfigAnswer, CredentialError> {
        if let Some(entry) = auth_entry(&self.variable_auths, registry) {
            return Ok(ConfigAnswer::Found(Self::entry_credential(entry)));
        }
        let helper = match self.helper_for(registry) {
            Some(helper) => Some((helper, true)),
            None => self.file.creds_store.as_deref().map(|store| (store, false)),
        };
        if let Some((helper, for_this_registry)) = helper {
            return match self.run_helper(helper, registry)? {
                Some(credential) => Ok(ConfigAnswer::Found(credential)),
                None => Ok(ConfigAnswer::MissingHelper {
                    helper: helper.to_string(),
                    for_this_registry,
                }),
            };
        }
        Ok(match auth_entry(&self.file.auths, registry) {
            Some(entry) => ConfigAnswer::Found(Self::entry_credential(entry)),
            None => ConfigAnswer::NoEntry,
        })
    }

    fn entry_credential(entry: &AuthEntry) -> Credential {
        if let Some(token) = entry.registrytoken.as_deref().filter(|t| !t.is_empty()) {
            return Credential::RegistryToken(Secret::new(token));
        }
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Credential::IdentityToken(Secret::new(token));
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            // Checked when the file was loaded.
            if let Ok((username, password)) = decode_auth(auth) {
                return Credential::Basic {
                    username,
                    password: Secret::new(password),
                };
            }
        }
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Credential::Basic {
                username: username.clone(),
                password: Secret::new(password.clone()),
            };
        }
        Credential::Anonymous
    }

    /// Runs `docker-credential-<helper> get` with the server URL on stdin, as docker does.
    /// `None`: the helper is not installed.
    fn run_helper(
        &self,
        helper: &str,
        registry: &str,
    ) -> Result<Option<Credential>, CredentialError> {
        let program = format!("docker-credential-{helper}");
        let program = match &self.helper_dir {
            Some(dir) => dir.join(&program),
            None => PathBuf::from(&program),
        };
        let server = if is_docker_hub(registry) {
            "https://index.docker.io/v1/".to_string()
        } else {
            registry.to_string()
        };
        let fail = |reason: String| CredentialError::Helper {
            helper: helper.to_string(),
            registry: registry.to_string(),
            reason,
        };
        let mut child = match Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fail(format!("cannot run {}: {e}", program.display()))),
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading (e.g. "credentials not found"): its exit status
            // and output decide, not a broken pipe here.
            if let Err(e) = stdin.write_all(server.as_bytes()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(fail(format!("cannot write to it: {e}")));
                }
            }
        }
        let output = child
            .wait_with_output()
            .map_err(|e| fail(format!("cannot wait for it: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            // docker treats "credentials not found" as anonymous access.
            if stderr.contains("credentials not found") || stdout.contains("credentials not found")
            {
                return Ok(Some(Credential::Anonymous));
            }
            return Err(fail(format!("{} ({})", stderr.trim(), output.status)));
        }
        #[derive(Deserialize)]
        struct HelperOutput {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let parsed: HelperOutput = serde_json::from_slice(&output.stdout).map_err(|_| {
            fail("its output is not docker's JSON ({\"Username\":…,\"Secret\":…})".into())
        })?;
        Ok(Some(match (parsed.username.as_str(), parsed.secret) {
            (_, secret) if secret.is_empty() => Credential::Anonymous,
            ("<token>", secret) => Credential::IdentityToken(Secret::new(secret)),
            (username, secret) => Credential::Basic {
                username: username.to_string(),
                password: Secret::new(secret),
            },
        }))
    }
}

/// serde_json's message without the value it may quote: a type error reads `invalid type:
/// string "…", expected …`, and that string may be a password or base64 credentials (an
/// `auths` entry written as a bare string). Syntax errors name only line and column.
fn json_error_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if e.classify() != serde_json::error::Category::Data {
        return message;
    }
    let at = format!("at line {} column {}", e.line(), e.column());
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => {
            let expected = expected
                .rsplit_once(" at line ")
                .map_or(expected, |(x, _)| x);
            format!("a value of the wrong type {at} (expected {expected})")
        }
        None => format!("a value docker's config.json does not allow {at}"),
    }
}

/// Decodes an `auth` value: base64 of `user:password`.
fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "not valid base64 (expected base64 of user:password)".to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "does not decode to UTF-8 text".to_string())?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| "does not decode to user:password".to_string())?;
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn config(json: &str) -> DockerConfig {
        DockerConfig::from_bytes(Path::new("config.json"), json.as_bytes()).unwrap()
    }

    #[test]
    fn the_variable_s_auths_come_before_the_file() {
        let mut config = config(
            r#"{"auths": {"a.example": {"auth": "ZmlsZTpwdw=="}, "b.example": {"auth": "ZmlsZTpwdw=="}},
                "credHelpers": {"c.example": "absent-helper"}}"#,
        );
        let taken = config
            .add_variable_auths(
                r#"{"auths": {"https://a.example/v1/": {"auth": "ZW52OnNlY3JldA=="},
                              "c.example": {"username": "env", "password": "pw2"},
                              "https://index.docker.io/v1/": {"auth": "aHViOmh1YnB3"}},
                    "credHelpers": {"d.example": "gcr"}}"#,
            )
            .unwrap();
        assert_eq!(
            taken,
            VariableAuths {
                registries: 3,
                ignored_helpers: true
            }
        );
        assert_eq!(
            config.credential_for("a.example").unwrap(),
            basic("env", "secret")
        );
        // The file still answers for what the variable does not name.
        assert_eq!(
            config.credential_for("b.example").unwrap(),
            basic("file", "pw")
        );
        // Over a credHelpers entry too (its helper is never run).
        assert_eq!(
            config.credential_for("c.example").unwrap(),
            basic("env", "pw2")
        );
        assert_eq!(
            config.credential_for("docker.io").unwrap(),
            basic("hub", "hubpw")
        );
        // Its credHelpers are not read.
        assert!(matches!(
            config.lookup("d.example").unwrap(),
            ConfigAnswer::NoEntry
        ));
    }

    #[test]
    fn a_malformed_variable_is_named_without_its_value() {
        let mut config = DockerConfig::default();
        for (value, expected) in [
            ("{\"auths\": ", "EOF"),
            (
                r#"{"auths": {"r.example": {"auth": "not base64 s3cret!"}}}"#,
                "auths[\"r.example\"].auth",
            ),
            (r#"{"auths": []}"#, "wrong type"),
        ] {
            let err = config.add_variable_auths(value).unwrap_err().to_string();
            assert!(
                err.starts_with("DOCKER_AUTH_CONFIG is not a valid docker auth config")
                    && err.contains(expected)
                    && !err.contains("s3cret"),
                "{err}"
            );
        }
        assert!(matches!(
            config.lookup("r.example").unwrap(),
            ConfigAnswer::NoEntry
        ));
    }

    fn basic(user: &str, pass: &str) -> Credential {
        Credential::Basic {
            username: user.into(),
            password: Secret::new(pass),
        }
    }

    #[test]
    fn auth_forms() {
        let c = config(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                "r1.example.com": {"username": "u1", "password": "p1"},
                "https://r2.example.com:5000/v2/": {"auth": "dTI6cDI6d2l0aDpjb2xvbnM="},
                "r3.example.com": {"identitytoken": "refresh"},
                "r4.example.com": {"registrytoken": "bearer"}
            }}"#,
        );
        assert_eq!(
            c.credential_for("docker.io").unwrap(),
            basic("user", "pass")
        );
        assert_eq!(
            c.credential_for("r1.example.com").unwrap(),
            basic("u1", "p1")
        );
        assert_eq!(
            c.credential_for("r2.example.com:5000").unwrap(),
            basic("u2", "p2:with:colons")
        );
        assert_eq!(
            c.credential_for("r3.example.com").unwrap(),
            Credential::IdentityToken(Secret::new("refresh"))
        );
        assert_eq!(
            c.credential_for("r4.example.com").unwrap(),
            Credential::RegistryToken(Secret::new("bearer"))
        );
        assert_eq!(
            c.credential_for("other.example.com").unwrap(),
            Credential::Anonymous
        );
    }

    #[test]
    fn docker_hub_key_spellings() {
        for key in [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ] {
            let c = config(&format!(
                r#"{{"auths": {{"{key}": {{"auth": "dXNlcjpwYXNz"}}}}}}"#
            ));
            assert_eq!(
                c.credential_for("docker.io").unwrap(),
                basic("user", "pass"),
                "{key}"
            );
        }
    }

    #[test]
    fn malformed_files_name_the_file_and_never_the_secret() {
        let e =
            DockerConfig::from_bytes(Path::new("/k/config.json"), b"{\"auths\": {").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("docker config /k/config.json is not valid"),
            "{e}"
        );
        let e = DockerConfig::from_bytes(
            Path::new("/k/config.json"),
            br#"{"auths": {"r": {"auth": "c2VjcmV0LXZhbHVl"}}}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("auths[\"r\"].auth: does not decode to user:password"),
            "{e}"
        );
        assert!(!e.to_string().contains("secret-value"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
        assert!(!format!("{:?}", basic("u", "hunter2")).contains("hunter2"));
    }

    #[test]
    fn lookup_order_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a/config.json");
        let second = dir.path().join("b/config.json");
        fs::create_dir_all(second.parent().unwrap()).unwrap();
        fs::write(
            &second,
            r#"{"auths": {"r": {"username": "b", "password": "x"}}}"#,
        )
        .unwrap();
        let c = DockerConfig::locate(&[first.clone(), second.clone()]).unwrap();
        assert_eq!(c.path.as_deref(), Some(second.as_path()));
        fs::create_dir_all(first.parent().unwrap()).unwrap();
        fs::write(
            &first,
            r#"{"auths": {"r": {"username": "a", "password": "x"}}}"#,
        )
        .unwrap();
        let c = DockerConfig::locate(&[first.clone(), second]).unwrap();
        assert_eq!(c.credential_for("r").unwrap(), basic("a", "x"));
        let none = DockerConfig::locate(&[dir.path().join("nope.json")]).unwrap();
        assert!(none.path.is_none());
        // A secret mounted as a directory at the file's path.
        let as_dir = dir.path().join("c/config.json");
        fs::create_dir_all(&as_dir).unwrap();
        let e = DockerConfig::locate(&[as_dir]).unwrap_err();
        assert!(e.to_string().contains("it is a directory"), "{e}");
    }

    #[test]
    fn credential_helpers_speak_dockers_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            // Written by `install`, so this multi-threaded test process never holds the file open
            // for writing while another thread forks (which makes exec fail with ETXTBSY).
            let source = dir.path().join(format!("{name}.src"));
            fs::write(&source, format!("#!/bin/sh\n{body}\n")).unwrap();
            let path = dir.path().join(format!("docker-credential-{name}"));
            let status = Command::new("install")
                .args(["-m", "0755"])
                .arg(&source)
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success());
        };
        // Echo the server it was asked about as the user name, to check what docker sends.
        script(
            "test",
            r#"[ "$1" = get ] || exit 3; read server; printf '{"ServerURL":"%s","Username":"%s","Secret":"s3cret"}' "$server" "$server""#,
        );
        script(
            "token",
            r#"read server; printf '{"Username":"<token>","Secret":"refresh"}'"#,
        );
        script(
            "none",
            r#"echo "credentials not found in native keychain" >&2; exit 1"#,
        );
        script("broken", r#"echo "keychain locked" >&2; exit 2"#);
        let c = config(r#"{"credHelpers": {"r.example.com": "test", "docker.io": "test", "t.example.com": "token", "n.example.com": "none", "b.example.com": "broken"}, "credsStore": "token"}"#)
            .with_helper_dir(dir.path());
        assert_eq!(
            c.credential_for("r.example.com").unwrap(),
            basic("r.example.com", "s3cret")
        );
        assert_eq!(
            c.credential_for("docker.io").unwrap(),
            basic("https://index.docker.io/v1/", "s3cret")
        );
        assert_eq!(
            c.credential_for("t.example.com").unwrap(),
            Credential::IdentityToken(Secret::new("refresh"))
        );
        assert_eq!(
            c.credential_for("n.example.com").unwrap(),
            Credential::Anonymous
        );
        let e = c.credential_for("b.example.com").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-broken failed for b.example.com: keychain locked"),
            "{e}"
        );
        // Not in credHelpers: the credsStore answers.
        assert_eq!(
            c.credential_for("other.example.com").unwrap(),
            Credential::IdentityToken(Secret::new("refresh"))
        );
    }
}
