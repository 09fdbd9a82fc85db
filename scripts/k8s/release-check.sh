#!/usr/bin/env bash
# The release binaries run on gcr.io/distroless/cc-debian12: builds every binary of the workspace
# in release mode, then checks its dynamic dependencies and glibc needs (check-binary-deps.sh).
# The binaries come from `cargo metadata`, and must be the Dockerfile's image targets: a binary
# without a target never ships, a target without a binary does not build.
#   scripts/k8s/release-check.sh              build, then check
#   scripts/k8s/release-check.sh --no-build   check the release binaries already built
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CARGO=${CARGO:-cargo}

metadata=$("$CARGO" metadata --format-version 1 --no-deps)
target_dir=$(jq -r .target_directory <<<"$metadata")
# Tools that never ship (the benchmarks) say so with `[package.metadata.orderflow] image = false`.
mapfile -t bins < <(jq -r '.packages[] | select(.metadata.orderflow.image != false) | .targets[]
    | select(.kind | index("bin")) | .name' <<<"$metadata" | sort -u)

# Image targets: the stages whose entrypoint is one of our binaries, named like that binary.
problems=0
images=()
while read -r stage binary; do
    if [[ $stage != "$binary" ]]; then
        echo "FAIL Dockerfile stage $stage runs /usr/local/bin/$binary: a target is named like its binary"
        problems=1
    fi
    images+=("$stage")
done < <(awk 'toupper($1) == "FROM" { stage = (toupper($(NF-1)) == "AS") ? $NF : "" }
    $1 == "ENTRYPOINT" && match($0, /"\/usr\/local\/bin\/[^"]+"/) {
        print stage, substr($0, RSTART + 16, RLENGTH - 17) }' Dockerfile)

for bin in "${bins[@]}"; do
    if [[ ! " ${images[*]} " == *" $bin "* ]]; then
        echo "FAIL binary $bin has no Dockerfile target: add one (FROM runtime AS $bin)"
        problems=1
    fi
done
for image in "${images[@]}"; do
    if [[ " ${bins[*]} " == *" $image "* ]]; then
        continue
    fi
    if [[ ! -d crates/$image ]]; then
        # Same rule as check_contract.py: the target exists ahead of its crate.
        echo "note: Dockerfile target $image has no crate yet (crates/$image); checked once it exists"
    else
        echo "FAIL Dockerfile target $image: the workspace builds no binary $image"
        problems=1
    fi
done
((problems == 0)) || exit 1
echo "binaries = Dockerfile targets: ${bins[*]}"

if [[ ${1:-} != --no-build ]]; then
    "$CARGO" build --release --locked --workspace --bins
fi
paths=()
for bin in "${bins[@]}"; do paths+=("$target_dir/release/$bin"); done
scripts/k8s/check-binary-deps.sh "${paths[@]}"
