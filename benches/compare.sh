#!/usr/bin/env bash
# End-to-end comparison of vault with GNU tar, pigz, zstd and restic on one tree, in one run.
#
#   benches/compare.sh [--tree DIR | --synthetic N] [--work DIR] [--jobs N] [--no-install]
#
# --tree DIR      back up a copy of DIR (default: a copy of /usr/share)
# --synthetic N   generate a deterministic tree of N small files instead (benches/smalltree.py)
# --work DIR      scratch folder (default: a new folder under /tmp); removed at the end
# --jobs N        vault's worker pool size (default: all cores)
# --no-install    do not apt-get missing peers (rows for missing ones are skipped)
# --baseline BIN  also run every vault operation with another vault binary (e.g. a build of the
#                 previous commit), in rows "vault (baseline)", for a before/after in one run
# --incremental-only  skip the full-backup peers, vault's zstd full and the restore rows (for
#                 huge trees where only incremental time and memory are of interest)
#
# Prints, per operation, wall time, CPU time (user+sys), peak RSS and output size of each
# tool, and the ratio of vault's wall time to each peer's. The page cache is warmed first.
# Nothing here touches the network.
set -euo pipefail
cd "$(dirname "$0")/.."

tree_src=/usr/share
synthetic=0
work=""
jobs=""
install=1
inc_only=0
baseline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tree) tree_src="$2"; shift 2 ;;
    --synthetic) synthetic="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    --incremental-only) inc_only=1; shift ;;
    --baseline) baseline="$(realpath "$2")"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$install" = 1 ]; then
  need=()
  [ -x /usr/bin/time ] || need+=(time)
  command -v pigz >/dev/null || need+=(pigz)
  command -v zstd >/dev/null || need+=(zstd)
  command -v restic >/dev/null || need+=(restic)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
[ -x /usr/bin/time ] || { echo "compare.sh: GNU time (/usr/bin/time) is needed: apt-get install time" >&2; exit 1; }

# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then
  vault="$VAULT_BIN"
else
  cargo build --release --quiet
  vault="${CARGO_TARGET_DIR:-$PWD/target}/release/vault"
fi
jobs_arg=()
[ -n "$jobs" ] && jobs_arg=(--jobs "$jobs")

[ -n "$work" ] || work=$(mktemp -d /tmp/vault-bench.XXXXXX)
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
tree="$work/tree"

if [ "$synthetic" -gt 0 ]; then
  python3 benches/smalltree.py "$tree" "$synthetic"
  label="synthetic tree of $synthetic files"
else
  cp -a "$tree_src" "$tree"
  label="copy of $tree_src"
fi
files=$(find "$tree" | wc -l)
bytes=$(du -sb "$tree" | cut -f1)
tar -cf /dev/null "$tree" 2>/dev/null || true   # warm the page cache

results="$work/results.tsv"
: > "$results"
# measure OP TOOL OUTPUT_PATH -- command...
measure() {
  local op="$1" tool="$2" out="$3"; shift 4
  local t="$work/time.txt"
  sync   # the previous step's writeback is not charged to this one
  if ! /usr/bin/time -f '%e %U %S %M' -o "$t" "$@" >"$work/last.out" 2>"$work/last.err"; then
    local rc=$?
    if [[ "$tool" != vault* ]] || [ "$rc" != 3 ]; then
      echo "compare.sh: $tool ($op) failed:" >&2; tail -5 "$work/last.err" >&2; return 1
    fi
  fi
  local size=0
  if [ -n "$out" ] && [ -e "$out" ]; then size=$(du -sb "$out" | cut -f1); fi
  read -r wall user sys rss < "$t"
  echo -e "$op\t$tool\t$wall\t$(echo "$user + $sys" | bc -l 2>/dev/null || python3 -c "print($user+$sys)")\t$rss\t$size" >> "$results"
}
# vault's archive size is the report's bytes_stored: patch it into the row just written.
# Also notes the report's duration_s beside the wall time measured from outside.
vault_size() {
  local n d
  n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"]["bytes_stored"])' "$work/last.out")
  d=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"]["duration_s"])' "$work/last.out")
  sed -i "\$s|\t[0-9]*\$|\t$n|" "$results"
  echo "$(tail -1 "$results" | cut -f1,2,3)	$d" >> "$work/durations.tsv"
}

have() { command -v "$1" >/dev/null; }
# vault_op OP REPO ARGS...: one vault backup (JSON) into $work/REPO, and with --baseline the
# same with the baseline binary into $work/bREPO.
vault_op() {
  local op="$1" repo="$2"; shift 2
  measure "$op" vault "" -- "$vault" "${jobs_arg[@]}" "$@" --repo "$work/$repo" --json -q
  vault_size
  if [ -n "$baseline" ]; then
    measure "$op" "vault (baseline)" "" -- "$baseline" "${jobs_arg[@]}" "$@" --repo "$work/b$repo" --json -q
    vault_size
  fi
}
export RESTIC_PASSWORD=benchmark-only   # a throwaway repository on /tmp; not a secret

# Full backups.
vault_op full-gzip vrepo backup "$tree" --full
if [ "$inc_only" = 0 ]; then
  measure full-gzip "tar -czf" "$work/t.tgz" -- tar -czf "$work/t.tgz" -C "$work" tree
  rm -f "$work/t.tgz"
  have pigz && measure full-gzip "tar -I pigz" "$work/p.tgz" -- tar -I pigz -cf "$work/p.tgz" -C "$work" tree
  rm -f "$work/p.tgz"
  vault_op full-zstd zrepo backup "$tree" --full --compression zstd
  rm -rf "$work/zrepo" "$work/bzrepo"
  have zstd && measure full-zstd "tar -I 'zstd -T0 -3'" "$work/t.tzst" -- tar -I 'zstd -T0 -3' -cf "$work/t.tzst" -C "$work" tree
  rm -f "$work/t.tzst"
fi
if have restic; then
  restic init --repo "$work/rrepo" -q >/dev/null
  measure full-zstd restic "$work/rrepo" -- restic backup --repo "$work/rrepo" -q "$tree"
fi

# GNU tar's own incremental chain: level 0 now.
tar -czf "$work/l0.tgz" --listed-incremental="$work/snar" -C "$work" tree

# No-change incrementals.
vault_op no-change vrepo backup "$tree" --incremental
cp "$work/snar" "$work/snar1"
measure no-change "tar --listed-incremental" "$work/l1.tgz" -- tar -czf "$work/l1.tgz" --listed-incremental="$work/snar1" -C "$work" tree
have restic && measure no-change restic "" -- restic backup --repo "$work/rrepo" -q "$tree"

# 1% of the files changed (every 100th regular file gets a line appended).
find "$tree" -type f | sort | awk 'NR % 100 == 0' | while read -r f; do echo "changed" >> "$f"; done
vault_op 1pct-changed vrepo backup "$tree" --incremental
cp "$work/snar1" "$work/snar2"
measure 1pct-changed "tar --listed-incremental" "$work/l2.tgz" -- tar -czf "$work/l2.tgz" --listed-incremental="$work/snar2" -C "$work" tree
have restic && measure 1pct-changed restic "" -- restic backup --repo "$work/rrepo" -q "$tree"

# Restore the newest snapshot of the chain (a full and two incrementals) into a fresh folder.
[ "$inc_only" = 1 ] || {
measure restore vault "" -- "$vault" "${jobs_arg[@]}" restore latest --repo "$work/vrepo" --target "$work/out-vault" -q
rm -rf "$work/out-vault"
if [ -n "$baseline" ]; then
  measure restore "vault (baseline)" "" -- "$baseline" "${jobs_arg[@]}" restore latest --repo "$work/bvrepo" --target "$work/out-vault" -q
  rm -rf "$work/out-vault"
fi
mkdir -p "$work/out-tar"
extract_chain() { for a in "$work/l0.tgz" "$work/l1.tgz" "$work/l2.tgz"; do tar -xzf "$a" --listed-incremental=/dev/null -C "$work/out-tar" || return 1; done; }
export -f extract_chain; export work
measure restore "tar -x (3-archive chain)" "" -- bash -c extract_chain
rm -rf "$work/out-tar"
have restic && measure restore restic "" -- restic restore latest --repo "$work/rrepo" -q --target "$work/out-restic"
rm -rf "$work/out-restic"
}

echo
echo "vault vs peers on a $label: $files paths, $((bytes / 1000000)) MB; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
vault = {r[0]: float(r[2]) for r in rows if r[1] == "vault"}
rss_v = {r[0]: int(r[4]) for r in rows if r[1] == "vault"}
base = {r[0]: float(r[2]) for r in rows if r[1] == "vault (baseline)"}
cols = "| operation | tool | wall s | CPU s | peak RSS MB | size MB | vault / tool (wall) | vault / tool (RSS) |"
if base:
    cols += " baseline / tool (wall) |"
print(cols)
print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if base else ""))
for op, tool, wall, cpu, rss, size in rows:
    wall, cpu, rss, size = float(wall), float(cpu), int(rss) / 1024, int(size) / 1e6
    ratio = mem = before = ""
    if tool != "vault" and op in vault:
        ratio = "%.2fx" % (vault[op] / wall if wall > 0 else float("inf"))
        mem = "%.2fx" % (rss_v[op] / (rss * 1024) if rss > 0 else float("inf"))
    if not tool.startswith("vault") and op in base:
        before = "%.2fx" % (base[op] / wall if wall > 0 else float("inf"))
    line = "| %s | %s | %.2f | %.2f | %.0f | %.1f | %s | %s |" % (op, tool, wall, cpu, rss, size, ratio, mem)
    print(line + (" %s |" % before if base else ""))
PY
if [ -s "$work/durations.tsv" ]; then
  echo
  echo "vault's own duration_s against the wall time measured by /usr/bin/time:"
  awk -F'\t' '{ printf "  %s (%s): wall %.2f s, duration_s %.2f s (%.1f%%)\n", $1, $2, $3, $4, 100 * ($3 - $4) / $3 }' "$work/durations.tsv"
fi
