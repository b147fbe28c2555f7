//! Block-parallel compression on the shared pool, pigz-style.
//!
//! The tar stream is cut into blocks; pool workers compress blocks independently and one thread
//! writes them in order. Promises:
//! - gzip: the result is ONE ordinary gzip member (header, one deflate stream, CRC-32 and size
//!   trailer), so gzip, GNU tar, bsdtar and Python read it like any other. Each block is raw
//!   deflate primed with the previous block's last 32 KiB as dictionary (so matches may reach
//!   back across the cut) and ends with a sync flush, the last with a final block; the CRC-32s of
//!   the blocks are combined in order.
//! - zstd: one independent zstd frame per block; concatenated frames are a valid zstd stream.
//! - Memory is bounded: a bounded queue to the compressors and the pool's in-flight window.
//! - Errors (a full disk) surface from [`ParallelWriter::finish`] or from the next `write`.

use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{self, Sender};

use crate::pool::{CancelToken, Pool, PoolError};

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

/// A `Write` that compresses on the pool and writes to `W` in order.
pub(crate) struct ParallelWriter<W: Write + Send + 'static> {
    codec: BlockCodec,
    buf: Vec<u8>,
    /// Dictionary for the block being filled: the previous block's tail.
    prev_dict: Option<Arc<[u8]>>,
    tx: Option<Sender<Block>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParallelWriter<W> {
    pub(crate) fn new(pool: &Pool, codec: BlockCodec, out: W) -> ParallelWriter<W> {
        let (tx, rx) = channel::bounded::<Block>(pool.threads() * 2);
        let pool = pool.clone();
        let writer = std::thread::spawn(move || -> io::Result<W> {
            let mut out = out;
            let mut total_crc = flate2::Crc::new();
            if let BlockCodec::Gzip { .. } = codec {
                // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=3 (Unix)
                out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
            }
            let mut write_err: Option<io::Error> = None;
            let r = pool.map_ordered(
                &CancelToken::new(),
                rx,
                || Compressors::new(codec),
                |c, block| c.compress(block),
                |res: io::Result<Compressed>| -> io::Result<()> {
                    let c = res?;
                    total_crc.combine(&c.crc);
                    out.write_all(&c.out)
                },
            );
            match r {
                Ok(()) => {}
                Err(PoolError::Sink(e)) => write_err = Some(e),
                Err(PoolError::WorkerPanicked(m)) => write_err = Some(io::Error::other(m)),
                Err(PoolError::Cancelled) => write_err = Some(io::Error::other("cancelled")),
            }
            if let Some(e) = write_err {
                return Err(e);
            }
            if let BlockCodec::Gzip { .. } = codec {
                out.write_all(&total_crc.sum().to_le_bytes())?;
                out.write_all(&total_crc.amount().to_le_bytes())?;
            }
            Ok(out)
        });
        ParallelWriter {
            codec,
            buf: Vec::with_capacity(codec.block_size()),
            prev_dict: None,
            tx: Some(tx),
            writer: Some(writer),
        }
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

    fn send(&mut self, last: bool, dict: Option<Arc<[u8]>>) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.codec.block_size()));
        let tx = self.tx.as_ref().expect("writer finished");
        if tx.send(Block { data, dict, last }).is_err() {
            // The writer stopped early: its error tells why.
            return Err(self.join_error());
        }
        Ok(())
    }

    fn join_error(&mut self) -> io::Error {
        self.tx = None;
        match self.writer.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("compression thread panicked"),
            _ => io::Error::other("compression stopped"),
        }
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let dict = self.prev_dict.take();
        self.send(true, dict)?;
        self.tx = None;
        match self.writer.take().expect("finish once").join() {
            Ok(r) => r,
            Err(_) => Err(io::Error::other("compression thread panicked")),
        }
    }
}

impl<W: Write + Send + 'static> Write for ParallelWriter<W> {
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

impl<W: Write + Send + 'static> Drop for ParallelWriter<W> {
    fn drop(&mut self) {
        // Abandoned: stop the writer thread and wait for it, discarding its result.
        self.tx = None;
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
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
            );
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
        let w = ParallelWriter::new(&Pool::new(2), BlockCodec::Gzip { level: 6 }, Vec::new());
        let gz = w.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());

        let data = sample(5 * (1 << 20));
        let mut w = ParallelWriter::new(&Pool::new(2), BlockCodec::Zstd { level: 3 }, Vec::new());
        w.write_all(&data).unwrap();
        let z = w.finish().unwrap();
        let back = zstd::stream::decode_all(&z[..]).unwrap();
        assert_eq!(back, data);
    }
}
