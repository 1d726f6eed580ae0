//! The `kiln` command line. Library crates never print; this binary owns the terminal, turns
//! errors into messages and exit codes, and holds no build logic of its own.
// Flag docs are clap's help text, where `[...]` marks optional parts, not rustdoc links.
#![allow(rustdoc::broken_intra_doc_links)]

mod build;
mod cloud_context;
mod outline;
mod printer;
mod prune;
mod registry_flags;
mod stop_signals;
mod transfer;
mod units;
mod warm;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// kiln builds OCI container images from a Dockerfile, with no daemon and no privileges.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Build an image from a Dockerfile and a context (kaniko's executor flags).
    Build(Box<build::BuildArgs>),
    /// Print the parsed, expanded build plan of a Dockerfile (stages, instructions, args).
    Outline(outline::OutlineArgs),
    /// Pull an image from a registry into an OCI layout or a docker-archive tarball.
    Pull(transfer::PullArgs),
    /// Push an image from an OCI layout to one or more registries.
    Push(transfer::PushArgs),
    /// Fill a directory with base images for builds' --cache-dir (kaniko's warmer).
    Warm(warm::WarmArgs),
    /// Free space in a kiln dir: least recently used blobs, layers and cache entries.
    Prune(prune::PruneArgs),
    /// Print the version (kaniko's `executor version`).
    Version,
}

/// Exit codes: 0 success, 1 the input (Dockerfile, context) is wrong, 2 usage error (clap).
const EXIT_INPUT_ERROR: u8 = 1;

/// The error and its causes joined by `: `, leaving out a cause whose text the message
/// already holds (library errors often show their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// kaniko's `Kaniko version :  v1.9.0` line, with kiln's name and version.
#[allow(clippy::print_stdout)]
fn print_version() {
    println!("kiln version :  v{}", env!("CARGO_PKG_VERSION"));
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let program = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let builds = program == "executor" || argv.get(1).is_some_and(|a| a == "build");
    if builds
        && !rustix::process::geteuid().is_root()
        && std::env::var_os(kiln_sandbox::userns::IN_USER_NAMESPACE_ENV).is_none()
    {
        // Rootless: run again as root of a user namespace (before any thread starts).
        return match kiln_sandbox::userns::run_in_user_namespace() {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_INPUT_ERROR)
            }
        };
    }
    stop_signals::watch();
    if program == "warmer" {
        // kaniko's `/kaniko/warmer --image …` is `kiln warm …`.
        argv.insert(1, "warm".into());
    }
    if program == "executor" {
        // `/kaniko/executor --context … --destination …` is `kiln build …`; kaniko's
        // `executor version` (and `--version`) print the version.
        match argv.get(1).and_then(|a| a.to_str()) {
            Some("version" | "--version") => argv[1] = "version".into(),
            _ => argv.insert(1, "build".into()),
        }
    }
    let cli = Cli::parse_from(build::rewrite_camel_case(argv));
    let result = match cli.command {
        Commands::Build(args) => build::run(*args, program == "executor"),
        Commands::Outline(args) => outline::run(args),
        Commands::Pull(args) => transfer::pull(args),
        Commands::Push(args) => transfer::push(args),
        Commands::Prune(args) => prune::run(args),
        Commands::Warm(args) => warm::run(args),
        Commands::Version => {
            print_version();
            Ok(())
        }
    };
    match (result, stop_signals::received()) {
        (Ok(()), _) => ExitCode::SUCCESS,
        (Err(e), Some(signal)) => {
            eprintln!(
                "error: build stopped by {}: {}; RUN steps killed, this build's temporary \
                 files removed",
                stop_signals::name(signal),
                error_chain(&e)
            );
            ExitCode::from(stop_signals::exit_code(signal))
        }
        (Err(e), None) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(EXIT_INPUT_ERROR)
        }
    }
}
