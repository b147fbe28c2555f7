//! Block-parallel compression on the shared pool, pigz-style.
//!
//! The tar stream is cut into blocks; pool workers compress blocks independently and the thread
//! that writes the tar stream also writes the compressed blocks, in order. Promises:
//! - gzip: each block is one complete gzip member (RFC 1952 allows a file to be a series of
//!   members; gzip, GNU tar, bsdtar, Python and Go read them as one stream), compressed by
//!   libdeflate, which on tar streams of small files is about 3x faster than GNU gzip at the
//!   same level (see docs/performance.md, issue 16). Members are independent, so they can also be
//!   decompressed independently.
//! - zstd: one independent zstd frame per block; concatenated frames are a valid zstd stream.
//! - Memory is bounded: at most twice the workers' number of blocks are out at once.
//! - Errors (a full disk) surface from the `write` that meets them or from [`ParallelWriter::finish`].

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crossbeam::channel::{self, Receiver};

use crate::pool::Pool;

/// Which codec the blocks use.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BlockCodec {
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl BlockCodec {
    fn block_size(self) -> usize {
        match self {
            BlockCodec::Gzip { .. } => 1 << 20,
            BlockCodec::Zstd { .. } => 2 << 20,
        }
    }
}

/// A `Write` that compresses blocks on the pool's workers and writes them to `W` in order, on
/// the thread that writes (no thread of its own).
pub(crate) struct ParallelWriter<W: Write> {
    codec: BlockCodec,
    pool: Pool,
    buf: Vec<u8>,
    /// Blocks sent to the workers, oldest first; each answers on its own channel.
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// Compressor states the workers borrow, at most one a worker.
    spare: Arc<Mutex<Vec<Compressors>>>,
    out: W,
}

impl<W: Write> ParallelWriter<W> {
    pub(crate) fn new(pool: &Pool, codec: BlockCodec, out: W) -> io::Result<ParallelWriter<W>> {
        Ok(ParallelWriter {
            codec,
            pool: pool.clone(),
            buf: Vec::with_capacity(codec.block_size()),
            in_flight: VecDeque::new(),
            spare: Arc::new(Mutex::new(Vec::new())),
            out,
        })
    }

    /// Hands the filled block to a worker; writes out finished blocks while too many are out.
    fn send(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.codec.block_size()));
        let (tx, rx) = channel::bounded(1);
        let (codec, spare) = (self.codec, self.spare.clone());
        self.pool.submit(move || {
            let taken = spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut c = taken.unwrap_or_else(|| Compressors::new(codec));
            let r = c.compress(&data);
            spare.lock().unwrap_or_else(|e| e.into_inner()).push(c);
            let _ = tx.send(r);
        });
        self.in_flight.push_back(rx);
        while self.in_flight.len() > self.pool.threads() * 2 {
            self.write_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest block and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let block = rx
            .recv()
            .map_err(|_| io::Error::other("a compression worker stopped"))??;
        self.out.write_all(&block)
    }

    /// Compresses what is left (an empty stream still gets one member or frame) and returns the
    /// inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.send()?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.codec.block_size() - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.codec.block_size() {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Per-worker compressor state.
struct Compressors {
    codec: BlockCodec,
    deflate: Option<libdeflater::Compressor>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressors {
    fn new(codec: BlockCodec) -> Compressors {
        Compressors {
            codec,
            deflate: None,
            zstd: None,
        }
    }

    fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self.codec {
            BlockCodec::Gzip { level } => {
                let c = match &mut self.deflate {
                    Some(c) => c,
                    None => {
                        let lvl = libdeflater::CompressionLvl::new(level as i32)
                            .map_err(|_| io::Error::other(format!("gzip level {level}")))?;
                        self.deflate.insert(libdeflater::Compressor::new(lvl))
                    }
                };
                let mut out = vec![0; c.gzip_compress_bound(data.len())];
                let n = c.gzip_compress(data, &mut out).map_err(io::Error::other)?;
                out.truncate(n);
                Ok(out)
            }
            BlockCodec::Zstd { level } => {
                let c = match &mut self.zstd {
                    Some(c) => c,
                    None => self.zstd.insert(zstd::bulk::Compressor::new(level)?),
                };
                let out = c.compress(data)?;
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: words with a slowly changing pattern.
        (0..len)
            .map(|i| b"vault backs up folders "[i % 23] ^ ((i / 5000) as u8 & 3))
            .collect()
    }

    #[test]
    fn gzip_blocks_make_ordinary_members() {
        let data = sample(5 * (1 << 20) + 12345);
        for threads in [1, 3] {
            let mut w = ParallelWriter::new(
                &Pool::new(threads),
                BlockCodec::Gzip { level: 6 },
                Vec::new(),
            )
            .unwrap();
            for chunk in data.chunks(70_001) {
                w.write_all(chunk).unwrap();
            }
            let gz = w.finish().unwrap();
            // One member a block: GzDecoder reads only the first; MultiGzDecoder (as gzip
            // and tar do) reads them all.
            let mut first = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut first)
                .unwrap();
            assert_eq!(first.len(), 1 << 20);
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
            assert!(gz.len() < data.len() / 10);
        }
    }

    #[test]
    fn empty_input_and_zstd_frames_round_trip() {
        let w =
            ParallelWriter::new(&Pool::new(2), BlockCodec::Gzip { level: 6 }, Vec::new()).unwrap();
        let gz = w.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());

        let data = sample(5 * (1 << 20));
        let mut w =
            ParallelWriter::new(&Pool::new(2), BlockCodec::Zstd { level: 3 }, Vec::new()).unwrap();
        w.write_all(&data).unwrap();
        let z = w.finish().unwrap();
        let back = zstd::stream::decode_all(&z[..]).unwrap();
        assert_eq!(back, data);
    }
}
