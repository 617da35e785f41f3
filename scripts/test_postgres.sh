#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the test suite and print its URL.
# Usage: eval "$(bash scripts/test_postgres.sh)"   (exports RLHF_TEST_PG_URL)
set -euo pipefail
# The server outlives this script: it must not inherit our open files (e.g. a `flock` lock held by
# the caller would stay locked for as long as the server runs).
for fd in $(ls /proc/$$/fd); do
  if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
PORT=${RLHF_TEST_PG_PORT:-55432}
DATA=${RLHF_TEST_PG_DATA:-/tmp/rlhf-test-pg}
RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(runuser -u postgres --); fi
if ! "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  rm -rf "$DATA"; mkdir -p "$DATA"
  [ "$(id -u)" = 0 ] && chown postgres "$DATA"
  "${RUN_AS[@]}" "$PGBIN/initdb" -D "$DATA" -U rlhf --auth=trust >/dev/null
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=200 -c fsync=off" start >/dev/null
fi
"$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U rlhf -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='rlhf_test'" \
  | grep -q 1 || "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U rlhf rlhf_test
echo "export RLHF_TEST_PG_URL=postgresql://rlhf@127.0.0.1:$PORT/rlhf_test"
