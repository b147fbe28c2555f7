#!/usr/bin/env python3
"""Write a deterministic tree of N small files for benches/compare.sh --synthetic N.

The shape of issue 16: 100 files a folder (N/100 folders, two levels deep), sizes drawn
from 0, 40, 300, 1,200 and 4,000 bytes (1.1 KB on average), text made of a few words, so
that it compresses about as well as source code or mail. Same N, same tree, every time.
"""
import os
import random
import sys


def main():
    root, n = sys.argv[1], int(sys.argv[2])
    rng = random.Random(16)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"backup", b"vault", b"data", b"mail",
             b"\n", b"0", b"1", b"config", b"src", b"home"]
    corpus = b" ".join(rng.choice(words) for _ in range(1 << 20))
    sizes = [0, 40, 300, 1200, 4000]
    folders = max(1, n // 100)
    for i in range(n):
        k = i % folders
        d = os.path.join(root, "g%03d" % (k % 100), "d%05d" % k)
        if i < folders:
            os.makedirs(d, exist_ok=True)
        size = rng.choice(sizes)
        at = rng.randrange(0, len(corpus) - size)
        with open(os.path.join(d, "f%07d.txt" % i), "wb") as f:
            f.write(corpus[at:at + size])


if __name__ == "__main__":
    main()
