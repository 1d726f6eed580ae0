//! Content digests (`sha256:<hex>`), streaming hashers and verification.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::error::Error;

/// A digest algorithm kiln understands.
///
/// kiln writes sha256 only. sha512 is accepted when parsing and verifying,
/// because the OCI spec registers it and some registries serve it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256, the default everywhere.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in a digest string (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The number of hex characters in an encoded digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest such as `sha256:e3b0c442…`.
///
/// The encoded part is always lowercase hex of the algorithm's exact length.
/// It serializes as its string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses `algorithm:hex`, refusing unknown algorithms, uppercase and wrong lengths.
    pub fn parse(input: &str) -> Result<Digest, Error> {
        let invalid = |reason| Error::InvalidDigest {
            input: input.to_owned(),
            reason,
        };
        let (alg, hex) = input
            .split_once(':')
            .ok_or_else(|| invalid("expected <algorithm>:<hex>"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm (sha256 or sha512 expected)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(invalid(match algorithm {
                Algorithm::Sha256 => "a sha256 digest has 64 hex characters",
                Algorithm::Sha512 => "a sha512 digest has 128 hex characters",
            }));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("the encoded part must be lowercase hex"));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::of_with(Algorithm::Sha256, bytes)
    }

    /// The digest of `bytes` with the given algorithm.
    pub fn of_with(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (lowercase hex) part, as used for blob file names.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks that `bytes` hash to this digest (with this digest's algorithm).
    pub fn verify(&self, bytes: &[u8]) -> Result<(), Error> {
        let actual = Digest::of_with(self.algorithm, bytes);
        if actual == *self {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                expected: self.clone(),
                actual,
            })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The outcome of hashing a stream: its digest and how many bytes it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digested {
    /// The digest of the bytes.
    pub digest: Digest,
    /// The number of bytes.
    pub size: u64,
}

impl Digested {
    /// Checks size (when given) and digest against what was expected.
    ///
    /// The size is compared first: it is the cheaper, clearer message when a
    /// transfer was cut short.
    pub fn verify(&self, expected: &Digest, expected_size: Option<u64>) -> Result<(), Error> {
        if let Some(size) = expected_size {
            if size != self.size {
                return Err(Error::SizeMismatch {
                    digest: expected.clone(),
                    expected: size,
                    actual: self.size,
                });
            }
        }
        if *expected != self.digest {
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                actual: self.digest.clone(),
            });
        }
        Ok(())
    }
}

/// An incremental hasher for one [`Algorithm`].
#[derive(Clone)]
pub struct Hasher(HasherInner);

#[derive(Clone)]
enum HasherInner {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Hasher {
        Hasher(match algorithm {
            Algorithm::Sha256 => HasherInner::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => HasherInner::Sha512(sha2::Sha512::new()),
        })
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self.0 {
            HasherInner::Sha256(_) => Algorithm::Sha256,
            HasherInner::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            HasherInner::Sha256(h) => h.update(bytes),
            HasherInner::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self.0 {
            HasherInner::Sha256(h) => to_hex(&h.finalize()),
            HasherInner::Sha512(h) => to_hex(&h.finalize()),
        };
        Digest { algorithm, hex }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hasher").field(&self.algorithm()).finish()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// A [`Write`] adapter that hashes and counts every byte written through it.
///
/// With [`DigestWriter::new`] it wraps nothing ([`io::Sink`]) and is a plain
/// streaming hasher; with [`DigestWriter::wrap`] it hashes on the way to a file.
#[derive(Debug)]
pub struct DigestWriter<W = io::Sink> {
    inner: W,
    hasher: Hasher,
    size: u64,
}

impl DigestWriter<io::Sink> {
    /// A sha256 hasher that keeps no bytes.
    pub fn new() -> Self {
        DigestWriter::wrap(io::sink())
    }
}

impl Default for DigestWriter<io::Sink> {
    fn default() -> Self {
        DigestWriter::new()
    }
}

impl<W: Write> DigestWriter<W> {
    /// Hashes with sha256 while writing to `inner`.
    pub fn wrap(inner: W) -> Self {
        DigestWriter::with_algorithm(inner, Algorithm::Sha256)
    }

    /// Hashes with `algorithm` while writing to `inner`.
    pub fn with_algorithm(inner: W, algorithm: Algorithm) -> Self {
        DigestWriter {
            inner,
            hasher: Hasher::new(algorithm),
            size: 0,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of what was written so far, without consuming the writer.
    pub fn digested(&self) -> Digested {
        Digested {
            digest: self.hasher.clone().finish(),
            size: self.size,
        }
    }

    /// The wrapped writer, for flushing or syncing before [`finish`](Self::finish).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Gives back the inner writer with the digest and byte count.
    pub fn finish(self) -> (W, Digested) {
        let digested = Digested {
            digest: self.hasher.finish(),
            size: self.size,
        };
        (self.inner, digested)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A [`Read`] adapter that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct DigestReader<R> {
    inner: R,
    hasher: Hasher,
    size: u64,
}

impl<R: Read> DigestReader<R> {
    /// Hashes with sha256 what is read from `inner`.
    pub fn new(inner: R) -> Self {
        DigestReader::with_algorithm(inner, Algorithm::Sha256)
    }

    /// Hashes with `algorithm` what is read from `inner`.
    pub fn with_algorithm(inner: R, algorithm: Algorithm) -> Self {
        DigestReader {
            inner,
            hasher: Hasher::new(algorithm),
            size: 0,
        }
    }

    /// Bytes read so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of what was read so far.
    pub fn digested(&self) -> Digested {
        Digested {
            digest: self.hasher.clone().finish(),
            size: self.size,
        }
    }

    /// Gives back the inner reader with the digest and byte count.
    pub fn finish(self) -> (R, Digested) {
        let digested = Digested {
            digest: self.hasher.finish(),
            size: self.size,
        };
        (self.inner, digested)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// A [`Read`] adapter that fails unless the stream has exactly the expected
/// size and digest.
///
/// A stream longer than `size` fails as soon as the extra byte arrives; a wrong
/// digest or a short stream fails at end of stream. The failure is an
/// [`io::ErrorKind::InvalidData`] error whose inner error is this crate's
/// [`Error`] (`SizeMismatch` or `DigestMismatch`); [`Error::from_io`] gets it back.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: DigestReader<R>,
    expected: Digest,
    size: u64,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// Verifies `inner` against `expected` and `size` while it is read.
    pub fn new(inner: R, expected: Digest, size: u64) -> Self {
        let algorithm = expected.algorithm();
        VerifyingReader {
            inner: DigestReader::with_algorithm(inner, algorithm),
            expected,
            size,
            verified: false,
        }
    }

    /// True once the whole stream was read and matched.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// Gives back the inner reader.
    pub fn into_inner(self) -> R {
        self.inner.finish().0
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.verified || buf.is_empty() {
            return Ok(0);
        }
        // Ask for at most one byte past the expected end: enough to notice a
        // stream that is too long without reading the rest of it.
        let room = (self.size - self.inner.size()).saturating_add(1);
        let limit = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..limit])?;
        if self.inner.size() > self.size || n == 0 {
            let digested = self.inner.digested();
            if let Err(e) = digested.verify(&self.expected, Some(self.size)) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

impl Error {
    /// Recovers a kiln-oci error carried inside an [`io::Error`] (as
    /// [`VerifyingReader`] produces), or wraps the I/O error as [`Error::Read`].
    pub fn from_io(what: impl Into<String>, err: io::Error) -> Error {
        match err.downcast::<Error>() {
            Ok(e) => e,
            Err(source) => Error::Read {
                what: what.into(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn of_empty_is_the_well_known_digest() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
    }

    #[test]
    fn parse_round_trips_through_display() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(format!("{d:?}"), format!("Digest({EMPTY})"));
    }

    #[test]
    fn parse_refuses_uppercase_wrong_length_and_unknown_algorithms() {
        for bad in [
            EMPTY.to_uppercase(),
            EMPTY
                .replace("sha256:", "sha256:A")
                .chars()
                .take(71)
                .collect(),
            format!("{EMPTY}0"),
            EMPTY[..70].to_owned(),
            EMPTY.replace("sha256", "md5"),
            EMPTY.replace(':', ""),
            EMPTY.replace("e3b0", "g3b0"),
            String::new(),
        ] {
            assert!(
                matches!(Digest::parse(&bad), Err(Error::InvalidDigest { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn sha512_digests_parse_and_verify() {
        let d = Digest::of_with(Algorithm::Sha512, b"abc");
        assert_eq!(d.hex().len(), 128);
        let parsed = Digest::parse(&d.to_string()).unwrap();
        assert_eq!(parsed, d);
        parsed.verify(b"abc").unwrap();
        assert!(parsed.verify(b"abd").is_err());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d = Digest::of(b"");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:abc\"").is_err());
    }

    #[test]
    fn digest_writer_hashes_and_counts_what_passes_through() {
        let mut w = DigestWriter::wrap(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.digested().size, 11);
        let (bytes, d) = w.finish();
        assert_eq!(bytes, b"hello world");
        assert_eq!(d.size, 11);
        assert_eq!(d.digest, Digest::of(b"hello world"));
    }

    #[test]
    fn digest_reader_hashes_what_is_read() {
        let mut r = DigestReader::new(&b"some bytes"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (_, d) = r.finish();
        assert_eq!(d.digest, Digest::of(b"some bytes"));
        assert_eq!(d.size, 10);
    }

    #[test]
    fn verifying_reader_accepts_exact_content() {
        let data = b"layer bytes";
        let mut r = VerifyingReader::new(&data[..], Digest::of(data), data.len() as u64);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(r.is_verified());
        assert_eq!(out, data);
    }

    #[test]
    fn verifying_reader_refuses_wrong_digest_short_and_long_streams() {
        let data = b"layer bytes";
        let cases: [(&[u8], u64); 3] = [
            (b"layer bytez", data.len() as u64),
            (b"layer", data.len() as u64),
            (b"layer bytes and more", data.len() as u64),
        ];
        for (content, size) in cases {
            let mut r = VerifyingReader::new(content, Digest::of(data), size);
            let err = r.read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let err = Error::from_io("test", err);
            assert!(
                matches!(
                    err,
                    Error::DigestMismatch { .. } | Error::SizeMismatch { .. }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn digested_verify_reports_size_before_digest() {
        let d = Digested {
            digest: Digest::of(b"a"),
            size: 1,
        };
        d.verify(&Digest::of(b"a"), Some(1)).unwrap();
        d.verify(&Digest::of(b"a"), None).unwrap();
        assert!(matches!(
            d.verify(&Digest::of(b"b"), Some(2)),
            Err(Error::SizeMismatch {
                expected: 2,
                actual: 1,
                ..
            })
        ));
        assert!(matches!(
            d.verify(&Digest::of(b"b"), Some(1)),
            Err(Error::DigestMismatch { .. })
        ));
    }
}
