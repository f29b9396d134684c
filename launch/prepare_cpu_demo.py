"""Build the CPU demo: a tiny local model and a synthetic math task with verifiable answers.

``launch/train.sh`` runs this on a machine without a GPU (nothing is downloaded):

- task: ``Compute a + b - c`` with a, b, c in [0, 10); a worked answer is a 2-step chain in one
  of three equally valid orders (``a + b = s ; s - c = r``, ``a - c = s ; s + b = r``,
  ``b - c = s ; s + a = r``), then ``\\boxed{ r }``. The order is a real decision, so entropy can
  collapse onto one path.
- tokenizer: a byte-level BPE trained on the task's text (loads as veRL's Qwen2 tokenizer);
- model: a randomly initialised Qwen2 (hidden 64, 2 layers, ~0.1M parameters), warm-started by a
  short supervised pass on worked solutions of which 20% carry an arithmetic slip, so the
  sampled accuracy starts well above zero but below one and rewards, groups and semantic
  entropy all vary.
- ``--vllm``: also a second model for veRL's vLLM rollout (``backend=cpu_vllm``), the same but
  with 2 attention heads of 32 dims instead of 4 of 16: vLLM's CPU attention has no kernel for
  head size 16. Both are kept so that the measurements made on the first one stay valid.

    python launch/prepare_cpu_demo.py --out ~/data/entropy_rl/cpu_demo [--vllm]

writes ``model/`` (HF format, with tokenizer), ``model_vllm/`` with ``--vllm``, ``train.parquet``
and ``test.parquet``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import pandas as pd
import torch

if __package__ in (None, ""):  # `python launch/prepare_cpu_demo.py`: make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from entropy_rl.io import atomic_replace_dir, atomic_write_json, atomic_write_path  # noqa: E402

LOW, HIGH = 0, 10
SPECIAL = ["<pad>", "<eos>", "<unk>"]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} :\n{% endfor %}"
DATA_SOURCE = "cpu_demo"


# Qwen2's pre-tokenizer split; transformers 5 rebuilds it for any model_type "qwen2" checkpoint,
# so the demo tokenizer is a byte-level BPE trained under the same split.
_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _corpus(n: int = 4000, seed: int = 123) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b, c = problem(rng)
        lines.append(prompt_text(a, b, c) + " :\n" + solution(a, b, c, rng, slip=0.3))
    return lines


def make_tokenizer():
    """A byte-level BPE over the task's text (~300 tokens), loadable by veRL as a Qwen2 tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    hf.chat_template = CHAT_TEMPLATE
    return hf


def make_model(
    tokenizer,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    intermediate: int | None = None,
    heads: int = 4,
    kv_heads: int = 2,
):
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen2ForCausalLM(cfg)
    # No sampling defaults may sneak into any generate() call (top_k=50 would truncate this vocab).
    model.generation_config = GenerationConfig(
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return model


def problem(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(LOW, HIGH), rng.randrange(LOW, HIGH), rng.randrange(LOW, HIGH)


def prompt_text(a: int, b: int, c: int) -> str:
    return f"Compute {a} + {b} - {c}"


def solution(a: int, b: int, c: int, rng: random.Random, slip: float) -> str:
    """A worked solution in a random order; with probability ``slip`` one number is off by 1-3."""
    order = rng.randrange(3)
    if order == 0:
        s, steps = a + b, lambda s: (f"{a} + {b} = {s}", f"{s} - {c}")
    elif order == 1:
        s, steps = a - c, lambda s: (f"{a} - {c} = {s}", f"{s} + {b}")
    else:
        s, steps = b - c, lambda s: (f"{b} - {c} = {s}", f"{s} + {a}")
    r = a + b - c
    if rng.random() < slip:
        delta = rng.choice([-3, -2, -1, 1, 2, 3])
        if rng.random() < 0.5:
            s += delta  # a slip in the first step, carried through the second
        r += delta
    first, second = steps(s)
    return f"{first} ; {second} = {r} ; \\boxed{{ {r} }}"


def rows(n: int, seed: int, split: str) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = problem(rng)
        out.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": prompt_text(a, b, c)}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b - c)},
                "extra_info": {"index": i, "split": split},
            }
        )
    return out


def warm_start(model, tokenizer, steps: int, batch: int, lr: float, slip: float, seed: int) -> float:
    """Supervised pass on worked solutions (prompt tokens masked out of the loss)."""
    rng = random.Random(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    t0 = time.time()
    loss_v = float("nan")
    for step in range(steps):
        texts, prompt_lens = [], []
        for _ in range(batch):
            a, b, c = problem(rng)
            p = tokenizer.apply_chat_template([{"role": "user", "content": prompt_text(a, b, c)}], tokenize=False)
            texts.append(p + solution(a, b, c, rng, slip) + "<eos>")
            prompt_lens.append(len(tokenizer(p)["input_ids"]))
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for i, n in enumerate(prompt_lens):
            labels[i, :n] = -100
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        if step % 25 == 0 or step == steps - 1:
            el = time.time() - t0
            eta = el / (step + 1) * (steps - step - 1)
            print(
                f"[cpu-demo] warm start {step + 1}/{steps} loss {loss_v:.3f} elapsed {el:.0f}s ETA {eta:.0f}s",
                flush=True,
            )
    model.eval()
    return loss_v


@torch.no_grad()
def sampled_accuracy(model, tokenizer, data: list[dict], n: int = 64, seed: int = 0) -> float:
    from entropy_rl.reward import compute_score

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False) for r in data[:n]]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=32, do_sample=True, top_k=0, top_p=1.0, temperature=1.0)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    scores = [compute_score(DATA_SOURCE, t, r["reward_model"]["ground_truth"])["score"] for t, r in zip(texts, data)]
    return sum(scores) / len(scores)


#: the second demo model, for vLLM: head size 32 (2 heads x 32 = hidden 64)
VLLM_MODEL = dict(dir="model_vllm", heads=2, kv_heads=1)


def _warm_model(
    out: str,
    tokenizer,
    test: list[dict],
    steps: int,
    batch: int,
    lr: float,
    slip: float,
    seed: int,
    dirname: str,
    **shape,
) -> dict:
    model = make_model(tokenizer, seed=seed, **shape)
    t0 = time.time()
    loss = warm_start(model, tokenizer, steps, batch, lr, slip, seed)
    acc = sampled_accuracy(model, tokenizer, test)

    def save(tmp: str) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_replace_dir(save, os.path.join(out, dirname))  # a model directory appears complete or not at all
    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "warm_start_steps": steps,
        "warm_start_loss": loss,
        "sampled_accuracy": acc,
        "seconds": round(time.time() - t0, 1),
        **shape,
    }
    print(f"[cpu-demo] {dirname}/ ({info['parameters']} parameters, sampled accuracy {acc:.2f}) written to {out}")
    return info


def prepare(
    out: str,
    n_train: int = 256,
    n_test: int = 64,
    steps: int = 1000,
    batch: int = 64,
    lr: float = 5e-3,
    slip: float = 0.2,
    seed: int = 0,
    force: bool = False,
    vllm: bool = False,
) -> dict:
    """Build what is missing (everything with ``force``); returns the ``cpu_demo.json`` record."""
    out = os.path.expanduser(out)
    done = os.path.join(out, "cpu_demo.json")
    info: dict = {}
    if os.path.exists(done) and not force:
        with open(done) as f:
            info = json.load(f)
        if not vllm or "vllm_model" in info:
            print(f"[cpu-demo] already prepared at {out} (use --force to rebuild)")
            return info
    os.makedirs(out, exist_ok=True)
    test = rows(n_test, seed + 7, "test")
    if not info:
        tokenizer = make_tokenizer()
        train = rows(n_train, seed, "train")
        info = _warm_model(out, tokenizer, test, steps, batch, lr, slip, seed, "model")
        for name, data in (("train", train), ("test", test)):
            frame = pd.DataFrame(data)
            atomic_write_path(os.path.join(out, f"{name}.parquet"), lambda tmp: frame.to_parquet(tmp, index=False))
        info.update(train_rows=n_train, test_rows=n_test)
    if vllm:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.path.join(out, "model"))
        shape = {k: v for k, v in VLLM_MODEL.items() if k != "dir"}
        info["vllm_model"] = _warm_model(out, tokenizer, test, steps, batch, lr, slip, seed, VLLM_MODEL["dir"], **shape)
    atomic_write_json(done, info)
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = os.path.join(os.environ.get("ENTROPY_RL_DATA", os.path.expanduser("~/data/entropy_rl")), "cpu_demo")
    ap.add_argument("--out", default=default_out)
    ap.add_argument("--steps", type=int, default=1000, help="warm-start SFT steps")
    ap.add_argument("--train-rows", type=int, default=256)
    ap.add_argument("--test-rows", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--vllm", action="store_true", help="also build model_vllm/ for backend=cpu_vllm (head size 32)")
    a = ap.parse_args(argv)
    prepare(a.out, a.train_rows, a.test_rows, a.steps, seed=a.seed, force=a.force, vllm=a.vllm)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    main()
