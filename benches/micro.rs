//! Criterion micro-benchmarks: digest throughput per algorithm and pool size, block-parallel
//! compression per codec, level and pool size, and the pure planner on a large tree. Run with `cargo bench --bench micro`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vault::archive::compress_stream;
use vault::engine::plan::plan;
use vault::tree::StatCache;
use vault::{CancelToken, Compression, Entry, EntryKind, HashAlgo, Kind, Pool};

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect()
}

fn hashing(c: &mut Criterion) {
    let buf = data(1 << 20);
    let mut g = c.benchmark_group("hash_1MiB");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    for algo in [HashAlgo::Blake3, HashAlgo::Md5] {
        g.bench_function(algo.name(), |b| b.iter(|| algo.digest(black_box(&buf))));
    }
    g.finish();

    // 64 blocks of 256 KiB hashed on the pool, as a backup hashes small files.
    let blocks: Vec<Vec<u8>> = (0..64).map(|_| data(256 << 10)).collect();
    let total: u64 = blocks.iter().map(|b| b.len() as u64).sum();
    let mut g = c.benchmark_group("pool_hash_16MiB");
    g.throughput(Throughput::Bytes(total));
    let max = std::thread::available_parallelism().map_or(2, |n| n.get());
    for algo in [HashAlgo::Blake3, HashAlgo::Md5] {
        for threads in [1usize, 2, 4, 8, 16]
            .into_iter()
            .filter(|&t| t <= max.max(2))
        {
            let pool = Pool::new(threads);
            g.bench_with_input(BenchmarkId::new(algo.name(), threads), &threads, |b, _| {
                b.iter(|| {
                    let mut n = 0;
                    pool.map_unordered(
                        &CancelToken::new(),
                        blocks.iter(),
                        || (),
                        |_, blk| algo.digest(blk),
                        |_| {
                            n += 1;
                            Ok::<(), ()>(())
                        },
                    )
                    .unwrap();
                    n
                })
            });
        }
    }
    g.finish();
}

/// Block-parallel compression of 32 MiB of tar-like data, per codec, level and pool size.
fn compression(c: &mut Criterion) {
    // Text-like bytes (the kind of content /usr/share holds), compressing about 3:1.
    let words: Vec<&[u8]> = b"the of and backup vault archive file folder 0123 tar gzip zstd \n"
        .split(|&b| b == b' ')
        .collect();
    let mut input = Vec::with_capacity(32 << 20);
    let mut x = 12345u64;
    while input.len() < 32 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        input.extend_from_slice(words[(x >> 33) as usize % words.len()]);
        input.push(if x & 7 == 0 { b'\n' } else { b' ' });
    }
    let mut g = c.benchmark_group("compress_32MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(input.len() as u64));
    let max = std::thread::available_parallelism().map_or(2, |n| n.get());
    for (codec, level) in [
        (Compression::Gzip, 1),
        (Compression::Gzip, 6),
        (Compression::Gzip, 9),
        (Compression::Zstd, 3),
        (Compression::Zstd, 9),
    ] {
        for threads in [1usize, 2, 4, 8, 16]
            .into_iter()
            .filter(|&t| t <= max.max(2))
        {
            let pool = Pool::new(threads);
            let id = format!("{}-{level}", codec.name());
            g.bench_with_input(BenchmarkId::new(id, threads), &threads, |b, _| {
                b.iter(|| {
                    compress_stream(&pool, codec, level, &mut &input[..], Vec::new())
                        .unwrap()
                        .len()
                })
            });
        }
    }
    g.finish();
}

fn tree(n: usize, stamp: i64) -> Vec<Entry> {
    let mut v: Vec<Entry> = (0..n)
        .map(|i| Entry {
            path: format!("d{:04}/f{:07}.txt", i % 1000, i).into_bytes(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: (i % 5000) as u64,
            mtime_ns: stamp + if i % 100 == 0 { 1 } else { 0 },
            digest: Some(HashAlgo::Blake3.digest(&i.to_le_bytes())),
            target: None,
            rdev: 0,
            xattrs: None,
            sparse: false,
            stat: StatCache {
                ctime_ns: stamp,
                ino: i as u64,
                dev: 1,
                nlink: 1,
            },
        })
        .collect();
    vault::tree::sort_entries(&mut v);
    v
}

fn planning(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    for n in [100_000usize, 1_000_000] {
        let prev = tree(n, 1_000);
        let mut now = tree(n, 1_000);
        for e in now.iter_mut() {
            e.digest = None;
        }
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("no_change", n), &n, |b, _| {
            b.iter(|| {
                plan(
                    prev.iter().cloned(),
                    now.clone(),
                    &[],
                    Kind::Incremental,
                    false,
                )
                .unchanged
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hashing, compression, planning);
criterion_main!(benches);
