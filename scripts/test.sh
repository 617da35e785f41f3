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
exec "${PYTHON:-python3}" -m pytest -m "not slow" -q "$@"
