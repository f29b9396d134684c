"""Benchmark the ``hf`` rollout server's batching against one direct batched ``model.generate``.

Shape of a CPU GRPO step: 16 prompts x 8 samples x 48 new
tokens on a ~3.3M-parameter Qwen2 (hidden 256, 4 layers). The server receives the 128 samples
as 128 concurrent ``generate`` requests, as veRL's agent loop sends them, and must turn them into
one batched decode; the baseline is ``model.generate`` on the same 128 left-padded sequences
with its defaults disabled (top_k=0, top_p=1, temperature=1). Both run to exactly 48 tokens
(EOS ignored) so they do the same work. Prints results; asserts nothing (target ratio <= 1.25x).

    .venv/bin/python bench/bench_cpu_rollout.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

PROMPTS, SAMPLES, NEW_TOKENS = 16, 8, 48


def build(path: str, vocab: int):
    """A random Qwen2 of ~3.3M parameters and a matching tokenizer config, saved under ``path``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tiny import make_tokenizer

    tok = make_tokenizer(path)  # ids 0..2 are <pad> <eos> <unk>; the model's vocab is larger
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    model.save_pretrained(path)
    return tok, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--vocab", type=int, default=3664, help="3664 gives ~3.3M parameters")
    ap.add_argument("--batch-wait-ms", type=float, default=20)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import GenerationConfig
    from verl.workers.config import HFModelConfig, RolloutConfig

    from entropy_rl.cpu.rollout import HFRolloutServer

    tmp = tempfile.mkdtemp(prefix="bench_hf_rollout_")
    tok, model = build(tmp, args.vocab)
    n_params = sum(p.numel() for p in model.parameters())
    rcfg = RolloutConfig(
        name="hf",
        tensor_model_parallel_size=1,
        max_num_seqs=256,
        prompt_length=128,
        response_length=NEW_TOKENS,
        engine_kwargs={"hf": {"batch_wait_ms": args.batch_wait_ms}},
    )
    mcfg = HFModelConfig(path=tmp, override_config={"attn_implementation": "sdpa"})
    server = HFRolloutServer(rcfg, mcfg)  # loads its own float32 copy, as in a real run

    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(24, 65, (PROMPTS,), generator=g).tolist()
    prompts = [torch.randint(3, args.vocab, (n,), generator=g).tolist() for n in lengths]
    rows = [p for p in prompts for _ in range(SAMPLES)]  # veRL repeats each prompt n times

    # Baseline: one direct batched generate with HF's sampling defaults switched off.
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    gen_cfg = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=NEW_TOKENS,
        pad_token_id=tok.pad_token_id,
        eos_token_id=None,
        bos_token_id=None,
    )
    direct_model = server.model

    def direct() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = direct_model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
        assert out.shape[1] == width + NEW_TOKENS
        return time.perf_counter() - t0

    async def served(logprobs: bool, burst_gap_s: float = 0.0) -> tuple[float, float, list[int]]:
        params = dict(
            temperature=1.0,
            top_k=-1,
            top_p=1.0,
            repetition_penalty=1.0,
            logprobs=logprobs,
            max_tokens=NEW_TOKENS,
            ignore_eos=True,
        )
        await server.get_stats()  # barrier: the previous decode has returned
        d0, p0 = server.decoder.decode_seconds, len(server.decoder.prefill_sizes)
        t0 = time.perf_counter()
        tasks = []
        for i, r in enumerate(rows):
            if burst_gap_s and i and i % PROMPTS == 0:  # bursts, as veRL's agent-loop workers send
                await asyncio.sleep(burst_gap_s)
            tasks.append(asyncio.create_task(server.generate(r, dict(params), request_id=str(i))))
        outs = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        await server.get_stats()
        assert all(len(o.token_ids) == NEW_TOKENS for o in outs)
        return wall, server.decoder.decode_seconds - d0, server.decoder.prefill_sizes[p0:]

    async def run():
        direct()  # warm-up both paths
        await served(True)
        res = {
            "direct": [],
            "served_lp": [],
            "decode_lp": [],
            "served": [],
            "decode": [],
            "batches": [],
            "bursty": [],
            "bursty_prefills": [],
        }
        for _ in range(args.repeats):
            res["direct"].append(direct())
            wall, dec, nb = await served(True)
            res["served_lp"].append(wall), res["decode_lp"].append(dec), res["batches"].append(nb)
            wall, dec, nb = await served(False)
            res["served"].append(wall), res["decode"].append(dec), res["batches"].append(nb)
            wall, dec, nb = await served(True, burst_gap_s=0.04)
            res["bursty"].append(wall), res["bursty_prefills"].append(nb)
        return res

    res = asyncio.run(run())
    med = {k: statistics.median(v) for k, v in res.items() if "batches" not in k and "prefills" not in k}
    print(
        f"model: Qwen2 hidden 256 x 4 layers, vocab {args.vocab}, {n_params / 1e6:.2f}M parameters; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"shape: {PROMPTS} prompts x {SAMPLES} samples x {NEW_TOKENS} new tokens; prompt lengths "
        f"{min(map(len, prompts))}-{max(map(len, prompts))}; median of {args.repeats}"
    )
    print(f"prefill sizes per round (want [128]: one batch): {res['batches']}")
    print(f"{'direct model.generate (128 sequences)':<48}: {med['direct']:.3f} s")
    for key, what in [
        ("decode_lp", "server decode, logprobs on"),
        ("served_lp", "server end-to-end (128 requests), logprobs on"),
        ("decode", "server decode, logprobs off"),
        ("served", "server end-to-end, logprobs off"),
        ("bursty", "bursty arrivals (8 x 16, 40 ms apart), lp on"),
    ]:
        print(f"{what:<48}: {med[key]:.3f} s  ratio {med[key] / med['direct']:.2f}x")
    print(f"bursty arrivals: later bursts join the running decode; prefill sizes {res['bursty_prefills'][0]}")


if __name__ == "__main__":
    main()
