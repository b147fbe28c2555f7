#!/usr/bin/env bash
# How full and no-change backups grow with the number of paths: vault against GNU tar.
#
#   benches/scaling.sh [--work DIR] N...      (e.g. 250000 500000 1000000 2000000)
#
# For each N: a tree from benches/smalltree.py, then, each after a `sync`, GNU tar's full
# (`tar -czf --listed-incremental`, which also makes the snapshot file for the next step), vault's
# full, tar's no-change level 1 and vault's no-change incremental. Prints one table: wall time
# and peak RSS of each, with microseconds a path. The tree is removed before the next N.
# Nothing here touches the network.
set -euo pipefail
cd "$(dirname "$0")/.."
work=""
if [ "${1:-}" = "--work" ]; then work="$2"; shift 2; fi
[ $# -gt 0 ] || { echo "usage: benches/scaling.sh [--work DIR] N..." >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "scaling.sh: GNU time (/usr/bin/time) is needed" >&2; exit 1; }
# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then
  vault="$VAULT_BIN"
else
  cargo build --release --quiet
  vault="${CARGO_TARGET_DIR:-$PWD/target}/release/vault"
fi
[ -n "$work" ] || work=$(mktemp -d /tmp/vault-scaling.XXXXXX)
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
rows="$work/rows.tsv"
: > "$rows"
run() {   # run N LABEL command...
  local n="$1" label="$2"; shift 2
  sync
  /usr/bin/time -f '%e %M' -o "$work/t" "$@" > /dev/null 2> "$work/err" || {
    echo "scaling.sh: $label failed:" >&2; tail -3 "$work/err" >&2; exit 1; }
  read -r wall rss < "$work/t"
  echo -e "$n\t$label\t$wall\t$rss" >> "$rows"
}
for n in "$@"; do
  rm -rf "$work/tree" "$work/repo" "$work"/*.tgz "$work/snar"*
  python3 benches/smalltree.py "$work/tree" "$n"
  tar -cf /dev/null -C "$work" tree   # warm the cache
  run "$n" "tar full" tar -czf "$work/l0.tgz" --listed-incremental="$work/snar" -C "$work" tree
  run "$n" "vault full" "$vault" backup "$work/tree" --full --repo "$work/repo" -q
  cp "$work/snar" "$work/snar1"
  run "$n" "tar no-change" tar -czf "$work/l1.tgz" --listed-incremental="$work/snar1" -C "$work" tree
  run "$n" "vault no-change" "$vault" backup "$work/tree" --incremental --repo "$work/repo" -q
done
echo
echo "scaling on $(nproc) cores, $(date -u +%Y-%m-%d); paths = files + folders"
python3 - "$rows" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
print("| files | run | wall s | µs a file | peak RSS MB | bytes a file |")
print("|---:|---|---:|---:|---:|---:|")
for n, label, wall, rss in rows:
    n, wall, rss = int(n), float(wall), int(rss) * 1024
    print("| %d | %s | %.2f | %.1f | %.0f | %.0f |" % (n, label, wall, wall * 1e6 / n, rss / 1e6, rss / n))
PY
