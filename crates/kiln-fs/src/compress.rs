//! Compression of a layer stream with both of its digests computed on the way.
//!
//! A [`LayerEncoder`] is a [`Write`] for the uncompressed tar. Bytes flow
//!
//! ```text
//! tar ─▶ sha256 (diff_id) ─▶ compressor ─▶ sha256 + count (digest, size) ─▶ out
//! ```
//!
//! so a layer is read from disk once, held in memory never, and comes out
//! with the digest a manifest needs and the diff_id its config needs.
//!
//! # Determinism
//!
//! The same tar and the same [`Encoding`] give the same bytes. Single-stream
//! gzip (`threads: 1`, flate2) and block gzip (`threads >= 2`, gzp: 128 KiB
//! blocks) are two different encodings, each independent of the machine;
//! block gzip output does not depend on the thread count. zstd likewise
//! differs between `workers: 0` and `workers >= 1`, but not between worker
//! counts. Reproducible builds must pin the mode, not the core count.

use std::io::{self, Write};
use std::thread::Scope;

use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use gzp::ZWriter;
use kiln_oci::{Compression, DigestWriter, Digested};

/// What went wrong while compressing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    /// A setting is out of range.
    #[error("invalid compression setting: {0}")]
    InvalidSetting(String),
    /// Writing to the output, or the compressor itself, failed.
    #[error("cannot {op} the compressed layer: {source}")]
    Io {
        /// What was being done (`start`, `write`, `finish`).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The parallel gzip pipeline failed.
    #[error("parallel gzip failed: {0}")]
    ParallelGzip(#[source] gzp::GzpError),
}

/// How to compress a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// A plain tar: the digest is the diff_id.
    None,
    /// gzip at `level` (0–9; 6 is gzip's default). `threads: 1` is one
    /// flate2 (zlib-rs) stream; more compresses 128 KiB blocks on that many
    /// gzp threads (one extra thread writes).
    Gzip {
        /// Compression level, 0–9.
        level: u32,
        /// Compressor threads; 1 for single-stream gzip.
        threads: usize,
    },
    /// zstd at `level` (1–22; 3 is zstd's default) with `workers` extra
    /// threads (0: compress on the calling thread).
    Zstd {
        /// Compression level, 1–22.
        level: i32,
        /// Worker threads; 0 for none.
        workers: u32,
    },
}

impl Default for Encoding {
    /// gzip level 6 on one thread: what every registry and runtime reads.
    fn default() -> Self {
        Encoding::Gzip {
            level: 6,
            threads: 1,
        }
    }
}

impl Encoding {
    /// The compression, as media types name it.
    pub fn compression(&self) -> Compression {
        match self {
            Encoding::None => Compression::None,
            Encoding::Gzip { .. } => Compression::Gzip,
            Encoding::Zstd { .. } => Compression::Zstd,
        }
    }

    fn check(&self) -> Result<(), CompressError> {
        match *self {
            Encoding::Gzip { level, threads } => {
                if level > 9 {
                    return Err(CompressError::InvalidSetting(format!(
                        "gzip level {level} is not in 0..=9"
                    )));
                }
                if threads == 0 {
                    return Err(CompressError::InvalidSetting(
                        "gzip needs at least 1 thread".into(),
                    ));
                }
            }
            Encoding::Zstd { level, .. } => {
                if !(1..=22).contains(&level) {
                    return Err(CompressError::InvalidSetting(format!(
                        "zstd level {level} is not in 1..=22"
                    )));
                }
            }
            Encoding::None => {}
        }
        Ok(())
    }
}

/// The two digests of a compressed layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compressed {
    /// Digest and size of the uncompressed stream (the config's diff_id).
    pub diff_id: Digested,
    /// Digest and size of the bytes written out (the manifest's descriptor).
    pub digest: Digested,
}

enum Inner<'s, W: Write + Send + 's> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<DigestWriter<W>>),
    ParGzip(ParCompress<'s, Gzip, DigestWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, DigestWriter<W>>),
}

impl<W: Write + Send> Write for Inner<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Inner::Plain(w) => w.write(buf),
            Inner::Gzip(w) => w.write(buf),
            Inner::ParGzip(w) => w.write(buf),
            Inner::Zstd(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Inner::Plain(w) => w.write_all(buf),
            Inner::Gzip(w) => w.write_all(buf),
            Inner::ParGzip(w) => w.write_all(buf),
            Inner::Zstd(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(w) => w.flush(),
            Inner::ParGzip(w) => w.flush(),
            Inner::Zstd(w) => w.flush(),
        }
    }
}

/// A [`Write`] for an uncompressed layer that compresses it into `W` and
/// computes its diff_id and digest. Call [`finish`](LayerEncoder::finish).
///
/// Give it large writes (a `BufWriter` in front): every write is hashed and
/// handed to the compressor as it comes.
pub struct LayerEncoder<'s, W: Write + Send + 's> {
    tar: DigestWriter<Inner<'s, W>>,
}

impl<W: Write + Send + 'static> LayerEncoder<'static, W> {
    /// An encoder writing to `out`. Block gzip runs its threads detached,
    /// which is why `out` must be `'static` here; see [`LayerEncoder::scoped`].
    pub fn new(out: W, encoding: &Encoding) -> Result<Self, CompressError> {
        Self::build(out, encoding, |b, w| b.from_writer(w))
    }
}

impl<'s, W: Write + Send + 's> LayerEncoder<'s, W> {
    /// An encoder whose block-gzip threads live in `scope`, so `out` may
    /// borrow.
    pub fn scoped<'env>(
        out: W,
        encoding: &Encoding,
        scope: &'s Scope<'s, 'env>,
    ) -> Result<Self, CompressError> {
        Self::build(out, encoding, |b, w| b.from_borrowed_writer(w, scope))
    }

    fn build(
        out: W,
        encoding: &Encoding,
        par: impl FnOnce(
            ParCompressBuilder<Gzip>,
            DigestWriter<W>,
        ) -> ParCompress<'s, Gzip, DigestWriter<W>>,
    ) -> Result<Self, CompressError> {
        encoding.check()?;
        let inner = match *encoding {
            Encoding::None => Inner::Plain(out),
            Encoding::Gzip { level, threads: 1 } => Inner::Gzip(flate2::write::GzEncoder::new(
                DigestWriter::wrap(out),
                flate2::Compression::new(level),
            )),
            Encoding::Gzip { level, threads } => {
                let builder = ParCompressBuilder::<Gzip>::new()
                    .num_threads(threads)
                    .map_err(CompressError::ParallelGzip)?
                    .compression_level(flate2::Compression::new(level));
                Inner::ParGzip(par(builder, DigestWriter::wrap(out)))
            }
            Encoding::Zstd { level, workers } => {
                let start = |source| CompressError::Io {
                    op: "start",
                    source,
                };
                let mut enc = zstd::stream::write::Encoder::new(DigestWriter::wrap(out), level)
                    .map_err(start)?;
                if workers > 0 {
                    enc.multithread(workers).map_err(start)?;
                }
                enc.include_checksum(true).map_err(start)?;
                Inner::Zstd(enc)
            }
        };
        Ok(LayerEncoder {
            tar: DigestWriter::wrap(inner),
        })
    }

    /// Ends the compressed stream, flushes `out`, and gives it back with the
    /// two digests.
    pub fn finish(self) -> Result<(W, Compressed), CompressError> {
        let finish = |source| CompressError::Io {
            op: "finish",
            source,
        };
        let (inner, diff_id) = self.tar.finish();
        let done = |mut w: DigestWriter<W>, diff_id: Digested| {
            w.flush().map_err(finish)?;
            let (w, digest) = w.finish();
            Ok((w, Compressed { diff_id, digest }))
        };
        match inner {
            Inner::Plain(mut w) => {
                w.flush().map_err(finish)?;
                Ok((
                    w,
                    Compressed {
                        digest: diff_id.clone(),
                        diff_id,
                    },
                ))
            }
            Inner::Gzip(enc) => done(enc.finish().map_err(finish)?, diff_id),
            Inner::ParGzip(mut enc) => match enc.finish() {
                Ok(w) => done(w, diff_id),
                Err(gzp::GzpError::Io(source)) => Err(finish(source)),
                Err(e) => Err(CompressError::ParallelGzip(e)),
            },
            Inner::Zstd(enc) => done(enc.finish().map_err(finish)?, diff_id),
        }
    }
}

impl<W: Write + Send> Write for LayerEncoder<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tar.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tar.flush()
    }
}

/// Runs `produce` against a [`LayerEncoder`] for `out`, with block-gzip
/// threads scoped to this call, and returns what `produce` returned with
/// the digests.
pub fn encode_with<W, T, E>(
    out: W,
    encoding: &Encoding,
    produce: impl FnOnce(&mut LayerEncoder<'_, W>) -> Result<T, E>,
) -> Result<(T, Compressed), E>
where
    W: Write + Send,
    E: From<CompressError>,
{
    std::thread::scope(|scope| {
        let mut enc = LayerEncoder::scoped(out, encoding, scope)?;
        let value = produce(&mut enc)?;
        let (_, compressed) = enc.finish()?;
        Ok((value, compressed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::Digest;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..200_000u32 {
            v.extend_from_slice(format!("line {i} of a layer that compresses\n").as_bytes());
        }
        v
    }

    fn roundtrip(encoding: Encoding) -> (Vec<u8>, Compressed) {
        let data = sample();
        let mut enc = LayerEncoder::new(Vec::new(), &encoding).unwrap();
        for chunk in data.chunks(70_000) {
            enc.write_all(chunk).unwrap();
        }
        let (out, c) = enc.finish().unwrap();
        assert_eq!(c.diff_id.digest, Digest::of(&data));
        assert_eq!(c.diff_id.size, data.len() as u64);
        assert_eq!(c.digest.digest, Digest::of(&out));
        assert_eq!(c.digest.size, out.len() as u64);
        let back = match encoding.compression() {
            Compression::None => out.clone(),
            Compression::Gzip => {
                let mut v = Vec::new();
                flate2::read::MultiGzDecoder::new(&out[..])
                    .read_to_end(&mut v)
                    .unwrap();
                v
            }
            Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
        };
        assert_eq!(back, data);
        (out, c)
    }

    #[test]
    fn every_encoding_round_trips_with_both_digests() {
        let (_, plain) = roundtrip(Encoding::None);
        assert_eq!(plain.digest, plain.diff_id);
        roundtrip(Encoding::default());
        roundtrip(Encoding::Gzip {
            level: 6,
            threads: 2,
        });
        roundtrip(Encoding::Zstd {
            level: 3,
            workers: 0,
        });
        roundtrip(Encoding::Zstd {
            level: 3,
            workers: 2,
        });
    }

    #[test]
    fn block_gzip_output_does_not_depend_on_thread_count() {
        let two = roundtrip(Encoding::Gzip {
            level: 6,
            threads: 2,
        });
        let three = roundtrip(Encoding::Gzip {
            level: 6,
            threads: 3,
        });
        assert_eq!(two.0, three.0);
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        for bad in [
            Encoding::Gzip {
                level: 10,
                threads: 1,
            },
            Encoding::Gzip {
                level: 6,
                threads: 0,
            },
            Encoding::Zstd {
                level: 0,
                workers: 0,
            },
        ] {
            assert!(matches!(
                LayerEncoder::new(Vec::new(), &bad),
                Err(CompressError::InvalidSetting(_))
            ));
        }
    }

    #[test]
    fn encode_with_lets_the_output_borrow() {
        let mut out = Vec::new();
        let ((), c) = encode_with(
            &mut out,
            &Encoding::Gzip {
                level: 1,
                threads: 2,
            },
            |w| {
                w.write_all(b"hello").map_err(|source| CompressError::Io {
                    op: "write",
                    source,
                })
            },
        )
        .unwrap();
        assert_eq!(c.digest.digest, Digest::of(&out));
        assert_eq!(c.diff_id.digest, Digest::of(b"hello"));
    }
}
