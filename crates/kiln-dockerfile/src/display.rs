//! Renders instructions back to one-line Dockerfile syntax (after expansion, this is what the
//! build will do; image history uses the same text).

use crate::instructions::{Command, CommandLine, CopyArgs, Health, KeyValue};
use std::fmt::{self, Write};

fn quote_if_needed(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\' | '$' | '`'));
    if plain {
        value.to_string()
    } else {
        serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
    }
}

fn json(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

fn command_line(f: &mut fmt::Formatter<'_>, line: &CommandLine) -> fmt::Result {
    match line {
        CommandLine::Exec(items) => f.write_str(&json(items)),
        CommandLine::Shell(text) => f.write_str(text),
    }
}

fn pairs(f: &mut fmt::Formatter<'_>, pairs: &[KeyValue]) -> fmt::Result {
    for (i, kv) in pairs.iter().enumerate() {
        if i > 0 {
            f.write_char(' ')?;
        }
        write!(f, "{}={}", kv.key.value, quote_if_needed(&kv.value.value))?;
    }
    Ok(())
}

fn copy(f: &mut fmt::Formatter<'_>, a: &CopyArgs) -> fmt::Result {
    let flag = |f: &mut fmt::Formatter<'_>, name: &str, value: &Option<crate::Word>| match value {
        Some(v) => write!(f, " --{name}={}", v.value),
        None => Ok(()),
    };
    flag(f, "from", &a.from)?;
    flag(f, "chown", &a.chown)?;
    flag(f, "chmod", &a.chmod)?;
    flag(f, "checksum", &a.checksum)?;
    if a.link {
        f.write_str(" --link")?;
    }
    if a.parents {
        f.write_str(" --parents")?;
    }
    if let Some(keep) = a.keep_git_dir {
        write!(f, " --keep-git-dir={keep}")?;
    }
    if let Some(unpack) = a.unpack {
        write!(f, " --unpack={unpack}")?;
    }
    for pattern in &a.exclude {
        write!(f, " --exclude={}", pattern.value)?;
    }
    for source in &a.inline {
        write!(f, " <<{}", source.name)?;
    }
    for source in &a.sources {
        write!(f, " {}", source.value)?;
    }
    write!(f, " {}", a.dest.value)
}

/// Go's `time.Duration.String` for whole units, enough for health-check options.
pub(crate) fn duration(ns: i64) -> String {
    match ns {
        0 => "0s".into(),
        n if n % 3_600_000_000_000 == 0 => format!("{}h", n / 3_600_000_000_000),
        n if n % 60_000_000_000 == 0 => format!("{}m", n / 60_000_000_000),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}us", n / 1_000),
        n => format!("{n}ns"),
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())?;
        match self {
            Command::From {
                image,
                stage_name,
                platform,
            } => {
                if let Some(p) = platform {
                    write!(f, " --platform={}", p.value)?;
                }
                write!(f, " {}", image.value)?;
                if let Some(name) = stage_name {
                    write!(f, " AS {name}")?;
                }
                Ok(())
            }
            Command::Run {
                command,
                mounts,
                network,
                security,
                ..
            } => {
                for spec in mounts.iter().filter_map(|m| m.spec.as_ref()) {
                    write!(f, " --mount={}", spec.value)?;
                }
                if let Some(n) = network {
                    write!(f, " --network={n}")?;
                }
                if let Some(s) = security {
                    write!(f, " --security={s}")?;
                }
                f.write_char(' ')?;
                command_line(f, command)
            }
            Command::Cmd { command } | Command::Entrypoint { command } => {
                f.write_char(' ')?;
                command_line(f, command)
            }
            Command::Shell { shell } => write!(f, " {}", json(shell)),
            Command::Label { labels: p } | Command::Env { env: p } => {
                f.write_char(' ')?;
                pairs(f, p)
            }
            Command::Maintainer { name } => write!(f, " {}", name.value),
            Command::Expose { ports } => {
                for p in ports {
                    write!(f, " {}", p.value)?;
                }
                Ok(())
            }
            Command::Add(a) | Command::Copy(a) => copy(f, a),
            Command::Volume { paths } => {
                let items: Vec<String> = paths.iter().map(|p| p.value.clone()).collect();
                write!(f, " {}", json(&items))
            }
            Command::User { user: w }
            | Command::Workdir { path: w }
            | Command::Stopsignal { signal: w } => {
                write!(f, " {}", w.value)
            }
            Command::Arg { args } => {
                for a in args {
                    match &a.default {
                        Some(v) => write!(f, " {}={}", a.name, quote_if_needed(&v.value))?,
                        None => write!(f, " {}", a.name)?,
                    }
                }
                Ok(())
            }
            Command::Onbuild { expression, .. } => write!(f, " {expression}"),
            Command::Healthcheck { health } => match health {
                Health::None => f.write_str(" NONE"),
                Health::Cmd {
                    test,
                    interval_ns,
                    timeout_ns,
                    start_period_ns,
                    start_interval_ns,
                    retries,
                } => {
                    for (name, value) in [
                        ("interval", interval_ns),
                        ("timeout", timeout_ns),
                        ("start-period", start_period_ns),
                        ("start-interval", start_interval_ns),
                    ] {
                        if let Some(ns) = value {
                            write!(f, " --{name}={}", duration(*ns))?;
                        }
                    }
                    if let Some(r) = retries {
                        write!(f, " --retries={r}")?;
                    }
                    match test.split_first() {
                        Some((kind, rest)) if kind == "CMD-SHELL" => {
                            write!(f, " CMD {}", rest.join(" "))
                        }
                        Some((_, rest)) => write!(f, " CMD {}", json(rest)),
                        None => Ok(()),
                    }
                }
            },
        }
    }
}
