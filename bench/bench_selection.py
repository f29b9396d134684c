"""Selection cost: SENT's batch-wide token selection over a whole training batch.

The recipe computes the token sets once per step on the driver over the whole batch
(``recipe/sent/hooks.py`` → :func:`entropy_rl.losses.select_tokens`): 256 prompts × 8
rollouts with responses up to 2048 / 8192 tokens (lengths uniform in [T/8, T]). For each
size and mode this reports the median time, the peak extra memory (CPU: a fresh subprocess
per measurement, peak RSS above the level after the inputs were built — VmHWM reset through
``/proc/self/clear_refs``, else ``ru_maxrss`` growth; GPU: ``torch.cuda.max_memory_allocated``
above the inputs), and whether the sets equal an independent float64 reference (numpy ``lexsort`` by
the set definitions in ``entropy_rl/losses.py``'s docstring, ties by position). It also
times the previous sort-based selection (three stable ``argsort`` + rank scatters) for scale.

    nice -n 19 .venv/bin/python bench/bench_selection.py [--quick] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from entropy_rl.losses import TOKEN_HIGH_COV, TOKEN_LOW, TOKEN_LOW_COV, TOKEN_OUTSIDE, SentKLConfig  # noqa: E402

ROWS = 256 * 8
SIZES = [(ROWS, 2048, 3), (ROWS, 8192, 2)]  # (rows, max response tokens, repeats)
QUICK_SIZES = [(64, 512, 3), (128, 1024, 2)]
MODES = {"release": SentKLConfig(), "paper": SentKLConfig(mode="paper")}


def sort_based_select(entropy, log_prob, advantages, response_mask, cfg: SentKLConfig) -> torch.Tensor:
    """The previous implementation (for scale): a stable argsort + rank scatter per set."""

    def rank(key, keep, descending):
        fill = float("-inf") if descending else float("inf")
        order = torch.argsort(torch.where(keep, key, fill), descending=descending, stable=True)
        r = torch.empty_like(order)
        return r.scatter_(0, order, torch.arange(order.numel(), device=order.device))

    def count(n, fraction, minimum):
        k = torch.floor(n.to(torch.float64) * fraction).to(torch.int64)
        return torch.minimum(torch.clamp(k, min=minimum), n)

    h, logp, adv = (x.reshape(-1).float() for x in (entropy, log_prob, advantages))
    valid = (response_mask != 0).reshape(-1)
    n_low = count(valid.sum(), cfg.low_entropy_fraction, 1)
    low = valid & (rank(h, valid, False) < n_low)
    lowf = low.float()
    d = torch.clamp(n_low, min=1).float()
    cov = (logp - (logp * lowf).sum() / d) * (adv - (adv * lowf).sum() / d)
    k = count(n_low, cfg.cov_fraction, cfg.min_selected)
    high = low & (rank(cov, low, True) < k)
    ts = torch.where(low, TOKEN_LOW, TOKEN_OUTSIDE).to(torch.int8)
    if cfg.mode == "release":
        ts = torch.where(low & ~high & (rank(cov, low, False) < k), TOKEN_LOW_COV, ts)
    return torch.where(high, TOKEN_HIGH_COV, ts).to(torch.int8).reshape(entropy.shape)


def reference_sets(batch: dict, cfg: SentKLConfig) -> np.ndarray:
    """Independent float64 reference: numpy lexsort on each set's definition (ties by position)."""
    valid = batch["response_mask"].numpy().reshape(-1)
    h = batch["entropy"].numpy().reshape(-1).astype(np.float64)
    lp = batch["old_log_prob"].numpy().reshape(-1).astype(np.float64)
    adv = batch["advantages"].numpy().reshape(-1).astype(np.float64)
    pos = np.flatnonzero(valid)
    n = len(pos)
    out = np.full(valid.shape, TOKEN_OUTSIDE, dtype=np.int8)
    n_low = min(max(1, math.floor(n * cfg.low_entropy_fraction)), n)
    low = pos[np.lexsort((pos, h[pos]))[:n_low]]  # last key is the primary one
    if len(low) == 0:
        return out.reshape(batch["entropy"].shape)
    out[low] = TOKEN_LOW
    cov = (lp[low] - lp[low].mean()) * (adv[low] - adv[low].mean())
    k = min(max(cfg.min_selected, math.floor(n_low * cfg.cov_fraction)), n_low)
    high = low[np.lexsort((low, -cov))[:k]]
    if cfg.mode == "release":
        out[low[np.lexsort((low, cov))[:k]]] = TOKEN_LOW_COV
    out[high] = TOKEN_HIGH_COV
    return out.reshape(batch["entropy"].shape)


class _PeakRSS:
    """Peak resident memory above the current level, from here on (CPU).

    Linux: reset the kernel's high-water mark (``5 > /proc/self/clear_refs``) and read VmHWM;
    otherwise ``ru_maxrss`` growth (which misses a peak lower than the input generation's).
    """

    def __init__(self) -> None:
        import gc

        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base, self.source = self._status("VmRSS"), "VmHWM above VmRSS after clear_refs (fresh process)"
        except OSError:
            self.base, self.source = None, "ru_maxrss growth of a fresh process after the inputs were built"
        self.rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(key)

    def extra(self) -> tuple[int, str]:
        if self.base is not None:
            return self._status("VmHWM") - self.base, self.source
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss0) * 1024, self.source


def measure(rows: int, T: int, mode: str, impl: str, repeats: int, device: str, save: str | None) -> dict:
    """Build the batch, time ``repeats`` selections, report peak extra memory (one process)."""
    from entropy_rl.losses import select_tokens

    fn = select_tokens if impl == "ours" else sort_based_select
    cfg = MODES[mode]
    batch = C.make_batch(rows, T, seed=7, device=device)
    args = (batch["entropy"], batch["old_log_prob"], batch["advantages"], batch["response_mask"], cfg)
    gpu = device.startswith("cuda")
    if gpu:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    hwm = _PeakRSS()
    out = fn(*args)  # warm-up (and the result checked against the reference)
    C.sync(device)
    times = [C.time_once(lambda: fn(*args), device) for _ in range(repeats)]
    res = {
        "rows": rows,
        "T": T,
        "tokens": rows * T,
        "valid_tokens": int(batch["response_mask"].sum()),
        "mode": mode,
        "impl": impl,
        "device": device,
        **C.timing_stats(times),
    }
    if gpu:
        res["peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
        res["memory_source"] = "torch.cuda.max_memory_allocated above the inputs"
    else:
        res["peak_extra_bytes"], res["memory_source"] = hwm.extra()
    res["input_bytes"] = sum(v.numel() * v.element_size() for v in batch.values())
    if save:
        np.save(save, out.cpu().numpy())
    return res


def run_child(rows, T, mode, impl, repeats, device, threads) -> tuple[dict, str]:
    fd, path = tempfile.mkstemp(suffix=".npy", prefix="sel_")
    os.close(fd)
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--threads",
        str(threads),
        "--child",
        json.dumps([rows, T, mode, impl, repeats, device, path]),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-sort-baseline", action="store_true", help="skip the previous sort-based selection")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        rows, T, mode, impl, repeats, device, path = json.loads(args.child)
        print(json.dumps(measure(rows, T, mode, impl, repeats, device, path)))
        return

    sizes = QUICK_SIZES if args.quick else SIZES
    impls = ["ours"] if args.no_sort_baseline else ["ours", "sort_based"]
    plan = [(s, m, i) for s in sizes for m in MODES for i in impls if not (i == "sort_based" and m == "paper")]
    results = {"machine": C.machine_info(), "device": args.device, "quick": args.quick, "runs": []}
    rows_out = []
    eta = C.Progress(len(plan), "selection")
    for n, ((rows, T, repeats), mode, impl) in enumerate(plan):
        print(f"{rows}x{T} {mode} {impl}: measuring in a subprocess", file=sys.stderr, flush=True)
        res, path = run_child(rows, T, mode, impl, repeats if impl == "ours" else 1, args.device, args.threads)
        if impl == "ours":
            t0 = time.monotonic()
            got = np.load(path)
            batch = C.make_batch(rows, T, seed=7)
            want = reference_sets(batch, MODES[mode])
            res["mismatched_tokens_vs_float64_reference"] = int((got != want).sum())
            res["set_sizes"] = {
                name: int((got == v).sum())
                for name, v in (("low", TOKEN_LOW), ("low_cov", TOKEN_LOW_COV), ("high_cov", TOKEN_HIGH_COV))
            }
            res["reference_s"] = time.monotonic() - t0
        os.unlink(path)
        results["runs"].append(res)
        rows_out.append(
            {
                "batch": f"{rows}x{T}",
                "mode": mode,
                "impl": impl,
                "valid_tokens": res["valid_tokens"],
                "median_s": res["median_s"],
                "repeats": res["repeats"],
                "peak_extra_MB": res["peak_extra_bytes"] / 2**20,
                "inputs_MB": res["input_bytes"] / 2**20,
                "= float64 ref": None if impl != "ours" else res["mismatched_tokens_vs_float64_reference"] == 0,
            }
        )
        eta.step(n + 1)
    dev = results["machine"].get("gpu", "CPU")
    print(
        f"\nBatch-wide SENT selection on {args.device} ({dev}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        C.table(
            rows_out,
            [
                "batch",
                "mode",
                "impl",
                "valid_tokens",
                "median_s",
                "repeats",
                "peak_extra_MB",
                "inputs_MB",
                "= float64 ref",
            ],
        )
    )
    if not args.device.startswith("cuda"):
        results["gpu"] = C.SKIPPED_NO_CUDA
        print(f"\nGPU: {C.SKIPPED_NO_CUDA} (run with --device cuda on a GPU machine)")
    C.write_json("bench_selection" + ("_quick" if args.quick else ""), results)


if __name__ == "__main__":
    main()
