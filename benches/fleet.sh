#!/usr/bin/env bash
# Fleet backups: vault pulling N hosts at once vs a sequential loop of
# `ssh HOST tar -czf - PATH > HOST.tgz`, on the same trees, in one run.
#
#   benches/fleet.sh [--hosts N] [--files N] [--kib N] [--parallel N] [--no-install]
#
# --hosts N     hosts (default 8), each an sshd on its own 127.0.0.x address in a mount
#               namespace of its own, serving its own tree at the same path
# --files N     files per host (default 5000), in 50 folders
# --kib N       mean file size in KiB (default 5: 8 x 5000 x 5 KiB is about 200 MB)
# --parallel N  vault's --parallel (default: the number of hosts)
#
# Needs root (sshd, unshare, mount --bind). Prints the wall time of the loop, of vault's full
# and of vault's no-change run, and their ratios. Nothing leaves the machine: every host is
# on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=8
files=5000
kib=5
parallel=""
install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --kib) kib="$2"; shift 2 ;;
    --parallel) parallel="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "fleet.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
parallel="${parallel:-$hosts}"
if [ "$install" = 1 ] && { [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; }; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
fi
# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then vault="$VAULT_BIN"; else cargo build --release --quiet; vault="$PWD/target/release/vault"; fi
d=$(mktemp -d /tmp/vault-fleet-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$d"
}
trap cleanup EXIT
mkdir -p /run/sshd "$d/mnt" "$d/out"
ssh-keygen -q -t ed25519 -N '' -f "$d/id"
: > "$d/kh"
: > "$d/hosts"
port=2200
for i in $(seq 1 "$hosts"); do
  addr="127.0.0.$((100 + i))"
  python3 - "$d/tree$i" "$i" "$files" "$kib" <<'PY'
import os, random, sys
root, host, files, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(host)
words = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))).encode() for _ in range(4000)]
for i in range(files):
    d = os.path.join(root, "d%02d" % (i % 50))
    os.makedirs(d, exist_ok=True)
    size = int(rnd.expovariate(1 / (kib * 1024)))
    out, n = [], 0
    while n < size:
        w = rnd.choice(words)
        out.append(w)
        n += len(w) + 1
    with open(os.path.join(d, "f%05d.txt" % i), "wb") as f:
        f.write(b" ".join(out)[:size])
PY
  ssh-keygen -q -t ed25519 -N '' -f "$d/hostkey$i"
  cat > "$d/sshd$i" <<CFG
Port $port
ListenAddress $addr
HostKey $d/hostkey$i
PidFile $d/sshd$i.pid
AuthorizedKeysFile $d/id.pub
StrictModes no
PermitRootLogin yes
UsePAM no
MaxStartups 100
LogLevel ERROR
CFG
  unshare -m --propagation private sh -c 'mount --bind "$0" "$1" && shift && exec /usr/sbin/sshd "$@"' \
    "$d/tree$i" "$d/mnt" -D -f "$d/sshd$i" &
  pids+=($!)
  echo "[$addr]:$port $(cut -d' ' -f1,2 "$d/hostkey$i.pub")" >> "$d/kh"
  echo "root@$addr:$port" >> "$d/hosts"
done
for i in $(seq 1 "$hosts"); do
  until (exec 3<>"/dev/tcp/127.0.0.$((100 + i))/$port") 2>/dev/null; do sleep 0.1; done
done
total=$(du -sb "$d"/tree* | awk '{s += $1} END {print s}')
now() { date +%s.%N; }
sshopts=(-i "$d/id" -o "UserKnownHostsFile=$d/kh" -o StrictHostKeyChecking=yes -o BatchMode=yes -p "$port")
find "$d" -path "$d/tree*" -type f -exec cat {} + > /dev/null
t0=$(now)
for i in $(seq 1 "$hosts"); do
  ssh "${sshopts[@]}" "root@127.0.0.$((100 + i))" "tar -czf - -C $d/mnt ." > "$d/out/host$i.tgz"
done
t1=$(now)
vflags=(--hosts-file "$d/hosts" --path "$d/mnt" --repo "$d/repo" -i "$d/id" --known-hosts "$d/kh"
  --no-agent --full-on never --parallel "$parallel" -q)
/usr/bin/time -f "%U %S %M" -o "$d/full.time" "$vault" backup "${vflags[@]}"
t2=$(now)
/usr/bin/time -f "%U %S %M" -o "$d/none.time" "$vault" backup "${vflags[@]}"
t3=$(now)
calc() { awk "BEGIN { print $1 }"; }
loop=$(calc "$t1 - $t0")
full=$(calc "$t2 - $t1")
none=$(calc "$t3 - $t2")
echo
echo "fleet: $hosts hosts x $files files, $((total / 1000000)) MB in all, vault --parallel $parallel, $(nproc) cores"
cpu() { awk '{ printf "%.2f", $1 + $2 }' "$d/$1.time"; }
rss() { awk '{ printf "%d", $3 / 1024 }' "$d/$1.time"; }
printf '| run | wall s | vault CPU s | vault peak RSS MB | vault / loop |\n|---|---:|---:|---:|---:|\n'
printf '| ssh HOST tar -czf, one host after another | %.2f | | | |\n' "$loop"
printf '| vault backup --hosts-file (full) | %.2f | %s | %s | %.2fx |\n' "$full" "$(cpu full)" "$(rss full)" "$(calc "$full / $loop")"
printf '| vault backup --hosts-file (no change) | %.2f | %s | %s | %.2fx |\n' "$none" "$(cpu none)" "$(rss none)" "$(calc "$none / $loop")"
"$vault" check --repo "$d/repo" -q
