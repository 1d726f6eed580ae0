//! Small records kept by key beside the content store: the build cache's entries.
//!
//! ```text
//! <root>/cache/entries/<key>        one record (opaque bytes, the caller's format)
//! <root>/cache/sites/<site>/<key>   an empty file: the record `key` was made at `site`
//! <root>/cache/.tmp-*               records being written
//! ```
//!
//! The store does not know what a key or a site means: keys and sites are lowercase hex
//! digests the caller computed (anything else is refused, so a name is always a safe
//! file name). A record appears atomically (temp file, rename); a concurrent writer of the
//! same key replaces it with equal content. Reading a record sets its modification time,
//! so the least recently used records are the oldest files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::{io_err, ContentStore, StoreError};

/// The records under a content store's `cache/` directory.
#[derive(Clone, Debug)]
pub struct Records {
    root: PathBuf,
}

/// One record found at a site.
#[derive(Debug, Clone)]
pub struct SiteRecord {
    /// Its key.
    pub key: String,
    /// Its content.
    pub bytes: Vec<u8>,
    /// When it was last written or read.
    pub used: SystemTime,
}

fn is_hex_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn bad_name(root: &Path, name: &str) -> StoreError {
    StoreError::Io {
        op: "naming a cache record",
        path: root.join(name),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a lowercase hex name"),
    }
}

impl ContentStore {
    /// The cache records kept beside this store (created when missing).
    pub fn records(&self) -> Result<Records, StoreError> {
        let root = self.root().join("cache");
        for sub in ["entries", "sites"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(Records { root })
    }
}

impl Records {
    fn entry_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if !is_hex_name(key) {
            return Err(bad_name(&self.root, key));
        }
        Ok(self.root.join("entries").join(key))
    }

    /// The record `key`, if there is one; reading it marks it used.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.entry_path(key)?;
        match fs::read(&path) {
            Ok(bytes) => {
                // Best effort: a read-only kiln dir still serves its records.
                crate::gc::touch(&path);
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Stores `bytes` as the record `key`, made at `site`.
    pub fn put(&self, key: &str, site: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if !is_hex_name(site) {
            return Err(bad_name(&self.root, site));
        }
        self.rewrite(key, bytes)?;
        let site_dir = self.root.join("sites").join(site);
        fs::create_dir_all(&site_dir).map_err(io_err("create directory", &site_dir))?;
        let marker = site_dir.join(key);
        fs::write(&marker, b"").map_err(io_err("write", &marker))?;
        Ok(())
    }

    /// Replaces the content of the record `key` (its sites stay).
    pub fn rewrite(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.entry_path(key)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.root)
            .map_err(io_err("create a temp file in", &self.root))?;
        io::Write::write_all(&mut temp, bytes).map_err(io_err("write", temp.path()))?;
        temp.persist(&path)
            .map_err(|e| io_err("rename into place", &path)(e.error))?;
        Ok(())
    }

    /// The records made at `site`, most recently used first (records removed since are
    /// skipped).
    pub fn at_site(&self, site: &str) -> Result<Vec<SiteRecord>, StoreError> {
        if !is_hex_name(site) {
            return Err(bad_name(&self.root, site));
        }
        let dir = self.root.join("sites").join(site);
        let names = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut found = Vec::new();
        for name in names {
            let name = name.map_err(io_err("list", &dir))?;
            let key = name.file_name().to_string_lossy().into_owned();
            let Ok(path) = self.entry_path(&key) else {
                continue;
            };
            let used = match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(_) => continue,
            };
            let Ok(bytes) = fs::read(&path) else { continue };
            found.push(SiteRecord { key, bytes, used });
        }
        found.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.key.cmp(&b.key)));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list_by_site() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let records = store.records().unwrap();
        assert_eq!(records.get("ab12").unwrap(), None);
        records.put("ab12", "cd", b"one").unwrap();
        records.put("ef34", "cd", b"two").unwrap();
        records.put("ab12", "cd", b"one again").unwrap();
        assert_eq!(
            records.get("ab12").unwrap().as_deref(),
            Some(&b"one again"[..])
        );
        let at = records.at_site("cd").unwrap();
        let mut keys: Vec<&str> = at.iter().map(|r| r.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["ab12", "ef34"]);
        assert!(records.at_site("99").unwrap().is_empty());
    }

    #[test]
    fn names_that_are_not_hex_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let records = store.records().unwrap();
        assert!(records.get("../x").is_err());
        assert!(records.put("ab", "../../etc", b"x").is_err());
        assert!(records.put("AB", "cd", b"x").is_err());
    }
}
