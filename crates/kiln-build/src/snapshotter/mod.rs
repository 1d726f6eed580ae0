//! A stage's tree as snapshots, in containerd's `Snapshotter` shape: [`Snapshotter::prepare`]
//! makes the tree ready for one step to write, [`Snapshotter::commit`] turns what the step
//! changed into a layer. Two backends, one per RUN backend:
//!
//! - [`dir::DirSnapshotter`] (chroot backend): an extracted directory; a RUN step's layer is the
//!   diff of two stat indexes (no content is hashed), a COPY's the list of paths it wrote.
//! - [`overlay::OverlaySnapshotter`] (overlay backend): each step gets an upper dir over the
//!   stage's layers unpacked in the store (overlay whiteouts), mounted in the stage thread's
//!   private mount namespace; the layer is the upper dir, which the store then adopts as that
//!   layer's unpacked form and which becomes the next step's top lower. Nothing is scanned.
//!
//! Read-only views of finished stages and images (`COPY --from`) are [`read_only_view`] or an
//! extracted directory. The same test suite (`tests.rs`) runs against both backends.

mod dir;
mod overlay;
#[cfg(test)]
mod tests;

use crate::error::BuildError;
use crate::layers::LayerWriter;
use crate::options::SnapshotStats;
use crate::types::Layer;
use kiln_fs::snapshot::{Change, StatIndex};
use kiln_sandbox::overlay::OverlayMount;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One backend's way of keeping a stage's tree and cutting its layers.
pub(crate) trait Snapshotter {
    /// Makes the tree ready for a step to write and says where it is. `scan`: the step's
    /// changes must be found by diffing (a RUN); `single`: `--single-snapshot` defers the layer
    /// to [`Snapshotter::finish_single`].
    fn prepare(&mut self, at: &str, scan: bool, single: bool) -> Result<Active, BuildError>;

    /// Ends the step `active` belongs to and, unless `single`, makes a layer of what it changed
    /// (none when nothing did).
    fn commit(
        &mut self,
        active: Active,
        writer: &LayerWriter,
        at: &str,
        writes: Writes,
        single: bool,
    ) -> Result<Option<Layer>, BuildError>;

    /// Ends a step that failed: nothing becomes a layer.
    fn abort(&mut self, active: Active);

    /// Starts `--single-snapshot` bookkeeping.
    fn start_single(&mut self, _at: &str) -> Result<(), BuildError> {
        Ok(())
    }

    /// The one layer of a `--single-snapshot` stage.
    fn finish_single(
        &mut self,
        writer: &LayerWriter,
        at: &str,
    ) -> Result<Option<Layer>, BuildError>;

    /// What the last snapshot cost, once (none when the last step took none).
    fn take_snapshot_stats(&mut self) -> Option<SnapshotStats>;

    /// The tree was changed by something other than a step (cached layers extracted into
    /// it): what is known of it is stale.
    fn forget_index(&mut self) {}

    /// Puts unpacked layers (taken from the cache) on top of the tree, when the backend
    /// stacks layers (overlay); false when it cannot (or one of them is a lower already).
    fn add_lowers(&mut self, _dirs: &[PathBuf]) -> bool {
        false
    }

    /// The whole extracted tree, when there is one a later stage may read directly.
    fn extracted_root(&self) -> Option<&Path> {
        None
    }
}

/// A step's tree while the step runs.
pub(crate) struct Active {
    path: PathBuf,
    /// The step's overlay (overlay backend).
    mount: Option<OverlayMount>,
    /// The stat index before the step (directory backend, RUN).
    before: Option<StatIndex>,
    clock: SnapshotClock,
}

impl Active {
    /// Where the step reads and writes the tree.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A stage's tree: one of the two backends.
pub(crate) struct StageFs(Box<dyn Snapshotter>);

impl StageFs {
    /// An extracted tree at `root` (already filled, or empty when `lazy`).
    pub(crate) fn dir(root: PathBuf, lazy: bool, ignore: &[String]) -> StageFs {
        StageFs(Box::new(dir::DirSnapshotter::new(root, lazy, ignore)))
    }

    /// An overlay tree in `dir` over `lowers` (unpacked layers, bottom first).
    pub(crate) fn overlay(dir: PathBuf, lowers: Vec<PathBuf>, ignore: &[String]) -> StageFs {
        StageFs(Box::new(overlay::OverlaySnapshotter::new(
            dir, lowers, ignore,
        )))
    }

    /// Runs one step that may change the tree: prepare, `op` (given the tree's path, it returns
    /// its value and what it knows of its writes), commit. Returns the value and the step's
    /// layer (none when nothing changed, or in `single` mode until
    /// [`StageFs::finish_single`]).
    pub(crate) fn step<T>(
        &mut self,
        writer: &LayerWriter,
        at: &str,
        scan: bool,
        single: bool,
        op: impl FnOnce(&Path) -> Result<(T, Writes), BuildError>,
    ) -> Result<(T, Option<Layer>), BuildError> {
        let active = self.0.prepare(at, scan, single)?;
        match op(active.path()) {
            Ok((value, writes)) => {
                let layer = self.0.commit(active, writer, at, writes, single)?;
                Ok((value, layer))
            }
            Err(e) => {
                self.0.abort(active);
                Err(e)
            }
        }
    }

    /// Starts `--single-snapshot` bookkeeping.
    pub(crate) fn start_single(&mut self, at: &str) -> Result<(), BuildError> {
        self.0.start_single(at)
    }

    /// The one layer of a `--single-snapshot` stage.
    pub(crate) fn finish_single(
        &mut self,
        writer: &LayerWriter,
        at: &str,
    ) -> Result<Option<Layer>, BuildError> {
        self.0.finish_single(writer, at)
    }

    /// What the last snapshot cost, once.
    pub(crate) fn take_snapshot_stats(&mut self) -> Option<SnapshotStats> {
        self.0.take_snapshot_stats()
    }

    /// The tree was changed by something other than a step.
    pub(crate) fn forget_index(&mut self) {
        self.0.forget_index()
    }

    /// Puts unpacked layers on top of the tree (overlay); false when it cannot.
    pub(crate) fn add_lowers(&mut self, dirs: &[PathBuf]) -> bool {
        self.0.add_lowers(dirs)
    }

    /// The whole extracted tree, when a later stage may read it directly.
    pub(crate) fn extracted_root(&self) -> Option<PathBuf> {
        self.0.extracted_root().map(Path::to_owned)
    }
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
pub(super) struct SnapshotClock {
    pub(super) stats: SnapshotStats,
    pub(super) since: Instant,
}

impl SnapshotClock {
    pub(super) fn start() -> SnapshotClock {
        SnapshotClock {
            stats: SnapshotStats::default(),
            since: Instant::now(),
        }
    }

    /// Counts the time since the last mark as finding changes.
    pub(super) fn found(&mut self) {
        self.stats.find += self.since.elapsed();
        self.since = Instant::now();
    }

    /// Writes a layer with `writer` and counts it as writing.
    pub(super) fn write<F>(
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

/// `lowers`, or one empty dir under `dir` when there are none (a stage from scratch):
/// overlayfs needs at least one lower.
pub(super) fn lowers_or_empty(lowers: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
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
