r"""Labelled model responses: the accuracy corpus for the reward and ``bench_answers.py``.

Each item is a whole response (reasoning, then a final answer in one of the formats models
write), its gold answer as a data set stores it, the label (is the response's final answer
the gold answer, mathematically?) and the reason for that label. The answers are written
here by hand, one pair per line of :data:`PAIRS`; each pair is then put into every response
format of :data:`FORMATS`, so a scorer is tested on the notation and on the extraction
separately. The labels are mathematical truth, not what any scorer says: a scorer that
disagrees with one is wrong on it.

Conventions behind a few labels (documented decisions of :mod:`entropy_rl.answers`):
a percent gold is the number before ``%`` (``28\%`` == ``28``); a unit after the value does
not change it; a bare list of values is unordered, a parenthesised pair is ordered.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    id: str
    format: str
    response: str
    gold: str
    label: bool
    reason: str


# (category, gold, final answer as the model writes it, label, why)
PAIRS: list[tuple[str, str, str, bool, str]] = [
    # -- integers
    ("integer", "42", "42", True, "the same integer"),
    ("integer", "42", "042", True, "a leading zero (AIME's three-digit style) does not change the value"),
    ("integer", "42", "42.0", True, "an integer written as a decimal"),
    ("integer", "1000", "1,000", True, "a thousands separator"),
    ("integer", "1000", "1{,}000", True, "LaTeX's braced thousands separator"),
    ("integer", "1000", "1\\,000", True, "a thin space as thousands separator"),
    ("integer", "42", "43", False, "off by one"),
    ("integer", "-7", "7", False, "the sign is wrong"),
    ("integer", "7", "-7", False, "the sign is wrong"),
    ("integer", "12", "\\text{12}", True, "a text wrapper around the number"),
    ("integer", "18", "\\$18", True, "a dollar sign before an amount of money"),
    ("integer", "18", "18 \\text{ dollars}", True, "a currency word after the amount"),
    ("integer", "120", "5!", True, "5! evaluates to 120"),
    ("integer", "8", "2^3", True, "2^3 evaluates to 8"),
    ("integer", "100", "10^2", True, "10^2 evaluates to 100"),
    ("integer", "5", "\\frac{10}{2}", True, "a fraction equal to the integer"),
    ("integer", "32349", "32, 349", False, "two values 32 and 349 (comma and space), not one number"),
    ("integer", "12", "21", False, "digits swapped"),
    ("integer", "100", "10", False, "a factor of ten off"),
    ("integer", "3", "3.5", False, "a different number"),
    ("integer", "2016", "2017", False, "off by one in a year-style answer"),
    ("integer", "0", "0", True, "zero"),
    ("integer", "0", "-0", True, "minus zero is zero"),
    ("integer", "6", "+6", True, "an explicit plus sign"),
    ("integer", "9", "3^2", True, "3^2 is 9"),
    # -- fractions and decimals
    ("fraction", "\\frac{1}{2}", "0.5", True, "the decimal value of the fraction"),
    ("fraction", "\\frac{1}{2}", "\\dfrac{1}{2}", True, "display-style fraction"),
    ("fraction", "\\frac{1}{2}", "1/2", True, "a slash fraction"),
    ("fraction", "\\frac{1}{2}", "\\frac{2}{4}", True, "an unreduced fraction of the same value"),
    ("fraction", "\\frac{1}{2}", "\\frac12", True, "the brace-less shorthand"),
    ("fraction", "\\frac{3}{4}", "\\frac{4}{3}", False, "the reciprocal"),
    ("fraction", "-\\frac{1}{2}", "\\frac{-1}{2}", True, "the minus sign inside the numerator"),
    ("fraction", "-\\frac{1}{2}", "-0.5", True, "the negative decimal"),
    ("fraction", "-\\frac{1}{2}", "\\frac{1}{2}", False, "the sign is wrong"),
    ("fraction", "\\frac{7}{2}", "3.5", True, "the decimal value"),
    ("fraction", "\\frac{5}{2}", "2.5", True, "the decimal value"),
    ("fraction", "\\frac{1}{3}", "\\frac{1}{4}", False, "a different fraction"),
    ("fraction", "\\frac{2}{3}", "\\frac{4}{6}", True, "an unreduced fraction of the same value"),
    ("fraction", "\\frac{9}{4}", "\\tfrac{9}{4}", True, "text-style fraction"),
    ("decimal", "0.1", "0.10", True, "a trailing zero"),
    ("decimal", "7.78", "7.8", False, "a different rounding is a different number"),
    ("decimal", "3.14", "\\pi", False, "an approximation is not the exact constant"),
    ("decimal", "2.25", "\\frac{9}{4}", True, "the fraction of the decimal"),
    ("decimal", "0.125", "\\frac{1}{8}", True, "the fraction of the decimal"),
    ("decimal", "1.5", "1.05", False, "a different decimal"),
    ("decimal", "12.5", "12.50", True, "a trailing zero"),
    # -- radicals and constants
    ("radical", "2\\sqrt{2}", "\\sqrt{8}", True, "sqrt(8) = 2 sqrt(2)"),
    ("radical", "\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", True, "the same product written apart"),
    ("radical", "\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", True, "a slash instead of \\frac"),
    ("radical", "\\sqrt{3}", "\\sqrt{2}", False, "a different radicand"),
    ("radical", "3\\sqrt{2}", "\\sqrt{18}", True, "sqrt(18) = 3 sqrt(2)"),
    ("radical", "\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True, "rationalised or not, the same number"),
    ("radical", "2+\\sqrt{3}", "\\sqrt{3}+2", True, "terms in another order"),
    ("radical", "2-\\sqrt{3}", "2+\\sqrt{3}", False, "the conjugate"),
    ("radical", "4", "4\\sqrt{2}", False, "a factor sqrt(2) too many"),
    ("radical", "\\sqrt{2}", "2", False, "the square instead of the root"),
    ("radical", "5\\sqrt{5}", "5 \\sqrt 5", True, "the brace-less \\sqrt shorthand"),
    ("constant", "8\\pi", "8\\pi \\text{ cm}^2", True, "a unit after an expression"),
    ("constant", "4\\pi", "4 \\pi", True, "a space inside the product"),
    ("constant", "\\frac{\\pi}{2}", "\\pi/2", True, "a slash instead of \\frac"),
    ("constant", "2\\pi", "\\pi", False, "a factor 2 missing"),
    ("constant", "e^{2}", "e^2", True, "braces around a one-character exponent"),
    ("constant", "\\frac{\\pi}{6}", "\\frac{\\pi}{3}", False, "a different angle"),
    # -- expressions
    ("expression", "x^2+2x+1", "(x+1)^2", True, "the factored form of the same polynomial"),
    ("expression", "2x+3", "3+2x", True, "terms in another order"),
    ("expression", "x^2-1", "(x-1)(x+1)", True, "the factored form"),
    ("expression", "x^2+1", "x^2-1", False, "a different constant term"),
    ("expression", "\\frac{1}{x}", "x^{-1}", True, "a negative exponent"),
    ("expression", "3x-2", "3x+2", False, "the sign of the constant"),
    ("expression", "a^2b", "b a^2", True, "factors in another order"),
    ("expression", "y=2x+1", "y = 1 + 2x", True, "the same line, terms reordered"),
    ("expression", "y=2x+1", "y=2x-1", False, "a different intercept"),
    ("expression", "5", "x=5", True, "the value assigned to the unknown"),
    # -- sets, intervals, tuples
    ("set", "\\{1,2,3\\}", "\\{3,2,1\\}", True, "a set has no order"),
    ("set", "\\{1,2,3\\}", "\\{1,2\\}", False, "an element missing"),
    ("tuple", "(1,2)", "(2,1)", False, "an ordered pair in the wrong order"),
    ("tuple", "(2,-1)", "(2, -1)", True, "a space after the comma"),
    ("tuple", "(3,4)", "\\left(3, 4\\right)", True, "\\left/\\right delimiters"),
    ("interval", "[0,1)", "[0,1]", False, "a closed end instead of an open one"),
    ("interval", "(-\\infty, 3)", "(-\\infty,3)", True, "a space after the comma"),
    ("interval", "[2,5]", "[2,5)", False, "an open end instead of a closed one"),
    ("interval", "(0,\\infty)", "(0, \\infty)", True, "a space after the comma"),
    ("interval", "(-\\infty,-1)\\cup(2,\\infty)", "(-\\infty,-1) \\cup (2,\\infty)", True, "spaces in a union"),
    ("interval", "(-\\infty,-1)\\cup(2,\\infty)", "(-\\infty,-1)", False, "one part of the union missing"),
    # -- several values
    ("multi", "2, -3", "x=2 \\text{ or } x=-3", True, "both roots, joined by 'or'"),
    ("multi", "2, -3", "-3, 2", True, "a list of roots has no order"),
    ("multi", "2, -3", "2", False, "one of two roots"),
    ("multi", "-1, \\frac{15}{8}", "p = -1 \\text{ and } p = \\dfrac{15}{8}", True, "both values, joined by 'and'"),
    ("multi", "(2,2),(6,2)", "(2, 2), (6, 2)", True, "both pairs"),
    ("multi", "(2,2),(6,2)", "(6,2)", False, "one of two pairs"),
    ("multi", "3, 5", "3 \\text{ and } 5", True, "both values, joined by 'and'"),
    ("multi", "1, 2, 3", "1, 2", False, "a value missing"),
    # -- text and choices
    ("text", "\\text{(B)}", "B", True, "the same choice letter"),
    ("text", "(C)", "\\text{C}", True, "the same choice letter"),
    ("text", "(C)", "(D)", False, "a different choice"),
    ("text", "\\text{Monday}", "Monday", True, "the same word"),
    ("text", "\\text{Monday}", "Tuesday", False, "a different word"),
    ("text", "\\text{odd}", "\\text{even}", False, "the opposite word"),
    ("text", "\\text{yes}", "Yes", True, "case does not matter"),
    # -- matrices and vectors
    (
        "matrix",
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
        True,
        "spaces around the row break",
    ),
    (
        "matrix",
        "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
        "\\begin{pmatrix}2\\\\1\\end{pmatrix}",
        False,
        "entries swapped",
    ),
    (
        "matrix",
        "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}",
        "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
        True,
        "spaces around the cells",
    ),
    (
        "matrix",
        "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
        "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}",
        False,
        "the transpose",
    ),
    (
        "matrix",
        "\\begin{pmatrix}-1\\\\3\\end{pmatrix}",
        "\\begin{pmatrix} -1 \\\\ 3 \\end{pmatrix}",
        True,
        "spaces around the row break",
    ),
    (
        "matrix",
        "\\begin{pmatrix}-1\\\\3\\end{pmatrix}",
        "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}",
        False,
        "a sign in one entry",
    ),
    # -- units and percent
    ("unit", "28\\%", "28 pct", True, "'pct' is the percent sign"),
    ("unit", "28\\%", "28 percentage", True, "'percentage' is the percent sign"),
    ("unit", "28\\%", "28", True, "the number before % (the convention above)"),
    ("unit", "50", "50\\%", True, "the number before % (the convention above)"),
    ("unit", "28\\%", "27\\%", False, "a different percentage"),
    ("unit", "15", "15 \\text{ meters}", True, "a unit after the number"),
    ("unit", "15", "15\\text{ m}^2", True, "a squared unit after the number"),
    ("unit", "6", "6 \\text{ inches}", True, "a unit after the number"),
    ("unit", "5", "5 \\text{ hours}", True, "a unit after the number"),
    ("unit", "90", "90^{\\circ}", True, "a degree sign"),
    ("unit", "90", "45^\\circ", False, "a different angle"),
    ("unit", "36", "36 \\text{ square units}", True, "an area unit after the number"),
    ("unit", "36", "6 \\text{ units}", False, "a different number with a unit"),
    # -- harder notations
    ("hard", "\\frac{7}{2}", "3\\frac{1}{2}", True, "a mixed number: 3 and a half"),
    ("hard", "\\frac{7}{2}", "3\\frac{1}{3}", False, "a different mixed number"),
    ("hard", "(-\\infty, 3]", "x \\le 3", True, "the inequality describes the same interval"),
    ("hard", "\\frac{1}{3}", "0.333", False, "a truncated decimal is not the exact value"),
    ("hard", "\\frac{\\sqrt{6}}{3}", "\\sqrt{\\frac{2}{3}}", True, "the same positive number"),
    ("hard", "1024", "2^{10}", True, "2^10 evaluates to 1024"),
    ("hard", "\\infty", "\\infty", True, "the same symbol"),
    ("hard", "\\emptyset", "\\varnothing", True, "two symbols for the empty set"),
    ("hard", "\\frac{1}{4}", "25\\%", False, "the percent convention: 25% is the number 25"),
    ("hard", "10", "\\sqrt{100}", True, "the square root evaluates to 10"),
    ("hard", "-2", "\\sqrt{4}", False, "the principal root is +2"),
]

_REASONING = (
    "Let us set up the problem. We write the condition as an equation and simplify both "
    "sides; the cases with a zero denominator are excluded. Checking the small cases by "
    "hand, the pattern holds for n = 1, 2 and 3, and the general step follows by induction. "
)
_TAIL = (
    "\n\nLet me double-check this. Substituting back, the left side is 3 + 4 = 7 and the "
    "right side is 14 / 2 = 7, so the two sides agree. Another sanity check with n = 10 "
    "gives 55 on both sides. Everything is consistent, and no case was left out; the bound "
    "from the second step (at most 12 terms) is respected as well. "
) * 3
_OTHER = "999"  # an intermediate result that is not any gold of the corpus


def _intermediate(gold: str, label: bool) -> str:
    # A wrong final answer gets the *gold* as its intermediate box: a scorer that takes an
    # earlier box would then call it right. A right one gets a wrong intermediate value.
    return _OTHER if label else gold


FORMATS = {
    "boxed": (
        "the last \\boxed{} holds the answer",
        lambda a, g, lab: f"{_REASONING}Therefore the answer is $\\boxed{{{a}}}$.",
    ),
    "display_box": (
        "a display-math box on its own lines",
        lambda a, g, lab: f"{_REASONING}\n\nThe final answer is:\n\\[\n\\boxed{{{a}}}\n\\]",
    ),
    "dapo": ("DAPO's last-line 'Answer: ...'", lambda a, g, lab: f"{_REASONING}\n\nAnswer: {a}"),
    "minerva": (
        "Minerva's 'Final Answer: The final answer is ... I hope it is correct.'",
        lambda a, g, lab: f"{_REASONING}\n\nFinal Answer: The final answer is ${a}$. I hope it is correct.",
    ),
    "minerva_inline": (
        "Minerva's sentence inside the last line of reasoning",
        lambda a, g, lab: f"{_REASONING}So we are done. Final Answer: The final answer is ${a}$. I hope it is correct.",
    ),
    "bold": ("a markdown '**Answer:**' line", lambda a, g, lab: f"{_REASONING}\n\n**Answer:** ${a}$"),
    "intermediate_box": (
        "an earlier box is an intermediate result; the last box is the answer",
        lambda a, g, lab: (
            f"{_REASONING}The first case gives $\\boxed{{{_intermediate(g, lab)}}}$, "
            f"but that case is excluded. The remaining case gives "
            f"$\\boxed{{{a}}}$."
        ),
    ),
    "long_tail": (
        "the box, then a long check with other numbers and no marker",
        lambda a, g, lab: f"{_REASONING}So the answer is $\\boxed{{{a}}}$.{_TAIL}",
    ),
    "changed_mind": (
        "an 'Answer:' inside a line that a later 'Answer:' on the same line overrides",
        lambda a, g, lab: (
            f"{_REASONING}\n\nAnswer: ${_intermediate(g, lab)}$ ... Wait, let me "
            f"reconsider the excluded case. Answer: {a}"
        ),
    ),
}

# Several boxes together are one multi-valued answer (written for the multi-valued pairs).
_MULTI_BOXES: list[tuple[str, str, bool, str]] = [
    ("2, -3", "$x = \\boxed{2}$ or $x = \\boxed{-3}$", True, "both roots, each in its own box"),
    ("2, -3", "$\\boxed{-3}, \\boxed{2}$", True, "both roots in adjacent boxes, any order"),
    (
        "(2,2),(6,2)",
        "$\\boxed{(2, 2)} \\quad\\text{and}\\quad \\boxed{(6, 2)}$",
        True,
        "both pairs in adjacent boxes joined by 'and'",
    ),
    ("3, 5", "\\[\\boxed{3}, \\boxed{5}\\]", True, "both values in adjacent boxes"),
    (
        "2, -3",
        "$\\boxed{2}$. Let me see whether the other root works: it does not, so only $\\boxed{2}$",
        False,
        "only one root; the first box is an intermediate result",
    ),
    ("1, 2, 3", "$\\boxed{1}, \\boxed{2}$", False, "a value missing"),
]

# Golds stored with several boxes: the answer must give every value.
_MULTI_GOLDS: list[tuple[str, str, bool, str]] = [
    ("$\\boxed{1}\\boxed{2}$", "\\boxed{2}", False, "one of the gold's two values"),
    ("$\\boxed{1}\\boxed{2}$", "\\boxed{1, 2}", True, "both of the gold's values"),
    ("$\\boxed{4}$ and $\\boxed{9}$", "\\boxed{9}", False, "one of the gold's two values"),
    ("$\\boxed{4}$ and $\\boxed{9}$", "\\boxed{4}, \\boxed{9}", True, "both values, in adjacent boxes"),
]


def corpus() -> list[Item]:
    """Every pair in every format, then the multi-box items."""
    items: list[Item] = []
    for i, (cat, gold, ans, label, why) in enumerate(PAIRS):
        for fmt, (how, make) in FORMATS.items():
            items.append(Item(f"{cat}-{i:03d}-{fmt}", fmt, make(ans, gold, label), gold, label, f"{why}; {how}"))
    for i, (gold, tail, label, why) in enumerate(_MULTI_BOXES):
        items.append(
            Item(f"multi_box-{i:03d}", "multi_box", f"{_REASONING}The solutions are {tail}.", gold, label, why)
        )
    for i, (gold, tail, label, why) in enumerate(_MULTI_GOLDS):
        items.append(
            Item(f"multi_gold-{i:03d}", "multi_gold", f"{_REASONING}So the answer is {tail}.", gold, label, why)
        )
    return items


def category(item: Item) -> str:
    return item.id.split("-", 1)[0]
