#!/usr/bin/env bash
# Submit a training job to an existing (multi-node) Ray cluster.
#
#   RAY_ADDRESS=http://HEAD:8265 bash launch/submit.sh method=sent model=qwen3_14b
#
# The cluster's nodes run the Docker image (or have `pip install -e .[gpu]`); this repo is
# uploaded as the job's working_dir so the code that runs is the code you submit.
# Data paths must be readable on every node (shared filesystem): set ENTROPY_RL_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
ENTROPY_RL_DATA=${ENTROPY_RL_DATA:-$HOME/data/entropy_rl}
RUNTIME_ENV=$(cat <<JSON
{
  "working_dir": "$PWD",
  "excludes": [".git/", ".venv/", "runs/", "outputs/", "**/__pycache__/"],
  "env_vars": {
    "ENTROPY_RL_DATA": "$ENTROPY_RL_DATA",
    "TOKENIZERS_PARALLELISM": "true",
    "VERL_FILE_LOGGER_ROOT": "${VERL_FILE_LOGGER_ROOT:-runs}"
  }
}
JSON
)
exec ray job submit --address "$RAY_ADDRESS" --runtime-env-json "$RUNTIME_ENV" ${RAY_SUBMIT_ARGS:-} \
  -- python -m recipe.sent.main "$@"
