//! [`ContextFs`] over a directory of the local file system, with `std::fs`.
//!
//! `kiln_dockerfile::ignore` does no I/O; this is the real-disk side of its walker.

use kiln_dockerfile::ignore::{ContextFs, DirEntry};
use std::io;
use std::path::PathBuf;

/// A build context on the local disk, rooted at a directory.
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
