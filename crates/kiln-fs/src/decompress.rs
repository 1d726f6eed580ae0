//! Decompression of layer streams, chosen by magic bytes.

use std::io::{self, BufReader, Cursor, Read};

use kiln_oci::Compression;

/// A reader that decompresses a layer stream, choosing gzip, zstd or nothing
/// by the stream's first bytes.
pub struct Decompressor<R: Read> {
    inner: Inner<R>,
    compression: Compression,
}

type Prefixed<R> = io::Chain<Cursor<Vec<u8>>, R>;

enum Inner<R: Read> {
    Plain(Prefixed<R>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<BufReader<Prefixed<R>>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Prefixed<R>>>>),
}

/// How many bytes the magic-byte detection looks at.
const MAGIC_LEN: usize = 6;

impl<R: Read> Decompressor<R> {
    /// Reads the first bytes of `reader` and sets up the matching decoder.
    ///
    /// xz and bzip2 streams are refused with an `InvalidData` error.
    pub fn new(mut reader: R) -> io::Result<Self> {
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
        let compression = detect(&prefix)?;
        let stream = Cursor::new(prefix).chain(reader);
        let inner = match compression {
            Compression::None => Inner::Plain(stream),
            Compression::Gzip => Inner::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(
                BufReader::with_capacity(128 * 1024, stream),
            ))),
            Compression::Zstd => Inner::Zstd(Box::new(zstd::stream::read::Decoder::with_buffer(
                BufReader::with_capacity(128 * 1024, stream),
            )?)),
        };
        Ok(Decompressor { inner, compression })
    }

    /// The compression the magic bytes showed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Gives back the compressed stream. Bytes the decoder buffered but did
    /// not use are lost: read the decompressed stream to its end first.
    pub fn into_inner(self) -> R {
        match self.inner {
            Inner::Plain(c) => c.into_inner().1,
            Inner::Gzip(d) => d.into_inner().into_inner().into_inner().1,
            Inner::Zstd(d) => d.finish().into_inner().into_inner().1,
        }
    }
}

impl<R: Read> Read for Decompressor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(r) => r.read(buf),
            Inner::Gzip(r) => r.read(buf),
            Inner::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: Read> std::fmt::Debug for Decompressor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

/// The compression a stream starting with `prefix` uses, by magic bytes.
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
    match prefix {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        // A zstd skippable frame (0x184D2A5?, little-endian) may lead the stream.
        [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50 => Ok(Compression::Zstd),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => unsupported("xz"),
        [b'B', b'Z', b'h', ..] => unsupported("bzip2"),
        _ => Ok(Compression::None),
    }
}
