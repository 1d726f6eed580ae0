//! Which ignore file applies, and the walk over a context that leaves out what it excludes.

use super::Matcher;

/// The ignore files to try, in order, for a Dockerfile at `dockerfile_rel` (slash-separated,
/// relative to the context): `<Dockerfile path>.dockerignore` beside the Dockerfile, then
/// `.dockerignore` at the context root. The first that exists applies, even when empty;
/// BuildKit does not merge them. For a Dockerfile read from stdin (`""` or `-`) only the
/// root `.dockerignore` applies.
///
/// When the Dockerfile lies outside the context, the caller should look for
/// `<Dockerfile path>.dockerignore` beside it instead of the first candidate here.
pub fn ignore_file_candidates(dockerfile_rel: &str) -> Vec<String> {
    let root = ".dockerignore".to_string();
    if dockerfile_rel.is_empty() || dockerfile_rel == "-" {
        return vec![root];
    }
    let cleaned = kiln_oci::path::clean(dockerfile_rel);
    let cleaned = cleaned.strip_prefix('/').unwrap_or(&cleaned);
    if cleaned.is_empty() || cleaned == "." {
        return vec![root];
    }
    vec![format!("{cleaned}.dockerignore"), root]
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (one path component, no `/`).
    pub name: String,
    /// Whether it is a directory. Symbolic links are not followed: a link to a directory is
    /// not a directory.
    pub is_dir: bool,
}

/// Directory listings of a build context, for [`walk`].
pub trait ContextFs {
    /// What a listing can fail with.
    type Error;
    /// The entries of the directory `rel_dir` (slash-separated, relative to the context; `""`
    /// for the context root), in any order, without `.` and `..`.
    fn read_dir(&self, rel_dir: &str) -> Result<Vec<DirEntry>, Self::Error>;
}

/// What a [`walk`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Directories listed with [`ContextFs::read_dir`], the root included.
    pub dirs_read: usize,
    /// Excluded directories left out whole, without listing them.
    pub dirs_skipped: usize,
    /// Entries passed to the visitor.
    pub visited: usize,
    /// Excluded entries other than skipped directories (files seen and left out).
    pub excluded: usize,
}

/// Walks the context depth first, entries of each directory in byte order of their names
/// (as BuildKit's walker does), and calls `visit` with the path and entry of everything
/// included.
///
/// An excluded directory is left out whole unless an exception could include something
/// beneath it ([`Matcher::can_skip_dir`]); then it is listed, and when something beneath it
/// is included, the excluded directories above it are visited just before it (as BuildKit
/// sends them), so `dir` + `!dir/keep` visits `dir` then `dir/keep` and nothing else.
pub fn walk<F: ContextFs>(
    fs: &F,
    matcher: &Matcher,
    mut visit: impl FnMut(&str, &DirEntry),
) -> Result<WalkStats, F::Error> {
    let mut walker = Walker {
        fs,
        matcher,
        visit: &mut visit,
        pending: Vec::new(),
        stats: WalkStats::default(),
    };
    walker.walk_dir("", None)?;
    Ok(walker.stats)
}

struct Walker<'a, F, V> {
    fs: &'a F,
    matcher: &'a Matcher,
    visit: &'a mut V,
    /// The directories above the current one, and whether each was visited.
    pending: Vec<(String, DirEntry, bool)>,
    stats: WalkStats,
}

impl<F: ContextFs, V: FnMut(&str, &DirEntry)> Walker<'_, F, V> {
    /// Walks `dir`, given which patterns matched it (`None` for the root).
    fn walk_dir(&mut self, dir: &str, hits: Option<&[bool]>) -> Result<(), F::Error> {
        let mut entries = self.fs.read_dir(dir)?;
        self.stats.dirs_read += 1;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            let path = if dir.is_empty() {
                entry.name.clone()
            } else {
                format!("{dir}/{}", entry.name)
            };
            let (excluded, entry_hits) = self.matcher.evaluate(&path, hits);
            if !excluded {
                self.visit_pending();
                (self.visit)(&path, &entry);
                self.stats.visited += 1;
            }
            if entry.is_dir {
                if excluded && !self.matcher.exception_may_match_below(&path) {
                    self.stats.dirs_skipped += 1;
                    continue;
                }
                self.pending.push((path.clone(), entry, !excluded));
                let walked = self.walk_dir(&path, Some(&entry_hits));
                self.pending.pop();
                walked?;
            } else if excluded {
                self.stats.excluded += 1;
            }
        }
        Ok(())
    }

    fn visit_pending(&mut self) {
        for (path, entry, visited) in &mut self.pending {
            if !*visited {
                (self.visit)(path, entry);
                self.stats.visited += 1;
                *visited = true;
            }
        }
    }
}
