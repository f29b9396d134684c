#!/usr/bin/env bash
# The main job (README command #2): one node, the GPUs it has, local Ray.
#
#   bash launch/train.sh                                   # GPU: GRPO, Qwen2.5-0.5B-Instruct, 1 GPU
#   bash launch/train.sh method=sent model=r1_distill_qwen_1.5b trainer.n_gpus_per_node=8
#
# Without a visible GPU it runs the CPU backend instead (backend=cpu): SENT + AER with the
# adaptive curriculum on a small local model and a synthetic task, a real veRL run in a few
# minutes. Every argument is a Hydra override passed to `python -m recipe.sent.main`.
# Missing data is prepared first. Without PYTHON=..., it runs in the project's .venv, which it
# builds first when missing (`make venv`, the same one `make test` uses; ~3 min).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ ! -f .venv/.installed ]; then
    command -v make >/dev/null 2>&1 || { echo "[train.sh] needs make to build .venv (or set PYTHON=/path/to/python)" >&2; exit 2; }
    echo "[train.sh] building .venv (make venv, once; ~3 min) ..." >&2
    make -s venv >&2
  fi
  PYTHON=$PWD/.venv/bin/python
fi
for arg in "$@"; do
  case "$arg" in -h|--help) exec "$PYTHON" -m recipe.sent.main --help ;; esac
done
export ENTROPY_RL_DATA=${ENTROPY_RL_DATA:-$HOME/data/entropy_rl}
# The file logger writes one JSON line per step under here (trainer.logger contains `file`).
export VERL_FILE_LOGGER_ROOT=${VERL_FILE_LOGGER_ROOT:-$PWD/runs}

has_gpu() {
  [ "${CUDA_VISIBLE_DEVICES-unset}" != "" ] || return 1
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "^GPU"
}

if has_gpu; then
  need=()
  [ -f "$ENTROPY_RL_DATA/dapo_math_17k/train.parquet" ] || need+=(dapo_math_17k)
  [ -f "$ENTROPY_RL_DATA/math500/test.parquet" ] || need+=(math500)
  [ -f "$ENTROPY_RL_DATA/aime24/test.parquet" ] || need+=(aime24)
  if [ ${#need[@]} -gt 0 ]; then
    echo "[train.sh] preparing data: ${need[*]} -> $ENTROPY_RL_DATA"
    "$PYTHON" launch/prepare_data.py --out "$ENTROPY_RL_DATA" --datasets "$(IFS=,; echo "${need[*]}")"
  fi
  exec "$PYTHON" -m recipe.sent.main "$@"
fi

echo "[train.sh] no GPU visible: running the CPU backend (backend=cpu, SENT + AER, local demo model)"
if [ ! -f "$ENTROPY_RL_DATA/cpu_demo/cpu_demo.json" ]; then
  "$PYTHON" launch/prepare_cpu_demo.py --out "$ENTROPY_RL_DATA/cpu_demo"
fi
exec "$PYTHON" -m recipe.sent.main backend=cpu method=sent_aer entropy_rl.curriculum.adaptive=true "$@"
