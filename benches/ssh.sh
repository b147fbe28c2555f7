#!/usr/bin/env bash
# vault ssh on N targets (the same loopback sshd N times) vs a sequential loop of OpenSSH ssh.
#
#   benches/ssh.sh [--targets N] [--no-install]
#
# Starts its own sshd on 127.0.0.1 (own host key, config and port; needs root), runs `true`
# on every target both ways, and prints wall times and the ratio. Nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
n=50
install=1
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) n="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "ssh.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$install" = 1 ] && { [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; }; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
fi
# VAULT_BIN: use that vault binary instead of building the release one (CI's smoke runs).
if [ -n "${VAULT_BIN:-}" ]; then vault="$VAULT_BIN"; else cargo build --release --quiet; vault="$PWD/target/release/vault"; fi
d=$(mktemp -d /tmp/vault-ssh-bench.XXXXXX)
cleanup() { [ -f "$d/sshd.pid" ] && kill "$(cat "$d/sshd.pid")" 2>/dev/null; rm -rf "$d"; }
trap cleanup EXIT
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$d/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$d/id"
cp "$d/id.pub" "$d/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$d/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $d/hostkey
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
StrictModes no
PermitRootLogin yes
UsePAM no
MaxStartups 200
LogLevel ERROR
CFG
/usr/sbin/sshd -f "$d/sshd_config"
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$d/hostkey.pub")" > "$d/known_hosts"

targets=()
for _ in $(seq "$n"); do targets+=("root@127.0.0.1:$port"); done
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
seq_loop() {
  for _ in $(seq "$n"); do
    ssh -q -i "$d/id" -p "$port" -o BatchMode=yes -o UserKnownHostsFile="$d/known_hosts" \
      -o StrictHostKeyChecking=yes root@127.0.0.1 true
  done
}
v=$(ms "$vault" ssh "${targets[@]}" -i "$d/id" --known-hosts "$d/known_hosts" --no-agent -q -- true)
s=$(ms seq_loop)
echo "vault ssh vs sequential OpenSSH on $n loopback targets; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| run \`true\` on $n targets | wall ms |"
echo "|---|---:|"
echo "| vault ssh (--parallel 32) | $v |"
echo "| for-loop of ssh | $s |"
python3 -c "import sys; print('| vault / loop | %.2fx |' % (int(sys.argv[1]) / int(sys.argv[2])))" "$v" "$s"
