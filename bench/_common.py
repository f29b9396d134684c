"""Helpers shared by the ``bench/`` scripts: machine info, timing, progress, tables, JSON.

Not a test module: the scripts print a table and write ``bench/results/<name>.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULTS = os.path.join(ROOT, "bench", "results")
CONF = os.path.join(ROOT, "conf")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SKIPPED_NO_CUDA = "skipped: no CUDA device"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (goes into every JSON file)."""
    import torch

    info: dict[str, Any] = {
        "date": _dt.date.today().isoformat(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    try:
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    try:
        import triton  # noqa: F401

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_once(fn: Callable[[], Any], device: str) -> float:
    """Seconds of one call; CUDA events around it on a GPU, perf_counter on the CPU."""
    if device.startswith("cuda"):
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(
    fns: dict[str, Callable[[], Any]], device: str, warmup: int, repeats: int, label: str = ""
) -> dict[str, dict[str, float]]:
    """Time every function ``repeats`` times, round-robin (so load drift hits all alike).

    Returns per name: median, p10, p90 (seconds) and the repeat count.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    eta = Progress(repeats, label)
    for r in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, device))
        eta.step(r + 1)
    return {k: timing_stats(v) for k, v in times.items()}


def timing_stats(ts: Sequence[float]) -> dict[str, float]:
    s = sorted(ts)
    q = lambda p: s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"median_s": statistics.median(s), "p10_s": q(0.1), "p90_s": q(0.9), "repeats": len(s)}


class Progress:
    """``label i/n`` with rate, elapsed and ETA on stderr (tqdm), refreshed at most every 2 s."""

    def __init__(self, total: int, label: str) -> None:
        from recipe.sent.progress import progress_bar

        self.bar = progress_bar(total, label, every_s=2.0)

    def step(self, done: int) -> None:
        self.bar.update(done - self.bar.n)
        if done >= self.bar.total:
            self.bar.close()


def fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table (also readable in a terminal)."""
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out)


def write_json(name: str, payload: dict[str, Any]) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    print(f"\nJSON written to {os.path.relpath(path, os.getcwd())}")
    return path


def compose(method: str, *overrides: str):
    """The recipe's resolved Hydra config for ``method=<name>`` (as the trainer sees it)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    import recipe.sent  # noqa: F401  (registers the entropy_rl knobs the config composes)

    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = _compose(config_name="entropy_rl", overrides=[f"method={method}", *overrides])
    OmegaConf.resolve(cfg)
    return cfg


def make_batch(B: int, T: int, seed: int = 0, device: str = "cpu", min_len_frac: float = 0.125) -> dict:
    """Random float32 tensors shaped like a (micro-)batch of responses, right-padded.

    Response lengths are uniform in [min_len_frac·T, T] (one row at full length); token
    entropy is exponential (most tokens near 0, a long tail), the sampled token's log-prob
    is correlated with it, the old/reference policies are small perturbations, advantages
    are per-response (GRPO), and everything is 0 on padding. No zeros-only inputs: ties
    would make selection and top-k artificially cheap or expensive.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, int(min_len_frac * T)), T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    m = mask.float()
    ent = torch.empty(B, T).exponential_(2.5, generator=g)
    logp = -(ent * torch.rand(B, T, generator=g) * 1.5 + torch.rand(B, T, generator=g) * 0.05)
    old = logp + 0.02 * torch.randn(B, T, generator=g)
    ref = logp + 0.05 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, 1, generator=g).expand(B, T)
    coef = (0.005 * torch.rand(B, 1, generator=g)).expand(B, T)  # AER: α_t·w(prompt)
    out = {
        "response_mask": mask,
        "entropy": ent * m,
        "log_prob": logp * m,
        "old_log_prob": old * m,
        "ref_log_prob": ref * m,
        "advantages": adv * m,
        "entropy_coef": coef * m,
    }
    return {k: v.contiguous().to(device) for k, v in out.items()}
