"""Answer corpora for ``bench_answers.py``: a realistic mix, and the tests' hostile one.

Realistic: one gold answer per prompt and ``m`` sampled responses (a few hundred characters of
reasoning, then ``\\boxed{...}``), the answer written in the forms models use — equal to the
gold in another notation, wrong, unparseable, or missing. Every prompt draws fresh numbers,
so the equivalence cache does not carry results across prompts.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from fractions import Fraction

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.data.hostile import corpus as _hostile_corpus  # noqa: E402  (the one hostile corpus)

FILLER = (
    "We consider the cases separately. Substituting and simplifying gives the relation above, "
    "and checking the boundary values confirms it. "
)


def _gold_and_forms(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """(gold, equivalent forms, wrong answers) for one random prompt."""
    kind = rng.choice(["int", "int", "frac", "latex", "set", "tuple", "text"])
    if kind == "int":
        n = rng.randint(2, 99999)
        same = [str(n), f"{n:,}", f"{n}.0", f"\\text{{{n}}}", f"{n}\\%" if n < 100 else str(n), f"${n}$"]
        wrong = [str(n + 1), str(n - rng.randint(2, 9)), str(2 * n)]
        return str(n), same, wrong
    if kind == "frac":
        a, b = rng.randint(1, 40), rng.randint(2, 41)
        f = Fraction(a, b)
        a, b = f.numerator, f.denominator
        if b == 1:
            b = 7 if a != 7 else 9  # 7/7 would make the "wrong" 7/7 right
        same = [f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\frac{{{2 * a}}}{{{2 * b}}}"]
        if 10**6 % b == 0:
            same.append(str(float(Fraction(a, b))))
        wrong = [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}"]
        return f"\\frac{{{a}}}{{{b}}}", same, wrong
    if kind == "latex":
        k = rng.randint(2, 9)
        gold, same, wrong = rng.choice(
            [
                (
                    f"\\frac{{\\sqrt{{{k}}}}}{{2}}",
                    [f"\\sqrt{{{k}}}/2", f"\\frac{{1}}{{2}}\\sqrt{{{k}}}", f"\\tfrac{{\\sqrt{k}}}{{2}}"],
                    [f"\\sqrt{{{k}}}", f"\\frac{{\\sqrt{{{k + 1}}}}}{{2}}"],
                ),
                (
                    f"{k}\\pi",
                    [f"{k} \\pi", f"\\pi \\cdot {k}", f"{k}\\cdot\\pi"],
                    [f"{k + 1}\\pi", f"\\frac{{{k}\\pi}}{{2}}"],
                ),
                (
                    f"x^2+{2 * k}x+{k * k}",
                    [f"(x+{k})^2", f"x^{{2}} + {2 * k} x + {k * k}"],
                    [f"(x-{k})^2", f"x^2+{k * k}"],
                ),
                (f"2\\sqrt{{{k}}}", [f"\\sqrt{{{4 * k}}}", f"2 \\sqrt {k}"], [f"\\sqrt{{{2 * k}}}"]),
            ]
        )
        return gold, same, wrong
    if kind == "set":
        xs = sorted(rng.sample(range(-9, 20), 3))
        gold = "\\{" + ", ".join(map(str, xs)) + "\\}"
        same = ["\\{" + ",".join(map(str, reversed(xs))) + "\\}", ", ".join(map(str, xs))]
        wrong = ["\\{" + ", ".join(map(str, xs[:2])) + "\\}"]
        return gold, same, wrong
    if kind == "tuple":
        a, b = rng.randint(-9, 9), rng.randint(-9, 9)
        return f"({a}, {b})", [f"({a},{b})", f"\\left({a}, {b}\\right)"], [f"({b}, {a + 1})", f"[{a}, {b})"]
    word = rng.choice(["Monday", "Alice", "none", "infinitely many"])
    return f"\\text{{{word}}}", [word, word.lower(), f"\\textbf{{{word}}}"], ["Tuesday", "Bob"]


UNPARSEABLE = [
    "It cannot be determined from the information given",
    "\\frac{",
    "asdf qwerty ???",
    "x = ",
    "\\begin{cases} 1 \\end{cases",
    "See the explanation above",
]


def realistic_labeled(n_prompts: int, m: int = 16, seed: int = 0) -> list[tuple[str, list[tuple[str, float]]]]:
    """``n_prompts`` × (gold, ``m`` × (response, expected score)): ~55% equal to the gold in
    some form (1.0), 30% wrong, 8% unparseable, 7% without a final answer (0.0)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_prompts):
        gold, same, wrong = _gold_and_forms(rng)
        responses = []
        for _ in range(m):
            u = rng.random()
            text = FILLER * rng.randint(1, 8)
            if u < 0.55:
                responses.append((f"{text}Therefore the answer is $\\boxed{{{rng.choice(same)}}}$.", 1.0))
            elif u < 0.85:
                responses.append((f"{text}So we get \\boxed{{{rng.choice(wrong)}}}.", 0.0))
            elif u < 0.93:
                responses.append((f"{text}\\boxed{{{rng.choice(UNPARSEABLE)}}}", 0.0))
            else:
                responses.append((text + "I am not sure how to finish", 0.0))  # no final answer
        out.append((gold, responses))
    return out


def realistic(n_prompts: int, m: int = 16, seed: int = 0) -> list[tuple[str, list[str]]]:
    """:func:`realistic_labeled` without the labels."""
    return [(gold, [r for r, _ in rs]) for gold, rs in realistic_labeled(n_prompts, m, seed)]


def hostile(sentinel: str | None = None) -> list[tuple[str, str, str]]:
    """(name, response, gold): the tests' hostile corpus (``tests/data/hostile.py``), inputs
    built to execute code, hang, blow up or crash an answer checker."""
    sentinel = sentinel or os.path.join(tempfile.gettempdir(), "entropy_rl_bench_pwned")
    return [(it.name, it.response, it.gold) for it in _hostile_corpus(sentinel)]
