//! `.dockerignore` files: reading them, matching paths against them, and walking a build
//! context with them, with the semantics of docker/BuildKit (moby `patternmatcher` and
//! `patternmatcher/ignorefile`, and BuildKit's choice of ignore file).
//!
//! Everything here is pure: no file is opened. [`walk`] lists directories through the
//! [`ContextFs`] trait, which the caller implements.
//!
//! # Reading ([`parse_ignore_file`])
//!
//! Line by line (split on `\n`, one trailing `\r` dropped): a UTF-8 BOM is removed from the
//! first line only; a line whose *first character* is `#` is a comment (`  # x` is not a
//! comment but the pattern `# x`); the line is trimmed of Unicode whitespace and skipped when
//! empty; a leading `!` marks an exception and the rest is trimmed again; the pattern is then
//! cleaned like Go's `filepath.Clean` (`./a`, `a/`, `a//b/../b` give `a` and `a/b`) and one
//! leading `/` is removed (`/a` is `a`; `/` alone stays `/` and matches nothing). `..`
//! elements that climb above the context are kept (`../a`) and match nothing.
//! A lone `!` (also `! ` and `!/`) is an error, as is a malformed glob; so is a line longer
//! than Go's `bufio.Scanner` accepts (64 KiB including the newline), since docker fails on it.
//!
//! # Matching ([`Matcher`])
//!
//! Patterns use Go `filepath.Match` syntax on Unix: `*` (any run of characters other than
//! `/`), `?` (one character other than `/`), classes `[a-z]`, `[^a-z]` (only `^` negates:
//! `[!a]` is the class of `!` and `a`, as in Go), and `\` escaping the next character. On top
//! of that `**` matches any number of directories, including none: `**/foo`, `foo/**`,
//! `a/**/b`. A pattern that matches a directory also matches everything beneath it. Patterns
//! are tried in order and the last one that matches a path decides; `!` patterns re-include.
//! The context root itself is never excluded. [`Matcher::is_excluded`] follows the way
//! `docker build` applies this while walking the context, which differs in one corner from
//! moby's standalone `MatchesOrParentMatches` (also offered, as
//! [`Matcher::matches_or_parent_matches`]).
//!
//! moby does not really use `filepath.Match`: it turns each pattern into a literal
//! comparison, a prefix test, a suffix test or a regular expression, and a few results follow
//! from that, which this module reproduces:
//! - a pattern starting with `**` and otherwise free of wildcards is a plain suffix test, so
//!   `**file` matches `myfile` and `**/a` matches `a`, `x/a` (but not `xa`);
//! - `**` not followed by `/` in the middle of a pattern still only spans whole directories:
//!   `a/**b` matches `a/b` and `a/x/b` but not `a/xb`; `**` never spans a newline;
//! - a class with a reversed range (`[z-a]`, `[Local-Only]`) passes Go's syntax check but
//!   fails docker's regular expression at match time, failing the build: here it is an error
//!   when the matcher is built;
//! - in a pattern that holds a wildcard, a bare `^` is a regex anchor, so `a^b*` matches
//!   nothing, while `a^b` alone is compared literally.
//!
//! Where docker's regex translation departs further from `filepath.Match` this module keeps
//! `filepath.Match` meaning: `*` or `?` inside a class, and `\` before a letter or digit
//! (docker gives `\d`, `\w`, `\b`… their regex meaning and fails on others).
//!
//! # What the caller still does
//!
//! - Choosing the ignore file: [`ignore_file_candidates`].
//! - docker sends the Dockerfile and the ignore file to the builder even when the patterns
//!   exclude them (`COPY`/`ADD` still cannot see them): the matcher knows nothing of that, so
//!   the caller must add those two files itself.

mod matcher;
#[cfg(test)]
mod tests;
mod walk;

use matcher::compile;
pub use matcher::Matcher;
pub use walk::{ignore_file_candidates, walk, ContextFs, DirEntry, WalkStats};

use std::fmt;

/// The longest line, newline included, that Go's `bufio.Scanner` (used by docker) accepts.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// One pattern of an ignore file, as docker's `ignorefile.ReadAll` leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The 1-based line of the ignore file the pattern came from; 0 when it was not read from
    /// a file.
    pub line: usize,
    /// Whether the line started with `!`: a path this pattern matches is included again.
    pub exception: bool,
    /// The cleaned pattern, without the `!` (for example `a/b` for the line `! /a//b/`).
    pub text: String,
}

impl Pattern {
    /// A pattern that did not come from a file (its [`line`](Pattern::line) is 0).
    pub fn new(text: impl Into<String>, exception: bool) -> Self {
        Pattern {
            line: 0,
            exception,
            text: text.into(),
        }
    }
}

impl fmt::Display for Pattern {
    /// The pattern in docker's form: `!` then the text for an exception.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exception {
            f.write_str("!")?;
        }
        f.write_str(&self.text)
    }
}

/// The patterns of an ignore file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreFile {
    /// The patterns, comments and blank lines left out.
    pub patterns: Vec<Pattern>,
}

impl IgnoreFile {
    /// Builds the matcher for these patterns.
    pub fn matcher(&self) -> Result<Matcher, IgnoreError> {
        Matcher::new(&self.patterns)
    }
}

/// A pattern docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// A `!` with no pattern after it.
    #[error("{}illegal exclusion pattern \"!\": write the path to re-include after the `!`", at_line(*line))]
    LoneExclamation {
        /// The 1-based line, when the pattern came from a file.
        line: Option<usize>,
    },
    /// A pattern that is not valid glob syntax.
    #[error("{}bad pattern {pattern:?}: {reason}", at_line(*line))]
    BadPattern {
        /// The 1-based line, when the pattern came from a file.
        line: Option<usize>,
        /// The pattern, cleaned, without its `!`.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A line longer than docker can read.
    #[error("line {line}: longer than 65536 bytes, which docker cannot read either")]
    LineTooLong {
        /// The 1-based line.
        line: usize,
    },
}

impl IgnoreError {
    /// The 1-based line of the ignore file at fault, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            IgnoreError::LoneExclamation { line } | IgnoreError::BadPattern { line, .. } => *line,
            IgnoreError::LineTooLong { line } => Some(*line),
        }
    }
}

fn at_line(line: Option<usize>) -> String {
    match line {
        Some(n) => format!("line {n}: "),
        None => String::new(),
    }
}

/// Reads an ignore file the way docker's `ignorefile.ReadAll` does (see the module docs), and
/// checks every pattern as the matcher would, so that errors carry their line.
pub fn parse_ignore_file(text: &str) -> Result<IgnoreFile, IgnoreError> {
    let mut patterns = Vec::new();
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = index + 1;
        let (body, has_newline) = match raw.strip_suffix('\n') {
            Some(body) => (body, true),
            None => (raw, false),
        };
        if (has_newline && raw.len() > MAX_LINE_BYTES)
            || (!has_newline && raw.len() >= MAX_LINE_BYTES)
        {
            return Err(IgnoreError::LineTooLong { line });
        }
        let mut body = body.strip_suffix('\r').unwrap_or(body);
        if index == 0 {
            body = body.strip_prefix('\u{feff}').unwrap_or(body);
        }
        if body.starts_with('#') {
            continue;
        }
        let trimmed = body.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (exception, rest) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        let mut text = String::new();
        if !rest.is_empty() {
            text = kiln_oci::path::clean(rest);
            if text.len() > 1 && text.starts_with('/') {
                text.remove(0);
            }
        }
        let pattern = Pattern {
            line,
            exception,
            text,
        };
        compile(&pattern.to_string(), Some(line))?;
        patterns.push(pattern);
    }
    Ok(IgnoreFile { patterns })
}
