//! The matcher: patterns compiled as moby's `patternmatcher` compiles them, run by a small NFA.

use super::{IgnoreError, Pattern};

/// Decides which paths of a build context an ignore file excludes (moby's
/// `PatternMatcher.MatchesOrParentMatches`).
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    rules: Vec<Rule>,
    has_exceptions: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    exception: bool,
    kind: Kind,
}

/// How moby ends up comparing a pattern with a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
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
pub(super) enum Tok {
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
pub(super) struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

impl Matcher {
    /// Builds a matcher from patterns, typically [`IgnoreFile::patterns`](super::IgnoreFile::patterns). Each pattern is
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
    pub(super) fn evaluate(&self, path: &str, parent_hits: Option<&[bool]>) -> (bool, Vec<bool>) {
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

    pub(super) fn exception_may_match_below(&self, rel_dir: &str) -> bool {
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
    pub(super) fn matches_exact(&self, path: &str) -> bool {
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
pub(super) fn compile(raw: &str, line: Option<usize>) -> Result<Option<Rule>, IgnoreError> {
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
    pub(super) fn compile(glob: &str) -> Result<Kind, String> {
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
