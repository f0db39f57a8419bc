#!/usr/bin/env bash
# The GPU run of the benchmark suite, in one command with a hard time limit:
#   bash bench/gpu.sh            (from anywhere; writes to $OUT, else bench/out/)
# Needs only jax, flax, optax, numpy, torch, torchvision and transformers; bigjax is read from
# this checkout (PYTHONPATH), not installed. BUDGET (seconds, default 420) bounds the whole
# suite; each model's subprocess gets at most TIMEOUT (default 240) of it, and what did not
# fit is reported as skipped. MODELS picks a subset (comma-separated, default all).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${OUT:-$ROOT/bench/out}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
ARGS=(--budget "${BUDGET:-420}" --timeout "${TIMEOUT:-240}" --steps "${STEPS:-10}")
ARGS+=(--json "$OUT_DIR/gpu.json" --table "$OUT_DIR/gpu.md")
[ -n "${MODELS:-}" ] && ARGS+=(--models "$MODELS")
[ -n "${ABLATE:-}" ] && ARGS+=(--ablate "$ABLATE")
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT_DIR/gpu_info.txt" 2>&1
# The outer timeout is a backstop above the suite's own budget.
timeout $(( ${BUDGET:-420} + 60 )) "$PY" "$ROOT/bench/suite.py" "${ARGS[@]}" 2>&1 | tee "$OUT_DIR/gpu.log"
exit "${PIPESTATUS[0]}"
