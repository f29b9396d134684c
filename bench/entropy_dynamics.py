"""Entropy dynamics at laptop scale, measured through the real loop.

Does our SENT / AER hold policy entropy where GRPO collapses it, while accuracy still
improves? Every run is ``python -m recipe.sent.main backend=cpu method=<preset>`` (veRL's
driver, Ray workers, FSDP2 actor, HF rollout: the code path GPU users run) from one cached
warm-started checkpoint, with identical data, seeds, steps and batch shapes per seed.

    python bench/entropy_dynamics.py --grid reduced     # grpo, sent, aer, sent_aer x 3 seeds
    python bench/entropy_dynamics.py --grid full        # 6 presets x 3 seeds
    python bench/entropy_dynamics.py --grid quick --out /tmp/ed   # 2 presets, 3 steps (the test)
    python bench/entropy_dynamics.py --grid long            # grpo, aer x 150 steps (AER given time to act)
    python bench/entropy_dynamics.py --grid sent_ablation   # sent, sent_token_only, sent_curriculum_only, grpo

Task and model: the CPU demo (``launch/prepare_cpu_demo.py``): ``Compute a + b - c``, three
equally valid 2-step solution paths, ``\\boxed{}`` answer, a ~0.14M-parameter Qwen2 warm-started
on worked solutions with 20% arithmetic slips. Held-out prompts are test prompts absent from
the training set.

Measured per run (``<out>/runs/<preset>-s<seed>/``: veRL file-logger metrics, checkpoints
with HF weights, ``result.json``):

- mean token entropy (``actor/entropy``, the training batch) at start / middle / end, each the
  mean of a 3-step window; steps until it first fell below half its start;
- on the held-out prompts with transformers, from the warm-start weights (step 0) and the
  run's checkpoints at the middle and the end: mean token entropy of sampled responses,
  *decision* entropy (the joint entropy of the first two response tokens, which choose the
  solution path: ``a + b`` / ``a - c`` / ``b - c``; the mean over all tokens hides its
  collapse), the first-token entropy, the share of each path in the samples;
- held-out greedy avg@1 and sampled pass@k (k = 1, 2, 4, 8; ``entropy_rl.evaluation``,
  scored by ``entropy_rl.reward.compute_score``);
- tracking error mean |H − H*| over the second half (AER runs: H* = ``aer/target_entropy``;
  other runs: H* = ρ·H₀ with the same ρ and H₀ rule, as a reference they do not control);
- wall time.

Writes ``<out>/report/`` (``python -m entropy_rl.report`` figures for all runs side by side,
plus ``presets.png``: each preset's mean and min-max over seeds) and the JSON
(``bench/results/entropy_dynamics.json`` for the
default output directory, else ``<out>/entropy_dynamics.json``); the follow-up grids write
``report_<grid>/`` and ``entropy_dynamics_<grid>.json``. Finished runs are reused (their
``result.json``), so an interrupted grid continues where it stopped and grids share the runs
they have in common; a finished run is never deleted (another configuration in its folder
is an error).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import RESULTS, ROOT, machine_info, table  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "launch"))
import prepare_cpu_demo as demo  # noqa: E402

sys.path.pop(0)

DEFAULT_OUT = os.path.join(ROOT, "runs", "entropy_dynamics")
DOC_FIGURES = os.path.join(ROOT, "docs", "figures", "entropy_dynamics")
ALL_PRESETS = ("grpo", "entropy_bonus", "kl_cov", "clip_higher", "sent", "aer", "sent_aer")

# The CPU backend's settings (conf/backend/cpu.yaml: 16 prompts x 8 rollouts, 2 mini-batches per
# step, fp32) except the learning rate: a 30-step GRPO pilot at the backend's 1e-4 moved the mean
# entropy by ~10%, too slow to see the dynamics in a laptop budget; 1e-3 was fixed after that
# pilot, on GRPO alone, before any regularised run (docs/science.md).
LR = "actor_rollout_ref.actor.optim.lr=1e-3"
GRIDS: dict[str, dict[str, Any]] = {
    "quick": dict(
        presets=("grpo", "aer"),
        seeds=(0,),
        steps=3,
        sft_steps=150,
        n_train=48,
        n_test=64,
        eval_prompts=16,
        eval_samples=4,
        overrides=(LR,),
    ),
    "reduced": dict(
        presets=("grpo", "sent", "aer", "sent_aer"),
        seeds=(0, 1, 2),
        steps=30,
        sft_steps=1000,
        n_train=256,
        n_test=256,
        eval_prompts=128,
        eval_samples=8,
        overrides=(LR,),
    ),
    "full": dict(
        presets=ALL_PRESETS,
        seeds=(0, 1, 2),
        steps=30,
        sft_steps=1000,
        n_train=256,
        n_test=256,
        eval_prompts=128,
        eval_samples=8,
        overrides=(LR,),
    ),
    # follow-ups to the full grid, same task, warm start and settings, own report and JSON:
    # does AER's controller hold H* once it has had time to act (it engages at steps 19-26 of 30)?
    "long": dict(
        presets=("grpo", "aer"),
        seeds=(0,),
        steps=150,
        sft_steps=1000,
        n_train=256,
        n_test=256,
        eval_prompts=128,
        eval_samples=8,
        overrides=(LR,),
        tag="long",
    ),
    # which half of SENT moves entropy and accuracy: the token-level KL-Cov term or the curriculum
    "sent_ablation": dict(
        presets=("sent", "sent_token_only", "sent_curriculum_only", "grpo"),
        seeds=(0, 1, 2),
        steps=30,
        sft_steps=1000,
        n_train=256,
        n_test=256,
        eval_prompts=128,
        eval_samples=8,
        overrides=(LR,),
        tag="sent_ablation",
    ),
    # does the scale-free controller hold H* where the per-nat rule overshoots? Fresh seeds only:
    # the controller was designed on the closed-loop test plants and seeds 0-2
    "controller": dict(
        presets=("grpo", "aer_pi_nat", "aer_relative"),
        seeds=(3, 4, 5),
        steps=150,
        sft_steps=1000,
        n_train=256,
        n_test=256,
        eval_prompts=128,
        eval_samples=8,
        overrides=(LR,),
        tag="controller",
    ),
}
STANDARD_STEPS = 30  # a run of another length gets its own folder: <preset>-s<seed>-<steps>steps
RHO, ANCHOR_STEPS = 0.6, 2  # AER's ρ and the CPU backend's anchor_steps: the reference H* of non-AER runs
WINDOW = 3  # steps averaged for the start / middle / end entropy
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


# ------------------------------------------------------------------------------------ runs


def run_training(data: str, work: str, preset: str, seed: int, steps: int, extra: list[str]) -> tuple[int, float, str]:
    """One ``recipe.sent.main`` process; returns (return code, wall seconds, output log path)."""
    os.makedirs(work, exist_ok=True)
    mid = max(1, steps // 2)
    env = {
        **os.environ,
        "ENTROPY_RL_DATA": data,
        "VERL_FILE_LOGGER_PATH": os.path.join(work, "metrics.jsonl"),
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "RAY_DEDUP_LOGS": "0",
    }
    env.pop("VERL_PLATFORM", None)
    cmd = [
        sys.executable,
        "-m",
        "recipe.sent.main",
        "backend=cpu",
        f"method={preset}",
        f"trainer.default_local_dir={os.path.join(work, 'ckpt')}",
        f"hydra.run.dir={os.path.join(work, 'hydra')}",
        f"entropy_rl.scoring.cache_dir={os.path.join(work, 'score_cache')}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        f"trainer.total_training_steps={steps}",
        f"trainer.save_freq={mid}",
        # full HF weights beside the FSDP shards: the held-out evaluation loads them
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        # a seed moves the data order, the scoring pass and every rollout sample
        f"data.seed={1 + seed}",
        f"actor_rollout_ref.rollout.seed={42 + seed}",
        f"entropy_rl.scoring.seed={1 + seed}",
        f"trainer.experiment_name={preset}-s{seed}",
        *extra,
    ]
    log = os.path.join(work, "train.log")
    t0 = time.time()
    with open(log, "w") as f:
        rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    return rc, time.time() - t0, log


def read_metrics(path: str) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                steps.setdefault(int(rec["step"]), {}).update(rec["data"])
    return steps


def series(steps: dict[int, dict[str, float]], key: str) -> list[tuple[int, float]]:
    return [(s, float(m[key])) for s, m in sorted(steps.items()) if key in m and m[key] is not None]


def window_mean(ser: list[tuple[int, float]], center: int) -> float:
    """Mean over the WINDOW steps around ``center`` (clamped to the run)."""
    n = len(ser)
    lo = min(max(0, center - WINDOW // 2), max(0, n - WINDOW))
    vals = [v for _, v in ser[lo : lo + WINDOW]]
    return sum(vals) / len(vals)


def training_entropy(steps: dict[int, dict[str, float]]) -> dict[str, Any]:
    ent = series(steps, "actor/entropy")
    n = len(ent)
    start, mid, end = window_mean(ent, 0), window_mean(ent, n // 2), window_mean(ent, n - 1)
    below = [s for s, v in ent if v < 0.5 * start]
    second = [(s, v) for s, v in ent if s > ent[-1][0] / 2]
    tgt = dict(series(steps, "aer/target_entropy"))
    if tgt:
        errs = [abs(v - tgt[s]) for s, v in second if s in tgt]
        target_src = "aer/target_entropy"
    else:
        h0 = sum(v for _, v in ent[:ANCHOR_STEPS]) / min(ANCHOR_STEPS, n)
        errs = [abs(v - RHO * h0) for _, v in second]
        target_src = f"reference {RHO}*H0 (not controlled by this method)"
    rew = series(steps, "critic/score/mean")
    alpha = series(steps, "aer/alpha")
    return {
        "mean_entropy": {"start": start, "middle": mid, "end": end},
        "steps_to_half_entropy": below[0] if below else None,
        "entropy_fell_below_half": bool(below),
        "tracking_error_2nd_half": sum(errs) / len(errs) if errs else None,
        "tracking_target": target_src,
        "train_reward": {"start": window_mean(rew, 0), "end": window_mean(rew, len(rew) - 1)} if rew else None,
        "aer_alpha_end": alpha[-1][1] if alpha else None,
        "steps": n,
    }


def holding(steps: dict[int, dict[str, float]], alpha_max: float) -> dict[str, Any]:
    """How well the entropy is held at H* over the second half (steps 76-150 of 150): mean
    |H − H*|/H*, the peak batch entropy as a multiple of H*, and the longest run of steps with
    α_t at its cap (α_max). Non-AER runs are measured against the reference ρ·H₀."""
    ent = series(steps, "actor/entropy")
    half = ent[-1][0] / 2
    tgt = dict(series(steps, "aer/target_entropy"))
    tgt = {k: v for k, v in tgt.items() if math.isfinite(v)}
    if not tgt:
        h0 = sum(v for _, v in ent[:ANCHOR_STEPS]) / min(ANCHOR_STEPS, len(ent))
        tgt = {s: RHO * h0 for s, _ in ent}
    second = [(v, tgt[s]) for s, v in ent if s > half and s in tgt]
    pinned = run = 0
    for _, a in series(steps, "aer/alpha"):
        run = run + 1 if a >= alpha_max * (1 - 1e-6) else 0
        pinned = max(pinned, run)
    return {
        "relative_tracking_error_2nd_half": sum(abs(v - t) / t for v, t in second) / len(second),
        "peak_entropy_over_target_2nd_half": max(v / t for v, t in second),
        "alpha_longest_run_at_cap": pinned,
    }


# ------------------------------------------------------------------------------------ evaluation


def heldout_rows(data_dir: str, n: int) -> list[dict]:
    import pandas as pd

    train = pd.read_parquet(os.path.join(data_dir, "train.parquet"))
    test = pd.read_parquet(os.path.join(data_dir, "test.parquet"))
    seen = {p[0]["content"] for p in train["prompt"]}
    rows, keep = [], set()
    for rec in test.to_dict("records"):
        text = rec["prompt"][0]["content"]
        if text in seen or text in keep:
            continue
        keep.add(text)
        rows.append({"prompt": [dict(m) for m in rec["prompt"]], "answer": rec["reward_model"]["ground_truth"]})
    return rows[:n]


_STEP1 = re.compile(r"^\s*(-?\d+)\s*([+-])\s*(-?\d+)\s*=")
_PROMPT = re.compile(r"Compute (\d+) \+ (\d+) - (\d+)")


def solution_path(prompt: str, response: str) -> str:
    a, b, c = (int(x) for x in _PROMPT.search(prompt).groups())
    m = _STEP1.match(response)
    if not m:
        return "other"
    x, op, y = int(m.group(1)), m.group(2), int(m.group(3))
    return {(a, "+", b): "a+b", (a, "-", c): "a-c", (b, "-", c): "b-c"}.get((x, op, y), "other")


def _entropy(logits):
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def evaluate(model_dir: str, rows: list[dict], n_samples: int, seed: int = 1234, max_new: int = 32) -> dict[str, Any]:
    """Held-out accuracy and entropies of one HF checkpoint (transformers, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from entropy_rl.evaluation import avg_at_k, mean_pass_at_k
    from entropy_rl.reward import compute_score

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    enc = tok(prompts, return_tensors="pt", padding=True)
    plen = enc["input_ids"].shape[1]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    score = lambda text, r: compute_score("cpu_demo", text, r["answer"])["score"] > 0  # noqa: E731
    out: dict[str, Any] = {}
    with torch.no_grad():
        # decision entropy: H(X1, X2) = H(X1) + sum_x p(x) H(X2 | x) over the top-8 first tokens
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits1 = model(**enc, position_ids=pos).logits[:, -1]
        h1 = _entropy(logits1)
        p1 = torch.softmax(logits1.float(), -1)
        top_p, top_i = p1.topk(8, dim=-1)
        B, K = top_i.shape
        ids2 = torch.cat([enc["input_ids"].repeat_interleave(K, 0), top_i.reshape(-1, 1)], 1)
        mask2 = torch.cat([enc["attention_mask"].repeat_interleave(K, 0), torch.ones(B * K, 1, dtype=torch.long)], 1)
        pos2 = (mask2.cumsum(-1) - 1).clamp(min=0)
        h2 = _entropy(model(input_ids=ids2, attention_mask=mask2, position_ids=pos2).logits[:, -1]).reshape(B, K)
        joint = h1 + (top_p * h2).sum(-1)
        out["decision_entropy"] = float(joint.mean())
        out["first_token_entropy"] = float(h1.mean())
        out["decision_mass_covered"] = float(top_p.sum(-1).min())

        greedy = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=pad, eos_token_id=eos)
        gtexts = tok.batch_decode(greedy[:, plen:], skip_special_tokens=True)
        gcorrect = [score(t, r) for t, r in zip(gtexts, rows)]
        out["greedy_avg_at_1"] = avg_at_k([[c] for c in gcorrect], 1)

        torch.manual_seed(seed)
        enc_n = {k: v.repeat_interleave(n_samples, 0) for k, v in enc.items()}
        gen = model.generate(
            **enc_n,
            max_new_tokens=max_new,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            pad_token_id=pad,
            eos_token_id=eos,
            output_logits=True,
            return_dict_in_generate=True,
        )
        seq = gen.sequences[:, plen:]
        logits = torch.stack(gen.logits, 1)  # [B*n, T, V], raw logits at temperature 1
        ended = torch.cat([torch.zeros(seq.shape[0], 1, dtype=torch.bool), (seq == eos).cumsum(1)[:, :-1] > 0], 1)
        valid = ~ended
        ent = _entropy(logits)
        out["sampled_token_entropy"] = float((ent * valid).sum() / valid.sum())
        stexts = tok.batch_decode(seq, skip_special_tokens=True)
        correct = [[score(stexts[i * n_samples + j], r) for j in range(n_samples)] for i, r in enumerate(rows)]
        ks = [k for k in (1, 2, 4, 8, 16) if k <= n_samples]
        out["sampled_avg_at_1"] = avg_at_k(correct, 1)
        out["pass_at_k"] = {str(k): mean_pass_at_k(correct, k) for k in ks}
        paths: dict[str, int] = {}
        for i, t in enumerate(stexts):
            p = solution_path(prompts[i // n_samples], t)
            paths[p] = paths.get(p, 0) + 1
        total = sum(paths.values())
        shares = {k: v / total for k, v in sorted(paths.items())}
        out["path_shares"] = shares
        out["path_entropy"] = -sum(p * math.log(p) for p in shares.values() if p > 0)
    out["eval_prompts"], out["eval_samples"] = len(rows), n_samples
    return out


def hf_dir(ckpt: str, step: int) -> str | None:
    d = os.path.join(ckpt, f"global_step_{step}", "actor", "huggingface")
    ok = os.path.isdir(d) and any(f.endswith((".safetensors", ".bin")) for f in os.listdir(d))
    return d if ok else None


def wilson(p: float, n: int, z: float = 1.96) -> list[float]:
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [max(0.0, c - h), min(1.0, c + h)]


def interval(vals: list[float]) -> dict[str, Any]:
    n = len(vals)
    m = sum(vals) / n
    if n < 2:
        return {"mean": m, "n": n, "ci95": None}
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    h = _T95.get(n - 1, 1.96) * sd / math.sqrt(n)
    return {"mean": m, "n": n, "ci95": [m - h, m + h], "sd": sd}


# ------------------------------------------------------------------------------------ figures


def preset_figure(results: list[dict], start: dict, metrics: dict[str, dict[int, dict[str, float]]], path: str) -> None:
    """One colour per preset, the line the mean over its seeds and the band their min-max:
    training-batch entropy per step, and the held-out decision entropy, token entropy and
    greedy accuracy at the start, middle and end (a grid of runs is unreadable run by run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(r["preset"] for r in results))
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))

    def band(ax, xs, per_seed, color, label):
        mean = [sum(v) / len(v) for v in per_seed]
        ax.plot(xs, mean, color=color, lw=1.8, marker="o" if len(xs) < 6 else None, label=label)
        if max(len(v) for v in per_seed) > 1:
            ax.fill_between(xs, [min(v) for v in per_seed], [max(v) for v in per_seed], color=color, alpha=0.15, lw=0)

    for i, preset in enumerate(presets):
        rs = [r for r in results if r["preset"] == preset]
        color, label = cmap(i % 10), f"{preset} ({len(rs)} seed{'s' if len(rs) > 1 else ''})"
        ent = [dict(series(metrics[r["run"]], "actor/entropy")) for r in rs]
        xs = sorted(set.intersection(*(set(e) for e in ent)))
        band(axes[0], xs, [[e[x] for e in ent] for x in xs], color, label)
        for ax, key in zip(axes[1:], ("decision_entropy", "sampled_token_entropy", "greedy_avg_at_1")):
            xs = [0, rs[0]["heldout"]["middle"]["step"], rs[0]["heldout"]["end"]["step"]]
            vals = [[start[key]] * len(rs)] + [[r["heldout"][lab][key] for r in rs] for lab in ("middle", "end")]
            band(ax, xs, vals, color, label)
    titles = (
        "training batch: mean token entropy (nats)",
        "held-out: decision entropy H(first 2 tokens)",
        "held-out: mean token entropy of samples",
        "held-out: greedy avg@1",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


END_VALUES = {  # per preset: their interval over seeds, and the paired difference to GRPO
    "mean_entropy_end": lambda r: r["mean_entropy"]["end"],
    "decision_entropy_end": lambda r: r["heldout"]["end"]["decision_entropy"],
    "greedy_avg_at_1_end": lambda r: r["heldout"]["end"]["greedy_avg_at_1"],
    "pass_at_8_end": lambda r: r["heldout"]["end"]["pass_at_k"].get("8", float("nan")),
}


HOLDING = ("relative_tracking_error_2nd_half", "peak_entropy_over_target_2nd_half", "alpha_longest_run_at_cap")


def markdown_tables(results: list[dict], start: dict, summary: dict) -> str:
    """The per-run and per-preset tables of docs/science.md, from the measured values."""
    f3 = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731

    def ci(iv: dict, fmt: str = "{:.3f}") -> str:
        lo_hi = f" [{fmt.format(iv['ci95'][0])}, {fmt.format(iv['ci95'][1])}]" if iv.get("ci95") else ""
        return fmt.format(iv["mean"]) + lo_hi

    lines = [
        "| run | H̄ train start / mid / end | steps to ½ | \\|H − H*\\| 2nd half | H_dec held-out 0 / mid / end "
        "| H_tok held-out end | greedy avg@1 end [95% CI] | pass@8 end | reward start→end | α end | wall s |",
        "|---" * 11 + "|",
    ]
    for r in results:
        h, mid, end = r["mean_entropy"], r["heldout"]["middle"], r["heldout"]["end"]
        ref = "" if r["tracking_target"] == "aer/target_entropy" else " (ref.)"
        rew = r.get("train_reward") or {}
        alpha = "–" if r["aer_alpha_end"] is None else f"{r['aer_alpha_end']:.4f}"
        lines.append(
            f"| {r['run']} | {f3(h['start'])} / {f3(h['middle'])} / {f3(h['end'])} "
            f"| {r['steps_to_half_entropy'] or '–'} "
            f"| {r['tracking_error_2nd_half']:.4f}{ref} "
            f"| {start['decision_entropy']:.3f} / {mid['decision_entropy']:.3f} / "
            f"{end['decision_entropy']:.3f} | {end['sampled_token_entropy']:.3f} | {end['greedy_avg_at_1']:.3f} "
            f"[{end['greedy_ci95'][0]:.2f}, {end['greedy_ci95'][1]:.2f}] "
            f"| {end['pass_at_k'].get('8', float('nan')):.3f} "
            f"| {rew.get('start', float('nan')):.2f}→{rew.get('end', float('nan')):.2f} "
            f"| {alpha} | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        "| preset | seeds | H̄ train end | H_dec held-out end | greedy avg@1 end | pass@8 end | \\|H − H*\\| 2nd half |",
        "|---" * 7 + "|",
    ]
    for preset, sm in summary.items():
        lines.append(
            f"| {preset} | {len(sm['seeds'])} | {ci(sm['mean_entropy_end'])} | {ci(sm['decision_entropy_end'])} "
            f"| {ci(sm['greedy_avg_at_1_end'])} | {ci(sm['pass_at_8_end'])} "
            f"| {ci(sm['tracking_error_2nd_half'], '{:.4f}')} |"
        )
    lines += [
        "",
        "| run | mean \\|H − H*\\|/H* 2nd half | peak H/H* 2nd half | longest run of α at its cap |",
        "|---" * 4 + "|",
    ]
    for r in results:
        ref = "" if r["tracking_target"] == "aer/target_entropy" else " (ref.)"
        lines.append(
            f"| {r['run']} | {r['relative_tracking_error_2nd_half']:.3f}{ref} "
            f"| {r['peak_entropy_over_target_2nd_half']:.2f} | {r['alpha_longest_run_at_cap']} |"
        )
    lines += [
        "",
        "| preset | seeds | mean \\|H − H*\\|/H* 2nd half | peak H/H* 2nd half | longest run at cap |",
        "|---" * 5 + "|",
    ]
    for preset, sm in summary.items():
        lines.append(
            f"| {preset} | {len(sm['seeds'])} | {ci(sm['relative_tracking_error_2nd_half'])} "
            f"| {ci(sm['peak_entropy_over_target_2nd_half'], '{:.2f}')} "
            f"| {ci(sm['alpha_longest_run_at_cap'], '{:.1f}')} |"
        )
    paired = {p: sm["minus_grpo_paired"] for p, sm in summary.items() if "minus_grpo_paired" in sm}
    if paired:
        lines += [
            "",
            "| preset − grpo, paired by seed | H̄ train end | H_dec held-out end | greedy avg@1 end | pass@8 end |",
            "|---" * 5 + "|",
        ]
        for preset, d in paired.items():
            lines.append(
                f"| {preset} (n = {d['greedy_avg_at_1_end']['n']}) | "
                + " | ".join(ci(d[k], "{:+.3f}") for k in END_VALUES)
                + " |"
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--grid", choices=sorted(GRIDS), default="reduced")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"runs, data and report (default {DEFAULT_OUT})")
    ap.add_argument("--presets", help="comma-separated presets (overrides the grid's)")
    ap.add_argument("--seeds", help="comma-separated seeds (overrides the grid's)")
    ap.add_argument("--steps", type=int, help="RL steps per run (overrides the grid's)")
    ap.add_argument("--json", help="JSON path (default: bench/results/entropy_dynamics.json for the default --out)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    a = ap.parse_args(argv)
    g = dict(GRIDS[a.grid])
    if a.presets:
        g["presets"] = tuple(a.presets.split(","))
    if a.seeds:
        g["seeds"] = tuple(int(s) for s in a.seeds.split(","))
    if a.steps:
        g["steps"] = a.steps
    overrides = [*g["overrides"], *a.overrides]
    out = os.path.abspath(a.out)
    tag = g.pop("tag", None)
    stem = "entropy_dynamics" + (f"_{tag}" if tag else "")
    json_path = a.json or os.path.join(RESULTS if out == DEFAULT_OUT else out, f"{stem}.json")
    t_all = time.time()

    # 1. task, tokenizer, model, warm start: cached, so every run starts from the same weights
    key = f"sft{g['sft_steps']}_train{g['n_train']}_test{g['n_test']}"
    data = os.path.join(out, "data", key)
    info = demo.prepare(os.path.join(data, "cpu_demo"), n_train=g["n_train"], n_test=g["n_test"], steps=g["sft_steps"])
    rows = heldout_rows(os.path.join(data, "cpu_demo"), g["eval_prompts"])
    start_path = os.path.join(data, "start_eval.json")
    if os.path.exists(start_path):
        start = json.load(open(start_path))
    else:
        start = evaluate(os.path.join(data, "cpu_demo", "model"), rows, g["eval_samples"])
        start["step"] = 0
        json.dump(start, open(start_path, "w"), indent=1)
    print(
        f"[entropy-dynamics] warm start: {info['parameters']} parameters, held-out greedy "
        f"{start['greedy_avg_at_1']:.2f}, sampled {start['sampled_avg_at_1']:.2f}, decision entropy "
        f"{start['decision_entropy']:.3f}, token entropy {start['sampled_token_entropy']:.3f}",
        flush=True,
    )

    # 2. RL runs
    jobs = [(p, s) for s in g["seeds"] for p in g["presets"]]
    config = {"steps": g["steps"], "data": key, "overrides": overrides}
    results, fresh_secs = [], []
    for i, (preset, seed) in enumerate(jobs):
        name = f"{preset}-s{seed}" + ("" if g["steps"] == STANDARD_STEPS else f"-{g['steps']}steps")
        work = os.path.join(out, "runs", name)
        res_path = os.path.join(work, "result.json")
        if os.path.exists(res_path):
            res = json.load(open(res_path))
            if res.get("config") != config:
                differ = [k for k in config if (res.get("config") or {}).get(k) != config[k]]
                raise SystemExit(
                    f"{res_path}: a finished run with another configuration ({', '.join(differ)}: "
                    f"{[(res.get('config') or {}).get(k) for k in differ]} here, {[config[k] for k in differ]} "
                    "asked); use another --out, or delete that folder to rerun it"
                )
            results.append(res)
            print(f"[entropy-dynamics] {i + 1}/{len(jobs)} {name}: reused {res_path}", flush=True)
            continue
        if os.path.isdir(work):  # a run that did not finish: start it again
            shutil.rmtree(work)
        eta = (sum(fresh_secs) / len(fresh_secs) * (len(jobs) - i)) if fresh_secs else None
        print(
            f"[entropy-dynamics] {i + 1}/{len(jobs)} {name}: {g['steps']} steps ... elapsed "
            f"{time.time() - t_all:.0f}s" + (f", ETA {eta:.0f}s" if eta is not None else ""),
            flush=True,
        )
        t0 = time.time()
        rc, wall, log = run_training(data, work, preset, seed, g["steps"], overrides)
        if rc != 0:
            print(open(log).read()[-4000:], file=sys.stderr)
            print(f"[entropy-dynamics] {name} failed (rc {rc}); log: {log}", file=sys.stderr)
            return 1
        steps = read_metrics(os.path.join(work, "metrics.jsonl"))
        res = {
            "run": name,
            "preset": preset,
            "seed": seed,
            "wall_s_train": round(wall, 1),
            **training_entropy(steps),
            "heldout": {},
        }
        mid = max(1, g["steps"] // 2)
        for label, step in (("middle", mid), ("end", g["steps"])):
            d = hf_dir(os.path.join(work, "ckpt"), step)
            if d is None:
                raise SystemExit(f"no HF weights at {os.path.join(work, 'ckpt', f'global_step_{step}')}")
            ev = evaluate(d, rows, g["eval_samples"])
            ev["step"] = step
            res["heldout"][label] = ev
        end = res["heldout"]["end"]
        end["greedy_ci95"] = wilson(end["greedy_avg_at_1"], len(rows))
        res["wall_s"] = round(time.time() - t0, 1)
        res["config"] = config
        json.dump(res, open(res_path, "w"), indent=1)
        fresh_secs.append(res["wall_s"])
        results.append(res)
        print(
            f"[entropy-dynamics] {name}: {res['wall_s']:.0f}s; mean entropy {res['mean_entropy']['start']:.3f} -> "
            f"{res['mean_entropy']['end']:.3f}, decision {start['decision_entropy']:.3f} -> "
            f"{end['decision_entropy']:.3f}, greedy {end['greedy_avg_at_1']:.2f}",
            flush=True,
        )

    # the holding measures are computed from the metrics of every run, reused ones included
    from entropy_rl.aer import AERConfig

    for r in results:
        r.update(holding(read_metrics(os.path.join(out, "runs", r["run"], "metrics.jsonl")), AERConfig().alpha_max))

    # 3. figures: the run report for all runs side by side, plus the held-out entropies
    from entropy_rl.report import build_report

    report_dir = os.path.join(out, "report" + (f"_{tag}" if tag else ""))
    metrics = [os.path.join(out, "runs", r["run"], "metrics.jsonl") for r in results]
    rep = build_report(metrics, report_dir, labels=[r["run"] for r in results])
    presets_png = os.path.join(report_dir, "presets.png")
    preset_figure(results, start, {r["run"]: read_metrics(m) for r, m in zip(results, metrics)}, presets_png)
    # validation / pass_at_k stay empty: the runs do not validate (held-out evaluation is ours)
    figures = [rep["images"][n] for n in ("entropy", "aer", "sent", "curriculum")] + [presets_png]
    if out == DEFAULT_OUT:
        doc_dir = os.path.join(DOC_FIGURES, tag) if tag else DOC_FIGURES
        os.makedirs(doc_dir, exist_ok=True)
        for f in figures:
            shutil.copy(f, doc_dir)

    # 4. per-preset summaries across seeds (intervals: 95% t-interval over seeds)
    summary = {}
    # paired by seed (same data order, scoring and rollout seeds): tighter than comparing the
    # two unpaired intervals when seeds differ more than methods
    base = {r["seed"]: r for r in results if r["preset"] == "grpo"}
    for preset in g["presets"]:
        rs = [r for r in results if r["preset"] == preset]
        summary[preset] = {
            "seeds": [r["seed"] for r in rs],
            **{name: interval([get(r) for r in rs]) for name, get in END_VALUES.items()},
            "tracking_error_2nd_half": interval([r["tracking_error_2nd_half"] for r in rs]),
            **{k: interval([r[k] for r in rs]) for k in HOLDING},
        }
        pairs = [(r, base[r["seed"]]) for r in rs if r["seed"] in base]
        if preset != "grpo" and pairs:
            summary[preset]["minus_grpo_paired"] = {
                name: interval([get(r) - get(b) for r, b in pairs]) for name, get in END_VALUES.items()
            }
    payload = {
        "machine": machine_info(),
        "grid": a.grid,
        "presets": list(g["presets"]),
        "seeds": list(g["seeds"]),
        "settings": {
            **g,
            "overrides": overrides,
            "backend": "conf/backend/cpu.yaml",
            "entropy_window_steps": WINDOW,
            "reference_rho": RHO,
        },
        "warm_start": {**info, "heldout": start},
        "runs": results,
        "summary": summary,
        # this invocation (reused runs cost nothing) and every run as measured when it ran
        "wall_s_total": round(time.time() - t_all, 1),
        "wall_s_runs": round(sum(r["wall_s"] for r in results), 1),
        "runs_reused": len(results) - len(fresh_secs),
    }
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(payload, f, indent=1)
    tables_md = os.path.join(report_dir, "tables.md")
    with open(tables_md, "w") as f:
        f.write(markdown_tables(results, start, summary))

    rows_t = [
        {
            "run": r["run"],
            "H start": r["mean_entropy"]["start"],
            "H mid": r["mean_entropy"]["middle"],
            "H end": r["mean_entropy"]["end"],
            "Hdec 0": start["decision_entropy"],
            "Hdec mid": r["heldout"]["middle"]["decision_entropy"],
            "Hdec end": r["heldout"]["end"]["decision_entropy"],
            "to half": r["steps_to_half_entropy"],
            "|H-H*|": r["tracking_error_2nd_half"],
            "greedy": r["heldout"]["end"]["greedy_avg_at_1"],
            "pass@8": r["heldout"]["end"]["pass_at_k"].get("8"),
            "wall s": r["wall_s"],
        }
        for r in results
    ]
    print("\n" + table(rows_t, list(rows_t[0])))
    where = {
        "metrics": os.path.join(out, "runs", "<run>", "metrics.jsonl"),
        "figures": f"{report_dir} ({rep['html']})",
        "JSON": json_path,
        "tables (markdown)": tables_md,
    }
    print(
        f"\n[entropy-dynamics] done in {time.time() - t_all:.0f}s\n"
        + "\n".join(f"[entropy-dynamics] {k}: {v}" for k, v in where.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
