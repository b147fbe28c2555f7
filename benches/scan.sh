#!/usr/bin/env bash
# vault scan vs fping on the same targets and settings, inside private network namespaces this
# script creates (only their loopback is probed; nothing leaves the machine).
#
#   benches/scan.sh [--runs N] [--no-install]
#
# Rows: an all-down /24 (the namespace ignores echo) and an all-up /24, each with a 500 ms
# timeout, no retries and 1,000 probes/s (fping -i 1). Prints the median wall time of N runs
# (default 5) and the ratio vault/fping. Needs root (unshare -n, raw ICMP sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=5
install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "scan.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$install" = 1 ] && ! command -v fping >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends fping >/dev/null
fi
command -v fping >/dev/null || { echo "scan.sh: fping is needed (apt-get install fping)" >&2; exit 1; }
# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then vault="$VAULT_BIN"; else cargo build --release --quiet; vault="$PWD/target/release/vault"; fi

# median_ms IGNORE_ECHO COMMAND...: median wall time in ms of $runs runs in a fresh namespace.
median_ms() {
  local ignore="$1"; shift
  unshare -n bash -c '
    ip link set lo up
    sysctl -qw net.ipv4.icmp_echo_ignore_all='"$ignore"'
    for i in $(seq '"$runs"'); do
      s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N)
      echo $(( (e - s) / 1000000 ))
    done' _ "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

row() {
  local what="$1" ignore="$2"
  local v f
  v=$(median_ms "$ignore" "$vault" scan 127.0.0.0/24 --timeout 500ms --retries 0 --rate 1000 -q)
  f=$(median_ms "$ignore" fping -q -g 127.0.0.0/24 -t 500 -r 0 -i 1)
  python3 -c "import sys; v,f=int(sys.argv[2]),int(sys.argv[3]); print('| %s | %d | %d | %.2fx |' % (sys.argv[1], v, f, v/f))" "$what" "$v" "$f"
}

echo "vault scan vs $(fping --version 2>&1 | head -1) on 127.0.0.0/24 (254 hosts) in a private namespace; median of $runs runs; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| sweep | vault ms | fping ms | vault / fping |"
echo "|---|---:|---:|---:|"
row "all down (echo ignored), 500 ms timeout, no retries" 1
row "all up, 500 ms timeout, no retries" 0
