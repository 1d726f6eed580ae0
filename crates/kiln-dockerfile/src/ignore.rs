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

/// Decides which paths of a build context an ignore file excludes (moby's
/// `PatternMatcher.MatchesOrParentMatches`).
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    rules: Vec<Rule>,
    has_exceptions: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    kind: Kind,
}

/// How moby ends up comparing a pattern with a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// The path equals the pattern.
    Exact(String),
    /// The path starts with the pattern minus its trailing `**`.
    Prefix(String),
    /// The path ends with the pattern minus its leading `**`, or equals that minus its `/`.
    Suffix(String),
    /// Anything else, matched like moby's regular expression.
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// One given character.
    Lit(char),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` followed by more pattern, regex `(.*/)?`: nothing, or a run of characters without
    /// a newline ending in `/`.
    AnyDirs,
    /// `**` ending a pattern that is not a plain prefix, regex `.*`: a run without newline.
    AnyTail,
    /// A bare `^`, which moby leaves to the regex as an anchor: matches only at the start.
    Anchor,
    /// `[...]`: one character in (or, negated, not in) the class.
    Class(Class),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

impl Matcher {
    /// Builds a matcher from patterns, typically [`IgnoreFile::patterns`]. Each pattern is
    /// processed like moby's `patternmatcher.New` does with `!` then the text: trimmed,
    /// cleaned, split from its `!`, and checked.
    pub fn new(patterns: &[Pattern]) -> Result<Self, IgnoreError> {
        let mut matcher = Matcher::default();
        for pattern in patterns {
            let line = (pattern.line > 0).then_some(pattern.line);
            matcher.push(compile(&pattern.to_string(), line)?);
        }
        Ok(matcher)
    }

    /// Builds a matcher from patterns in docker's string form (`!` first for an exception),
    /// exactly as moby's `patternmatcher.New` takes them.
    pub fn from_strings<I, S>(patterns: I) -> Result<Self, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut matcher = Matcher::default();
        for pattern in patterns {
            matcher.push(compile(pattern.as_ref(), None)?);
        }
        Ok(matcher)
    }

    fn push(&mut self, rule: Option<Rule>) {
        if let Some(rule) = rule {
            self.has_exceptions |= rule.exception;
            self.rules.push(rule);
        }
    }

    /// Whether the context-relative, slash-separated path `rel_path` (clean, no leading `/`)
    /// is excluded from the build context, as `docker build` decides it while walking the
    /// context (BuildKit's fsutil walker and docker's own tar code, with moby's
    /// `MatchesUsingParentResults`): the path's directories are matched first, top down, and
    /// each pattern that matched a directory counts as matching everything beneath it; the
    /// last pattern that matches decides. `""` and `.`, the context root, are never excluded.
    ///
    /// This equals [`matches_or_parent_matches`](Matcher::matches_or_parent_matches) except
    /// for one corner, where docker's walk skips a pattern for a directory because it could
    /// not change that directory's result: with `a/*` then `!a`, the walk excludes `a/x`
    /// (`!a` was not tried on `a`, which was not excluded), and with `a`, `!a/x`, `a` it
    /// includes `a/x` (the second `a` was not tried on `a`, already excluded).
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        if rel_path.is_empty() || rel_path == "." || self.rules.is_empty() {
            return false;
        }
        let parent = go_dir(rel_path);
        let mut hits: Option<Vec<bool>> = None;
        for dir in ancestors(&parent) {
            hits = Some(self.evaluate(dir, hits.as_deref()).1);
        }
        self.evaluate(rel_path, hits.as_deref()).0
    }

    /// moby's `PatternMatcher.MatchesOrParentMatches`, which judges a path on its own: the
    /// last pattern that matches the path or any of its parent directories decides. docker
    /// does not use it to filter the build context; see [`is_excluded`](Matcher::is_excluded).
    pub fn matches_or_parent_matches(&self, rel_path: &str) -> bool {
        if rel_path.is_empty() || rel_path == "." {
            return false;
        }
        self.evaluate(rel_path, None).0
    }

    /// moby's `MatchesUsingParentResults`: whether `path` is excluded, and which patterns
    /// count as matching it for its entries. With no results for the parent, every parent
    /// directory of `path` is tried (as `MatchesOrParentMatches` does).
    fn evaluate(&self, path: &str, parent_hits: Option<&[bool]>) -> (bool, Vec<bool>) {
        let mut hits = vec![false; self.rules.len()];
        let mut excluded = false;
        let mut parents: Option<Vec<&str>> = None;
        let parent = if parent_hits.is_none() {
            go_dir(path)
        } else {
            String::new()
        };
        for (i, rule) in self.rules.iter().enumerate() {
            let mut hit = parent_hits.is_some_and(|p| p[i]);
            if !hit {
                // An exclusion cannot change an excluded path, nor an exception an included
                // one: moby does not try them (and so does not record them as hits).
                if rule.exception != excluded {
                    continue;
                }
                hit = rule.kind.matches(path);
                if !hit && parent_hits.is_none() {
                    let parents = parents.get_or_insert_with(|| ancestors(&parent).collect());
                    hit = parents.iter().any(|p| rule.kind.matches(p));
                }
            }
            hits[i] = hit;
            if hit {
                excluded = !rule.exception;
            }
        }
        (excluded, hits)
    }

    /// Whether a walker may leave out the directory `rel_dir` and everything beneath it
    /// without looking inside: it is excluded, and no exception pattern can match any path
    /// below it, so nothing beneath it can be included again. Conservative: it may say
    /// `false` for a directory whose content all turns out excluded.
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        self.is_excluded(rel_dir) && !self.exception_may_match_below(rel_dir)
    }

    /// Whether any pattern is an exception (`!`).
    pub fn has_exceptions(&self) -> bool {
        self.has_exceptions
    }

    fn exception_may_match_below(&self, rel_dir: &str) -> bool {
        if !self.has_exceptions {
            return false;
        }
        let dir_slash = format!("{rel_dir}/");
        self.rules
            .iter()
            .any(|rule| rule.exception && rule.kind.may_match_below(&dir_slash))
    }

    /// moby's `MatchesExact`: no parent-directory matching.
    #[cfg(test)]
    fn matches_exact(&self, path: &str) -> bool {
        let mut matched = false;
        for rule in &self.rules {
            if rule.exception == matched && rule.kind.matches(path) {
                matched = !rule.exception;
            }
        }
        matched
    }
}

/// Turns one pattern in docker's string form into a rule, as `patternmatcher.New` does;
/// `Ok(None)` for a blank pattern.
fn compile(raw: &str, line: Option<usize>) -> Result<Option<Rule>, IgnoreError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let cleaned = kiln_oci::path::clean(trimmed);
    let (exception, glob) = match cleaned.strip_prefix('!') {
        Some("") => return Err(IgnoreError::LoneExclamation { line }),
        Some(rest) => (true, rest),
        None => (false, cleaned.as_str()),
    };
    let bad = |reason: String| IgnoreError::BadPattern {
        line,
        pattern: glob.to_string(),
        reason,
    };
    check_syntax(glob).map_err(bad)?;
    let kind = Kind::compile(glob).map_err(bad)?;
    Ok(Some(Rule { exception, kind }))
}

/// Go's `filepath.Match` syntax check (Unix): escapes need a character, classes must close
/// and hold well-formed ranges.
fn check_syntax(glob: &str) -> Result<(), String> {
    let chars: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 == chars.len() => {
                return Err("a `\\` at the end escapes nothing".to_string())
            }
            '\\' => i += 2,
            '[' => {
                i += 1;
                parse_class(&chars, &mut i)?;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Parses a class body after its `[`, leaving `i` after the closing `]`.
fn parse_class(chars: &[char], i: &mut usize) -> Result<Class, String> {
    let negated = chars.get(*i) == Some(&'^');
    if negated {
        *i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(*i) == Some(&']') && !ranges.is_empty() {
            *i += 1;
            return Ok(Class { negated, ranges });
        }
        let lo = class_char(chars, i)?;
        let mut hi = lo;
        if chars.get(*i) == Some(&'-') {
            *i += 1;
            hi = class_char(chars, i)?;
        }
        ranges.push((lo, hi));
    }
}

/// One (possibly escaped) character of a class, which must not end the pattern.
fn class_char(chars: &[char], i: &mut usize) -> Result<char, String> {
    match chars.get(*i) {
        None => return Err("unclosed character class `[`".to_string()),
        Some('-') => {
            return Err(
                "a `-` in a character class must be escaped (`\\-`) or form a range".to_string(),
            )
        }
        Some(']') => {
            return Err("empty character class or range end: escape `]` as `\\]`".to_string())
        }
        Some('\\') => *i += 1,
        Some(_) => {}
    }
    let c = *chars
        .get(*i)
        .ok_or_else(|| "unclosed character class `[`".to_string())?;
    *i += 1;
    if *i == chars.len() {
        return Err("unclosed character class `[`".to_string());
    }
    Ok(c)
}

impl Kind {
    /// moby's `Pattern.compile` for `/`: decides the kind and builds the tokens of the regex.
    /// The glob has passed [`check_syntax`].
    fn compile(glob: &str) -> Result<Kind, String> {
        #[derive(PartialEq)]
        enum Detected {
            Exact,
            Prefix,
            Suffix,
            Glob,
        }
        let chars: Vec<char> = glob.chars().collect();
        let mut toks = Vec::new();
        let mut detected = Detected::Exact;
        let mut i = 0;
        let mut step = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i == chars.len() {
                        if detected == Detected::Exact {
                            detected = Detected::Prefix;
                        } else {
                            toks.push(Tok::AnyTail);
                            detected = Detected::Glob;
                        }
                    } else {
                        toks.push(Tok::AnyDirs);
                        detected = Detected::Glob;
                    }
                    if step == 0 {
                        detected = Detected::Suffix;
                    }
                }
                '*' => {
                    toks.push(Tok::Star);
                    detected = Detected::Glob;
                }
                '?' => {
                    toks.push(Tok::AnyChar);
                    detected = Detected::Glob;
                }
                '\\' => match chars.get(i) {
                    Some(&next) => {
                        toks.push(Tok::Lit(next));
                        i += 1;
                        detected = Detected::Glob;
                    }
                    None => toks.push(Tok::Lit('\\')),
                },
                '[' => {
                    let class = parse_class(&chars, &mut i)?;
                    if let Some(&(lo, hi)) = class.ranges.iter().find(|(lo, hi)| lo > hi) {
                        return Err(format!(
                            "character range {lo}-{hi} is reversed (docker fails on it when matching)"
                        ));
                    }
                    toks.push(Tok::Class(class));
                    detected = Detected::Glob;
                }
                ']' => {
                    toks.push(Tok::Lit(']'));
                    detected = Detected::Glob;
                }
                '^' => toks.push(Tok::Anchor),
                c => toks.push(Tok::Lit(c)),
            }
            step += 1;
        }
        Ok(match detected {
            Detected::Exact => Kind::Exact(glob.to_string()),
            Detected::Prefix => Kind::Prefix(glob[..glob.len() - 2].to_string()),
            Detected::Suffix => Kind::Suffix(glob[2..].to_string()),
            Detected::Glob => Kind::Glob(toks),
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Kind::Exact(lit) => path == lit,
            Kind::Prefix(lit) => path.starts_with(lit.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Glob(toks) => Nfa::run(toks, path).is_some_and(|nfa| nfa.accepts()),
        }
    }

    /// Whether some path `dir_slash` + (non-empty rest) could match. May say `true` wrongly,
    /// never `false` wrongly.
    fn may_match_below(&self, dir_slash: &str) -> bool {
        match self {
            Kind::Exact(lit) => lit.len() > dir_slash.len() && lit.starts_with(dir_slash),
            Kind::Prefix(lit) => lit.starts_with(dir_slash) || dir_slash.starts_with(lit.as_str()),
            // Any rest ending with the suffix matches.
            Kind::Suffix(_) => true,
            Kind::Glob(toks) => Nfa::run(toks, dir_slash).is_some_and(|nfa| nfa.can_continue()),
        }
    }
}

/// The states of the regex of a [`Kind::Glob`] after reading some text. State `i` means
/// "about to match token `i`"; `in_dirs[i]` means "inside the `.*/` of token `i`
/// ([`Tok::AnyDirs`])".
struct Nfa<'a> {
    toks: &'a [Tok],
    at: Vec<bool>,
    in_dirs: Vec<bool>,
}

impl<'a> Nfa<'a> {
    /// Reads `text`; `None` as soon as no state is left.
    fn run(toks: &'a [Tok], text: &str) -> Option<Self> {
        let n = toks.len();
        let mut nfa = Nfa {
            toks,
            at: vec![false; n + 1],
            in_dirs: vec![false; n],
        };
        nfa.at[0] = true;
        nfa.close(true);
        let mut at = vec![false; n + 1];
        let mut in_dirs = vec![false; n];
        for c in text.chars() {
            at.iter_mut().for_each(|s| *s = false);
            in_dirs.iter_mut().for_each(|s| *s = false);
            for (i, tok) in toks.iter().enumerate() {
                if nfa.in_dirs[i] && c != '\n' {
                    in_dirs[i] = true;
                    at[i + 1] |= c == '/';
                }
                if !nfa.at[i] {
                    continue;
                }
                match tok {
                    Tok::Lit(l) => at[i + 1] |= c == *l,
                    Tok::AnyChar => at[i + 1] |= c != '/',
                    Tok::Class(class) => at[i + 1] |= class.contains(c),
                    Tok::Star => at[i] |= c != '/',
                    Tok::AnyTail => at[i] |= c != '\n',
                    Tok::AnyDirs if c != '\n' => {
                        in_dirs[i] = true;
                        at[i + 1] |= c == '/';
                    }
                    Tok::AnyDirs | Tok::Anchor => {}
                }
            }
            std::mem::swap(&mut nfa.at, &mut at);
            std::mem::swap(&mut nfa.in_dirs, &mut in_dirs);
            nfa.close(false);
            if !nfa.at.iter().chain(&nfa.in_dirs).any(|&s| s) {
                return None;
            }
        }
        Some(nfa)
    }

    /// Follows the moves that read nothing (tokens that may match empty text).
    fn close(&mut self, at_start: bool) {
        for (i, tok) in self.toks.iter().enumerate() {
            if self.at[i] {
                match tok {
                    Tok::Star | Tok::AnyTail | Tok::AnyDirs => self.at[i + 1] = true,
                    Tok::Anchor if at_start => self.at[i + 1] = true,
                    _ => {}
                }
            }
        }
    }

    fn accepts(&self) -> bool {
        self.at[self.toks.len()]
    }

    /// Whether some state still needs more text (so a longer text could match).
    fn can_continue(&self) -> bool {
        self.at[..self.toks.len()]
            .iter()
            .chain(&self.in_dirs)
            .any(|&s| s)
    }
}

/// Go's `path.Dir`: everything before the last `/`, cleaned.
fn go_dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => kiln_oci::path::clean(&path[..=i]),
        None => ".".to_string(),
    }
}

/// The directories of a cleaned parent path, top down (Go's `strings.Split` then joins
/// of each prefix): nothing for `.`, else `a`, `a/b`, … up to `dir` itself.
fn ancestors(dir: &str) -> impl Iterator<Item = &str> {
    let all = if dir == "." { "" } else { dir };
    all.match_indices('/')
        .map(move |(i, _)| &all[..i])
        .chain((!all.is_empty()).then_some(all))
}

/// The ignore files to try, in order, for a Dockerfile at `dockerfile_rel` (slash-separated,
/// relative to the context): `<Dockerfile path>.dockerignore` beside the Dockerfile, then
/// `.dockerignore` at the context root. The first that exists applies, even when empty;
/// BuildKit does not merge them. For a Dockerfile read from stdin (`""` or `-`) only the
/// root `.dockerignore` applies.
///
/// When the Dockerfile lies outside the context, the caller should look for
/// `<Dockerfile path>.dockerignore` beside it instead of the first candidate here.
pub fn ignore_file_candidates(dockerfile_rel: &str) -> Vec<String> {
    let root = ".dockerignore".to_string();
    if dockerfile_rel.is_empty() || dockerfile_rel == "-" {
        return vec![root];
    }
    let cleaned = kiln_oci::path::clean(dockerfile_rel);
    let cleaned = cleaned.strip_prefix('/').unwrap_or(&cleaned);
    if cleaned.is_empty() || cleaned == "." {
        return vec![root];
    }
    vec![format!("{cleaned}.dockerignore"), root]
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (one path component, no `/`).
    pub name: String,
    /// Whether it is a directory. Symbolic links are not followed: a link to a directory is
    /// not a directory.
    pub is_dir: bool,
}

/// Directory listings of a build context, for [`walk`].
pub trait ContextFs {
    /// What a listing can fail with.
    type Error;
    /// The entries of the directory `rel_dir` (slash-separated, relative to the context; `""`
    /// for the context root), in any order, without `.` and `..`.
    fn read_dir(&self, rel_dir: &str) -> Result<Vec<DirEntry>, Self::Error>;
}

/// What a [`walk`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Directories listed with [`ContextFs::read_dir`], the root included.
    pub dirs_read: usize,
    /// Excluded directories left out whole, without listing them.
    pub dirs_skipped: usize,
    /// Entries passed to the visitor.
    pub visited: usize,
    /// Excluded entries other than skipped directories (files seen and left out).
    pub excluded: usize,
}

/// Walks the context depth first, entries of each directory in byte order of their names
/// (as BuildKit's walker does), and calls `visit` with the path and entry of everything
/// included.
///
/// An excluded directory is left out whole unless an exception could include something
/// beneath it ([`Matcher::can_skip_dir`]); then it is listed, and when something beneath it
/// is included, the excluded directories above it are visited just before it (as BuildKit
/// sends them), so `dir` + `!dir/keep` visits `dir` then `dir/keep` and nothing else.
pub fn walk<F: ContextFs>(
    fs: &F,
    matcher: &Matcher,
    mut visit: impl FnMut(&str, &DirEntry),
) -> Result<WalkStats, F::Error> {
    let mut walker = Walker {
        fs,
        matcher,
        visit: &mut visit,
        pending: Vec::new(),
        stats: WalkStats::default(),
    };
    walker.walk_dir("", None)?;
    Ok(walker.stats)
}

struct Walker<'a, F, V> {
    fs: &'a F,
    matcher: &'a Matcher,
    visit: &'a mut V,
    /// The directories above the current one, and whether each was visited.
    pending: Vec<(String, DirEntry, bool)>,
    stats: WalkStats,
}

impl<F: ContextFs, V: FnMut(&str, &DirEntry)> Walker<'_, F, V> {
    /// Walks `dir`, given which patterns matched it (`None` for the root).
    fn walk_dir(&mut self, dir: &str, hits: Option<&[bool]>) -> Result<(), F::Error> {
        let mut entries = self.fs.read_dir(dir)?;
        self.stats.dirs_read += 1;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            let path = if dir.is_empty() {
                entry.name.clone()
            } else {
                format!("{dir}/{}", entry.name)
            };
            let (excluded, entry_hits) = self.matcher.evaluate(&path, hits);
            if !excluded {
                self.visit_pending();
                (self.visit)(&path, &entry);
                self.stats.visited += 1;
            }
            if entry.is_dir {
                if excluded && !self.matcher.exception_may_match_below(&path) {
                    self.stats.dirs_skipped += 1;
                    continue;
                }
                self.pending.push((path.clone(), entry, !excluded));
                let walked = self.walk_dir(&path, Some(&entry_hits));
                self.pending.pop();
                walked?;
            } else if excluded {
                self.stats.excluded += 1;
            }
        }
        Ok(())
    }

    fn visit_pending(&mut self) {
        for (path, entry, visited) in &mut self.pending {
            if !*visited {
                (self.visit)(path, entry);
                self.stats.visited += 1;
                *visited = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    fn parse_strings(text: &str) -> Vec<String> {
        parse_ignore_file(text)
            .unwrap()
            .patterns
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn matcher(patterns: &[&str]) -> Matcher {
        Matcher::from_strings(patterns).unwrap()
    }

    // ---- reading ----------------------------------------------------------------------

    #[test]
    fn read_all_like_moby() {
        // moby/patternmatcher ignorefile_test.go TestReadAll, without the lone `!` lines,
        // which ReadAll keeps and patternmatcher.New then rejects (tested below).
        let content =
            "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n";
        assert_eq!(
            parse_strings(content),
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path"
            ]
        );
        let file = parse_ignore_file(content).unwrap();
        let lines: Vec<usize> = file.patterns.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 2, 3, 5, 7]);
        assert_eq!(parse_ignore_file("").unwrap(), IgnoreFile::default());
    }

    #[test]
    fn cleaning() {
        let cases = [
            ("a", "a"),
            ("/a", "a"),
            ("./a", "a"),
            ("a/", "a"),
            ("a//b/../b", "a/b"),
            ("a/./b/", "a/b"),
            ("//a", "a"),
            ("/", "/"),
            ("//", "/"),
            (".", "."),
            ("./", "."),
            ("a/..", "."),
            ("..", ".."),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("/../a", "a"),
            ("/..", "/"),
            ("**/", "**"),
            ("dir/**/", "dir/**"),
            ("  spaced  ", "spaced"),
            ("\tfoo\t", "foo"),
            ("foo\r", "foo"),
            ("\u{a0}foo\u{3000}", "foo"),
            ("!a/", "!a"),
            ("! /inverted/abs/path", "!inverted/abs/path"),
            ("  !  spaced/../x  ", "!x"),
            ("!./a//b", "!a/b"),
            ("!!a", "!!a"),
            ("a b", "a b"),
        ];
        for (line, want) in cases {
            assert_eq!(parse_strings(line), [want], "line {line:?}");
        }
    }

    #[test]
    fn comments_blank_lines_and_bom() {
        assert!(parse_strings("# comment\n\n   \n\t\n#!not-an-exception\n").is_empty());
        // Only a `#` in the first column starts a comment.
        assert_eq!(parse_strings("  # not a comment"), ["# not a comment"]);
        assert_eq!(parse_strings("a # b"), ["a # b"]);
        // The BOM goes from the first line only, before the comment test.
        assert_eq!(parse_strings("\u{feff}# c\nx"), ["x"]);
        assert_eq!(parse_strings("\u{feff}foo\nbar"), ["foo", "bar"]);
        assert_eq!(parse_strings("foo\n\u{feff}bar"), ["foo", "\u{feff}bar"]);
        // CRLF.
        assert_eq!(parse_strings("a\r\n# c\r\n\r\n!b\r\n"), ["a", "!b"]);
        let file = parse_ignore_file("a\r\n# c\r\n\r\n!b\r\n").unwrap();
        assert_eq!(file.patterns[1].line, 4);
        assert!(file.patterns[1].exception);
        assert_eq!(file.patterns[1].text, "b");
    }

    #[test]
    fn lone_exclamation_is_an_error() {
        for (text, line) in [
            ("a\n!", 2),
            ("! ", 1),
            ("x\n\n!  \n", 3),
            ("!/", 1),
            ("! //", 1),
        ] {
            let err = parse_ignore_file(text).unwrap_err();
            assert_eq!(
                err,
                IgnoreError::LoneExclamation { line: Some(line) },
                "{text:?}"
            );
            assert_eq!(err.line(), Some(line));
        }
        assert!(matches!(
            Matcher::from_strings(["!"]),
            Err(IgnoreError::LoneExclamation { line: None })
        ));
        // `!.` and `!..` are patterns (that match nothing).
        assert_eq!(parse_strings("!.\n!.."), ["!.", "!.."]);
    }

    #[test]
    fn bad_patterns_name_the_pattern_and_line() {
        let err = parse_ignore_file("ok\n!src/[abc\n").unwrap_err();
        match &err {
            IgnoreError::BadPattern { line, pattern, .. } => {
                assert_eq!(*line, Some(2));
                assert_eq!(pattern, "src/[abc");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("line 2: bad pattern \"src/[abc\""),
            "{err}"
        );
        // moby issue 52203: passes Go's syntax check, fails docker's regex; an error here.
        let err = parse_ignore_file("[Local-Only]/").unwrap_err();
        assert!(
            matches!(err, IgnoreError::BadPattern { line: Some(1), .. }),
            "{err:?}"
        );
        assert!(Matcher::from_strings(["[z-a]"]).is_err());
        assert!(Matcher::from_strings(["[a-a]"]).is_ok());
        let patterns = [Pattern {
            line: 7,
            exception: true,
            text: "x\\".into(),
        }];
        assert_eq!(Matcher::new(&patterns).unwrap_err().line(), Some(7));
        assert_eq!(
            Matcher::new(&[Pattern::new("[", false)])
                .unwrap_err()
                .line(),
            None
        );
    }

    #[test]
    fn overlong_lines() {
        let ok = format!("{}\nb", "a".repeat(MAX_LINE_BYTES - 1));
        assert_eq!(parse_ignore_file(&ok).unwrap().patterns.len(), 2);
        let ok_last = "a".repeat(MAX_LINE_BYTES - 1);
        assert_eq!(parse_ignore_file(&ok_last).unwrap().patterns.len(), 1);
        let long = format!("b\n{}\n", "a".repeat(MAX_LINE_BYTES));
        assert_eq!(
            parse_ignore_file(&long).unwrap_err(),
            IgnoreError::LineTooLong { line: 2 }
        );
        let long_last = "a".repeat(MAX_LINE_BYTES);
        assert_eq!(parse_ignore_file(&long_last).unwrap_err().line(), Some(1));
        let long_crlf = format!("{}\r\n", "a".repeat(MAX_LINE_BYTES - 1));
        assert!(parse_ignore_file(&long_crlf).is_err());
    }

    // ---- matching: moby's own tables ----------------------------------------------------

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Want {
        Fail,
        Exact,
        Inexact,
    }

    #[test]
    fn moby_matches_table() {
        use Want::*;
        // moby/patternmatcher patternmatcher_test.go TestMatches (plus its Unix-only cases).
        let tests: &[(&str, &str, Want)] = &[
            ("**", "file", Exact),
            ("**", "file/", Exact),
            ("**/", "file", Exact),
            ("**/", "file/", Exact),
            ("**", "/", Exact),
            ("**/", "/", Exact),
            ("**", "dir/file", Exact),
            ("**/", "dir/file", Exact),
            ("**", "dir/file/", Exact),
            ("**/", "dir/file/", Exact),
            ("**/**", "dir/file", Exact),
            ("**/**", "dir/file/", Exact),
            ("dir/**", "dir/file", Exact),
            ("dir/**", "dir/file/", Exact),
            ("dir/**", "dir/dir2/file", Exact),
            ("dir/**", "dir/dir2/file/", Exact),
            ("**/dir", "dir", Exact),
            ("**/dir", "dir/file", Inexact),
            ("**/dir2/*", "dir/dir2/file", Exact),
            ("**/dir2/*", "dir/dir2/file/", Inexact),
            ("**/dir2/**", "dir/dir2/dir3/file", Exact),
            ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
            ("**file", "file", Exact),
            ("**file", "dir/file", Exact),
            ("**/file", "dir/file", Exact),
            ("**file", "dir/dir/file", Exact),
            ("**/file", "dir/dir/file", Exact),
            ("**/file*", "dir/dir/file", Exact),
            ("**/file*", "dir/dir/file.txt", Exact),
            ("**/file*txt", "dir/dir/file.txt", Exact),
            ("**/file*.txt", "dir/dir/file.txt", Exact),
            ("**/file*.txt*", "dir/dir/file.txt", Exact),
            ("**/**/*.txt", "dir/dir/file.txt", Exact),
            ("**/**/*.txt2", "dir/dir/file.txt", Fail),
            ("**/*.txt", "file.txt", Exact),
            ("**/**/*.txt", "file.txt", Exact),
            ("a**/*.txt", "a/file.txt", Exact),
            ("a**/*.txt", "a/dir/file.txt", Exact),
            ("a**/*.txt", "a/dir/dir/file.txt", Exact),
            ("a/*.txt", "a/dir/file.txt", Fail),
            ("a/*.txt", "a/file.txt", Exact),
            ("a/*.txt**", "a/file.txt", Exact),
            ("a[b-d]e", "ae", Fail),
            ("a[b-d]e", "ace", Exact),
            ("a[b-d]e", "aae", Fail),
            ("a[^b-d]e", "aze", Exact),
            (".*", ".foo", Exact),
            (".*", "foo", Fail),
            ("abc.def", "abcdef", Fail),
            ("abc.def", "abc.def", Exact),
            ("abc.def", "abcZdef", Fail),
            ("abc?def", "abcZdef", Exact),
            ("abc?def", "abcdef", Fail),
            ("**/foo/bar", "foo/bar", Exact),
            ("**/foo/bar", "dir/foo/bar", Exact),
            ("**/foo/bar", "dir/dir2/foo/bar", Exact),
            ("abc/**", "abc", Fail),
            ("abc/**", "abc/def", Exact),
            ("abc/**", "abc/def/ghi", Exact),
            ("**/.foo", ".foo", Exact),
            ("**/.foo", "bar.foo", Fail),
            ("a(b)c/def", "a(b)c/def", Exact),
            ("a(b)c/def", "a(b)c/xyz", Fail),
            ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                Exact,
            ),
            (
                "dist/*.whl",
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                Exact,
            ),
            ("a\\\\", "a\\", Exact),
            ("a\\*b", "a*b", Exact),
        ];
        for &(pattern, text, want) in tests {
            let m = matcher(&[pattern]);
            assert_eq!(
                m.matches_exact(text),
                want == Exact,
                "exact: {pattern:?} {text:?}"
            );
            assert_eq!(
                m.matches_or_parent_matches(text),
                want != Fail,
                "or-parent: {pattern:?} {text:?}"
            );
            assert_eq!(
                m.is_excluded(text),
                want != Fail,
                "or-parent: {pattern:?} {text:?}"
            );
        }
        let multi: &[(&[&str], &str, bool)] = &[
            (&["**", "!util/docker/web"], "util/docker/web/foo", false),
            (
                &["**", "!util/docker/web", "util/docker/web/foo"],
                "util/docker/web/foo",
                true,
            ),
            (
                &[
                    "**",
                    "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                ],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
            (
                &["**", "!dist/*.whl"],
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                false,
            ),
        ];
        for &(patterns, text, want) in multi {
            assert_eq!(
                matcher(patterns).matches_or_parent_matches(text),
                want,
                "{patterns:?} {text:?}"
            );
            assert_eq!(
                matcher(patterns).is_excluded(text),
                want,
                "{patterns:?} {text:?}"
            );
        }
    }

    #[test]
    fn moby_single_pattern_tests() {
        // The small tests at the top of patternmatcher_test.go.
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*"], "fileutils.go", true),
            (&["*.go"], "fileutils.go", true),
            (&["!fileutils.go", "*.go"], "fileutils.go", true),
            (&["docs", "!docs/README.md"], "docs/README.md", false),
            (&["docs/", "!docs/README.md"], "docs/README.md", false),
            (&["docs/*", "!docs/README.md"], "docs/README.md", false),
            (&["*.go", "!fileutils.go"], "fileutils.go", false),
            (&["*.go"], ".", false),
            (&[], "/any/path/there", false),
            (&["docs", "config", ""], "config", true),
            (&["docs", "  !docs/README.md"], "docs/README.md", false),
            (&["docs", "!docs/README.md  "], "docs/README.md", false),
        ];
        for &(patterns, text, want) in cases {
            assert_eq!(
                matcher(patterns).is_excluded(text),
                want,
                "{patterns:?} {text:?}"
            );
        }
        assert!(matcher(&["docs", "  !docs/README.md"]).has_exceptions());
        assert!(!matcher(&["docs", "config"]).has_exceptions());
        assert!(Matcher::from_strings(["["]).is_err());
    }

    #[test]
    fn go_filepath_match_table() {
        // Go's filepath.Match tests as moby runs them (TestMatch): (pattern, path, match, err).
        let tests: &[(&str, &str, bool, bool)] = &[
            ("abc", "abc", true, false),
            ("*", "abc", true, false),
            ("*c", "abc", true, false),
            ("a*", "a", true, false),
            ("a*", "abc", true, false),
            ("a*", "ab/c", true, false),
            ("a*/b", "abc/b", true, false),
            ("a*/b", "a/c/b", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
            ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
            ("ab[c]", "abc", true, false),
            ("ab[b-d]", "abc", true, false),
            ("ab[e-g]", "abc", false, false),
            ("ab[^c]", "abc", false, false),
            ("ab[^b-d]", "abc", false, false),
            ("ab[^e-g]", "abc", true, false),
            ("a\\*b", "a*b", true, false),
            ("a\\*b", "ab", false, false),
            ("a?b", "a☺b", true, false),
            ("a[^a]b", "a☺b", true, false),
            ("a???b", "a☺b", false, false),
            ("a[^a][^a][^a]b", "a☺b", false, false),
            ("[a-ζ]*", "α", true, false),
            ("*[a-ζ]", "A", false, false),
            ("a?b", "a/b", false, false),
            ("a*b", "a/b", false, false),
            ("[\\]a]", "]", true, false),
            ("[\\-]", "-", true, false),
            ("[x\\-]", "x", true, false),
            ("[x\\-]", "-", true, false),
            ("[x\\-]", "z", false, false),
            ("[\\-x]", "x", true, false),
            ("[\\-x]", "-", true, false),
            ("[\\-x]", "a", false, false),
            ("[]a]", "]", false, true),
            ("[-]", "-", false, true),
            ("[x-]", "x", false, true),
            ("[x-]", "-", false, true),
            ("[x-]", "z", false, true),
            ("[-x]", "x", false, true),
            ("[-x]", "-", false, true),
            ("[-x]", "a", false, true),
            ("\\", "a", false, true),
            ("[a-b-c]", "a", false, true),
            ("[", "a", false, true),
            ("[^", "a", false, true),
            ("[^bc", "a", false, true),
            ("a[", "a", false, true),
            ("a[", "ab", false, true),
            ("*x", "xxx", true, false),
        ];
        for &(pattern, path, want, want_err) in tests {
            match Matcher::from_strings([pattern]) {
                Ok(m) => {
                    assert!(!want_err, "{pattern:?} should be rejected");
                    assert_eq!(m.is_excluded(path), want, "{pattern:?} {path:?}");
                }
                Err(e) => {
                    assert!(want_err, "{pattern:?} rejected: {e}");
                    assert!(matches!(e, IgnoreError::BadPattern { .. }));
                }
            }
        }
    }

    #[test]
    fn moby_compile_kinds() {
        // patternmatcher_test.go compileTests: which kind of match each pattern becomes.
        let tests = [
            ("*", "glob"),
            ("file*", "glob"),
            ("*file", "glob"),
            ("a*/b", "glob"),
            ("**", "suffix"),
            ("**/**", "glob"),
            ("dir/**", "prefix"),
            ("**/dir", "suffix"),
            ("**/dir2/*", "glob"),
            ("**/dir2/**", "glob"),
            ("**file", "suffix"),
            ("**/file*txt", "glob"),
            ("**/**/*.txt", "glob"),
            ("a[b-d]e", "glob"),
            (".*", "glob"),
            ("abc.def", "exact"),
            ("abc?def", "glob"),
            ("**/foo/bar", "suffix"),
            ("a(b)c/def", "exact"),
            ("a.|)$(}+{bc", "exact"),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "exact",
            ),
        ];
        for (pattern, want) in tests {
            let got = match Kind::compile(pattern).unwrap() {
                Kind::Exact(_) => "exact",
                Kind::Prefix(_) => "prefix",
                Kind::Suffix(_) => "suffix",
                Kind::Glob(_) => "glob",
            };
            assert_eq!(got, want, "{pattern:?}");
        }
        assert_eq!(
            Kind::compile("dir/**").unwrap(),
            Kind::Prefix("dir/".into())
        );
        assert_eq!(
            Kind::compile("**/foo/bar").unwrap(),
            Kind::Suffix("/foo/bar".into())
        );
        // `(.*/)?(.*/)?[^/]*\.txt`
        assert_eq!(
            Kind::compile("**/**/*.txt").unwrap(),
            Kind::Glob(vec![
                Tok::AnyDirs,
                Tok::AnyDirs,
                Tok::Star,
                Tok::Lit('.'),
                Tok::Lit('t'),
                Tok::Lit('x'),
                Tok::Lit('t')
            ])
        );
    }

    // ---- matching: documented examples and the rest ------------------------------------

    #[test]
    fn docs_examples() {
        // The Dockerfile reference, ".dockerignore file".
        let m = matcher(&["*/temp*", "*/*/temp*", "temp?"]);
        for (path, want) in [
            ("somedir/temporary.txt", true),
            ("somedir/temp", true),
            ("somedir/temp/x", true),
            ("somedir/subdir/temporary.txt", true),
            ("tempa", true),
            ("tempb", true),
            ("temp", false),
            ("temporary.txt", false),
            ("a/b/c/temp", false),
        ] {
            assert_eq!(m.is_excluded(path), want, "{path}");
        }
        let go = matcher(&["**/*.go"]);
        assert!(go.is_excluded("main.go"));
        assert!(go.is_excluded("a/b/c/main.go"));
        assert!(!go.is_excluded("main.gox"));

        let m = matcher(&["*.md", "!README.md"]);
        assert!(m.is_excluded("CHANGES.md"));
        assert!(!m.is_excluded("README.md"));
        assert!(
            !m.is_excluded("docs/x.md"),
            "`*` stays within one directory"
        );

        let m = matcher(&["*.md", "!README*.md", "README-secret.md"]);
        assert!(m.is_excluded("CHANGES.md"));
        assert!(!m.is_excluded("README.md"));
        assert!(m.is_excluded("README-secret.md"));

        let m = matcher(&["*.md", "README-secret.md", "!README*.md"]);
        assert!(m.is_excluded("CHANGES.md"));
        assert!(!m.is_excluded("README.md"));
        assert!(!m.is_excluded("README-secret.md"));

        // `/foo/bar` and `foo/bar` both exclude `bar` in `foo` at the root.
        let file = parse_ignore_file("/foo/bar").unwrap();
        let m = file.matcher().unwrap();
        assert!(m.is_excluded("foo/bar"));
        assert!(m.is_excluded("foo/bar/baz"));
        assert!(!m.is_excluded("x/foo/bar"));
    }

    #[test]
    fn wildcards_classes_escapes() {
        let cases: &[(&str, &str, bool)] = &[
            ("?", "a", true),
            ("?", "ab", false),
            ("?", "é", true),
            ("a?c", "a/c", false),
            ("*", "a/b", true), // via the parent `a`
            ("*/b", "a/b", true),
            ("*/b", "b", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[^a-c]x", "dx", true),
            ("[!a]", "!", true),
            ("[!a]", "a", true),
            ("[!a]", "b", false),
            ("[^a]", "/", true),
            ("a[/]b", "a/b", true),
            ("\\[a]", "[a]", true),
            ("\\[a]", "a", false),
            ("\\?", "?", true),
            ("\\?", "x", false),
            ("a\\b", "ab", true),
            ("x]", "x]", true),
            ("a{b,c}", "a{b,c}", true),
            ("a{b,c}", "ab", false),
            ("a+", "a+", true),
            ("a+", "aa", false),
            ("a|b", "a", false),
            ("$x", "$x", true),
        ];
        for &(pattern, path, want) in cases {
            assert_eq!(
                matcher(&[pattern]).is_excluded(path),
                want,
                "{pattern:?} {path:?}"
            );
        }
    }

    #[test]
    fn double_star_in_every_position() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "a", true),
            ("**", "a/b/c", true),
            ("**/foo", "foo", true),
            ("**/foo", "a/foo", true),
            ("**/foo", "a/b/foo", true),
            ("**/foo", "a/foo/x", true),
            ("**/foo", "afoo", false),
            ("**/foo", "foox", false),
            ("foo/**", "foo", false),
            ("foo/**", "foo/a", true),
            ("foo/**", "foo/a/b", true),
            ("foo/**", "foobar/a", false),
            ("foo**", "foobar/a", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/x/y/b/c", true),
            ("a/**/b", "a/xb", false),
            ("a/**/b", "ab", false),
            ("a/**/b", "x/a/b", false),
            ("a/**/*.rs", "a/main.rs", true),
            ("a/**/*.rs", "a/x/y/main.rs", true),
            ("**/a/**", "a/b", true),
            ("**/a/**", "x/a/b", true),
            ("**/a/**", "x/a", false),
            ("**/a/**/b", "x/a/y/z/b", true),
            // moby quirks.
            ("**file", "myfile", true),
            ("**file", "dir/myfile", true),
            ("a/**b", "a/b", true),
            ("a/**b", "a/x/b", true),
            ("a/**b", "a/xb", false),
            ("a**", "abc/d", true),
            ("***", "a/b", true),
            ("a/**/b", "a/x\ny/b", false),
            ("a/**", "a/x\ny", true),
            ("a/*/b", "a/x\ny/b", true),
        ];
        for &(pattern, path, want) in cases {
            assert_eq!(
                matcher(&[pattern]).is_excluded(path),
                want,
                "{pattern:?} {path:?}"
            );
        }
    }

    #[test]
    fn caret_quirk() {
        // Literal when the pattern is otherwise literal…
        assert!(matcher(&["a^b"]).is_excluded("a^b"));
        assert!(matcher(&["**/a^b"]).is_excluded("x/a^b"));
        // …an anchor in a regex pattern: `^a^b[^/]*$` matches nothing.
        assert!(!matcher(&["a^b*"]).is_excluded("a^b"));
        assert!(!matcher(&["a^b*"]).is_excluded("a^bc"));
        // …and an anchor at the start is harmless.
        assert!(matcher(&["^a*"]).is_excluded("abc"));
        assert!(matcher(&["**/^a*"]).is_excluded("abc"));
        assert!(!matcher(&["**/^a*"]).is_excluded("x/abc"));
        // An escaped caret is a caret.
        assert!(matcher(&["a\\^b*"]).is_excluded("a^bc"));
    }

    #[test]
    fn parent_directories_match() {
        let m = matcher(&["build"]);
        assert!(m.is_excluded("build"));
        assert!(m.is_excluded("build/a/b.o"));
        assert!(!m.is_excluded("src/build"));
        assert!(!m.is_excluded("buildx"));
        let m = matcher(&["*/cache"]);
        assert!(m.is_excluded("a/cache/x/y"));
        assert!(!m.is_excluded("a/b/cache/x"));
        // An exception also applies below the directory it names.
        let m = matcher(&["**", "!src"]);
        assert!(!m.is_excluded("src/a/b.rs"));
        assert!(m.is_excluded("srcx"));
        // Last match wins, directory by directory.
        let m = matcher(&["a", "!a/b", "a/b/c"]);
        assert!(m.is_excluded("a/x"));
        assert!(!m.is_excluded("a/b/x"));
        assert!(m.is_excluded("a/b/c/x"));
        // An exception before the exclusion changes nothing.
        let m = matcher(&["!a/keep", "a"]);
        assert!(m.is_excluded("a/keep"));
    }

    #[test]
    fn walk_semantics_differ_from_matches_or_parent_matches() {
        // docker's walk tries `!a` on `a` only while `a` is excluded; it is not, so `!a`
        // does not count as matching `a` for `a/x`.
        let m = matcher(&["a/*", "!a"]);
        assert!(!m.is_excluded("a"));
        assert!(m.is_excluded("a/x"));
        assert!(!m.matches_or_parent_matches("a/x"));
        let m = matcher(&["**/*.log", "!logs"]);
        assert!(m.is_excluded("logs/app.log"));
        assert!(!m.matches_or_parent_matches("logs/app.log"));
        // The second `a` is not tried on `a`, already excluded, so it does not count for `a/x`.
        let m = matcher(&["a", "!a/x", "a"]);
        assert!(m.is_excluded("a"));
        assert!(!m.is_excluded("a/x"));
        assert!(m.matches_or_parent_matches("a/x"));
        let fs = FakeFs::new(&["a/x", "a/y"]);
        let (seen, _) = walk_paths(&fs, &["a", "!a/x", "a"]);
        assert_eq!(seen, ["a", "a/x"]);
        // Where no pattern is passed over the two agree.
        let m = matcher(&["a", "!a/x", "a/x/y"]);
        for p in ["a", "a/x", "a/x/y", "a/x/z", "a/x/y/z", "a/w"] {
            assert_eq!(m.is_excluded(p), m.matches_or_parent_matches(p), "{p}");
        }
    }

    #[test]
    fn root_and_odd_patterns() {
        for p in [".", "**", "*", "/"] {
            let m = parse_ignore_file(p).unwrap().matcher().unwrap();
            assert!(!m.is_excluded(""), "{p}");
            assert!(!m.is_excluded("."), "{p}");
        }
        // `/`, `..` and `../x` match nothing in the context.
        for p in ["/", "..", "../a", "a/../.."] {
            let m = parse_ignore_file(p).unwrap().matcher().unwrap();
            for path in ["a", "a/b", "..", "x/.."] {
                assert!(!m.is_excluded(path) || path.contains(".."), "{p} {path}");
            }
        }
        assert!(!matcher(&["/"]).is_excluded("a"));
    }

    #[test]
    fn can_skip_dir_cases() {
        let m = matcher(&["node_modules"]);
        assert!(m.can_skip_dir("node_modules"));
        assert!(!m.can_skip_dir("src"), "not excluded");
        let m = matcher(&["dir", "!dir/keep"]);
        assert!(!m.can_skip_dir("dir"));
        assert!(m.can_skip_dir("dir/sub"));
        let m = matcher(&["dir", "!dir/a/b/*.txt"]);
        assert!(!m.can_skip_dir("dir"));
        assert!(!m.can_skip_dir("dir/a"));
        assert!(!m.can_skip_dir("dir/a/b"));
        assert!(m.can_skip_dir("dir/c"));
        assert!(m.can_skip_dir("dir/a/c"));
        let m = matcher(&["dir", "!dir/**"]);
        assert!(!m.is_excluded("dir/x"));
        let m = matcher(&["**", "!**/keep"]);
        assert!(!m.can_skip_dir("a"));
        assert!(!m.can_skip_dir("a/b/c"));
        let m = matcher(&["*", "!*.json"]);
        assert!(
            m.can_skip_dir("node_modules"),
            "`*.json` cannot match below a directory"
        );
        let m = matcher(&["*", "!*/keep"]);
        assert!(!m.can_skip_dir("node_modules"));
        let m = matcher(&["*", "!src**"]);
        assert!(!m.can_skip_dir("srcx"));
        assert!(m.can_skip_dir("lib"));
        let m = matcher(&["*", "!**keep"]);
        assert!(!m.can_skip_dir("lib"));
        let m = matcher(&["a", "!a"]);
        assert!(!m.can_skip_dir("a"), "not excluded");
    }

    #[test]
    fn candidates() {
        assert_eq!(
            ignore_file_candidates("Dockerfile"),
            ["Dockerfile.dockerignore", ".dockerignore"]
        );
        assert_eq!(
            ignore_file_candidates("./build/Dockerfile.prod"),
            ["build/Dockerfile.prod.dockerignore", ".dockerignore"]
        );
        assert_eq!(
            ignore_file_candidates("deploy//x/../Containerfile"),
            ["deploy/Containerfile.dockerignore", ".dockerignore"]
        );
        assert_eq!(ignore_file_candidates("-"), [".dockerignore"]);
        assert_eq!(ignore_file_candidates(""), [".dockerignore"]);
    }

    // ---- walking ------------------------------------------------------------------------

    /// A context held in memory; counts and records listings.
    struct FakeFs {
        dirs: BTreeMap<String, Vec<DirEntry>>,
        reads: RefCell<Vec<String>>,
    }

    impl FakeFs {
        /// From file paths; a path ending in `/` is an (empty) directory.
        fn new(paths: &[&str]) -> Self {
            let mut dirs: BTreeMap<String, Vec<DirEntry>> = BTreeMap::new();
            dirs.insert(String::new(), Vec::new());
            for path in paths {
                let is_dir_path = path.ends_with('/');
                let path = path.trim_end_matches('/');
                let parts: Vec<&str> = path.split('/').collect();
                for (i, name) in parts.iter().enumerate() {
                    let parent = parts[..i].join("/");
                    let is_dir = i + 1 < parts.len() || is_dir_path;
                    let list = dirs.entry(parent).or_default();
                    if !list.iter().any(|e| e.name == *name) {
                        // Reverse order, to check that the walker sorts.
                        list.insert(
                            0,
                            DirEntry {
                                name: name.to_string(),
                                is_dir,
                            },
                        );
                    }
                    if is_dir {
                        dirs.entry(parts[..=i].join("/")).or_default();
                    }
                }
            }
            FakeFs {
                dirs,
                reads: RefCell::new(Vec::new()),
            }
        }
    }

    impl ContextFs for FakeFs {
        type Error = String;
        fn read_dir(&self, rel_dir: &str) -> Result<Vec<DirEntry>, String> {
            self.reads.borrow_mut().push(rel_dir.to_string());
            self.dirs
                .get(rel_dir)
                .cloned()
                .ok_or_else(|| format!("no dir {rel_dir:?}"))
        }
    }

    fn walk_paths(fs: &FakeFs, patterns: &[&str]) -> (Vec<String>, WalkStats) {
        let mut seen = Vec::new();
        let stats = walk(fs, &matcher(patterns), |p, _| seen.push(p.to_string())).unwrap();
        (seen, stats)
    }

    #[test]
    fn walk_skips_excluded_dirs_whole() {
        let fs = FakeFs::new(&[
            "Dockerfile",
            "node_modules/a/x.js",
            "node_modules/b/y.js",
            "src/main.rs",
            "src/target/o",
        ]);
        let (seen, stats) = walk_paths(&fs, &["node_modules", "**/target"]);
        assert_eq!(seen, ["Dockerfile", "src", "src/main.rs"]);
        assert_eq!(*fs.reads.borrow(), ["", "src"]);
        assert_eq!(
            stats,
            WalkStats {
                dirs_read: 2,
                dirs_skipped: 2,
                visited: 3,
                excluded: 0
            }
        );
    }

    #[test]
    fn walk_descends_for_exceptions() {
        let fs = FakeFs::new(&["dir/keep", "dir/other", "dir/sub/x", "top"]);
        let (seen, stats) = walk_paths(&fs, &["dir", "!dir/keep"]);
        assert_eq!(seen, ["dir", "dir/keep", "top"]);
        assert_eq!(
            *fs.reads.borrow(),
            ["", "dir"],
            "dir/sub cannot hold dir/keep"
        );
        assert_eq!(stats.dirs_skipped, 1);
        assert_eq!(stats.excluded, 1);

        let fs = FakeFs::new(&["dir/a/deep/f", "dir/a/deep/g", "dir/a/z", "dir/b/f"]);
        let (seen, _) = walk_paths(&fs, &["dir", "!dir/a/deep/f"]);
        assert_eq!(seen, ["dir", "dir/a", "dir/a/deep", "dir/a/deep/f"]);
        assert_eq!(*fs.reads.borrow(), ["", "dir", "dir/a", "dir/a/deep"]);

        // Nothing re-included: the excluded directories are listed but never visited.
        let fs = FakeFs::new(&["dir/keep", "dir/sub/x"]);
        let (seen, _) = walk_paths(&fs, &["!dir/keep", "dir"]);
        assert!(seen.is_empty());

        // A wildcard exception forces a full descent and visits only what it includes.
        let fs = FakeFs::new(&["a/b/main.go", "a/b/x.txt", "a/c/y.txt", "z.go", "empty/"]);
        let (seen, stats) = walk_paths(&fs, &["**", "!**/*.go"]);
        assert_eq!(seen, ["a", "a/b", "a/b/main.go", "z.go"]);
        assert_eq!(stats.dirs_read, 5);

        // `*` then exceptions: unrelated top-level directories are skipped.
        let fs = FakeFs::new(&[
            "node_modules/x/package.json",
            "package.json",
            "src/lib.rs",
            "README.md",
        ]);
        let (seen, _) = walk_paths(&fs, &["*", "!*.json", "!src"]);
        assert_eq!(seen, ["package.json", "src", "src/lib.rs"]);
        assert_eq!(*fs.reads.borrow(), ["", "src"]);
    }

    #[test]
    fn walk_order_and_errors() {
        let fs = FakeFs::new(&["b", "a-b", "a/x", "a/y/", "C"]);
        let (seen, stats) = walk_paths(&fs, &[]);
        assert_eq!(seen, ["C", "a", "a/x", "a/y", "a-b", "b"]);
        assert_eq!(stats.dirs_read, 3);
        struct Broken;
        impl ContextFs for Broken {
            type Error = &'static str;
            fn read_dir(&self, rel_dir: &str) -> Result<Vec<DirEntry>, &'static str> {
                match rel_dir {
                    "" => Ok(vec![DirEntry {
                        name: "d".into(),
                        is_dir: true,
                    }]),
                    _ => Err("denied"),
                }
            }
        }
        assert_eq!(walk(&Broken, &Matcher::default(), |_, _| {}), Err("denied"));
    }

    /// The walker visits exactly what a full traversal filtered by `is_excluded` keeps (plus
    /// the directories above kept entries), on random trees and patterns.
    #[test]
    fn walk_agrees_with_brute_force() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let names = ["a", "b", "keep", "x.go", "node_modules", "ab"];
        let pool = [
            "a",
            "b",
            "keep",
            "*.go",
            "**/*.go",
            "**/keep",
            "a/**",
            "*",
            "**",
            "a/b",
            "a/keep",
            "*/keep",
            "a*",
            "?",
            "**/b",
            "b/**/keep",
            "a/*/keep",
            "node_modules",
            "[ab]",
            "**b",
            "a/**b",
            "*/*",
        ];
        let (mut skipped, mut excluded_dirs_read) = (0, 0);
        for _ in 0..400 {
            // A random tree: each name, in each directory, is absent, a file or a directory.
            let mut dirs: BTreeMap<String, Vec<DirEntry>> = BTreeMap::new();
            let mut todo = vec![(String::new(), 0)];
            while let Some((dir, depth)) = todo.pop() {
                let mut entries = Vec::new();
                for name in names {
                    let is_dir = match rand(if depth < 3 { 3 } else { 2 }) {
                        0 => continue,
                        1 => false,
                        _ => true,
                    };
                    if is_dir {
                        let path = if dir.is_empty() {
                            name.to_string()
                        } else {
                            format!("{dir}/{name}")
                        };
                        todo.push((path, depth + 1));
                    }
                    entries.push(DirEntry {
                        name: name.to_string(),
                        is_dir,
                    });
                }
                dirs.insert(dir, entries);
            }
            let fs = FakeFs {
                dirs,
                reads: RefCell::new(Vec::new()),
            };
            let patterns: Vec<String> = (0..(1 + rand(4)))
                .map(|_| {
                    let p = pool[rand(pool.len())];
                    if rand(2) == 0 {
                        format!("!{p}")
                    } else {
                        p.to_string()
                    }
                })
                .collect();
            let m = Matcher::from_strings(&patterns).unwrap();
            let mut seen = Vec::new();
            let stats = walk(&fs, &m, |p, _| seen.push(p.to_string())).unwrap();
            skipped += stats.dirs_skipped;
            excluded_dirs_read += fs
                .reads
                .borrow()
                .iter()
                .filter(|d| m.is_excluded(d))
                .count();

            // Brute force: every path of the tree, in walk order.
            let mut all = Vec::new();
            fn collect(fs: &FakeFs, dir: &str, out: &mut Vec<String>) {
                let mut entries = fs.dirs[dir].clone();
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                for e in entries {
                    let path = if dir.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{dir}/{}", e.name)
                    };
                    out.push(path.clone());
                    if e.is_dir {
                        collect(fs, &path, out);
                    }
                }
            }
            collect(&fs, "", &mut all);
            let included: Vec<&String> = all.iter().filter(|p| !m.is_excluded(p)).collect();
            let want: Vec<String> = all
                .iter()
                .filter(|p| {
                    included
                        .iter()
                        .any(|i| *i == *p || i.starts_with(&format!("{p}/")))
                })
                .cloned()
                .collect();
            assert_eq!(seen, want, "patterns {patterns:?} tree {:?}", fs.dirs);
        }
        // Both ways of handling an excluded directory were exercised.
        assert!(
            skipped > 100 && excluded_dirs_read > 100,
            "{skipped} {excluded_dirs_read}"
        );
    }
}
