#!/usr/bin/env bash
# Encrypted pushes: `vault push` with and without `--encrypt-to`, of the same repository, to
# an OpenSSH SFTP server on loopback and to an rclone local remote, alternating, in one run.
#
#   benches/sealed.sh [--mb N] [--runs N] [--no-install]
#
# --mb N     repository size: N MB of data that does not compress, in 5 files (default 500)
# --runs N   pushes of each kind to each remote (default 3); the median is reported
#
# Needs root (sshd). Prints each median and the throughput ratio (plain time / encrypted
# time: 1.00x means encryption costs nothing). Nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mb=500
runs=3
install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) mb="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "sealed.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$install" = 1 ] && { [ ! -x /usr/sbin/sshd ] || ! command -v rclone >/dev/null; }; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server rclone >/dev/null
fi
# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then vault="$VAULT_BIN"; else cargo build --release --quiet; vault="$PWD/target/release/vault"; fi
d=$(mktemp -d /tmp/vault-sealed-bench.XXXXXX)
sshd_pid=""
cleanup() {
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
  rm -rf "$d"
}
trap cleanup EXIT
mkdir -p /run/sshd "$d/src"
ssh-keygen -q -t ed25519 -N '' -f "$d/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$d/id"
cp "$d/id.pub" "$d/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$d/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $d/hostkey
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
StrictModes no
PermitRootLogin yes
UsePAM no
LogLevel ERROR
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -D -f "$d/sshd_config" & sshd_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$d/hostkey.pub")" > "$d/kh"
each=$((mb * 1000000 / 5))
for i in 1 2 3 4 5; do head -c "$each" /dev/urandom > "$d/src/blob$i.bin"; done
"$vault" backup "$d/src" --repo "$d/repo" --compression none -q
recipient=$("$vault" keygen "$d/key.txt" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["recipient"])')
export RCLONE_CONFIG_VBENCH_TYPE=local
ssh=(-i "$d/id" --known-hosts "$d/kh" --no-agent)

# Seconds of one push into a fresh destination: time_push DEST [FLAGS...]
time_push() {
  local dest="$1"; shift
  rm -rf "$d/to"
  local t0 t1
  t0=$(date +%s.%N)
  "$vault" push "$dest" --repo "$d/repo" -q "$@"
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A times
for _ in $(seq "$runs"); do
  for remote in sftp rclone; do
    if [ "$remote" = sftp ]; then dest="sftp://root@127.0.0.1:$port$d/to"; extra=("${ssh[@]}"); else dest="rclone:vbench:$d/to"; extra=(); fi
    t=$(time_push "$dest" "${extra[@]}") || exit 1
    times[$remote-plain]+=" $t"
    t=$(time_push "$dest" "${extra[@]}" --encrypt-to "$recipient") || exit 1
    times[$remote-sealed]+=" $t"
  done
done
echo "| remote | plain push (s) | encrypted push (s) | throughput, encrypted / plain |"
echo "|---|---|---|---|"
for remote in sftp rclone; do
  # shellcheck disable=SC2086
  p=$(median ${times[$remote-plain]}); s=$(median ${times[$remote-sealed]})
  python3 -c "print(f'| $remote ($mb MB, median of $runs) | $p | $s | {$p / $s:.2f}x |')"
done
