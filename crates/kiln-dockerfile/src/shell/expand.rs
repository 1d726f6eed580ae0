//! The expander: one word's quotes, escapes and `$` substitutions, with BuildKit's rules.

use super::glob::Glob;
use super::unicode::{is_go_digit, is_go_letter};
use super::{EnvGetter, Lexer, ShellError, ShellErrorKind, Words, MAX_NESTING};
use std::collections::BTreeSet;

/// The state of one expansion: a cursor over the input plus what was looked up.
pub(super) struct Expander<'a> {
    lexer: &'a Lexer,
    src: &'a str,
    pos: usize,
    env: &'a dyn EnvGetter,
    /// Whether escape characters are kept; `${x#p}`, `${x%p}` and `${x/p/r}`
    /// turn it on while they read their words.
    raw_escapes: bool,
    depth: usize,
    pub(super) matched: BTreeSet<String>,
    pub(super) unmatched: BTreeSet<String>,
}

impl<'a> Expander<'a> {
    pub(super) fn new(lexer: &'a Lexer, src: &'a str, env: &'a dyn EnvGetter) -> Self {
        Self {
            lexer,
            src,
            pos: if src.starts_with('\u{FEFF}') {
                '\u{FEFF}'.len_utf8()
            } else {
                0
            },
            env,
            raw_escapes: lexer.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = self.env.get(name);
        let seen = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !seen.contains(name) {
            seen.insert(name.to_owned());
        }
        value
    }

    /// Expands up to the end of input, or up to and including `stop`, with
    /// `raw_escapes` in force meanwhile. Running out of input before `stop` is
    /// an error. `words` collects the split words (top level only).
    pub(super) fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        words: Option<&mut Words>,
    ) -> Result<String, ShellError> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let result = self.process_until_inner(stop, words);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(
        &mut self,
        stop: Option<char>,
        mut words: Option<&mut Words>,
    ) -> Result<String, ShellError> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.bump();
                return Ok(out);
            }
            if ch == '$' {
                let value = self.process_dollar()?;
                if let Some(words) = words.as_deref_mut() {
                    words.add_str(&value);
                }
                out.push_str(&value);
                continue;
            }
            if (ch == '\'' || ch == '"') && !self.lexer.skip_process_quotes {
                let value = if ch == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                if let Some(words) = words.as_deref_mut() {
                    words.add_raw_str(&value);
                }
                out.push_str(&value);
                continue;
            }
            self.bump();
            if ch == self.lexer.escape {
                if self.raw_escapes {
                    if let Some(words) = words.as_deref_mut() {
                        words.add_raw_char(ch);
                    }
                    out.push(ch);
                }
                // An escape at the end of the input is dropped.
                let Some(escaped) = self.bump() else { break };
                if let Some(words) = words.as_deref_mut() {
                    words.add_raw_char(escaped);
                }
                out.push(escaped);
            } else {
                if let Some(words) = words.as_deref_mut() {
                    words.add_char(ch);
                }
                out.push(ch);
            }
        }
        match stop {
            Some(stop) => Err(ShellError::new(
                self.pos,
                ShellErrorKind::UnexpectedEnd(stop),
            )),
            None => Ok(out),
        }
    }

    /// `'...'`: everything up to the next `'` is literal.
    fn process_single_quote(&mut self) -> Result<String, ShellError> {
        let start = self.pos;
        let mut out = String::new();
        self.bump();
        if self.lexer.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.bump() {
                None => {
                    return Err(ShellError::new(
                        start,
                        ShellErrorKind::UnterminatedSingleQuote,
                    ));
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(ch) => out.push(ch),
            }
        }
    }

    /// `"..."`: `$` expands; the escape character escapes only `"`, `$` and
    /// itself and is kept before anything else.
    fn process_double_quote(&mut self) -> Result<String, ShellError> {
        let start = self.pos;
        let mut out = String::new();
        self.bump();
        if self.lexer.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(ShellError::new(
                        start,
                        ShellErrorKind::UnterminatedDoubleQuote,
                    ));
                }
                Some('"') => {
                    self.bump();
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    out.push_str(&value);
                }
                Some(mut ch) => {
                    self.bump();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            // Dropped; the missing `"` is reported next.
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.lexer.escape =>
                            {
                                self.bump();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// `$name` or `${...}`, with the cursor on the `$`.
    fn process_dollar(&mut self) -> Result<String, ShellError> {
        let start = self.pos;
        self.bump();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.bump();
        if self.depth >= MAX_NESTING {
            return Err(ShellError::new(start, ShellErrorKind::NestingTooDeep));
        }
        self.depth += 1;
        let result = self.process_braced(start);
        self.depth -= 1;
        result
    }

    /// The inside of `${...}`, with the cursor after the `{`.
    fn process_braced(&mut self, start: usize) -> Result<String, ShellError> {
        match self.peek() {
            None => return Err(ShellError::new(start, ShellErrorKind::MissingClosingBrace)),
            Some('{' | '}' | ':') => {
                return Err(ShellError::new(start, ShellErrorKind::BadSubstitution));
            }
            Some(_) => {}
        }
        let name = self.process_name();
        let modifier_at = self.pos;
        let Some(ch) = self.bump() else {
            return Err(ShellError::new(start, ShellErrorKind::MissingClosingBrace));
        };
        match ch {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' => {
                let op = self.bump();
                let mut modifier = String::from(':');
                modifier.push(op.unwrap_or(char::REPLACEMENT_CHARACTER));
                self.process_modifier(start, modifier_at, &name, op, modifier, true)
            }
            '+' | '-' | '?' | '#' | '%' => {
                self.process_modifier(start, modifier_at, &name, Some(ch), ch.to_string(), false)
            }
            '/' => self.process_replace(start, &name),
            _ => Err(ShellError::new(
                modifier_at,
                ShellErrorKind::UnsupportedModifier(ch.to_string()),
            )),
        }
    }

    /// `${name<op>word}` and `${name:<op>word}`, with the cursor after the
    /// operator.
    fn process_modifier(
        &mut self,
        start: usize,
        modifier_at: usize,
        name: &str,
        op: Option<char>,
        modifier: String,
        null_is_unset: bool,
    ) -> Result<String, ShellError> {
        let is_pattern = matches!(op, Some('#' | '%'));
        let unsupported = |modifier: String| {
            ShellError::new(modifier_at, ShellErrorKind::UnsupportedModifier(modifier))
        };
        if null_is_unset && is_pattern {
            return Err(unsupported(modifier));
        }
        let word = match self.process_until(Some('}'), is_pattern, None) {
            Ok(word) => word,
            Err(_) if self.at_end() => {
                return Err(ShellError::new(start, ShellErrorKind::MissingClosingBrace));
            }
            Err(err) => return Err(err),
        };
        let value = self.lookup(name);
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let unset = !set || (null_is_unset && value.is_empty());
        match op {
            Some('-') => Ok(if unset { word } else { value }),
            Some('+') => Ok(if unset { String::new() } else { word }),
            Some('?') if unset => {
                let message = if !word.is_empty() {
                    word
                } else if set {
                    "is not allowed to be empty".to_owned()
                } else {
                    "is not allowed to be unset".to_owned()
                };
                Err(ShellError::new(
                    start,
                    ShellErrorKind::Required {
                        name: name.to_owned(),
                        message,
                    },
                ))
            }
            Some('?') => Ok(value),
            Some(op @ ('#' | '%')) => {
                // One operator character for the shortest match, two for the
                // longest; BuildKit looks at the expanded word.
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let trimmed = if op == '%' {
                    trim_suffix(pattern, &value, greedy)
                } else {
                    trim_prefix(pattern, &value, greedy)
                };
                trimmed.map_err(|kind| ShellError::new(start, kind))
            }
            _ => Err(unsupported(modifier)),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`, with
    /// the cursor after the first `/`.
    fn process_replace(&mut self, start: usize, name: &str) -> Result<String, ShellError> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.bump();
        }
        let pattern = match self.process_until(Some('/'), true, None) {
            Ok(pattern) => pattern,
            Err(_) if self.at_end() => {
                return Err(ShellError::new(start, ShellErrorKind::MissingSlash));
            }
            Err(err) => return Err(err),
        };
        let replacement = match self.process_until(Some('}'), true, None) {
            Ok(replacement) => replacement,
            Err(_) if self.at_end() => {
                return Err(ShellError::new(start, ShellErrorKind::MissingClosingBrace));
            }
            Err(err) => return Err(err),
        };
        let value = self.lookup(name);
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let value = value.unwrap_or_default();
        let glob = Glob::new(&pattern, true).map_err(|reason| {
            ShellError::new(
                start,
                ShellErrorKind::InvalidPattern {
                    pattern: pattern.clone(),
                    reason,
                },
            )
        })?;
        let text: Vec<char> = value.chars().collect();
        Ok(if replace_all {
            glob.replace_all(&text, &replacement)
        } else {
            glob.replace_first(&text, &replacement)
        })
    }

    /// Reads a variable name; empty when there is none.
    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(digit) = self.peek().filter(|&c| is_go_digit(c)) {
                    self.bump();
                    name.push(digit);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.bump();
                name.push(ch);
                return name;
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.bump();
            name.push(ch);
        }
        name
    }
}

/// The POSIX special parameters that BuildKit reads as one-character names.
fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellErrorKind> {
    let glob = Glob::new(pattern, greedy).map_err(|reason| ShellErrorKind::InvalidPattern {
        pattern: pattern.to_owned(),
        reason,
    })?;
    let text: Vec<char> = value.chars().collect();
    Ok(match glob.find(&text, 0, true) {
        Some((_, end)) => text[end..].iter().collect(),
        None => value.to_owned(),
    })
}

/// Removes a suffix by removing a prefix of the reversed value with the
/// reversed pattern, as BuildKit does (so the shortest suffix is found).
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellErrorKind> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each backslash before the character it
/// escapes: `a\*c` becomes `c\*a`.
pub(super) fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let len = if chars[i] == '\\' && i + 1 < chars.len() {
            2
        } else {
            1
        };
        units.push(&chars[i..i + len]);
        i += len;
    }
    units.iter().rev().flat_map(|unit| unit.iter()).collect()
}
