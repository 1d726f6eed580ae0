//! What a stack of layers makes at each path, read from their tar headers alone (nothing is
//! extracted): lets a stage that only adds files ask "is this path a directory in the base?"
//! without unpacking the base.

use crate::decompress::Decompressor;
use std::collections::BTreeMap;
use std::io::Read;

/// The type of what a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// A directory.
    Dir,
    /// A symbolic link, with its target as written.
    Symlink(String),
    /// A regular file, hard link, device or FIFO.
    Other,
}

/// Why a layer could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The stream is not a readable (gzip, zstd or plain) tar.
    #[error("reading the layer's tar headers: {0}")]
    Read(#[from] std::io::Error),
}

/// One layer's entries, as its tar headers say, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LayerEntries {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Path(String, PathKind),
    /// `.wh.NAME`: the path hides what lower layers have there.
    Whiteout(String),
    /// `.wh..wh..opq` in a directory: it hides what lower layers have below it.
    Opaque(String),
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

fn clean(path: &str) -> String {
    crate::image_path::components(path)
        .collect::<Vec<_>>()
        .join("/")
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

impl LayerEntries {
    /// Reads a layer's tar headers (gzip, zstd or plain), skipping the file contents.
    pub fn read<R: Read>(layer: R) -> Result<LayerEntries, ListingError> {
        let mut archive = tar::Archive::new(Decompressor::new(layer)?);
        let mut entries = Vec::new();
        for entry in archive.entries()? {
            let entry = entry?;
            let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (p, n),
                None => ("", path.as_str()),
            };
            if name == OPAQUE_MARKER {
                entries.push(Entry::Opaque(parent.to_owned()));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                entries.push(Entry::Whiteout(join(parent, hidden)));
                continue;
            }
            if path.is_empty() {
                continue;
            }
            let header = entry.header();
            let kind = match header.entry_type() {
                tar::EntryType::Directory => PathKind::Dir,
                tar::EntryType::Symlink => PathKind::Symlink(
                    header
                        .link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                        .unwrap_or_default(),
                ),
                _ => PathKind::Other,
            };
            entries.push(Entry::Path(path, kind));
        }
        Ok(LayerEntries { entries })
    }

    /// A text form for a cache: one entry per line, tab-separated, `\`, tab and newline
    /// escaped.
    pub fn to_text(&self) -> String {
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
        };
        let mut out = String::new();
        for entry in &self.entries {
            let line = match entry {
                Entry::Path(p, PathKind::Dir) => format!("d\t{}", esc(p)),
                Entry::Path(p, PathKind::Other) => format!("f\t{}", esc(p)),
                Entry::Path(p, PathKind::Symlink(t)) => format!("l\t{}\t{}", esc(p), esc(t)),
                Entry::Whiteout(p) => format!("w\t{}", esc(p)),
                Entry::Opaque(p) => format!("o\t{}", esc(p)),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Parses [`LayerEntries::to_text`]'s form; `None` when it is not that.
    pub fn from_text(text: &str) -> Option<LayerEntries> {
        let unesc = |s: &str| {
            let mut out = String::with_capacity(s.len());
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next()? {
                    't' => out.push('\t'),
                    'n' => out.push('\n'),
                    '\\' => out.push('\\'),
                    _ => return None,
                }
            }
            Some(out)
        };
        let mut entries = Vec::new();
        for line in text.lines() {
            let mut fields = line.split('\t');
            let entry = match (fields.next()?, fields.next()) {
                ("d", Some(p)) => Entry::Path(unesc(p)?, PathKind::Dir),
                ("f", Some(p)) => Entry::Path(unesc(p)?, PathKind::Other),
                ("l", Some(p)) => Entry::Path(unesc(p)?, PathKind::Symlink(unesc(fields.next()?)?)),
                ("w", Some(p)) => Entry::Whiteout(unesc(p)?),
                ("o", Some(p)) => Entry::Opaque(unesc(p)?),
                _ => return None,
            };
            entries.push(entry);
        }
        Some(LayerEntries { entries })
    }
}

/// The paths of a stack of layers, whiteouts applied, by path relative to the root (`a/b`).
#[derive(Debug, Default, Clone)]
pub struct StackListing {
    paths: BTreeMap<String, PathKind>,
}

impl StackListing {
    /// Adds the next layer's entries (above those added before).
    pub fn add(&mut self, layer: &LayerEntries) {
        let mut added: BTreeMap<String, PathKind> = BTreeMap::new();
        for entry in &layer.entries {
            match entry {
                // Whiteouts hide what lower layers have, never this layer's own entries.
                Entry::Opaque(dir) => self.remove_below(dir),
                Entry::Whiteout(hidden) => {
                    self.paths.remove(hidden);
                    self.remove_below(hidden);
                }
                Entry::Path(path, kind) => {
                    added.insert(path.clone(), kind.clone());
                }
            }
        }
        for (path, kind) in added {
            if kind != PathKind::Dir {
                // A file or link replaces a lower directory and all below it.
                self.remove_below(&path);
            }
            self.paths.insert(path, kind);
        }
    }

    fn remove_below(&mut self, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.paths
            .retain(|p, _| p.as_str() == dir || !p.starts_with(&prefix));
    }

    /// What the stack has at `path` (absolute or relative; `.` and empty parts ignored), if
    /// anything. Symlinks on the way are not followed.
    pub fn kind(&self, path: &str) -> Option<&PathKind> {
        self.paths.get(&clean(path))
    }

    /// `path` (absolute, in the image) with the stack's symlinks followed in every component,
    /// as the kernel would with the image's root as `/` (`..` stops at the root; a path that
    /// goes on past what exists is kept as written). Returns an absolute, clean path.
    pub fn resolve(&self, path: &str) -> std::io::Result<String> {
        let resolved = crate::image_path::resolve(path, true, |rel| {
            Ok(match self.paths.get(rel) {
                Some(PathKind::Symlink(target)) => Some(target.clone()),
                _ => None,
            })
        })?;
        Ok(format!("/{resolved}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(0);
            header.set_mode(0o755);
            if !link.is_empty() {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, &[][..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_and_replacements_apply_across_layers() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let mut stack = StackListing::default();
        stack.add(
            &LayerEntries::read(
                &layer(&[
                    ("etc/", Directory, ""),
                    ("etc/conf", Regular, ""),
                    ("opt/app/", Directory, ""),
                    ("opt/app/x", Regular, ""),
                    ("gone/", Directory, ""),
                    ("gone/f", Regular, ""),
                    ("opaque/", Directory, ""),
                    ("opaque/old", Regular, ""),
                    ("link", Symlink, "etc"),
                ])[..],
            )
            .unwrap(),
        );
        stack.add(
            &LayerEntries::read(
                &layer(&[
                    ("opt/app", Regular, ""),
                    (".wh.gone", Regular, ""),
                    ("opaque/new", Regular, ""),
                    ("opaque/.wh..wh..opq", Regular, ""),
                ])[..],
            )
            .unwrap(),
        );
        assert_eq!(stack.kind("/etc"), Some(&PathKind::Dir));
        assert_eq!(stack.kind("etc/conf"), Some(&PathKind::Other));
        assert_eq!(stack.kind("/opt/app"), Some(&PathKind::Other));
        assert_eq!(stack.kind("/opt/app/x"), None, "below a replaced directory");
        assert_eq!(stack.kind("/gone"), None);
        assert_eq!(stack.kind("/gone/f"), None);
        assert_eq!(stack.kind("/opaque/old"), None);
        assert_eq!(stack.kind("/opaque/new"), Some(&PathKind::Other));
        assert_eq!(stack.kind("/link"), Some(&PathKind::Symlink("etc".into())));
        assert_eq!(stack.resolve("/link/conf").unwrap(), "/etc/conf");
        assert_eq!(stack.resolve("/link/../opt/new/x").unwrap(), "/opt/new/x");
    }

    #[test]
    fn entries_survive_their_text_form() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let entries = LayerEntries::read(
            &layer(&[
                ("a b/", Directory, ""),
                ("a b/t\\ab", Regular, ""),
                ("a b/.wh.gone", Regular, ""),
                ("x/.wh..wh..opq", Regular, ""),
                ("l", Symlink, "../x y"),
            ])[..],
        )
        .unwrap();
        let text = entries.to_text();
        assert_eq!(LayerEntries::from_text(&text), Some(entries));
        assert_eq!(LayerEntries::from_text("?\tnope\n"), None);
    }
}
