//! The build cache: a step whose key was seen before is not run again; its layer is taken
//! from the entry.
//!
//! Keys (`key.rs`) are chained through the steps that change files (RUN, COPY, ADD,
//! WORKDIR) and computed from the step's inputs before it runs. Entries live in the kiln dir
//! (kiln-fs `Records`: every build writes there; a warm kiln dir is a cache by itself) and,
//! with `--cache=true`, in a registry repository (`registry.rs`), pushed in the background
//! while the build goes on. A hit takes only the entry's layer descriptor: nothing is
//! downloaded or unpacked unless a later step that runs needs the files.
//!
//! The cache never fails a build: an entry or repository kiln cannot use is a miss, and the
//! repository's first failure is one warning (and the repository is not asked again).

mod explain;
pub(crate) mod inline;
mod key;
mod registry;

pub(crate) use key::{add_context_files, instruction_text, recorded_value, site, KeyInputs};

use crate::error::BuildError;
use crate::layers::LayerServices;
use crate::options::{now_secs, CacheOptions, RegistryCacheOptions, Reporter};
use crate::types::Layer;
use kiln_fs::store::Records;
use kiln_oci::{Descriptor, Digest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Which kaniko flag governs a step in the cache repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    /// RUN and WORKDIR (`--cache-run-layers`).
    Run,
    /// COPY and ADD (`--cache-copy-layers`).
    Copy,
}

/// A step found in the cache.
pub(crate) struct Hit {
    /// The step's layer (none when it changed no file).
    pub(crate) layer: Option<Layer>,
    /// Where it was found, for the step's line: `kiln dir`, or the cache repository.
    pub(crate) from: String,
}

/// An entry as the kiln dir keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    version: u32,
    /// The key's inputs (to say why a later lookup missed).
    inputs: KeyInputs,
    /// The layer, when the step made one.
    layer: Option<EntryLayer>,
    /// When it was made, in seconds since the epoch.
    created: i64,
    /// The layer blob's inode, size and change time when the entry was written: while they
    /// hold, the blob is what was written; else it is hashed before use.
    #[serde(default)]
    blob_stamp: Option<(u64, u64, i64, i64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EntryLayer {
    descriptor: Descriptor,
    diff_id: Digest,
}

const ENTRY_VERSION: u32 = 1;

/// The registry side, while it works.
struct RepoCache {
    options: RegistryCacheOptions,
    /// Set after the first failed lookup: the repository is not asked again.
    lookups_off: AtomicBool,
    /// Set after the first failed push.
    pushes_off: AtomicBool,
}

/// The build's cache: lookups, new entries, and counts for the summary line.
pub(crate) struct Cache {
    records: Records,
    lookups: bool,
    repo: Option<RepoCache>,
    pushes: Mutex<Vec<tokio::task::JoinHandle<Result<(), String>>>>,
    /// Entries recorded in `--cache-from` images: key → layer, and the image it came from.
    inline: HashMap<String, (Option<Layer>, String)>,
    /// Cache repository answers fetched ahead, by key.
    prefetched: Mutex<HashMap<String, Result<registry::Found, String>>>,
    /// Steps that had a key, and those found.
    keyed: AtomicUsize,
    hits: AtomicUsize,
}

fn stamp_tuple(s: kiln_fs::gc::BlobStamp) -> (u64, u64, i64, i64) {
    (s.inode, s.size, s.changed.0, s.changed.1)
}

impl Cache {
    pub(crate) fn new(options: &CacheOptions, layers: &LayerServices) -> Result<Cache, BuildError> {
        Ok(Cache {
            records: layers.store().records()?,
            lookups: options.lookups,
            repo: options.registry.clone().map(|options| RepoCache {
                options,
                lookups_off: AtomicBool::new(false),
                pushes_off: AtomicBool::new(false),
            }),
            pushes: Mutex::new(Vec::new()),
            inline: HashMap::new(),
            prefetched: Mutex::new(HashMap::new()),
            keyed: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
        })
    }

    fn repo_for(&self, kind: StepKind) -> Option<&RepoCache> {
        self.repo.as_ref().filter(|r| match kind {
            StepKind::Run => r.options.run_layers,
            StepKind::Copy => r.options.copy_layers,
        })
    }

    /// Looks a step up: the kiln dir first, then the `--cache-from` images, then the cache
    /// repository.
    pub(crate) fn lookup(
        &self,
        layers: &LayerServices,
        reporter: &dyn Reporter,
        key: &str,
        kind: StepKind,
    ) -> Option<Hit> {
        self.keyed.fetch_add(1, Ordering::Relaxed);
        if !self.lookups {
            return None;
        }
        let hit = self
            .lookup_kiln_dir(layers, key)
            .or_else(|| self.lookup_inline(key))
            .or_else(|| self.lookup_repo(layers, reporter, key, kind));
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Looks up at once, in the cache repository, the keys of a stage's steps that the kiln
    /// dir does not have: [`Cache::lookup`] then answers from what came back, so a stage of
    /// many cached steps costs one round trip, not one per step.
    pub(crate) fn prefetch(&self, layers: &LayerServices, keys: &[(String, StepKind)]) {
        let mut handles = Vec::new();
        for (key, kind) in keys {
            let Some(repo) = self.repo_for(*kind) else {
                continue;
            };
            if !self.lookups
                || repo.lookups_off.load(Ordering::Relaxed)
                || self.inline.contains_key(key)
                || self.lookup_kiln_dir(layers, key).is_some()
            {
                continue;
            }
            let client = layers.shared_client();
            let (reference, ttl, key) = (repo.options.repo.clone(), repo.options.ttl, key.clone());
            handles.push(layers.spawn(async move {
                let found = registry::lookup(&client, &reference, &key, ttl, now_secs()).await;
                (key, found)
            }));
        }
        if handles.is_empty() {
            return;
        }
        let answers = layers.block_on(async {
            let mut answers = Vec::with_capacity(handles.len());
            for handle in handles {
                if let Ok(answer) = handle.await {
                    answers.push(answer);
                }
            }
            answers
        });
        self.prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(answers);
    }

    /// Reads the keys `--cache-from` images record (one manifest and config each); an image
    /// kiln cannot use is one warning.
    pub(crate) fn load_inline(
        &mut self,
        layers: &LayerServices,
        reporter: &dyn Reporter,
        images: &[kiln_registry::Reference],
        platform: &kiln_oci::Platform,
    ) {
        for image in images {
            let found = layers
                .block_on(layers.client().resolve(image, platform))
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    let config =
                        kiln_oci::ImageConfig::parse(&r.config).map_err(|e| e.to_string())?;
                    inline::entries(&r.source, &r.manifest, &config)
                });
            match found {
                Ok(entries) => {
                    reporter.info(&format!(
                        "--cache-from {image}: {} cached steps",
                        entries.len()
                    ));
                    for (key, layer) in entries {
                        self.inline
                            .entry(key)
                            .or_insert_with(|| (layer, format!("image {image}")));
                    }
                }
                Err(why) => reporter.warn(&format!("--cache-from {image}: {why}; not used")),
            }
        }
    }

    fn lookup_inline(&self, key: &str) -> Option<Hit> {
        let (layer, from) = self.inline.get(key)?;
        Some(Hit {
            layer: layer.clone(),
            from: from.clone(),
        })
    }

    fn lookup_kiln_dir(&self, layers: &LayerServices, key: &str) -> Option<Hit> {
        let bytes = match self.records.get(key) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(key, error = %e, "reading a cache entry");
                return None;
            }
        };
        let entry: Entry = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(key, error = %e, "a cache entry kiln cannot read: a miss");
                return None;
            }
        };
        if entry.version != ENTRY_VERSION {
            return None;
        }
        let mut entry = entry;
        let layer = match entry.layer.take() {
            None => None,
            Some(l) => {
                // An entry whose blob is gone (pruned) or changed (damaged, tampered with) is
                // a miss: unless its stamp vouches for it, the blob is hashed first.
                let store = layers.store();
                let digest = &l.descriptor.digest;
                let stamp = store.blob_stamp(digest).map(stamp_tuple);
                if stamp.is_none_or(|s| s.1 != l.descriptor.size) {
                    tracing::debug!(key, blob = %digest, "cache entry without its blob: a miss");
                    return None;
                }
                if stamp != entry.blob_stamp {
                    if !store.verify_blob(digest) {
                        tracing::debug!(key, blob = %digest, "cache entry whose blob does not verify: a miss");
                        return None;
                    }
                    entry.blob_stamp = stamp;
                    entry.layer = Some(EntryLayer {
                        descriptor: l.descriptor.clone(),
                        diff_id: l.diff_id.clone(),
                    });
                    if let Ok(bytes) = serde_json::to_vec(&entry) {
                        let _ = self.records.rewrite(key, &bytes);
                    }
                }
                store.touch_blob(digest);
                Some(Layer {
                    descriptor: l.descriptor,
                    diff_id: l.diff_id,
                    remote: None,
                })
            }
        };
        Some(Hit {
            layer,
            from: "kiln dir".into(),
        })
    }

    fn lookup_repo(
        &self,
        layers: &LayerServices,
        reporter: &dyn Reporter,
        key: &str,
        kind: StepKind,
    ) -> Option<Hit> {
        let repo = self.repo_for(kind)?;
        if repo.lookups_off.load(Ordering::Relaxed) {
            return None;
        }
        let ahead = self
            .prefetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        let found = match ahead {
            Some(found) => found,
            None => layers.block_on(registry::lookup(
                layers.client(),
                &repo.options.repo,
                key,
                repo.options.ttl,
                now_secs(),
            )),
        };
        match found {
            Ok(registry::Found::Entry(layer)) => Some(Hit {
                layer: layer.map(|l| *l),
                from: format!("cache repo {}", repo.options.repo.name()),
            }),
            Ok(registry::Found::Missing) => None,
            Err(why) => {
                // A repository that cannot be read is not written either.
                repo.pushes_off.store(true, Ordering::Relaxed);
                if !repo.lookups_off.swap(true, Ordering::Relaxed) {
                    reporter.warn(&format!(
                        "cache repo {}: {why}; building without it",
                        repo.options.repo.name()
                    ));
                }
                None
            }
        }
    }

    /// Records a step that ran: in the kiln dir, and pushed to the cache repository in the
    /// background.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store(
        &self,
        layers: &LayerServices,
        key: &str,
        site: &str,
        inputs: &KeyInputs,
        layer: Option<&Layer>,
        kind: StepKind,
        platform: &kiln_oci::Platform,
    ) {
        let created = now_secs();
        let entry = Entry {
            version: ENTRY_VERSION,
            inputs: inputs.clone(),
            layer: layer.map(|l| EntryLayer {
                descriptor: l.descriptor.clone(),
                diff_id: l.diff_id.clone(),
            }),
            created,
            blob_stamp: layer
                .and_then(|l| layers.store().blob_stamp(&l.descriptor.digest))
                .map(stamp_tuple),
        };
        // A layer kiln did not write (its blob is elsewhere) is not an entry of this kiln dir.
        if layer.is_none_or(|l| layers.store().contains(&l.descriptor.digest)) {
            let bytes = serde_json::to_vec(&entry).expect("an entry serializes");
            if let Err(e) = self.records.put(key, site, &bytes) {
                tracing::debug!(key, error = %e, "could not record a cache entry");
            }
        }
        let Some(repo) = self.repo_for(kind).filter(|r| r.options.push) else {
            return;
        };
        if repo.pushes_off.load(Ordering::Relaxed) {
            return;
        }
        let (config, config_descriptor, manifest) =
            registry::entry_documents(key, inputs, layer, platform, created);
        if let Err(e) = layers.store_config(&config, &config_descriptor) {
            tracing::debug!(key, error = %e, "could not store a cache entry's config");
            return;
        }
        let upload = registry::EntryUpload {
            reference: registry::entry_reference(&repo.options.repo, key),
            site: registry::site_reference(&repo.options.repo, site),
            layer: layer.map(|l| {
                (
                    l.descriptor.clone(),
                    layers.store().blob_path(&l.descriptor.digest),
                )
            }),
            config: (
                config_descriptor.clone(),
                layers.store().blob_path(&config_descriptor.digest),
            ),
            manifest,
        };
        let handle = layers.spawn(registry::push(layers.shared_client(), upload));
        self.pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Waits for the cache pushes still going; the first failure is one warning.
    pub(crate) fn finish_pushes(&self, layers: &LayerServices, reporter: &dyn Reporter) {
        let handles: Vec<_> =
            std::mem::take(&mut *self.pushes.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(repo) = &self.repo else { return };
        let mut failed = None;
        let mut pushed = 0;
        for handle in handles {
            match layers.block_on(handle) {
                Ok(Ok(())) => pushed += 1,
                Ok(Err(why)) => failed = failed.or(Some(why)),
                Err(e) => failed = failed.or(Some(e.to_string())),
            }
        }
        if let Some(why) = failed {
            repo.pushes_off.store(true, Ordering::Relaxed);
            reporter.warn(&format!(
                "cache repo {}: pushing cache entries failed: {why}",
                repo.options.repo.name()
            ));
        } else if pushed > 0 {
            reporter.info(&format!(
                "pushed {pushed} cache entr{} to {}",
                if pushed == 1 { "y" } else { "ies" },
                repo.options.repo.name()
            ));
        }
    }

    /// Why a step missed: what differs from the closest entry an earlier build made at the
    /// same place (same Dockerfile, stage and step), if any: the kiln dir's entries, else the
    /// latest one the cache repository has (two requests, for a stage's first miss only).
    pub(crate) fn explain_miss(
        &self,
        layers: &LayerServices,
        site: &str,
        key: &str,
        inputs: &KeyInputs,
        kind: StepKind,
    ) -> Option<String> {
        let records = self.records.at_site(site).unwrap_or_default();
        let mut entries: Vec<KeyInputs> = records
            .iter()
            .filter_map(|r| serde_json::from_slice::<Entry>(&r.bytes).ok())
            .map(|e| e.inputs)
            .collect();
        if entries.is_empty() {
            let repo = self
                .repo_for(kind)
                .filter(|r| !r.lookups_off.load(Ordering::Relaxed))?;
            entries.extend(layers.block_on(registry::latest_at_site(
                layers.client(),
                &repo.options.repo,
                site,
                key,
            )));
        }
        explain::closest_difference(inputs, &entries)
    }

    /// Whether steps are taken from the cache at all (not with `--no-cache`).
    pub(crate) fn takes_steps(&self) -> bool {
        self.lookups
    }

    /// `(hits, keyed steps)` so far.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.keyed.load(Ordering::Relaxed),
        )
    }
}
