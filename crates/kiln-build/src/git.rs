//! Git repositories as build contexts and `ADD` sources, cloned in-process with gix: kiln's
//! images carry no `git` binary. The `git` command is used only for what gix does not do
//! (checking out submodules).

use crate::error::BuildError;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// How a git context is fetched: kaniko's `--git` options and its `GIT_*` variables.
#[derive(Debug, Clone, Default)]
pub struct GitOptions {
    /// `--git branch=NAME`: the branch or tag to clone (over the URL's `#ref`).
    pub branch: Option<String>,
    /// `--git single-branch=true`: fetch that branch only (a clone of one ref always is).
    pub single_branch: bool,
    /// `--git recurse-submodules=true`: check out submodules too.
    pub recurse_submodules: bool,
    /// `--git insecure-skip-tls=true`: do not verify the server's TLS certificate.
    pub insecure_skip_tls: bool,
    /// `GIT_PULL_METHOD=http`: `git://` URLs are fetched over plain http (else https).
    pub plain_http: bool,
    /// HTTP basic credentials (`GIT_TOKEN`, or `GIT_USERNAME`/`GIT_PASSWORD`), given to the
    /// server when it asks; never in a message.
    pub credentials: Option<(String, String)>,
}

/// What to check out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Revision {
    /// The remote's `HEAD`.
    Head,
    /// A branch or tag name.
    Name(String),
    /// A full commit id.
    Commit(String),
}

/// A git source as BuildKit (`URL#ref:subdir`) and kaniko (`git://host/repo#ref#commit`)
/// spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GitSource {
    /// The URL fetched, without credentials.
    url: String,
    revision: Revision,
    /// A directory of the checkout to use instead of its root.
    subdir: String,
    /// Credentials that were written in the URL.
    url_credentials: Option<(String, String)>,
}

impl GitSource {
    fn parse(spec: &str, options: &GitOptions) -> GitSource {
        let (url, fragment) = spec.split_once('#').unwrap_or((spec, ""));
        let url = match url.strip_prefix("git://") {
            Some(rest) if options.plain_http => format!("http://{rest}"),
            Some(rest) => format!("https://{rest}"),
            None => url.to_owned(),
        };
        // `user:password@` in an http(s) URL: taken out, so no message shows them.
        let (url, url_credentials) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.starts_with("http") => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                match authority.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                        (
                            format!("{scheme}://{host}/{path}"),
                            Some((user.to_owned(), password.to_owned())),
                        )
                    }
                    None => (url.clone(), None),
                }
            }
            _ => (url, None),
        };
        let (reference, subdir) = match fragment.split_once('#') {
            // kaniko's `#refs/heads/branch#commit`: the commit decides.
            Some((_branch, commit)) => (commit.to_owned(), String::new()),
            None => match fragment.split_once(':') {
                Some((r, sub)) => (r.to_owned(), sub.to_owned()),
                None => (fragment.to_owned(), String::new()),
            },
        };
        let reference = options.branch.clone().unwrap_or(reference);
        let is_commit =
            matches!(reference.len(), 40 | 64) && reference.bytes().all(|b| b.is_ascii_hexdigit());
        let revision = if reference.is_empty() {
            Revision::Head
        } else if is_commit {
            Revision::Commit(reference.to_ascii_lowercase())
        } else {
            Revision::Name(
                reference
                    .strip_prefix("refs/heads/")
                    .or_else(|| reference.strip_prefix("refs/tags/"))
                    .unwrap_or(&reference)
                    .to_owned(),
            )
        };
        GitSource {
            url,
            revision,
            subdir,
            url_credentials,
        }
    }
}

/// Clones the git repository `spec` (`URL[#ref[:subdir]]`; kaniko's `git://host/path`, fetched
/// over https unless [`GitOptions::plain_http`], and its `#refs/heads/x#commit` form) into the
/// new directory `dest`, and returns the directory the build uses (`subdir` inside it). The
/// `.git` directory is removed unless `keep_git_dir`.
pub fn clone_git(
    spec: &str,
    dest: &Path,
    keep_git_dir: bool,
    options: &GitOptions,
) -> Result<PathBuf, BuildError> {
    let source = GitSource::parse(spec, options);
    let err = |message: String| BuildError::Context {
        context: source.url.clone(),
        message,
    };
    let credentials = options
        .credentials
        .clone()
        .or_else(|| source.url_credentials.clone());
    // Shallow first (one commit); a server that refuses it gets a full fetch.
    if let Err(shallow) = fetch(&source, dest, credentials.as_ref(), options, true) {
        let _ = std::fs::remove_dir_all(dest);
        fetch(&source, dest, credentials.as_ref(), options, false).map_err(|full| {
            err(if full == shallow {
                full
            } else {
                format!("{full} (a shallow clone failed first: {shallow})")
            })
        })?;
    }
    if options.recurse_submodules {
        submodules(dest).map_err(err)?;
    }
    if !keep_git_dir {
        let dot_git = dest.join(".git");
        std::fs::remove_dir_all(&dot_git).map_err(|e| err(format!("removing .git: {e}")))?;
    }
    if source.subdir.is_empty() {
        return Ok(dest.to_owned());
    }
    let dir = dest.join(source.subdir.trim_start_matches('/'));
    if !dir.is_dir() {
        return Err(err(format!(
            "{} is not a directory of the repository",
            source.subdir
        )));
    }
    Ok(dir)
}

/// One clone with gix: fetch the revision (`depth 1` when `shallow`), check out its tree.
fn fetch(
    source: &GitSource,
    dest: &Path,
    credentials: Option<&(String, String)>,
    options: &GitOptions,
    shallow: bool,
) -> Result<(), String> {
    let mut prepare = gix::prepare_clone(source.url.as_str(), dest).map_err(|e| chain(&e))?;
    if shallow {
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN));
    }
    prepare = match &source.revision {
        Revision::Head => prepare,
        Revision::Name(name) => prepare
            .with_ref_name(Some(name.as_str()))
            .map_err(|e| format!("ref {name:?}: {}", chain(&e)))?,
        Revision::Commit(id) => prepare
            .with_revision(Some(id.as_str()))
            .map_err(|e| format!("commit {id}: {}", chain(&e)))?,
    };
    // gix's HTTP client gets kiln's TLS settings: the roots kiln trusts (SSL_CERT_FILE, every
    // file of SSL_CERT_DIR), or no verification with `insecure-skip-tls`.
    let host = source
        .url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    let policy = kiln_registry::transport::HostPolicy {
        allow_http: false,
        skip_verify: options.insecure_skip_tls,
        ca_files: Vec::new(),
        client_cert: None,
    };
    let tls = kiln_registry::transport::client_tls_config(host, &policy).map_err(|e| chain(&e))?;
    let credentials = credentials.cloned();
    prepare = prepare.configure_connection(move |connection| {
        use gix::protocol::transport::client::blocking_io::http;
        let tls = tls.clone();
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |client| {
                Ok(client.tls_backend_preconfigured(tls.clone()))
            })),
            configure_request: None,
        };
        connection.set_transport_options(Box::new(http::Options {
            backend: Some(std::sync::Arc::new(std::sync::Mutex::new(backend))),
            ..http::Options::default()
        }));
        let credentials = credentials.clone();
        // Only what kiln was given: no credential helpers, no prompts.
        connection.set_credentials(move |action| match (action, &credentials) {
            (gix::credentials::helper::Action::Get(context), Some((username, password))) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    credentials: gix::sec::identity::Credentials::UsernamePassword {
                        username: username.clone(),
                        password: password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
            }
            _ => Ok(None),
        });
        Ok(())
    });
    let interrupt = AtomicBool::new(false);
    let (mut checkout, _) = prepare
        .fetch_then_checkout(gix::progress::Discard, &interrupt)
        .map_err(|e| chain(&e))?;
    checkout
        .main_worktree(gix::progress::Discard, &interrupt)
        .map_err(|e| format!("checking out: {}", chain(&e)))?;
    Ok(())
}

/// Submodules, recursively, with the `git` command (gix does not check them out).
fn submodules(checkout: &Path) -> Result<(), String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(checkout)
        .args([
            "submodule",
            "update",
            "--init",
            "--recursive",
            "--depth",
            "1",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| {
            format!("--git recurse-submodules=true needs the git command, which cannot run: {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "git submodule update failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// An error and its causes, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    kiln_registry::error::with_causes(e.to_string(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_as_buildkit_and_kaniko_spell_them() {
        let plain = GitOptions::default();
        let s = GitSource::parse("https://h/r.git#v1:sub/dir", &plain);
        assert_eq!(s.url, "https://h/r.git");
        assert_eq!(s.revision, Revision::Name("v1".into()));
        assert_eq!(s.subdir, "sub/dir");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let s = GitSource::parse(&format!("git://h/r.git#refs/heads/x#{commit}"), &plain);
        assert_eq!(s.url, "https://h/r.git");
        assert_eq!(s.revision, Revision::Commit(commit.into()));
        let http = GitOptions {
            plain_http: true,
            branch: Some("feature".into()),
            ..GitOptions::default()
        };
        let s = GitSource::parse("git://tok:pw@h:8080/r.git#main", &http);
        assert_eq!(s.url, "http://h:8080/r.git");
        assert_eq!(s.revision, Revision::Name("feature".into()));
        assert_eq!(s.url_credentials, Some(("tok".into(), "pw".into())));
        assert_eq!(
            GitSource::parse("https://h/r.git#refs/tags/v2", &plain).revision,
            Revision::Name("v2".into())
        );
        assert_eq!(
            GitSource::parse("https://h/r.git", &plain).revision,
            Revision::Head
        );
    }
}
