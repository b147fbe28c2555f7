//! Block-parallel compression on the shared pool, pigz-style.
//!
//! The tar stream is cut into blocks; pool workers compress blocks independently and the thread
//! that writes the tar stream also writes the compressed blocks, in order. Promises:
//! - gzip: the result is ONE ordinary gzip member (header, one deflate stream, CRC-32 and size
//!   trailer), so gzip, GNU tar, bsdtar and Python read it like any other. Each block is raw
//!   deflate primed with the previous block's last 32 KiB as dictionary (so matches may reach
//!   back across the cut) and ends with a sync flush, the last with a final block; the CRC-32s of
//!   the blocks are combined in order.
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

const DICT: usize = 32 * 1024;

struct Block {
    data: Vec<u8>,
    /// The previous block's last 32 KiB (gzip only).
    dict: Option<Arc<[u8]>>,
    last: bool,
}

struct Compressed {
    out: Vec<u8>,
    crc: flate2::Crc,
}

/// A `Write` that compresses blocks on the pool's workers and writes them to `W` in order, on
/// the thread that writes (no thread of its own).
pub(crate) struct ParallelWriter<W: Write> {
    codec: BlockCodec,
    pool: Pool,
    buf: Vec<u8>,
    /// Dictionary for the block being filled: the previous block's tail.
    prev_dict: Option<Arc<[u8]>>,
    /// Blocks sent to the workers, oldest first; each answers on its own channel.
    in_flight: VecDeque<Receiver<io::Result<Compressed>>>,
    /// Compressor states the workers borrow, at most one a worker.
    spare: Arc<Mutex<Vec<Compressors>>>,
    out: W,
    crc: flate2::Crc,
}

impl<W: Write> ParallelWriter<W> {
    pub(crate) fn new(pool: &Pool, codec: BlockCodec, mut out: W) -> io::Result<ParallelWriter<W>> {
        if let BlockCodec::Gzip { .. } = codec {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix)
            out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        }
        Ok(ParallelWriter {
            codec,
            pool: pool.clone(),
            buf: Vec::with_capacity(codec.block_size()),
            prev_dict: None,
            in_flight: VecDeque::new(),
            spare: Arc::new(Mutex::new(Vec::new())),
            out,
            crc: flate2::Crc::new(),
        })
    }

    fn dict_of(&self) -> Option<Arc<[u8]>> {
        match self.codec {
            BlockCodec::Gzip { .. } => {
                let start = self.buf.len().saturating_sub(DICT);
                Some(Arc::from(&self.buf[start..]))
            }
            BlockCodec::Zstd { .. } => None,
        }
    }

    /// Hands the filled block to a worker; writes out finished blocks while too many are out.
    fn send(&mut self, last: bool, dict: Option<Arc<[u8]>>) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.codec.block_size()));
        let block = Block { data, dict, last };
        let (tx, rx) = channel::bounded(1);
        let (codec, spare) = (self.codec, self.spare.clone());
        self.pool.submit(move || {
            let taken = spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut c = taken.unwrap_or_else(|| Compressors::new(codec));
            let r = c.compress(block);
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
        let c = rx
            .recv()
            .map_err(|_| io::Error::other("a compression worker stopped"))??;
        self.crc.combine(&c.crc);
        self.out.write_all(&c.out)
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let dict = self.prev_dict.take();
        self.send(true, dict)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        if let BlockCodec::Gzip { .. } = self.codec {
            self.out.write_all(&self.crc.sum().to_le_bytes())?;
            self.out.write_all(&self.crc.amount().to_le_bytes())?;
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
            let next_dict = self.dict_of();
            let dict = std::mem::replace(&mut self.prev_dict, next_dict);
            self.send(false, dict)?;
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
    deflate: Option<flate2::Compress>,
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

    fn compress(&mut self, block: Block) -> io::Result<Compressed> {
        let mut crc = flate2::Crc::new();
        match self.codec {
            BlockCodec::Gzip { level } => {
                crc.update(&block.data);
                let c = self.deflate.get_or_insert_with(|| {
                    flate2::Compress::new(flate2::Compression::new(level), false)
                });
                c.reset();
                if let Some(d) = block.dict.as_deref().filter(|d| !d.is_empty()) {
                    c.set_dictionary(d).map_err(io::Error::other)?;
                }
                let mut out = Vec::with_capacity(block.data.len() / 2 + 1024);
                let flush = if block.last {
                    flate2::FlushCompress::Finish
                } else {
                    flate2::FlushCompress::Sync
                };
                let mut input = &block.data[..];
                loop {
                    if out.capacity() - out.len() < 64 * 1024 {
                        out.reserve(256 * 1024);
                    }
                    let before = c.total_in();
                    let status = c
                        .compress_vec(input, &mut out, flush)
                        .map_err(io::Error::other)?;
                    input = &input[(c.total_in() - before) as usize..];
                    let done = match flush {
                        flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
                        // A sync flush is complete once all input is taken and output had room.
                        _ => input.is_empty() && out.len() < out.capacity(),
                    };
                    if done {
                        break;
                    }
                }
                Ok(Compressed { out, crc })
            }
            BlockCodec::Zstd { level } => {
                let c = match &mut self.zstd {
                    Some(c) => c,
                    None => self.zstd.insert(zstd::bulk::Compressor::new(level)?),
                };
                let out = c.compress(&block.data)?;
                Ok(Compressed { out, crc })
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
    fn gzip_blocks_make_one_ordinary_member() {
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
            // GzDecoder reads exactly one member: all the data must be in it.
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
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
