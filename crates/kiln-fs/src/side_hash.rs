//! Hashing on a side thread: unpacking a layer hashes both the compressed blob and the
//! tar inside it, and on one thread those two SHA-256 passes cost about as much as
//! inflating and writing the files; on their own threads they overlap with that work.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use kiln_oci::{Algorithm, Digested, Hasher};

/// Bytes handed to the hashing thread at a time (reads through the reader may be as small as
/// a tar header).
const BATCH: usize = 256 * 1024;

/// A [`Read`] adapter that hashes and counts what passes through it, on another thread.
pub(crate) struct SideHashReader<R> {
    inner: R,
    batch: Vec<u8>,
    hashing: Hashing,
}

enum Hashing {
    Side {
        tx: SyncSender<Vec<u8>>,
        worker: JoinHandle<Digested>,
    },
    /// No thread could be started: hash inline.
    Inline { hasher: Hasher, size: u64 },
}

impl<R: Read> SideHashReader<R> {
    pub(crate) fn new(inner: R, algorithm: Algorithm) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(8);
        let spawned = std::thread::Builder::new()
            .name("kiln-hash".into())
            .spawn(move || {
                let mut hasher = Hasher::new(algorithm);
                let mut size = 0u64;
                for chunk in rx {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                }
                Digested {
                    digest: hasher.finish(),
                    size,
                }
            });
        let hashing = match spawned {
            Ok(worker) => Hashing::Side { tx, worker },
            Err(_) => Hashing::Inline {
                hasher: Hasher::new(algorithm),
                size: 0,
            },
        };
        SideHashReader {
            inner,
            batch: Vec::with_capacity(BATCH),
            hashing,
        }
    }

    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        match &mut self.hashing {
            Hashing::Side { tx, .. } => {
                let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
                // The worker only stops when the sender drops; a send cannot fail before.
                let _ = tx.send(full);
            }
            Hashing::Inline { hasher, size } => {
                hasher.update(&self.batch);
                *size += self.batch.len() as u64;
                self.batch.clear();
            }
        }
    }

    /// The inner reader and the digest of everything read through this one.
    pub(crate) fn finish(mut self) -> (R, Digested) {
        self.hand_over();
        let digested = match self.hashing {
            Hashing::Side { tx, worker } => {
                drop(tx);
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            Hashing::Inline { hasher, size } => Digested {
                digest: hasher.finish(),
                size,
            },
        };
        (self.inner, digested)
    }
}

impl<R: Read> Read for SideHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.batch.extend_from_slice(&buf[..n]);
        if self.batch.len() >= BATCH {
            self.hand_over();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_what_was_read_in_any_read_sizes() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut reader = SideHashReader::new(&data[..], Algorithm::Sha256);
        let mut out = Vec::new();
        let mut buf = [0u8; 513];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let (_, digested) = reader.finish();
        assert_eq!(out, data);
        assert_eq!(digested.size, data.len() as u64);
        assert_eq!(digested.digest, kiln_oci::Digest::of(&data));
    }
}
