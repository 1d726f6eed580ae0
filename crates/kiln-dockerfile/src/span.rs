//! Source positions: every node and error carries where it came from.

use serde::Serialize;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Pos {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// A range of source text from `start` to `end` (both inclusive positions of real characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    /// First character.
    pub start: Pos,
    /// Last line and the column just after its last character.
    pub end: Pos,
}

/// Maps byte offsets in the source text to line/column positions.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    /// Position of the byte at `offset` (clamped to the text).
    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start)
            + 1;
        Pos {
            line: line + 1,
            column,
        }
    }
}

/// One piece of a logical line: `len` bytes starting at `logical` in the logical line came from
/// `source` in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    logical: usize,
    source: usize,
}

/// Maps byte offsets in a logical (continuation-joined) line back to file positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    pieces: Vec<Piece>,
    /// Resolved position for each piece start, filled by `resolve`.
    positions: Vec<Pos>,
}

impl OffsetMap {
    pub(crate) fn push(&mut self, logical: usize, source: usize) {
        self.pieces.push(Piece { logical, source });
    }

    /// Precompute positions so later lookups need no source text: stores, for each piece, the
    /// position of its first byte.
    pub(crate) fn resolve(&mut self, index: &LineIndex<'_>) {
        self.positions = self.pieces.iter().map(|p| index.pos(p.source)).collect();
    }

    /// Position of logical offset `offset`, given the logical line text (after `resolve`).
    /// Columns advance by characters within a piece.
    pub fn pos(&self, logical_line: &str, offset: usize) -> Pos {
        let Some(i) = self.pieces.iter().rposition(|p| p.logical <= offset) else {
            return Pos { line: 1, column: 1 };
        };
        let Some(base) = self.positions.get(i).copied() else {
            return Pos { line: 1, column: 1 };
        };
        let start = self.pieces[i].logical;
        let end = offset.min(logical_line.len());
        let chars = logical_line
            .get(start..end)
            .map(|s| s.chars().count())
            .unwrap_or(end.saturating_sub(start));
        Pos {
            line: base.line,
            column: base.column + chars,
        }
    }
}
