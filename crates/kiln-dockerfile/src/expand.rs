//! Word expansion applied to typed instructions, in exactly the places BuildKit applies it
//! (ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER VOLUME WORKDIR, `--chown`, `--chmod`,
//! `--checksum`, `--exclude`, `RUN --mount` fields and unquoted COPY heredoc bodies; never the
//! RUN/CMD/ENTRYPOINT command text, which the shell expands at run time).

use crate::error::{ErrorKind, Located, Warning};
use crate::instructions::{Command, CopyArgs, KeyValue, Word};
use crate::mount::{parse_chmod, Mount};
use crate::shell::{EnvGetter, Lexer};
use crate::span::Pos;
use std::collections::BTreeSet;

/// Expands instruction words against an environment, recording which variables were used.
pub struct Expander<'a> {
    lexer: Lexer,
    keep_unset: bool,
    env: &'a dyn EnvGetter,
    /// Variables referenced that had a value.
    pub used: BTreeSet<String>,
    /// Variables referenced that had no value.
    pub unset: BTreeSet<String>,
    /// Warnings found while expanding (e.g. EXPOSE with a host port).
    pub warnings: Vec<Warning>,
}

impl<'a> Expander<'a> {
    /// An expander with the file's escape character. With `keep_unset`, references to unset
    /// variables stay as written (used when the base image's environment is not known).
    pub fn new(escape: char, env: &'a dyn EnvGetter, keep_unset: bool) -> Self {
        Expander {
            lexer: Lexer::new(escape).skip_unset_env(keep_unset),
            keep_unset,
            env,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }

    /// Expands one word; `keyword` names the instruction in errors.
    pub fn word(&mut self, word: &Word, keyword: &str) -> Result<Word, Located> {
        let lexer = self.lexer;
        self.word_with(&lexer, word, keyword)
    }

    fn word_with(&mut self, lexer: &Lexer, word: &Word, keyword: &str) -> Result<Word, Located> {
        match lexer.process_word(&word.value, self.env) {
            Ok(expansion) => {
                self.used.extend(expansion.matched);
                self.unset.extend(expansion.unmatched);
                Ok(Word::new(expansion.value, word.pos))
            }
            Err(e) => {
                let prefix = word
                    .value
                    .get(..e.offset.min(word.value.len()))
                    .unwrap_or("");
                let pos = if prefix.contains('\n') {
                    word.pos
                } else {
                    Pos {
                        line: word.pos.line,
                        column: word.pos.column + prefix.chars().count(),
                    }
                };
                Err(Located::new(
                    pos,
                    Some(keyword),
                    ErrorKind::Expansion(e.to_string()),
                ))
            }
        }
    }

    /// Expands one word and splits the result into words as a shell would.
    fn split_word(&mut self, word: &Word, keyword: &str) -> Result<Vec<Word>, Located> {
        // Expanding first records the variables used and reports errors with positions.
        self.word(word, keyword)?;
        let words = self
            .lexer
            .process_words(&word.value, self.env)
            .map_err(|e| {
                Located::new(word.pos, Some(keyword), ErrorKind::Expansion(e.to_string()))
            })?;
        Ok(words.into_iter().map(|w| Word::new(w, word.pos)).collect())
    }

    fn words(&mut self, words: &[Word], keyword: &str) -> Result<Vec<Word>, Located> {
        words.iter().map(|w| self.word(w, keyword)).collect()
    }

    fn opt(&mut self, word: &Option<Word>, keyword: &str) -> Result<Option<Word>, Located> {
        word.as_ref().map(|w| self.word(w, keyword)).transpose()
    }

    fn pairs(&mut self, pairs: &[KeyValue], keyword: &str) -> Result<Vec<KeyValue>, Located> {
        let mut out = Vec::with_capacity(pairs.len());
        for kv in pairs {
            let key = self.word(&kv.key, keyword)?;
            if key.value.is_empty() {
                return Err(Located::new(
                    kv.key.pos,
                    Some(keyword),
                    ErrorKind::Syntax(format!("{keyword} names can not be blank")),
                ));
            }
            out.push(KeyValue {
                key,
                value: self.word(&kv.value, keyword)?,
            });
        }
        Ok(out)
    }

    /// Expands every expandable part of `command` and checks the results. ARG and FROM are
    /// handled by the planner (they change or read the argument scope).
    pub fn command(&mut self, command: &Command) -> Result<Command, Located> {
        let keyword = command.keyword();
        Ok(match command {
            Command::Run {
                command: line,
                heredocs,
                mounts,
                network,
                security,
            } => {
                let mut expanded = Vec::with_capacity(mounts.len());
                for mount in mounts {
                    expanded.push(self.mount(mount)?);
                }
                Command::Run {
                    command: line.clone(),
                    heredocs: heredocs.clone(),
                    mounts: expanded,
                    network: network.clone(),
                    security: security.clone(),
                }
            }
            Command::Label { labels } => Command::Label {
                labels: self.pairs(labels, keyword)?,
            },
            Command::Env { env } => Command::Env {
                env: self.pairs(env, keyword)?,
            },
            Command::Expose { ports } => {
                // EXPOSE splits expanded words (BuildKit's ProcessWords): `EXPOSE $PORTS`
                // with PORTS="80 443" exposes two ports.
                let mut split = Vec::with_capacity(ports.len());
                for port in ports {
                    split.extend(self.split_word(port, keyword)?);
                }
                let ports = split;
                for port in &ports {
                    self.check_port(port)?;
                }
                Command::Expose { ports }
            }
            Command::Add(args) => Command::Add(self.copy(args, keyword)?),
            Command::Copy(args) => Command::Copy(self.copy(args, keyword)?),
            Command::Volume { paths } => {
                let paths = self.words(paths, keyword)?;
                if let Some(empty) = paths.iter().find(|p| p.value.trim().is_empty()) {
                    return Err(Located::new(
                        empty.pos,
                        Some(keyword),
                        ErrorKind::Syntax("VOLUME specified can not be an empty string".into()),
                    ));
                }
                Command::Volume { paths }
            }
            Command::User { user } => Command::User {
                user: self.non_empty(user, keyword)?,
            },
            // Empty after expansion keeps the working directory, as BuildKit does.
            Command::Workdir { path } => Command::Workdir {
                path: self.word(path, keyword)?,
            },
            Command::Stopsignal { signal } => {
                let signal = self.non_empty(signal, keyword)?;
                if !valid_signal(&signal.value) {
                    return Err(Located::new(
                        signal.pos,
                        Some(keyword),
                        ErrorKind::Syntax(format!(
                            "invalid signal {:?}: expected a name like SIGTERM or a number",
                            signal.value
                        )),
                    ));
                }
                Command::Stopsignal { signal }
            }
            other => other.clone(),
        })
    }

    fn non_empty(&mut self, word: &Word, keyword: &str) -> Result<Word, Located> {
        let expanded = self.word(word, keyword)?;
        if expanded.value.trim().is_empty() {
            return Err(Located::new(
                word.pos,
                Some(keyword),
                ErrorKind::Syntax(format!(
                    "{keyword} {:?} is empty after expansion",
                    word.value
                )),
            ));
        }
        Ok(expanded)
    }

    fn copy(&mut self, args: &CopyArgs, keyword: &str) -> Result<CopyArgs, Located> {
        // BuildKit expands heredoc bodies with a backslash escape and quotes kept as text.
        let heredoc_lexer = Lexer::new('\\')
            .skip_process_quotes(true)
            .skip_unset_env(self.keep_unset);
        let mut inline = Vec::with_capacity(args.inline.len());
        for source in &args.inline {
            let mut source = source.clone();
            if source.expand {
                let body = Word::new(source.content.clone(), Pos::default());
                source.content = self.word_with(&heredoc_lexer, &body, keyword)?.value;
            }
            inline.push(source);
        }
        let chmod = self.opt(&args.chmod, keyword)?;
        if let Some(mode) = &chmod {
            parse_chmod(&mode.value)
                .map_err(|reason| invalid_flag(mode, "chmod", reason, keyword))?;
        }
        let checksum = self.opt(&args.checksum, keyword)?;
        if let Some(sum) = &checksum {
            check_digest(&sum.value)
                .map_err(|reason| invalid_flag(sum, "checksum", reason, keyword))?;
        }
        Ok(CopyArgs {
            sources: self.words(&args.sources, keyword)?,
            inline,
            dest: self.word(&args.dest, keyword)?,
            from: args.from.clone(),
            chown: self.opt(&args.chown, keyword)?,
            chmod,
            link: args.link,
            parents: args.parents,
            exclude: self.words(&args.exclude, keyword)?,
            checksum,
            keep_git_dir: args.keep_git_dir,
            unpack: args.unpack,
        })
    }

    fn mount(&mut self, mount: &Mount) -> Result<Mount, Located> {
        let Some(spec) = &mount.spec else {
            return Ok(mount.clone());
        };
        let lexer = self.lexer;
        let mut failure: Option<Located> = None;
        let result = {
            let mut expand = |value: &str| -> Result<String, String> {
                match self.word_with(&lexer, &Word::new(value, spec.pos), "RUN") {
                    Ok(w) => Ok(w.value),
                    Err(e) => {
                        let message = e.kind.to_string();
                        failure = Some(e);
                        Err(message)
                    }
                }
            };
            Mount::parse(&spec.value, Some(&mut expand))
        };
        if let Some(e) = failure {
            return Err(e);
        }
        result
            .map(|m| m.with_spec(spec.clone()))
            .map_err(|reason| invalid_flag(spec, "mount", reason, "RUN"))
    }

    /// `[ip:][hostPort:]containerPort[-end][/proto]`, as docker's port-spec parser accepts.
    fn check_port(&mut self, port: &Word) -> Result<(), Located> {
        let bad = |reason: &str| {
            Located::new(
                port.pos,
                Some("EXPOSE"),
                ErrorKind::Syntax(format!("invalid port {:?}: {reason}", port.value)),
            )
        };
        let (spec, proto) = match port.value.rsplit_once('/') {
            Some((s, p)) => (s, Some(p)),
            None => (port.value.as_str(), None),
        };
        if let Some(proto) = proto {
            if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
                return Err(bad("the protocol must be tcp, udp or sctp"));
            }
            if proto != proto.to_ascii_lowercase() {
                self.warnings.push(Warning {
                    pos: port.pos,
                    rule: "ExposeProtoCasing",
                    message: format!("protocol in EXPOSE {:?} should be lower case", port.value),
                });
            }
        }
        let container = match spec.rsplit_once(':') {
            Some((_, container)) => {
                self.warnings.push(Warning {
                    pos: port.pos,
                    rule: "ExposeInvalidFormat",
                    message: format!(
                        "EXPOSE {:?} names a host address or port; only the container port is used",
                        port.value
                    ),
                });
                container
            }
            None => spec,
        };
        let (start, end) = match container.split_once('-') {
            Some((a, b)) => (a, b),
            None => (container, container),
        };
        let number = |s: &str| {
            s.parse::<u16>()
                .ok()
                .filter(|_| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
        };
        match (number(start), number(end)) {
            (Some(a), Some(b)) if a <= b => Ok(()),
            (Some(_), Some(_)) => Err(bad("the range's end is before its start")),
            _ => Err(bad(
                "expected a port number 0-65535, optionally a range and /tcp, /udp or /sctp",
            )),
        }
    }
}

fn invalid_flag(word: &Word, flag: &str, reason: String, keyword: &str) -> Located {
    Located::new(
        word.pos,
        Some(keyword),
        ErrorKind::InvalidFlagValue {
            flag: flag.into(),
            value: word.value.clone(),
            reason,
        },
    )
}

/// `algorithm:hex` with a known algorithm and the right length.
fn check_digest(value: &str) -> Result<(), String> {
    let (algorithm, hex) = value
        .split_once(':')
        .ok_or_else(|| "expected a digest like sha256:<64 hex digits>".to_string())?;
    let len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => {
            return Err(format!(
                "unsupported digest algorithm {other:?}: use sha256, sha384 or sha512"
            ))
        }
    };
    if hex.len() != len
        || !hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(format!(
            "a {algorithm} digest has {len} lower-case hex digits"
        ));
    }
    Ok(())
}

const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM",
];

/// moby's `signal.ParseSignal` for Linux: a non-zero number, or a name from its signal map
/// with or without `SIG`.
fn valid_signal(value: &str) -> bool {
    if let Ok(n) = value.parse::<u32>() {
        return n != 0;
    }
    let upper = value.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNALS.contains(&name) || matches!(name, "WINCH" | "XCPU" | "XFSZ" | "RTMIN" | "RTMAX") {
        return true;
    }
    let within = |rest: &str, max: u32| rest.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    name.strip_prefix("RTMIN+").is_some_and(|r| within(r, 15))
        || name.strip_prefix("RTMAX-").is_some_and(|r| within(r, 14))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "99", "SIGRTMIN+3", "SIGWINCH"] {
            assert!(valid_signal(ok), "{ok}");
        }
        for bad in ["SIGFOO", "0", "RTMIN+20", "RTMAX-15", ""] {
            assert!(!valid_signal(bad), "{bad}");
        }
    }

    #[test]
    fn digests() {
        assert!(check_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_digest("sha256:abc").is_err());
        assert!(check_digest(&format!("md5:{}", "a".repeat(32))).is_err());
    }
}
