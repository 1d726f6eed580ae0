//! Shell patterns of `${x#p}`, `${x%p}` and `${x/p/r}`, compiled to the regular expression
//! BuildKit builds for them and run by a Pike VM.

use super::unicode::{is_go_digit, is_go_letter};

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
pub(super) struct Glob {
    prog: Vec<Inst>,
}

impl Glob {
    /// Compiles `pattern`; with `greedy`, `*` prefers the longest run.
    pub(super) fn new(pattern: &str, greedy: bool) -> Result<Self, String> {
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
    pub(super) fn find(
        &self,
        text: &[char],
        from: usize,
        anchored: bool,
    ) -> Option<(usize, usize)> {
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
    pub(super) fn replace_first(&self, text: &[char], replacement: &str) -> String {
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
    pub(super) fn replace_all(&self, text: &[char], replacement: &str) -> String {
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
pub(super) fn expand_template(template: &str, matched: &str, out: &mut String) {
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
