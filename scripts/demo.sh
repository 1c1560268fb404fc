#!/usr/bin/env bash
# The Tributary demo on embedded defaults: one private PostgreSQL server holding a head
# office database and a replica, a pharmacy dataset, and live streaming between them
# through the embedded log (no broker). Everything lives under $DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-$PWD/.tributary-demo}
SECONDS_OF_LOAD=${SECONDS_OF_LOAD:-15}

TRIBUTARY_SKIP_TEST_TOOLS=1 bash scripts/install-deps.sh
echo "== building tributary"
cargo build --quiet -p tributary --bin tributary

PGBIN=/usr/lib/postgresql/15/bin
[ -x "$PGBIN/postgres" ] || PGBIN=$(pg_config --bindir)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PGDATA="$DEMO_DIR/pg"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
[ "$(id -u)" = 0 ] && chown postgres "$DEMO_DIR"
echo "demo" > "$DEMO_DIR/pwfile"
[ "$(id -u)" = 0 ] && chown postgres "$DEMO_DIR/pwfile"
echo "== starting a private PostgreSQL on 127.0.0.1:$PORT ($PGDATA)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --pwfile="$DEMO_DIR/pwfile" --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$DEMO_DIR/postgres.log" -w -o "-p $PORT -k $DEMO_DIR -c listen_addresses=127.0.0.1 -c wal_level=logical" start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true' EXIT
for db in head_office replica; do as_pg "$PGBIN/createdb" -h "$DEMO_DIR" -p "$PORT" -U postgres "$db"; done

./target/debug/tributary demo \
  --source-url "postgres://postgres:demo@127.0.0.1:$PORT/head_office" \
  --sink-url "postgres://postgres:demo@127.0.0.1:$PORT/replica" \
  --seconds "$SECONDS_OF_LOAD" --dir "$DEMO_DIR/run"

echo
echo "The databases stay in $PGDATA. To look at them:"
echo "  runuser -u postgres -- $PGBIN/pg_ctl -D $PGDATA -o '-p $PORT -k $DEMO_DIR' start"
echo "  psql postgres://postgres:demo@127.0.0.1:$PORT/replica"
