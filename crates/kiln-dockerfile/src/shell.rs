//! Dockerfile word expansion with BuildKit's semantics.
//!
//! This module expands the words of Dockerfile instructions the way BuildKit's
//! `frontend/dockerfile/shell` package (`Lex`) does: quotes are removed, escapes
//! are processed and environment variables are substituted. It is a
//! reimplementation from the observable behaviour, not a port of the code.
//!
//! The main types are [`Lexer`] (the configured expander), [`EnvGetter`] (where
//! variables come from), [`Expansion`] (the result of [`Lexer::process_word`])
//! and [`ShellError`] (what went wrong, and where).
//!
//! # Supported syntax
//!
//! | syntax | meaning |
//! | --- | --- |
//! | `$name`, `${name}` | value of `name`; empty when unset |
//! | `${name:-word}`, `${name-word}` | `word` when `name` is unset (with `:`, also when empty), else the value |
//! | `${name:+word}`, `${name+word}` | `word` when `name` is set (with `:`, only when not empty), else empty |
//! | `${name:?msg}`, `${name?msg}` | error `name: msg` when `name` is unset (with `:`, also when empty), else the value |
//! | `${name#pat}`, `${name##pat}` | remove the shortest / longest prefix matching `pat` |
//! | `${name%pat}`, `${name%%pat}` | remove the shortest / longest suffix matching `pat` |
//! | `${name/pat/repl}`, `${name//pat/repl}` | replace the first / every match of `pat` |
//! | `'...'` | literal text |
//! | `"..."` | text with `$` expansion; the escape character only escapes `"`, `$` and itself |
//! | escape character (`\` or `` ` ``) | the next character is taken literally; dropped at the end of input |
//!
//! A name is a run of Unicode letters, digits and `_`; a name starting with a
//! digit is the run of digits (`$1`, `$001`); `@ * # ? - $ ! 0` are one-character
//! special names (`$@`, `${#}`). None of them is set unless the environment sets
//! it. A `$` followed by anything else is kept literally. The words inside a
//! `${...}` are expanded themselves, so `${A:-${B:-"x y"}}` nests; they are
//! always expanded, even when not used, so `${SET:-${UNSET?}}` fails. Any
//! other operator (`${A:=b}`, `${#A}`, `${A:0:1}`) is an error. The words of
//! `#`, `%` and `/` keep their escape characters for the pattern.
//!
//! Patterns know `*` (any run of characters), `?` (one character) and the escapes
//! `\*`, `\?`, `\\`, `\}` and `\/` (always written with a backslash, whatever the
//! escape character is). Any other backslash escape is an error. As in BuildKit,
//! `[...]` is not a bracket expression but literal text, and wildcards do not
//! match a newline. In `${name//pat/repl}` the replacement may use `$0` (or
//! `${0}`) for the matched text and `$$` for a `$` (Go's `Regexp.Expand`
//! rules); in `${name/pat/repl}` it is taken literally.
//!
//! ```text
//! PWD=/home, NULL=""
//! he\$PWD            -> he$PWD
//! "he\"$PWD"         -> he"/home
//! 'he$PWD'           -> he$PWD
//! ${NULL:-x}${NULL-y} -> x
//! ${UNSET:-${PWD}}   -> /home
//! ```
//!
//! # Differences from BuildKit
//!
//! * BuildKit prefixes its errors with `failed to process "<word>": `; the
//!   [`ShellError`] message is the part after that, with a byte offset added as
//!   a field.
//! * For an input that ends right after a name in braces (`${PWD`) BuildKit
//!   reports `unsupported modifier (\u{FFFD}) in substitution`; this module
//!   reports `syntax error: missing '}'` (an error in both cases).
//! * `${...}` may nest at most [`MAX_NESTING`] levels deep; BuildKit has no
//!   limit.
//! * [`Lexer::process_words`] keeps the text before a `${name<op>...}` in the same
//!   word (`a${X:-b}` gives `ab`). Recent BuildKit versions share one word buffer
//!   between nesting levels and lose that prefix.
//! * Letters and digits in names follow Unicode 14 (Go's `unicode` package
//!   follows a later version; only code points assigned since then differ).
//! * Variable names are looked up exactly as written; BuildKit on Windows
//!   compares them case-insensitively. An [`EnvGetter`] may do that itself.
//!
//! Like Go's `text/scanner`, which BuildKit uses, a byte-order mark (U+FEFF) at
//! the very start of a word or pattern is skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::BuildHasher;

/// How deep `${...}` substitutions may nest before expansion fails with
/// [`ShellErrorKind::NestingTooDeep`].
pub const MAX_NESTING: usize = 64;

/// Looks up variables during expansion.
///
/// Implemented for `HashMap<String, String>`, `BTreeMap<String, String>`,
/// slices (and references to them), arrays and vectors of `(key, value)` pairs (the last pair for a key
/// wins, as with a list of `KEY=value` entries) and closures
/// `Fn(&str) -> Option<String>`.
pub trait EnvGetter {
    /// Returns the value of `name`, or `None` when it is unset. A variable that
    /// is set to the empty string returns `Some("")`.
    fn get(&self, name: &str) -> Option<String>;
}

impl<S: BuildHasher> EnvGetter for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl EnvGetter for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> EnvGetter for [(K, V)] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(key, _)| key.as_ref() == name)
            .map(|(_, value)| value.as_ref().to_owned())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> EnvGetter for [(K, V); N] {
    fn get(&self, name: &str) -> Option<String> {
        EnvGetter::get(self.as_slice(), name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> EnvGetter for &[(K, V)] {
    fn get(&self, name: &str) -> Option<String> {
        EnvGetter::get(*self, name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> EnvGetter for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<String> {
        EnvGetter::get(self.as_slice(), name)
    }
}

impl<F: Fn(&str) -> Option<String>> EnvGetter for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expands Dockerfile words like BuildKit's `shell.Lex`.
///
/// Build one with [`Lexer::new`] and the builder-style option setters, then call
/// [`Lexer::process_word`] or [`Lexer::process_words`]. A `Lexer` holds no
/// state between calls and can be shared between threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_process_quotes: bool,
    skip_unset_env: bool,
}

impl Default for Lexer {
    /// A lexer with the default escape character `\` and no options set.
    fn default() -> Self {
        Self::new('\\')
    }
}

impl Lexer {
    /// Creates a lexer whose escape character is `escape`: `\` by default, or
    /// `` ` `` under the Dockerfile directive `# escape=``, where a backslash
    /// is an ordinary character (Windows paths such as `C:\foo`).
    pub const fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character.
    pub const fn escape(&self) -> char {
        self.escape
    }

    /// Keeps the quote characters in the output (BuildKit's `RawQuotes`, used to
    /// tell whether a heredoc delimiter was quoted).
    #[must_use]
    pub const fn raw_quotes(mut self, yes: bool) -> Self {
        self.raw_quotes = yes;
        self
    }

    /// Keeps escape characters in the output (BuildKit's `RawEscapes`).
    ///
    /// Inside double quotes an escape character that escapes nothing (`"\a"`) is
    /// then written twice, as BuildKit does.
    #[must_use]
    pub const fn raw_escapes(mut self, yes: bool) -> Self {
        self.raw_escapes = yes;
        self
    }

    /// Treats `'` and `"` as ordinary characters (BuildKit's
    /// `SkipProcessQuotes`, used to expand the bodies of `COPY` heredocs).
    #[must_use]
    pub const fn skip_process_quotes(mut self, yes: bool) -> Self {
        self.skip_process_quotes = yes;
        self
    }

    /// Leaves references to unset variables in place instead of expanding them
    /// (BuildKit's `SkipUnsetEnv`): `$X` stays `$X`, `${X}` stays `${X}`, and
    /// `${X<op>word}` becomes `${X<op>expanded word}`, without evaluating the
    /// operator (so `${X:=a}` and `${X:?}` are no errors then). As in BuildKit,
    /// `${X//p/r}` comes back as `${X/p/r}`.
    #[must_use]
    pub const fn skip_unset_env(mut self, yes: bool) -> Self {
        self.skip_unset_env = yes;
        self
    }

    /// Expands one word (BuildKit's `ProcessWord` / `ProcessWordWithMatches`):
    /// quotes are removed, escapes processed and variables substituted.
    /// Whitespace is kept as it is; the word is not split.
    ///
    /// The result also names the variables that were looked up, split into
    /// those that were set ([`Expansion::matched`]) and those that were not
    /// ([`Expansion::unmatched`]).
    pub fn process_word(&self, word: &str, env: &dyn EnvGetter) -> Result<Expansion, ShellError> {
        let mut expander = Expander::new(self, word, env);
        let value = expander.process_until(None, self.raw_escapes, None)?;
        Ok(Expansion {
            value,
            matched: expander.matched,
            unmatched: expander.unmatched,
        })
    }

    /// Expands `word` and splits it into words like a shell (BuildKit's
    /// `ProcessWords`): whitespace outside quotes separates words, and so does
    /// whitespace in the value of a variable that is not quoted. Quoted and
    /// escaped whitespace is kept. Empty words (`""`) are dropped.
    pub fn process_words(
        &self,
        word: &str,
        env: &dyn EnvGetter,
    ) -> Result<Vec<String>, ShellError> {
        let mut expander = Expander::new(self, word, env);
        let mut words = Words::default();
        expander.process_until(None, self.raw_escapes, Some(&mut words))?;
        Ok(words.finish())
    }
}

/// The result of [`Lexer::process_word`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub value: String,
    /// Variables that were referenced and set (possibly to the empty string).
    pub matched: BTreeSet<String>,
    /// Variables that were referenced but unset.
    pub unmatched: BTreeSet<String>,
}

/// An error from expanding a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellError {
    /// Byte offset into the input of the construct at fault: the opening quote
    /// of an unterminated quote, the `$` of a faulty or unterminated `${`, or
    /// the first character of an unsupported modifier.
    pub offset: usize,
    /// What went wrong.
    pub kind: ShellErrorKind,
}

/// What went wrong in a [`ShellError`]. The messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShellErrorKind {
    /// A `'` without its closing `'`.
    UnterminatedSingleQuote,
    /// A `"` without its closing `"`.
    UnterminatedDoubleQuote,
    /// Input ended while looking for this character.
    UnexpectedEnd(char),
    /// A `${` without its closing `}`.
    MissingClosingBrace,
    /// A `${name/pattern` without the `/` that ends the pattern.
    MissingSlash,
    /// `${}`, `${{...}`, `${:...}`.
    BadSubstitution,
    /// An operator that BuildKit does not support, such as `:=` or `=`.
    UnsupportedModifier(String),
    /// `${name?message}` or `${name:?message}` on an unset (or empty) variable.
    Required {
        /// The variable.
        name: String,
        /// The message given, or BuildKit's default text.
        message: String,
    },
    /// A pattern with an escape other than `\*`, `\?`, `\\`, `\}`, `\/`.
    InvalidPattern {
        /// The pattern, after expansion (reversed for `%` and `%%`, as
        /// BuildKit reports it).
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },
    /// `${...}` nested more than [`MAX_NESTING`] levels deep.
    NestingTooDeep,
}

impl fmt::Display for ShellErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnterminatedSingleQuote => {
                f.write_str("unexpected end of statement while looking for matching single-quote")
            }
            Self::UnterminatedDoubleQuote => {
                f.write_str("unexpected end of statement while looking for matching double-quote")
            }
            Self::UnexpectedEnd(ch) => {
                write!(
                    f,
                    "unexpected end of statement while looking for matching {ch}"
                )
            }
            Self::MissingClosingBrace => f.write_str("syntax error: missing '}'"),
            Self::MissingSlash => f.write_str("syntax error: missing '/' in ${}"),
            Self::BadSubstitution => f.write_str("syntax error: bad substitution"),
            Self::UnsupportedModifier(modifier) => {
                write!(f, "unsupported modifier ({modifier}) in substitution")
            }
            Self::Required { name, message } => write!(f, "{name}: {message}"),
            Self::InvalidPattern { pattern, reason } => {
                write!(f, "invalid pattern ({pattern}) in substitution: {reason}")
            }
            Self::NestingTooDeep => write!(
                f,
                "syntax error: substitutions nested more than {MAX_NESTING} levels deep"
            ),
        }
    }
}

impl fmt::Display for ShellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for ShellError {}

impl ShellError {
    fn new(offset: usize, kind: ShellErrorKind) -> Self {
        Self { offset, kind }
    }
}

/// Collects the words of [`Lexer::process_words`].
#[derive(Default)]
struct Words {
    words: Vec<String>,
    current: String,
    /// Whether a word has started, even an empty one (`""`); whitespace then
    /// ends it only once it has text.
    in_word: bool,
}

impl Words {
    /// Adds a character that splits words when it is whitespace.
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.current.is_empty() {
                self.words.push(std::mem::take(&mut self.current));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// Adds a character that is part of the word whatever it is.
    fn add_raw_char(&mut self, ch: char) {
        self.current.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|ch| self.add_char(ch));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.current.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.words.push(self.current);
        }
        self.words
    }
}

/// The state of one expansion: a cursor over the input plus what was looked up.
struct Expander<'a> {
    lexer: &'a Lexer,
    src: &'a str,
    pos: usize,
    env: &'a dyn EnvGetter,
    /// Whether escape characters are kept; `${x#p}`, `${x%p}` and `${x/p/r}`
    /// turn it on while they read their words.
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a> Expander<'a> {
    fn new(lexer: &'a Lexer, src: &'a str, env: &'a dyn EnvGetter) -> Self {
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
    fn process_until(
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
fn reverse_pattern(pattern: &str) -> String {
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

/// One instruction of a compiled pattern.
#[derive(Debug, Clone, Copy)]
enum Inst {
    /// Match this character.
    Char(char),
    /// Match any character but a newline.
    Any,
    /// Continue at both targets, the first with priority.
    Split(usize, usize),
    Jump(usize),
    Match,
}

/// A shell pattern compiled to the regular expression BuildKit builds for it
/// (`*` → `.*` or `.*?`, `?` → `.`, the rest literal), run with Go's
/// leftmost-first semantics by a Pike VM (linear time, no backtracking).
struct Glob {
    prog: Vec<Inst>,
}

impl Glob {
    /// Compiles `pattern`; with `greedy`, `*` prefers the longest run.
    fn new(pattern: &str, greedy: bool) -> Result<Self, String> {
        let mut chars = pattern
            .strip_prefix('\u{FEFF}')
            .unwrap_or(pattern)
            .chars()
            .peekable();
        let mut prog = Vec::new();
        while let Some(ch) = chars.next() {
            match ch {
                '*' => {
                    let at = prog.len();
                    let (consume, skip) = (at + 1, at + 3);
                    prog.push(if greedy {
                        Inst::Split(consume, skip)
                    } else {
                        Inst::Split(skip, consume)
                    });
                    prog.push(Inst::Any);
                    prog.push(Inst::Jump(at));
                }
                '?' => prog.push(Inst::Any),
                '\\' => {
                    // `\}` and `\/` are needed inside `${...}`; the backslash is
                    // not part of the pattern.
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(escaped @ ('*' | '?' | '\\')) => prog.push(Inst::Char(escaped)),
                        other => {
                            return Err(format!(
                                "invalid escape '\\{}'",
                                other.unwrap_or(char::REPLACEMENT_CHARACTER)
                            ));
                        }
                    }
                }
                _ => prog.push(Inst::Char(ch)),
            }
        }
        prog.push(Inst::Match);
        Ok(Self { prog })
    }

    /// Adds the thread at `pc` and everything reachable from it without
    /// consuming input, in priority order, skipping instructions already in
    /// the list.
    fn add_thread(
        &self,
        list: &mut Vec<(usize, usize)>,
        seen: &mut [usize],
        generation: usize,
        stack: &mut Vec<usize>,
        pc: usize,
        start: usize,
    ) {
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if seen[pc] == generation {
                continue;
            }
            seen[pc] = generation;
            match self.prog[pc] {
                Inst::Jump(target) => stack.push(target),
                Inst::Split(first, second) => {
                    stack.push(second);
                    stack.push(first);
                }
                Inst::Char(_) | Inst::Any | Inst::Match => list.push((pc, start)),
            }
        }
    }

    /// Finds the leftmost-first match at or after `from` (only at `from` when
    /// `anchored`), as character indices `(start, end)`.
    fn find(&self, text: &[char], from: usize, anchored: bool) -> Option<(usize, usize)> {
        let mut seen = vec![0; self.prog.len()];
        let mut generation = 1;
        let mut current: Vec<(usize, usize)> = Vec::new();
        let mut next: Vec<(usize, usize)> = Vec::new();
        let mut stack = Vec::new();
        let mut found = None;
        let mut pos = from;
        loop {
            if found.is_none() && (!anchored || pos == from) {
                // Lowest priority: a match starting earlier wins.
                self.add_thread(&mut current, &mut seen, generation, &mut stack, 0, pos);
            }
            if current.is_empty() {
                break;
            }
            let ch = text.get(pos).copied();
            generation += 1;
            next.clear();
            for &(pc, start) in &current {
                let advance = match self.prog[pc] {
                    Inst::Match => {
                        // Threads after this one have lower priority: drop them.
                        found = Some((start, pos));
                        break;
                    }
                    Inst::Char(want) => ch == Some(want),
                    Inst::Any => ch.is_some_and(|c| c != '\n'),
                    Inst::Split(..) | Inst::Jump(_) => false,
                };
                if advance {
                    self.add_thread(&mut next, &mut seen, generation, &mut stack, pc + 1, start);
                }
            }
            if ch.is_none() {
                break;
            }
            std::mem::swap(&mut current, &mut next);
            pos += 1;
        }
        found
    }

    /// Replaces the first match with `replacement`, taken literally.
    fn replace_first(&self, text: &[char], replacement: &str) -> String {
        match self.find(text, 0, false) {
            Some((start, end)) => {
                let mut out: String = text[..start].iter().collect();
                out.push_str(replacement);
                out.extend(&text[end..]);
                out
            }
            None => text.iter().collect(),
        }
    }

    /// Replaces every match like Go's `Regexp.ReplaceAllString`: matches do
    /// not overlap, an empty match right after a match is skipped, and `$0`
    /// and `$$` in `replacement` are expanded.
    fn replace_all(&self, text: &[char], replacement: &str) -> String {
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = self.find(text, search, false) else {
                break;
            };
            out.extend(&text[last_end..start]);
            if end > last_end || start == 0 {
                let matched: String = text[start..end].iter().collect();
                expand_template(replacement, &matched, &mut out);
            }
            last_end = end;
            let width = usize::from(search < text.len());
            if search + width > end {
                search += width;
            } else if search + 1 > end {
                search += 1;
            } else {
                search = end;
            }
        }
        out.extend(&text[last_end..]);
        out
    }
}

/// Appends `template` to `out` the way Go's `Regexp.Expand` does for a regular
/// expression without groups: `$$` is `$`, `$0` and `${0}` are the match, any
/// other well-formed `$name` or `${name}` is empty and any other `$` is kept.
fn expand_template(template: &str, matched: &str, out: &mut String) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let name_len: usize = body
            .chars()
            .take_while(|&c| is_go_letter(c) || is_go_digit(c) || c == '_')
            .map(char::len_utf8)
            .sum();
        if name_len == 0 || (braced && !body[name_len..].starts_with('}')) {
            out.push('$');
            continue;
        }
        if body[..name_len] == *"0" {
            out.push_str(matched);
        }
        rest = &body[name_len + usize::from(braced)..];
    }
    out.push_str(rest);
}

/// Go's `unicode.IsLetter`: general category L.
fn is_go_letter(ch: char) -> bool {
    if ch.is_ascii() {
        ch.is_ascii_alphabetic()
    } else {
        in_ranges(LETTER_RANGES, ch)
    }
}

/// Go's `unicode.IsDigit`: general category Nd.
fn is_go_digit(ch: char) -> bool {
    if ch.is_ascii() {
        ch.is_ascii_digit()
    } else {
        in_ranges(DIGIT_RANGES, ch)
    }
}

/// Whether `ch` lies in one of the inclusive ranges of `table`, a sorted list
/// of `start, end` pairs.
fn in_ranges(table: &[u32], ch: char) -> bool {
    let cp = u32::from(ch);
    let pairs = table.len() / 2;
    // The first range whose end is at or after `cp`.
    let (mut lo, mut hi) = (0, pairs);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if table[2 * mid + 1] < cp {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo < pairs && table[2 * lo] <= cp
}

/// Non-ASCII code points of Unicode general category L (Unicode 14), as inclusive `start, end` pairs.
///
/// Both tables were generated from Python's `unicodedata` (Unicode 14.0).
const LETTER_RANGES: &[u32] = &[
    0xAA, 0xAA, 0xB5, 0xB5, 0xBA, 0xBA, 0xC0, 0xD6, 0xD8, 0xF6, 0xF8, 0x2C1, 0x2C6, 0x2D1, 0x2E0,
    0x2E4, 0x2EC, 0x2EC, 0x2EE, 0x2EE, 0x370, 0x374, 0x376, 0x377, 0x37A, 0x37D, 0x37F, 0x37F,
    0x386, 0x386, 0x388, 0x38A, 0x38C, 0x38C, 0x38E, 0x3A1, 0x3A3, 0x3F5, 0x3F7, 0x481, 0x48A,
    0x52F, 0x531, 0x556, 0x559, 0x559, 0x560, 0x588, 0x5D0, 0x5EA, 0x5EF, 0x5F2, 0x620, 0x64A,
    0x66E, 0x66F, 0x671, 0x6D3, 0x6D5, 0x6D5, 0x6E5, 0x6E6, 0x6EE, 0x6EF, 0x6FA, 0x6FC, 0x6FF,
    0x6FF, 0x710, 0x710, 0x712, 0x72F, 0x74D, 0x7A5, 0x7B1, 0x7B1, 0x7CA, 0x7EA, 0x7F4, 0x7F5,
    0x7FA, 0x7FA, 0x800, 0x815, 0x81A, 0x81A, 0x824, 0x824, 0x828, 0x828, 0x840, 0x858, 0x860,
    0x86A, 0x870, 0x887, 0x889, 0x88E, 0x8A0, 0x8C9, 0x904, 0x939, 0x93D, 0x93D, 0x950, 0x950,
    0x958, 0x961, 0x971, 0x980, 0x985, 0x98C, 0x98F, 0x990, 0x993, 0x9A8, 0x9AA, 0x9B0, 0x9B2,
    0x9B2, 0x9B6, 0x9B9, 0x9BD, 0x9BD, 0x9CE, 0x9CE, 0x9DC, 0x9DD, 0x9DF, 0x9E1, 0x9F0, 0x9F1,
    0x9FC, 0x9FC, 0xA05, 0xA0A, 0xA0F, 0xA10, 0xA13, 0xA28, 0xA2A, 0xA30, 0xA32, 0xA33, 0xA35,
    0xA36, 0xA38, 0xA39, 0xA59, 0xA5C, 0xA5E, 0xA5E, 0xA72, 0xA74, 0xA85, 0xA8D, 0xA8F, 0xA91,
    0xA93, 0xAA8, 0xAAA, 0xAB0, 0xAB2, 0xAB3, 0xAB5, 0xAB9, 0xABD, 0xABD, 0xAD0, 0xAD0, 0xAE0,
    0xAE1, 0xAF9, 0xAF9, 0xB05, 0xB0C, 0xB0F, 0xB10, 0xB13, 0xB28, 0xB2A, 0xB30, 0xB32, 0xB33,
    0xB35, 0xB39, 0xB3D, 0xB3D, 0xB5C, 0xB5D, 0xB5F, 0xB61, 0xB71, 0xB71, 0xB83, 0xB83, 0xB85,
    0xB8A, 0xB8E, 0xB90, 0xB92, 0xB95, 0xB99, 0xB9A, 0xB9C, 0xB9C, 0xB9E, 0xB9F, 0xBA3, 0xBA4,
    0xBA8, 0xBAA, 0xBAE, 0xBB9, 0xBD0, 0xBD0, 0xC05, 0xC0C, 0xC0E, 0xC10, 0xC12, 0xC28, 0xC2A,
    0xC39, 0xC3D, 0xC3D, 0xC58, 0xC5A, 0xC5D, 0xC5D, 0xC60, 0xC61, 0xC80, 0xC80, 0xC85, 0xC8C,
    0xC8E, 0xC90, 0xC92, 0xCA8, 0xCAA, 0xCB3, 0xCB5, 0xCB9, 0xCBD, 0xCBD, 0xCDD, 0xCDE, 0xCE0,
    0xCE1, 0xCF1, 0xCF2, 0xD04, 0xD0C, 0xD0E, 0xD10, 0xD12, 0xD3A, 0xD3D, 0xD3D, 0xD4E, 0xD4E,
    0xD54, 0xD56, 0xD5F, 0xD61, 0xD7A, 0xD7F, 0xD85, 0xD96, 0xD9A, 0xDB1, 0xDB3, 0xDBB, 0xDBD,
    0xDBD, 0xDC0, 0xDC6, 0xE01, 0xE30, 0xE32, 0xE33, 0xE40, 0xE46, 0xE81, 0xE82, 0xE84, 0xE84,
    0xE86, 0xE8A, 0xE8C, 0xEA3, 0xEA5, 0xEA5, 0xEA7, 0xEB0, 0xEB2, 0xEB3, 0xEBD, 0xEBD, 0xEC0,
    0xEC4, 0xEC6, 0xEC6, 0xEDC, 0xEDF, 0xF00, 0xF00, 0xF40, 0xF47, 0xF49, 0xF6C, 0xF88, 0xF8C,
    0x1000, 0x102A, 0x103F, 0x103F, 0x1050, 0x1055, 0x105A, 0x105D, 0x1061, 0x1061, 0x1065, 0x1066,
    0x106E, 0x1070, 0x1075, 0x1081, 0x108E, 0x108E, 0x10A0, 0x10C5, 0x10C7, 0x10C7, 0x10CD, 0x10CD,
    0x10D0, 0x10FA, 0x10FC, 0x1248, 0x124A, 0x124D, 0x1250, 0x1256, 0x1258, 0x1258, 0x125A, 0x125D,
    0x1260, 0x1288, 0x128A, 0x128D, 0x1290, 0x12B0, 0x12B2, 0x12B5, 0x12B8, 0x12BE, 0x12C0, 0x12C0,
    0x12C2, 0x12C5, 0x12C8, 0x12D6, 0x12D8, 0x1310, 0x1312, 0x1315, 0x1318, 0x135A, 0x1380, 0x138F,
    0x13A0, 0x13F5, 0x13F8, 0x13FD, 0x1401, 0x166C, 0x166F, 0x167F, 0x1681, 0x169A, 0x16A0, 0x16EA,
    0x16F1, 0x16F8, 0x1700, 0x1711, 0x171F, 0x1731, 0x1740, 0x1751, 0x1760, 0x176C, 0x176E, 0x1770,
    0x1780, 0x17B3, 0x17D7, 0x17D7, 0x17DC, 0x17DC, 0x1820, 0x1878, 0x1880, 0x1884, 0x1887, 0x18A8,
    0x18AA, 0x18AA, 0x18B0, 0x18F5, 0x1900, 0x191E, 0x1950, 0x196D, 0x1970, 0x1974, 0x1980, 0x19AB,
    0x19B0, 0x19C9, 0x1A00, 0x1A16, 0x1A20, 0x1A54, 0x1AA7, 0x1AA7, 0x1B05, 0x1B33, 0x1B45, 0x1B4C,
    0x1B83, 0x1BA0, 0x1BAE, 0x1BAF, 0x1BBA, 0x1BE5, 0x1C00, 0x1C23, 0x1C4D, 0x1C4F, 0x1C5A, 0x1C7D,
    0x1C80, 0x1C88, 0x1C90, 0x1CBA, 0x1CBD, 0x1CBF, 0x1CE9, 0x1CEC, 0x1CEE, 0x1CF3, 0x1CF5, 0x1CF6,
    0x1CFA, 0x1CFA, 0x1D00, 0x1DBF, 0x1E00, 0x1F15, 0x1F18, 0x1F1D, 0x1F20, 0x1F45, 0x1F48, 0x1F4D,
    0x1F50, 0x1F57, 0x1F59, 0x1F59, 0x1F5B, 0x1F5B, 0x1F5D, 0x1F5D, 0x1F5F, 0x1F7D, 0x1F80, 0x1FB4,
    0x1FB6, 0x1FBC, 0x1FBE, 0x1FBE, 0x1FC2, 0x1FC4, 0x1FC6, 0x1FCC, 0x1FD0, 0x1FD3, 0x1FD6, 0x1FDB,
    0x1FE0, 0x1FEC, 0x1FF2, 0x1FF4, 0x1FF6, 0x1FFC, 0x2071, 0x2071, 0x207F, 0x207F, 0x2090, 0x209C,
    0x2102, 0x2102, 0x2107, 0x2107, 0x210A, 0x2113, 0x2115, 0x2115, 0x2119, 0x211D, 0x2124, 0x2124,
    0x2126, 0x2126, 0x2128, 0x2128, 0x212A, 0x212D, 0x212F, 0x2139, 0x213C, 0x213F, 0x2145, 0x2149,
    0x214E, 0x214E, 0x2183, 0x2184, 0x2C00, 0x2CE4, 0x2CEB, 0x2CEE, 0x2CF2, 0x2CF3, 0x2D00, 0x2D25,
    0x2D27, 0x2D27, 0x2D2D, 0x2D2D, 0x2D30, 0x2D67, 0x2D6F, 0x2D6F, 0x2D80, 0x2D96, 0x2DA0, 0x2DA6,
    0x2DA8, 0x2DAE, 0x2DB0, 0x2DB6, 0x2DB8, 0x2DBE, 0x2DC0, 0x2DC6, 0x2DC8, 0x2DCE, 0x2DD0, 0x2DD6,
    0x2DD8, 0x2DDE, 0x2E2F, 0x2E2F, 0x3005, 0x3006, 0x3031, 0x3035, 0x303B, 0x303C, 0x3041, 0x3096,
    0x309D, 0x309F, 0x30A1, 0x30FA, 0x30FC, 0x30FF, 0x3105, 0x312F, 0x3131, 0x318E, 0x31A0, 0x31BF,
    0x31F0, 0x31FF, 0x3400, 0x4DBF, 0x4E00, 0xA48C, 0xA4D0, 0xA4FD, 0xA500, 0xA60C, 0xA610, 0xA61F,
    0xA62A, 0xA62B, 0xA640, 0xA66E, 0xA67F, 0xA69D, 0xA6A0, 0xA6E5, 0xA717, 0xA71F, 0xA722, 0xA788,
    0xA78B, 0xA7CA, 0xA7D0, 0xA7D1, 0xA7D3, 0xA7D3, 0xA7D5, 0xA7D9, 0xA7F2, 0xA801, 0xA803, 0xA805,
    0xA807, 0xA80A, 0xA80C, 0xA822, 0xA840, 0xA873, 0xA882, 0xA8B3, 0xA8F2, 0xA8F7, 0xA8FB, 0xA8FB,
    0xA8FD, 0xA8FE, 0xA90A, 0xA925, 0xA930, 0xA946, 0xA960, 0xA97C, 0xA984, 0xA9B2, 0xA9CF, 0xA9CF,
    0xA9E0, 0xA9E4, 0xA9E6, 0xA9EF, 0xA9FA, 0xA9FE, 0xAA00, 0xAA28, 0xAA40, 0xAA42, 0xAA44, 0xAA4B,
    0xAA60, 0xAA76, 0xAA7A, 0xAA7A, 0xAA7E, 0xAAAF, 0xAAB1, 0xAAB1, 0xAAB5, 0xAAB6, 0xAAB9, 0xAABD,
    0xAAC0, 0xAAC0, 0xAAC2, 0xAAC2, 0xAADB, 0xAADD, 0xAAE0, 0xAAEA, 0xAAF2, 0xAAF4, 0xAB01, 0xAB06,
    0xAB09, 0xAB0E, 0xAB11, 0xAB16, 0xAB20, 0xAB26, 0xAB28, 0xAB2E, 0xAB30, 0xAB5A, 0xAB5C, 0xAB69,
    0xAB70, 0xABE2, 0xAC00, 0xD7A3, 0xD7B0, 0xD7C6, 0xD7CB, 0xD7FB, 0xF900, 0xFA6D, 0xFA70, 0xFAD9,
    0xFB00, 0xFB06, 0xFB13, 0xFB17, 0xFB1D, 0xFB1D, 0xFB1F, 0xFB28, 0xFB2A, 0xFB36, 0xFB38, 0xFB3C,
    0xFB3E, 0xFB3E, 0xFB40, 0xFB41, 0xFB43, 0xFB44, 0xFB46, 0xFBB1, 0xFBD3, 0xFD3D, 0xFD50, 0xFD8F,
    0xFD92, 0xFDC7, 0xFDF0, 0xFDFB, 0xFE70, 0xFE74, 0xFE76, 0xFEFC, 0xFF21, 0xFF3A, 0xFF41, 0xFF5A,
    0xFF66, 0xFFBE, 0xFFC2, 0xFFC7, 0xFFCA, 0xFFCF, 0xFFD2, 0xFFD7, 0xFFDA, 0xFFDC, 0x10000,
    0x1000B, 0x1000D, 0x10026, 0x10028, 0x1003A, 0x1003C, 0x1003D, 0x1003F, 0x1004D, 0x10050,
    0x1005D, 0x10080, 0x100FA, 0x10280, 0x1029C, 0x102A0, 0x102D0, 0x10300, 0x1031F, 0x1032D,
    0x10340, 0x10342, 0x10349, 0x10350, 0x10375, 0x10380, 0x1039D, 0x103A0, 0x103C3, 0x103C8,
    0x103CF, 0x10400, 0x1049D, 0x104B0, 0x104D3, 0x104D8, 0x104FB, 0x10500, 0x10527, 0x10530,
    0x10563, 0x10570, 0x1057A, 0x1057C, 0x1058A, 0x1058C, 0x10592, 0x10594, 0x10595, 0x10597,
    0x105A1, 0x105A3, 0x105B1, 0x105B3, 0x105B9, 0x105BB, 0x105BC, 0x10600, 0x10736, 0x10740,
    0x10755, 0x10760, 0x10767, 0x10780, 0x10785, 0x10787, 0x107B0, 0x107B2, 0x107BA, 0x10800,
    0x10805, 0x10808, 0x10808, 0x1080A, 0x10835, 0x10837, 0x10838, 0x1083C, 0x1083C, 0x1083F,
    0x10855, 0x10860, 0x10876, 0x10880, 0x1089E, 0x108E0, 0x108F2, 0x108F4, 0x108F5, 0x10900,
    0x10915, 0x10920, 0x10939, 0x10980, 0x109B7, 0x109BE, 0x109BF, 0x10A00, 0x10A00, 0x10A10,
    0x10A13, 0x10A15, 0x10A17, 0x10A19, 0x10A35, 0x10A60, 0x10A7C, 0x10A80, 0x10A9C, 0x10AC0,
    0x10AC7, 0x10AC9, 0x10AE4, 0x10B00, 0x10B35, 0x10B40, 0x10B55, 0x10B60, 0x10B72, 0x10B80,
    0x10B91, 0x10C00, 0x10C48, 0x10C80, 0x10CB2, 0x10CC0, 0x10CF2, 0x10D00, 0x10D23, 0x10E80,
    0x10EA9, 0x10EB0, 0x10EB1, 0x10F00, 0x10F1C, 0x10F27, 0x10F27, 0x10F30, 0x10F45, 0x10F70,
    0x10F81, 0x10FB0, 0x10FC4, 0x10FE0, 0x10FF6, 0x11003, 0x11037, 0x11071, 0x11072, 0x11075,
    0x11075, 0x11083, 0x110AF, 0x110D0, 0x110E8, 0x11103, 0x11126, 0x11144, 0x11144, 0x11147,
    0x11147, 0x11150, 0x11172, 0x11176, 0x11176, 0x11183, 0x111B2, 0x111C1, 0x111C4, 0x111DA,
    0x111DA, 0x111DC, 0x111DC, 0x11200, 0x11211, 0x11213, 0x1122B, 0x11280, 0x11286, 0x11288,
    0x11288, 0x1128A, 0x1128D, 0x1128F, 0x1129D, 0x1129F, 0x112A8, 0x112B0, 0x112DE, 0x11305,
    0x1130C, 0x1130F, 0x11310, 0x11313, 0x11328, 0x1132A, 0x11330, 0x11332, 0x11333, 0x11335,
    0x11339, 0x1133D, 0x1133D, 0x11350, 0x11350, 0x1135D, 0x11361, 0x11400, 0x11434, 0x11447,
    0x1144A, 0x1145F, 0x11461, 0x11480, 0x114AF, 0x114C4, 0x114C5, 0x114C7, 0x114C7, 0x11580,
    0x115AE, 0x115D8, 0x115DB, 0x11600, 0x1162F, 0x11644, 0x11644, 0x11680, 0x116AA, 0x116B8,
    0x116B8, 0x11700, 0x1171A, 0x11740, 0x11746, 0x11800, 0x1182B, 0x118A0, 0x118DF, 0x118FF,
    0x11906, 0x11909, 0x11909, 0x1190C, 0x11913, 0x11915, 0x11916, 0x11918, 0x1192F, 0x1193F,
    0x1193F, 0x11941, 0x11941, 0x119A0, 0x119A7, 0x119AA, 0x119D0, 0x119E1, 0x119E1, 0x119E3,
    0x119E3, 0x11A00, 0x11A00, 0x11A0B, 0x11A32, 0x11A3A, 0x11A3A, 0x11A50, 0x11A50, 0x11A5C,
    0x11A89, 0x11A9D, 0x11A9D, 0x11AB0, 0x11AF8, 0x11C00, 0x11C08, 0x11C0A, 0x11C2E, 0x11C40,
    0x11C40, 0x11C72, 0x11C8F, 0x11D00, 0x11D06, 0x11D08, 0x11D09, 0x11D0B, 0x11D30, 0x11D46,
    0x11D46, 0x11D60, 0x11D65, 0x11D67, 0x11D68, 0x11D6A, 0x11D89, 0x11D98, 0x11D98, 0x11EE0,
    0x11EF2, 0x11FB0, 0x11FB0, 0x12000, 0x12399, 0x12480, 0x12543, 0x12F90, 0x12FF0, 0x13000,
    0x1342E, 0x14400, 0x14646, 0x16800, 0x16A38, 0x16A40, 0x16A5E, 0x16A70, 0x16ABE, 0x16AD0,
    0x16AED, 0x16B00, 0x16B2F, 0x16B40, 0x16B43, 0x16B63, 0x16B77, 0x16B7D, 0x16B8F, 0x16E40,
    0x16E7F, 0x16F00, 0x16F4A, 0x16F50, 0x16F50, 0x16F93, 0x16F9F, 0x16FE0, 0x16FE1, 0x16FE3,
    0x16FE3, 0x17000, 0x187F7, 0x18800, 0x18CD5, 0x18D00, 0x18D08, 0x1AFF0, 0x1AFF3, 0x1AFF5,
    0x1AFFB, 0x1AFFD, 0x1AFFE, 0x1B000, 0x1B122, 0x1B150, 0x1B152, 0x1B164, 0x1B167, 0x1B170,
    0x1B2FB, 0x1BC00, 0x1BC6A, 0x1BC70, 0x1BC7C, 0x1BC80, 0x1BC88, 0x1BC90, 0x1BC99, 0x1D400,
    0x1D454, 0x1D456, 0x1D49C, 0x1D49E, 0x1D49F, 0x1D4A2, 0x1D4A2, 0x1D4A5, 0x1D4A6, 0x1D4A9,
    0x1D4AC, 0x1D4AE, 0x1D4B9, 0x1D4BB, 0x1D4BB, 0x1D4BD, 0x1D4C3, 0x1D4C5, 0x1D505, 0x1D507,
    0x1D50A, 0x1D50D, 0x1D514, 0x1D516, 0x1D51C, 0x1D51E, 0x1D539, 0x1D53B, 0x1D53E, 0x1D540,
    0x1D544, 0x1D546, 0x1D546, 0x1D54A, 0x1D550, 0x1D552, 0x1D6A5, 0x1D6A8, 0x1D6C0, 0x1D6C2,
    0x1D6DA, 0x1D6DC, 0x1D6FA, 0x1D6FC, 0x1D714, 0x1D716, 0x1D734, 0x1D736, 0x1D74E, 0x1D750,
    0x1D76E, 0x1D770, 0x1D788, 0x1D78A, 0x1D7A8, 0x1D7AA, 0x1D7C2, 0x1D7C4, 0x1D7CB, 0x1DF00,
    0x1DF1E, 0x1E100, 0x1E12C, 0x1E137, 0x1E13D, 0x1E14E, 0x1E14E, 0x1E290, 0x1E2AD, 0x1E2C0,
    0x1E2EB, 0x1E7E0, 0x1E7E6, 0x1E7E8, 0x1E7EB, 0x1E7ED, 0x1E7EE, 0x1E7F0, 0x1E7FE, 0x1E800,
    0x1E8C4, 0x1E900, 0x1E943, 0x1E94B, 0x1E94B, 0x1EE00, 0x1EE03, 0x1EE05, 0x1EE1F, 0x1EE21,
    0x1EE22, 0x1EE24, 0x1EE24, 0x1EE27, 0x1EE27, 0x1EE29, 0x1EE32, 0x1EE34, 0x1EE37, 0x1EE39,
    0x1EE39, 0x1EE3B, 0x1EE3B, 0x1EE42, 0x1EE42, 0x1EE47, 0x1EE47, 0x1EE49, 0x1EE49, 0x1EE4B,
    0x1EE4B, 0x1EE4D, 0x1EE4F, 0x1EE51, 0x1EE52, 0x1EE54, 0x1EE54, 0x1EE57, 0x1EE57, 0x1EE59,
    0x1EE59, 0x1EE5B, 0x1EE5B, 0x1EE5D, 0x1EE5D, 0x1EE5F, 0x1EE5F, 0x1EE61, 0x1EE62, 0x1EE64,
    0x1EE64, 0x1EE67, 0x1EE6A, 0x1EE6C, 0x1EE72, 0x1EE74, 0x1EE77, 0x1EE79, 0x1EE7C, 0x1EE7E,
    0x1EE7E, 0x1EE80, 0x1EE89, 0x1EE8B, 0x1EE9B, 0x1EEA1, 0x1EEA3, 0x1EEA5, 0x1EEA9, 0x1EEAB,
    0x1EEBB, 0x20000, 0x2A6DF, 0x2A700, 0x2B738, 0x2B740, 0x2B81D, 0x2B820, 0x2CEA1, 0x2CEB0,
    0x2EBE0, 0x2F800, 0x2FA1D, 0x30000, 0x3134A,
];

/// Non-ASCII code points of Unicode general category Nd (Unicode 14), as inclusive `start, end` pairs.
const DIGIT_RANGES: &[u32] = &[
    0x660, 0x669, 0x6F0, 0x6F9, 0x7C0, 0x7C9, 0x966, 0x96F, 0x9E6, 0x9EF, 0xA66, 0xA6F, 0xAE6,
    0xAEF, 0xB66, 0xB6F, 0xBE6, 0xBEF, 0xC66, 0xC6F, 0xCE6, 0xCEF, 0xD66, 0xD6F, 0xDE6, 0xDEF,
    0xE50, 0xE59, 0xED0, 0xED9, 0xF20, 0xF29, 0x1040, 0x1049, 0x1090, 0x1099, 0x17E0, 0x17E9,
    0x1810, 0x1819, 0x1946, 0x194F, 0x19D0, 0x19D9, 0x1A80, 0x1A89, 0x1A90, 0x1A99, 0x1B50, 0x1B59,
    0x1BB0, 0x1BB9, 0x1C40, 0x1C49, 0x1C50, 0x1C59, 0xA620, 0xA629, 0xA8D0, 0xA8D9, 0xA900, 0xA909,
    0xA9D0, 0xA9D9, 0xA9F0, 0xA9F9, 0xAA50, 0xAA59, 0xABF0, 0xABF9, 0xFF10, 0xFF19, 0x104A0,
    0x104A9, 0x10D30, 0x10D39, 0x11066, 0x1106F, 0x110F0, 0x110F9, 0x11136, 0x1113F, 0x111D0,
    0x111D9, 0x112F0, 0x112F9, 0x11450, 0x11459, 0x114D0, 0x114D9, 0x11650, 0x11659, 0x116C0,
    0x116C9, 0x11730, 0x11739, 0x118E0, 0x118E9, 0x11950, 0x11959, 0x11C50, 0x11C59, 0x11D50,
    0x11D59, 0x11DA0, 0x11DA9, 0x16A60, 0x16A69, 0x16AC0, 0x16AC9, 0x16B50, 0x16B59, 0x1D7CE,
    0x1D7FF, 0x1E140, 0x1E149, 0x1E2F0, 0x1E2F9, 0x1E950, 0x1E959, 0x1FBF0, 0x1FBF9,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment of BuildKit's `envVarTest` table.
    fn table_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]
    }

    /// Runs a table in BuildKit's `envVarTest` format with `lexer`.
    fn run_env_var_table(name: &str, table: &str, lexer: Lexer) {
        let env = table_env();
        let mut cases = 0;
        for (number, line) in table.lines().enumerate() {
            let line_no = number + 1;
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.trim().split('|').collect();
            assert_eq!(
                fields.len(),
                3,
                "{name}:{line_no}: expected 3 fields in {line:?}"
            );
            let (platform, source, expected) =
                (fields[0].trim(), fields[1].trim(), fields[2].trim());
            assert!(
                matches!(platform, "A" | "U" | "W"),
                "{name}:{line_no}: bad platform tag {platform:?}"
            );
            if platform == "W" {
                continue;
            }
            cases += 1;
            let result = lexer.process_word(source, &env);
            if expected == "error" {
                assert!(
                    result.is_err(),
                    "{name}:{line_no}: {source:?} should fail, got {result:?}"
                );
            } else {
                match result {
                    Ok(expansion) => assert_eq!(
                        expansion.value, expected,
                        "{name}:{line_no}: expanding {source:?}"
                    ),
                    Err(err) => panic!("{name}:{line_no}: {source:?} failed: {err}"),
                }
            }
        }
        assert!(cases > 20, "{name}: too few cases ({cases})");
    }

    #[test]
    fn env_var_table_matches_buildkit() {
        run_env_var_table(
            "envVarTest",
            include_str!("../testdata/envVarTest"),
            Lexer::new('\\'),
        );
    }

    #[test]
    fn env_var_table_with_backtick_escape() {
        run_env_var_table(
            "envVarTestBacktick",
            include_str!("../testdata/envVarTestBacktick"),
            Lexer::new('`'),
        );
    }

    #[test]
    fn words_table_matches_buildkit() {
        let table = include_str!("../testdata/wordsTest");
        let lexer = Lexer::new('\\');
        let mut env: Vec<(String, String)> = Vec::new();
        let mut cases = 0;
        for (number, line) in table.lines().enumerate() {
            let line_no = number + 1;
            if line.starts_with('#') {
                continue;
            }
            if let Some(entry) = line.strip_prefix("ENV ") {
                let entry = entry.trim_start_matches(' ');
                let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                env.push((key.to_owned(), value.to_owned()));
                continue;
            }
            let fields: Vec<&str> = line.split('|').collect();
            assert_eq!(
                fields.len(),
                2,
                "wordsTest:{line_no}: expected one | in {line:?}"
            );
            let source = fields[0].trim();
            let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
            let words = lexer
                .process_words(source, &env)
                .unwrap_or_else(|_| vec!["error".to_owned()]);
            assert_eq!(words, expected, "wordsTest:{line_no}: splitting {source:?}");
            cases += 1;
        }
        assert!(cases > 20);
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    /// BuildKit's `TestProcessWithMatches`.
    #[test]
    fn process_word_reports_matched_and_unmatched_variables() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            &'a [&'a str],
            &'a [&'a str],
        );
        let foo_bar: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
        let cases: &[Case] = &[
            ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
            (
                "x ${UNUSED}",
                &[("DUMMY", "dummy")],
                Some("x "),
                &[],
                &["UNUSED"],
            ),
            ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
            (
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                foo_bar,
                Some("xxx  ccc"),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            (
                "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
                foo_bar,
                Some("xxx bbb ccc"),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            ("${FOO:-}", foo_bar, Some("xxx"), &["FOO"], &[]),
            ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
            (
                "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
                foo_bar,
                Some("aaa bbb "),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            (
                "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
                foo_bar,
                Some("aaa  "),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            ("${FOO?aaa}", foo_bar, Some("xxx"), &["FOO"], &[]),
            ("${BAR?bbb}", foo_bar, Some(""), &["BAR"], &[]),
            ("${BAZ?ccc}", foo_bar, None, &[], &[]),
            ("${FOO:?aaa}", foo_bar, Some("xxx"), &["FOO"], &[]),
            ("${BAR:?bbb}", foo_bar, None, &[], &[]),
            ("${BAZ:?ccc}", foo_bar, None, &[], &[]),
            ("${BAZ:?}", foo_bar, None, &[], &[]),
            ("${FOO=aaa}", foo_bar, None, &[], &[]),
            ("${FOO=:aaa}", foo_bar, None, &[], &[]),
            ("${FOO=}", &[], None, &[], &[]),
            (
                r"${FOO#()[]{\}^$.\*\?|\\}",
                &[("FOO", r"()[]{}^$.*?|\x")],
                Some("x"),
                &["FOO"],
                &[],
            ),
            (
                r"${FOO%%\**}",
                &[("FOO", "xx**")],
                Some("xx"),
                &["FOO"],
                &[],
            ),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
            ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "x")],
                Some("xyy"),
                &["FOO", "BAR"],
                &[],
            ),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
            ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (r"${FOO#?\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
            (
                "${ABC:-.}${FOO%x}${ABC:-.}",
                &[("FOO", "xxyy")],
                Some(".xxyy."),
                &["FOO"],
                &["ABC"],
            ),
            (
                r"${FOO%%\**\*}",
                &[("FOO", "a***yy*")],
                Some("a"),
                &["FOO"],
                &[],
            ),
            ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (
                "${FOO%%$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
                Some("/foo.*/*.txt - /foo..*.txt"),
                &["FOO", "NEEDLE"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                Some("/tmp/bar.txt - /bar.txt"),
                &["FOO", "NEEDLE"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "/a/foo/b/c.txt"),
                    ("NEEDLE", "/?/"),
                    ("REPLACEMENT", "/"),
                ],
                Some("/foo/b/c.txt - /foo/c.txt"),
                &["FOO", "NEEDLE", "REPLACEMENT"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "http://google.de"),
                    ("NEEDLE", "http://"),
                    ("REPLACEMENT", "https://"),
                ],
                Some("https://google.de"),
                &["FOO", "NEEDLE", "REPLACEMENT"],
                &[],
            ),
            (
                r"${FOO//\//\/}",
                &[("FOO", "/tmp/foo.txt")],
                Some(r"\/tmp\/foo.txt"),
                &["FOO"],
                &[],
            ),
            (
                "${FOO/$BAR/ww}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("wwxxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            ("${FOO///}", &[], Some(""), &[], &["FOO"]),
        ];
        let lexer = Lexer::new('\\');
        for &(input, env, expected, matched, unmatched) in cases {
            let result = lexer.process_word(input, &map(env));
            match expected {
                None => assert!(result.is_err(), "{input:?} should fail, got {result:?}"),
                Some(expected) => {
                    let expansion = result.unwrap_or_else(|err| panic!("{input:?} failed: {err}"));
                    assert_eq!(expansion.value, expected, "{input:?}");
                    assert_eq!(expansion.matched, set(matched), "matched of {input:?}");
                    assert_eq!(
                        expansion.unmatched,
                        set(unmatched),
                        "unmatched of {input:?}"
                    );
                }
            }
        }
    }

    /// BuildKit's `TestProcessWithMatchesPlatform`.
    #[test]
    fn optional_suffix_with_nested_expansion() {
        let release = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        let lexer = Lexer::new('\\');
        let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
        let with = |extra: &[(&str, &str)]| {
            let env = map(&[base.as_slice(), extra].concat());
            lexer.process_word(release, &env).unwrap().value
        };
        assert_eq!(
            with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
            "something-v1.2.3.linux-arm-v7.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
    }

    /// BuildKit's `TestShellParserMandatoryEnvVars`.
    #[test]
    fn required_variables_report_their_message() {
        let lexer = Lexer::new('\\');
        let set_env = [("VAR", "plain"), ("ARG", "x")];
        let empty_env = [("VAR", ""), ("ARG", "x")];
        let unset_env = [("ARG", "x")];
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";

        assert_eq!(
            lexer.process_word(no_empty, &set_env).unwrap().value,
            "plain"
        );
        let err = lexer.process_word(no_empty, &empty_env).unwrap_err();
        assert_eq!(err.to_string(), "VAR: message herex");
        let err = lexer.process_word(no_empty, &unset_env).unwrap_err();
        assert_eq!(err.to_string(), "VAR: message herex");

        assert_eq!(
            lexer.process_word(no_unset, &set_env).unwrap().value,
            "plain"
        );
        assert_eq!(lexer.process_word(no_unset, &empty_env).unwrap().value, "");
        let err = lexer.process_word(no_unset, &unset_env).unwrap_err();
        assert_eq!(err.to_string(), "VAR: message herex");

        let err = lexer.process_word("a${VAR?}", &unset_env).unwrap_err();
        assert_eq!(err.to_string(), "VAR: is not allowed to be unset");
        assert_eq!(err.offset, 1);
        let err = lexer.process_word("${VAR:?}", &empty_env).unwrap_err();
        assert_eq!(err.to_string(), "VAR: is not allowed to be empty");
    }

    fn expand(lexer: Lexer, word: &str) -> String {
        let env = table_env();
        lexer
            .process_word(word, &env)
            .unwrap_or_else(|err| panic!("{word:?} failed: {err}"))
            .value
    }

    #[test]
    fn raw_quotes_keeps_quote_characters() {
        let lexer = Lexer::new('\\').raw_quotes(true);
        assert_eq!(expand(lexer, r#"'a'"b"c"#), r#"'a'"b"c"#);
        assert_eq!(expand(lexer, r#""$PWD" '$PWD'"#), r#""/home" '$PWD'"#);
        assert_eq!(expand(lexer, r#"EOF"#), "EOF");
        assert_eq!(expand(lexer, r#""E\"OF""#), r#""E"OF""#);
        assert_eq!(
            lexer.process_words(r#"a "b c" 'd'"#, &table_env()).unwrap(),
            ["a", r#""b c""#, "'d'"]
        );
    }

    #[test]
    fn raw_escapes_keeps_escape_characters() {
        let lexer = Lexer::new('\\').raw_escapes(true);
        assert_eq!(expand(lexer, r"a\ b\$PWD"), r"a\ b\$PWD");
        assert_eq!(expand(lexer, r"hello\"), r"hello\");
        assert_eq!(expand(lexer, r#""a\"b\$c""#), r#"a\"b\$c"#);
        // An escape that escapes nothing inside double quotes is doubled, as in
        // BuildKit.
        assert_eq!(expand(lexer, r#""a\b""#), r"a\\b");
        assert_eq!(
            lexer.process_words(r"a\ b c", &table_env()).unwrap(),
            [r"a\ b", "c"]
        );
    }

    #[test]
    fn skip_process_quotes_treats_quotes_as_text() {
        let lexer = Lexer::new('\\').skip_process_quotes(true);
        assert_eq!(
            expand(lexer, r#"echo '$PWD' "$SHELL""#),
            r#"echo '/home' "bash""#
        );
        assert_eq!(expand(lexer, r"it's \$PWD"), "it's $PWD");
        assert_eq!(expand(lexer, "${XXX:-'a b'}"), "'a b'");
        assert_eq!(expand(lexer, "unbalanced \" and '"), "unbalanced \" and '");
    }

    #[test]
    fn skip_unset_env_leaves_unset_references() {
        let lexer = Lexer::new('\\').skip_unset_env(true);
        assert_eq!(expand(lexer, "$X ${X} $PWD ${NULL}."), "$X ${X} /home .");
        assert_eq!(
            expand(lexer, "${X:-a} ${X-$PWD} ${X+b} ${X:?} ${X?m}"),
            "${X:-a} ${X-/home} ${X+b} ${X:?} ${X?m}"
        );
        assert_eq!(
            expand(lexer, "${X:=a} ${X#p} ${X%%p}"),
            "${X:=a} ${X#p} ${X%%p}"
        );
        // BuildKit drops the second slash of `//` here.
        assert_eq!(expand(lexer, "${X/a/b} ${X//a/b}"), "${X/a/b} ${X/a/b}");
        assert_eq!(expand(lexer, "${NULL:-a}${PWD-b}"), "a/home");
    }

    #[test]
    fn skip_unset_env_still_fails_on_set_variables() {
        let lexer = Lexer::new('\\').skip_unset_env(true);
        let env = table_env();
        assert!(lexer.process_word("${PWD:=a}", &env).is_err());
        assert!(lexer.process_word("${NULL:?}", &env).is_err());
        assert!(lexer.process_word("${X", &env).is_err());
        // `=` without `:` is rejected before the variable is looked at.
        assert!(lexer.process_word("${X=a}", &env).is_err());
        let expansion = lexer.process_word("$X${PWD}", &env).unwrap();
        assert_eq!(expansion.matched, set(&["PWD"]));
        assert_eq!(expansion.unmatched, set(&["X"]));
    }

    #[test]
    fn errors_point_at_the_construct() {
        let lexer = Lexer::new('\\');
        let env = table_env();
        let err = |word: &str| lexer.process_word(word, &env).unwrap_err();
        let check = |word: &str, offset: usize, message: &str| {
            let e = err(word);
            assert_eq!(
                (e.offset, e.to_string().as_str()),
                (offset, message),
                "{word:?}"
            );
        };
        check(
            "ab'cd",
            2,
            "unexpected end of statement while looking for matching single-quote",
        );
        check(
            "ab\"cd",
            2,
            "unexpected end of statement while looking for matching double-quote",
        );
        check(
            "é\"$PWD",
            2,
            "unexpected end of statement while looking for matching double-quote",
        );
        check("x${", 1, "syntax error: missing '}'");
        check("x${PWD", 1, "syntax error: missing '}'");
        check("x${PWD:-a", 1, "syntax error: missing '}'");
        check("x${PWD:-${NULL:-'a}", 1, "syntax error: missing '}'");
        check("x${PWD/a", 1, "syntax error: missing '/' in ${}");
        check("x${PWD/a/b", 1, "syntax error: missing '}'");
        check("x${}", 1, "syntax error: bad substitution");
        check("x${:-a}", 1, "syntax error: bad substitution");
        check("x${{a}", 1, "syntax error: bad substitution");
        check("x${PWD:=a}", 6, "unsupported modifier (:=) in substitution");
        check("x${PWD=a}", 6, "unsupported modifier (=) in substitution");
        check("x${PWD:#a}", 6, "unsupported modifier (:#) in substitution");
        check("x${PWD x}", 6, "unsupported modifier ( ) in substitution");
        check("x${XXX?}", 1, "XXX: is not allowed to be unset");
        check("x${XXX:?need it}", 1, "XXX: need it");
        check(
            r"x${PWD#\a}",
            1,
            r"invalid pattern (\a) in substitution: invalid escape '\a'",
        );
        // BuildKit reports the reversed pattern for suffixes.
        check(
            r"x${PWD%b\a}",
            1,
            r"invalid pattern (\ab) in substitution: invalid escape '\a'",
        );
        // An error inside a nested word is reported as it is while input is
        // left, and as the outer `${` being unterminated at the end of input.
        check("x${PWD:-${XXX?}}", 8, "XXX: is not allowed to be unset");
        check("x${PWD:-${XXX?}", 1, "syntax error: missing '}'");
        check("x${PWD:-${}}", 8, "syntax error: bad substitution");
    }

    #[test]
    fn trailing_backslash_in_pattern_is_invalid() {
        let env = [("PWD", "/home"), ("TRAIL", "\\")];
        let err = Lexer::default()
            .process_word("${PWD#$TRAIL}", &env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid pattern (\\) in substitution: invalid escape '\\\u{FFFD}'"
        );
    }

    const STACK_KIB: usize = 512;

    #[test]
    fn nesting_is_limited() {
        let lexer = Lexer::new('\\');
        let env = table_env();
        let nested = |depth: usize| format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
        assert_eq!(
            lexer
                .process_word(&nested(MAX_NESTING), &env)
                .unwrap()
                .value,
            "x"
        );
        let err = lexer
            .process_word(&nested(MAX_NESTING + 1), &env)
            .unwrap_err();
        assert_eq!(err.kind, ShellErrorKind::NestingTooDeep);
        assert_eq!(err.offset, 5 * MAX_NESTING);
        // The deepest nesting allowed fits in a small thread stack.
        let deepest = format!(
            "{}${{A:-${{B#*}}}}{}",
            "${A:-\"".repeat(MAX_NESTING - 2),
            "\"}".repeat(MAX_NESTING - 2)
        );
        let value = std::thread::Builder::new()
            .stack_size(STACK_KIB * 1024)
            .spawn(move || Lexer::new('\\').process_words(&deepest, &[("B", "x y")]))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(value.unwrap(), ["x", "y"]);
        // Unterminated deep nesting fails cleanly too.
        assert!(lexer.process_word(&"${A:-\"".repeat(10_000), &env).is_err());
        assert!(lexer.process_word(&"${".repeat(100_000), &env).is_err());
    }

    #[test]
    fn process_words_keeps_text_before_a_modifier() {
        // Recent BuildKit versions lose "x" here (a shared word buffer); see
        // the module docs.
        let env = [("multi", "a b")];
        let words = Lexer::new('\\')
            .process_words("x${multi:-q}y z", &env)
            .unwrap();
        assert_eq!(words, ["xa", "by", "z"]);
        let words = Lexer::new('\\')
            .process_words(r#"x"${multi:-q}"y z"#, &env)
            .unwrap();
        assert_eq!(words, ["xa by", "z"]);
    }

    #[test]
    fn env_getters() {
        let lexer = Lexer::default();
        let pairs = vec![
            ("A".to_owned(), "1".to_owned()),
            ("A".to_owned(), "2".to_owned()),
        ];
        assert_eq!(lexer.process_word("$A", &pairs).unwrap().value, "2");
        assert_eq!(
            lexer.process_word("$A", &pairs.as_slice()).unwrap().value,
            "2"
        );
        let tree: BTreeMap<String, String> = [("A".to_owned(), "3".to_owned())].into();
        assert_eq!(lexer.process_word("$A", &tree).unwrap().value, "3");
        let upper = |name: &str| Some(name.to_uppercase());
        assert_eq!(
            lexer.process_word("$abc-$_x", &upper).unwrap().value,
            "ABC-_X"
        );
        let none = |_: &str| None;
        assert_eq!(lexer.process_word("[$A]", &none).unwrap().value, "[]");
    }

    #[test]
    fn unicode_names_and_whitespace() {
        let lexer = Lexer::default();
        let env = [("é", "e"), ("١٢", "digits"), ("x", "a\u{3000}b")];
        assert_eq!(lexer.process_word("$é.", &env).unwrap().value, "e.");
        assert_eq!(lexer.process_word("$١٢x", &env).unwrap().value, "digitsx");
        // Combining marks and Nl are neither letters nor digits in Go.
        assert_eq!(
            lexer.process_word("$é\u{301}", &env).unwrap().value,
            "e\u{301}"
        );
        assert_eq!(
            lexer.process_word("$x\u{2160}", &env).unwrap().value,
            "a\u{3000}b\u{2160}"
        );
        assert_eq!(lexer.process_words("$x", &env).unwrap(), ["a", "b"]);
        // A leading byte-order mark is skipped, as by Go's text/scanner.
        assert_eq!(
            lexer.process_word("\u{FEFF}$x", &env).unwrap().value,
            "a\u{3000}b"
        );
        assert_eq!(
            lexer.process_word("a\u{FEFF}", &env).unwrap().value,
            "a\u{FEFF}"
        );
    }

    #[test]
    fn wildcards_do_not_match_newlines() {
        let lexer = Lexer::default();
        let env = [("V", "ab\ncd")];
        assert_eq!(lexer.process_word("${V#*b}", &env).unwrap().value, "\ncd");
        assert_eq!(lexer.process_word("${V##*}", &env).unwrap().value, "\ncd");
        assert_eq!(lexer.process_word("${V#*d}", &env).unwrap().value, "ab\ncd");
        assert_eq!(
            lexer.process_word("${V//?/x}", &env).unwrap().value,
            "xx\nxx"
        );
        assert_eq!(lexer.process_word("${V//*/x}", &env).unwrap().value, "x\nx");
    }

    #[test]
    fn glob_matches_like_go_regexp() {
        // (pattern, greedy, text, from, anchored, expected match in chars)
        type Case<'a> = (&'a str, bool, &'a str, usize, bool, Option<(usize, usize)>);
        let cases: &[Case] = &[
            ("a*", true, "baaa", 0, false, Some((1, 4))),
            ("a*", false, "baaa", 0, false, Some((1, 2))),
            ("*", true, "abc", 0, true, Some((0, 3))),
            ("*", false, "abc", 0, true, Some((0, 0))),
            ("*b*", false, "abcb", 0, true, Some((0, 2))),
            ("*b*", true, "abcb", 0, true, Some((0, 4))),
            ("b", true, "abcb", 2, false, Some((3, 4))),
            ("x", true, "abc", 0, false, None),
            ("", true, "abc", 3, false, Some((3, 3))),
            ("?", true, "", 0, false, None),
        ];
        for &(pattern, greedy, text, from, anchored, expected) in cases {
            let glob = Glob::new(pattern, greedy).unwrap();
            let text: Vec<char> = text.chars().collect();
            assert_eq!(
                glob.find(&text, from, anchored),
                expected,
                "{pattern:?} in {text:?}"
            );
        }
        assert!(Glob::new("\\", true).is_err());
        assert!(Glob::new("a\\b", true).is_err());
        assert!(Glob::new("\\}\\/\\*\\?\\\\", true).is_ok());
        assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
        assert_eq!(reverse_pattern(r"\\\ab"), r"b\a\\");
        assert_eq!(reverse_pattern(r"ab\"), r"\ba");
        assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
    }

    #[test]
    fn glob_replacement_template() {
        let mut out = String::new();
        for (template, expected) in [
            ("$0", "M"),
            ("${0}", "M"),
            ("$$0", "$0"),
            ("$00", ""),
            ("$1", ""),
            ("$x y", " y"),
            ("${x", "${x"),
            ("$", "$"),
            ("$-", "$-"),
            ("a$0b${0}c", "aMc"),
            ("$é", ""),
        ] {
            out.clear();
            expand_template(template, "M", &mut out);
            assert_eq!(out, expected, "{template:?}");
        }
    }

    #[test]
    fn long_inputs_stay_fast() {
        let lexer = Lexer::default();
        let value = "ab".repeat(20_000);
        let env = [("V", value.as_str()), ("P", "*a*a*a*a*a*a*a*a*c")];
        assert_eq!(lexer.process_word("${V#$P}", &env).unwrap().value, value);
        assert_eq!(lexer.process_word("${V%%$P}", &env).unwrap().value, value);
        assert_eq!(
            lexer.process_word("${V//a/}", &env).unwrap().value,
            "b".repeat(20_000)
        );
        assert_eq!(
            lexer.process_word("${V//b*a/-}", &env).unwrap().value,
            "a-b"
        );
        let many_stars = "*".repeat(50_000);
        let env = [("V", "abc"), ("P", many_stars.as_str())];
        assert_eq!(lexer.process_word("${V##$P}", &env).unwrap().value, "");
    }

    /// A small deterministic generator for the robustness test.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        const PIECES: &[&str] = &[
            "$", "{", "}", "${", "$$", ":", "-", "+", "?", "#", "%", "/", "//", "\\", "`", "'",
            "\"", "*", "[", "]", "(", ")", "^", ".", "|", " ", "\t", "\n", "a", "A", "_", "0", "1",
            "@", "!", "=", "PWD", "NULL", "V", "P", "é", "한", "\u{301}", "\u{FEFF}", "\u{3000}",
            "\u{FFFD}", "\0", "${V:-", "${P//", "${V%%", "${NULL:?", "\\}", "\\/",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let random_word = |rng: &mut XorShift, max: usize| -> String {
            let len = rng.below(max);
            (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect()
        };
        for round in 0..20_000 {
            let word = random_word(&mut rng, 24);
            let value = random_word(&mut rng, 8);
            let pattern = random_word(&mut rng, 6);
            let env = [
                ("PWD", "/home"),
                ("NULL", ""),
                ("V", value.as_str()),
                ("P", pattern.as_str()),
            ];
            let flags = round % 16;
            let escape = if round % 32 < 16 { '\\' } else { '`' };
            let lexer = Lexer::new(escape)
                .raw_quotes(flags & 1 != 0)
                .raw_escapes(flags & 2 != 0)
                .skip_process_quotes(flags & 4 != 0)
                .skip_unset_env(flags & 8 != 0);
            let single = lexer.process_word(&word, &env);
            let split = lexer.process_words(&word, &env);
            assert_eq!(single.is_ok(), split.is_ok(), "{word:?}");
            if let Err(err) = single {
                assert!(
                    err.offset <= word.len() && word.is_char_boundary(err.offset),
                    "{word:?}: {err:?}"
                );
                assert!(!err.to_string().is_empty());
            }
        }
    }
}
