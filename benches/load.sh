#!/usr/bin/env bash
# Load test: many snapshots in one repository. Builds a tree of FILES small files (plus
# etc/nginx/nginx.conf, edited every 10th step), takes SNAPSHOTS backups of it with about 1% of
# the files changed (and a few added and deleted) between two backups, and times
# `vault snapshots`, `vault ls latest`, a restore of the newest snapshot, `vault find
# '**/nginx.conf'` and `vault log etc/nginx/nginx.conf` when the repository holds --early
# snapshots and again when it holds all of them. Prints both times and their ratio (the
# target: within 2x; find and log: within 100 ms).
#
#   benches/load.sh [--files N] [--snapshots N] [--early N] [--runs N] [--work DIR] [--keep]
#
# --keep leaves the work folder (tree and repository) in place for more questions.
#
# Defaults: 40000 files, 100 snapshots, early point at 10, the median of 5 runs per command.
# Backups use vault's defaults (a new full chain every 30 snapshots). Nothing touches the network.
set -euo pipefail
cd "$(dirname "$0")/.."

files=40000
snapshots=100
early=10
runs=5
work=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files="$2"; shift 2 ;;
    --snapshots) snapshots="$2"; shift 2 ;;
    --early) early="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$early" -lt "$snapshots" ] || { echo "load.sh: --early must be below --snapshots" >&2; exit 2; }

# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then vault="$VAULT_BIN"; else cargo build --release --quiet; vault="$PWD/target/release/vault"; fi
[ -n "$work" ] || work=$(mktemp -d /tmp/vault-load.XXXXXX)
mkdir -p "$work"
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
tree="$work/tree" repo="$work/repo"

# A deterministic tree: FILES files of 200 to 4000 bytes in 200 folders.
python3 - "$tree" "$files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(40)
words = [("w%04d" % i) for i in range(5000)]
for i in range(n):
    d = os.path.join(root, "d%03d" % (i % 200))
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(200, 4000)
    text = " ".join(rnd.choice(words) for _ in range(size // 6))
    with open(os.path.join(d, "f%06d.txt" % i), "w") as f:
        f.write(text[:size])
os.makedirs(os.path.join(root, "etc", "nginx"), exist_ok=True)
with open(os.path.join(root, "etc", "nginx", "nginx.conf"), "w") as f:
    f.write("worker_processes 1;\n")
EOF

# Changes about 1% of the files (seeded by the step), adds 20 and deletes 20.
mutate() {
  python3 - "$tree" "$files" "$1" <<'EOF'
import os, random, sys
root, n, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(step)
for i in rnd.sample(range(n), max(1, n // 100)):
    p = os.path.join(root, "d%03d" % (i % 200), "f%06d.txt" % i)
    if os.path.exists(p):
        with open(p, "a") as f:
            f.write(" step%d" % step)
for k in range(20):
    with open(os.path.join(root, "d%03d" % (k * 10), "new-%d-%d.txt" % (step, k)), "w") as f:
        f.write("added in step %d\n" % step)
    old = os.path.join(root, "d%03d" % (k * 10), "new-%d-%d.txt" % (step - 3, k))
    if os.path.exists(old):
        os.remove(old)
if step % 10 == 0:
    with open(os.path.join(root, "etc", "nginx", "nginx.conf"), "a") as f:
        f.write("# step %d\n" % step)
EOF
}

# median wall seconds of RUNS runs of a command (output discarded)
median() {
  local t=() i
  for i in $(seq "$runs"); do
    [ -n "${PRE:-}" ] && eval "$PRE"
    local s e
    s=$(date +%s%N)
    "$@" >/dev/null
    e=$(date +%s%N)
    t+=("$(( e - s ))")
  done
  printf '%s\n' "${t[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.4f", a[int((NR+1)/2)] / 1e9}'
}

measure() {
  local label=$1
  cat "$repo/vault.db" >/dev/null
  snap_t=$(median "$vault" snapshots --repo "$repo")
  ls_t=$(median "$vault" ls latest --repo "$repo")
  PRE="rm -rf '$work/restored'"
  restore_t=$(median "$vault" restore latest --repo "$repo" --target "$work/restored" -q)
  PRE=""
  rm -rf "$work/restored"
  find_t=$(median "$vault" find '**/nginx.conf' --repo "$repo" --json)
  log_t=$(median "$vault" log etc/nginx/nginx.conf --repo "$repo" --json)
  db=$(stat -c %s "$repo/vault.db")
  count=$("$vault" snapshots --repo "$repo" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  echo "$label snapshots=$count vault.db=$db snapshots_s=$snap_t ls_s=$ls_t restore_s=$restore_t find_s=$find_t log_s=$log_t"
  eval "${label}_snap=$snap_t ${label}_ls=$ls_t ${label}_restore=$restore_t ${label}_find=$find_t ${label}_log=$log_t ${label}_count=$count ${label}_db=$db"
}

echo "load test: $files files, $snapshots snapshots, early point $early, median of $runs runs"
start=$(date +%s)
for step in $(seq 1 "$snapshots"); do
  [ "$step" -gt 1 ] && mutate "$step"
  "$vault" backup "$tree" --repo "$repo" --full-on never -q
  if [ "$step" = "$early" ]; then
    measure early
  fi
done
echo "made $snapshots snapshots in $(( $(date +%s) - start )) s"
measure late

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "| operation | at $early_count snapshots (s) | at $late_count snapshots (s) | ratio |"
echo "|---|---|---|---|"
echo "| vault snapshots | $early_snap | $late_snap | $(ratio "$late_snap" "$early_snap")x |"
echo "| vault ls latest | $early_ls | $late_ls | $(ratio "$late_ls" "$early_ls")x |"
echo "| restore latest | $early_restore | $late_restore | $(ratio "$late_restore" "$early_restore")x |"
echo "| vault find '**/nginx.conf' | $early_find | $late_find | $(ratio "$late_find" "$early_find")x |"
echo "| vault log etc/nginx/nginx.conf | $early_log | $late_log | $(ratio "$late_log" "$early_log")x |"
echo "| vault.db size (bytes) | $early_db | $late_db | $(ratio "$late_db" "$early_db")x |"
