#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need, then runs
# the formatting and lint gates (the fuzz targets included), every test, the docs build and a smoke
# run of the end-to-end benchmark. Run as root (the tests mount a tmpfs and switch users).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's heading says how long the suite has run so far, to see where the time goes.
stage() { echo "== $1   [${SECONDS} s]"; }

# Debian packages the tests and the benchmark smoke run use.
need=()
command -v tar >/dev/null || need+=(tar)
command -v gzip >/dev/null || need+=(gzip)
command -v zstd >/dev/null || need+=(zstd)
command -v python3 >/dev/null || need+=(python3)
command -v setpriv >/dev/null || need+=(util-linux)
command -v md5sum >/dev/null || need+=(coreutils)
[ -x /usr/bin/time ] || need+=(time)
command -v pigz >/dev/null || need+=(pigz)
command -v restic >/dev/null || need+=(restic)
command -v bsdtar >/dev/null || need+=(libarchive-tools)
command -v setfacl >/dev/null || need+=(acl)
command -v setfattr >/dev/null || need+=(attr)
command -v setcap >/dev/null || need+=(libcap2-bin)
command -v mknod >/dev/null || need+=(coreutils)
command -v fping >/dev/null || need+=(fping)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v rclone >/dev/null || need+=(rclone)
command -v openssl >/dev/null || need+=(openssl)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || need+=(python3-aiosmtpd)
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || need+=(python3-prometheus-client)
command -v chromium >/dev/null || need+=(chromium)
command -v age >/dev/null || need+=(age)
if [ ! -x /usr/sbin/postfix ]; then
  # Local delivery only, on loopback: mail to local users lands in /var/mail/USER.
  echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
  echo "postfix postfix/mailname string vault.test" | debconf-set-selections
  need+=(postfix)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The real servers the tests talk to: postfix on 127.0.0.1:25 (sshd and the STARTTLS test
# server are started by the test harness itself).
postconf -e inet_interfaces=loopback-only >/dev/null
postfix status >/dev/null 2>&1 || postfix start >/dev/null 2>&1
postfix status >/dev/null 2>&1 || { echo "postfix did not start" >&2; exit 1; }

stage "cargo fmt --check"
cargo fmt --check
stage "cargo clippy --workspace --all-targets -- -D warnings (the fuzz targets too)"
# The fuzz targets are type-checked and linted here, never linked: libfuzzer-sys is told of a
# prebuilt libFuzzer (which need not exist) instead of compiling its C++ for nothing.
CUSTOM_LIBFUZZER_PATH="$PWD/target/no-libfuzzer/libfuzzer.a" \
  cargo clippy --workspace --all-targets -- -D warnings
stage "no function in src/ over 100 lines"
python3 scripts/long-fns.py 100
stage "threads only where docs/architecture.md allows them"
if grep -rn "thread::spawn\|thread::scope\|thread::Builder" src | grep -v "^src/pool/\|^src/main.rs:"; then
  echo "test.sh: a thread started outside src/pool/ and main.rs" >&2; exit 1
fi
stage "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
stage "cargo test"
cargo test --all-targets
stage "benchmark smoke run (tiny synthetic tree)"
# The smoke runs check that the scripts work; they use the debug build the tests made (the
# release build is for real measurements).
export VAULT_BIN="$PWD/target/debug/vault"
benches/compare.sh --synthetic 300 --no-install
benches/scaling.sh 300 600
benches/scan.sh --runs 1 --no-install
benches/ssh.sh --targets 5 --no-install
benches/fleet.sh --hosts 2 --files 200 --no-install
benches/sealed.sh --mb 20 --runs 1 --no-install
benches/watch.sh --files 2000 --runs 1
benches/load.sh --files 500 --snapshots 4 --early 2 --runs 1
stage "all passed"
