"""Pre-flight: what can be checked on the driver before Ray, workers or model weights start.

A wrong key, a missing model or data file, a GPU layout the machine cannot give, a rollout
engine that is not installed or an output directory that cannot be written would otherwise
surface minutes later inside a Ray worker. Every message names the key and the fix.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from typing import Any

from omegaconf import OmegaConf

from recipe.sent.config import config_problems

REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")  # hdfs://, s3://, gs://, pkg://: not checked here
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PreflightError(SystemExit):
    """The run cannot start; ``str()`` lists every reason with its fix. Exits with status 2."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(2)

    def __str__(self) -> str:
        return "[entropy-rl] cannot start:\n  - " + "\n  - ".join(self.problems)


def _data_root() -> str:
    return os.environ.get("ENTROPY_RL_DATA") or os.path.join(os.path.expanduser("~"), "data", "entropy_rl")


def _prepare_hint(path: str) -> str:
    """The command that creates a missing model or data file of ours."""
    parts = os.path.normpath(path).split(os.sep)
    if "cpu_demo" in parts:
        demo = os.sep.join(parts[: parts.index("cpu_demo") + 1]) or "cpu_demo"
        vllm = " --vllm" if "model_vllm" in parts else ""
        return f"python launch/prepare_cpu_demo.py --out {demo}{vllm}"
    name = parts[-2] if len(parts) >= 2 else ""
    if path.endswith(".parquet") and name:
        root = os.sep.join(parts[:-2]) or "."
        return f"python launch/prepare_data.py --out {root} --datasets {name}"
    return ""


def model_path_problem(path: str, key: str) -> str | None:
    """Why ``path`` (given as ``key``) is no loadable model, or None: a local directory needs
    config.json; a hub id (org/name) or a remote path is left to the loader."""
    path = str(path)
    local = os.path.expanduser(path)
    if os.path.isdir(local):
        if not os.path.exists(os.path.join(local, "config.json")):
            return f"{key}={path} is a directory without config.json (an HF model directory is expected)"
        return None
    if REMOTE.match(path) or (HUB_ID.match(path) and not path.startswith((".", "~"))):
        return None
    hint = _prepare_hint(local)
    return f"{key}={path} does not exist" + (
        f": create it with `{hint}`" if hint else "; give a local HF model directory or a hub id (org/name)"
    )


def model_problems(config: Any) -> list[str]:
    why = model_path_problem(config.actor_rollout_ref.model.path, "actor_rollout_ref.model.path")
    return [why] if why else []


def data_problems(config: Any) -> list[str]:
    out = []
    prompt_key = config.data.get("prompt_key", "prompt")
    for key in ("train_files", "val_files"):
        files = config.data.get(key)
        if files is None:
            continue
        files = [files] if isinstance(files, str) else list(files)
        for f in files:
            f = str(f)
            if REMOTE.match(f):
                continue
            local = os.path.expanduser(f)
            if not os.path.exists(local):
                hint = _prepare_hint(local)
                out.append(f"data.{key}: {f} does not exist" + (f": create it with `{hint}`" if hint else ""))
                continue
            if local.endswith(".parquet"):
                try:
                    import pyarrow.parquet as pq

                    names = set(pq.read_schema(local).names)
                except Exception as e:  # not a readable parquet file
                    out.append(f"data.{key}: {f} is not a readable parquet file ({type(e).__name__}: {e})")
                    continue
                missing = [c for c in (prompt_key, "reward_model") if c not in names]
                if missing:
                    out.append(
                        f"data.{key}: {f} has no column(s) {', '.join(missing)} (has: {', '.join(sorted(names))}); "
                        "write it with launch/prepare_data.py, or set data.prompt_key"
                    )
    return out


def visible_gpus() -> int | None:
    """NVIDIA GPUs this process could use (CUDA_VISIBLE_DEVICES respected), without importing
    torch; ``None`` when that cannot be told (then nothing is refused)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1"):
        return 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        # no nvidia-smi: the driver's own view (a container may lack the tool but have the GPUs)
        proc = "/proc/driver/nvidia/gpus"
        if os.path.isdir(proc):
            n = len(os.listdir(proc))
        elif any(os.path.exists(f"/dev/nvidia{i}") for i in range(16)):
            return None
        else:
            return 0
    else:
        try:
            p = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if p.returncode != 0:
            return 0 if "couldn't communicate with the nvidia driver" in (p.stdout + p.stderr).lower() else None
        n = sum(1 for line in p.stdout.splitlines() if line.startswith("GPU "))
    if cvd is not None:
        n = min(n, len([d for d in cvd.split(",") if d.strip()]))
    return n


def joins_cluster(config: Any) -> bool:
    address = (config.get("ray_kwargs") or {}).get("ray_init", {}).get("address")
    return bool(os.environ.get("RAY_ADDRESS")) or address not in (None, "", "local")


def layout_problems(config: Any, gpus: int | None = None) -> list[str]:
    backend = config.entropy_rl.get("backend", "gpu")
    if backend == "cpu" or joins_cluster(config):
        return []  # the CPU backend uses no GPU; a cluster's resources are checked once joined
    nnodes, per_node = int(config.trainer.nnodes), int(config.trainer.n_gpus_per_node)
    if nnodes > 1:
        return [
            f"trainer.nnodes={nnodes} needs a Ray cluster, and none is set (RAY_ADDRESS): "
            "submit with `bash launch/submit.sh` (or launch/slurm.sbatch), or set trainer.nnodes=1"
        ]
    have = visible_gpus() if gpus is None else gpus
    if have is None:
        return []  # cannot tell: veRL checks the Ray cluster's GPUs once it is up
    if have == 0:
        return [
            f"no NVIDIA GPU is visible but the run asks for {per_node} (trainer.n_gpus_per_node): "
            "run the CPU backend with `backend=cpu` (the demo model: `bash launch/train.sh`), "
            "or run on a GPU machine"
        ]
    if have < per_node:
        return [
            f"trainer.n_gpus_per_node={per_node} but {have} GPU(s) are visible: set "
            f"trainer.n_gpus_per_node={have}, or check CUDA_VISIBLE_DEVICES"
        ]
    return []


def rollout_problems(config: Any) -> list[str]:
    r = config.actor_rollout_ref.rollout
    out = []
    if (
        r.name == "vllm"
        and config.entropy_rl.get("backend", "gpu") == "gpu"
        and importlib.util.find_spec("vllm") is None
    ):
        out.append(
            "actor_rollout_ref.rollout.name=vllm but vLLM is not installed: pip install -c constraints.txt "
            "-e '.[gpu]', or use the Docker image (docker/)"
        )
    s = config.entropy_rl.scoring
    if OmegaConf.select(config, "entropy_rl.scoring.enable"):
        budget = int(r.get("response_length") or config.data.max_response_length)
        if int(s.max_response_length) > budget:
            out.append(
                f"entropy_rl.scoring.max_response_length={s.max_response_length} exceeds the rollout's "
                f"response budget ({budget}, actor_rollout_ref.rollout.response_length / "
                "data.max_response_length): lower it, or raise data.max_response_length"
            )
    return out


def _writable(path: str) -> bool:
    p = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            return False
        p = parent
    return os.path.isdir(p) and os.access(p, os.W_OK | os.X_OK)


def output_problems(config: Any) -> list[str]:
    out = []
    d = str(config.trainer.default_local_dir)
    if not REMOTE.match(d) and not _writable(d):
        out.append(f"trainer.default_local_dir={d} cannot be created or written: point it at a writable directory")
    if OmegaConf.select(config, "entropy_rl.scoring.enable"):
        c = str(config.entropy_rl.scoring.cache_dir)
        if not _writable(c):
            out.append(
                f"entropy_rl.scoring.cache_dir={c} cannot be created or written: point it at a writable directory"
            )
    return out


def preflight(config: Any, gpus: int | None = None) -> None:
    """Raise :class:`PreflightError` with every problem found; return quietly when none."""
    found = config_problems(config)
    if not found:  # the rest reads knobs that must be valid first
        found += model_problems(config)
        found += data_problems(config)
        found += layout_problems(config, gpus)
        found += rollout_problems(config)
        found += output_problems(config)
    if found:
        raise PreflightError(found)
