//! COPY and ADD: sources from the context, a stage, an image, URLs or git, copied with
//! BuildKit's rules (the rules themselves are in `crate::copy`).

use super::StageRun;
use crate::copy::{self, CopySpec, Source};
use crate::error::BuildError;
use crate::paths;
use crate::snapshotter::{read_only_view, Writes};
use crate::types::Layer;
use crate::users;
use kiln_dockerfile::instructions::{CopyArgs, Instruction};
use kiln_sandbox::backend::Backend;
use kiln_sandbox::overlay::OverlayMount;
use std::path::{Path, PathBuf};

/// What `COPY --from` reads: an extracted tree, or a read-only overlay mounted for it.
pub(crate) enum SourceView {
    Dir(PathBuf),
    Overlay(OverlayMount),
}

impl SourceView {
    pub(super) fn path(&self) -> &Path {
        match self {
            SourceView::Dir(p) => p,
            SourceView::Overlay(m) => m.path(),
        }
    }
}

impl StageRun<'_> {
    pub(super) fn copy(
        &mut self,
        instruction: &Instruction,
        args: &CopyArgs,
    ) -> Result<Option<Layer>, BuildError> {
        let at = self.at(instruction);
        let keyword = instruction.keyword();
        let bad = |message: String| BuildError::Instruction {
            at: at.clone(),
            keyword,
            message,
        };
        let chmod = match &args.chmod {
            Some(c) => Some(
                kiln_dockerfile::mount::parse_chmod(&c.value)
                    .map_err(|m| bad(format!("--chmod={}: {m}", c.value)))?,
            ),
            None => None,
        };
        let exclude = if args.exclude.is_empty() {
            None
        } else {
            Some(
                kiln_dockerfile::ignore::Matcher::from_strings(
                    args.exclude.iter().map(|w| w.value.clone()),
                )
                .map_err(|e| bad(format!("--exclude: {e}")))?,
            )
        };
        let cwd = self.workdir_or_root();
        let mut dest = paths::absolute(&cwd, &args.dest.value);
        if (args.dest.value.ends_with('/')
            || args.dest.value.ends_with("/.")
            || args.dest.value == ".")
            && dest != "/"
        {
            dest.push('/');
        }
        if self.lazy && !dest.ends_with('/') {
            // Without the base's files: whether the destination is a directory (or a link to
            // one) in the base decides where the files go; its layers' tar headers tell.
            dest = self.through_base(&dest, &at, keyword)?;
        }
        let inline: Vec<(String, String)> = args
            .inline
            .iter()
            .map(|s| (s.name.clone(), s.content.clone()))
            .collect();
        let source_view = match &args.from {
            None => None,
            Some(from) => Some(self.source_view(&from.value, &at, true, "COPY")?),
        };
        let lazy = self.lazy;
        let context = self.context;
        let single = self.single;
        let writer = self.layer_writer();
        let chown = args.chown.as_ref().map(|c| c.value.clone());
        let checksum = match &args.checksum {
            Some(c) => Some(
                c.value
                    .parse::<kiln_oci::Digest>()
                    .map_err(|e| bad(format!("--checksum={}: {e}", c.value)))?,
            ),
            None => None,
        };
        let mut downloads = Vec::new();
        for (n, url) in args
            .sources
            .iter()
            .filter(|s| keyword == "ADD" && crate::context::is_url(&s.value))
            .enumerate()
        {
            let file = self.stage_dir.join("downloads").join(n.to_string());
            let got = self
                .services
                .layers
                .download(&url.value, &file, checksum.as_ref(), &at)?;
            // Named from the URL as written, as BuildKit's Dockerfile frontend names it: never
            // from the server's Content-Disposition or the URL it redirected to.
            downloads.push((url_file_name(&url.value), file, got.last_modified));
        }
        // ADD of a git repository: cloned first; its files are copied like a directory's.
        let mut repos = Vec::new();
        for (n, repo) in args
            .sources
            .iter()
            .filter(|s| keyword == "ADD" && crate::context::is_git_url(&s.value))
            .enumerate()
        {
            let dir = self.stage_dir.join("git").join(n.to_string());
            let _ = std::fs::remove_dir_all(&dir);
            let keep = args.keep_git_dir.unwrap_or(false);
            let checkout = crate::context::clone_git(&repo.value, &dir, keep, &Default::default())
                .map_err(|e| bad(e.to_string()))?;
            repos.push(checkout);
        }
        let sources: Vec<String> = args
            .sources
            .iter()
            .filter(|s| {
                !(keyword == "ADD"
                    && (crate::context::is_url(&s.value) || crate::context::is_git_url(&s.value)))
            })
            .map(|w| w.value.clone())
            .collect();
        let only_repos = sources.is_empty() && !repos.is_empty();
        let (_, layer) = self.fs_mut().step(&writer, &at, false, single, |root| {
            let owner = chown.as_ref().map(|spec| users::resolve_chown(root, spec));
            let spec = CopySpec {
                sources,
                inline,
                downloads,
                dest,
                owner,
                chmod: chmod.as_ref(),
                parents: args.parents,
                exclude: exclude.as_ref(),
                unpack_archives: keyword == "ADD" && args.unpack != Some(false),
                // On a tree without the base's files, directories made only to hold the new
                // files stay out of the layer (the base's own keep their metadata).
                record_parents: !lazy,
            };
            let mut changes = if only_repos && spec.inline.is_empty() && spec.downloads.is_empty() {
                Vec::new()
            } else {
                match &source_view {
                    None => copy::copy(&Source::Context(context), &spec, root),
                    Some(view) => copy::copy(&Source::Rootfs(view.path()), &spec, root),
                }
                .map_err(bad)?
            };
            for repo in &repos {
                let repo_spec = CopySpec {
                    sources: vec![".".into()],
                    inline: Vec::new(),
                    downloads: Vec::new(),
                    dest: format!("{}/", spec.dest.trim_end_matches('/')),
                    unpack_archives: false,
                    ..spec
                };
                changes.extend(copy::copy(&Source::Rootfs(repo), &repo_spec, root).map_err(bad)?);
            }
            Ok(((), Writes::known(changes)))
        })?;
        Ok(layer)
    }
    /// What `COPY --from=X` (or `keyword`'s) reads: a built stage's tree, or an image's.
    /// `by_index`: a number names a stage (COPY), else an image (RUN --mount, as BuildKit).
    pub(super) fn source_view(
        &self,
        from: &str,
        at: &str,
        by_index: bool,
        keyword: &'static str,
    ) -> Result<SourceView, BuildError> {
        let stage_index = from
            .parse::<usize>()
            .ok()
            .filter(|_| by_index)
            .or_else(|| self.names.get(&from.to_ascii_lowercase()).copied())
            .filter(|i| self.stage.depends_on.contains(i));
        let (layers, name) = if let Some(index) = stage_index {
            let done = self
                .finished
                .lock()
                .expect("no stage thread panics while holding the lock")
                .get(&index)
                .cloned()
                .expect("a --from stage is built in an earlier wave");
            if let Some(root) = &done.rootfs {
                return Ok(SourceView::Dir(root.clone()));
            }
            (done.image.layers.clone(), format!("stage-{index}"))
        } else {
            let Some(r) = self.resolved.get(from) else {
                return Err(BuildError::Instruction {
                    at: at.to_owned(),
                    keyword,
                    message: format!("from={from}: no such stage or image"),
                });
            };
            let n = self.resolved.keys().position(|k| k == from).unwrap_or(0);
            (r.image.layers.clone(), format!("image-{n}"))
        };
        let dir = self.stage_dir.join(format!("from-{name}"));
        if self.services.backend == Backend::Overlay {
            let lowers = self.services.layers.unpacked_layers(&layers)?;
            return Ok(SourceView::Overlay(read_only_view(&lowers, &dir, at)?));
        }
        if !dir.exists() {
            self.services.layers.materialize(&layers, &dir)?;
        }
        Ok(SourceView::Dir(dir))
    }
}

/// The name an `ADD URL DIR/` download gets, BuildKit's rule: the last element of the URL's
/// decoded path (Go's `path.Base(url.Path)`), `__unnamed__` when that is `.` or `/` or the URL
/// does not parse. A name of `..` (a path ending in `%2F..`) also becomes `__unnamed__`, so the
/// file stays in the destination directory.
fn url_file_name(url: &str) -> String {
    const UNNAMED: &str = "__unnamed__";
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_start = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let rest = &after_scheme[path_start..];
    let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let Some(decoded) = percent_decode(path) else {
        return UNNAMED.to_owned();
    };
    let trimmed = decoded.trim_end_matches('/');
    let base = match trimmed.rsplit_once('/') {
        Some((_, base)) => base,
        None => trimmed,
    };
    if base.is_empty() || base == "." || base == ".." {
        return UNNAMED.to_owned();
    }
    base.to_owned()
}

/// `%XX` escapes decoded (as Go's `url.Parse` does for a path); `None` for a bad escape.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::url_file_name;

    #[test]
    fn add_url_names_follow_buildkit_and_stay_in_the_destination() {
        for (url, name) in [
            ("https://example.com/files/tool.tar.gz", "tool.tar.gz"),
            (
                "https://example.com/files/tool.tar.gz?x=1#frag",
                "tool.tar.gz",
            ),
            ("https://example.com/dir/", "dir"),
            ("https://example.com/", "__unnamed__"),
            ("https://example.com", "__unnamed__"),
            ("https://example.com?x=/a/b", "__unnamed__"),
            ("http://127.0.0.1:8080/a/..%2F..%2Fetc%2Fevil", "evil"),
            ("http://127.0.0.1:8080/a/%2E%2E", "__unnamed__"),
            ("http://127.0.0.1:8080/a/x%2F..", "__unnamed__"),
            ("http://127.0.0.1:8080/a/%2e", "__unnamed__"),
            ("http://127.0.0.1:8080/a/na%20me", "na me"),
            ("http://127.0.0.1:8080/a/bad%zz", "__unnamed__"),
        ] {
            assert_eq!(url_file_name(url), name, "{url}");
        }
    }
}
