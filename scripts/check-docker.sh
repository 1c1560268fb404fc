#!/usr/bin/env bash
# Checks the Docker image's recipe by reading it; no Docker engine is needed.
#   1. The `FROM rust:X.Y` toolchain of docker/Dockerfile matches `rust-version` in
#      Cargo.toml ([workspace.package]): an older toolchain cannot build the workspace.
#   2. The final image switches to a non-root USER.
#   3. The package and binary the Dockerfile builds (`cargo build ... -p P --bin B`) exist
#      in the workspace.
#   4. docker/tributary.toml passes `tributary check`, with every ${VARIABLE} it references
#      set to a dummy value (and nothing else from the environment), and
#      docker/docker-compose.yml passes each of those variables to the tributary container.
# Every check runs and prints its result; the script fails when any of them failed.
#
# Usage: bash scripts/check-docker.sh [ROOT]
#   ROOT is the repository to check (default: the one holding this script).
#   TRIBUTARY_BIN names the binary for check 4 (default: $CARGO_TARGET_DIR or ROOT/target, then debug/tributary,
#   which `cargo build --workspace` builds).
set -euo pipefail

root=${1:-"$(cd "$(dirname "$0")/.." && pwd)"}
dockerfile="$root/docker/Dockerfile"
cargo_toml="$root/Cargo.toml"
config="$root/docker/tributary.toml"
compose="$root/docker/docker-compose.yml"
bin=${TRIBUTARY_BIN:-"${CARGO_TARGET_DIR:-$root/target}/debug/tributary"}

failures=0
say() { echo "check-docker: $*"; }
ok() { say "ok: $*"; }
fail() { say "FAIL: $*"; failures=$((failures + 1)); }

for file in "$dockerfile" "$cargo_toml" "$config" "$compose"; do
  [ -f "$file" ] || { say "FAIL: $file not found"; exit 1; }
done

# Dockerfile instructions, one per line: comments dropped, continuation lines joined.
instructions=$(sed -e 's/^[[:space:]]*#.*$//' "$dockerfile" | sed -e ':a' -e '/\\$/{N;s/\\\n/ /;ba' -e '}' | grep -v '^[[:space:]]*$' || true)

# 1. The toolchain.
rust_version=$(awk '
  /^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]]/, "", section); next }
  section == "[workspace.package]" && /^[[:space:]]*rust-version[[:space:]]*=/ {
    sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
  }' "$cargo_toml")
images=$(printf '%s\n' "$instructions" | grep -iE '^[[:space:]]*FROM[[:space:]]' | sed -E 's/^[[:space:]]*[Ff][Rr][Oo][Mm][[:space:]]+(--[^[:space:]]+[[:space:]]+)*//' | awk '{print $1}' | grep -E '^(docker\.io/(library/)?)?rust:' || true)
say "Cargo.toml [workspace.package] rust-version: ${rust_version:-(none)}"
if [ -z "$rust_version" ]; then
  fail "no rust-version in [workspace.package] of $cargo_toml"
elif [ -z "$images" ]; then
  fail "no FROM rust:<version> stage in $dockerfile"
else
  for image in $images; do
    tag=${image#*:}
    docker_version=$(printf '%s' "$tag" | grep -oE '^[0-9]+(\.[0-9]+){0,2}' || true)
    say "docker/Dockerfile FROM $image: Rust ${docker_version:-(no version in the tag)}"
    # rust-version 1.91 is matched by rust:1.91 and rust:1.91.x; 1.91.2 only by rust:1.91.2.
    wanted_parts=$(printf '%s' "$rust_version" | awk -F. '{print NF}')
    got_prefix=$(printf '%s' "$docker_version" | cut -d. -f"1-$wanted_parts")
    got_parts=$(printf '%s' "$docker_version" | awk -F. '{print NF}')
    if [ -n "$docker_version" ] && [ "$got_parts" -ge "$wanted_parts" ] && [ "$got_prefix" = "$rust_version" ]; then
      ok "the image builds with Rust $docker_version, as rust-version $rust_version asks"
    else
      fail "docker/Dockerfile builds with rust:$tag but Cargo.toml asks for rust-version $rust_version: use FROM rust:$rust_version-bookworm"
    fi
  done
fi

# 2. A non-root user in the final stage: the last USER after the last FROM.
final_stage=$(printf '%s\n' "$instructions" | awk 'toupper($1) == "FROM" { stage = "" } { stage = stage $0 "\n" } END { printf "%s", stage }')
user=$(printf '%s' "$final_stage" | awk 'toupper($1) == "USER" { user = $2 } END { print user }' | tr -d '"'"'")
user_name=${user%%:*}
if [ -z "$user" ]; then
  fail "the final stage of docker/Dockerfile has no USER: the image would run as root"
elif [ "$user_name" = root ] || [ "$user_name" = 0 ]; then
  fail "the final stage of docker/Dockerfile runs as USER $user (root)"
elif [ "${user_name#\$}" != "$user_name" ]; then
  fail "USER $user in docker/Dockerfile is a variable; name the non-root user"
else
  ok "the image runs as USER $user"
fi

# 3. The package and binary the Dockerfile builds.
build=$(printf '%s\n' "$instructions" | grep -E 'cargo[[:space:]]+build' | tail -n 1 || true)
package=$(printf '%s\n' "$build" | grep -oE '(-p|--package)[[:space:]]+[^[:space:]]+' | awk '{print $2}' | head -n 1 || true)
binary=$(printf '%s\n' "$build" | grep -oE -- '--bin[[:space:]]+[^[:space:]]+' | awk '{print $2}' | head -n 1 || true)
if [ -z "$package" ] || [ -z "$binary" ]; then
  fail "docker/Dockerfile has no 'cargo build ... -p <package> --bin <binary>'"
elif ! command -v python3 >/dev/null 2>&1; then
  fail "python3 not found: it reads cargo metadata to find package $package"
elif ! metadata=$(cd "$root" && cargo metadata --no-deps --format-version 1 --offline 2>/dev/null); then
  fail "cargo metadata failed in $root: cannot tell whether package $package exists"
elif printf '%s' "$metadata" | python3 -c '
import json, sys
package, binary = sys.argv[1], sys.argv[2]
meta = json.load(sys.stdin)
sys.exit(0 if any(p["name"] == package and any(t["name"] == binary and "bin" in t["kind"] for t in p["targets"]) for p in meta["packages"]) else 1)
' "$package" "$binary"; then
  ok "the image builds binary $binary of workspace package $package"
else
  fail "docker/Dockerfile builds -p $package --bin $binary, but the workspace has no such package and binary"
fi

# 4. The compose configuration passes `tributary check`. Variables are gathered from the
# file's settings, not its comments (the configuration ignores ${...} in comments).
variables=$(sed -e 's/#.*$//' "$config" | grep -oE '\$\{[A-Za-z_][A-Za-z0-9_]*\}' | sed -E 's/^\$\{(.*)\}$/\1/' | sort -u || true)
say "docker/tributary.toml references: $(echo ${variables:-(no variables)})"
if [ ! -x "$bin" ]; then
  fail "$bin not found: build it first (cargo build -p tributary --bin tributary)"
else
  dummies=()
  for v in $variables; do dummies+=("$v=dummy-$v"); done
  if output=$(env -i "${dummies[@]}" "$bin" check --config "$config" 2>&1); then
    ok "tributary check accepts docker/tributary.toml"
  else
    fail "tributary check rejects docker/tributary.toml:"
    printf '%s\n' "$output" | sed 's/^/    /' | tail -n 20
  fi
fi
# The tributary service's block of the compose file: from `  tributary:` to the next
# service or top-level key.
service=$(awk '/^  tributary:/ { inside = 1; next } inside && /^  ?[^[:space:]#]/ { inside = 0 } inside' "$compose")
for v in $variables; do
  if printf '%s\n' "$service" | grep -qE "^[[:space:]]+($v:|- \"?$v=)"; then
    ok "docker-compose.yml passes $v to the container"
  else
    fail "docker/tributary.toml needs \${$v} but docker-compose.yml does not pass $v to the container's environment"
  fi
done

if [ "$failures" -gt 0 ]; then
  say "$failures check(s) failed"
  exit 1
fi
say "all checks passed"
