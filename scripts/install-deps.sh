#!/usr/bin/env bash
# Installs what building Tributary and running its tests need, when it is missing:
#   - Debian packages: the C toolchain, cmake and headers for librdkafka (rdkafka is built
#     from source with cmake, curl and zstd), curl, the PostgreSQL 15 server, the MariaDB
#     server and client (the tests start private instances of these; no system service is used);
#   - tansu, the Kafka-protocol broker the Kafka tests run against, cached in
#     ~/.cache/tributary/tansu (or $TANSU_BIN if that names an existing binary);
#   - s3s-fs, an S3-compatible server for the backup tests, cached in
#     ~/.cache/tributary/s3s-fs (or $S3S_FS_BIN);
#   - cargo-nextest, the test runner.
# Idempotent: when everything is present it only checks, and prints one line per check.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
TANSU_ROOT="${HOME:-/root}/.cache/tributary/tansu"

say() { echo "install-deps: $*"; }

SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi

# Debian packages to install, gathered first so apt runs once.
missing=()

need_package() { # need_package PACKAGE: install PACKAGE unless dpkg says it is installed
  if dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; then
    say "ok: $1"
  else
    say "missing: $1"
    missing+=("$1")
  fi
}

need_file() { # need_file PATH PACKAGE: install PACKAGE unless PATH is executable
  if [ -x "$1" ]; then
    say "ok: $1"
  else
    say "missing: $1 (package $2)"
    missing+=("$2")
  fi
}

need_command() { # need_command COMMAND PACKAGE: install PACKAGE unless COMMAND is found
  if command -v "$1" >/dev/null 2>&1; then
    say "ok: $1"
  else
    say "missing: $1 (package $2)"
    missing+=("$2")
  fi
}

need_command cmake cmake
need_command c++ g++
need_command make make
need_command pkg-config pkg-config
need_command curl curl
need_command zstd zstd
need_package libcurl4-openssl-dev
need_package libssl-dev
need_package zlib1g-dev
need_file /usr/lib/postgresql/15/bin/postgres postgresql-15
need_file /usr/lib/postgresql/15/bin/pg_recvlogical postgresql-client-15
if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then say "ok: mariadbd"; else say "missing: mariadbd (package mariadb-server)"; missing+=(mariadb-server); fi
need_command mariadb-install-db mariadb-server
need_command mariadb mariadb-client

if [ "${#missing[@]}" -gt 0 ]; then
  # Deduplicate while keeping the order.
  packages=$(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++' | tr '\n' ' ')
  say "apt-get update"
  "${SUDO[@]}" apt-get update -qq
  say "apt-get install -y $packages"
  # shellcheck disable=SC2086
  "${SUDO[@]}" apt-get install -y -qq $packages
fi

if [ "${TRIBUTARY_SKIP_TEST_TOOLS:-}" = 1 ]; then
  say "skipping tansu and cargo-nextest (only the tests need them)"
  exit 0
fi

if [ -n "${TANSU_BIN:-}" ] && [ -x "$TANSU_BIN" ]; then
  say "ok: tansu at \$TANSU_BIN ($TANSU_BIN)"
elif [ -x "$TANSU_ROOT/bin/tansu" ]; then
  say "ok: tansu at $TANSU_ROOT/bin/tansu"
elif [ -x /root/.cache/tributary/tansu/bin/tansu ]; then
  say "ok: tansu at /root/.cache/tributary/tansu/bin/tansu"
else
  say "cargo install tansu --locked --features dynostore --root $TANSU_ROOT (about 15 minutes)"
  cargo install tansu --locked --features dynostore --root "$TANSU_ROOT"
fi

# s3s-fs, the S3-compatible server the backup tests store into. (0.15 and later need a
# newer rustc than this toolchain.)
S3S_ROOT="${HOME:-/root}/.cache/tributary/s3s-fs"
if [ -n "${S3S_FS_BIN:-}" ] && [ -x "$S3S_FS_BIN" ]; then
  say "ok: s3s-fs at \$S3S_FS_BIN ($S3S_FS_BIN)"
elif [ -x "$S3S_ROOT/bin/s3s-fs" ]; then
  say "ok: s3s-fs at $S3S_ROOT/bin/s3s-fs"
else
  say "cargo install s3s-fs@0.14.1 --locked --features binary --root $S3S_ROOT (about 5 minutes)"
  cargo install s3s-fs@0.14.1 --locked --features binary --root "$S3S_ROOT"
fi

if command -v cargo-nextest >/dev/null 2>&1; then
  say "ok: cargo-nextest"
else
  say "cargo install cargo-nextest --locked"
  cargo install cargo-nextest --locked
fi
