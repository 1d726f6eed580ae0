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

mod expand;
mod glob;
#[cfg(test)]
mod tests;
mod unicode;

use expand::Expander;

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
