"""Accuracy of the reward on the labelled corpus (``tests/data/labelled_answers.py``), and
the exact fast paths agreeing with the symbolic path on every item of it."""

from __future__ import annotations

import collections

import pytest

from entropy_rl import answers
from entropy_rl.answers import extract_answer, normalize_answer, warm_up
from entropy_rl.reward import compute_score, gold_answers
from tests.data.labelled_answers import FORMATS, PAIRS, corpus

ITEMS = corpus()


@pytest.fixture(scope="module", autouse=True)
def _shared_worker():
    warm_up()
    yield


def test_corpus_is_labelled_and_covers_every_format():
    assert len(ITEMS) >= 500
    assert len({it.id for it in ITEMS}) == len(ITEMS)
    assert all(it.reason.strip() for it in ITEMS)
    formats = collections.Counter(it.format for it in ITEMS)
    assert set(FORMATS) | {"multi_box", "multi_gold"} == set(formats)
    # both labels in every format, so a scorer that always says yes (or no) fails
    for fmt in formats:
        assert {it.label for it in ITEMS if it.format == fmt} == {True, False}, fmt
    assert len({(g, a) for _, g, a, _, _ in PAIRS}) == len(PAIRS)


def test_accuracy_and_no_false_positives():
    wrong = []
    false_pos = []
    for it in ITEMS:
        got = compute_score(solution_str=it.response, ground_truth=it.gold)["score"] == 1.0
        if got != it.label:
            wrong.append(it.id)
            if got:
                false_pos.append(it.id)
    assert not false_pos, false_pos
    assert 1 - len(wrong) / len(ITEMS) >= 0.98, wrong


# Pairs near the edges of the fast rules: thousands vs lists, empty intervals (math-verify
# calls every empty interval equal), radicals vs their decimals, words vs numbers.
EDGE_PAIRS = [
    ("1,2345", "\\{1,2345\\}"),
    ("(5,-2)", "(3,-1)"),
    ("(5,-2)", "(1,3)"),
    ("[2,2]", "(1,3)"),
    ("(2,2)", "(2,3)"),
    ("\\sqrt{2}", "1.414214"),
    ("\\sqrt{2}", "1.41"),
    ("monday", "2"),
    ("xy", "yx"),
    ("ii", "-1"),
    ("\\{1,1,2\\}", "\\{1,2\\}"),
    ("(1,2,3)", "(1,2,4)"),
    ("(1,2,3)", "(1,2,3)"),
    ("\\frac{\\sqrt{8}}{2}", "\\sqrt{2}"),
    ("2\\sqrt{50}", "10\\sqrt{2}"),
    ("e", "2.718282"),
    ("\\{3\\}", "3"),
    ("1,2", "(1,2)"),
    ("[1,2)", "(1,2)"),
    ("[1,2]", "[1,2)"),
    ("\\pi", "3.14159"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("2\\pi", "\\pi\\cdot2"),
    ("\\frac{3\\pi}{2}", "3\\pi/2"),
    ("\\sqrt{3}/2", "0.866025"),
    ("-\\sqrt{2}", "\\sqrt{2}"),
    ("\\sqrt{0}", "0"),
    ("abc", "cab"),
    ("pi", "\\pi"),
    ("none", "monday"),
    ("yes", "no"),
    ("even", "odd"),
    ("alice", "(1,2)"),
    ("tuesday", "\\{1,2\\}"),
    # polynomials in one letter, radicals with a fraction in front, words with inf / oo
    ("(x+7)^2", "x^2+14x+49"),
    ("(x-7)^2", "x^2+14x+49"),
    ("x^2+49", "x^2+14x+49"),
    ("x(x+1)", "x^2+x"),
    ("2(x+1)", "2x+2"),
    ("(x+1)(x-1)", "x^2-1"),
    ("-(x+1)", "-x-1"),
    ("x^2", "x\\cdotx"),
    ("x^2", "x*x"),
    ("\\frac{1}{2}x+1", "\\frac{x+2}{2}"),
    ("x^3-1", "(x-1)(x^2+x+1)"),
    ("2x^2", "(2x)^2"),
    ("-x^2", "(-x)^2"),
    ("x^2-2x+1", "(1-x)^2"),
    ("n^2+n", "n(n+1)"),
    ("x^{30}", "x^{30}+1"),
    ("3\\timesx", "3x"),
    ("t^2", "t\\cdott"),
    ("\\frac{1}{2}\\sqrt{2}", "\\frac{\\sqrt{2}}{2}"),
    ("\\frac{3}{4}\\sqrt{8}", "\\frac{3\\sqrt{2}}{2}"),
    ("tuesday", "infinitelymany"),
    ("bob", "infinitelymany"),
    ("itcannotbedeterminedfromtheinformationgiven", "10546"),
    ("itcannotbedeterminedfromtheinformationgiven", "\\{1,11,18\\}"),
    ("book", "(1,2)"),
    ("too", "3"),
    ("seetheexplanationabove", "x^2+4x+4"),
    ("alice", "(x+1)^2"),
    # answers math-verify can only read as text: a word followed by `?` or `=`
    ("x=", "25950"),
    ("x=", "alice"),
    ("x=", "infinitelymany"),
    ("x=", "\\{-8,-3,2\\}"),
    ("x=", "(0,5)"),
    ("asdfqwerty???", "\\frac{\\sqrt{2}}{2}"),
    ("asdfqwerty???", "alice"),
    ("asdfqwerty???", "asdfqwerty"),
    ("?", "3"),
    ("inf?", "\\infty"),
    ("and=", "1,2"),
    ("percent=", "50\\%"),
    ("x=", "x"),
    ("e=", "e"),
]
# two ends in every bracket pair, ends increasing, equal, decreasing, with radicals and pi:
# intervals, tuples, points and empty sets to math-verify, every pair compared
INTERVAL_FORMS = [
    f"{left}{a},{b}{right}"
    for a, b in [("3", "-3"), ("5", "5"), ("2", "7"), ("-4", "-9"), ("\\sqrt{2}", "1"), ("1", "\\pi"), ("2.0", "2")]
    for left, right in ["()", "[)", "(]", "[]"]
]
EDGE_PAIRS += [(a, b) for a in INTERVAL_FORMS for b in INTERVAL_FORMS]


def test_fast_paths_agree_with_the_symbolic_path():
    """Every pair the exact fast paths decide (equal normal forms, numbers, radicals and
    multiples of pi, sets, tuples, intervals, words) gets the same verdict from math-verify
    in the worker: on the labelled corpus, on bench_answers' realistic mix and on edge
    pairs. Normal forms equal the full normaliser's (the plain-number shortcut)."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
    import _answers_corpus

    pairs = set(EDGE_PAIRS)
    responses = [(it.response, it.gold) for it in ITEMS]
    for gold, rs in _answers_corpus.realistic(48, 16, seed=1000) + _answers_corpus.realistic(8, 16, seed=7):
        responses += [(r, gold) for r in rs]
    for response, gold in responses:
        pred = extract_answer(response)
        if pred is None:
            continue
        for g in gold_answers(gold):
            pairs.add((pred, g))
            pairs.add((g, g))
    decided = []
    for pred, gold in sorted(pairs):
        p, g = normalize_answer(pred), normalize_answer(gold)
        assert p == answers._normalize_slow(pred) and g == answers._normalize_slow(gold)
        v = answers._fast_verdict(p, g)
        if v is not None:
            decided.append(((p, g), v))
    assert len(decided) > 300  # the fast paths decide most pairs
    codes = answers._get_pool().check([k for k, _ in decided], timeout=2.0)
    symbolic = [c == answers._TRUE for c in codes]
    mismatched = [(k, v) for (k, v), s in zip(decided, symbolic) if v != s]
    assert not mismatched


@pytest.mark.parametrize(
    "pred,gold,verdict",
    [
        ("(x+7)^2", "x^2+14x+49", True),
        ("(x-7)^2", "x^2+14x+49", False),
        ("x^{2}+4x+4", "(x+2)^2", True),
        ("\\frac{1}{2}x+1", "\\frac{x+2}{2}", True),
        ("\\frac{1}{2}\\sqrt{8}", "\\frac{\\sqrt{8}}{2}", True),
        ("itcannotbedeterminedfromtheinformationgiven", "\\{1,11,18\\}", False),
        ("tuesday", "infinitelymany", False),
        ("seetheexplanationabove", "x^2+4x+4", False),
        # readings math-verify does not share with algebra, or that need it: left to the worker
        ("x", "x^1", None),
        ("x^{10}", "x^10", None),
        ("3x", "x3", None),
        ("y^2", "x^2", None),
        ("(x+1)2", "2x+2", None),
        ("x^2^3", "x^8", None),
        ("e^2", "e\\cdote", None),
        ("infinity", "\\infty", None),
        ("info", "5", None),
        ("(x+1)^{31}", "x", None),
        ("a^2+b", "(a+b)^2", None),
    ],
)
def test_polynomial_radical_and_word_fast_paths(pred, gold, verdict):
    """What the exact paths added for the realistic mix decide, and what they leave alone
    (their agreement with math-verify is the test above)."""
    p, g = normalize_answer(pred), normalize_answer(gold)
    assert answers._fast_verdict(p, g) is verdict
