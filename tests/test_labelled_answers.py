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


def test_fast_paths_agree_with_the_symbolic_path():
    """Every pair the exact fast path decides (equal normal forms, exact numbers) gets the
    same verdict from math-verify in the worker, and its normal form is what the full
    normaliser gives."""
    pairs = set()
    for it in ITEMS:
        pred = extract_answer(it.response)
        if pred is None:
            continue
        for g in gold_answers(it.gold):
            pairs.add((pred, g))
            pairs.add((g, g))
    decided = []
    for pred, gold in sorted(pairs):
        p, g = normalize_answer(pred), normalize_answer(gold)
        assert p == answers._normalize_slow(pred) and g == answers._normalize_slow(gold)
        v = answers._fast_verdict(p, g)
        if v is not None:
            decided.append(((p, g), v))
    assert len(decided) > 100  # the fast path decides most of the corpus
    codes = answers._get_pool().check([k for k, _ in decided], timeout=2.0)
    symbolic = [c == answers._TRUE for c in codes]
    mismatched = [(k, v) for (k, v), s in zip(decided, symbolic) if v != s]
    assert not mismatched
