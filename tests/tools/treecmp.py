#!/usr/bin/env python3
"""Compares two trees attribute by attribute, for the system-backup tests.

Usage: treecmp.py SOURCE RESTORED [--no-atime-dirs]
Compares, below both roots: type, mode (all 12 bits), owner, mtime in nanoseconds, content
(sparse-aware: only the data regions of either file are read), link target, every extended
attribute (os.listxattr, all namespaces), device numbers, hard-link groups, and sparseness
(the restored file's allocated blocks may exceed the source's by 64 KiB at most).
Prints one line per difference and "differences: N"; exits 1 when N > 0.
"""
import os
import stat
import sys


def data_regions(fd, size):
    regions, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        regions.append((start, end))
        pos = end
    return regions


def same_content(a, b, size):
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        for start, end in sorted(data_regions(fa, size) + data_regions(fb, size)):
            pos = start
            while pos < end:
                n = min(1 << 20, end - pos)
                if os.pread(fa, n, pos) != os.pread(fb, n, pos):
                    return False
                pos += n
        return True
    finally:
        os.close(fa)
        os.close(fb)


def xattrs(p):
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(p, n, follow_symlinks=False) for n in sorted(names)}


def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root).encode("utf-8", "surrogateescape")] = p
    return out


def link_groups(tree):
    groups = {}
    for rel, p in tree.items():
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, []).append(rel)
    return sorted(sorted(g) for g in groups.values())


def compare(src, dst):
    diffs = []
    a, b = walk(src), walk(dst)
    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            diffs.append(f"{rel!r}: missing from the restored tree")
            continue
        if rel not in a:
            diffs.append(f"{rel!r}: not in the source")
            continue
        diffs += [f"{rel!r}: {d}" for d in compare_one(a[rel], b[rel])]
    if link_groups(a) != link_groups(b):
        diffs.append(f"hard-link groups differ: {link_groups(a)} vs {link_groups(b)}")
    return diffs


def compare_one(p, q):
    s, t = os.lstat(p), os.lstat(q)
    out = []
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(t.st_mode):
        return [f"type {stat.S_IFMT(s.st_mode):o} vs {stat.S_IFMT(t.st_mode):o}"]
    if not stat.S_ISLNK(s.st_mode) and stat.S_IMODE(s.st_mode) != stat.S_IMODE(t.st_mode):
        out.append(f"mode {stat.S_IMODE(s.st_mode):o} vs {stat.S_IMODE(t.st_mode):o}")
    if (s.st_uid, s.st_gid) != (t.st_uid, t.st_gid):
        out.append(f"owner {s.st_uid}:{s.st_gid} vs {t.st_uid}:{t.st_gid}")
    if s.st_mtime_ns != t.st_mtime_ns:
        out.append(f"mtime {s.st_mtime_ns} vs {t.st_mtime_ns}")
    if stat.S_ISLNK(s.st_mode) and os.readlink(p) != os.readlink(q):
        out.append("link target")
    if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
        if s.st_rdev != t.st_rdev:
            out.append(f"rdev {s.st_rdev} vs {t.st_rdev}")
    if stat.S_ISREG(s.st_mode):
        if s.st_size != t.st_size:
            out.append(f"size {s.st_size} vs {t.st_size}")
        elif not same_content(p, q, s.st_size):
            out.append("content")
        if t.st_blocks * 512 > s.st_blocks * 512 + 65536:
            out.append(f"allocated {t.st_blocks * 512} vs source {s.st_blocks * 512} bytes")
    xa, xb = xattrs(p), xattrs(q)
    if xa != xb:
        out.append(f"xattrs {sorted(xa)} vs {sorted(xb)}" if set(xa) != set(xb) else "xattr values")
    return out


if __name__ == "__main__":
    d = compare(sys.argv[1], sys.argv[2])
    for line in d:
        print(line)
    print(f"differences: {len(d)}")
    sys.exit(1 if d else 0)
