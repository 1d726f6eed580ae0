//! `.dockerignore`: an ignore file (the input up to its first NUL) and a context tree (the
//! paths after it, plus fixed ones and paths made from the patterns' own text). Properties:
//! - rendering the parsed patterns back into a file and parsing that gives the same patterns
//!   (cleaning is idempotent, nothing is lost or turned into a comment);
//! - `walk` (what kiln sends as the context) visits exactly the files `is_excluded` (what
//!   COPY checks) keeps, every kept directory, and an excluded directory only above something
//!   kept: skipping a directory via `can_skip_dir` never loses an included file;
//! - `can_skip_dir(d)` implies every path below `d` is excluded.
#![no_main]

use kiln_dockerfile::ignore::{parse_ignore_file, walk, ContextFs, DirEntry};
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeMap, BTreeSet};

/// Directories of an in-memory context: dir → entries.
struct Tree(BTreeMap<String, Vec<DirEntry>>);

impl ContextFs for Tree {
    type Error = ();
    fn read_dir(&self, rel_dir: &str) -> Result<Vec<DirEntry>, ()> {
        Ok(self.0.get(rel_dir).cloned().unwrap_or_default())
    }
}

const FIXED: [&str; 10] = [
    "a",
    "a/b",
    "a/b/c.txt",
    "b/a",
    "x/y/z/a",
    ".git/config",
    "node_modules/m/index.js",
    "Dockerfile",
    "src/main.rs",
    "a b/[x]*?",
];

/// A path's components as a walk would see them: no empty, `.` or `..` names.
fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (ignore_text, tree_text) = text.split_once('\0').unwrap_or((&text, ""));
    let Ok(file) = parse_ignore_file(ignore_text) else {
        return;
    };

    // One pattern a line after an empty first line (only the first line loses a BOM). A
    // pattern's own leading or trailing white space, `!` or `#` (`/ a` gives ` a`, `/!a` gives
    // `!a`, as in docker) would be trimmed or read as an exception or a comment: a `/` around
    // it keeps it, and cleaning removes that again.
    let rendered: String = std::iter::once("\n".to_owned())
        .chain(file.patterns.iter().map(|p| {
            let mut text = p.text.clone();
            if text.starts_with(|c: char| c.is_whitespace() || c == '!' || c == '#') {
                text.insert(0, '/');
            }
            if text.ends_with(char::is_whitespace) {
                text.push('/');
            }
            format!("{}{text}\n", if p.exception { "!" } else { "" })
        }))
        .collect();
    let again = parse_ignore_file(&rendered).expect("rendered patterns parse");
    let texts = |f: &kiln_dockerfile::ignore::IgnoreFile| -> Vec<(bool, String)> {
        f.patterns
            .iter()
            .map(|p| (p.exception, p.text.clone()))
            .collect()
    };
    assert_eq!(texts(&again), texts(&file), "rendered as {rendered:?}");

    let Ok(matcher) = file.matcher() else {
        return;
    };

    // The tree: paths given, fixed ones, and each pattern's text with its wildcards filled in.
    let mut paths: Vec<String> = tree_text.lines().map(str::to_owned).collect();
    paths.extend(FIXED.iter().map(|p| p.to_string()));
    for p in file.patterns.iter().take(16) {
        let filled: String = p
            .text
            .chars()
            .filter(|c| !matches!(c, '[' | ']' | '\\' | '^'))
            .map(|c| match c {
                '*' | '?' => 'x',
                c => c,
            })
            .collect();
        paths.push(filled.clone());
        paths.push(format!("{filled}/inner"));
    }
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    for path in paths.iter().take(64) {
        let parts = components(path);
        let mut dir = String::new();
        for (i, part) in parts.iter().enumerate() {
            let here = join(&dir, part);
            if i + 1 < parts.len() {
                dirs.insert(here.clone());
            } else {
                files.insert(here.clone());
            }
            dir = here;
        }
    }
    // A name that is a directory somewhere is a directory.
    files.retain(|f| !dirs.contains(f));
    let mut listing: BTreeMap<String, Vec<DirEntry>> = BTreeMap::new();
    for (path, is_dir) in dirs
        .iter()
        .map(|d| (d, true))
        .chain(files.iter().map(|f| (f, false)))
    {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        listing.entry(parent.to_owned()).or_default().push(DirEntry {
            name: name.to_owned(),
            is_dir,
        });
    }

    let mut visited: BTreeSet<String> = BTreeSet::new();
    walk(&Tree(listing), &matcher, |path, _| {
        assert!(visited.insert(path.to_owned()), "{path} visited twice");
    })
    .expect("in-memory walk");

    for f in &files {
        assert_eq!(
            visited.contains(f),
            !matcher.is_excluded(f),
            "walk and is_excluded disagree on the file {f:?}"
        );
    }
    for d in &dirs {
        let excluded = matcher.is_excluded(d);
        if !excluded {
            assert!(visited.contains(d), "kept directory {d:?} not visited");
        } else if visited.contains(d) {
            let prefix = format!("{d}/");
            assert!(
                visited
                    .iter()
                    .any(|v| v.starts_with(&prefix) && !matcher.is_excluded(v)),
                "excluded directory {d:?} visited with nothing kept below it"
            );
        }
        if matcher.can_skip_dir(d) {
            for below in files.iter().chain(&dirs).filter(|p| p.starts_with(&format!("{d}/"))) {
                assert!(
                    matcher.is_excluded(below),
                    "{d:?} may be skipped but {below:?} is kept"
                );
            }
        }
    }
    for v in &visited {
        assert!(
            files.contains(v) || dirs.contains(v),
            "visited {v:?}, which is not in the tree"
        );
    }
});
