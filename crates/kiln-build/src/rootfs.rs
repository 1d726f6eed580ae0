//! A stage's root file system and how a step's changes become a layer, per RUN backend:
//!
//! - [`StageFs::Dir`] (chroot backend): an extracted directory; a RUN step's layer is the diff of
//!   two stat indexes (no content is hashed), a COPY's the list of paths it wrote.
//! - [`StageFs::Overlay`] (overlay backend): each step gets an upper dir over the stage's layers
//!   unpacked in the store (overlay whiteouts), mounted in the stage thread's private mount
//!   namespace; the layer is the upper dir, which then moves into the store as that layer's
//!   unpacked form and becomes the next step's top lower. Nothing is scanned.

use crate::error::BuildError;
use crate::layers::LayerWriter;
use crate::options::SnapshotStats;
use crate::types::Layer;
use kiln_fs::snapshot::{self, Change, Changes, StatIndex};
use kiln_sandbox::overlay::{OverlayMount, Unmounting};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An extracted tree (chroot backend, or a stage that never extracts its base).
pub(crate) struct DirFs {
    pub(crate) root: PathBuf,
    /// Only what this stage added is in the tree: its base was never extracted.
    pub(crate) lazy: bool,
    /// A stat index of the tree as it is now, when known.
    index: Option<StatIndex>,
    /// `--single-snapshot`: the index when the stage started.
    single_start: Option<StatIndex>,
    ignore: Vec<PathBuf>,
    last_snapshot: Option<SnapshotStats>,
}

/// Layers of the stage as overlay lowers, and the upper dir of the step under way.
pub(crate) struct OverlayFs {
    dir: PathBuf,
    /// Bottom first.
    lowers: Vec<PathBuf>,
    /// The upper and work dirs not yet cut into a layer (kept across steps by
    /// `--single-snapshot`).
    upper: Option<(PathBuf, PathBuf)>,
    next: usize,
    /// `--ignore-path`s, relative: kept out of layers, still seen by later steps.
    ignore: Vec<PathBuf>,
    last_snapshot: Option<SnapshotStats>,
    /// The last step's overlay, still being torn down (waited for before its upper dir moves
    /// or is mounted again).
    unmounting: Option<Unmounting>,
}

/// A stage's tree.
pub(crate) enum StageFs {
    Dir(DirFs),
    Overlay(OverlayFs),
}

/// What a step's code reports about its writes.
#[derive(Default)]
pub(crate) struct Writes {
    /// The paths it changed, when it knows them (COPY, WORKDIR; a RUN's are found by diffing).
    pub(crate) known: Vec<Change>,
    /// Directories kiln touched for a RUN, relative to the root: the parents of the mount
    /// points it made and removed. A change to one of them that moved nothing but its times is
    /// not the step's.
    pub(crate) kiln_touched: Vec<PathBuf>,
}

impl Writes {
    pub(crate) fn known(known: Vec<Change>) -> Writes {
        Writes {
            known,
            kiln_touched: Vec::new(),
        }
    }
}

/// Times the two parts of a snapshot as a step's code goes through them.
struct SnapshotClock {
    stats: SnapshotStats,
    since: Instant,
}

impl SnapshotClock {
    fn start() -> SnapshotClock {
        SnapshotClock {
            stats: SnapshotStats::default(),
            since: Instant::now(),
        }
    }

    /// Counts the time since the last mark as finding changes.
    fn found(&mut self) {
        self.stats.find += self.since.elapsed();
        self.since = Instant::now();
    }

    /// Writes a layer with `writer` and counts it as writing.
    fn write<F>(
        &mut self,
        writer: &LayerWriter,
        at: &str,
        lazy: bool,
        write: F,
    ) -> Result<Layer, BuildError>
    where
        F: FnOnce(
            &mut kiln_fs::store::BlobWriter,
            &kiln_fs::layer::LayerOptions,
        ) -> Result<kiln_fs::layer::LayerInfo, kiln_fs::layer::LayerError>,
    {
        self.found();
        let (layer, tar_bytes) = writer.write(at, lazy, write)?;
        self.stats.write += self.since.elapsed();
        self.stats.tar_bytes += tar_bytes;
        self.stats.blob_bytes += layer.descriptor.size;
        self.since = Instant::now();
        Ok(layer)
    }
}

impl StageFs {
    /// An extracted tree at `root` (already filled, or empty when `lazy`).
    pub(crate) fn dir(root: PathBuf, lazy: bool, ignore: &[String]) -> StageFs {
        StageFs::Dir(DirFs {
            root,
            lazy,
            index: None,
            single_start: None,
            ignore: ignore.iter().map(PathBuf::from).collect(),
            last_snapshot: None,
        })
    }

    /// An overlay tree in `dir` over `lowers` (unpacked layers, bottom first).
    pub(crate) fn overlay(dir: PathBuf, lowers: Vec<PathBuf>, ignore: &[String]) -> StageFs {
        StageFs::Overlay(OverlayFs {
            dir,
            lowers,
            upper: None,
            next: 0,
            ignore: ignore
                .iter()
                .map(|p| PathBuf::from(p.trim_start_matches('/')))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            last_snapshot: None,
            unmounting: None,
        })
    }

    /// True for a tree holding only this stage's additions.
    pub(crate) fn lazy(&self) -> bool {
        matches!(self, StageFs::Dir(d) if d.lazy)
    }

    /// Starts `--single-snapshot` bookkeeping.
    pub(crate) fn start_single(&mut self, at: &str) -> Result<(), BuildError> {
        if let StageFs::Dir(d) = self {
            d.single_start = Some(d.scan(at)?);
        }
        Ok(())
    }

    /// Runs one step that may change the tree. `op` gets the tree's path and returns its
    /// value and what it knows of its writes; `scan` says the changes must be found by
    /// diffing (a RUN). Returns the value and the step's layer (none when nothing
    /// changed, or in `single` mode until [`StageFs::finish_single`]).
    pub(crate) fn step<T>(
        &mut self,
        writer: &LayerWriter,
        at: &str,
        scan: bool,
        single: bool,
        op: impl FnOnce(&Path) -> Result<(T, Writes), BuildError>,
    ) -> Result<(T, Option<Layer>), BuildError> {
        match self {
            StageFs::Dir(d) => {
                let mut clock = SnapshotClock::start();
                let before = if scan && !single {
                    Some(match d.index.take() {
                        Some(i) => i,
                        None => {
                            let index = d.scan(at)?;
                            clock.stats.index = clock.since.elapsed();
                            index
                        }
                    })
                } else {
                    None
                };
                d.index = None;
                let (value, writes) = op(&d.root)?;
                if single {
                    return Ok((value, None));
                }
                clock.since = Instant::now();
                let changes = match before {
                    Some(before) => {
                        let after = d.scan(at)?;
                        let changes = snapshot::diff(&before, &after);
                        let changes =
                            drop_time_only(changes, &writes.kiln_touched, &before, &after);
                        d.index = Some(after);
                        changes
                    }
                    None => Changes::new(writes.known),
                };
                tracing::debug!(
                    "{at}: snapshot {}: {} changed path(s)",
                    if scan {
                        "by stat-index diff"
                    } else {
                        "from the paths the step wrote"
                    },
                    changes.len()
                );
                let layer = if changes.is_empty() {
                    clock.found();
                    None
                } else {
                    let (root, lazy) = (d.root.clone(), d.lazy);
                    Some(clock.write(writer, at, lazy, |out, opts| {
                        kiln_fs::layer::write_layer(&root, &changes, out, opts)
                    })?)
                };
                d.last_snapshot = Some(clock.stats);
                Ok((value, layer))
            }
            StageFs::Overlay(o) => {
                o.settle();
                let (upper, work) = o.upper_dirs()?;
                let merged = o.dir.join("merged");
                let value = {
                    let lowers = lowers_or_empty(&o.lowers, &o.dir)?;
                    let mount = OverlayMount::mount(
                        &lowers,
                        Some((&upper, &work)),
                        &o.dir.join("links"),
                        &merged,
                    )
                    .map_err(|source| BuildError::Sandbox {
                        at: at.to_owned(),
                        source,
                    })?;
                    let result = op(mount.path());
                    o.unmounting = Some(mount.unmount_in_background());
                    result?.0
                };
                if single {
                    return Ok((value, None));
                }
                let mut clock = SnapshotClock::start();
                let layer = o.cut(writer, at, &mut clock)?;
                o.last_snapshot = Some(clock.stats);
                Ok((value, layer))
            }
        }
    }

    /// The one layer of a `--single-snapshot` stage.
    pub(crate) fn finish_single(
        &mut self,
        writer: &LayerWriter,
        at: &str,
    ) -> Result<Option<Layer>, BuildError> {
        match self {
            StageFs::Dir(d) => {
                let Some(before) = d.single_start.take() else {
                    return Ok(None);
                };
                let mut clock = SnapshotClock::start();
                let after = d.scan(at)?;
                let changes = snapshot::diff(&before, &after);
                let layer = if changes.is_empty() {
                    clock.found();
                    None
                } else {
                    let root = d.root.clone();
                    Some(clock.write(writer, at, false, |out, opts| {
                        kiln_fs::layer::write_layer(&root, &changes, out, opts)
                    })?)
                };
                d.last_snapshot = Some(clock.stats);
                Ok(layer)
            }
            StageFs::Overlay(o) => {
                let mut clock = SnapshotClock::start();
                let layer = o.cut(writer, at, &mut clock)?;
                o.last_snapshot = Some(clock.stats);
                Ok(layer)
            }
        }
    }

    /// What the last snapshot cost, once (none when the last step took none).
    pub(crate) fn take_snapshot_stats(&mut self) -> Option<SnapshotStats> {
        match self {
            StageFs::Dir(d) => d.last_snapshot.take(),
            StageFs::Overlay(o) => o.last_snapshot.take(),
        }
    }
}

impl DirFs {
    fn scan(&self, at: &str) -> Result<StatIndex, BuildError> {
        let ignored: Vec<&Path> = self.ignore.iter().map(PathBuf::as_path).collect();
        StatIndex::scan(&self.root, &ignored).map_err(|source| BuildError::Snapshot {
            at: at.to_owned(),
            source,
        })
    }
}

impl OverlayFs {
    /// Waits for the last step's overlay to be gone.
    fn settle(&mut self) {
        if let Some(unmounting) = self.unmounting.take() {
            unmounting.wait();
        }
    }

    fn upper_dirs(&mut self) -> Result<(PathBuf, PathBuf), BuildError> {
        if let Some(dirs) = &self.upper {
            return Ok(dirs.clone());
        }
        let upper = self.dir.join(format!("upper-{}", self.next));
        let work = self.dir.join(format!("work-{}", self.next));
        self.next += 1;
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(BuildError::io("creating", d))?;
        }
        self.upper = Some((upper.clone(), work.clone()));
        Ok((upper, work))
    }

    /// Turns the upper dir into a layer; it then becomes the top lower (moved into the store
    /// as the layer's unpacked form).
    fn cut(
        &mut self,
        writer: &LayerWriter,
        at: &str,
        clock: &mut SnapshotClock,
    ) -> Result<Option<Layer>, BuildError> {
        let Some((upper, work)) = self.upper.take() else {
            return Ok(None);
        };
        // `--ignore-path`: what the step wrote there moves to a lower of its own, above the
        // layer, so later steps still see it but no layer holds it.
        let aside = self.dir.join(format!("ignored-{}", self.next));
        let mut moved = false;
        for rel in &self.ignore {
            let from = upper.join(rel);
            if std::fs::symlink_metadata(&from).is_err() {
                continue;
            }
            let to = aside.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(BuildError::io("creating", parent))?;
            }
            std::fs::rename(&from, &to).map_err(BuildError::io("setting aside", &from))?;
            moved = true;
        }
        // The layer is written while the step's overlay goes away: it is detached, so no
        // process sees it, and the kernel tolerates changes to the dirs under a dying overlay.
        let result = self.cut_upper(writer, at, upper, clock);
        if moved {
            self.lowers.push(aside);
        }
        self.settle();
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    fn cut_upper(
        &mut self,
        writer: &LayerWriter,
        at: &str,
        upper: PathBuf,
        clock: &mut SnapshotClock,
    ) -> Result<Option<Layer>, BuildError> {
        prune_copy_ups(&upper, Path::new(""), &self.lowers)
            .map_err(BuildError::io("cleaning the upper dir", &upper))?;
        let empty = std::fs::read_dir(&upper)
            .map_err(BuildError::io("reading", &upper))?
            .next()
            .is_none();
        if empty {
            tracing::debug!("{at}: snapshot: the upper dir is empty, no layer");
            let _ = std::fs::remove_dir(&upper);
            clock.found();
            return Ok(None);
        }
        let layer = clock.write(writer, at, false, |out, opts| {
            kiln_fs::layer::layer_from_overlay_upper(&upper, out, opts)
        })?;
        let cache = writer.layers.overlay_layers();
        let stored = cache.path(&layer.diff_id);
        // overlayfs refuses one directory twice among the lowers (ELOOP): a layer equal to one
        // already below (two steps that change the same way) keeps its own upper dir.
        let unpacked = if self.lowers.contains(&stored) {
            tracing::debug!(
                "{at}: snapshot: layer {} equals one below; its upper dir stays a lower of its own",
                layer.diff_id
            );
            let kept = self.dir.join(format!("layer-{}", self.next));
            std::fs::rename(&upper, &kept).map_err(BuildError::io("keeping", &kept))?;
            kept
        } else {
            // The upper dir is the layer unpacked for overlay: the store keeps it as such.
            tracing::debug!(
                "{at}: snapshot: the upper dir becomes unpacked layer {}",
                layer.diff_id
            );
            cache.adopt(&upper, &layer.diff_id)?
        };
        self.lowers.push(unpacked);
        Ok(Some(layer))
    }
}

/// Removes from an upper dir the directories that are only copy-ups: empty, not opaque, with
/// the mode and owner they have below. Creating and removing kiln's mount points (`/etc/hosts`,
/// `/proc`, …) copies their parent up; such a directory changed nothing.
fn prune_copy_ups(upper: &Path, rel: &Path, lowers: &[PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = upper.join(rel);
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            prune_copy_ups(upper, &rel.join(entry.file_name()), lowers)?;
        }
    }
    if rel.as_os_str().is_empty() || std::fs::read_dir(&dir)?.next().is_some() {
        return Ok(());
    }
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        let c = std::ffi::CString::new(name).expect("no NUL");
        let mut buf = [0u8; 8];
        if rustix::fs::lgetxattr(&dir, c.as_c_str(), &mut buf).is_ok() {
            return Ok(());
        }
    }
    let here = std::fs::symlink_metadata(&dir)?;
    // The directory as the lowers show it: the topmost lower that has the path.
    for lower in lowers.iter().rev() {
        match std::fs::symlink_metadata(lower.join(rel)) {
            Ok(below) => {
                if below.is_dir()
                    && below.mode() == here.mode()
                    && below.uid() == here.uid()
                    && below.gid() == here.gid()
                {
                    std::fs::remove_dir(&dir)?;
                }
                return Ok(());
            }
            Err(_) => continue,
        }
    }
    Ok(())
}

/// `changes` without the directories of `touched` whose only change is their times.
fn drop_time_only(
    changes: Changes,
    touched: &[PathBuf],
    before: &StatIndex,
    after: &StatIndex,
) -> Changes {
    if touched.is_empty() {
        return changes;
    }
    let times_only = |path: &Path| {
        let (Some(b), Some(a)) = (before.get(path), after.get(path)) else {
            return false;
        };
        let mut a = *a.stat;
        (a.mtime, a.ctime) = (b.stat.mtime, b.stat.ctime);
        a == *b.stat
    };
    let kept = changes
        .iter()
        .filter(|c| {
            !(c.kind == snapshot::ChangeKind::Modified
                && touched.contains(&c.path)
                && times_only(&c.path))
        })
        .cloned()
        .collect();
    Changes::new(kept)
}

/// `lowers`, or one empty dir under `dir` when there are none (a stage from scratch):
/// overlayfs needs at least one lower.
fn lowers_or_empty(lowers: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    if !lowers.is_empty() {
        return Ok(lowers.to_vec());
    }
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).map_err(BuildError::io("creating", &empty))?;
    Ok(vec![empty])
}

/// Mounts a read-only overlay of `lowers` (a finished stage's or an image's layers) at
/// `dir/merged` for reading (`COPY --from`); unmounted when the guard drops.
pub(crate) fn read_only_view(
    lowers: &[PathBuf],
    dir: &Path,
    at: &str,
) -> Result<OverlayMount, BuildError> {
    let lowers = lowers_or_empty(lowers, dir)?;
    OverlayMount::mount(&lowers, None, &dir.join("links"), &dir.join("merged")).map_err(|source| {
        BuildError::Sandbox {
            at: at.to_owned(),
            source,
        }
    })
}
