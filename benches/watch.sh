#!/usr/bin/env bash
# Latency of `vault watch`: from the last write of a one-file change in a large watched tree to
# the committed snapshot, against a plain `vault backup` of the same change.
#
#   benches/watch.sh [--files N] [--debounce DUR] [--runs N]
#
# Defaults: 100,000 files, debounce 500ms, 5 runs; prints the median of each.
set -euo pipefail
cd "$(dirname "$0")/.."
files=100000
debounce=500ms
runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files="$2"; shift 2 ;;
    --debounce) debounce="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "watch.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then vault="$VAULT_BIN"; else cargo build --release --quiet; vault="$PWD/target/release/vault"; fi
d=$(mktemp -d /tmp/vault-watch-bench.XXXXXX)
wpid=""
cleanup() { [ -n "$wpid" ] && kill "$wpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$d"; }
trap cleanup EXIT
python3 - "$d/tree" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    p = os.path.join(root, "d%03d" % (i % 500), "e%02d" % (i % 20))
    os.makedirs(p, exist_ok=True)
    with open(os.path.join(p, "f%07d.txt" % i), "w") as f:
        f.write("file %d\n" % i)
PY
count() { "$vault" snapshots --repo "$1" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Plain backups of a one-file change (the tree is walked in full each time).
"$vault" backup "$d/tree" --repo "$d/plain" --full-on never -q
plain=()
for i in $(seq "$runs"); do
  echo "plain $i" >> "$d/tree/d000/e00/f0000000.txt"
  s=$(now_ms); "$vault" backup "$d/tree" --repo "$d/plain" --full-on never -q; e=$(now_ms)
  plain+=($((e - s)))
done

# The same change under vault watch.
"$vault" watch "$d/tree" --repo "$d/watched" --full-on never --debounce "$debounce" -q &
wpid=$!
for _ in $(seq 600); do [ -f "$d/watched/vault.db" ] && [ "$(count "$d/watched" 2>/dev/null || echo 0)" -ge 1 ] && break; sleep 0.1; done
lat=()
for i in $(seq "$runs"); do
  # One process writes the change and polls the manifest every 5 ms (read-only) for the commit.
  ms=$(python3 - "$d/watched/vault.db" "$d/tree/d001/e01/f0000001.txt" "$i" <<'PY'
import sqlite3, sys, time
db, path, i = sys.argv[1:4]
def count():
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    try:
        return c.execute("SELECT count(*) FROM snapshots").fetchone()[0]
    finally:
        c.close()
before = count()
t0 = time.monotonic()
with open(path, "a") as f:
    f.write("watched %s\n" % i)
while count() <= before:
    if time.monotonic() - t0 > 60:
        sys.exit("no new snapshot within 60 s")
    time.sleep(0.005)
print(int((time.monotonic() - t0) * 1000))
PY
)
  lat+=("$ms")
  sleep 1
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
pm=$(median "${plain[@]}"); wm=$(median "${lat[@]}")
echo "vault watch on a $files-file tree, one-file change, debounce $debounce; median of $runs; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| one-file change | ms |"
echo "|---|---:|"
echo "| plain vault backup (walks the tree) | $pm |"
echo "| vault watch: last write to committed snapshot (includes the debounce) | $wm |"
echo "| vault watch minus the debounce | $((wm - $(python3 -c "import sys; d=sys.argv[1]; print(int(float(d[:-2])) if d.endswith('ms') else int(float(d[:-1])*1000))" "$debounce"))) |"
