//! Sparse files: finding their data with `SEEK_DATA`/`SEEK_HOLE` (holes are never read), the
//! member form GNU tar restores as sparse (PAX `GNU.sparse` 1.0: a map block, then the data
//! regions), and writing them back with holes.
//!
//! The map block is text: the number of regions, then each region's offset and length, one
//! number a line, padded with NULs to a multiple of 512 bytes. The last region always ends at
//! the file's size (a zero-length region when the file ends in a hole), so the map alone
//! fixes the file's length. A sparse file's digest is that of its member data (map block and
//! data regions): holes cost nothing to hash, and the digest still names exactly one content.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Most regions a file may have and still be stored sparse (beyond, it is stored whole).
const MAX_REGIONS: usize = 1 << 16;
/// Holes smaller than this in total are not worth a sparse member.
const MIN_HOLES: u64 = 64 * 1024;

/// The data regions of a file: (offset, length), in order, the last ending at the size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map(pub Vec<(u64, u64)>);

impl Map {
    /// The data regions of `f` (of `size` bytes) when it has holes worth keeping; None for a
    /// file stored whole (no holes, too many regions, or no `SEEK_DATA` support).
    pub fn of(f: &File, size: u64) -> io::Result<Option<Map>> {
        let fd = f.as_raw_fd();
        let mut regions = Vec::new();
        let mut pos = 0u64;
        while pos < size {
            let Some(start) = seek(fd, pos, libc::SEEK_DATA)? else {
                break;
            };
            if start >= size {
                break;
            }
            let end = seek(fd, start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
            regions.push((start, end - start));
            if regions.len() > MAX_REGIONS {
                return Ok(None);
            }
            pos = end;
        }
        let data: u64 = regions.iter().map(|r| r.1).sum();
        if size - data < MIN_HOLES {
            return Ok(None);
        }
        if !matches!(regions.last(), Some(&(o, l)) if o + l == size) {
            regions.push((size, 0));
        }
        Ok(Some(Map(regions)))
    }

    /// Bytes of data (what the member stores after the map block).
    pub fn data_len(&self) -> u64 {
        self.0.iter().map(|r| r.1).sum()
    }

    /// The map block, padded to 512 bytes.
    pub fn block(&self) -> Vec<u8> {
        let mut b = format!("{}\n", self.0.len()).into_bytes();
        for (o, l) in &self.0 {
            b.extend_from_slice(format!("{o}\n{l}\n").as_bytes());
        }
        b.resize(b.len().div_ceil(512) * 512, 0);
        b
    }

    /// The member's size: map block and data.
    pub fn member_len(&self) -> u64 {
        self.block().len() as u64 + self.data_len()
    }

    /// The logical size of the file.
    pub fn real_size(&self) -> u64 {
        self.0.last().map(|&(o, l)| o + l).unwrap_or(0)
    }

    /// Reads a map block from the start of a member's data; every byte read is also given to
    /// `seen` (it is part of the digest). Refuses maps that overlap, go backwards or overflow.
    pub fn read_block(r: &mut dyn Read, seen: &mut dyn FnMut(&[u8])) -> io::Result<Map> {
        let bad =
            |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sparse map: {why}"));
        let mut pending: Vec<u8> = Vec::new();
        let mut block = [0u8; 512];
        let mut numbers: Vec<u64> = Vec::new();
        let mut wanted = usize::MAX;
        while numbers.len() < wanted {
            r.read_exact(&mut block)?;
            seen(&block);
            for &b in &block {
                if numbers.len() >= wanted {
                    break;
                }
                if b != b'\n' {
                    if pending.len() > 20 {
                        return Err(bad("not a number"));
                    }
                    pending.push(b);
                    continue;
                }
                let s = std::str::from_utf8(&pending).map_err(|_| bad("not a number"))?;
                numbers.push(s.parse().map_err(|_| bad("not a number"))?);
                pending.clear();
                if numbers.len() == 1 {
                    if numbers[0] as usize > MAX_REGIONS {
                        return Err(bad("too many regions"));
                    }
                    wanted = 1 + 2 * numbers[0] as usize;
                }
            }
        }
        let n = numbers[0] as usize;
        let mut regions = Vec::with_capacity(n);
        let mut end = 0u64;
        for pair in numbers[1..=2 * n].chunks_exact(2) {
            let (o, l) = (pair[0], pair[1]);
            let e = o.checked_add(l).ok_or_else(|| bad("region overflows"))?;
            if o < end {
                return Err(bad("regions overlap or go backwards"));
            }
            regions.push((o, l));
            end = e;
        }
        Ok(Map(regions))
    }
}

fn seek(fd: i32, pos: u64, whence: i32) -> io::Result<Option<u64>> {
    // SAFETY: lseek on an fd the caller holds open.
    let r = unsafe { libc::lseek(fd, pos as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        _ => Err(e),
    }
}

/// A sparse file's member data: the map block, then each region read with `pread`. A file
/// that shrank under it yields zeros for what is missing (the member keeps its size).
#[derive(Debug)]
pub struct MemberStream<'a> {
    file: &'a File,
    block: Vec<u8>,
    at: usize,
    regions: std::vec::IntoIter<(u64, u64)>,
    current: (u64, u64),
    pub shrank: bool,
}

impl<'a> MemberStream<'a> {
    pub fn new(file: &'a File, map: &Map) -> MemberStream<'a> {
        MemberStream {
            file,
            block: map.block(),
            at: 0,
            regions: map.0.clone().into_iter(),
            current: (0, 0),
            shrank: false,
        }
    }
}

impl Read for MemberStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at < self.block.len() {
            let n = out.len().min(self.block.len() - self.at);
            out[..n].copy_from_slice(&self.block[self.at..self.at + n]);
            self.at += n;
            return Ok(n);
        }
        while self.current.1 == 0 {
            match self.regions.next() {
                Some(r) => self.current = r,
                None => return Ok(0),
            }
        }
        let (off, left) = self.current;
        let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = if self.shrank {
            0
        } else {
            self.file.read_at(&mut out[..want], off)?
        };
        let n = if n == 0 {
            self.shrank = true;
            out[..want].fill(0);
            want
        } else {
            n
        };
        self.current = (off + n as u64, left - n as u64);
        Ok(n)
    }
}

/// Writes a sparse member's data regions (after its map block) into `f` at their offsets and
/// sets the file's length, so the holes stay holes. Every byte read goes to `seen`.
pub fn write_regions(
    map: &Map,
    data: &mut dyn Read,
    f: &File,
    seen: &mut dyn FnMut(&[u8]),
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    for &(off, len) in &map.0 {
        let mut done = 0u64;
        while done < len {
            let want = buf
                .len()
                .min(usize::try_from(len - done).unwrap_or(usize::MAX));
            let k = data.read(&mut buf[..want])?;
            if k == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sparse member ends before its map does",
                ));
            }
            seen(&buf[..k]);
            f.write_all_at(&buf[..k], off + done)?;
            done += k as u64;
        }
        written += len;
    }
    f.set_len(map.real_size())?;
    Ok(written)
}

/// Copies a restored sparse file's data regions into `to` (same length, holes kept).
pub fn copy_file(from: &File, to: &mut File, size: u64) -> io::Result<u64> {
    let map = Map::of(from, size)?.unwrap_or(Map(vec![(0, size)]));
    let mut buf = vec![0u8; 256 * 1024];
    for &(off, len) in &map.0 {
        let mut done = 0;
        while done < len {
            let want = buf
                .len()
                .min(usize::try_from(len - done).unwrap_or(usize::MAX));
            let k = from.read_at(&mut buf[..want], off + done)?;
            if k == 0 {
                break;
            }
            to.write_all_at(&buf[..k], off + done)?;
            done += k as u64;
        }
    }
    to.set_len(size)?;
    to.flush()?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_block_round_trips_and_bad_maps_are_refused() {
        let m = Map(vec![(4096, 4), (1 << 30, 10), ((9u64 << 30), 0)]);
        let b = m.block();
        assert_eq!(b.len(), 512);
        assert!(b.starts_with(b"3\n4096\n4\n1073741824\n10\n9663676416\n0\n"));
        let mut seen = 0;
        let back = Map::read_block(&mut b.as_slice(), &mut |x| seen += x.len()).unwrap();
        assert_eq!((back, seen), (m.clone(), 512));
        assert_eq!(m.real_size(), 9 << 30);
        let bad = Map(vec![(100, 10), (50, 1)]).block();
        assert!(Map::read_block(&mut bad.as_slice(), &mut |_| {}).is_err());
        let mut over = b"1\n18446744073709551615\n2\n".to_vec();
        over.resize(512, 0);
        assert!(Map::read_block(&mut over.as_slice(), &mut |_| {}).is_err());
    }

    #[test]
    fn a_file_with_a_hole_has_a_map_and_streams_its_member() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let f = File::create(&p).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", 8 << 20).unwrap();
        let f = File::open(&p).unwrap();
        let size = f.metadata().unwrap().len();
        let Some(map) = Map::of(&f, size).unwrap() else {
            return; // a file system without holes (the test cannot say more there)
        };
        assert_eq!(map.real_size(), size);
        let mut member = Vec::new();
        MemberStream::new(&f, &map)
            .read_to_end(&mut member)
            .unwrap();
        assert_eq!(member.len() as u64, map.member_len());
        let out = File::create(dir.path().join("o")).unwrap();
        let mut r = &member[512..];
        write_regions(&map, &mut r, &out, &mut |_| {}).unwrap();
        let back = std::fs::read(dir.path().join("o")).unwrap();
        assert_eq!(back, std::fs::read(&p).unwrap());
    }
}
