"""What makes a veRL RL row's fields usable, in one place: the data preparation
(``launch/prepare_data.py``), the scoring pass and the trainer (``recipe.sent.scoring.check_rows``)
and the evaluation (``recipe.sent.evaluate``) apply the same rules.

Each function returns why a value is unusable, as the rest of a message ``field '<f>' ...``,
or None when it is fine.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np


def as_list(value: Any) -> list | None:
    """A list from a list / tuple / numpy array (parquet gives arrays), else None."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return None


def prompt_problem(value: Any) -> str | None:
    """A prompt is a non-empty string, or a chat list of ``{"role", "content"}`` messages with
    string contents, one of them non-empty."""
    if value is None:
        return "is missing (null)"
    if isinstance(value, str):
        return None if value.strip() else "is empty"
    msgs = as_list(value)
    if msgs is None:
        return f"must be a string or a list of chat messages, got {type(value).__name__}"
    if not msgs:
        return "is an empty list of messages"
    for j, m in enumerate(msgs):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            return f"message {j} has no string 'content' (got {type(m).__name__} {str(m)[:80]!r})"
    if not any(m["content"].strip() for m in msgs):
        return "has only empty messages"
    return None


def gold_problem(value: Any) -> str | None:
    """A ground truth is a non-empty string, a finite number (the reward reads numbers,
    :func:`entropy_rl.reward.gold_answers`), or a non-empty list of those."""
    if value is None:
        return "is missing (null)"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return f"must be a string or number, got bool {value!r}"
    if isinstance(value, str):
        return None if value.strip() else "is empty"
    if isinstance(value, numbers.Real):
        return None if math.isfinite(float(value)) else f"is not a finite number ({value!r})"
    items = as_list(value)
    if items is None:
        return f"must be a string, number or list of them, got {type(value).__name__}"
    if not items:
        return "is an empty list"
    for j, item in enumerate(items):
        why = gold_problem(item)
        if why is not None:
            return f"item {j} {why}"
    return None
