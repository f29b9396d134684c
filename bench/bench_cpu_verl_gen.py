"""veRL's per-step generation time on the CPU backend against one direct batched ``generate``.

Shape of a CPU GRPO step: 16 prompts x 8 samples x 48 new tokens on a ~3.3M-parameter
random Qwen2 (hidden 256, 4 layers). It runs ``python -m recipe.sent.main backend=cpu method=grpo``
for a few steps with ``ignore_eos`` (every response exactly 48 tokens), reads veRL's own
``timing_s/gen`` from the file logger (step 1, the warm-up, excluded), then times
``model.generate`` of the same 128 sequences in this process (defaults disabled: top_k=0,
top_p=1, temperature=1; 48 tokens, EOS ignored) and prints the ratio. Target: <= 2.5x.
Measures and reports; asserts nothing.

    .venv/bin/python bench/bench_cpu_verl_gen.py [--steps 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "launch"))

import prepare_cpu_demo as demo  # noqa: E402

PROMPTS, SAMPLES, NEW_TOKENS = 16, 8, 48


def build(root: str) -> str:
    """Demo tokenizer + a ~3.3M-parameter random Qwen2 + demo data, in ENTROPY_RL_DATA layout."""
    out = os.path.join(root, "cpu_demo")
    tok = demo.make_tokenizer()
    model = demo.make_model(tok, hidden=256, layers=4, intermediate=768)
    model.save_pretrained(os.path.join(out, "model"))
    tok.save_pretrained(os.path.join(out, "model"))
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    for name, n in (("train", 64), ("test", 16)):
        pd.DataFrame(demo.rows(n, 0, name)).to_parquet(os.path.join(out, f"{name}.parquet"), index=False)
    return out


def verl_gen_times(data_root: str, steps: int) -> tuple[list[float], dict]:
    metrics = os.path.join(data_root, "metrics.jsonl")
    env = {**os.environ, "ENTROPY_RL_DATA": data_root, "VERL_FILE_LOGGER_PATH": metrics, "PYTHONPATH": ROOT}
    cmd = [
        sys.executable,
        "-m",
        "recipe.sent.main",
        "backend=cpu",
        "method=grpo",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={data_root}/ckpt",
        f"hydra.run.dir={data_root}/hydra",
        f"data.train_batch_size={PROMPTS}",
        f"actor_rollout_ref.rollout.n={SAMPLES}",
        f"data.max_response_length={NEW_TOKENS}",
        "actor_rollout_ref.rollout.ignore_eos=true",
        "actor_rollout_ref.actor.use_kl_loss=false",
    ]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"training run failed:\n{(p.stdout + p.stderr)[-4000:]}")
    recs = [json.loads(line)["data"] for line in open(metrics)]
    recs = [r for r in recs if "timing_s/gen" in r]
    info = {
        "wall_s": time.time() - t0,
        "response_length_mean": statistics.mean(r["response_length/mean"] for r in recs),
        "step_s": [round(r["timing_s/step"], 2) for r in recs],
        "update_actor_s": [round(r["timing_s/update_actor"], 2) for r in recs],
    }
    return [r["timing_s/gen"] for r in recs[1:]], info


def direct_generate(model_dir: str, repeats: int) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = demo.rows(PROMPTS, 0, "train")
    prompts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    enc = tok([p for p in prompts for _ in range(SAMPLES)], return_tensors="pt", padding=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                pad_token_id=tok.pad_token_id,
            )
        times.append(time.perf_counter() - t0)
        assert out.shape[1] - enc["input_ids"].shape[1] == NEW_TOKENS
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        out = build(root)
        gen, info = verl_gen_times(root, a.steps)
        direct = direct_generate(os.path.join(out, "model"), a.repeats)
    g, d = statistics.median(gen), statistics.median(direct)
    print(
        f"shape: {PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} tokens "
        f"(mean response length in the run {info['response_length_mean']:.1f})"
    )
    print(f"veRL timing_s/gen, steps 2..{a.steps}: {[round(x, 3) for x in gen]}  median {g:.3f} s")
    print(f"direct batched generate x{a.repeats}: {[round(x, 3) for x in direct]}  median {d:.3f} s")
    print(f"ratio veRL gen / direct generate: {g / d:.2f}x (target <= 2.5x)")
    print(
        f"per step (s): {info['step_s']}; update_actor (s): {info['update_actor_s']}; run wall {info['wall_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
