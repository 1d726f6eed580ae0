//! The directory backend (chroot): an extracted tree; a RUN step's changes are the diff of two
//! stat indexes, a COPY's the paths it wrote.

use super::{Active, SnapshotClock, Snapshotter, Writes};
use crate::error::BuildError;
use crate::layers::LayerWriter;
use crate::options::SnapshotStats;
use crate::types::Layer;
use kiln_fs::snapshot::{self, Changes, StatIndex};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An extracted tree (chroot backend, or a stage that never extracts its base).
pub(crate) struct DirSnapshotter {
    root: PathBuf,
    /// Only what this stage added is in the tree: its base was never extracted.
    lazy: bool,
    /// A stat index of the tree as it is now, when known.
    index: Option<StatIndex>,
    /// `--single-snapshot`: the index when the stage started.
    single_start: Option<StatIndex>,
    ignore: Vec<PathBuf>,
    last_snapshot: Option<SnapshotStats>,
}

impl DirSnapshotter {
    pub(super) fn new(root: PathBuf, lazy: bool, ignore: &[String]) -> Self {
        DirSnapshotter {
            root,
            lazy,
            index: None,
            single_start: None,
            ignore: ignore.iter().map(PathBuf::from).collect(),
            last_snapshot: None,
        }
    }

    fn scan(&self, at: &str) -> Result<StatIndex, BuildError> {
        let ignored: Vec<&Path> = self.ignore.iter().map(PathBuf::as_path).collect();
        StatIndex::scan(&self.root, &ignored).map_err(|source| BuildError::Snapshot {
            at: at.to_owned(),
            source,
        })
    }

    /// The layer of `changes` (none when empty), timed by `clock`.
    fn layer_of(
        &mut self,
        changes: Changes,
        writer: &LayerWriter,
        at: &str,
        lazy: bool,
        mut clock: SnapshotClock,
    ) -> Result<Option<Layer>, BuildError> {
        let layer = if changes.is_empty() {
            clock.found();
            None
        } else {
            let root = self.root.clone();
            Some(clock.write(writer, at, lazy, |out, opts| {
                kiln_fs::layer::write_layer(&root, &changes, out, opts)
            })?)
        };
        self.last_snapshot = Some(clock.stats);
        Ok(layer)
    }
}

impl Snapshotter for DirSnapshotter {
    fn forget_index(&mut self) {
        self.index = None;
    }

    fn prepare(&mut self, at: &str, scan: bool, single: bool) -> Result<Active, BuildError> {
        let mut clock = SnapshotClock::start();
        let before = if scan && !single {
            Some(match self.index.take() {
                Some(i) => i,
                None => {
                    let index = self.scan(at)?;
                    clock.stats.index = clock.since.elapsed();
                    index
                }
            })
        } else {
            None
        };
        // The step may change anything: the index is stale from here on.
        self.index = None;
        Ok(Active {
            path: self.root.clone(),
            mount: None,
            before,
            clock,
        })
    }

    fn commit(
        &mut self,
        active: Active,
        writer: &LayerWriter,
        at: &str,
        writes: Writes,
        single: bool,
    ) -> Result<Option<Layer>, BuildError> {
        if single {
            return Ok(None);
        }
        let Active {
            before, mut clock, ..
        } = active;
        clock.since = Instant::now();
        let scanned = before.is_some();
        let changes = match before {
            Some(before) => {
                let after = self.scan(at)?;
                let changes = snapshot::diff(&before, &after);
                let changes = drop_time_only(changes, &writes.kiln_touched, &before, &after);
                self.index = Some(after);
                changes
            }
            None => Changes::new(writes.known),
        };
        tracing::debug!(
            "{at}: snapshot {}: {} changed path(s)",
            if scanned {
                "by stat-index diff"
            } else {
                "from the paths the step wrote"
            },
            changes.len()
        );
        let lazy = self.lazy;
        self.layer_of(changes, writer, at, lazy, clock)
    }

    fn abort(&mut self, _active: Active) {}

    fn start_single(&mut self, at: &str) -> Result<(), BuildError> {
        self.single_start = Some(self.scan(at)?);
        Ok(())
    }

    fn finish_single(
        &mut self,
        writer: &LayerWriter,
        at: &str,
    ) -> Result<Option<Layer>, BuildError> {
        let Some(before) = self.single_start.take() else {
            return Ok(None);
        };
        let clock = SnapshotClock::start();
        let after = self.scan(at)?;
        let changes = snapshot::diff(&before, &after);
        self.layer_of(changes, writer, at, false, clock)
    }

    fn take_snapshot_stats(&mut self) -> Option<SnapshotStats> {
        self.last_snapshot.take()
    }

    fn extracted_root(&self) -> Option<&Path> {
        (!self.lazy).then_some(self.root.as_path())
    }
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
