//! Binary-safe PAX records.
//!
//! The `tar` crate splits PAX records at newlines, which breaks on binary
//! values (a `security.capability` can contain byte 0x0a). So the bytes the
//! `tar` crate reads while it looks for the next entry are tapped, and the
//! extension headers in front of that entry are parsed again here by their
//! length prefixes, as the PAX format defines them.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

const BLOCK: u64 = 512;

/// At most this many bytes of extension headers are kept for one entry.
const LIMIT: usize = 64 * 1024 * 1024;

/// One PAX record: key and raw value.
pub(crate) type Record = (Vec<u8>, Vec<u8>);

#[derive(Default)]
struct State {
    /// Bytes read so far (the stream position).
    pos: u64,
    armed: bool,
    /// Stream position of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
    overflow: bool,
}

/// A reader that can record what passes through it while armed.
pub(crate) struct Tap<R> {
    inner: R,
    state: Rc<RefCell<State>>,
}

/// The handle used to arm the tap and parse what it recorded.
pub(crate) struct TapHandle(Rc<RefCell<State>>);

pub(crate) fn tap<R: Read>(inner: R) -> (Tap<R>, TapHandle) {
    let state = Rc::new(RefCell::new(State::default()));
    (
        Tap {
            inner,
            state: Rc::clone(&state),
        },
        TapHandle(state),
    )
}

impl<R> Tap<R> {
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.borrow_mut();
        if st.armed && !st.overflow {
            if st.buf.len() + n > LIMIT {
                st.overflow = true;
            } else {
                st.buf.extend_from_slice(&buf[..n]);
            }
        }
        st.pos += n as u64;
        Ok(n)
    }
}

impl TapHandle {
    /// Starts recording (before asking `tar` for the next entry).
    pub(crate) fn arm(&self) {
        let mut st = self.0.borrow_mut();
        st.armed = true;
        st.start = st.pos;
        st.buf.clear();
        st.overflow = false;
    }

    /// Stops recording (once `tar` has handed out the entry).
    pub(crate) fn disarm(&self) {
        self.0.borrow_mut().armed = false;
    }

    /// The PAX records of the entry whose header is at `header_pos`: parsed
    /// from the extension headers between the previous entry's end and it.
    pub(crate) fn records(&self, header_pos: u64) -> Result<Vec<Record>, &'static str> {
        let st = self.0.borrow();
        if st.overflow {
            return Err("extension headers larger than 64 MiB");
        }
        // Headers start on 512-byte boundaries; the recording starts where
        // the previous entry's content ended, before its padding.
        let first = st.start.div_ceil(BLOCK) * BLOCK;
        let from = usize::try_from(first - st.start).map_err(|_| "bad offset")?;
        let to = usize::try_from(header_pos.saturating_sub(st.start)).map_err(|_| "bad offset")?;
        if header_pos < first || to > st.buf.len() {
            return Err("extension headers out of place");
        }
        let mut region = &st.buf[from..to];
        let mut records = Vec::new();
        while region.len() >= BLOCK as usize {
            let (header, rest) = region.split_at(BLOCK as usize);
            let size = header_size(header).ok_or("unreadable extension header size")?;
            let size = usize::try_from(size).map_err(|_| "extension header too large")?;
            if size > rest.len() {
                return Err("extension header longer than the archive");
            }
            if header[156] == b'x' {
                if !records.is_empty() {
                    return Err("two PAX headers for one entry");
                }
                records = parse(&rest[..size])?;
            }
            let padded = size.div_ceil(BLOCK as usize) * BLOCK as usize;
            region = &rest[padded.min(rest.len())..];
        }
        Ok(records)
    }
}

/// The size field of a raw tar header (octal, or GNU base-256).
fn header_size(header: &[u8]) -> Option<u64> {
    let field = &header[124..136];
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// Parses PAX records (`<len> <key>=<value>\n`), trusting only the lengths.
pub(crate) fn parse(mut data: &[u8]) -> Result<Vec<Record>, &'static str> {
    let mut out = Vec::new();
    const BAD: &str = "malformed PAX record";
    while let Some(&first) = data.first() {
        if first == 0 {
            break; // NUL padding
        }
        let space = data.iter().take(20).position(|b| *b == b' ').ok_or(BAD)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BAD)?;
        if len < space + 3 || len > data.len() || data[len - 1] != b'\n' {
            return Err(BAD);
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|b| *b == b'=').ok_or(BAD)?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values_with_newlines_survive() {
        let value = b"a\nb\0c";
        let mut rec = b"SCHILY.xattr.user.x=".to_vec();
        rec.extend_from_slice(value);
        let len = rec.len() + 4; // "NN " and "\n", a two-digit length
        let mut data = format!("{len} ").into_bytes();
        data.extend_from_slice(&rec);
        data.push(b'\n');
        assert_eq!(data.len(), len);
        data.extend_from_slice(b"11 path=ab\n");
        let records = parse(&data).unwrap();
        assert_eq!(
            records[0],
            (b"SCHILY.xattr.user.x".to_vec(), value.to_vec())
        );
        assert_eq!(records[1], (b"path".to_vec(), b"ab".to_vec()));
    }

    #[test]
    fn lying_lengths_are_refused() {
        assert!(parse(b"99 path=a\n").is_err());
        assert!(parse(b"5 path=a\n").is_err());
        assert!(parse(b"x path=a\n").is_err());
        assert!(parse(b"10 patha\n\n").is_err());
    }
}
