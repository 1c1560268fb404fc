#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test with cargo-nextest.
# The tests start their own private PostgreSQL, MariaDB and tansu servers (tributary-tests);
# nextest settings (timeouts, two test processes at a time) are in .config/nextest.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

# Tell the harness where tansu is when it sits in the cache rather than on PATH.
if [ -z "${TANSU_BIN:-}" ] || [ ! -x "${TANSU_BIN}" ]; then
  for candidate in "${HOME:-/root}/.cache/tributary/tansu/bin/tansu" /root/.cache/tributary/tansu/bin/tansu; do
    if [ -x "$candidate" ]; then
      export TANSU_BIN="$candidate"
      break
    fi
  done
fi
echo "test: TANSU_BIN=${TANSU_BIN:-(not found)}"
if [ -z "${S3S_FS_BIN:-}" ] || [ ! -x "${S3S_FS_BIN}" ]; then
  export S3S_FS_BIN="${HOME:-/root}/.cache/tributary/s3s-fs/bin/s3s-fs"
fi
echo "test: S3S_FS_BIN=$S3S_FS_BIN"

# A clean checkout gains nothing from incremental compilation, and its files are a large
# part of the target directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "test: disk before the build: $(df -h --output=avail . | tail -1) free"
echo "test: cargo build --workspace --all-targets"
cargo build --workspace --all-targets
echo "test: disk after the build: $(df -h --output=avail . | tail -1) free, target $(du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null | cut -f1)"

echo "test: bash scripts/check-docker.sh (the image's toolchain, user and configuration)"
bash scripts/check-docker.sh

echo "test: python3 scripts/module-cycles.py (no import cycle between the modules of a crate)"
python3 scripts/module-cycles.py

echo "test: cargo nextest run --workspace --no-fail-fast"
cargo nextest run --workspace --no-fail-fast
