//! The overlay backend: each step writes into an upper dir over the stage's layers (unpacked in
//! the store with overlay whiteouts), mounted in the stage thread's private mount namespace; the
//! upper dir is the step's layer, and the store adopts it as that layer's unpacked form.

use super::{lowers_or_empty, Active, SnapshotClock, Snapshotter, Writes};
use crate::error::BuildError;
use crate::layers::LayerWriter;
use crate::options::SnapshotStats;
use crate::types::Layer;
use kiln_sandbox::overlay::{OverlayMount, Unmounting};
use std::path::{Path, PathBuf};

/// Layers of the stage as overlay lowers, and the upper dir of the step under way.
pub(crate) struct OverlaySnapshotter {
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

impl OverlaySnapshotter {
    pub(super) fn new(dir: PathBuf, lowers: Vec<PathBuf>, ignore: &[String]) -> Self {
        OverlaySnapshotter {
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
        }
    }

    /// Ends the step's overlay (in the background: the next use waits for it).
    fn end_step(&mut self, active: Active) {
        if let Some(mount) = active.mount {
            self.unmounting = Some(mount.unmount_in_background());
        }
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn add_lowers(&mut self, dirs: &[PathBuf]) -> bool {
        // overlayfs refuses one directory twice among its lowers.
        if dirs.iter().any(|d| self.lowers.contains(d)) {
            return false;
        }
        self.lowers.extend(dirs.iter().cloned());
        true
    }

    fn prepare(&mut self, at: &str, _scan: bool, _single: bool) -> Result<Active, BuildError> {
        self.settle();
        let (upper, work) = self.upper_dirs()?;
        let lowers = lowers_or_empty(&self.lowers, &self.dir)?;
        let mount = OverlayMount::mount(
            &lowers,
            Some((&upper, &work)),
            &self.dir.join("links"),
            &self.dir.join("merged"),
        )
        .map_err(|source| BuildError::Sandbox {
            at: at.to_owned(),
            source,
        })?;
        Ok(Active {
            path: mount.path().to_owned(),
            mount: Some(mount),
            before: None,
            clock: SnapshotClock::start(),
        })
    }

    fn commit(
        &mut self,
        active: Active,
        writer: &LayerWriter,
        at: &str,
        _writes: Writes,
        single: bool,
    ) -> Result<Option<Layer>, BuildError> {
        self.end_step(active);
        if single {
            return Ok(None);
        }
        let mut clock = SnapshotClock::start();
        let layer = self.cut(writer, at, &mut clock)?;
        self.last_snapshot = Some(clock.stats);
        Ok(layer)
    }

    fn abort(&mut self, active: Active) {
        self.end_step(active);
    }

    fn finish_single(
        &mut self,
        writer: &LayerWriter,
        at: &str,
    ) -> Result<Option<Layer>, BuildError> {
        let mut clock = SnapshotClock::start();
        let layer = self.cut(writer, at, &mut clock)?;
        self.last_snapshot = Some(clock.stats);
        Ok(layer)
    }

    fn take_snapshot_stats(&mut self) -> Option<SnapshotStats> {
        self.last_snapshot.take()
    }
}

impl OverlaySnapshotter {
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
    if kiln_fs::xattr::is_overlay_opaque(&dir) {
        return Ok(());
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
