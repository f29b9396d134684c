"""Semantic entropy of a prompt (SENT §3, after Kuhn et al. 2023).

Sample M answers o_1..o_M to one prompt, group them into meaning classes c by final-answer
equivalence, and measure

    H_SE = −Σ_c p(c) log p(c)        (nats)

with either estimator the paper names:

- count-based:      p(c) = |c| / M
- likelihood-based: p(c) ∝ Σ_{o ∈ c} P(o), normalised over the sampled set, i.e.
                    log p(c) = logsumexp_{o∈c} log P(o) − logsumexp_{all o} log P(o).

A prompt the policy answers consistently has H_SE ≈ 0; one it answers all over the place has
H_SE up to ln M. SENT trains on prompts from low to high H_SE (:mod:`entropy_rl.curriculum`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def cluster_answers(
    answers: Sequence[str | None],
    equivalent: Callable[[str, str], bool] | None = None,
    normalize: Callable[[str], str] | None = None,
    *,
    timeout: float | None = None,
    total_timeout: float | None = None,
) -> list[int]:
    """Meaning-class id of every answer: 0..K−1 in order of first appearance.

    Two answers share a class iff they are equivalent, closed transitively: answers are first
    reduced to their distinct normalised strings, then equivalent pairs of those are united
    (union–find). Cost grows with the number of *distinct* answers, not M². The default
    checker decides all distinct pairs in one batched worker call; a custom ``equivalent`` is
    called only for pairs not already in one class. Equivalence checks that are not transitive
    (``1/2 ~ 0.5 ~ 0.50``) still give one class.

    A response with no final answer (``None``) is its own singleton class: it carries no
    evidence about meaning, and pooling all unfinished responses into one class would make a
    prompt the policy never finishes look *certain* (low entropy) and move it to the front of
    the curriculum. As singletons they count as maximal uncertainty.

    Args:
        answers: extracted final answers (see :func:`entropy_rl.answers.extract_answer`).
        equivalent: symmetric predicate on two answers (default: bounded
            :func:`entropy_rl.answers.is_equivalent`, all distinct pairs decided in one
            :func:`entropy_rl.answers.equivalent_pairs` call).
        normalize: cheap canonical form; equal forms are equivalent without a check
            (default: :func:`entropy_rl.answers.normalize_answer`).
        timeout: seconds per check of the default checker (default
            :data:`entropy_rl.answers.DEFAULT_TIMEOUT`); an overrun means "not equivalent".
            A hostile answer costs it once per call, not once per pair it is in.
        total_timeout: seconds for all checks of the default checker together (default:
            unbounded); pairs not reached in time count as not equivalent.
    """
    batched = equivalent is None
    if equivalent is None or normalize is None:
        from entropy_rl.answers import normalize_answer

        normalize = normalize or normalize_answer

    key_of: list[int | None] = []
    keys: dict[str, int] = {}
    raw: list[str] = []  # first raw answer of each distinct key, what `equivalent` sees
    for a in answers:
        if a is None:
            key_of.append(None)
            continue
        k = normalize(a)
        if k not in keys:
            keys[k] = len(raw)
            raw.append(a)
        key_of.append(keys[k])

    if batched:
        # Default checker: every distinct pair in one `equivalent_pairs` call (one worker
        # round-trip per prompt, not one per pair; ~5x faster on 16 samples, bench_answers.py).
        # The classes are the same: union-find of the same verdicts.
        from entropy_rl.answers import (
            DEFAULT_TIMEOUT,
            NUMBER_TOLERANCE,
            equivalent_pairs,
            exact_number,
            normalize_answer,
            numbers_need_check,
        )

        # Plain numbers (most answers in math RL) are grouped by exact value in O(n log n):
        # equal values are one class, and two distinct values are never equivalent unless
        # they are within math-verify's rounding of each other (then they are checked like
        # any other pair): the verdicts of the pairwise check, without ~n^2/2 look-ups
        # (2,048 distinct integers are ~2M pairs).
        key_list = [normalize_answer(a) for a in raw]  # what equivalent_pairs would compare
        value = [exact_number(k) for k in key_list]
        numeric = sorted((i for i, v in enumerate(value) if v is not None), key=lambda i: value[i])
        others = [i for i, v in enumerate(value) if v is None]
        united: list[tuple[int, int]] = []
        to_check: set[tuple[int, int]] = set()
        for pos, i in enumerate(numeric):
            for j in numeric[pos + 1 :]:
                if value[j] == value[i]:
                    united.append((i, j))
                    continue
                if value[j] - value[i] > NUMBER_TOLERANCE:
                    break  # sorted: every later value is farther away
                if numbers_need_check(key_list[i], value[i], key_list[j], value[j]):
                    to_check.add((min(i, j), max(i, j)))
        for i in others:
            for j in range(len(raw)):
                if j != i:
                    to_check.add((min(i, j), max(i, j)))
        pairs_idx = sorted(to_check)
        t = DEFAULT_TIMEOUT if timeout is None else timeout
        verdicts = equivalent_pairs([(raw[i], raw[j]) for i, j in pairs_idx], timeout=t, total_timeout=total_timeout)
        united += [ij for ij, v in zip(pairs_idx, verdicts) if v]

    parent = list(range(len(raw)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if batched:
        for i, j in united:  # connected components: the same classes in any union order
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    else:
        for i in range(len(raw)):
            for j in range(i + 1, len(raw)):
                ri, rj = find(i), find(j)
                if ri != rj and equivalent(raw[i], raw[j]):
                    parent[max(ri, rj)] = min(ri, rj)

    ids: list[int] = []
    class_of_root: dict[int, int] = {}
    n_classes = 0
    for k in key_of:
        if k is None:
            ids.append(n_classes)
            n_classes += 1
            continue
        r = find(k)
        if r not in class_of_root:
            class_of_root[r] = n_classes
            n_classes += 1
        ids.append(class_of_root[r])
    return ids


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def semantic_entropy(class_ids: Sequence[int], seq_logprobs: Sequence[float] | None = None) -> float:
    """H_SE in nats from the class of each of the M sampled answers.

    Args:
        class_ids: class of each sample (:func:`cluster_answers`).
        seq_logprobs: log P(o) of each sample (sum of its token log-probs). ``None``: the
            count-based estimator p(c) = |c|/M. Given: the likelihood-based one, computed
            with log-sum-exp so sequences of thousands of tokens (log P ≈ −10⁴) are exact.
    """
    m = len(class_ids)
    if m == 0:
        raise ValueError("semantic_entropy: no samples (class_ids is empty)")
    if seq_logprobs is None:
        counts: dict[int, int] = {}
        for c in class_ids:
            counts[c] = counts.get(c, 0) + 1
        return max(0.0, -sum(n / m * math.log(n / m) for n in counts.values()))

    if len(seq_logprobs) != m:
        raise ValueError(f"semantic_entropy: {len(seq_logprobs)} log-probs for {m} samples")
    lps = [float(x) for x in seq_logprobs]
    for i, x in enumerate(lps):
        if math.isnan(x) or x == math.inf:
            raise ValueError(f"semantic_entropy: seq_logprobs[{i}] = {x} is not a log-probability")
    if all(x == -math.inf for x in lps):
        raise ValueError("semantic_entropy: every sample has log-probability −inf")
    by_class: dict[int, list[float]] = {}
    for c, x in zip(class_ids, lps):
        by_class.setdefault(c, []).append(x)
    total = _logsumexp([x for x in lps if x > -math.inf])
    h = 0.0
    for xs in by_class.values():
        finite = [x for x in xs if x > -math.inf]
        if not finite:
            continue  # p(c) = 0 contributes nothing
        log_p = _logsumexp(finite) - total
        h -= math.exp(log_p) * log_p
    return max(0.0, h)
