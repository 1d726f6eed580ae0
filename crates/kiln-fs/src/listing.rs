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

/// The paths of a stack of layers, whiteouts applied, by path relative to the root (`a/b`).
#[derive(Debug, Default, Clone)]
pub struct StackListing {
    paths: BTreeMap<String, PathKind>,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

fn clean(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl StackListing {
    /// Adds the next layer (above those added before): gzip, zstd or plain tar.
    pub fn add_layer<R: Read>(&mut self, layer: R) -> Result<(), ListingError> {
        let mut archive = tar::Archive::new(Decompressor::new(layer)?);
        let mut added: BTreeMap<String, PathKind> = BTreeMap::new();
        for entry in archive.entries()? {
            let entry = entry?;
            let path = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (p.to_owned(), n),
                None => (String::new(), path.as_str()),
            };
            // Whiteouts hide what lower layers have, never this layer's own entries.
            if name == OPAQUE_MARKER {
                self.remove_below(&parent);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                let hidden = if parent.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{parent}/{hidden}")
                };
                self.paths.remove(&hidden);
                self.remove_below(&hidden);
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
            if path.is_empty() {
                continue;
            }
            added.insert(path, kind);
        }
        for (path, kind) in added {
            if kind != PathKind::Dir {
                // A file or link replaces a lower directory and all below it.
                self.remove_below(&path);
            }
            self.paths.insert(path, kind);
        }
        Ok(())
    }

    fn remove_below(&mut self, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.paths
            .retain(|p, _| !p.starts_with(&prefix) || p == dir);
        if dir.is_empty() {
            self.paths.clear();
        }
    }

    /// What the stack has at `path` (absolute or relative; `.` and empty parts ignored), if
    /// anything. Symlinks on the way are not followed.
    pub fn kind(&self, path: &str) -> Option<&PathKind> {
        self.paths.get(&clean(path))
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
        stack
            .add_layer(
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
            .unwrap();
        stack
            .add_layer(
                &layer(&[
                    ("opt/app", Regular, ""),
                    (".wh.gone", Regular, ""),
                    ("opaque/new", Regular, ""),
                    ("opaque/.wh..wh..opq", Regular, ""),
                ])[..],
            )
            .unwrap();
        assert_eq!(stack.kind("/etc"), Some(&PathKind::Dir));
        assert_eq!(stack.kind("etc/conf"), Some(&PathKind::Other));
        assert_eq!(stack.kind("/opt/app"), Some(&PathKind::Other));
        assert_eq!(stack.kind("/opt/app/x"), None, "below a replaced directory");
        assert_eq!(stack.kind("/gone"), None);
        assert_eq!(stack.kind("/gone/f"), None);
        assert_eq!(stack.kind("/opaque/old"), None);
        assert_eq!(stack.kind("/opaque/new"), Some(&PathKind::Other));
        assert_eq!(stack.kind("/link"), Some(&PathKind::Symlink("etc".into())));
    }
}
