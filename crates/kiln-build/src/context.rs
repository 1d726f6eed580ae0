//! The build context: where it comes from (`--context` as kaniko spells it), and which of its
//! files the build sees after `.dockerignore`.

use crate::error::BuildError;
pub use crate::git::{clone_git, GitOptions};
use kiln_dockerfile::ignore::{
    ignore_file_candidates, parse_ignore_file, walk, ContextFs, DirEntry, Matcher,
};
use kiln_registry::RegistryOptions;
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A context made ready on local disk.
#[derive(Debug)]
pub struct PreparedContext {
    /// The directory the build reads (after `--context-sub-path`).
    pub dir: PathBuf,
    /// A directory kiln made for it (an unpacked tarball), removed when dropped.
    _temp: Option<tempfile::TempDir>,
}

/// Makes `spec` (a dir, `dir://DIR`, `tar://FILE` or `tar://stdin` of a tar or tar.gz, an
/// http(s) URL of one, a git repository) a local directory; temporary files go under `scratch`.
/// `sub_path` picks a directory inside it. `registry` gives a URL's host its TLS settings.
pub fn prepare(
    spec: &str,
    sub_path: Option<&str>,
    scratch: &Path,
    git: &GitOptions,
    registry: &RegistryOptions,
) -> Result<PreparedContext, BuildError> {
    let err = |message: String| BuildError::Context {
        context: spec.to_owned(),
        message,
    };
    if is_url(spec) {
        // A tarball: downloaded next to where it is unpacked, then prepared as `tar://FILE`.
        let file = download(spec, registry, scratch)
            .map_err(|message| err(format!("downloading the tarball: {message}")))?;
        let local = format!("tar://{}", file.path().display());
        return prepare(&local, sub_path, scratch, git, registry).map_err(|e| match e {
            BuildError::Context { message, .. } => err(message),
            other => other,
        });
    }
    // A directory of kiln's under `scratch`, removed with the prepared context.
    let scratch_dir = |prefix: &str| {
        std::fs::create_dir_all(scratch)
            .and_then(|()| tempfile::Builder::new().prefix(prefix).tempdir_in(scratch))
            .map_err(|e| {
                err(format!(
                    "creating a directory in {}: {e}",
                    scratch.display()
                ))
            })
    };
    let (dir, temp) = if let Some(rest) = spec.strip_prefix("tar://") {
        let temp = scratch_dir("context-")?;
        let reader: Box<dyn Read> = if rest == "stdin" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(
                std::fs::File::open(rest).map_err(|e| err(format!("cannot open {rest}: {e}")))?,
            )
        };
        // Path-safe: an entry of the tarball can never land outside the directory.
        let options = kiln_fs::apply::ApplyOptions::rootless();
        kiln_fs::apply::apply_layer(reader, temp.path(), &options)
            .map_err(|e| err(format!("unpacking the tarball: {e}")))?;
        (temp.path().to_owned(), Some(temp))
    } else if is_git_url(spec) {
        let temp = scratch_dir("git-")?;
        let checkout = temp.path().join("repo");
        let dir = clone_git(spec, &checkout, false, git)?;
        (dir, Some(temp))
    } else if spec.starts_with("az://") {
        return Err(err(
            "az:// contexts are not supported: give the blob's URL, \
             https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH, as kaniko takes it"
                .to_string(),
        ));
    } else if let Some(scheme) = ["s3://", "gs://"].iter().find(|s| spec.starts_with(**s)) {
        // The kiln binary downloads these (kiln-cloud) and passes `tar://FILE`.
        return Err(err(format!(
            "{scheme} contexts (object stores) are downloaded by the kiln binary, not by \
             kiln-build: download it first and pass tar://FILE"
        )));
    } else {
        let path = spec.strip_prefix("dir://").unwrap_or(spec);
        (PathBuf::from(path), None)
    };
    let dir = match sub_path {
        Some(sub) if !sub.is_empty() => dir.join(sub.trim_start_matches('/')),
        _ => dir,
    };
    let meta = std::fs::metadata(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(err(format!("{} is not a directory", dir.display())));
    }
    Ok(PreparedContext { dir, _temp: temp })
}

/// The Dockerfile of a build: its text and where it lies relative to the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileSource {
    /// Its text.
    pub text: String,
    /// Its name in messages (`Dockerfile`, `docker/app.Dockerfile`, a URL, or
    /// `Dockerfile (stdin)`).
    pub name: String,
    /// Its path relative to the context (for `<Dockerfile>.dockerignore`); `None` when it lies
    /// outside the context, came from stdin or from a URL.
    pub in_context: Option<String>,
    /// The ignore file beside a Dockerfile outside the context (its path and text).
    pub outside_ignore_file: Option<(String, String)>,
}

impl DockerfileSource {
    /// A Dockerfile that is not a file of any directory (stdin, a URL): no ignore file of its
    /// own.
    fn detached(text: String, name: &str) -> Self {
        DockerfileSource {
            text,
            name: name.to_owned(),
            in_context: None,
            outside_ignore_file: None,
        }
    }
}

/// Finds and reads the Dockerfile `spec` as kaniko does: `-` is stdin; an http(s) URL is
/// downloaded (into `scratch`, with `registry`'s TLS settings); a path is looked for in the
/// working directory first, then in `context_dir`.
pub fn read_dockerfile(
    spec: &str,
    context_dir: &Path,
    registry: &RegistryOptions,
    scratch: &Path,
) -> Result<DockerfileSource, BuildError> {
    let err = |message: String| BuildError::DockerfileSource {
        spec: spec.to_owned(),
        message,
    };
    if spec == "-" {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| err(format!("reading it from stdin: {e}")))?;
        return Ok(DockerfileSource::detached(text, "Dockerfile (stdin)"));
    }
    if spec.starts_with("https://") || spec.starts_with("http://") {
        let file = download(spec, registry, scratch)
            .map_err(|message| err(format!("downloading it: {message}")))?;
        let text = std::fs::read_to_string(file.path())
            .map_err(|e| err(format!("the download is not UTF-8 text: {e}")))?;
        return Ok(DockerfileSource::detached(text, spec));
    }
    let given = Path::new(spec);
    let path = if given.is_absolute() || given.exists() {
        std::path::absolute(given).map_err(|e| err(e.to_string()))?
    } else {
        context_dir.join(given)
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    let canon_ctx = std::fs::canonicalize(context_dir).unwrap_or(context_dir.to_owned());
    let canon = std::fs::canonicalize(&path).unwrap_or(path.clone());
    let in_context = canon
        .strip_prefix(&canon_ctx)
        .ok()
        .and_then(|r| r.to_str())
        .map(str::to_owned);
    // BuildKit reads `<Dockerfile>.dockerignore` beside a Dockerfile outside the context.
    let outside_ignore_file = if in_context.is_none() {
        let mut beside = canon.as_os_str().to_os_string();
        beside.push(".dockerignore");
        std::fs::read_to_string(&beside)
            .ok()
            .map(|t| (PathBuf::from(beside).display().to_string(), t))
    } else {
        None
    };
    Ok(DockerfileSource {
        text,
        name: spec.to_owned(),
        in_context,
        outside_ignore_file,
    })
}

/// Downloads `url` into a temp file in `dir` (removed when dropped), with the TLS settings
/// `registry` gives its host and no registry credentials.
fn download(
    url: &str,
    registry: &RegistryOptions,
    dir: &Path,
) -> Result<tempfile::NamedTempFile, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let file = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("creating a file in {}: {e}", dir.display()))?;
    let client =
        kiln_registry::Client::new(registry.clone(), kiln_registry::DockerConfig::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime
        .block_on(client.download(url, file.path(), None))
        .map_err(|e| e.to_string())?;
    Ok(file)
}

/// Whether `spec` names a git repository (BuildKit's and kaniko's forms): `git://…`, `git@…`, or
/// an http(s) URL whose path ends in `.git`, each with an optional `#ref[:subdir]`.
pub fn is_git_url(spec: &str) -> bool {
    let without_ref = spec.split('#').next().unwrap_or(spec);
    spec.starts_with("git://")
        || spec.starts_with("git@")
        || ((spec.starts_with("https://") || spec.starts_with("http://"))
            && without_ref.trim_end_matches('/').ends_with(".git"))
}

/// Directory listings of a context on disk, for the `.dockerignore` walker.
#[derive(Debug, Clone)]
pub struct StdContextFs {
    root: PathBuf,
}

impl StdContextFs {
    /// The context rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StdContextFs { root: root.into() }
    }
}

impl ContextFs for StdContextFs {
    type Error = io::Error;

    /// Lists `rel_dir` without following symbolic links (a link to a directory is reported
    /// as not a directory). A name that is not UTF-8 is an `InvalidData` error.
    fn read_dir(&self, rel_dir: &str) -> io::Result<Vec<DirEntry>> {
        let dir = if rel_dir.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel_dir)
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|name| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: file name {name:?} is not UTF-8", dir.display()),
                )
            })?;
            // `DirEntry::file_type` does not follow symbolic links.
            let is_dir = entry.file_type()?.is_dir();
            entries.push(DirEntry { name, is_dir });
        }
        Ok(entries)
    }
}

/// The files of a context the build may read: every path not excluded by `.dockerignore`.
#[derive(Debug, Clone)]
pub struct ContextView {
    /// The context directory.
    pub root: PathBuf,
    /// Included paths (files, links and directories), relative, `/`-separated.
    pub included: BTreeSet<String>,
    /// The ignore file that applied, if any.
    pub ignore_file: Option<String>,
    matcher: Option<Matcher>,
}

impl ContextView {
    /// Reads the ignore file that applies (`<Dockerfile>.dockerignore` beside the Dockerfile,
    /// else the context's `.dockerignore`; `outside` is the one beside a Dockerfile outside the
    /// context) and lists what it leaves in.
    pub fn scan(
        root: &Path,
        dockerfile_in_context: Option<&str>,
        outside: Option<&(String, String)>,
    ) -> Result<ContextView, BuildError> {
        let context_err = |message: String| BuildError::Context {
            context: root.display().to_string(),
            message,
        };
        let mut found: Option<(String, String)> = outside.cloned();
        if found.is_none() {
            for candidate in ignore_file_candidates(dockerfile_in_context.unwrap_or("")) {
                match std::fs::read(root.join(&candidate)) {
                    Ok(bytes) => {
                        found = Some((candidate, String::from_utf8_lossy(&bytes).into_owned()));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(context_err(format!("reading {candidate}: {e}"))),
                }
            }
        }
        let matcher = match &found {
            Some((name, text)) => {
                let file =
                    parse_ignore_file(text).map_err(|e| context_err(format!("{name}: {e}")))?;
                Some(
                    file.matcher()
                        .map_err(|e| context_err(format!("{name}: {e}")))?,
                )
            }
            None => None,
        };
        let empty = Matcher::new(&[]).map_err(|e| context_err(e.to_string()))?;
        let mut included = BTreeSet::new();
        walk(
            &StdContextFs::new(root),
            matcher.as_ref().unwrap_or(&empty),
            |path, _| {
                included.insert(path.to_owned());
            },
        )
        .map_err(|e| context_err(format!("listing the context: {e}")))?;
        Ok(ContextView {
            root: root.to_owned(),
            included,
            ignore_file: found.map(|(name, _)| name),
            matcher,
        })
    }

    /// Whether `.dockerignore` excludes `rel` (for error messages).
    pub fn is_ignored(&self, rel: &str) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_excluded(rel))
    }
}

/// An http(s) URL source of ADD that is not a git repository.
pub(crate) fn is_url(source: &str) -> bool {
    (source.starts_with("http://") || source.starts_with("https://")) && !is_git_url(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::ignore::{parse_ignore_file, walk};
    use std::fs;

    #[test]
    fn walks_a_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for dir in ["src/sub", "target/debug", "docs", "linked"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "Dockerfile",
            ".dockerignore",
            "src/main.rs",
            "src/sub/x.rs",
            "target/debug/bin",
            "docs/a.md",
            "docs/README.md",
            "linked/f",
        ] {
            fs::write(root.join(file), "x").unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("linked"), root.join("link")).unwrap();

        let ignore = parse_ignore_file("target\n*.md\ndocs\n!docs/README.md\n").unwrap();
        let matcher = ignore.matcher().unwrap();
        let mut seen = Vec::new();
        let stats = walk(&StdContextFs::new(&root), &matcher, |p, e| {
            seen.push((p.to_string(), e.is_dir))
        })
        .unwrap();

        let mut want = vec![
            (".dockerignore", false),
            ("Dockerfile", false),
            ("docs", true),
            ("docs/README.md", false),
        ];
        if cfg!(unix) {
            want.push(("link", false));
        }
        want.extend([
            ("linked", true),
            ("linked/f", false),
            ("src", true),
            ("src/main.rs", false),
            ("src/sub", true),
            ("src/sub/x.rs", false),
        ]);
        let want: Vec<(String, bool)> = want.into_iter().map(|(p, d)| (p.to_string(), d)).collect();
        assert_eq!(seen, want);
        assert_eq!(stats.dirs_skipped, 1, "target");
        assert_eq!(stats.dirs_read, 5, "root, docs, linked, src, src/sub");
    }
}
