#!/usr/bin/env bash
# The GPU check in one command, under 8 minutes on one H100: one round of the loop with GPU-sized
# settings (bench/loop_efficacy.py), generation speed with a profiler summary (bench/generation.py) and
# training steps against TRL (python -m bench.train_step), each writing JSON into OUT_DIR (8 files at most).
#   bash bench/gpu_check.sh [OUT_DIR]          (default: ./gpu-check, or $OUT when set)
#   bash bench/gpu_check.sh --smoke [OUT_DIR]  (any machine, CPU included, in about a minute)
# --smoke runs the same three commands with --smoke appended: the tiny model and tiny sizes, but every
# option of the GPU run still parsed and checked, so a renamed option fails on CPU in CI, not on a GPU
# machine's scarce time. Its CUDA parts (nvidia-smi, the device name, the default model) are skipped,
# each with a line saying so. $RLHF_BENCH_SMOKE_MODEL names a tiny model to reuse (else one is built).
# On a machine without a package index, wheels placed in .gpu/wheels are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
OUT_DIR=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/rlhf-site .gpu/wheels/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/rlhf-site
fi
started=$(date +%s)
{ if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found, skipped"; fi
  "$PY" -c "import torch, transformers, peft; print(torch.__version__, torch.cuda.get_device_name() \
  if torch.cuda.is_available() else 'no CUDA device', 'transformers', transformers.__version__, 'peft', \
  peft.__version__)"; } > "$OUT_DIR/environment.txt" 2>&1
cat "$OUT_DIR/environment.txt"
if [ ${#SMOKE[@]} -eq 0 ]; then
  "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" \
    || { echo "no CUDA device here: this check measures a GPU; bash bench/gpu_check.sh --smoke checks its commands on CPU"; exit 1; }
  MODEL=$("$PY" bench/_gpu_model.py) || { echo "no model to measure"; exit 1; }
else
  echo "smoke run: CUDA parts skipped (the device name and nvidia-smi above are informational; no GPU figures); the tiny model instead of the default one (bench/_gpu_model.py skipped)"
  if [ -z "${RLHF_BENCH_SMOKE_MODEL:-}" ]; then  # one tiny model for the three commands
    tiny=$(mktemp -d) && trap 'rm -rf "$tiny"' EXIT
    "$PY" -c "import sys; from pathlib import Path; from rlhf_core.models.tiny import build_tiny_model; \
      build_tiny_model(Path(sys.argv[1]))" "$tiny" >/dev/null 2>&1 || { echo "could not build the tiny model"; exit 1; }
    export RLHF_BENCH_SMOKE_MODEL=$tiny
  fi
  MODEL=$RLHF_BENCH_SMOKE_MODEL
fi
echo "model: $MODEL" | tee -a "$OUT_DIR/environment.txt"
status=0
run() {  # name, time limit (s), command...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s, $(( $(date +%s) - started ))s elapsed)"
  timeout "$limit" "$@" ${SMOKE[@]+"${SMOKE[@]}"} 2>&1 | grep -v -E "it/s\]|s/it\]" | tee "$OUT_DIR/$name.log" \
    || status=1
}
# One round first: it is the issue's GPU target (< 3 minutes). Then generation speed with a profiler
# summary of each variant (why one decoding loop is slower than another), then the training steps
# against TRL. PPO memory is a host-memory (RSS) figure, for CPU machines: not measured here.
run round 170 "$PY" bench/loop_efficacy.py --model "$MODEL" --rounds 1 --judgments 256 --eval-prompts 64 \
  --set sampling.per_prompt=4 --set sampling.batch_size=128 --set sampling.max_new_tokens=128 \
  --set reward.epochs=2 --set reward.batch_size=16 --set policy.steps=8 --set policy.prompts_per_step=32 \
  --set policy.group_size=8 --set policy.max_new_tokens=128 --set policy.minibatch_size=32 \
  --json "$OUT_DIR/round.json"
run generation 130 "$PY" bench/generation.py --model "$MODEL" --prompts 64 --max-new-tokens 128 --repeats 1 \
  --workloads natural --variants hf-base,ours-v0,ours-trained,ours-v0-sdpa-any --json "$OUT_DIR/generation.json" \
  --profile "$OUT_DIR/generation-profile.txt"
run train_step 180 "$PY" -m bench.train_step --model "$MODEL" --only reward --only grpo --batch-size 16 --prompts 8 \
  --group-size 8 --max-new-tokens 128 --minibatch-size 16 --json "$OUT_DIR/train_step.json"
echo "gpu check done in $(( $(date +%s) - started )) s (status $status); figures in $OUT_DIR"
exit $status
