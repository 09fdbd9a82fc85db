#!/usr/bin/env bash
# Checks that release binaries run on the runtime image gcr.io/distroless/cc-debian12: they may
# link only what it provides (glibc's libc/libm/libdl/libpthread/librt, libgcc_s, the loader)
# and need no glibc symbol newer than Debian 12's (2.36).
#   scripts/k8s/check-binary-deps.sh target/release/order-service ...
set -euo pipefail

MAX_GLIBC=2.36
ALLOWED='^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$'

(($#)) || { echo "usage: $0 BINARY..." >&2; exit 2; }
status=0
for bin in "$@"; do
    if [[ ! -f $bin ]]; then
        echo "FAIL $bin: not found (build it with cargo build --release --locked -p $(basename "$bin"))"
        status=1
        continue
    fi
    needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    extra=$(grep -v -E "$ALLOWED" <<<"$needed" || true)
    newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
    if [[ -n $extra ]]; then
        echo "FAIL $bin links libraries distroless/cc lacks: $(tr '\n' ' ' <<<"$extra")"
        status=1
    elif [[ -n $newest && $(printf '%s\n%s\n' "$newest" "$MAX_GLIBC" | sort -V | tail -n 1) != "$MAX_GLIBC" ]]; then
        echo "FAIL $bin needs glibc $newest > $MAX_GLIBC (build on Debian 12 / bookworm)"
        status=1
    else
        echo "ok   $bin: $(tr '\n' ' ' <<<"$needed")(glibc <= ${newest:-none})"
    fi
done
exit $status
