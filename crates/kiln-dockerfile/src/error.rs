//! Errors and warnings, each tied to a place in the Dockerfile.

use crate::span::Pos;
use serde::Serialize;
use std::fmt;

/// What went wrong. The message says what is wrong and, where it can, what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file holds no instruction at all.
    #[error("the Dockerfile has no instructions: add at least a FROM line")]
    Empty,
    /// An instruction keyword kiln (and BuildKit) does not know.
    #[error("unknown instruction {name}{}", did_you_mean(suggestion.as_deref()))]
    UnknownInstruction {
        /// The keyword as written.
        name: String,
        /// The closest known keyword.
        suggestion: Option<String>,
    },
    /// A flag the instruction does not take.
    #[error("unknown flag --{flag}{}", flag_hint(suggestion.as_deref(), valid_on.as_deref()))]
    UnknownFlag {
        /// The flag name, without dashes.
        flag: String,
        /// The closest flag of this instruction.
        suggestion: Option<String>,
        /// When the flag belongs to other instructions, their names.
        valid_on: Option<String>,
    },
    /// A flag given twice where only one is allowed.
    #[error("flag --{0} given more than once")]
    DuplicateFlag(String),
    /// `--flag` without `=value` on a flag that needs one.
    #[error("flag --{0} needs a value (--{0}=VALUE)")]
    MissingFlagValue(String),
    /// A flag value that does not parse.
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    InvalidFlagValue {
        /// The flag name.
        flag: String,
        /// The value as written.
        value: String,
        /// Why it is wrong and what is expected.
        reason: String,
    },
    /// A heredoc whose terminator never comes.
    #[error("unterminated heredoc <<{0}: no line reads exactly {0:?} before the end of the file")]
    UnterminatedHeredoc(String),
    /// Word expansion failed (`${`, quotes, `${v:?msg}`, …).
    #[error("{0}")]
    Expansion(String),
    /// A parser directive problem.
    #[error("{0}")]
    Directive(String),
    /// A stage reference or graph problem.
    #[error("{0}")]
    Stage(String),
    /// Any other malformed instruction; the message says what is wrong.
    #[error("{0}")]
    Syntax(String),
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

fn flag_hint(suggestion: Option<&str>, valid_on: Option<&str>) -> String {
    match (suggestion, valid_on) {
        (_, Some(on)) => format!(" (it is only valid on {on})"),
        (Some(s), None) => format!(" (did you mean --{s}?)"),
        (None, None) => String::new(),
    }
}

/// An error located in a Dockerfile: `file:line:column: INSTRUCTION: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// The Dockerfile's name as the user gave it.
    pub file: String,
    /// Where the problem is.
    pub pos: Pos,
    /// The instruction keyword (upper case) the problem is in, if any.
    pub instruction: Option<String>,
    /// What is wrong (boxed: errors travel far, keep the `Result` small).
    pub kind: Box<ErrorKind>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pos.line == 0 {
            // Not tied to a line (e.g. a --target that names no stage).
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.column)?;
        }
        if let Some(instruction) = &self.instruction {
            write!(f, "{instruction}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// An error whose file is not attached yet (parser, expander); [`Located::into_error`] adds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where the problem is.
    pub pos: Pos,
    /// The instruction keyword (upper case), if any.
    pub instruction: Option<String>,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl Located {
    pub(crate) fn new(pos: Pos, instruction: Option<&str>, kind: ErrorKind) -> Self {
        Located {
            pos,
            instruction: instruction.map(str::to_ascii_uppercase),
            kind,
        }
    }

    /// Names the file the error is in.
    pub fn into_error(self, file: &str) -> Error {
        Error {
            file: file.to_string(),
            pos: self.pos,
            instruction: self.instruction,
            kind: Box::new(self.kind),
        }
    }
}

/// Something legal but probably not what the author meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Where it is (line 0 when it concerns the whole build, e.g. unused build args).
    pub pos: Pos,
    /// A short machine-friendly name, e.g. `EmptyContinuationLine`.
    pub rule: &'static str,
    /// What to look at.
    pub message: String,
}

/// The closest candidate to `word` by edit distance, when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let word_lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = edit_distance(&word_lower, &candidate.to_ascii_lowercase());
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    let (distance, candidate) = best?;
    let limit = (word.chars().count() / 3).max(1);
    (distance <= limit && distance > 0).then(|| candidate.to_string())
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions (the usual typo) each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(
            suggest("chwon", ["chown", "chmod", "from"]),
            Some("chown".into())
        );
        assert_eq!(suggest("CPOY", ["COPY", "RUN"]), Some("COPY".into()));
        assert_eq!(suggest("xyzzy", ["COPY", "RUN"]), None);
    }
}
