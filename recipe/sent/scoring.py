"""Semantic-entropy scoring pass: per-prompt H_SE and pass rate, cached on disk.

SENT scores every training prompt once with the *initial* policy: M samples, final answers
clustered into meaning classes, H_SE = −Σ_c p(c) log p(c) (:mod:`entropy_rl.semantic_entropy`).
The released code ships no scoring code; this is ours. The generation itself (veRL's rollout
workers) is the adapter's business; this module holds what happens around it:

- :func:`score_group` — one prompt's M responses → H_SE, pass rate, class count;
- :func:`check_rows` — the training rows are usable: a non-empty prompt, a ground truth
  (string, number or list of them), a unique ``extra_info.index``; else an error naming
  file, row and field;
- :func:`dataset_fingerprint` / :func:`cache_spec` — a cache key from the dataset *content*,
  the model, M, temperature, top-p, response length and seed: change any and it re-scores;
- :class:`ScoreCache` — parquet on disk (atomic write) that records its key and settings;
  a restart reuses it only after checking that record, the row indices and the values
  against this run (a cache for other prompts / model / sampling is refused, naming what
  differs);
- :func:`run_scoring` — the loop with a progress bar and an ETA.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from entropy_rl.answers import extract_answer
from entropy_rl.io import atomic_write_path
from entropy_rl.reward import answer_verdict, gold_answers
from entropy_rl.rows import gold_problem, prompt_problem
from entropy_rl.semantic_entropy import cluster_answers, semantic_entropy
from recipe.sent.progress import progress_bar

SCORE_COLUMNS = ("row", "index", "semantic_entropy", "pass_rate", "n_classes", "no_answer_frac")


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
    golds = gold_answers(gold)  # read, and graded, exactly as the reward does
    correct = [answer_verdict(p, golds)[0] for p in preds]
    return {
        "semantic_entropy": semantic_entropy(ids, seq_logprobs),
        "pass_rate": float(np.mean(correct)),
        "n_classes": float(max(ids) + 1),
        "no_answer_frac": float(np.mean([p is None for p in preds])),
    }


# ------------------------------------------------------------------ training rows
def check_rows(rows: Sequence[Mapping], where: Callable[[int], str] | str = "train data") -> dict[Any, int]:
    """Validate veRL RL rows before they are scored or trained on; returns
    ``extra_info.index -> row``.

    Every row needs a usable ``prompt``, ``reward_model.ground_truth`` and an
    ``extra_info.index`` that no other row has (it keys the scores and the curriculum).
    ``where(r)`` names row ``r``'s file and position (a string: the same prefix for all).
    Raises ``ValueError`` listing every bad row (the first 10 in full) as
    ``<file> row <r>: field '<f>' <problem>``.
    """
    name = where if callable(where) else (lambda r: f"{where} row {r}")
    errors: list[str] = []
    row_of: dict[Any, int] = {}
    for r, row in enumerate(rows):
        if not isinstance(row, Mapping):
            errors.append(f"{name(r)}: is not a record (got {type(row).__name__})")
            continue
        why = prompt_problem(row.get("prompt"))
        if why:
            errors.append(f"{name(r)}: field 'prompt' {why}")
        rm = row.get("reward_model")
        why = gold_problem(rm.get("ground_truth") if isinstance(rm, Mapping) else None)
        if why:
            errors.append(f"{name(r)}: field 'reward_model.ground_truth' {why}")
        ei = row.get("extra_info")
        key = ei.get("index") if isinstance(ei, Mapping) else None
        if isinstance(key, np.generic):
            key = key.item()
        if key is None or isinstance(key, float) and math.isnan(key):
            errors.append(f"{name(r)}: field 'extra_info.index' is missing (launch/prepare_data.py writes it)")
        elif not isinstance(key, (int, str)) or isinstance(key, bool):
            errors.append(f"{name(r)}: field 'extra_info.index' must be an int or string, got {type(key).__name__}")
        elif key in row_of:
            errors.append(f"{name(r)}: field 'extra_info.index' = {key!r} repeats {name(row_of[key])}")
        else:
            row_of[key] = r
    if errors:
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise ValueError(f"{len(errors)} bad training row field(s):\n  " + "\n  ".join(errors[:10]) + more)
    return row_of


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


def cache_spec(
    fingerprint: str,
    model_path: str,
    n_samples: int,
    temperature: float,
    top_p: float,
    max_response_length: int,
    seed: int,
) -> dict[str, Any]:
    """Everything a score depends on: data content, model, M, T, top-p, length, seed."""
    return {
        "data": fingerprint,
        "model": str(model_path),
        "M": int(n_samples),
        "T": float(temperature),
        "top_p": float(top_p),
        "max_len": int(max_response_length),
        "seed": int(seed),
    }


def spec_key(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(spec), sort_keys=True).encode()).hexdigest()[:32]


#: Parquet key-value metadata entry where a cache records its key and spec.
CACHE_META = b"entropy_rl.score_cache"


@dataclass
class ScoreCache:
    """One parquet file per cache key under ``cache_dir``; the file records its key and
    :func:`cache_spec` so a renamed, copied or hand-made file cannot pass for another."""

    cache_dir: str
    key: str
    spec: Mapping[str, Any] | None = None

    @classmethod
    def for_spec(cls, cache_dir: str, spec: Mapping[str, Any]) -> ScoreCache:
        return cls(cache_dir, spec_key(spec), dict(spec))

    @property
    def path(self) -> str:
        return os.path.join(os.path.expanduser(self.cache_dir), f"semantic_entropy-{self.key}.parquet")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def _refuse(self, what: str) -> ValueError:
        return ValueError(f"score cache {self.path}: {what}; it is not applied. Delete it to re-score.")

    def _check_record(self, meta: Mapping[bytes, bytes] | None) -> None:
        raw = (meta or {}).get(CACHE_META)
        if raw is None:
            raise self._refuse(
                "no key record (not written by ScoreCache.save), "
                "so it cannot be matched to this dataset, model and sampling setting"
            )
        try:
            record = json.loads(raw)
            key, spec = record["key"], record["spec"]
        except (ValueError, KeyError, TypeError):
            raise self._refuse(f"its key record is unreadable ({raw[:120]!r})") from None
        if key != self.key:
            diff = ""
            if self.spec is not None and isinstance(spec, Mapping):
                fields = sorted(set(spec) | set(self.spec))
                diff = "; differing: " + ", ".join(
                    f"{f}: cache {spec.get(f)!r} vs this run {self.spec.get(f)!r}"
                    for f in fields
                    if spec.get(f) != self.spec.get(f)
                )
            raise self._refuse(
                f"it was built for key {key}, this run's key is {self.key} "
                f"(other prompts, model or sampling setting{diff})"
            )
        if self.spec is not None and dict(spec) != dict(self.spec):
            raise self._refuse(f"its recorded settings {spec} differ from this run's {dict(self.spec)}")

    def load(self, indices: Sequence[Any]) -> pd.DataFrame:
        """The cached table, after checking it belongs to this run: the key record, one row
        per dataset row in order with the same ``extra_info.index``, every H_SE finite and
        >= 0, every pass rate in [0, 1]. Raises ``ValueError`` naming file, row and field."""
        try:
            table = pq.read_table(self.path)
        except (OSError, pa.ArrowException) as e:
            raise self._refuse(f"unreadable ({type(e).__name__}: {e})") from None
        self._check_record(table.schema.metadata)
        df = table.to_pandas()
        missing = [c for c in SCORE_COLUMNS if c not in df.columns]
        if missing:
            raise self._refuse(f"lacks columns {missing}")
        n = len(indices)
        if len(df) != n or not np.array_equal(df["row"].to_numpy(), np.arange(n)):
            raise self._refuse(f"has {len(df)} rows (column 'row' must be 0..{n - 1}), the dataset {n}")
        for r, (got, want) in enumerate(zip(df["index"].tolist(), indices)):
            if str(got) != str(want):
                raise self._refuse(f"row {r}: field 'index' is {got!r}, the dataset's extra_info.index is {want!r}")
        checks = (
            ("semantic_entropy", lambda v: v >= 0 and v < math.inf, "finite and >= 0"),
            ("pass_rate", lambda v: 0 <= v <= 1, "in [0, 1]"),
        )
        for col, ok, rule in checks:
            for r, v in enumerate(df[col].astype(float).tolist()):
                if not ok(v):  # NaN fails every comparison
                    raise self._refuse(f"row {r}: field '{col}' is {v!r}, must be {rule}")
        return df

    def save(self, df: pd.DataFrame) -> str:
        """Write ``df`` with this cache's key record (atomic: never half a cache)."""
        if self.spec is None:
            raise ValueError("ScoreCache.save needs the cache spec (ScoreCache.for_spec) to record it")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        table = pa.Table.from_pandas(df, preserve_index=False)
        record = json.dumps({"key": self.key, "spec": dict(self.spec)}, sort_keys=True).encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), CACHE_META: record})
        return atomic_write_path(self.path, lambda tmp: pq.write_table(table, tmp))


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
    progress = progress_bar(num_rows, "semantic-entropy scoring", stream=sys.stdout)
    without_lp = 0  # groups the likelihood estimator had to score by counts
    for rows, payload in batches:
        texts, lps = generate(payload)
        without_lp += len(rows) if lps is None else 0
        if len(texts) != len(rows):
            raise RuntimeError(f"scoring: generate returned {len(texts)} groups for {len(rows)} prompts")
        for j, row in enumerate(rows):
            row = int(row)
            if row in out:
                raise RuntimeError(f"scoring: row {row} scored twice")
            use_lp = estimator == "likelihood" and lps is not None
            out[row] = score_group(texts[j], golds[row] if golds is not None else None, lps[j] if use_lp else None)
        progress.update(len(rows))
    progress.close()
    if estimator == "likelihood":
        # p(c) from the rollout's sequence log-probs; said out loud, so a rollout that returns
        # none (calculate_log_probs=false) is not mistaken for a likelihood-scored run
        print(
            f"[semantic-entropy scoring] estimator likelihood: {len(out) - without_lp} of {len(out)} prompts "
            f"from the rollout's log-probs"
            + (f", {without_lp} by counts (the rollout returned no log-probs)" if without_lp else ""),
            flush=True,
        )
    missing = [r for r in range(num_rows) if r not in out]
    if missing:
        raise RuntimeError(f"scoring: {len(missing)} rows never scored (first: {missing[:5]})")
    df = pd.DataFrame([{"row": r, **out[r]} for r in range(num_rows)])
    df.insert(1, "index", list(indices) if indices is not None else list(range(num_rows)))
    return df[list(SCORE_COLUMNS)]


def score_table_metrics(df: pd.DataFrame) -> dict[str, float]:
    """Summary metrics of a score table (prompts, mean H_SE, share at zero, pass rate...)."""
    se = df["semantic_entropy"].to_numpy()
    return {
        "scoring/prompts": float(len(df)),
        "scoring/semantic_entropy_mean": float(np.mean(se)),
        "scoring/semantic_entropy_zero_frac": float(np.mean(se <= 1e-12)),
        "scoring/pass_rate_mean": float(df["pass_rate"].mean()),
        "scoring/no_answer_frac": float(df["no_answer_frac"].mean()),
        "scoring/max_entropy": float(np.max(se)) if len(se) else math.nan,
    }
