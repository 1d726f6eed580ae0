//! `kiln prune`: frees a kiln dir's space. The least recently used blobs, unpacked layers and
//! cache entries go first; leftovers of builds that ended (their directories, temporary files)
//! always go. It runs only when no build uses the kiln dir.

use crate::units::{go_duration, show_size};
use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_fs::gc::PrunePolicy;
use kiln_fs::store::ContentStore;
use std::path::PathBuf;

use crate::units::parse_size;

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// The kiln dir (default: as `kiln build` finds it).
    #[arg(long, alias = "kaniko-dir", value_name = "DIR")]
    kiln_dir: Option<PathBuf>,
    /// Remove the least recently used content until the store takes at most this much (e.g.
    /// 20GB, 512MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// Remove what no build used for this long (a Go duration: 72h, 30m).
    #[arg(long, value_name = "DURATION")]
    until: Option<String>,
    /// Remove everything: every blob, unpacked layer and cache entry.
    #[arg(long)]
    all: bool,
}

#[allow(clippy::print_stdout)]
pub(crate) fn run(args: PruneArgs) -> Result<()> {
    if !args.all && args.keep_storage.is_none() && args.until.is_none() {
        bail!("say what to remove: --all, --until DURATION or --keep-storage SIZE");
    }
    let unused_for = match &args.until {
        Some(text) => Some(go_duration(text).with_context(|| format!("--until {text:?}"))?),
        None => None,
    };
    let kiln_dir = crate::build::kiln_dir(args.kiln_dir.as_ref())?;
    let store_dir = kiln_dir.join("store");
    if !store_dir.is_dir() {
        println!("{}: no store, nothing to remove", kiln_dir.display());
        return Ok(());
    }
    let store = ContentStore::open(&store_dir)?;
    let Some(lock) = store.try_lock_exclusive()? else {
        bail!(
            "a build is using {}: prune when it has ended",
            kiln_dir.display()
        );
    };
    // Under the exclusive lock no build is running: what builds left behind is garbage.
    let mut leftovers = 0;
    for dir in ["builds", "contexts"] {
        let Ok(entries) = std::fs::read_dir(kiln_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
            leftovers += 1;
        }
    }
    let report = store.prune(
        &PrunePolicy {
            all: args.all,
            unused_for,
            keep_bytes: args.keep_storage,
        },
        &lock,
    )?;
    println!(
        "removed {} items ({}) and {leftovers} leftovers of ended builds; the store takes {}",
        report.removed,
        show_size(report.freed),
        show_size(report.kept)
    );
    Ok(())
}
