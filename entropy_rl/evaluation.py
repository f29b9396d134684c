"""Avg@k and Pass@k for sampled math evaluation (pure functions, no I/O).

The SENT paper reports, per benchmark (AIME24, AIME25, AMC23, MATH500, OlympiadBench,
Minerva) and k = 8/16/32:

- **Avg@k** — mean per-sample accuracy of the k samples drawn per problem, averaged over
  problems (:func:`avg_at_k`). With n ≥ k samples it is the mean over all n: each sample is
  an unbiased draw of the per-sample accuracy, so using only the first k would throw samples
  away and make Avg@k disagree with Pass@1 on the same run. Avg@k therefore equals Pass@1
  (the unbiased estimator below at k = 1) whatever k and n are; k only sets the minimum
  number of samples a problem must have;
- **Pass@k** — the probability that at least one of k samples is correct, estimated
  without bias from n >= k samples with c correct: 1 − C(n−c, k)/C(n, k)
  (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"),
  averaged over problems (:func:`pass_at_k`, :func:`mean_pass_at_k`);

and the unweighted mean over benchmarks (:func:`summarize`). Values are fractions in
[0, 1]; :func:`format_table` prints percentages, as the paper does.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["pass_at_k", "avg_at_k", "mean_pass_at_k", "summarize", "format_table", "parse_ks"]


def _as_int(x: Any, name: str) -> int:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be an integer, got bool {x!r}")
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(x).__name__} {x!r}") from None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k for one problem: ``1 − C(n−c, k) / C(n, k)`` (Chen et al. 2021).

    Computed in product form, ``1 − Π_{i=n−c+1}^{n} (1 − k/i)``, which never forms the
    (huge) binomials. ``n`` samples, ``c`` of them correct, ``1 <= k <= n``.
    """
    n, c, k = _as_int(n, "n"), _as_int(c, "c"), _as_int(k, "k")
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def _rows(correct_matrix: Iterable[Sequence[Any]]) -> list[list[bool]]:
    """Validate a per-problem correctness matrix (rows may differ in length) → bools."""
    rows: list[list[bool]] = []
    for p, row in enumerate(correct_matrix):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise TypeError(f"problem {p}: expected a sequence of correctness values, got {type(row).__name__}")
        out = []
        for s, v in enumerate(row):
            if v in (True, False):  # also 0/1, 0.0/1.0, numpy bools
                out.append(bool(v))
            else:
                raise ValueError(f"problem {p}, sample {s}: correctness must be 0/1 or bool, got {v!r}")
        rows.append(out)
    return rows


def _check_k(rows: list[list[bool]], k: int, what: str) -> int:
    k = _as_int(k, "k")
    if k < 1:
        raise ValueError(f"{what}: k must be >= 1, got {k}")
    if not rows:
        raise ValueError(f"{what}: no problems")
    for p, row in enumerate(rows):
        if len(row) < k:
            raise ValueError(f"{what}: problem {p} has {len(row)} samples, fewer than k={k}")
    return k


def avg_at_k(correct_matrix: Iterable[Sequence[Any]], k: int) -> float:
    """Avg@k: mean over problems of the accuracy over *all* of each problem's n >= k samples.

    Equal to Pass@1 (:func:`mean_pass_at_k` with k = 1) for any n: c/n is the unbiased
    per-sample accuracy. Every problem needs at least ``k`` samples.
    """
    rows = _rows(correct_matrix)
    _check_k(rows, k, "avg_at_k")
    return math.fsum(sum(row) / len(row) for row in rows) / len(rows)


def mean_pass_at_k(correct_matrix: Iterable[Sequence[Any]], k: int) -> float:
    """Pass@k of a benchmark: mean over problems of :func:`pass_at_k` from all n samples."""
    rows = _rows(correct_matrix)
    k = _check_k(rows, k, "mean_pass_at_k")
    return math.fsum(pass_at_k(len(row), sum(row), k) for row in rows) / len(rows)


def parse_ks(ks: int | str | Iterable[Any]) -> list[int]:
    """``8``, ``"8,16,32"`` or ``[8, 16, 32]`` → sorted unique positive ints."""
    if isinstance(ks, str):
        parts = [p.strip() for p in ks.split(",") if p.strip()]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"k values must be integers, got {ks!r}") from None
    elif isinstance(ks, Iterable):
        vals = [_as_int(k, "k") for k in ks]
    else:
        vals = [_as_int(ks, "k")]
    if not vals:
        raise ValueError("no k values given")
    bad = [k for k in vals if k < 1]
    if bad:
        raise ValueError(f"k values must be >= 1, got {bad}")
    return sorted(set(vals))


def summarize(results: Mapping[str, Iterable[Sequence[Any]]], ks: int | str | Iterable[Any]) -> dict[str, Any]:
    """Per-benchmark and mean Avg@k / Pass@k.

    Args:
        results: benchmark (data_source) → per-problem lists of per-sample correctness.
            Every problem needs at least ``max(ks)`` samples.
        ks: the k values (e.g. ``[8, 16, 32]``).

    Returns::

        {"ks": [8, 16, 32],
         "benchmarks": {name: {"n_problems": int, "n_samples": int (min per problem),
                               "avg@8": float, "pass@8": float, ...}},
         "mean": {"n_benchmarks": int, "n_problems": int, "avg@8": float, "pass@8": float, ...},
         "headline": {"avg@k": float, "pass@k": float}}

    ``mean`` is the unweighted mean over benchmarks (the SENT tables' "mean over
    benchmarks"); ``headline`` further averages it over the k values, as the SENT headline
    table does (mean over 6 benchmarks and k = 8/16/32). All values are fractions.
    """
    ks = parse_ks(ks)
    if not results:
        raise ValueError("summarize: no benchmarks")
    benchmarks: dict[str, dict[str, Any]] = {}
    for name, matrix in results.items():
        rows = _rows(matrix)
        if not rows:
            raise ValueError(f"summarize: benchmark {name!r} has no problems")
        short = [(p, len(r)) for p, r in enumerate(rows) if len(r) < ks[-1]]
        if short:
            p, m = short[0]
            raise ValueError(
                f"summarize: benchmark {name!r} problem {p} has {m} samples, fewer than max k={ks[-1]} "
                f"({len(short)} such problems)"
            )
        entry: dict[str, Any] = {"n_problems": len(rows), "n_samples": min(len(r) for r in rows)}
        for k in ks:
            entry[f"avg@{k}"] = avg_at_k(rows, k)
            entry[f"pass@{k}"] = mean_pass_at_k(rows, k)
        benchmarks[str(name)] = entry
    vals = list(benchmarks.values())
    mean: dict[str, Any] = {"n_benchmarks": len(vals), "n_problems": sum(b["n_problems"] for b in vals)}
    for k in ks:
        for m in ("avg", "pass"):
            mean[f"{m}@{k}"] = math.fsum(b[f"{m}@{k}"] for b in vals) / len(vals)
    headline = {f"{m}@k": math.fsum(mean[f"{m}@{k}"] for k in ks) / len(ks) for m in ("avg", "pass")}
    return {"ks": ks, "benchmarks": benchmarks, "mean": mean, "headline": headline}


def format_table(summary: Mapping[str, Any]) -> str:
    """A fixed-width text table (percentages) of a :func:`summarize` result."""
    ks = list(summary["ks"])
    cols = [f"avg@{k}" for k in ks] + [f"pass@{k}" for k in ks]
    rows: list[tuple[str, str, list[str]]] = []
    for name, b in summary["benchmarks"].items():
        rows.append((name, str(b["n_problems"]), [f"{100.0 * b[c]:.2f}" for c in cols]))
    mean = summary["mean"]
    mean_name = f"mean ({mean['n_benchmarks']} benchmarks)"
    rows.append((mean_name, str(mean["n_problems"]), [f"{100.0 * mean[c]:.2f}" for c in cols]))
    w0 = max(len("benchmark"), *(len(r[0]) for r in rows))
    w1 = max(len("n"), *(len(r[1]) for r in rows))
    wc = [max(len(c), *(len(r[2][i]) for r in rows)) for i, c in enumerate(cols)]

    def line(a: str, b: str, cells: Sequence[str]) -> str:
        return "  ".join([a.ljust(w0), b.rjust(w1), *(x.rjust(w) for x, w in zip(cells, wc))])

    sep = "-" * len(line("", "", [""] * len(cols)))
    out = [line("benchmark", "n", cols), sep]
    out += [line(*r) for r in rows[:-1]]
    out += [sep, line(*rows[-1])]
    h = summary.get("headline")
    if h:
        out.append(
            f"headline (mean over benchmarks and k={'/'.join(map(str, ks))}): "
            f"Avg@k {100.0 * h['avg@k']:.2f}  Pass@k {100.0 * h['pass@k']:.2f}"
        )
    return "\n".join(out)
