"""Hostile model outputs: the one corpus for the reliability tests and ``bench_answers.py``.

A policy optimized for reward will find any weakness of the answer checker, so each item is
an answer built to execute code, hang sympy, exhaust memory, blow the recursion limit or
break text handling. Built in code (a 10 MB string does not belong in git) with the path of
a *sentinel* file that every code-injection item tries to create: if the file ever exists,
something executed model output.

:func:`run_corpus` runs ``compute_score``, ``is_equivalent`` and ``cluster_answers`` on
items and times each call; tests call it in the main thread, in a thread, and as the target
of a spawned process (the shape of a veRL reward worker), so it lives here, importable by a
fresh interpreter, rather than in a test module.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: The categories of hostile input; every one must have items (tested).
CATEGORIES = (
    "code-injection",  # __import__, lambda, dunder access, exec/eval, shell syntax
    "huge-number",  # 10^{10^{10}}, 9**9**9, power towers, huge intervals of integration
    "factorial-tower",  # ((10!)!)!, 100000000!, binomials and products of huge ranges
    "nested-braces",  # 100k nested braces, 100k unclosed \boxed{
    "huge-answer",  # a 1 MB answer, a 10 MB response
    "bad-text",  # invalid UTF-8, control characters, lone surrogates, NUL
    "deep-latex",  # LaTeX that makes the parser / sympy recurse deeply
)

FILLER = "We expand, collect terms and check the boundary cases; the result follows. "


@dataclass(frozen=True)
class HostileItem:
    name: str
    category: str
    answer: str  # the hostile final answer, handed to is_equivalent / cluster_answers as is
    gold: str  # the ground truth it is scored against (never equivalent to the answer)
    response: str  # the whole model output handed to compute_score


def _boxed(answer: str) -> str:
    return FILLER + "Therefore the answer is $\\boxed{" + answer + "}$."


def _item(name: str, category: str, answer: str, gold: str, response: str | None = None) -> HostileItem:
    """An answer in a ``\\boxed{}`` at the end of a response, or a whole hostile response
    (``response`` given; then the answer the checkers see is that response itself)."""
    if response is not None:
        return HostileItem(name, category, response, gold, response)
    return HostileItem(name, category, answer, gold, _boxed(answer))


def corpus(sentinel: str) -> list[HostileItem]:
    """Every hostile item; code-injection items try to create ``sentinel``."""
    touch = f"touch {sentinel}"
    inj = [
        ("__import__ os.system", f"__import__('os').system('{touch}')"),
        ("lambda", f"(lambda: __import__('os').system('{touch}'))()"),
        ("dunder subclasses", "().__class__.__bases__[0].__subclasses__()"),
        (
            "dunder to os via subclasses",
            "[c for c in ().__class__.__bases__[0].__subclasses__() if c.__name__ == 'catch_warnings'][0]()"
            f"._module.__builtins__['__import__']('os').system('{touch}')",
        ),
        ("exec", f"exec(\"open('{sentinel}', 'w').write('x')\")"),
        ("eval in \\text", f"\\text{{eval(\"__import__('os').system('{touch}')\")}}"),
        ("getattr builtins", f"getattr(__builtins__, 'eval')(\"__import__('os').system('{touch}')\")"),
        ("sympify-style Symbol escape", f"Symbol('x').__class__.__init__.__globals__['os'].system('{touch}')"),
        ("subprocess", f"__import__('subprocess').run(['touch', '{sentinel}'])"),
        ("shell substitution", f"$(touch {sentinel})`touch {sentinel}`; touch {sentinel}"),
        ("pickle payload text", f"cos\nsystem\n(S'{touch}'\ntR."),
    ]
    items = [_item(n, "code-injection", a, "0") for n, a in inj]
    # the gold side is data, not code either
    items.append(_item("injection as gold", "code-injection", "0", f"__import__('os').system('{touch}')"))

    huge = [
        ("10^{10^{10}}", "10^{10^{10}}"),
        ("9**9**9", "9**9**9"),
        ("9^{9^{9}}", "9^{9^{9}}"),
        ("3^{3^{3^{3^3}}} tower", "3^{3^{3^{3^{3}}}}"),
        ("2^{2^{33}} (1 GiB integer)", "2^{2^{33}}"),
        ("10^{-10^{10}}", "10^{-10^{10}}"),
        ("1e999999999", "1e999999999"),
        ("integral to 10^{10}", "\\int_0^{10^{10}} x^{10^{10}} dx"),
    ]
    items += [_item(n, "huge-number", a, "100") for n, a in huge]
    fact = [
        ("((10!)!)!", "((10!)!)!"),
        ("100000000!", "100000000!"),
        ("10^{10^{10}}!", "10^{10^{10}}!"),
        ("binomial of 10^{10}", "\\binom{10^{10}}{10^{5}}"),
        ("product to 10^9", "\\prod_{n=1}^{10^{9}} n"),
    ]
    items += [_item(n, "factorial-tower", a, "3628800") for n, a in fact]

    items += [
        _item("100k nested braces", "nested-braces", "{" * 100_000 + "1" + "}" * 100_000, "1"),
        _item("100k unclosed \\boxed{", "nested-braces", "", "1", response=FILLER + "\\boxed{" * 100_000),
        _item(
            "2M braces then a box", "nested-braces", "", "1", response="{" * 2_000_000 + "}" * 2_000_000 + "\\boxed{2}"
        ),
        _item("1 MB answer", "huge-answer", "12345+" * 174_763 + "1", "2"),
        _item(
            "150 kB answer after 900 kB of text",
            "huge-answer",
            "",
            "9",
            response=FILLER * 12_000 + _boxed("9" * 150_000),
        ),
        _item("10 MB response", "huge-answer", "", "6", response="x" * 10_000_000 + _boxed("5")),
        _item("1 MB of newlines after Answer:", "huge-answer", "", "1", response="Answer:" + "\n" * 1_000_000),
    ]

    bad = [
        ("invalid UTF-8 bytes", b"\xff\xfe\xc3\x28\xa0\xa1".decode("utf-8", "surrogateescape") + "5"),
        ("control characters", "\x01\x07\x08\x1b[2J\x1b]0;pwned\x07\x7f5"),
        ("lone surrogates", "\ud800\udfff\udc00 5"),
        ("NUL bytes", "5\x00\x00\\frac{1}{\x00}"),
        ("bidi override and zero-width", "\u202e5\u200b\u2066\ufeff"),
        ("huge unicode digits", "\U0001d7d3" * 500),
    ]
    items += [_item(n, "bad-text", a, "4") for n, a in bad]

    deep = [
        ("150-deep power tower x^{x^{...}}", "x^{" * 150 + "x" + "}" * 150),
        ("300 nested parentheses", "(" * 300 + "1" + ")" * 300),
        ("300 nested brackets", "[" * 300 + "1" + "]" * 300),
        ("200-deep subscripts", "a_{" * 200 + "1" + "}" * 200),
        ("80-deep \\frac", "\\frac{1}{" * 80 + "2" + "}" * 80),
        ("100-deep \\sqrt", "\\sqrt{" * 100 + "2" + "}" * 100),
        ("500 unary minus", "-" * 500 + "1"),
        ("100 nested \\left(", "\\left(" * 100 + "1" + "\\right)" * 100),
        ("400-deep \\frac (over the length bound)", "\\frac{1}{" * 400 + "2" + "}" * 400),
    ]
    items += [_item(n, "deep-latex", a, "7") for n, a in deep]
    return items


#: Categories whose items mostly keep sympy busy past any deadline (each costs a timeout
#: and a worker swap per check); the rest are decided by the length bounds or quickly.
SLOW_CATEGORIES = ("huge-number", "factorial-tower", "deep-latex")


def representatives(items: list[HostileItem]) -> list[HostileItem]:
    """One item per category: two that overrun any deadline, the others cheap."""
    prefer = {
        "code-injection": "__import__ os.system",
        "huge-number": "10^{10^{10}}",
        "factorial-tower": "((10!)!)!",
        "deep-latex": "400-deep \\frac (over the length bound)",
    }
    out = []
    for cat in CATEGORIES:
        of_cat = [it for it in items if it.category == cat]
        out.append(next((it for it in of_cat if it.name == prefer.get(cat)), of_cat[0]))
    return out


def run_corpus(items: list[HostileItem], timeout: float, sentinel: str | None = None) -> list[dict]:
    """Score every item with the three public entry points, timing each call.

    ``is_equivalent`` gets the hostile answer on the *gold* side (math-verify parses gold
    first) so it is a new check, not a cache hit of ``compute_score``'s pair;
    ``cluster_answers`` gets a prompt's worth of answers: the hostile one twice, a correct
    and a wrong plain answer, a symbolic one and an unfinished response.
    Returns one record per item: ``name``, ``seconds`` per function, ``score``,
    ``verify_timeouts``, ``equivalent``, ``classes`` and ``sentinel_exists``.
    """
    from entropy_rl.answers import is_equivalent
    from entropy_rl.reward import compute_score
    from entropy_rl.semantic_entropy import cluster_answers

    records = []
    for it in items:
        rec: dict = {"name": it.name, "category": it.category, "seconds": {}}
        t0 = time.perf_counter()
        out = compute_score(
            data_source="hostile", solution_str=it.response, ground_truth=it.gold, extra_info={}, timeout=timeout
        )
        rec["seconds"]["compute_score"] = time.perf_counter() - t0
        rec.update(score=out["score"], verify_timeouts=out["verify_timeouts"], keys=sorted(out))
        answer = it.answer
        t0 = time.perf_counter()
        rec["equivalent"] = is_equivalent(it.gold, answer, timeout=timeout)
        rec["seconds"]["is_equivalent"] = time.perf_counter() - t0
        group = [answer, "\\frac{1}{2}", answer, "0.5", "\\sqrt{2}+1", None, "3"]
        t0 = time.perf_counter()
        rec["classes"] = cluster_answers(group, timeout=timeout)
        rec["seconds"]["cluster_answers"] = time.perf_counter() - t0
        rec["sentinel_exists"] = bool(sentinel) and os.path.exists(sentinel)
        records.append(rec)
    return records
