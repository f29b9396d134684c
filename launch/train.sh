#!/usr/bin/env bash
# The single-node main job (README command #2): one node, the GPUs it has, local Ray.
#
#   bash launch/train.sh                                   # GRPO, Qwen2.5-0.5B-Instruct, 1 GPU
#   bash launch/train.sh method=sent model=r1_distill_qwen_1.5b trainer.n_gpus_per_node=8
#
# Every argument is a Hydra override passed to `python -m recipe.sent.main`.
# Missing data is prepared first (DAPO-Math-17k + MATH-500 + AIME24 into $ENTROPY_RL_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export ENTROPY_RL_DATA=${ENTROPY_RL_DATA:-$HOME/data/entropy_rl}

need=()
[ -f "$ENTROPY_RL_DATA/dapo_math_17k/train.parquet" ] || need+=(dapo_math_17k)
[ -f "$ENTROPY_RL_DATA/math500/test.parquet" ] || need+=(math500)
[ -f "$ENTROPY_RL_DATA/aime24/test.parquet" ] || need+=(aime24)
if [ ${#need[@]} -gt 0 ]; then
  echo "[train.sh] preparing data: ${need[*]} -> $ENTROPY_RL_DATA"
  "$PYTHON" launch/prepare_data.py --out "$ENTROPY_RL_DATA" --datasets "$(IFS=,; echo "${need[*]}")"
fi

# The file logger writes one JSON line per step here (trainer.logger contains `file`).
export VERL_FILE_LOGGER_ROOT=${VERL_FILE_LOGGER_ROOT:-$PWD/runs}
exec "$PYTHON" -m recipe.sent.main "$@"
