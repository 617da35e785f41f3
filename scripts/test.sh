#!/usr/bin/env bash
# Run the test suite against SQLite and a throw-away PostgreSQL on loopback.
#   bash scripts/test.sh           # default suite (tiny models; minutes on 2 cores)
#   bash scripts/test.sh --slow    # the slow tests: the real default model, longer training
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/test_postgres.sh)"
export RLHF_MODEL_CACHE=${RLHF_MODEL_CACHE:-$HOME/.cache/rlhf-loop/models}
if [ "${1:-}" = "--slow" ]; then
  shift
  exec "${PYTHON:-python3}" -m pytest -m slow -q "$@"
fi
# The default suite runs in RLHF_TEST_WORKERS processes (pytest-xdist, a test file per worker at a time; 0: one
# process), each with one OpenMP thread: two workers on 2 cores overlap one test's model work with another's waits
# (servers, browsers, subprocesses) without the threads of two torch processes spin-waiting on each other.
workers=${RLHF_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
  exec "${PYTHON:-python3}" -m pytest -m "not slow" -q "$@"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "${PYTHON:-python3}" -m pytest -m "not slow" -q -n "$workers" --dist loadfile "$@"
