"""Loss micro-benchmark: what the entropy machinery costs per micro-batch.

Forward + backward of the policy loss alone (no model) over micro-batch shapes, random
float32 inputs (``bench/_common.make_batch``), median of interleaved repeats after warm-up
(CUDA events on a GPU). Every variant is reported as a ratio to veRL's ``vanilla`` loss
measured in the same run:

- veRL's own losses through ``get_policy_loss_fn`` with the ``ActorConfig`` of our presets
  (``grpo`` → vanilla, ``kl_cov``, ``clip_cov``);
- ours, called as ``recipe/sent/worker_loss.entropy_rl_loss`` calls them: SENT with the token
  sets precomputed batch-wide (the recipe's default; the selection itself is
  ``bench_selection.py``), SENT with in-loss ``micro`` selection in release and paper mode,
  AER (per-token bonus coefficients from the driver), SENT + AER;
- ``host_path``: what the released SENT code does, written by us from its description.

On a GPU it also checks (item 3) that the loss and the selection raise no host sync under
``torch.cuda.set_sync_debug_mode("error")`` and that forward + backward can be captured in a
CUDA graph. Without CUDA those rows say ``skipped: no CUDA device``.

    nice -n 19 .venv/bin/python bench/bench_loss.py [--quick] [--device cpu|cuda] [--threads N]

On a CPU shared with other work use ``--threads 1``: with several intra-op threads one
descheduled thread stalls every op, and medians swing by 10x or more.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402
import torch  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass  # noqa: E402

from entropy_rl.losses import SentKLConfig, compute_policy_loss, select_tokens  # noqa: E402
from recipe.sent.hooks import sent_config  # noqa: E402

# (B, T, repeats on CPU, repeats on GPU); the largest shape has fewer CPU repeats (each call
# of the slowest variant takes ~50 ms on one core).
SHAPES = [(4, 2048, 200, 200), (16, 4096, 60, 200), (64, 8192, 15, 100)]
QUICK_SHAPES = [(4, 512, 5, 20), (8, 1024, 3, 20)]


def host_path_loss(old, logp, adv, mask, ent, cfg: SentKLConfig, device) -> torch.Tensor:
    """What the released SENT code does per micro-batch, written from its description.

    Every input is copied to host memory (``logπ`` keeps its autograd graph through the
    copy); the valid tokens are gathered by boolean indexing; three top-k run on the host —
    the lowest ``low_entropy_fraction`` of valid tokens by entropy, then the top and the
    bottom ``cov_fraction`` of that set by Cov(logπ, A); the per-token coefficients are
    scattered into a host tensor; the un-clipped surrogate ``−A·ratio + c·|logπ − logπ_old|``
    is token-mean aggregated there and the scalar loss is copied back to the device. Every
    ``int(...)`` / ``nonzero`` is a host sync on a GPU. (The release also indexed with an
    int64 mask; we use a correct boolean one so the work done is comparable.)
    """
    logp_h, old_h, adv_h, ent_h = logp.cpu(), old.cpu(), adv.cpu(), ent.detach().cpu()
    valid = (mask.cpu() != 0).reshape(-1)
    idx = valid.nonzero().squeeze(1)
    n_low = max(1, int(idx.numel() * cfg.low_entropy_fraction))
    low_idx = idx[torch.topk(ent_h.reshape(-1)[idx], n_low, largest=False).indices]
    lp_low = logp_h.detach().reshape(-1)[low_idx]
    adv_low = adv_h.reshape(-1)[low_idx]
    cov = (lp_low - lp_low.mean()) * (adv_low - adv_low.mean())
    k = max(cfg.min_selected, int(n_low * cfg.cov_fraction))
    coef = torch.zeros(valid.numel())
    coef[low_idx[torch.topk(cov, k, largest=False).indices]] = cfg.beta_low
    coef[low_idx[torch.topk(cov, k, largest=True).indices]] = cfg.beta_high
    diff = logp_h - old_h
    loss_mat = -adv_h * torch.exp(diff) + coef.view_as(diff) * diff.abs()
    m = valid.view_as(diff).float()
    return ((loss_mat * m).sum() / m.sum()).to(device)


def build_variants(batch: dict, device: str) -> tuple[dict, dict]:
    """Closures running forward + backward of each loss on ``batch``; and their configs."""
    B = batch["log_prob"].shape[0]
    n_tokens = int(batch["response_mask"].sum())
    gbi = {"dp_size": 1, "batch_num_tokens": n_tokens, "global_batch_size": B, "loss_scale_factor": None}
    old, adv, mask = batch["old_log_prob"], batch["advantages"], batch["response_mask"]
    logp = batch["log_prob"].clone().requires_grad_(True)
    ent = batch["entropy"].clone().requires_grad_(True)  # AER's bonus differentiates through H_t
    ecoef = batch["entropy_coef"]

    fns, info = {}, {}

    def verl_fn(method: str):
        cfg = C.compose(method)
        actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
        actor.global_batch_info.update(gbi)
        mode = actor.policy_loss.loss_mode
        loss_fn = get_policy_loss_fn(mode)
        info[mode] = {
            "preset": method,
            "clip_ratio_low": actor.clip_ratio_low,
            "clip_ratio_high": actor.clip_ratio_high,
        }

        def run():
            loss, _ = loss_fn(old, logp, adv, mask, actor.loss_agg_mode, actor, None)
            torch.autograd.grad(loss, [logp])

        return mode, run, actor

    for method in ("grpo", "kl_cov", "clip_cov"):
        mode, run, actor = verl_fn(method)
        fns[mode] = run
        if method == "grpo":
            grpo_actor = actor

    def ours(method: str, *overrides: str):
        cfg = C.compose(method, *overrides)
        sent = sent_config(cfg.entropy_rl.token_kl)
        actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
        return cfg, sent, actor

    def our_loss(sent, actor, token_set=None, entropy_coef=None, grads=(logp,)):
        lo = actor.clip_ratio_low if actor.clip_ratio_low is not None else actor.clip_ratio
        hi = actor.clip_ratio_high if actor.clip_ratio_high is not None else actor.clip_ratio
        loss, _ = compute_policy_loss(
            old,
            logp,
            adv,
            mask,
            sent,
            token_set=token_set,
            entropy=ent if entropy_coef is not None else None,
            entropy_coef=entropy_coef,
            clip_ratio_low=lo,
            clip_ratio_high=hi,
            clip_ratio_c=actor.get("clip_ratio_c", 3.0),
            loss_agg_mode=actor.loss_agg_mode,
            global_batch_info=gbi,
        )
        torch.autograd.grad(loss, list(grads))

    # SENT, token sets precomputed over the whole batch (recipe default); selection not timed here
    _, sent_rel, actor_s = ours("sent_token_only")
    ts_batch = select_tokens(batch["entropy"], batch["old_log_prob"], adv, mask, sent_rel)
    fns["sent_batch"] = lambda: our_loss(sent_rel, actor_s, token_set=ts_batch)
    info["sent_batch"] = {"preset": "sent_token_only", "sent": vars(sent_rel)}

    # SENT, in-loss selection per micro-batch (the release's placement), release and paper mode
    for mode in ("release", "paper"):
        _, sent_m, actor_m = ours(
            "sent_token_only", "entropy_rl.token_kl.selection=micro", f"entropy_rl.token_kl.mode={mode}"
        )

        def micro(sent_m=sent_m, actor_m=actor_m):
            ts = select_tokens(ent, logp, adv, mask, sent_m)
            our_loss(sent_m, actor_m, token_set=ts)

        fns[f"sent_micro_{mode}"] = micro
        info[f"sent_micro_{mode}"] = {"preset": "sent_token_only", "sent": vars(sent_m)}

    _, sent_a, actor_a = ours("aer")
    fns["aer"] = lambda: our_loss(sent_a, actor_a, entropy_coef=ecoef, grads=(logp, ent))
    info["aer"] = {"preset": "aer"}

    _, sent_sa, actor_sa = ours("sent_aer")
    ts_sa = select_tokens(batch["entropy"], batch["old_log_prob"], adv, mask, sent_sa)
    fns["sent_aer"] = lambda: our_loss(sent_sa, actor_sa, token_set=ts_sa, entropy_coef=ecoef, grads=(logp, ent))
    info["sent_aer"] = {"preset": "sent_aer"}

    def host():
        loss = host_path_loss(old, logp, adv, mask, ent, sent_rel, device)
        torch.autograd.grad(loss, [logp])

    fns["host_path"] = host
    info["host_path"] = {"what": "all inputs to host, 3 top-k + loss there (released code's placement)"}
    del grpo_actor
    return fns, info


TARGETS = {"sent_batch": 1.10, "aer": 1.10, "sent_aer": 1.10, "sent_micro_release": 1.5, "sent_micro_paper": 1.5}


def gpu_checks(device: str) -> dict:
    """Item 3: sync-free loss and selection, and CUDA-graph capture of forward + backward."""
    if not device.startswith("cuda"):
        return {"sync_debug_error_mode": C.SKIPPED_NO_CUDA, "cuda_graph_capture": C.SKIPPED_NO_CUDA}
    out = {}
    batch = C.make_batch(16, 4096, seed=1, device=device)
    sent = SentKLConfig()
    old, adv, mask, ent = batch["old_log_prob"], batch["advantages"], batch["response_mask"], batch["entropy"]
    ecoef = batch["entropy_coef"]
    logp = batch["log_prob"].clone().requires_grad_(True)
    gbi = {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": 16}

    def step():
        ts = select_tokens(ent, logp, adv, mask, sent)
        loss, metrics = compute_policy_loss(
            old, logp, adv, mask, sent, token_set=ts, entropy=ent, entropy_coef=ecoef, global_batch_info=gbi
        )
        loss.backward()
        return loss, metrics

    step()  # warm-up outside the check (lazy CUDA init, allocator)
    torch.cuda.synchronize()
    prev = torch.cuda.get_sync_debug_mode()
    try:
        torch.cuda.set_sync_debug_mode("error")
        step()
        select_tokens(ent, logp, adv, mask, SentKLConfig(mode="paper"))
        select_tokens(ent, logp, adv, mask, SentKLConfig(tau_h=0.5))
        out["sync_debug_error_mode"] = "yes: select_tokens + compute_policy_loss fwd+bwd raised no sync"
    except Exception as e:  # noqa: BLE001 - report whatever the check raised
        out["sync_debug_error_mode"] = f"no: {type(e).__name__}: {e}"
    finally:
        torch.cuda.set_sync_debug_mode(prev)

    try:
        logp.grad = None
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                logp.grad = None
                step()
        torch.cuda.current_stream().wait_stream(s)
        logp.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            g_loss, _ = step()
        graph.replay()
        torch.cuda.synchronize()
        want_grad = logp.grad.clone()
        logp.grad = None
        e_loss, _ = step()
        ok = torch.allclose(g_loss, e_loss) and torch.allclose(want_grad, logp.grad)
        out["cuda_graph_capture"] = "yes: replay equals eager" if ok else "no: replay differs from eager"
    except Exception as e:  # noqa: BLE001
        out["cuda_graph_capture"] = f"no: {type(e).__name__}: {e}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats-scale", type=float, default=1.0, help="multiply every repeat count")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    gpu = device.startswith("cuda")
    shapes = QUICK_SHAPES if args.quick else SHAPES

    results = {"machine": C.machine_info(), "device": device, "quick": args.quick, "shapes": [], "targets": TARGETS}
    t_start = time.monotonic()
    rows = []
    for i, (B, T, rep_cpu, rep_gpu) in enumerate(shapes):
        repeats = max(3, int((rep_gpu if gpu else rep_cpu) * args.repeats_scale))
        warmup = 10 if gpu else 2
        print(f"shape {i + 1}/{len(shapes)}: {B}x{T}, {repeats} repeats", file=sys.stderr, flush=True)
        batch = C.make_batch(B, T, seed=i, device=device)
        fns, info = build_variants(batch, device)
        stats = C.interleaved_medians(fns, device, warmup=warmup, repeats=repeats, label=f"{B}x{T}")
        base = stats["vanilla"]["median_s"]
        for name, st in stats.items():
            st["ratio_to_vanilla"] = st["median_s"] / base
            target = TARGETS.get(name)
            st["target"] = target
            st["meets_target"] = None if target is None else st["ratio_to_vanilla"] <= target
        results["shapes"].append(
            {
                "B": B,
                "T": T,
                "tokens": B * T,
                "valid_tokens": int(batch["response_mask"].sum()),
                "warmup": warmup,
                "variants": stats,
                "info": info,
            }
        )
        for name, st in stats.items():
            rows.append(
                {
                    "shape": f"{B}x{T}",
                    "variant": name,
                    "median_ms": st["median_s"] * 1e3,
                    "p10_ms": st["p10_s"] * 1e3,
                    "p90_ms": st["p90_s"] * 1e3,
                    "x vanilla": st["ratio_to_vanilla"],
                    "target": st["target"],
                    "met": st["meets_target"],
                }
            )
    results["gpu_checks"] = gpu_checks(device)
    results["wall_s"] = time.monotonic() - t_start

    print(
        f"\nLoss forward+backward on {device} ({results['machine'].get('gpu', 'CPU')}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(C.table(rows, ["shape", "variant", "median_ms", "p10_ms", "p90_ms", "x vanilla", "target", "met"]))
    print()
    print(C.table([{"check": k, "result": v} for k, v in results["gpu_checks"].items()], ["check", "result"]))
    C.write_json("bench_loss" + ("_quick" if args.quick else ""), results)


if __name__ == "__main__":
    main()
