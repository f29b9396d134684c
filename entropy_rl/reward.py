"""Rule-based math reward, usable as veRL's ``custom_reward_function``.

veRL 0.9.1 calls ``compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=...)`` with keyword arguments (plus any ``reward_kwargs`` from the config),
from the driver (``NaiveRewardManager``) or from a thread-pool executor inside the
reward loop's event loop. A ``dict`` return must hold ``score``; every other key is
collected per sample into ``reward_extra_info`` (strings are skipped by the validation
metrics), so the keys must be the same for every sample.

Config::

    reward:
      custom_reward_function:
        path: <site-packages or repo>/entropy_rl/reward.py
        name: compute_score
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

from entropy_rl.answers import DEFAULT_TIMEOUT, all_boxed, check_pairs, extract_answer

__all__ = ["answer_verdict", "compute_score", "gold_answers"]


def _number_to_str(x: numbers.Number) -> str:
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        f = float(x)
        return str(int(f)) if f.is_integer() else repr(f)
    return str(x)


def gold_answers(ground_truth: Any) -> list[str]:
    """Acceptable gold answers from a string, a number, or a list/tuple/array of them.

    A gold string that contains ``\\boxed{...}`` contributes its boxed content; several
    boxes are one multi-valued answer, their contents joined by ``", "``. Empty entries are
    dropped.
    """
    if ground_truth is None:
        return []
    if isinstance(ground_truth, str):
        items: Iterable[Any] = [ground_truth]
    elif isinstance(ground_truth, numbers.Number):
        items = [ground_truth]
    elif hasattr(ground_truth, "tolist"):  # numpy array / scalar from parquet
        value = ground_truth.tolist()
        items = value if isinstance(value, list) else [value]
    elif isinstance(ground_truth, Iterable):
        items = ground_truth
    else:
        items = [ground_truth]
    golds: list[str] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, (list, tuple)):  # nested list from a parquet column
            golds.extend(gold_answers(item))
            continue
        s = _number_to_str(item) if isinstance(item, numbers.Number) else str(item)
        if "\\boxed" in s or "\\fbox" in s:
            # Several boxes in one gold are one multi-valued answer (`\boxed{1}\boxed{2}`):
            # keeping only the last would give full reward for part of it.
            boxes = all_boxed(s)
            s = ", ".join(boxes) if boxes else s
        s = s.strip()
        if s:
            golds.append(s)
    return golds


def compute_score(
    data_source: str | None = None,
    solution_str: str | None = None,
    ground_truth: Any = None,
    extra_info: dict | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    **kwargs: Any,
) -> dict[str, Any]:
    """Binary correctness reward for a math response.

    The final answer is the last final-answer marker of ``solution_str`` (the last
    ``\\boxed{}`` group or a later ``Answer:``; :func:`entropy_rl.answers.extract_answer`); it is correct if it is
    equivalent to any gold answer
    (:func:`entropy_rl.answers.check_pairs`). ``timeout`` seconds (a ``timeout`` in
    ``reward_kwargs`` reaches it) bound each check *and* all checks of this sample
    together, so one sample costs at most ``timeout`` however many gold answers it has.
    No extractable answer scores 0. ``data_source`` and ``extra_info`` are accepted and
    unused: one rule for every math data set.

    Returns ``{"score": 1.0 | 0.0, "acc": bool, "pred": str, "verify_timeouts": int}``
    (``pred`` is "" when nothing was extracted; ``verify_timeouts`` counts this sample's
    equivalence checks that ended without a real verdict — deadline, memory bound or a
    crashed worker — and so scored as not equivalent; the hooks log its batch sum as
    ``reward/verify_timeouts``). The keys are the same for every sample.
    """
    pred = extract_answer(solution_str)
    correct, timeouts = answer_verdict(pred, gold_answers(ground_truth), timeout=timeout)
    return {"score": 1.0 if correct else 0.0, "acc": correct, "pred": pred or "", "verify_timeouts": timeouts}


def answer_verdict(pred: str | None, golds: list[str], *, timeout: float = DEFAULT_TIMEOUT) -> tuple[bool, int]:
    """(whether ``pred`` equals any of ``golds``, checks that timed out): the reward's rule,
    used wherever an extracted answer is graded (reward, scoring pass, evaluation).

    ``timeout`` bounds each check and, with several golds, all of them together."""
    if pred is None or not golds:
        return False, 0
    total = timeout if len(golds) > 1 else None  # one gold: the pair's own timeout bounds it
    checks = check_pairs([(pred, g) for g in golds], timeout=timeout, total_timeout=total)
    return any(checks.equivalent), sum(checks.timed_out)
