//! Lines to nodes: parser directives, line continuations, comments, flags, heredocs and the
//! per-instruction argument shapes, as BuildKit's `parser` package produces them.
//!
//! The output is untyped ([`Node`]): the keyword, its raw `--flags`, its arguments in the shape
//! the keyword calls for ([`Args`]) and its heredoc bodies. [`crate::instructions`] turns nodes into
//! typed instructions. Every node keeps an `OffsetMap` so a byte offset in its joined logical
//! line maps back to the file's line and column.

use crate::error::{ErrorKind, Located, Warning};
use crate::shell::Lexer;
use crate::span::{LineIndex, OffsetMap, Pos, Span};
use std::collections::BTreeMap;

/// The parser directives found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Directives {
    /// `# syntax=` (recorded, not acted on: kiln has one frontend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax: Option<String>,
    /// `# escape=`: the escape character, `\` unless set to `` ` ``.
    pub escape: char,
    /// `# check=` (recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// A word of an instruction's arguments, exactly as written, with its byte offset in the node's
/// logical line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawWord {
    /// The text as written (quotes and escapes kept).
    pub text: String,
    /// Byte offset in [`Node::line`].
    pub offset: usize,
}

/// An instruction's arguments in the shape its keyword calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// Nothing after the keyword (and flags).
    Empty,
    /// A JSON string array (exec form).
    Json(Vec<String>),
    /// The rest of the line as one piece (shell form, or MAINTAINER/USER/WORKDIR/STOPSIGNAL).
    Text(RawWord),
    /// Words split on whitespace (FROM, EXPOSE, COPY/ADD/VOLUME shell form) or, for ARG,
    /// split honouring quotes.
    Words(Vec<RawWord>),
    /// `key=value` pairs (ENV, LABEL). `legacy` marks the old `ENV key value…` form.
    Pairs {
        /// The pairs in order.
        pairs: Vec<(RawWord, RawWord)>,
        /// True for the `KEY value with spaces` form.
        legacy: bool,
    },
    /// HEALTHCHECK: the type word (`CMD`/`NONE`) and the command after it.
    Health {
        /// `CMD` or `NONE` as written.
        kind: RawWord,
        /// The command (exec or shell form), empty for NONE.
        cmd: Box<Args>,
    },
    /// ONBUILD: the trigger instruction.
    Sub(Box<Node>),
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed (`EOF`).
    pub name: String,
    /// The body, each line with its newline; with `<<-`, leading tabs already stripped.
    pub content: String,
    /// False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`): no expansion of the body.
    pub expand: bool,
    /// True for `<<-` (leading tabs removed from the body and the terminator).
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    #[serde(skip_serializing_if = "is_zero")]
    pub fd: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A raw `--flag[=value]` as written before the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFlag {
    /// The flag with its dashes and value, quotes removed (`--from=build`).
    pub text: String,
    /// Byte offset in [`Node::line`].
    pub offset: usize,
}

/// One instruction as parsed, before typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`copy`, `COPY`).
    pub keyword: String,
    /// Byte offset of the keyword in `line`.
    pub keyword_offset: usize,
    /// Flags before the arguments.
    pub flags: Vec<RawFlag>,
    /// The arguments.
    pub args: Args,
    /// True when the arguments were a JSON array.
    pub json: bool,
    /// Heredoc bodies, in the order their `<<` markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The logical line: continuation lines joined, comments inside it removed.
    pub line: String,
    /// From the keyword to the end of the last line (including heredoc bodies).
    pub span: Span,
    /// Maps offsets in `line` to file positions.
    pub map: OffsetMap,
}

impl Node {
    /// File position of byte `offset` of the logical line.
    pub fn pos(&self, offset: usize) -> Pos {
        self.map.pos(&self.line, offset)
    }
}

/// The parsed file: directives and instruction nodes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// Parser directives.
    pub directives: Directives,
    /// Instructions in file order.
    pub nodes: Vec<Node>,
    /// Legal oddities worth telling the author.
    pub warnings: Vec<Warning>,
}

const KNOWN_DIRECTIVES: [&str; 3] = ["syntax", "escape", "check"];

/// BuildKit's directive parser: directives are read until the first line that is not one.
struct DirectiveParser {
    done: bool,
    escape: char,
    seen: BTreeMap<String, String>,
}

impl DirectiveParser {
    /// `line` is the physical line with leading whitespace removed.
    fn parse_line(
        &mut self,
        line: &str,
        pos: Pos,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), Located> {
        if self.done {
            if let Some((key, _)) = match_directive(line) {
                if KNOWN_DIRECTIVES.contains(&key.as_str()) {
                    // A comment, as in BuildKit (for `escape` too: the escape stays `\`).
                    warnings.push(Warning {
                        pos,
                        rule: "DirectiveAfterContent",
                        message: format!(
                            "`# {key}=` comes after other content, so it is a comment, not a parser directive; \
                             directives must come before any comment, blank line or instruction"
                        ),
                    });
                }
            }
            return Ok(());
        }
        let Some((key, value)) = match_directive(line) else {
            self.done = true;
            return Ok(());
        };
        if !KNOWN_DIRECTIVES.contains(&key.as_str()) {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains_key(&key) {
            return Err(Located::new(
                pos,
                None,
                ErrorKind::Directive(format!("only one `{key}` parser directive can be used")),
            ));
        }
        if key == "escape" {
            self.escape = match value.as_str() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(Located::new(
                        pos,
                        None,
                        ErrorKind::Directive(format!(
                            "invalid escape token {other:?}: it must be ` or \\"
                        )),
                    ))
                }
            };
        }
        self.seen.insert(key, value);
        Ok(())
    }
}

/// Matches `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, returning the lower-cased key and value.
fn match_directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let rest = rest.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map(|(i, _)| i)
        .unwrap_or(rest.len());
    if key_len == 0 {
        return None;
    }
    let key = &rest[..key_len];
    let rest = rest[key_len..].trim_start().strip_prefix('=')?;
    let value = rest.trim();
    if value.is_empty() {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.to_string()))
}

/// A physical line: its byte offset in the file and its text without the line break.
#[derive(Clone, Copy)]
struct PhysLine<'a> {
    offset: usize,
    text: &'a str,
    /// The text with its line break, as heredoc bodies keep it.
    raw: &'a str,
}

fn physical_lines(text: &str) -> Vec<PhysLine<'_>> {
    let mut lines = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        // Like BuildKit's trimNewline: every trailing CR and LF goes.
        let body = raw.trim_end_matches(['\r', '\n']);
        lines.push(PhysLine {
            offset,
            text: body,
            raw,
        });
        offset += raw.len();
    }
    lines
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Strips a trailing escape character (and blanks after it). Returns the remaining text and
/// whether the line ends the instruction. As in BuildKit (`([^\\])\\[ \t]*$|^\\[ \t]*$`), an
/// escaped escape character (`C:\\`) at the end is not a continuation.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(rest) if !rest.ends_with(escape) => (rest, false),
        _ => (line, true),
    }
}

fn is_space(c: char) -> bool {
    // Go's unicode.IsSpace.
    c.is_whitespace()
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
fn is_delim_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Parses a Dockerfile's text into nodes.
pub fn parse(text: &str) -> Result<Ast, Located> {
    let index = LineIndex::new(text);
    let lines = physical_lines(text);
    let mut directives = DirectiveParser {
        done: false,
        escape: '\\',
        seen: BTreeMap::new(),
    };
    let mut warnings = Vec::new();
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut phys = lines[i];
        if i == 0 {
            if let Some(rest) = phys.text.strip_prefix('\u{feff}') {
                phys.offset += '\u{feff}'.len_utf8();
                phys.text = rest;
            }
        }
        i += 1;
        let stripped = phys.text.trim_start();
        let lead = phys.text.len() - stripped.len();
        let start_offset = phys.offset + lead;
        directives.parse_line(stripped, index.pos(start_offset), &mut warnings)?;
        let first = if is_comment(stripped) { "" } else { stripped };
        let (piece, mut end_of_line) = trim_continuation(first, directives.escape);
        if end_of_line && piece.is_empty() {
            continue;
        }
        let start_line = i;
        let mut map = OffsetMap::default();
        map.push(0, start_offset);
        let mut line = piece.to_string();
        let mut last_line = phys;
        let mut empty_continuation = false;
        while !end_of_line && i < lines.len() {
            let next = lines[i];
            i += 1;
            last_line = next;
            // Directives ended with this instruction's first line: nothing to check here.
            if is_comment(next.text) {
                continue;
            }
            if next.text.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (piece, eol) = trim_continuation(next.text, directives.escape);
            end_of_line = eol;
            map.push(line.len(), next.offset);
            line.push_str(piece);
        }
        map.resolve(&index, &line);
        let start = index.pos(start_offset);
        if empty_continuation {
            warnings.push(Warning {
                pos: start,
                rule: "NoEmptyContinuation",
                message: "empty continuation line inside this instruction; BuildKit plans to make \
                          these errors: remove the blank line or the escape before it"
                    .into(),
            });
        }
        let mut node = node_from_line(&line, 0, map, directives.escape, true)?;
        if can_contain_heredoc(&node) && line.contains("<<") {
            let markers = heredocs_from_line(&node)?;
            for marker in markers {
                let mut content = String::new();
                let mut terminated = false;
                while i < lines.len() {
                    let body = lines[i];
                    i += 1;
                    last_line = body;
                    let candidate = if marker.chomp {
                        body.text.trim_start_matches('\t')
                    } else {
                        body.text
                    };
                    if candidate == marker.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(body.raw);
                }
                if !terminated {
                    return Err(Located::new(
                        start,
                        Some(&node.keyword),
                        ErrorKind::UnterminatedHeredoc(marker.name),
                    ));
                }
                if marker.chomp {
                    content = chomp_heredoc(&content);
                }
                node.heredocs.push(Heredoc { content, ..marker });
            }
        }
        let _ = start_line;
        let end = index.pos(last_line.offset + last_line.text.len());
        node.span = Span { start, end };
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Located::new(
            Pos { line: 1, column: 1 },
            None,
            ErrorKind::Empty,
        ));
    }
    let seen = directives.seen;
    Ok(Ast {
        directives: Directives {
            syntax: seen.get("syntax").cloned(),
            escape: directives.escape,
            check: seen.get("check").cloned(),
        },
        nodes,
        warnings,
    })
}

/// Removes leading tabs from every line of a `<<-` heredoc body.
fn chomp_heredoc(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match &node.args {
        Args::Sub(sub) if node.keyword.eq_ignore_ascii_case("onbuild") => sub,
        _ => node,
    };
    let keyword = node.keyword.to_ascii_lowercase();
    matches!(keyword.as_str(), "run" | "copy" | "add") && !node.json
}

/// Finds `<<WORD` markers on an instruction line (BuildKit's `heredocsFromLine`).
fn heredocs_from_line(node: &Node) -> Result<Vec<Heredoc>, Located> {
    let lexer = Lexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .skip_unset_env(true);
    let empty: BTreeMap<String, String> = BTreeMap::new();
    let words = lexer.process_words(&node.line, &empty).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        match parse_heredoc(&word) {
            Ok(Some(doc)) => docs.push(doc),
            Ok(None) => {}
            Err(message) => {
                return Err(Located::new(
                    node.pos(node.keyword_offset),
                    Some(&node.keyword),
                    ErrorKind::Syntax(message),
                ))
            }
        }
    }
    Ok(docs)
}

/// Parses one word as a heredoc marker: `^(\d*)<<(-?)([^<]*)$`. Returns `None` when the word is
/// not a heredoc marker.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits = word.chars().take_while(|c| c.is_ascii_digit()).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd: u32 = if digits == 0 {
        0
    } else {
        word[..digits]
            .parse()
            .map_err(|_| format!("invalid file descriptor in heredoc {word:?}"))?
    };
    let empty: BTreeMap<String, String> = BTreeMap::new();
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let words = lexer
        .process_words(rest, &empty)
        .map_err(|e| format!("invalid heredoc delimiter {rest:?}: {e}"))?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = lexer
        .raw_quotes(true)
        .process_words(rest, &empty)
        .map_err(|e| format!("invalid heredoc delimiter {rest:?}: {e}"))?;
    if raw.len() != 1 {
        return Err(format!("invalid heredoc delimiter {rest:?}"));
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        content: String::new(),
        expand,
        chomp,
        fd,
    }))
}

/// Builds a node from `line[start..]` (BuildKit's `newNodeFromLine`). Offsets stay relative to
/// the whole logical line so ONBUILD triggers map back to the file too.
fn node_from_line(
    line: &str,
    start: usize,
    map: OffsetMap,
    escape: char,
    allow_trigger: bool,
) -> Result<Node, Located> {
    let pos_of = |offset: usize| map.pos(line, offset);
    let text = &line[start..];
    let lead = text.len() - text.trim_start_matches(is_space).len();
    let keyword_offset = start + lead;
    let body = text.trim_matches(is_space);
    let keyword_len = body.find(is_delim_space).unwrap_or(body.len());
    let keyword = body[..keyword_len].to_string();
    let mut after = keyword_offset + keyword_len;
    // Skip the whitespace run after the keyword.
    let body_end = keyword_offset + body.len();
    while after < body_end {
        let c = line[after..].chars().next().unwrap_or(' ');
        if !is_delim_space(c) {
            break;
        }
        after += c.len_utf8();
    }
    let (flags, args_offset) = extract_flags(&line[..body_end], after);
    let rest = line[args_offset.min(body_end)..body_end].trim_matches(is_space);
    let rest_offset = if rest.is_empty() {
        body_end
    } else {
        args_offset
            + (line[args_offset..].len() - line[args_offset..].trim_start_matches(is_space).len())
    };
    let lower = keyword.to_ascii_lowercase();
    let located = |message: String| {
        Located::new(
            pos_of(keyword_offset),
            Some(&keyword),
            ErrorKind::Syntax(message),
        )
    };
    let mut json = false;
    let args = match lower.as_str() {
        "add" | "copy" | "volume" => match parse_json(rest) {
            JsonResult::Array(items) => {
                json = true;
                Args::Json(items)
            }
            JsonResult::NotStrings => return Err(located(not_string_array())),
            JsonResult::NotJson => split_whitespace(rest, rest_offset),
        },
        "cmd" | "entrypoint" | "run" | "shell" => {
            parse_maybe_json(rest, rest_offset, &mut json).map_err(located)?
        }
        "env" | "label" => parse_name_val(rest, rest_offset, &keyword, escape).map_err(located)?,
        "arg" => {
            let words = parse_words(rest, rest_offset, escape);
            if words.is_empty() {
                Args::Empty
            } else {
                Args::Words(words)
            }
        }
        "expose" | "from" => split_whitespace(rest, rest_offset),
        "healthcheck" => {
            if rest.is_empty() {
                Args::Empty
            } else {
                let sep = rest.find(is_space).unwrap_or(rest.len());
                let cmd_text = rest[sep..].trim_start_matches(is_space);
                let cmd_offset = rest_offset + (rest.len() - cmd_text.len());
                let cmd = parse_maybe_json(cmd_text, cmd_offset, &mut json).map_err(located)?;
                Args::Health {
                    kind: RawWord {
                        text: rest[..sep].to_string(),
                        offset: rest_offset,
                    },
                    cmd: Box::new(cmd),
                }
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => text_arg(rest, rest_offset),
        "onbuild" => {
            if rest.is_empty() {
                Args::Empty
            } else if !allow_trigger {
                // `ONBUILD ONBUILD …`: an error when typed; not parsed further, so a long chain
                // cannot recurse deeply.
                text_arg(rest, rest_offset)
            } else {
                let sub = node_from_line(line, rest_offset, map.clone(), escape, false)?;
                Args::Sub(Box::new(sub))
            }
        }
        // Unknown keywords are kept; the typing step reports them with a suggestion.
        _ => text_arg(rest, rest_offset),
    };
    Ok(Node {
        keyword,
        keyword_offset,
        flags,
        args,
        json,
        heredocs: Vec::new(),
        line: line.to_string(),
        span: Span::default(),
        map,
    })
}

fn text_arg(rest: &str, offset: usize) -> Args {
    if rest.is_empty() {
        Args::Empty
    } else {
        Args::Text(RawWord {
            text: rest.to_string(),
            offset,
        })
    }
}

fn not_string_array() -> String {
    "when using JSON array syntax, arrays must be comprised of strings only".into()
}

enum JsonResult {
    Array(Vec<String>),
    NotStrings,
    NotJson,
}

fn parse_json(rest: &str) -> JsonResult {
    let trimmed = rest.trim_start_matches(is_space);
    if !trimmed.starts_with('[') {
        return JsonResult::NotJson;
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(trimmed) else {
        return JsonResult::NotJson;
    };
    let mut items = Vec::with_capacity(values.len());
    for value in values {
        match value {
            serde_json::Value::String(s) => items.push(s),
            _ => return JsonResult::NotStrings,
        }
    }
    JsonResult::Array(items)
}

fn parse_maybe_json(rest: &str, offset: usize, json: &mut bool) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    match parse_json(rest) {
        JsonResult::Array(items) => {
            *json = true;
            Ok(Args::Json(items))
        }
        JsonResult::NotStrings => Err(not_string_array()),
        JsonResult::NotJson => Ok(text_arg(rest, offset)),
    }
}

/// Splits on BuildKit's `[\t\v\f\r ]+`, ignoring quotes.
fn split_whitespace(rest: &str, offset: usize) -> Args {
    if rest.is_empty() {
        return Args::Empty;
    }
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in rest.char_indices() {
        if is_delim_space(c) {
            if let Some(s) = start.take() {
                words.push(RawWord {
                    text: rest[s..i].to_string(),
                    offset: offset + s,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(RawWord {
            text: rest[s..].to_string(),
            offset: offset + s,
        });
    }
    Args::Words(words)
}

/// BuildKit's `parseWords`: splits on whitespace outside quotes, keeping quotes and escapes in
/// the words (expansion removes them later).
pub(crate) fn parse_words(rest: &str, offset: usize, escape: char) -> Vec<RawWord> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut word_start = 0;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !in_word {
            if is_space(c) {
                continue;
            }
            in_word = true;
            word_start = i;
        }
        match quote {
            None => {
                if is_space(c) {
                    if blank_ok || !word.is_empty() {
                        words.push(RawWord {
                            text: std::mem::take(&mut word),
                            offset: offset + word_start,
                        });
                    }
                    word.clear();
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    match chars.next() {
                        None => continue,
                        Some((_, next)) => {
                            word.push(c);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    match chars.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some((_, next)) => {
                            word.push(c);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(c);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(RawWord {
            text: word,
            offset: offset + word_start,
        });
    }
    words
}

/// BuildKit's `parseNameVal` for ENV and LABEL: `k=v k2="v 2"` or the legacy `k value…`.
fn parse_name_val(rest: &str, offset: usize, keyword: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, offset, escape);
    let Some(first) = words.first() else {
        return Ok(Args::Empty);
    };
    if !first.text.contains('=') {
        let split = rest.find(is_delim_space);
        let Some(split) = split else {
            return Err(format!(
                "{} must have two arguments: `{} NAME=VALUE` (or the legacy `{} NAME VALUE`)",
                keyword.to_ascii_uppercase(),
                keyword.to_ascii_uppercase(),
                keyword.to_ascii_uppercase()
            ));
        };
        let value = rest[split..].trim_start_matches(is_delim_space);
        let value_offset = offset + rest.len() - value.len();
        return Ok(Args::Pairs {
            pairs: vec![(
                RawWord {
                    text: rest[..split].to_string(),
                    offset,
                },
                RawWord {
                    text: value.to_string(),
                    offset: value_offset,
                },
            )],
            legacy: true,
        });
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let Some((key, value)) = word.text.split_once('=') else {
            return Err(format!(
                "syntax error: can't find = in {:?}; must be of the form NAME=VALUE",
                word.text
            ));
        };
        pairs.push((
            RawWord {
                text: key.to_string(),
                offset: word.offset,
            },
            RawWord {
                text: value.to_string(),
                offset: word.offset + key.len() + 1,
            },
        ));
    }
    Ok(Args::Pairs {
        pairs,
        legacy: false,
    })
}

/// BuildKit's `extractBuilderFlags`: leading `--words` (quotes and backslash escapes removed)
/// up to the first word not starting with `--`, or a bare `--`. Returns the flags and the byte
/// offset where the arguments start.
fn extract_flags(line: &str, start: usize) -> (Vec<RawFlag>, usize) {
    let mut flags = Vec::new();
    let bytes_end = line.len();
    let mut pos = start;
    loop {
        // Skip spaces.
        let rest = &line[pos..];
        let trimmed = rest.trim_start_matches(is_space);
        pos += rest.len() - trimmed.len();
        if pos >= bytes_end {
            return (flags, bytes_end);
        }
        if !trimmed.starts_with("--") {
            return (flags, pos);
        }
        let word_start = pos;
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut blank_ok = false;
        let mut chars = line[pos..].char_indices();
        let mut ended_at = bytes_end;
        while let Some((i, c)) = chars.next() {
            match quote {
                None => {
                    if is_space(c) {
                        ended_at = pos + i;
                        break;
                    }
                    if c == '\'' || c == '"' {
                        quote = Some(c);
                        blank_ok = true;
                        continue;
                    }
                    if c == '\\' {
                        if let Some((_, next)) = chars.next() {
                            word.push(next);
                        }
                        continue;
                    }
                    word.push(c);
                }
                Some(q) => {
                    if c == q {
                        quote = None;
                        continue;
                    }
                    if c == '\\' {
                        match chars.next() {
                            Some((_, next)) => word.push(next),
                            None => quote = None,
                        }
                        continue;
                    }
                    word.push(c);
                }
            }
        }
        if word == "--" {
            return (flags, ended_at);
        }
        if blank_ok || !word.is_empty() {
            flags.push(RawFlag {
                text: word,
                offset: word_start,
            });
        }
        pos = ended_at;
        if pos >= bytes_end {
            return (flags, bytes_end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(args: &Args) -> Vec<String> {
        match args {
            Args::Words(w) => w.iter().map(|w| w.text.clone()).collect(),
            other => panic!("not words: {other:?}"),
        }
    }

    #[test]
    fn directive_regex_matches_buildkit() {
        assert_eq!(
            match_directive("# escape=`"),
            Some(("escape".into(), "`".into()))
        );
        assert_eq!(
            match_directive("#ESCAPE = \\ "),
            Some(("escape".into(), "\\".into()))
        );
        assert_eq!(
            match_directive("# syntax=docker/dockerfile:1"),
            Some(("syntax".into(), "docker/dockerfile:1".into()))
        );
        assert_eq!(match_directive("# just a comment"), None);
        assert_eq!(match_directive("# 1a=b"), None);
        assert_eq!(match_directive("# a="), None);
    }

    #[test]
    fn flags_stop_at_first_plain_word_and_at_double_dash() {
        let (flags, at) = extract_flags("--from=a --chown='u g' src dst", 0);
        assert_eq!(
            flags.iter().map(|f| f.text.as_str()).collect::<Vec<_>>(),
            ["--from=a", "--chown=u g"]
        );
        assert_eq!(at, 23);
        let (flags, at) = extract_flags("--link -- --not-a-flag x", 0);
        assert_eq!(flags.len(), 1);
        assert_eq!(&"--link -- --not-a-flag x"[at..].trim(), &"--not-a-flag x");
    }

    #[test]
    fn parse_words_keeps_quotes_and_escapes() {
        let w: Vec<String> = parse_words(r#"a="b c" d\ e 'f g'"#, 0, '\\')
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(w, [r#"a="b c""#, r"d\ e", "'f g'"]);
    }

    #[test]
    fn continuation_joins_lines_and_skips_comments() {
        let ast = parse("FROM a\nRUN echo a \\  \n# note\n\n  b\n").unwrap();
        assert_eq!(ast.nodes.len(), 2);
        assert_eq!(ast.nodes[1].line, "RUN echo a   b");
        assert_eq!(ast.nodes[1].span.end.line, 5);
        assert_eq!(ast.warnings.len(), 1);
    }

    #[test]
    fn from_words() {
        let ast = parse("from --platform=$X img AS b").unwrap();
        assert_eq!(words(&ast.nodes[0].args), ["img", "AS", "b"]);
        assert_eq!(ast.nodes[0].flags[0].text, "--platform=$X");
    }
}
