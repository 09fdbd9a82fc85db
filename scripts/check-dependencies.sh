#!/usr/bin/env bash
# TLS goes through rustls with ring only: no OpenSSL, native-tls or aws-lc anywhere in the tree
# (release binaries must run on distroless/cc, which has no libssl).
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for crate in openssl-sys openssl native-tls aws-lc-sys aws-lc-rs; do
  if cargo tree --workspace --edges normal,build -i "$crate" >/dev/null 2>&1; then
    echo "forbidden dependency in the tree: $crate" >&2
    cargo tree --workspace -i "$crate" >&2 || true
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "dependencies: rustls/ring only (no OpenSSL, native-tls or aws-lc)"
exit "$status"
