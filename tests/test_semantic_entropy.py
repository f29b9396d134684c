"""Semantic entropy: reference values, clustering by equivalence, transitivity, cost."""

from __future__ import annotations

import math

import pytest

from entropy_rl.semantic_entropy import cluster_answers, semantic_entropy


def test_known_values_count_based():
    assert semantic_entropy([0] * 8) == 0.0
    assert semantic_entropy([0, 0, 0, 0, 1, 1, 1, 1]) == pytest.approx(math.log(2))
    assert semantic_entropy(list(range(8))) == pytest.approx(math.log(8))
    # p = (1/2, 1/4, 1/4): 1.5 ln 2
    assert semantic_entropy([0, 0, 1, 2]) == pytest.approx(1.5 * math.log(2))


def test_known_values_likelihood_based():
    # equal likelihoods reduce to counts
    assert semantic_entropy([0, 0, 1, 1], [-3.0] * 4) == pytest.approx(math.log(2))
    # class 0 holds 3/4 of the probability mass though it has one sample of three
    lp = [math.log(3.0), 0.0, -math.inf]
    p = [0.75, 0.25]
    want = -sum(x * math.log(x) for x in p)
    assert semantic_entropy([0, 1, 1], lp) == pytest.approx(want)


def test_likelihood_based_is_stable_for_long_sequences():
    # log P ≈ −20000 would underflow exp(); log-sum-exp keeps it exact
    lp = [-20000.0, -20000.0, -20000.0 + math.log(2)]
    got = semantic_entropy([0, 1, 1], lp)
    p = [0.25, 0.75]
    assert got == pytest.approx(-sum(x * math.log(x) for x in p))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no samples"):
        semantic_entropy([])
    with pytest.raises(ValueError, match="2 log-probs for 3"):
        semantic_entropy([0, 1, 2], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"seq_logprobs\[1\]"):
        semantic_entropy([0, 1], [0.0, float("nan")])


def eq_numeric(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except ValueError:
        return False


def test_cluster_ids_in_first_appearance_order():
    ids = cluster_answers(["7", "3", "7", "x", "3"], equivalent=eq_numeric, normalize=str.strip)
    assert ids == [0, 1, 0, 2, 1]


def test_none_answers_are_singletons():
    ids = cluster_answers([None, "1", None, "1"], equivalent=eq_numeric, normalize=str.strip)
    assert ids == [0, 1, 2, 1]
    assert semantic_entropy(cluster_answers([None] * 4, eq_numeric, str.strip)) == pytest.approx(math.log(4))


def test_transitive_closure_of_non_transitive_equivalence():
    # a ~ b and b ~ c but not a ~ c: one class all the same
    pairs = {frozenset({"a", "b"}), frozenset({"b", "c"})}
    eq = lambda x, y: frozenset({x, y}) in pairs  # noqa: E731
    assert cluster_answers(["a", "c", "b"], equivalent=eq, normalize=lambda s: s) == [0, 0, 0]


def test_cost_grows_with_distinct_answers_not_m_squared():
    calls = []

    def eq(a, b):
        calls.append((a, b))
        return eq_numeric(a, b)

    answers = ["1", "2"] * 32  # M = 64, 2 distinct
    ids = cluster_answers(answers, equivalent=eq, normalize=str.strip)
    assert ids == [0, 1] * 32
    assert len(calls) == 1
    calls.clear()
    cluster_answers(["0.5"] * 10 + [".5"] * 10 + ["0.50"] * 10, equivalent=eq, normalize=str.strip)
    assert len(calls) <= 2, "pairs already in one class are not checked again"


def test_default_equivalence_is_mathematical():
    """The default path uses the bounded math checker of entropy_rl.answers."""
    ids = cluster_answers([r"\frac{1}{2}", "0.5", "1/2", "3", r"\dfrac12", None])
    assert ids[:3] == [0, 0, 0] and ids[4] == 0 and ids[3] == 1 and ids[5] == 2
    assert semantic_entropy(ids) == pytest.approx(-(4 / 6) * math.log(4 / 6) - 2 * (1 / 6) * math.log(1 / 6))


def test_number_grouping_gives_the_pairwise_classes():
    """The default clusterer groups plain numbers by exact value instead of checking every
    pair; its classes must equal those of the pairwise check on the same answers."""
    import random

    from entropy_rl.answers import is_equivalent, normalize_answer

    rng = random.Random(3)
    pool = [
        "3",
        "3.0",
        "03",
        "-3",
        "0.5",
        "\\frac{1}{2}",
        "1/2",
        "\\frac{2}{4}",
        "1/3",
        "0.333333",
        "0.3333333",
        "2",
        "2.000001",
        "2.0001",
        "7",
        "\\sqrt{4}",
        "x+1",
        "1+x",
        "\\frac{\\sqrt{3}}{2}",
        "0.866025",
        None,
        "1000",
        "1,000",
        "10^3",
        "12",
        "12.5",
        "25/2",
        "\\text{12}",
    ]
    for _ in range(4):
        answers = [rng.choice(pool) for _ in range(24)]
        fast = cluster_answers(answers)
        slow = cluster_answers(answers, equivalent=is_equivalent, normalize=normalize_answer)
        assert fast == slow, answers


def test_integer_answers_cluster_without_the_worker(monkeypatch):
    from entropy_rl import answers as answers_mod

    def boom(*a, **k):  # pragma: no cover - must not be called
        raise AssertionError("worker used")

    monkeypatch.setattr(answers_mod, "_get_pool", boom)
    ints = [str((i * 7919) % 1500) for i in range(2048)]
    ids = cluster_answers(ints)
    assert max(ids) + 1 == len(set(ints))
    assert all((ids[i] == ids[j]) == (ints[i] == ints[j]) for i in range(0, 2048, 97) for j in range(0, 2048, 89))
