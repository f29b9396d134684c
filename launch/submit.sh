#!/usr/bin/env bash
# Submit a training job to an existing (multi-node) Ray cluster with `ray job submit`.
#
#   launch/submit.sh [--address URL] [--working-dir DIR | --packaged] [--no-wait] [--dry-run] \
#                    [--] [hydra overrides ...]
#
#   RAY_ADDRESS=http://HEAD:8265 bash launch/submit.sh method=sent model=qwen3_14b
#   bash launch/submit.sh --address http://127.0.0.1:8265 --no-wait backend=cpu method=sent_aer
#
# --working-dir DIR  upload DIR (default: this repository) as the job's working_dir, so the code
#                    that runs is the code you submit (the nodes need the dependencies installed:
#                    the Docker image, or `pip install -e .[gpu]`);
# --packaged         upload nothing: run the entropy-rl installed on the nodes;
# --no-wait          return once the job is accepted and print its id
#                    (follow with `ray job logs --follow ID`, stop with `ray job stop ID`);
# --dry-run          print the `ray job submit` command instead of running it.
# Data must be readable on every node (shared filesystem): set ENTROPY_RL_DATA.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
address=${RAY_ADDRESS:-http://127.0.0.1:8265}
working_dir=$ROOT
packaged=0
no_wait=0
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --address) address=$2; shift 2 ;;
    --address=*) address=${1#*=}; shift ;;
    --working-dir) working_dir=$(cd "$2" && pwd); shift 2 ;;
    --working-dir=*) working_dir=$(cd "${1#*=}" && pwd); shift ;;
    --packaged) packaged=1; shift ;;
    --no-wait) no_wait=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed -E 's/^# ?//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "submit.sh: unknown option $1 (bash launch/submit.sh --help lists them)" >&2; exit 2 ;;
    *) break ;;
  esac
done

# Environment every Ray process of the job needs. The CPU backend's platform must be chosen
# before veRL is imported in each worker, so it travels as an env var.
env_vars="\"ENTROPY_RL_DATA\": \"${ENTROPY_RL_DATA:-$HOME/data/entropy_rl}\""
env_vars+=", \"TOKENIZERS_PARALLELISM\": \"true\""
env_vars+=", \"VERL_FILE_LOGGER_ROOT\": \"${VERL_FILE_LOGGER_ROOT:-runs}\""
for arg in "$@"; do
  case "$arg" in backend=cpu|backend=cpu_*) env_vars+=", \"VERL_PLATFORM\": \"cpu\"" ;; esac
done
if [ "$packaged" = 1 ]; then
  runtime_env="{\"env_vars\": {$env_vars}}"
else
  runtime_env="{\"working_dir\": \"$working_dir\", \"excludes\": [\".git/\", \".venv/\", \"runs/\", \"outputs/\", \"**/__pycache__/\"], \"env_vars\": {$env_vars}}"
fi

cmd=(ray job submit --address "$address" --runtime-env-json "$runtime_env")
if [ "$no_wait" = 1 ]; then cmd+=(--no-wait); fi
cmd+=(-- python -m recipe.sent.main "$@")

if [ "$dry_run" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
if [ "$no_wait" = 1 ]; then
  out=$("${cmd[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
  echo "$out"
  job_id=$(echo "$out" | grep -oE "raysubmit_[A-Za-z0-9]+" | head -n 1)
  echo "[submit.sh] job id: ${job_id:-unknown} (ray job logs --address $address --follow $job_id)"
  exit 0
fi
exec "${cmd[@]}"
