//! Content digests.
//!
//! Every stored file is identified by the digest of its bytes. Two algorithms are supported:
//! BLAKE3 (default, fast, parallel-friendly) and MD5 (for users whose tooling speaks `md5sum`).
//! The algorithm is fixed for a whole chain (a full snapshot and its incrementals), so digests of
//! one chain are always comparable. Digests are kept as fixed-size byte arrays, never as hex
//! strings, except at the edges (JSON, human output).

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use md5::Digest as _;

/// Which digest algorithm a chain uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    Blake3,
    Md5,
}

impl HashAlgo {
    /// The name stored in the manifest and accepted by `--hash`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Blake3 => "blake3",
            HashAlgo::Md5 => "md5",
        }
    }

    /// A fresh streaming hasher for this algorithm.
    /// Bytes in a digest of this algorithm.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgo::Blake3 => 32,
            HashAlgo::Md5 => 16,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            HashAlgo::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
        }
    }

    /// Digest of an in-memory buffer.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "blake3" => Ok(HashAlgo::Blake3),
            "md5" => Ok(HashAlgo::Md5),
            other => Err(format!(
                "unknown hash algorithm '{other}' (expected blake3 or md5)"
            )),
        }
    }
}

/// A content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Digest {
    Blake3([u8; 32]),
    Md5([u8; 16]),
}

impl Digest {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Digest::Blake3(b) => b,
            Digest::Md5(b) => b,
        }
    }

    pub fn algo(&self) -> HashAlgo {
        match self {
            Digest::Blake3(_) => HashAlgo::Blake3,
            Digest::Md5(_) => HashAlgo::Md5,
        }
    }

    /// Rebuilds a digest from its stored bytes; the length tells the algorithm.
    pub fn from_bytes(b: &[u8]) -> Option<Digest> {
        match b.len() {
            32 => Some(Digest::Blake3(b.try_into().ok()?)),
            16 => Some(Digest::Md5(b.try_into().ok()?)),
            _ => None,
        }
    }

    pub fn to_hex(&self) -> String {
        hex(self.as_bytes())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo(), self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lower-case hex of a byte string.
/// Base64 (standard alphabet), with or without `=` padding (SSH fingerprints go without).
pub fn base64(bytes: &[u8], pad: bool) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
        if pad {
            s.push_str(&"=="[..3 - c.len()]);
        }
    }
    s
}

/// `n` random bytes as hex (from /dev/urandom; a hash of the clock and PID if it cannot be
/// read): snapshot and repository ids.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; n];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let seed = format!("{}:{}", crate::time::now_ns(), std::process::id());
        let mut x = blake3::Hasher::new();
        x.update(seed.as_bytes());
        x.finalize_xof().fill(&mut b);
    }
    hex(&b)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A streaming hasher.
#[derive(Clone)]
pub enum Hasher {
    Blake3(Box<blake3::Hasher>),
    Md5(md5::Md5),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hasher::Blake3(_) => f.write_str("Hasher::Blake3"),
            Hasher::Md5(_) => f.write_str("Hasher::Md5"),
        }
    }
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Blake3(h) => {
                h.update(data);
            }
            Hasher::Md5(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Blake3(h) => Digest::Blake3(*h.finalize().as_bytes()),
            Hasher::Md5(h) => Digest::Md5(h.finalize().into()),
        }
    }
}

/// Hashes everything a reader yields; returns the digest and the number of bytes read.
pub fn hash_reader(algo: HashAlgo, mut r: impl Read, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut h = algo.hasher();
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finish(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(
            HashAlgo::Md5.digest(b"abc").to_hex(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            HashAlgo::Blake3.digest(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        let d = HashAlgo::Md5.digest(b"x");
        assert_eq!(Digest::from_bytes(d.as_bytes()), Some(d));
    }
}
