//! COPY and ADD file semantics (BuildKit's): glob sources, directory contents, the
//! trailing-slash rules, `--chown`, `--chmod`, `--parents`, `--exclude`, hard links kept, and
//! ADD's auto-extraction of local archives. Destinations are resolved inside the rootfs.

use crate::context::ContextView;
use crate::paths::{self, host, mkdir_all, resolve_in_root};
use kiln_dockerfile::ignore::Matcher;
use kiln_dockerfile::mount::Chmod;
use kiln_fs::decompress::Decompressor;
use kiln_fs::snapshot::{Change, ChangeKind};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{chown, lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where COPY reads from.
pub enum Source<'a> {
    /// The build context (after `.dockerignore`); files become owned by 0:0.
    Context(&'a ContextView),
    /// Another stage's or image's root file system; owners are kept.
    Rootfs(&'a Path),
}

impl Source<'_> {
    fn root(&self) -> &Path {
        match self {
            Source::Context(c) => &c.root,
            Source::Rootfs(p) => p,
        }
    }

    fn visible(&self, rel: &str) -> bool {
        match self {
            Source::Context(c) => rel.is_empty() || c.included.contains(rel),
            Source::Rootfs(p) => fs::symlink_metadata(host(p, rel)).is_ok(),
        }
    }

    /// Names in the directory `rel` the build may see, sorted.
    fn children(&self, rel: &str) -> Vec<String> {
        match self {
            Source::Context(c) => {
                let prefix = if rel.is_empty() {
                    String::new()
                } else {
                    format!("{rel}/")
                };
                c.included
                    .range(prefix.clone()..)
                    .take_while(|p| p.starts_with(&prefix))
                    .filter_map(|p| {
                        let rest = &p[prefix.len()..];
                        (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
                    })
                    .collect()
            }
            Source::Rootfs(p) => {
                let mut names: Vec<String> = fs::read_dir(host(p, rel))
                    .map(|rd| {
                        rd.filter_map(Result::ok)
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                names
            }
        }
    }
}

/// One COPY/ADD, expanded and checked.
pub struct CopySpec<'a> {
    /// Source paths or globs, as written (relative to the source root).
    pub sources: Vec<String>,
    /// Inline (heredoc) sources: name and content.
    pub inline: Vec<(String, String)>,
    /// Downloaded sources (ADD of a URL): name, file, modification time.
    pub downloads: Vec<(String, PathBuf, Option<i64>)>,
    /// The destination, absolute, with a trailing `/` kept when written.
    pub dest: String,
    /// `--chown`, resolved.
    pub owner: Option<(u32, u32)>,
    /// `--chmod`.
    pub chmod: Option<&'a Chmod>,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Option<&'a Matcher>,
    /// ADD: extract local archives.
    pub unpack_archives: bool,
    /// Record the directories made to hold the destination as changes.
    pub record_parents: bool,
}

/// Carries out `spec` from `source` into `root`; returns the changes made (for the layer).
pub fn copy(source: &Source<'_>, spec: &CopySpec<'_>, root: &Path) -> Result<Vec<Change>, String> {
    let mut matches: Vec<(String, String)> = Vec::new(); // (rel path, path under --parents)
    for pattern in &spec.sources {
        let cleaned = clean_rel(pattern);
        let found = if has_glob(&cleaned) {
            // A pattern matching nothing is fine beside other sources (BuildKit allows empty
            // wildcards); the COPY as a whole must copy something.
            let found = glob(source, &cleaned);
            if found.is_empty() && spec.sources.len() + spec.inline.len() == 1 {
                return Err(format!(
                    "no source files were specified: {pattern:?} matches nothing{}",
                    ignored_note(source, None)
                ));
            }
            found
        } else {
            if !source.visible(&cleaned) && !visible_through_links(source, &cleaned) {
                return Err(format!(
                    "{pattern:?}: file not found in {}{}",
                    match source {
                        Source::Context(_) => "the build context",
                        Source::Rootfs(_) => "the source stage or image",
                    },
                    ignored_note(source, Some(&cleaned))
                ));
            }
            vec![cleaned]
        };
        for rel in found {
            let parents_path = pivot(pattern, &rel);
            matches.push((rel, parents_path));
        }
    }
    if matches.is_empty()
        && spec.inline.is_empty()
        && spec.downloads.is_empty()
        && !spec.sources.is_empty()
    {
        return Err(format!(
            "no source files were specified: {} match nothing{}",
            spec.sources.join(" "),
            ignored_note(source, None)
        ));
    }
    // Several sources and a destination that is not a directory: BuildKit copies each to it
    // in turn (the last one stays), where the classic builder refused.
    let dest_is_dir = spec.dest.ends_with('/')
        || spec.parents
        || resolve_in_root(root, &spec.dest, true)
            .map(|r| fs::metadata(host(root, &r)).is_ok_and(|m| m.is_dir()))
            .unwrap_or(false);
    let owner_default = spec.owner.unwrap_or((0, 0));
    let mut w = Writer {
        root,
        record_parents: spec.record_parents,
        keep_owner: matches!(source, Source::Rootfs(_)) && spec.owner.is_none(),
        owner: owner_default,
        chmod: spec.chmod,
        changes: Vec::new(),
        links: HashMap::new(),
        dir_times: Vec::new(),
    };
    let dest = paths::clean_abs(&spec.dest);
    for (name, content) in &spec.inline {
        let target = if dest_is_dir {
            format!("{dest}/{name}")
        } else {
            w.through_link(&dest)?
        };
        // BuildKit makes inline files 0664 before copying them.
        w.write_bytes(&target, content.as_bytes(), 0o664)?;
    }
    for (name, file, mtime) in &spec.downloads {
        let target = if dest_is_dir {
            format!("{dest}/{name}")
        } else {
            w.through_link(&dest)?
        };
        // ADD of a URL: 0600 as BuildKit makes it, its time from Last-Modified.
        w.write_file(&target, file, 0o600, *mtime)?;
    }
    for (rel, parents_path) in &matches {
        // Each match is its own copy in BuildKit: hard links between matches are not kept.
        w.links.clear();
        // The source path itself is followed when it is a symlink (BuildKit's FollowSymlinks),
        // inside its root; a link that leads nowhere there is copied as the link it is.
        let followed = resolve_in_root(source.root(), rel, true)
            .ok()
            .filter(|r| fs::symlink_metadata(host(source.root(), r)).is_ok());
        let resolved = followed.unwrap_or_else(|| rel.clone());
        let src_host = host(source.root(), &resolved);
        let meta = fs::symlink_metadata(&src_host).map_err(|e| format!("{rel:?}: {e}"))?;
        if meta.is_dir() {
            let target = if spec.parents && !parents_path.is_empty() {
                format!("{dest}/{parents_path}")
            } else {
                dest.clone()
            };
            // The destination of a directory's contents is made as its parents are (0755,
            // the --chown owner, no --chmod), as BuildKit does.
            w.ensure_dir(&target, None, None)?;
            w.copy_tree(source, &resolved, &target, spec.exclude, "")?;
        } else {
            let base = rel.rsplit('/').next().unwrap_or(rel);
            let target = if spec.parents && !parents_path.is_empty() {
                format!("{dest}/{parents_path}")
            } else if dest_is_dir {
                format!("{dest}/{base}")
            } else {
                w.through_link(&dest)?
            };
            if spec.unpack_archives
                && meta.is_file()
                && is_archive(&src_host).map_err(|e| format!("{rel:?}: {e}"))?
            {
                w.extract(&src_host, &dest)?;
                continue;
            }
            w.copy_entry(&src_host, &meta, &target)?;
        }
    }
    w.finish()
}

/// Whether a context path reaches a file of the context through symlinks in it: BuildKit
/// resolves a COPY source's links with the context as root (`inside/file` where `inside -> sub`
/// copies `sub/file`). Every entry written on the path and what the links lead to must be in
/// the context (not excluded); a link out of the context resolves inside it, where nothing is.
fn visible_through_links(source: &Source<'_>, rel: &str) -> bool {
    if !matches!(source, Source::Context(_)) {
        return false;
    }
    let mut resolved = String::new();
    for part in rel.split('/') {
        let candidate = if resolved.is_empty() {
            part.to_owned()
        } else {
            format!("{resolved}/{part}")
        };
        if !source.visible(&candidate) {
            return false;
        }
        match resolve_in_root(source.root(), &candidate, true) {
            Ok(r) => resolved = r,
            Err(_) => return false,
        }
    }
    source.visible(&resolved) && fs::symlink_metadata(host(source.root(), &resolved)).is_ok()
}

fn ignored_note(source: &Source<'_>, rel: Option<&str>) -> String {
    match (source, rel) {
        (Source::Context(c), Some(rel)) if c.is_ignored(rel) => format!(
            " (it is excluded by {})",
            c.ignore_file.as_deref().unwrap_or(".dockerignore")
        ),
        (Source::Context(c), None) if c.ignore_file.is_some() => format!(
            " (after {} exclusions)",
            c.ignore_file.as_deref().unwrap_or(".dockerignore")
        ),
        _ => String::new(),
    }
}

/// A source path relative to its root, cleaned; `..` cannot climb out.
pub fn clean_rel(path: &str) -> String {
    paths::clean_abs(&format!("/{path}"))
        .trim_start_matches('/')
        .to_owned()
}

/// For `--parents`: the part of the path kept under the destination: all of it, or what
/// follows a `/./` pivot in the pattern.
fn pivot(pattern: &str, matched: &str) -> String {
    match pattern.find("/./") {
        Some(i) => {
            let skip = clean_rel(&pattern[..i]);
            let depth = if skip.is_empty() {
                0
            } else {
                skip.split('/').count()
            };
            matched.split('/').skip(depth).collect::<Vec<_>>().join("/")
        }
        None => matched.to_owned(),
    }
}

/// Every context path a COPY of `sources` may read, sorted: what each source matches (a
/// symlink also through its target, followed inside the context as [`copy`] follows it) and
/// everything under a matched directory. `--exclude` is not applied: the set may be larger
/// than what is copied, never smaller (the build cache keys on it).
pub(crate) fn context_read_set(context: &ContextView, sources: &[String]) -> Vec<String> {
    let source = Source::Context(context);
    let mut read = std::collections::BTreeSet::new();
    for pattern in sources {
        let cleaned = clean_rel(pattern);
        let found = if has_glob(&cleaned) {
            glob(&source, &cleaned)
        } else if source.visible(&cleaned) {
            vec![cleaned]
        } else {
            Vec::new()
        };
        for rel in found {
            let mut roots = vec![rel.clone()];
            // COPY follows a source symlink inside the context whether or not .dockerignore
            // leaves its target in, so the target is read either way.
            if let Ok(followed) = resolve_in_root(&context.root, &rel, true) {
                if followed != rel && fs::symlink_metadata(host(&context.root, &followed)).is_ok() {
                    roots.push(followed);
                }
            }
            for root in roots {
                if root.is_empty() {
                    read.extend(context.included.iter().cloned());
                    continue;
                }
                let prefix = format!("{root}/");
                read.extend(
                    context
                        .included
                        .range(prefix.clone()..)
                        .take_while(|p| p.starts_with(&prefix))
                        .cloned(),
                );
                read.insert(root);
            }
        }
    }
    read.into_iter().collect()
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands a glob one path component at a time (Go's `filepath.Glob`: `*` never matches `/`).
fn glob(source: &Source<'_>, pattern: &str) -> Vec<String> {
    let mut current = vec![String::new()];
    for part in pattern.split('/') {
        let mut next = Vec::new();
        for dir in &current {
            if has_glob(part) {
                for name in source.children(dir) {
                    if match_component(part.as_bytes(), name.as_bytes()) {
                        next.push(join(dir, &name));
                    }
                }
            } else {
                let unescaped = part.replace('\\', "");
                let p = join(dir, &unescaped);
                if source.visible(&p) {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Go's `filepath.Match` for one component.
pub fn match_component(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let (mut star_p, mut star_n) = (None, 0);
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = Some(p);
                    star_n = n;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, len)) = match_class(&pattern[p..], name[n]) {
                        if matched {
                            p += len;
                            n += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == name[n] {
                        p += 2;
                        n += 1;
                        continue;
                    }
                }
                c => {
                    if c == name[n] {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
            }
        }
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_n += 1;
                n = star_n;
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// `[...]` at the start of `pattern`: whether `c` matches, and the class's length.
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(1), Some(b'^') | Some(b'!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        if pattern[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if pattern[i] == b'\\' {
            i += 1;
            *pattern.get(i)?
        } else {
            pattern[i]
        };
        i += 1;
        let hi = if pattern.get(i) == Some(&b'-') && pattern.get(i + 1).is_some_and(|b| *b != b']')
        {
            i += 1;
            let h = if pattern[i] == b'\\' {
                i += 1;
                *pattern.get(i)?
            } else {
                pattern[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    None
}

/// A symbolic or octal `--chmod` applied to `mode` (permission bits and setuid/gid/sticky).
pub fn apply_chmod(chmod: &Chmod, mode: u32, is_dir: bool) -> u32 {
    match chmod {
        Chmod::Octal(m) => *m,
        Chmod::Symbolic(text) => {
            let mut mode = mode & 0o7777;
            for clause in text.split(',') {
                let who_end = clause
                    .find(|c: char| !"ugoa".contains(c))
                    .unwrap_or(clause.len());
                let who = &clause[..who_end];
                let mask = if who.is_empty() || who.contains('a') {
                    0o7777
                } else {
                    let mut m = 0;
                    if who.contains('u') {
                        m |= 0o4700;
                    }
                    if who.contains('g') {
                        m |= 0o2070;
                    }
                    if who.contains('o') {
                        m |= 0o1007;
                    }
                    m
                };
                let mut rest = &clause[who_end..];
                while let Some(op) = rest.chars().next() {
                    rest = &rest[1..];
                    let perm_end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
                    let perms = &rest[..perm_end];
                    rest = &rest[perm_end..];
                    let mut bits = 0;
                    for p in perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            'u' => ((mode >> 6) & 7) * 0o111,
                            'g' => ((mode >> 3) & 7) * 0o111,
                            'o' => (mode & 7) * 0o111,
                            _ => 0,
                        };
                    }
                    let bits = bits & mask;
                    match op {
                        '+' => mode |= bits,
                        '-' => mode &= !bits,
                        _ => mode = (mode & !mask) | bits,
                    }
                }
            }
            mode
        }
    }
}

/// Whether `path` is a (possibly compressed) tar archive, judged by content as docker does: a
/// format kiln-fs's sniffer knows, and a valid tar header once decompressed.
fn is_archive(path: &Path) -> io::Result<bool> {
    let mut reader = Decompressor::any_format(File::open(path)?)?;
    let mut block = vec![0u8; 512];
    let n = read_up_to(&mut reader, &mut block)?;
    Ok(n == 512 && is_tar_header(&block))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn is_tar_header(block: &[u8]) -> bool {
    // The checksum field holds the sum of the header bytes with itself taken as spaces.
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(recorded) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == recorded
}

struct Writer<'a> {
    root: &'a Path,
    record_parents: bool,
    keep_owner: bool,
    owner: (u32, u32),
    chmod: Option<&'a Chmod>,
    changes: Vec<Change>,
    /// First destination written for each multiply-linked source inode.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories whose mtime is set once their entries are written.
    dir_times: Vec<(PathBuf, i64, i64)>,
}

impl Writer<'_> {
    fn record(&mut self, rel: &str, kind: ChangeKind) {
        if !rel.is_empty() {
            self.changes.push(Change {
                path: PathBuf::from(rel),
                kind,
            });
        }
    }

    /// Resolves the parent of `dest` inside the root (creating it) and returns the entry's
    /// relative path; the last component is not followed.
    fn prepare(&mut self, dest: &str) -> Result<String, String> {
        let dest = paths::clean_abs(dest);
        let (parent, name) = dest.rsplit_once('/').unwrap_or(("", &dest));
        let parent_rel = resolve_in_root(
            self.root,
            if parent.is_empty() { "/" } else { parent },
            true,
        )
        .map_err(|e| format!("{dest}: {e}"))?;
        let mut created = Vec::new();
        mkdir_all(self.root, &parent_rel, 0o755, self.owner, &mut created)
            .map_err(|e| format!("creating {parent}: {e}"))?;
        if self.record_parents {
            for c in created {
                self.record(&c, ChangeKind::Added);
            }
        }
        Ok(if parent_rel.is_empty() {
            name.to_owned()
        } else {
            format!("{parent_rel}/{name}")
        })
    }

    /// Removes what is at `rel` unless it is a directory; returns the change kind writing a
    /// `want_dir` entry there makes.
    fn clear(&mut self, rel: &str, want_dir: bool) -> Result<Option<ChangeKind>, String> {
        let path = host(self.root, rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && want_dir => Ok(None),
            Ok(m) if m.is_dir() => Err(format!("cannot replace the directory /{rel} with a file")),
            Ok(_) => {
                fs::remove_file(&path).map_err(|e| format!("replacing /{rel}: {e}"))?;
                Ok(Some(if want_dir {
                    ChangeKind::TypeChanged
                } else {
                    ChangeKind::Modified
                }))
            }
            Err(_) => Ok(Some(ChangeKind::Added)),
        }
    }

    fn mode_for(&self, mode: u32, is_dir: bool) -> u32 {
        match self.chmod {
            Some(c) => apply_chmod(c, mode, is_dir),
            None => mode & 0o7777,
        }
    }

    fn owner_for(&self, meta: &fs::Metadata) -> (u32, u32) {
        if self.keep_owner {
            (meta.uid(), meta.gid())
        } else {
            self.owner
        }
    }

    /// Makes sure the directory `dest` exists; a new one takes `meta`'s mode and times.
    fn ensure_dir(
        &mut self,
        dest: &str,
        meta: Option<&fs::Metadata>,
        src_dir: Option<&Path>,
    ) -> Result<String, String> {
        let rel = self.prepare(dest)?;
        let rel =
            resolve_in_root(self.root, &format!("/{rel}"), true).map_err(|e| e.to_string())?;
        if let Some(kind) = self.clear(&rel, true)? {
            let path = host(self.root, &rel);
            fs::create_dir(&path).map_err(|e| format!("creating {dest}: {e}"))?;
            let mode = meta.map_or(0o755, |m| self.mode_for(m.mode(), true));
            let owner = meta.map_or(self.owner, |m| self.owner_for(m));
            set_meta(&path, mode, owner).map_err(|e| format!("{dest}: {e}"))?;
            if let Some(src) = src_dir {
                kiln_fs::xattr::copy_image_xattrs(src, &path)
                    .map_err(|e| format!("{dest}: {e}"))?;
            }
            if let Some(m) = meta {
                self.dir_times.push((path, m.mtime(), m.mtime_nsec()));
            }
            self.record(&rel, kind);
        }
        Ok(rel)
    }

    /// Copies the entries of the source directory `src_rel` into `dest`, recursively.
    fn copy_tree(
        &mut self,
        source: &Source<'_>,
        src_rel: &str,
        dest: &str,
        exclude: Option<&Matcher>,
        below: &str,
    ) -> Result<(), String> {
        for name in source.children(src_rel) {
            let child = join(src_rel, &name);
            let rel_below = join(below, &name);
            if exclude.is_some_and(|m| m.is_excluded(&rel_below)) {
                continue;
            }
            let src_host = host(source.root(), &child);
            let meta = fs::symlink_metadata(&src_host).map_err(|e| format!("{child}: {e}"))?;
            let target = format!("{dest}/{name}");
            if meta.is_dir() {
                self.ensure_dir(&target, Some(&meta), Some(&src_host))?;
                self.copy_tree(source, &child, &target, exclude, &rel_below)?;
            } else {
                self.copy_entry(&src_host, &meta, &target)?;
            }
        }
        Ok(())
    }

    /// The path a file written at the COPY's destination `dest` lands at: a symlink there is
    /// written through (BuildKit resolves the destination in the root), else `dest`.
    fn through_link(&self, dest: &str) -> Result<String, String> {
        let Ok(rel) = resolve_in_root(self.root, dest, false) else {
            return Ok(dest.to_owned());
        };
        let is_link =
            fs::symlink_metadata(host(self.root, &rel)).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            return Ok(dest.to_owned());
        }
        let target = resolve_in_root(self.root, dest, true).map_err(|e| format!("{dest}: {e}"))?;
        Ok(format!("/{target}"))
    }

    /// Copies one non-directory entry to `dest`.
    fn copy_entry(&mut self, src: &Path, meta: &fs::Metadata, dest: &str) -> Result<(), String> {
        let rel = self.prepare(dest)?;
        let err = |e: io::Error| format!("copying to {dest}: {e}");
        let Some(kind) = self.clear(&rel, false)? else {
            unreachable!("clear only returns None for directories")
        };
        let path = host(self.root, &rel);
        let owner = self.owner_for(meta);
        let ft = meta.file_type();
        if meta.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &path).map_err(err)?;
                self.record(&rel, kind);
                return Ok(());
            }
            self.links.insert((meta.dev(), meta.ino()), path.clone());
        }
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(err)?;
            symlink(&target, &path).map_err(err)?;
            lchown(&path, Some(owner.0), Some(owner.1)).map_err(err)?;
        } else if ft.is_file() {
            let mut input = File::open(src).map_err(err)?;
            let mut output = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(err)?;
            io::copy(&mut input, &mut output).map_err(err)?;
            drop(output);
            set_meta(&path, self.mode_for(meta.mode(), false), owner).map_err(err)?;
            kiln_fs::xattr::copy_image_xattrs(src, &path).map_err(err)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                kind,
                rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| err(e.into()))?;
            set_meta(&path, self.mode_for(meta.mode(), false), owner).map_err(err)?;
        } else {
            // Sockets cannot be copied (nor stored in a layer).
            return Ok(());
        }
        set_times(&path, meta.mtime(), meta.mtime_nsec()).map_err(err)?;
        self.record(&rel, kind);
        Ok(())
    }

    /// Writes an inline (heredoc) file.
    fn write_bytes(&mut self, dest: &str, bytes: &[u8], mode: u32) -> Result<(), String> {
        let rel = self.prepare(dest)?;
        let Some(kind) = self.clear(&rel, false)? else {
            unreachable!("clear only returns None for directories")
        };
        let path = host(self.root, &rel);
        let err = |e: io::Error| format!("writing {dest}: {e}");
        fs::write(&path, bytes).map_err(err)?;
        set_meta(&path, self.mode_for(mode, false), self.owner).map_err(err)?;
        self.record(&rel, kind);
        Ok(())
    }

    /// Writes a downloaded file.
    fn write_file(
        &mut self,
        dest: &str,
        src: &Path,
        mode: u32,
        mtime: Option<i64>,
    ) -> Result<(), String> {
        let rel = self.prepare(dest)?;
        let Some(kind) = self.clear(&rel, false)? else {
            unreachable!("clear only returns None for directories")
        };
        let path = host(self.root, &rel);
        let err = |e: io::Error| format!("writing {dest}: {e}");
        fs::copy(src, &path).map_err(err)?;
        set_meta(&path, self.mode_for(mode, false), self.owner).map_err(err)?;
        if let Some(secs) = mtime {
            set_times(&path, secs, 0).map_err(err)?;
        }
        self.record(&rel, kind);
        Ok(())
    }

    /// ADD of a local archive: its entries land in the directory `dest` (path-safe) with the
    /// owners the archive records, even with `--chown` (which only owns the directories made
    /// to hold them), as BuildKit and buildah do.
    fn extract(&mut self, src: &Path, dest: &str) -> Result<(), String> {
        let dest_rel = self.ensure_dir(dest, None, None)?;
        let target = host(self.root, &dest_rel);
        let before = kiln_fs::snapshot::StatIndex::scan(&target, &[])
            .map_err(|e| format!("scanning {dest}: {e}"))?;
        let file = File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let reader =
            Decompressor::any_format(file).map_err(|e| format!("{}: {e}", src.display()))?;
        kiln_fs::apply::apply_tar(reader, &target, &kiln_fs::apply::ApplyOptions::default())
            .map_err(|e| format!("extracting {}: {e}", src.display()))?;
        let after = kiln_fs::snapshot::StatIndex::scan(&target, &[])
            .map_err(|e| format!("scanning {dest}: {e}"))?;
        for change in kiln_fs::snapshot::diff(&before, &after).iter() {
            let rel = join(&dest_rel, &change.path.to_string_lossy());
            self.record(&rel, change.kind);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Change>, String> {
        for (path, sec, nsec) in self.dir_times.iter().rev() {
            set_times(path, *sec, *nsec).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        // Later writes to the same path replace earlier ones; keep one change per path.
        let mut seen = std::collections::HashSet::new();
        self.changes.retain(|c| seen.insert(c.path.clone()));
        Ok(self.changes)
    }
}

fn set_meta(path: &Path, mode: u32, owner: (u32, u32)) -> io::Result<()> {
    // chown first: it clears setuid/setgid bits.
    chown(path, Some(owner.0), Some(owner.1))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn set_times(path: &Path, sec: i64, nsec: i64) -> io::Result<()> {
    let ts = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go() {
        assert!(match_component(b"*.txt", b"a.txt"));
        assert!(!match_component(b"*.txt", b"a.txt.bak"));
        assert!(match_component(b"f?o", b"foo"));
        assert!(match_component(b"[a-c]x", b"bx"));
        assert!(!match_component(b"[!a-c]x", b"bx"));
        assert!(match_component(b"\\*", b"*"));
        assert!(match_component(b"*", b""));
    }

    #[test]
    fn chmod_symbolic_and_octal() {
        let sym = |s: &str| Chmod::Symbolic(s.into());
        assert_eq!(apply_chmod(&Chmod::Octal(0o640), 0o755, false), 0o640);
        assert_eq!(apply_chmod(&sym("u+x"), 0o644, false), 0o744);
        assert_eq!(apply_chmod(&sym("go-w"), 0o666, false), 0o644);
        assert_eq!(apply_chmod(&sym("a=rX"), 0o600, true), 0o555);
        assert_eq!(apply_chmod(&sym("a=rX"), 0o600, false), 0o444);
        assert_eq!(apply_chmod(&sym("u+s"), 0o755, false), 0o4755);
    }

    /// A source path goes through links of the context, resolved with the context as root;
    /// links out of it and excluded entries reach nothing.
    #[test]
    fn source_paths_follow_links_inside_the_context_only() {
        let top = tempfile::tempdir().unwrap();
        let outside = top.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "out").unwrap();
        let ctx = top.path().join("ctx");
        fs::create_dir_all(ctx.join("sub")).unwrap();
        fs::create_dir_all(ctx.join("hidden")).unwrap();
        fs::write(ctx.join("sub/file"), "in").unwrap();
        fs::write(ctx.join("hidden/file"), "in").unwrap();
        fs::write(ctx.join(".dockerignore"), "hidden\nignored-link\n").unwrap();
        symlink("sub", ctx.join("inside")).unwrap();
        symlink("/sub", ctx.join("abs_inside")).unwrap();
        symlink("sub", ctx.join("ignored-link")).unwrap();
        symlink("hidden", ctx.join("to_hidden")).unwrap();
        symlink("../outside", ctx.join("out")).unwrap();
        symlink(&outside, ctx.join("abs_out")).unwrap();
        let view = ContextView::scan(&ctx, None, None).unwrap();
        let source = Source::Context(&view);
        assert!(visible_through_links(&source, "inside/file"));
        assert!(visible_through_links(&source, "abs_inside/file"));
        assert!(!visible_through_links(&source, "ignored-link/file"));
        assert!(!visible_through_links(&source, "to_hidden/file"));
        assert!(!visible_through_links(&source, "out/secret"));
        assert!(!visible_through_links(&source, "abs_out/secret"));
        assert!(!visible_through_links(&source, "inside/absent"));
    }

    #[test]
    fn parents_pivot() {
        assert_eq!(pivot("src/./a/*.c", "src/a/x.c"), "a/x.c");
        assert_eq!(pivot("a/b.txt", "a/b.txt"), "a/b.txt");
    }
}
