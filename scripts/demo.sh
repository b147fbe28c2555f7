#!/usr/bin/env bash
# Builds vault (installing the two Debian packages its SSH and TLS code builds against, if
# missing) and backs up a real folder: /usr/share/doc (or $1) into /tmp/vault-demo (or $2).
# Run it again for an incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-/usr/share/doc}"
repo="${2:-/tmp/vault-demo}"
need=()
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --quiet
target/release/vault backup "$src" --repo "$repo"
target/release/vault snapshots --repo "$repo"
