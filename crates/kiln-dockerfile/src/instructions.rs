//! Typed instructions: nodes checked and turned into [`Command`]s with validated flags, grouped
//! into `Stage`s (BuildKit's `instructions` package).
//!
//! Arguments stay unexpanded here ([`Word`]s keep where they were written); `Command::expand`
//! produces the expanded copy once the environment is known.

use crate::error::{suggest, ErrorKind, Located, Warning};
use crate::mount::Mount;
use crate::parser::{Args, Heredoc, Node, RawFlag, RawWord};
use crate::span::{Pos, Span};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// A piece of instruction text and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The text (raw before expansion, expanded after).
    pub value: String,
    /// Where the raw text starts in the file.
    pub pos: Pos,
}

impl Word {
    pub(crate) fn new(value: impl Into<String>, pos: Pos) -> Self {
        Word {
            value: value.into(),
            pos,
        }
    }
}

impl Serialize for Word {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

/// A command line in exec (JSON array) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "lowercase")]
pub enum CommandLine {
    /// `["executable", "arg"]`: run directly, never expanded.
    Exec(Vec<String>),
    /// `command text`: run by the stage's SHELL, never expanded by the builder.
    Shell(String),
}

/// `NAME=value` of ENV and LABEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The name.
    pub key: Word,
    /// The value.
    pub value: Word,
}

/// One name of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The argument's name.
    pub name: String,
    /// The default after `=`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Word>,
}

/// A heredoc used as a COPY/ADD source: a file whose content is inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineSource {
    /// The file name (the heredoc delimiter).
    pub name: String,
    /// The content (expanded unless the delimiter was quoted).
    pub content: String,
    /// Whether the content undergoes expansion.
    pub expand: bool,
}

/// COPY and ADD: sources, destination and flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyArgs {
    /// Source paths, globs or URLs, as listed.
    pub sources: Vec<Word>,
    /// Heredoc sources (`COPY <<EOF /dest`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<InlineSource>,
    /// The destination.
    pub dest: Word,
    /// `--from`: a stage name, stage index or image reference (COPY only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Word>,
    /// `--chown=user[:group]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chown: Option<Word>,
    /// `--chmod=` octal or symbolic mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chmod: Option<Word>,
    /// `--link`.
    #[serde(skip_serializing_if = "is_false")]
    pub link: bool,
    /// `--parents` (COPY only).
    #[serde(skip_serializing_if = "is_false")]
    pub parents: bool,
    /// `--exclude=` patterns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Word>,
    /// `--checksum=` (ADD only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Word>,
    /// `--keep-git-dir` (ADD only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_git_dir: Option<bool>,
    /// `--unpack` (ADD only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpack: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// HEALTHCHECK's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [options] CMD …`.
    Cmd {
        /// The image-config `Test`: `["CMD", …]` for exec form, `["CMD-SHELL", "…"]` for shell form.
        test: Vec<String>,
        /// `--interval` in nanoseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        interval_ns: Option<i64>,
        /// `--timeout` in nanoseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ns: Option<i64>,
        /// `--start-period` in nanoseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        start_period_ns: Option<i64>,
        /// `--start-interval` in nanoseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        start_interval_ns: Option<i64>,
        /// `--retries`.
        #[serde(skip_serializing_if = "Option::is_none")]
        retries: Option<i64>,
    },
}

/// An instruction's meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum Command {
    /// `FROM [--platform=p] image [AS name]`.
    From {
        /// The base: an image reference, `scratch` or an earlier stage's name.
        image: Word,
        /// The stage name after AS, lower-cased.
        #[serde(skip_serializing_if = "Option::is_none")]
        stage_name: Option<String>,
        /// `--platform`.
        #[serde(skip_serializing_if = "Option::is_none")]
        platform: Option<Word>,
    },
    /// `RUN`.
    Run {
        /// What to run.
        command: CommandLine,
        /// Heredoc bodies attached to the command.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        heredocs: Vec<Heredoc>,
        /// `--mount=` specifications.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        mounts: Vec<Mount>,
        /// `--network=default|none|host`.
        #[serde(skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// `--security=sandbox|insecure`.
        #[serde(skip_serializing_if = "Option::is_none")]
        security: Option<String>,
    },
    /// `CMD`.
    Cmd {
        /// The default command.
        command: CommandLine,
    },
    /// `ENTRYPOINT`.
    Entrypoint {
        /// The entrypoint.
        command: CommandLine,
    },
    /// `SHELL ["exe", "flag"]`.
    Shell {
        /// The shell and its flags.
        shell: Vec<String>,
    },
    /// `LABEL k=v …`.
    Label {
        /// The labels in order.
        labels: Vec<KeyValue>,
    },
    /// `MAINTAINER name` (deprecated; becomes the `author` field).
    Maintainer {
        /// The maintainer.
        name: Word,
    },
    /// `EXPOSE port[/proto] …`.
    Expose {
        /// Port specs (`80`, `53/udp`, `8000-8010/tcp`).
        ports: Vec<Word>,
    },
    /// `ENV k=v …`.
    Env {
        /// The variables in order.
        env: Vec<KeyValue>,
    },
    /// `ADD`.
    Add(CopyArgs),
    /// `COPY`.
    Copy(CopyArgs),
    /// `VOLUME`.
    Volume {
        /// Mount points.
        paths: Vec<Word>,
    },
    /// `USER user[:group]`.
    User {
        /// The user (and group).
        user: Word,
    },
    /// `WORKDIR path`.
    Workdir {
        /// The path (relative to the previous WORKDIR when not absolute).
        path: Word,
    },
    /// `ARG name[=default] …`.
    Arg {
        /// The declared names.
        args: Vec<ArgDecl>,
    },
    /// `ONBUILD instruction`.
    Onbuild {
        /// The trigger as written after ONBUILD (stored in the image config).
        expression: String,
        /// The trigger, parsed and checked (absent when it does not parse: see `error`).
        #[serde(skip_serializing_if = "Option::is_none")]
        trigger: Option<Box<Instruction>>,
        /// Why the trigger does not parse; it fails when an image built from this one runs it.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `STOPSIGNAL signal`.
    Stopsignal {
        /// The signal name or number.
        signal: Word,
    },
    /// `HEALTHCHECK`.
    Healthcheck {
        /// The check.
        health: Health,
    },
}

/// A typed instruction with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// From the keyword to the end of its last line.
    pub span: Span,
    /// The logical line as written (continuations joined).
    pub original: String,
    /// What it does.
    pub command: Command,
}

impl Serialize for Instruction {
    /// `{span, original, text, instruction, …fields}` where `text` is the instruction rendered
    /// on one line (after expansion when the instruction was expanded).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Repr<'a> {
            span: &'a Span,
            original: &'a str,
            text: String,
            #[serde(flatten)]
            command: &'a Command,
        }
        Repr {
            span: &self.span,
            original: &self.original,
            text: self.command.to_string(),
            command: &self.command,
        }
        .serialize(s)
    }
}

impl Instruction {
    /// The upper-case keyword (`COPY`).
    pub fn keyword(&self) -> &'static str {
        self.command.keyword()
    }
}

impl Command {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From { .. } => "FROM",
            Command::Run { .. } => "RUN",
            Command::Cmd { .. } => "CMD",
            Command::Entrypoint { .. } => "ENTRYPOINT",
            Command::Shell { .. } => "SHELL",
            Command::Label { .. } => "LABEL",
            Command::Maintainer { .. } => "MAINTAINER",
            Command::Expose { .. } => "EXPOSE",
            Command::Env { .. } => "ENV",
            Command::Add(_) => "ADD",
            Command::Copy(_) => "COPY",
            Command::Volume { .. } => "VOLUME",
            Command::User { .. } => "USER",
            Command::Workdir { .. } => "WORKDIR",
            Command::Arg { .. } => "ARG",
            Command::Onbuild { .. } => "ONBUILD",
            Command::Stopsignal { .. } => "STOPSIGNAL",
            Command::Healthcheck { .. } => "HEALTHCHECK",
        }
    }
}

/// Every instruction keyword, for suggestions.
pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagType {
    Bool,
    Text,
    List,
}

const FLAGS: &[(&str, &[(&str, FlagType)])] = &[
    ("FROM", &[("platform", FlagType::Text)]),
    (
        "RUN",
        &[
            ("mount", FlagType::List),
            ("network", FlagType::Text),
            ("security", FlagType::Text),
        ],
    ),
    (
        "COPY",
        &[
            ("from", FlagType::Text),
            ("chown", FlagType::Text),
            ("chmod", FlagType::Text),
            ("link", FlagType::Bool),
            ("parents", FlagType::Bool),
            ("exclude", FlagType::List),
        ],
    ),
    (
        "ADD",
        &[
            ("chown", FlagType::Text),
            ("chmod", FlagType::Text),
            ("link", FlagType::Bool),
            ("exclude", FlagType::List),
            ("checksum", FlagType::Text),
            ("keep-git-dir", FlagType::Bool),
            ("unpack", FlagType::Bool),
        ],
    ),
    (
        "HEALTHCHECK",
        &[
            ("interval", FlagType::Text),
            ("timeout", FlagType::Text),
            ("start-period", FlagType::Text),
            ("start-interval", FlagType::Text),
            ("retries", FlagType::Text),
        ],
    ),
];

fn flag_specs(keyword: &str) -> &'static [(&'static str, FlagType)] {
    FLAGS
        .iter()
        .find(|(k, _)| *k == keyword)
        .map(|(_, specs)| *specs)
        .unwrap_or(&[])
}

/// Parsed flag values: bools as "true"/"false", lists with every occurrence.
#[derive(Default)]
struct Flags {
    values: BTreeMap<&'static str, Vec<Word>>,
}

impl Flags {
    /// A text flag's value; an empty value (`--from=`) means unset, as in BuildKit.
    fn text(&mut self, name: &str) -> Option<Word> {
        self.values
            .remove(name)
            .and_then(|mut v| v.pop())
            .filter(|w| !w.value.is_empty())
    }
    fn list(&mut self, name: &str) -> Vec<Word> {
        self.values.remove(name).unwrap_or_default()
    }
    fn bool(&mut self, name: &str) -> Option<bool> {
        self.text(name).map(|w| w.value == "true")
    }
}

/// BuildKit's `BFlags.Parse` for one instruction.
fn parse_flags(node: &Node, keyword: &str) -> Result<Flags, Located> {
    let specs = flag_specs(keyword);
    let mut flags = Flags::default();
    for RawFlag { text, offset } in &node.flags {
        let pos = node.pos(*offset);
        let err = |kind| Located::new(pos, Some(keyword), kind);
        let body = text.strip_prefix("--").unwrap_or(text);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(&(spec_name, ty)) = specs.iter().find(|(n, _)| *n == name) else {
            let valid_on: Vec<&str> = FLAGS
                .iter()
                .filter(|(_, s)| s.iter().any(|(n, _)| *n == name))
                .map(|(k, _)| *k)
                .collect();
            return Err(err(ErrorKind::UnknownFlag {
                flag: name.to_string(),
                suggestion: suggest(name, specs.iter().map(|(n, _)| *n)),
                valid_on: (!valid_on.is_empty()).then(|| valid_on.join(", ")),
            }));
        };
        if ty != FlagType::List && flags.values.contains_key(spec_name) {
            return Err(err(ErrorKind::DuplicateFlag(name.to_string())));
        }
        let value_pos = node.pos(offset + 2 + name.len() + usize::from(value.is_some()));
        let value = match ty {
            FlagType::Bool => match value.map(str::to_ascii_lowercase).as_deref() {
                None | Some("true") => "true".to_string(),
                Some("false") => "false".to_string(),
                Some("") => return Err(err(ErrorKind::MissingFlagValue(name.to_string()))),
                Some(other) => {
                    return Err(err(ErrorKind::InvalidFlagValue {
                        flag: name.to_string(),
                        value: other.to_string(),
                        reason: "expected true or false".into(),
                    }))
                }
            },
            FlagType::Text | FlagType::List => match value {
                Some(v) => v.to_string(),
                None => return Err(err(ErrorKind::MissingFlagValue(name.to_string()))),
            },
        };
        flags
            .values
            .entry(spec_name)
            .or_default()
            .push(Word::new(value, value_pos));
    }
    Ok(flags)
}

/// Converts parsed nodes to typed instructions.
pub(crate) struct Typer<'a> {
    pub(crate) warnings: &'a mut Vec<Warning>,
}

impl Typer<'_> {
    /// Types one node.
    pub(crate) fn instruction(&mut self, node: &Node) -> Result<Instruction, Located> {
        let upper = node.keyword.to_ascii_uppercase();
        let keyword_pos = node.pos(node.keyword_offset);
        let Some(keyword) = KEYWORDS.iter().copied().find(|k| *k == upper) else {
            return Err(Located::new(
                keyword_pos,
                None,
                ErrorKind::UnknownInstruction {
                    name: node.keyword.clone(),
                    suggestion: suggest(&node.keyword, KEYWORDS),
                },
            ));
        };
        let syntax =
            |message: String| Located::new(keyword_pos, Some(keyword), ErrorKind::Syntax(message));
        let word = |raw: &RawWord| Word::new(raw.text.clone(), node.pos(raw.offset));
        let mut flags = parse_flags(node, keyword)?;
        let command = match keyword {
            "FROM" => {
                let words = raw_words(&node.args);
                let stage_name = match words.len() {
                    1 => None,
                    3 if words[1].text.eq_ignore_ascii_case("as") => {
                        let name = words[2].text.to_ascii_lowercase();
                        if !valid_stage_name(&name) {
                            return Err(Located::new(
                                node.pos(words[2].offset),
                                Some(keyword),
                                ErrorKind::Stage(format!(
                                    "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                                    words[2].text
                                )),
                            ));
                        }
                        Some(name)
                    }
                    _ => {
                        return Err(syntax(
                            "FROM requires either one or three arguments: `FROM image` or `FROM image AS name`".into(),
                        ))
                    }
                };
                Command::From {
                    image: word(&words[0]),
                    stage_name,
                    platform: flags.text("platform"),
                }
            }
            "RUN" => {
                // A bare RUN is BuildKit's `/bin/sh -c ""`.
                let command = command_line(&node.args).unwrap_or(CommandLine::Shell(String::new()));
                let mut mounts = Vec::new();
                for spec in flags.list("mount") {
                    // As in BuildKit, only the CSV syntax is checked here; the fields are checked
                    // once expanded, in the stages the build needs.
                    let mount = Mount::parse_unexpanded(&spec.value).map_err(|reason| {
                        Located::new(
                            spec.pos,
                            Some(keyword),
                            ErrorKind::InvalidFlagValue {
                                flag: "mount".into(),
                                value: spec.value.clone(),
                                reason,
                            },
                        )
                    })?;
                    mounts.push(mount.with_spec(spec));
                }
                let network = choice(flags.text("network"), "network", &["default", "none", "host"], keyword)?;
                let security = choice(flags.text("security"), "security", &["sandbox", "insecure"], keyword)?;
                Command::Run {
                    command,
                    heredocs: node.heredocs.clone(),
                    mounts,
                    network,
                    security,
                }
            }
            "CMD" | "ENTRYPOINT" => {
                // Bare CMD/ENTRYPOINT are shell form with an empty command, as in BuildKit.
                let command = command_line(&node.args).unwrap_or(CommandLine::Shell(String::new()));
                if keyword == "CMD" {
                    Command::Cmd { command }
                } else {
                    Command::Entrypoint { command }
                }
            }
            "SHELL" => match &node.args {
                Args::Json(items) if !items.is_empty() => Command::Shell { shell: items.clone() },
                Args::Json(_) => return Err(syntax("SHELL requires at least one argument".into())),
                _ => {
                    return Err(syntax(
                        r#"SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/bash", "-c"]"#.into(),
                    ))
                }
            },
            "LABEL" | "ENV" => {
                let pairs = match &node.args {
                    Args::Pairs { pairs, legacy } => {
                        if *legacy {
                            self.warnings.push(Warning {
                                pos: keyword_pos,
                                rule: "LegacyKeyValueFormat",
                                message: format!("\"{keyword} key value\" should be written \"{keyword} key=value\""),
                            });
                        }
                        pairs
                    }
                    _ => return Err(syntax(format!("{keyword} requires at least one argument"))),
                };
                let mut kvs = Vec::with_capacity(pairs.len());
                for (k, v) in pairs {
                    if k.text.is_empty() {
                        return Err(syntax(format!("{keyword} names can not be blank")));
                    }
                    kvs.push(KeyValue {
                        key: word(k),
                        value: word(v),
                    });
                }
                if keyword == "ENV" {
                    Command::Env { env: kvs }
                } else {
                    Command::Label { labels: kvs }
                }
            }
            "MAINTAINER" => {
                self.warnings.push(Warning {
                    pos: keyword_pos,
                    rule: "MaintainerDeprecated",
                    message: "MAINTAINER is deprecated: use LABEL org.opencontainers.image.authors=\"…\" instead".into(),
                });
                Command::Maintainer {
                    name: word(single_text(&node.args).ok_or_else(|| syntax("MAINTAINER requires exactly one argument".into()))?),
                }
            }
            "EXPOSE" => {
                let ports: Vec<Word> = raw_words(&node.args).iter().map(word).collect();
                if ports.is_empty() {
                    return Err(syntax("EXPOSE requires at least one argument".into()));
                }
                Command::Expose { ports }
            }
            "ADD" | "COPY" => Command::copy_like(keyword, copy_args(node, keyword, &mut flags)?),
            "VOLUME" => {
                let paths: Vec<Word> = match &node.args {
                    Args::Json(items) => items.iter().map(|s| Word::new(s.trim(), keyword_pos)).collect(),
                    args => raw_words(args).iter().map(word).collect(),
                };
                if paths.is_empty() {
                    return Err(syntax("VOLUME requires at least one argument".into()));
                }
                if paths.iter().any(|p| p.value.is_empty()) {
                    return Err(syntax("VOLUME specified can not be an empty string".into()));
                }
                Command::Volume { paths }
            }
            "USER" | "WORKDIR" | "STOPSIGNAL" => {
                let value = word(single_text(&node.args).ok_or_else(|| syntax(format!("{keyword} requires exactly one argument")))?);
                match keyword {
                    "USER" => Command::User { user: value },
                    "WORKDIR" => Command::Workdir { path: value },
                    _ => Command::Stopsignal { signal: value },
                }
            }
            "ARG" => {
                let words = raw_words(&node.args);
                if words.is_empty() {
                    return Err(syntax("ARG requires at least one argument".into()));
                }
                let mut args = Vec::with_capacity(words.len());
                for w in words {
                    let (name, default) = match w.text.split_once('=') {
                        Some((n, v)) => (n, Some(Word::new(v, node.pos(w.offset + n.len() + 1)))),
                        None => (w.text.as_str(), None),
                    };
                    if name.is_empty() {
                        return Err(syntax("ARG names can not be blank".into()));
                    }
                    args.push(ArgDecl {
                        name: name.to_string(),
                        default,
                    });
                }
                Command::Arg { args }
            }
            "ONBUILD" => {
                let Args::Sub(sub) = &node.args else {
                    return Err(syntax("ONBUILD requires at least one argument".into()));
                };
                let sub_keyword = sub.keyword.to_ascii_uppercase();
                match sub_keyword.as_str() {
                    "ONBUILD" => {
                        return Err(syntax("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()));
                    }
                    "FROM" | "MAINTAINER" => {
                        return Err(syntax(format!("{sub_keyword} isn't allowed as an ONBUILD trigger")));
                    }
                    _ => {}
                }
                let mut sub = (**sub).clone();
                sub.heredocs = node.heredocs.clone();
                // BuildKit stores any other trigger unchecked and fails only in the image that
                // runs it; kiln checks it now but only warns, so such a Dockerfile still builds.
                let (trigger, error) = match self.instruction(&sub) {
                    Ok(mut trigger) => {
                        trigger.span = Span {
                            start: sub.pos(sub.keyword_offset),
                            end: node.span.end,
                        };
                        (Some(Box::new(trigger)), None)
                    }
                    Err(e) => {
                        let message = match &e.instruction {
                            Some(i) => format!("{i}: {}", e.kind),
                            None => e.kind.to_string(),
                        };
                        self.warnings.push(Warning {
                            pos: e.pos,
                            rule: "InvalidOnbuildTrigger",
                            message: format!("this ONBUILD trigger will fail in any image built from this one: {message}"),
                        });
                        (None, Some(message))
                    }
                };
                Command::Onbuild {
                    expression: onbuild_expression(node, &sub),
                    trigger,
                    error,
                }
            }
            "HEALTHCHECK" => Command::Healthcheck {
                health: health(node, &mut flags).map_err(|e| Located::new(keyword_pos, Some(keyword), e))?,
            },
            _ => unreachable!("every keyword in KEYWORDS is handled"),
        };
        Ok(Instruction {
            span: node.span,
            original: node.line.clone(),
            command,
        })
    }
}

impl Command {
    fn copy_like(keyword: &str, args: CopyArgs) -> Command {
        if keyword == "ADD" {
            Command::Add(args)
        } else {
            Command::Copy(args)
        }
    }
}

/// The trigger text stored in the image config: the instruction after ONBUILD and, as BuildKit
/// writes it, each heredoc's body and terminator on the following lines.
fn onbuild_expression(node: &Node, sub: &Node) -> String {
    let mut expression = node.line[sub.keyword_offset..].trim_end().to_string();
    for heredoc in &node.heredocs {
        expression.push('\n');
        expression.push_str(&heredoc.content);
        expression.push_str(&heredoc.name);
    }
    expression
}

fn raw_words(args: &Args) -> &[RawWord] {
    match args {
        Args::Words(w) => w,
        _ => &[],
    }
}

fn single_text(args: &Args) -> Option<&RawWord> {
    match args {
        Args::Text(t) => Some(t),
        _ => None,
    }
}

fn command_line(args: &Args) -> Option<CommandLine> {
    match args {
        Args::Json(items) => Some(CommandLine::Exec(items.clone())),
        Args::Text(t) => Some(CommandLine::Shell(t.text.clone())),
        _ => None,
    }
}

fn choice(
    value: Option<Word>,
    flag: &str,
    allowed: &[&str],
    keyword: &str,
) -> Result<Option<String>, Located> {
    match value {
        None => Ok(None),
        Some(w) if allowed.contains(&w.value.as_str()) => Ok(Some(w.value)),
        Some(w) => Err(Located::new(
            w.pos,
            Some(keyword),
            ErrorKind::InvalidFlagValue {
                flag: flag.into(),
                value: w.value,
                reason: format!("expected one of {}", allowed.join(", ")),
            },
        )),
    }
}

fn copy_args(node: &Node, keyword: &str, flags: &mut Flags) -> Result<CopyArgs, Located> {
    let keyword_pos = node.pos(node.keyword_offset);
    let mut words: Vec<Word> = match &node.args {
        Args::Json(items) => items
            .iter()
            .map(|s| Word::new(s.clone(), keyword_pos))
            .collect(),
        args => raw_words(args)
            .iter()
            .map(|w| Word::new(w.text.clone(), node.pos(w.offset)))
            .collect(),
    };
    if words.len() < 2 {
        return Err(Located::new(
            keyword_pos,
            Some(keyword),
            ErrorKind::Syntax(format!(
                "{keyword} requires at least two arguments (sources and a destination), but {} provided",
                if words.is_empty() { "none was".to_string() } else { "only one was".to_string() }
            )),
        ));
    }
    let dest = words.pop().unwrap_or_else(|| Word::new("", keyword_pos));
    // BuildKit checks JSON-form arguments for heredoc markers too.
    if matches!(crate::parser::parse_heredoc(&dest.value), Ok(Some(_))) {
        return Err(Located::new(
            dest.pos,
            Some(keyword),
            ErrorKind::Syntax("a heredoc cannot be used as a destination".to_string()),
        ));
    }
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for source in words {
        let marker = crate::parser::parse_heredoc(&source.value).ok().flatten();
        match marker {
            Some(marker) => {
                let body = node.heredocs.iter().find(|h| h.name == marker.name);
                inline.push(InlineSource {
                    name: marker.name.clone(),
                    content: body.map(|h| h.content.clone()).unwrap_or_default(),
                    expand: marker.expand,
                });
            }
            None => sources.push(source),
        }
    }
    // --chmod is checked once expanded, in the stages the build needs (as BuildKit does).
    let chmod = flags.text("chmod");
    Ok(CopyArgs {
        sources,
        inline,
        dest,
        from: flags.text("from"),
        chown: flags.text("chown"),
        chmod,
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude: flags.list("exclude"),
        checksum: flags.text("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.bool("unpack"),
    })
}

fn health(node: &Node, flags: &mut Flags) -> Result<Health, ErrorKind> {
    let Args::Health { kind, cmd } = &node.args else {
        return Err(ErrorKind::Syntax(
            "HEALTHCHECK requires at least one argument: NONE or CMD …".into(),
        ));
    };
    match kind.text.to_ascii_uppercase().as_str() {
        "NONE" => {
            if !matches!(**cmd, Args::Empty) {
                return Err(ErrorKind::Syntax(
                    "HEALTHCHECK NONE takes no arguments".into(),
                ));
            }
            // BuildKit never reads options on NONE; they are ignored.
            Ok(Health::None)
        }
        "CMD" => {
            let test = match &**cmd {
                Args::Json(items) if !items.is_empty() => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(items.iter().cloned());
                    t
                }
                Args::Text(t) => vec!["CMD-SHELL".to_string(), t.text.clone()],
                _ => {
                    return Err(ErrorKind::Syntax(
                        "missing command after HEALTHCHECK CMD".into(),
                    ))
                }
            };
            let mut duration = |name: &str| -> Result<Option<i64>, ErrorKind> {
                let Some(w) = flags.text(name) else {
                    return Ok(None);
                };
                let invalid = |reason: String| ErrorKind::InvalidFlagValue {
                    flag: name.into(),
                    value: w.value.clone(),
                    reason,
                };
                let ns = parse_go_duration(&w.value).map_err(invalid)?;
                if ns != 0 && ns < 1_000_000 {
                    return Err(invalid("the duration cannot be less than 1ms".into()));
                }
                Ok(Some(ns))
            };
            let interval_ns = duration("interval")?;
            let timeout_ns = duration("timeout")?;
            let start_period_ns = duration("start-period")?;
            let start_interval_ns = duration("start-interval")?;
            let retries = match flags.text("retries") {
                None => None,
                Some(w) => {
                    let invalid = |reason: &str| ErrorKind::InvalidFlagValue {
                        flag: "retries".into(),
                        value: w.value.clone(),
                        reason: reason.into(),
                    };
                    let n: i64 = w
                        .value
                        .parse()
                        .map_err(|_| invalid("expected a whole number"))?;
                    if n < 0 {
                        return Err(invalid("retries cannot be negative"));
                    }
                    if n > i64::from(i32::MAX) {
                        return Err(invalid("retries is too large"));
                    }
                    Some(n)
                }
            };
            Ok(Health::Cmd {
                test,
                interval_ns,
                timeout_ns,
                start_period_ns,
                start_interval_ns,
                retries,
            })
        }
        other => Err(ErrorKind::Syntax(format!(
            "unknown type {other:?} in HEALTHCHECK (try CMD or NONE)"
        ))),
    }
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`, in nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("invalid duration {text:?}: expected e.g. 30s, 1m30s, 500ms");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {text:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total += value * unit;
    }
    if total > i64::MAX as f64 {
        return Err(format!("duration {text:?} is too large"));
    }
    let ns = total.round() as i64;
    Ok(if negative { -ns } else { ns })
}

/// BuildKit's stage-name rule: `^[a-z][a-z0-9-_.]*$` after lower-casing.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2ms"), Ok(-2_000_000));
        assert!(parse_go_duration("30").is_err());
        assert!(parse_go_duration("1x").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration(".s").is_err());
    }

    #[test]
    fn stage_names() {
        assert!(valid_stage_name("build-stage_1.x"));
        assert!(!valid_stage_name("1build"));
        assert!(!valid_stage_name("a$b"));
    }
}
