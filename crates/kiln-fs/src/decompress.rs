//! Decompression chosen by magic bytes: the one sniffer for every stream kiln reads. Layers may be
//! plain, gzip or zstd ([`Decompressor::new`]); archives ADD extracts may also be bzip2 or xz
//! ([`Decompressor::any_format`]), as docker's `archive.DecompressStream` accepts.

use std::io::{self, BufReader, Cursor, Read};

use kiln_oci::Compression;

/// What a stream's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Nothing recognised: taken as uncompressed.
    Plain,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (its frame magic, or a skippable frame first).
    Zstd,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
}

/// The format of a stream starting with `prefix` (at least [`MAGIC_LEN`] bytes when the stream
/// has them).
pub fn sniff(prefix: &[u8]) -> Format {
    match prefix {
        [0x1f, 0x8b, ..] => Format::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Format::Zstd,
        // A zstd skippable frame (0x184D2A5?, little-endian) may lead the stream.
        [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50 => Format::Zstd,
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Format::Xz,
        [b'B', b'Z', b'h', ..] => Format::Bzip2,
        _ => Format::Plain,
    }
}

/// A reader that decompresses a stream, choosing the decoder by the stream's first bytes.
pub struct Decompressor<R: Read> {
    inner: Inner<R>,
    format: Format,
}

type Prefixed<R> = io::Chain<Cursor<Vec<u8>>, R>;

enum Inner<R: Read> {
    Plain(Prefixed<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Prefixed<R>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Prefixed<R>>>>),
    Bzip2(Box<bzip2::bufread::MultiBzDecoder<BufReader<Prefixed<R>>>>),
    Xz(Box<liblzma::bufread::XzDecoder<BufReader<Prefixed<R>>>>),
}

/// How many bytes the magic-byte detection looks at.
pub const MAGIC_LEN: usize = 6;

impl<R: Read> Decompressor<R> {
    /// A layer stream: plain, gzip or zstd. xz and bzip2 (which OCI layers may not use) are
    /// refused with an `InvalidData` error.
    pub fn new(reader: R) -> io::Result<Self> {
        Self::open(reader, false)
    }

    /// An archive in any of the five formats (ADD's local archives).
    pub fn any_format(reader: R) -> io::Result<Self> {
        Self::open(reader, true)
    }

    fn open(mut reader: R, any: bool) -> io::Result<Self> {
        let mut prefix = Vec::with_capacity(MAGIC_LEN);
        let mut chunk = [0u8; MAGIC_LEN];
        while prefix.len() < MAGIC_LEN {
            match reader.read(&mut chunk[..MAGIC_LEN - prefix.len()]) {
                Ok(0) => break,
                Ok(n) => prefix.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let format = sniff(&prefix);
        if !any {
            detect(&prefix)?;
        }
        let stream = Cursor::new(prefix).chain(reader);
        let buffered = |stream| BufReader::with_capacity(128 * 1024, stream);
        let inner = match format {
            Format::Plain => Inner::Plain(stream),
            Format::Gzip => Inner::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buffered(
                stream,
            )))),
            Format::Zstd => Inner::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(
                buffered(stream),
            )?)),
            Format::Bzip2 => Inner::Bzip2(Box::new(bzip2::bufread::MultiBzDecoder::new(buffered(
                stream,
            )))),
            Format::Xz => Inner::Xz(Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(
                buffered(stream),
            ))),
        };
        Ok(Decompressor { inner, format })
    }

    /// The format the magic bytes showed.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The layer compression the magic bytes showed (`None` for a plain stream; a bzip2 or xz
    /// archive, which only [`any_format`](Self::any_format) opens, also reports `None`).
    pub fn compression(&self) -> Compression {
        match self.format {
            Format::Gzip => Compression::Gzip,
            Format::Zstd => Compression::Zstd,
            Format::Plain | Format::Bzip2 | Format::Xz => Compression::None,
        }
    }

    /// Gives back the compressed stream. Bytes the decoder buffered but did
    /// not use are lost: read the decompressed stream to its end first.
    pub fn into_inner(self) -> R {
        match self.inner {
            Inner::Plain(c) => c.into_inner().1,
            Inner::Gzip(d) => d.into_inner().into_inner().into_inner().1,
            Inner::Zstd(d) => d.finish().into_inner().into_inner().1,
            Inner::Bzip2(d) => d.into_inner().into_inner().into_inner().1,
            Inner::Xz(d) => d.into_inner().into_inner().into_inner().1,
        }
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(r) => r.read(buf),
            Inner::Gzip(r) => r.read(buf),
            Inner::Zstd(r) => r.read(buf),
            Inner::Bzip2(r) => r.read(buf),
            Inner::Xz(r) => r.read(buf),
        }
    }
}

impl<R: Read> std::fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// The layer compression of a stream starting with `prefix`, by magic bytes.
///
/// Anything unrecognised is taken to be a plain tar; xz and bzip2 are
/// recognised only to be refused.
pub fn detect(prefix: &[u8]) -> io::Result<Compression> {
    let unsupported = |what: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}-compressed layers are not supported (gzip, zstd or plain tar)"),
        ))
    };
    match sniff(prefix) {
        Format::Plain => Ok(Compression::None),
        Format::Gzip => Ok(Compression::Gzip),
        Format::Zstd => Ok(Compression::Zstd),
        Format::Xz => unsupported("xz"),
        Format::Bzip2 => unsupported("bzip2"),
    }
}
