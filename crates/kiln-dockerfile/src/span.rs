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
    /// Characters before every `CHECKPOINT`-th byte of the logical line (filled by `resolve`),
    /// so a column costs at most `CHECKPOINT` bytes of counting however long the line is.
    chars_before: Vec<usize>,
    /// The length of the logical line `chars_before` was computed for.
    line_len: usize,
}

/// Bytes between two character-count checkpoints of a logical line.
const CHECKPOINT: usize = 64;

/// Characters in `bytes` (a run of UTF-8 that may start or end inside a character): the bytes
/// that do not continue a character.
fn count_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| (b & 0xC0) != 0x80).count()
}

impl OffsetMap {
    pub(crate) fn push(&mut self, logical: usize, source: usize) {
        self.pieces.push(Piece { logical, source });
    }

    /// Precompute positions so later lookups need no source text: stores, for each piece, the
    /// position of its first byte.
    /// `line` is the logical line the offsets index (its character counts are kept too).
    pub(crate) fn resolve(&mut self, index: &LineIndex<'_>, line: &str) {
        self.positions = self.pieces.iter().map(|p| index.pos(p.source)).collect();
        let mut total = 0;
        self.chars_before = line
            .as_bytes()
            .chunks(CHECKPOINT)
            .map(|chunk| {
                let before = total;
                total += count_chars(chunk);
                before
            })
            .collect();
        self.line_len = line.len();
    }

    /// Characters of `line` before byte `offset` (a character boundary).
    fn chars_to(&self, line: &str, offset: usize) -> usize {
        if self.line_len != line.len() || self.chars_before.is_empty() {
            return count_chars(&line.as_bytes()[..offset]);
        }
        let block = offset / CHECKPOINT;
        match self.chars_before.get(block) {
            Some(before) => before + count_chars(&line.as_bytes()[block * CHECKPOINT..offset]),
            None => count_chars(&line.as_bytes()[..offset]),
        }
    }

    /// Position of logical offset `offset`, given the logical line text (after `resolve`).
    /// Columns advance by characters within a piece.
    pub fn pos(&self, logical_line: &str, offset: usize) -> Pos {
        // Pieces are in logical order: the last one starting at or before `offset`.
        let Some(i) = self
            .pieces
            .partition_point(|p| p.logical <= offset)
            .checked_sub(1)
        else {
            return Pos { line: 1, column: 1 };
        };
        let Some(base) = self.positions.get(i).copied() else {
            return Pos { line: 1, column: 1 };
        };
        let start = self.pieces[i].logical;
        let end = offset.min(logical_line.len());
        let chars = if start <= end
            && logical_line.is_char_boundary(start)
            && logical_line.is_char_boundary(end)
        {
            self.chars_to(logical_line, end) - self.chars_to(logical_line, start)
        } else {
            end.saturating_sub(start)
        };
        Pos {
            line: base.line,
            column: base.column + chars,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns from the checkpoints are the characters counted one by one, on a logical line
    /// joined from several physical lines, with multi-byte characters on both sides of
    /// checkpoint boundaries.
    #[test]
    fn columns_from_checkpoints_match_counting() {
        let first = format!("RUN {}", "é a ".repeat(100));
        let second = format!("  {}\u{1F600}b", "xy ".repeat(50));
        let text = format!("{first}\\\n{second}\n");
        let index = LineIndex::new(&text);
        let mut map = OffsetMap::default();
        map.push(0, 0);
        let mut line = first.clone();
        map.push(line.len(), first.len() + 2);
        line.push_str(&second);
        map.resolve(&index, &line);
        let mut unresolved = map.clone();
        unresolved.chars_before.clear();
        for (offset, _) in line.char_indices() {
            let (piece, column_base, line_no) = if offset < first.len() {
                (&line[..offset], 1, 1)
            } else {
                (&line[first.len()..offset], 1, 2)
            };
            let expected = Pos {
                line: line_no,
                column: column_base + piece.chars().count(),
            };
            assert_eq!(map.pos(&line, offset), expected, "offset {offset}");
            assert_eq!(unresolved.pos(&line, offset), expected, "offset {offset}");
        }
    }

    /// A position on a long logical line made of many pieces (a continuation per word) costs
    /// no scan of the pieces or of the line: 100,000 lookups stay fast.
    #[test]
    fn many_pieces_and_a_long_line_are_not_scanned_per_lookup() {
        let words = 100_000;
        let text: String = (0..words).map(|_| "ab \\\n").collect();
        let index = LineIndex::new(&text);
        let mut map = OffsetMap::default();
        let mut line = String::new();
        for n in 0..words {
            map.push(line.len(), n * 5);
            line.push_str("ab ");
        }
        map.resolve(&index, &line);
        let started = std::time::Instant::now();
        for n in 0..words {
            let pos = map.pos(&line, n * 3 + 1);
            assert_eq!(
                pos,
                Pos {
                    line: n + 1,
                    column: 2
                }
            );
        }
        // Quadratic lookups took minutes here; a generous guard, not a timing target.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
