//! `kiln build` (and the binary run as `executor`): kaniko's executor flags ([`args`]), their
//! translation to the engine's options ([`options`]), the build, and its outputs. The engine
//! lives in kiln-build; what is shown is the printer's.

mod args;
mod options;

pub(crate) use args::{rewrite_camel_case, BuildArgs, LogFormat, Verbosity};
pub(crate) use options::{build_args, kiln_dir};

use crate::printer::Printer;
use anyhow::Result;
use kiln_build::{Builder, Reporter};
use kiln_registry::Reference;
use std::sync::Arc;

pub(crate) fn run(args: BuildArgs, as_executor: bool) -> Result<()> {
    let printer = Printer::install(args.verbosity, args.log_format, args.log_timestamp);
    let result = run_build(args, as_executor, printer.clone());
    printer.finish();
    result
}

#[allow(clippy::print_stdout)]
fn run_build(mut args: BuildArgs, as_executor: bool, reporter: Arc<Printer>) -> Result<()> {
    let options::Translated {
        options,
        context,
        destinations,
        store_lock,
    } = options::translate(&mut args, as_executor, &reporter)?;
    let builder = Builder::new(options, reporter.clone())?;
    crate::stop_signals::set_build_dir(Some(builder.build_dir().to_owned()));
    let result = build_and_write(&builder, &args, &destinations);
    if result.is_err() && crate::stop_signals::received().is_some() {
        // Told to stop: no cache pushes, no garbage collection; this build's files go.
        let _ = builder.cleanup();
        crate::stop_signals::set_build_dir(None);
        drop(builder);
        drop(store_lock);
        drop(context);
        return result.map(drop);
    }
    // Cache entries of the steps that ran are pushed even when the build failed after them:
    // the next attempt needs them most. Only then may garbage collection look at the store.
    builder.finish_cache();
    if args.cleanup {
        if let Err(e) = builder.cleanup() {
            reporter.warn(&format!("--cleanup: {e}"));
        }
    }
    drop(store_lock);
    match builder.collect_garbage(args.keep_storage) {
        Ok(Some(report)) => reporter.info(&format!(
            "kiln dir over its size cap: removed {} least recently used items ({}), {} kept",
            report.removed,
            crate::units::show_size(report.freed),
            crate::units::show_size(report.kept)
        )),
        Ok(None) => {}
        Err(e) => reporter.warn(&format!("keeping the kiln dir under its size cap: {e}")),
    }
    drop(context);
    let digest = result?;
    println!("{digest}");
    Ok(())
}

/// A destination as kaniko names it in its digest files (go-containerregistry's form: Docker
/// Hub is `index.docker.io`).
fn kaniko_name(destination: &Reference) -> String {
    let registry = match destination.registry.as_str() {
        "docker.io" => "index.docker.io",
        other => other,
    };
    format!("{registry}/{}", destination.repository)
}

fn build_and_write(
    builder: &Builder,
    args: &BuildArgs,
    destinations: &[Reference],
) -> Result<kiln_oci::Digest> {
    builder.check_destinations()?;
    let image = builder.build()?;
    let tags: Vec<String> = destinations.iter().map(|d| d.to_string()).collect();
    if let Some(path) = &args.tar_path {
        builder.write_docker_archive(&image, path, &tags)?;
    }
    if let Some(path) = &args.oci_layout_path {
        let name = destinations
            .first()
            .and_then(|d| d.tag.clone())
            .unwrap_or_else(|| "latest".into());
        builder.write_oci_layout(&image, path, &name)?;
    }
    let mut digest = image.manifest_descriptor.digest.clone();
    if !args.no_push {
        for destination in destinations {
            digest = builder.push(&image, destination)?;
        }
    }
    if let Some(path) = &args.digest_file {
        kiln_build::output::write_file_atomically(path, digest.to_string().as_bytes())?;
    }
    // kaniko's formats: one line per destination, NAME@DIGEST and NAME:TAG@DIGEST.
    if let Some(path) = &args.image_name_with_digest_file {
        let text: String = destinations
            .iter()
            .map(|d| format!("{}@{digest}\n", kaniko_name(d)))
            .collect();
        kiln_build::output::write_file_atomically(path, text.as_bytes())?;
    }
    if let Some(path) = &args.image_name_tag_with_digest_file {
        let text: String = destinations
            .iter()
            .map(|d| {
                let tag = d.tag.as_deref().unwrap_or("latest");
                format!("{}:{tag}@{digest}\n", kaniko_name(d))
            })
            .collect();
        kiln_build::output::write_file_atomically(path, text.as_bytes())?;
    }
    Ok(digest)
}
