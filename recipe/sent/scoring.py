"""Semantic-entropy scoring pass: per-prompt H_SE and pass rate, cached on disk.

SENT scores every training prompt once with the *initial* policy: M samples, final answers
clustered into meaning classes, H_SE = −Σ_c p(c) log p(c) (:mod:`entropy_rl.semantic_entropy`).
The released code ships no scoring code; this is ours. The generation itself (veRL's rollout
workers) is the adapter's business; this module holds what happens around it:

- :func:`score_group` — one prompt's M responses → H_SE, pass rate, class count;
- :func:`dataset_fingerprint` / :func:`cache_key` — a cache key from the dataset *content*,
  the model, M, temperature, top-p, response length and seed: change any and it re-scores;
- :class:`ScoreCache` — parquet on disk (atomic write); a restart reuses it;
- :func:`run_scoring` — the loop with a progress bar and an ETA.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from entropy_rl.answers import extract_answer, is_equivalent
from entropy_rl.semantic_entropy import cluster_answers, semantic_entropy

SCORE_COLUMNS = ("row", "index", "semantic_entropy", "pass_rate", "n_classes", "no_answer_frac")


def _golds(gold: Any) -> list[str]:
    if isinstance(gold, (list, tuple, np.ndarray)):
        return [str(g) for g in gold]
    return [str(gold)]


def score_group(
    responses: Sequence[str],
    gold: Any,
    seq_logprobs: Sequence[float] | None = None,
) -> dict[str, float]:
    """One prompt's M responses → its semantic entropy and pass rate.

    Args:
        responses: decoded response texts (untrusted; parsed with bounded checks only).
        gold: the ground-truth answer (or a list of acceptable ones).
        seq_logprobs: log P(o) per response; given → likelihood estimator, else counts.
    """
    if not responses:
        raise ValueError("score_group: no responses")
    preds = [extract_answer(r) for r in responses]
    ids = cluster_answers(preds)
    golds = _golds(gold)
    correct = [p is not None and any(is_equivalent(p, g) for g in golds) for p in preds]
    return {
        "semantic_entropy": semantic_entropy(ids, seq_logprobs),
        "pass_rate": float(np.mean(correct)),
        "n_classes": float(max(ids) + 1),
        "no_answer_frac": float(np.mean([p is None for p in preds])),
    }


def _row_identity(row: dict) -> Any:
    """What defines a training prompt for the cache: prompt, answer, stable index."""
    rm = row.get("reward_model") or {}
    ei = row.get("extra_info") or {}
    gt = rm.get("ground_truth") if isinstance(rm, dict) else None
    return [row.get("prompt"), gt, ei.get("index") if isinstance(ei, dict) else None]


def dataset_fingerprint(rows: Iterable[dict]) -> str:
    """sha256 over every row's (prompt, ground truth, extra_info.index), in order."""
    h = hashlib.sha256()
    n = 0
    for row in rows:
        h.update(json.dumps(_row_identity(row), sort_keys=True, default=str).encode())
        h.update(b"\n")
        n += 1
    return f"{h.hexdigest()[:24]}-{n}"


def cache_key(
    fingerprint: str,
    model_path: str,
    n_samples: int,
    temperature: float,
    top_p: float,
    max_response_length: int,
    seed: int,
) -> str:
    spec = {
        "data": fingerprint,
        "model": str(model_path),
        "M": int(n_samples),
        "T": float(temperature),
        "top_p": float(top_p),
        "max_len": int(max_response_length),
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class ScoreCache:
    """One parquet file per cache key under ``cache_dir``."""

    cache_dir: str
    key: str

    @property
    def path(self) -> str:
        return os.path.join(os.path.expanduser(self.cache_dir), f"semantic_entropy-{self.key}.parquet")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self, num_rows: int) -> pd.DataFrame:
        df = pd.read_parquet(self.path)
        missing = [c for c in SCORE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{self.path}: score cache lacks columns {missing}; delete it to re-score")
        if len(df) != num_rows or not np.array_equal(df["row"].to_numpy(), np.arange(num_rows)):
            raise ValueError(f"{self.path}: score cache has {len(df)} rows, the dataset {num_rows}; delete it to re-score")
        return df

    def save(self, df: pd.DataFrame) -> str:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + f".tmp{os.getpid()}"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a cache
        return self.path


class Progress:
    """A plain progress line with rate and ETA (works in Ray logs, no tty needed)."""

    def __init__(self, total: int, what: str, stream=None, every_s: float = 5.0) -> None:
        self.total, self.what, self.done = total, what, 0
        self.start = self.last = time.monotonic()
        self.stream = stream or sys.stdout
        self.every_s = every_s

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            el = now - self.start
            rate = self.done / el if el > 0 else float("inf")
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(
                f"[{self.what}] {self.done}/{self.total} ({100.0 * self.done / max(self.total, 1):.1f}%) "
                f"{rate:.2f}/s elapsed {el:.0f}s ETA {eta:.0f}s",
                file=self.stream,
                flush=True,
            )


def run_scoring(
    batches: Iterable[tuple[Sequence[int], Sequence[Any]]],
    generate: Callable[[Any], tuple[list[list[str]], list[list[float]] | None]],
    num_rows: int,
    estimator: str,
    indices: Sequence[Any] | None = None,
    golds: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Score every row.

    Args:
        batches: ``(rows, payload)`` pairs; ``payload`` goes to ``generate`` unchanged.
        generate: payload → (M response texts per row, M log P(o) per row or None).
        num_rows: rows in the dataset (every one must be scored exactly once).
        estimator: ``"likelihood"`` (use log-probs when ``generate`` returns them) or ``"count"``.
        indices, golds: per-row ``extra_info.index`` and ground truth.
    """
    if estimator not in ("likelihood", "count"):
        raise ValueError(f"entropy_rl.scoring.estimator must be 'likelihood' or 'count', got {estimator!r}")
    out: dict[int, dict[str, float]] = {}
    progress = Progress(num_rows, "semantic-entropy scoring")
    for rows, payload in batches:
        texts, lps = generate(payload)
        if len(texts) != len(rows):
            raise RuntimeError(f"scoring: generate returned {len(texts)} groups for {len(rows)} prompts")
        for j, row in enumerate(rows):
            row = int(row)
            if row in out:
                raise RuntimeError(f"scoring: row {row} scored twice")
            use_lp = estimator == "likelihood" and lps is not None
            out[row] = score_group(texts[j], golds[row] if golds is not None else None, lps[j] if use_lp else None)
        progress.update(len(rows))
    missing = [r for r in range(num_rows) if r not in out]
    if missing:
        raise RuntimeError(f"scoring: {len(missing)} rows never scored (first: {missing[:5]})")
    df = pd.DataFrame([{"row": r, **out[r]} for r in range(num_rows)])
    df.insert(1, "index", list(indices) if indices is not None else list(range(num_rows)))
    return df[list(SCORE_COLUMNS)]


def summarize(df: pd.DataFrame) -> dict[str, float]:
    se = df["semantic_entropy"].to_numpy()
    return {
        "scoring/prompts": float(len(df)),
        "scoring/semantic_entropy_mean": float(np.mean(se)),
        "scoring/semantic_entropy_zero_frac": float(np.mean(se <= 1e-12)),
        "scoring/pass_rate_mean": float(df["pass_rate"].mean()),
        "scoring/no_answer_frac": float(df["no_answer_frac"].mean()),
        "scoring/max_entropy": float(np.max(se)) if len(se) else math.nan,
    }
