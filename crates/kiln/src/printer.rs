//! What the binary shows: log lines, RUN output and, on a terminal, live progress.
//!
//! Log lines are `tracing` events: the libraries' own (`kiln_registry` logs each request at
//! debug, `kiln_build` its snapshot and layer decisions) and the build's progress lines the
//! [`Printer`] turns its `Reporter` calls into. One `tracing` layer writes them the way kaniko
//! users read them: plain or colored text, or JSON lines (`level`, `msg`, `time` and the
//! event's fields). `--verbosity` filters by level; only kiln's own crates log, so no
//! dependency's trace output (which could hold request headers) is ever shown.
//!
//! On a terminal (text or color, `TERM` not `dumb`) running steps and transfers are `indicatif`
//! progress bars under the log; lines are printed above them.

use crate::build::{LogFormat, Verbosity};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_build::{Reporter, SnapshotStats, StepDone, StepInfo};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// The crates whose events are shown.
const OUR_CRATES: [&str; 8] = [
    "kiln",
    "kiln_build",
    "kiln_registry",
    "kiln_fs",
    "kiln_sandbox",
    "kiln_oci",
    "kiln_dockerfile",
    "kiln_test",
];

/// The terminal (stderr) and what is drawn on it.
pub(crate) struct Printer {
    format: LogFormat,
    timestamps: bool,
    show_output: bool,
    stderr: Mutex<std::io::Stderr>,
    progress: Option<Progress>,
}

/// Live progress: one bar per transfer, one spinner per running stage.
struct Progress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Printer {
    /// A printer for these flags, installed as the process's `tracing` subscriber.
    pub(crate) fn install(
        verbosity: Verbosity,
        format: LogFormat,
        timestamps: bool,
    ) -> Arc<Printer> {
        let live = format != LogFormat::Json
            && std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("TERM").is_some_and(|t| t != "dumb");
        let printer = Arc::new(Printer {
            format,
            timestamps,
            show_output: !matches!(
                verbosity,
                Verbosity::Panic | Verbosity::Fatal | Verbosity::Error
            ),
            stderr: Mutex::new(std::io::stderr()),
            progress: live.then(|| Progress {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5)),
                bars: Mutex::new(HashMap::new()),
            }),
        });
        let level = match verbosity {
            Verbosity::Panic | Verbosity::Fatal | Verbosity::Error => LevelFilter::ERROR,
            Verbosity::Warn => LevelFilter::WARN,
            Verbosity::Info => LevelFilter::INFO,
            Verbosity::Debug => LevelFilter::DEBUG,
            Verbosity::Trace => LevelFilter::TRACE,
        };
        let targets = OUR_CRATES
            .iter()
            .fold(Targets::new(), |t, name| t.with_target(*name, level))
            .with_default(LevelFilter::OFF);
        let subscriber = tracing_subscriber::registry().with(
            LogLayer {
                printer: printer.clone(),
            }
            .with_filter(targets),
        );
        // A second install (tests calling `run` twice in one process) keeps the first.
        let _ = tracing::subscriber::set_global_default(subscriber);
        printer
    }

    /// Writes raw bytes to stderr, above the progress bars.
    fn write_raw(&self, bytes: &[u8]) {
        let write = || {
            let mut out = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            let _ = out.write_all(bytes);
            let _ = out.flush();
        };
        match &self.progress {
            Some(p) => p.multi.suspend(write),
            None => write(),
        }
    }

    /// One log line in the chosen format.
    fn line(
        &self,
        level: Level,
        message: &str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let time = kiln_oci::time::rfc3339(secs);
        let step = fields
            .get("event")
            .is_some_and(|e| e.as_str() == Some("step-done"));
        let text = if self.format == LogFormat::Json {
            let mut v = serde_json::json!({
                "level": level.as_str().to_ascii_lowercase(),
                "msg": message,
                "time": time,
            });
            if let Some(map) = v.as_object_mut() {
                map.extend(fields);
            }
            format!("{v}\n")
        } else {
            let prefix = if self.timestamps {
                format!("{time} ")
            } else {
                String::new()
            };
            let (start, end) = match (self.format, level) {
                (LogFormat::Color, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
                (LogFormat::Color, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
                (LogFormat::Color, Level::DEBUG | Level::TRACE) => ("\x1b[2m", "\x1b[0m"),
                (LogFormat::Color, _) if step => ("\x1b[1m", "\x1b[0m"),
                _ => ("", ""),
            };
            let tag = match level {
                Level::WARN => "warning: ",
                Level::ERROR => "error: ",
                Level::DEBUG => "debug: ",
                Level::TRACE => "trace: ",
                _ => "",
            };
            // A library event's fields follow its message; the printer's own carry JSON only.
            let shown: Vec<String> = fields
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "event" | "stage" | "step" | "steps" | "seconds" | "snapshot" | "cached"
                    )
                })
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            let fields = if shown.is_empty() {
                String::new()
            } else {
                format!(" ({})", shown.join(", "))
            };
            format!("{prefix}{start}{tag}{message}{fields}{end}\n")
        };
        self.write_raw(text.as_bytes());
    }

    fn bar(&self, key: &str, make: impl FnOnce() -> ProgressBar) {
        if let Some(p) = &self.progress {
            let bar = p.multi.add(make());
            p.bars
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.to_owned(), bar);
        }
    }

    fn with_bar(&self, key: &str, f: impl FnOnce(&ProgressBar)) {
        if let Some(p) = &self.progress {
            if let Some(bar) = p.bars.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
                f(bar);
            }
        }
    }

    fn end_bar(&self, key: &str) {
        if let Some(p) = &self.progress {
            if let Some(bar) = p.bars.lock().unwrap_or_else(|e| e.into_inner()).remove(key) {
                bar.finish_and_clear();
                p.multi.remove(&bar);
            }
        }
    }

    /// Clears whatever progress is still drawn (at the end of a command).
    pub(crate) fn finish(&self) {
        if let Some(p) = &self.progress {
            for (_, bar) in p.bars.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                bar.finish_and_clear();
            }
            let _ = p.multi.clear();
        }
    }

    fn transfer_bar(&self, digest: &kiln_oci::Digest, size: u64, push: bool) {
        let short: String = digest.hex().chars().take(12).collect();
        self.bar(&digest.to_string(), || {
            let bar = ProgressBar::new(size);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:24} {bytes}/{total_bytes} {binary_bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("{} {short}", if push { "push" } else { "pull" }));
            bar
        });
    }
}

/// Pull and push (`kiln pull`, `kiln push`) report through the registry client's reporter.
impl kiln_registry::Reporter for Printer {
    fn blob_start(
        &self,
        digest: &kiln_oci::Digest,
        size: u64,
        direction: kiln_registry::transport::Direction,
    ) {
        self.transfer_bar(
            digest,
            size,
            direction == kiln_registry::transport::Direction::Push,
        );
    }

    fn blob_progress(&self, digest: &kiln_oci::Digest, bytes: u64) {
        self.with_bar(&digest.to_string(), |b| b.inc(bytes));
    }

    fn blob_done(&self, digest: &kiln_oci::Digest, outcome: kiln_registry::BlobOutcome) {
        self.end_bar(&digest.to_string());
        tracing::info!(target: "kiln", "{} {digest}", outcome.describe());
    }

    fn retry(
        &self,
        request: &kiln_registry::error::RequestInfo,
        attempt: u32,
        delay: Duration,
        reason: &str,
    ) {
        tracing::warn!(target: "kiln", "{}", request.retry_message(attempt, delay, reason));
    }

    fn note(&self, message: &str) {
        tracing::info!(target: "kiln", "{message}");
    }
}

/// A step's snapshot cost for its log line: `[, index 0.40s], snapshot 0.41s, layer 9.8 → 0.8
/// MiB in 1.20s` (or `no changes`).
fn snapshot_text(s: SnapshotStats) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let layer = if s.tar_bytes == 0 {
        "no changes".to_owned()
    } else {
        format!(
            "layer {:.1} → {:.1} MiB in {:.2}s",
            s.tar_bytes as f64 / MIB,
            s.blob_bytes as f64 / MIB,
            s.write.as_secs_f64()
        )
    };
    let index = if s.index.is_zero() {
        String::new()
    } else {
        format!(", index {:.2}s", s.index.as_secs_f64())
    };
    format!("{index}, snapshot {:.2}s, {layer}", s.find.as_secs_f64())
}

impl Reporter for Printer {
    fn info(&self, message: &str) {
        tracing::info!(target: "kiln", "{message}");
    }

    fn warn(&self, message: &str) {
        tracing::warn!(target: "kiln", "{message}");
    }

    fn step_started(&self, step: &StepInfo) {
        let text: String = step.text.chars().take(70).collect();
        let label = format!("[{}/{}]", step.stage.0, step.stage.1);
        self.bar(&format!("stage {}", step.stage.0), || {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label);
            bar.set_message(text);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let extra = serde_json::json!({"event": "step-start", "stage": step.stage_name, "step": step.step.0, "steps": step.step.1});
        if self.format == LogFormat::Json {
            tracing::info!(target: "kiln", extra = %extra, "{}", step.text);
        } else {
            tracing::debug!(target: "kiln", "[{}/{}] STEP {}/{}: {} (started)", step.stage.0, step.stage.1, step.step.0, step.step.1, step.text);
        }
    }

    fn step_finished(&self, step: &StepInfo, done: &StepDone) {
        self.end_bar(&format!("stage {}", step.stage.0));
        let text = match &done.cached {
            Some(from) => format!(
                "[{}/{}] STEP {}/{}: {}  CACHED ({from})",
                step.stage.0, step.stage.1, step.step.0, step.step.1, step.text,
            ),
            None => format!(
                "[{}/{}] STEP {}/{}: {}  ({:.1}s{})",
                step.stage.0,
                step.stage.1,
                step.step.0,
                step.step.1,
                step.text,
                done.elapsed.as_secs_f64(),
                done.snapshot.map(snapshot_text).unwrap_or_default()
            ),
        };
        let snapshot = done.snapshot.map(|s| {
            serde_json::json!({
                "index_seconds": s.index.as_secs_f64(),
                "find_seconds": s.find.as_secs_f64(),
                "write_seconds": s.write.as_secs_f64(),
                "tar_bytes": s.tar_bytes,
                "blob_bytes": s.blob_bytes,
            })
        });
        let extra = serde_json::json!({"event": "step-done", "stage": step.stage_name, "step": step.step.0, "steps": step.step.1, "seconds": done.elapsed.as_secs_f64(), "snapshot": snapshot, "cached": done.cached});
        tracing::info!(target: "kiln", extra = %extra, "{text}");
    }

    fn output(&self, _step: &StepInfo, bytes: &[u8]) {
        if !self.show_output {
            return;
        }
        if self.format == LogFormat::Json {
            let extra = serde_json::json!({"event": "output"});
            tracing::info!(target: "kiln", extra = %extra, "{}", String::from_utf8_lossy(bytes));
            return;
        }
        self.write_raw(bytes);
    }

    fn transfer_started(&self, digest: &kiln_oci::Digest, size: u64, push: bool) {
        self.transfer_bar(digest, size, push);
    }

    fn transfer_progress(&self, digest: &kiln_oci::Digest, bytes: u64) {
        self.with_bar(&digest.to_string(), |b| b.inc(bytes));
    }

    fn blob(&self, what: &str, digest: &kiln_oci::Digest) {
        self.end_bar(&digest.to_string());
        let extra = serde_json::json!({"event": "blob"});
        tracing::info!(target: "kiln", extra = %extra, "{what} {digest}");
    }
}

/// Formats every event that passes the level filter through the printer.
struct LogLayer {
    printer: Arc<Printer>,
}

/// An event's message and fields; `extra` (JSON the printer attached) is merged in.
#[derive(Default)]
struct Fields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, serde_json::Value::String(value.to_owned()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.insert(field, serde_json::Value::String(format!("{value:?}")));
    }
}

impl Fields {
    fn insert(&mut self, field: &Field, value: serde_json::Value) {
        match field.name() {
            "message" => {
                self.message = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            "extra" => {
                if let Some(serde_json::Value::Object(map)) = value
                    .as_str()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                {
                    self.fields.extend(map);
                }
            }
            name => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.printer
            .line(*event.metadata().level(), &fields.message, fields.fields);
    }
}
