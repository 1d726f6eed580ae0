//! `kiln outline`: the parsed, expanded plan of a Dockerfile, for people debugging one and for
//! tools (the JSON form is a stable interface, documented in docs/outline-json.md).

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kiln_build::context::StdContextFs;
use kiln_dockerfile::ignore::{
    ignore_file_candidates, parse_ignore_file, walk, IgnoreFile, Matcher,
};
use kiln_dockerfile::{plan, Base, Dockerfile, Plan, PlanOptions, Platform};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct OutlineArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile). A relative path is looked up from the
    /// current directory first, then inside the context. `-` reads standard input.
    #[arg(short = 'f', long = "file", alias = "dockerfile", value_name = "PATH")]
    file: Option<PathBuf>,
    /// A build argument, `NAME=value`; a bare `NAME` takes the value from the environment.
    #[arg(long = "build-arg", value_name = "NAME[=VALUE]")]
    build_args: Vec<String>,
    /// The stage to build (default: the last one).
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// The platform the image is for (default: this machine's), e.g. linux/arm64.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also list the context files the build would send (after .dockerignore).
    #[arg(long)]
    list_context: bool,
    /// The build context directory (read for .dockerignore).
    #[arg(value_name = "CONTEXT", default_value = ".")]
    context: PathBuf,
}

/// The `.dockerignore` that applies, as outline reports it.
#[derive(Debug, Serialize)]
struct IgnoreReport {
    /// Path of the ignore file used, relative to the context (or absolute), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    /// Patterns in order, `!` exceptions included, cleaned as matched.
    patterns: Vec<String>,
    #[serde(skip)]
    parsed: Option<IgnoreFile>,
}

#[derive(Debug, Serialize)]
struct Outline<'a> {
    /// Version of this JSON layout.
    schema: u32,
    context: String,
    dockerignore: IgnoreReport,
    /// With --list-context: the paths the build would send, directories ending in '/'.
    #[serde(skip_serializing_if = "Option::is_none")]
    context_files: Option<Vec<String>>,
    #[serde(flatten)]
    plan: &'a Plan,
}

pub(crate) fn run(args: OutlineArgs) -> Result<()> {
    let build_args = crate::build::build_args(&args.build_args)?;
    let host = Platform::host();
    let target_platform = match &args.platform {
        Some(p) => Platform::parse_flag(p).map_err(|e| anyhow::anyhow!("--platform: {e}"))?,
        None => host.clone(),
    };
    // Flags are checked before any file is read.
    let (dockerfile_path, text) = read_dockerfile(&args)?;
    let display_name = dockerfile_path.display().to_string();
    let options = PlanOptions {
        build_args,
        target: args.target.clone(),
        build_platform: host,
        target_platform,
        ..PlanOptions::default()
    };
    let dockerfile = Dockerfile::parse(&text, &display_name)?;
    let plan = plan(&dockerfile, &options)?;
    let dockerignore = read_ignore(&args.context, &dockerfile_path)?;
    let context_files = if args.list_context {
        Some(list_context(&args.context, &dockerignore)?)
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        Format::Json => {
            let outline = Outline {
                schema: 1,
                context: args.context.display().to_string(),
                dockerignore,
                context_files,
                plan: &plan,
            };
            serde_json::to_writer_pretty(&mut out, &outline)?;
            writeln!(out)?;
        }
        Format::Text => {
            write_text(&mut out, &plan, &dockerignore)?;
            if let Some(files) = &context_files {
                writeln!(out, "\ncontext files ({}):", files.len())?;
                for file in files {
                    writeln!(out, "  {file}")?;
                }
            }
            for w in &plan.warnings {
                if w.pos.line == 0 {
                    writeln!(out, "warning: {} [{}]", w.message, w.rule)?;
                } else {
                    writeln!(
                        out,
                        "warning: {}:{}:{}: {} [{}]",
                        plan.file, w.pos.line, w.pos.column, w.message, w.rule
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn read_dockerfile(args: &OutlineArgs) -> Result<(PathBuf, String)> {
    let path = match &args.file {
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the Dockerfile from standard input")?;
            return Ok((PathBuf::from("Dockerfile"), text));
        }
        Some(p) if p.is_absolute() || p.exists() => p.clone(),
        Some(p) => args.context.join(p),
        None => args.context.join("Dockerfile"),
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the Dockerfile {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((path, text))
}

/// Finds and parses the ignore file: `<Dockerfile>.dockerignore` beside the Dockerfile first,
/// then the context's `.dockerignore`.
fn read_ignore(context: &Path, dockerfile: &Path) -> Result<IgnoreReport> {
    let candidates: Vec<PathBuf> =
        match dockerfile.strip_prefix(context).ok().and_then(Path::to_str) {
            Some(rel) => ignore_file_candidates(rel)
                .into_iter()
                .map(|c| context.join(c))
                .collect(),
            // A Dockerfile outside the context: its own ignore file beside it, then the context's.
            None => {
                let mut beside = dockerfile.as_os_str().to_os_string();
                beside.push(".dockerignore");
                vec![PathBuf::from(beside), context.join(".dockerignore")]
            }
        };
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let file = parse_ignore_file(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                return Ok(IgnoreReport {
                    file: Some(path.display().to_string()),
                    patterns: file.patterns.iter().map(|p| p.to_string()).collect(),
                    parsed: Some(file),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(IgnoreReport {
        file: None,
        patterns: Vec::new(),
        parsed: None,
    })
}

/// Walks the context as a build would send it. Like docker, the walk skips excluded
/// directories whole unless an exception may re-include something inside them.
fn list_context(context: &Path, ignore: &IgnoreReport) -> Result<Vec<String>> {
    let matcher = match &ignore.parsed {
        Some(file) => file.matcher().map_err(|e| {
            anyhow::anyhow!("{}: {e}", ignore.file.as_deref().unwrap_or(".dockerignore"))
        })?,
        None => Matcher::new(&[]).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let mut files = Vec::new();
    walk(&StdContextFs::new(context), &matcher, |path, entry| {
        files.push(if entry.is_dir {
            format!("{path}/")
        } else {
            path.to_string()
        });
    })
    .with_context(|| format!("cannot read the build context {}", context.display()))?;
    Ok(files)
}

fn write_text(out: &mut impl Write, plan: &Plan, ignore: &IgnoreReport) -> Result<()> {
    let target = plan.stages.iter().find(|s| s.index == plan.target);
    writeln!(
        out,
        "{}: {} stage{} to build, target {} ({}), platform {}",
        plan.file,
        plan.stages.len(),
        if plan.stages.len() == 1 { "" } else { "s" },
        plan.target,
        target.and_then(|t| t.name.as_deref()).unwrap_or("unnamed"),
        plan.target_platform
    )?;
    if let Some(file) = &ignore.file {
        writeln!(
            out,
            "dockerignore: {} ({} patterns)",
            file,
            ignore.patterns.len()
        )?;
    }
    for arg in &plan.global_args {
        writeln!(out, "global ARG {}", arg_text(arg))?;
    }
    for stage in &plan.stages {
        let base = match &stage.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image { reference } => format!("image {reference}"),
            Base::Stage { index, name } => match name {
                Some(n) => format!("stage {index} ({n})"),
                None => format!("stage {index}"),
            },
        };
        writeln!(out)?;
        write!(out, "stage {}", stage.index)?;
        if let Some(name) = &stage.name {
            write!(out, " {name:?}")?;
        }
        write!(out, " from {base}")?;
        if let Some(p) = &stage.platform {
            write!(out, " --platform={p}")?;
        }
        writeln!(
            out,
            "  [lines {}-{}]",
            stage.span.start.line, stage.span.end.line
        )?;
        if !stage.depends_on.is_empty() {
            let deps: Vec<String> = stage.depends_on.iter().map(|d| d.to_string()).collect();
            writeln!(out, "  needs stages: {}", deps.join(", "))?;
        }
        if !stage.images.is_empty() {
            writeln!(out, "  reads images: {}", stage.images.join(", "))?;
        }
        for arg in &stage.args {
            writeln!(out, "  ARG {}", arg_text(arg))?;
        }
        if !stage.unresolved.is_empty() {
            writeln!(
                out,
                "  unresolved until the base image is known: {}",
                stage.unresolved.join(", ")
            )?;
        }
        for instruction in &stage.instructions {
            writeln!(
                out,
                "  {:>4}:{:<3} {}",
                instruction.span.start.line, instruction.span.start.column, instruction.command
            )?;
        }
    }
    if !plan.skipped_stages.is_empty() {
        let skipped: Vec<String> = plan
            .skipped_stages
            .iter()
            .map(|s| match &s.name {
                Some(n) => format!("{} ({n})", s.index),
                None => s.index.to_string(),
            })
            .collect();
        writeln!(out, "\nskipped stages: {}", skipped.join(", "))?;
    }
    let waves: Vec<String> = plan
        .build_order
        .iter()
        .map(|w| {
            format!(
                "[{}]",
                w.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    writeln!(out, "build order: {}", waves.join(" -> "))?;
    Ok(())
}

fn arg_text(arg: &kiln_dockerfile::plan::ArgValue) -> String {
    let source = serde_json::to_value(arg.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match &arg.value {
        Some(v) => format!("{}={v:?} ({source})", arg.name),
        None => format!("{} (unset)", arg.name),
    }
}
