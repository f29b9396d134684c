"""compute_score: veRL's custom_reward_function contract."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from entropy_rl import reward
from entropy_rl.answers import warm_up
from entropy_rl.reward import compute_score, gold_answers


@pytest.fixture(scope="module", autouse=True)
def _shared_worker():
    warm_up()
    yield


def _call(solution, gt, **kw):
    # veRL passes everything by keyword
    return compute_score(data_source="math_dapo", solution_str=solution, ground_truth=gt, extra_info={}, **kw)


def test_dict_contract():
    out = _call("reasoning... so $\\boxed{\\frac{1}{2}}$.", "0.5")
    assert set(out) >= {"score", "acc", "pred", "verify_timeouts"}
    assert out == {"score": 1.0, "acc": True, "pred": "\\frac{1}{2}", "verify_timeouts": 0}
    assert isinstance(out["score"], float)

    wrong = _call("\\boxed{3}", "4")
    assert wrong == {"score": 0.0, "acc": False, "pred": "3", "verify_timeouts": 0}
    assert isinstance(wrong["score"], float)


def test_same_keys_for_every_sample():
    """veRL stacks reward_extra_info per key: every sample must return the same keys."""
    outs = [_call(s, "2") for s in ["\\boxed{2}", "\\boxed{5}", "no answer", "", None]]
    assert len({tuple(sorted(o)) for o in outs}) == 1
    assert [o["score"] for o in outs] == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert outs[2]["pred"] == "" and outs[4]["pred"] == ""


def test_answer_line_fallback():
    assert _call("We compute.\nAnswer: 42", "42")["score"] == 1.0


def test_multi_box_gold_needs_every_value():
    gold = r"$\boxed{1}\boxed{2}$"
    assert _call(r"\boxed{2}", gold)["score"] == 0.0
    assert _call(r"\boxed{1}", gold)["score"] == 0.0
    assert _call(r"so \boxed{1}\boxed{2}", gold)["score"] == 1.0
    assert _call(r"so \boxed{2}, \boxed{1}", gold)["score"] == 1.0  # a list of values: unordered
    assert _call(r"\boxed{1, 2}", gold)["score"] == 1.0
    assert gold_answers(gold) == ["1, 2"]
    # boxes apart in a worked gold solution are still one answer
    assert gold_answers(r"For (a) \boxed{3}; for (b) we get \boxed{5}.") == ["3, 5"]


def test_adjacent_boxes_in_prediction():
    pred = r"The solutions are \boxed{(2, 2)} \quad\text{and}\quad \boxed{(6, 2)}."
    assert _call(pred, "(2,2),(6,2)")["score"] == 1.0
    # an intermediate box earlier in the text is not part of the answer
    assert _call(r"First \boxed{(2, 2)}. Checking again, only \boxed{(6, 2)}", "(2,2),(6,2)")["score"] == 0.0


@pytest.mark.parametrize(
    ("solution", "gold", "expected"),
    [
        ("Answer: $42$ ... Wait, let me reconsider. Answer: 41", "41", 1.0),
        ("Answer: $42$ ... Wait, let me reconsider. Answer: 41", "42", 0.0),
        ("\\boxed{12}\nHmm, that double counts.\nAnswer: 6", "6", 1.0),
        ("Thus v = 7.78. Final Answer: The final answer is 7.78. I hope it is correct.", "7.78", 1.0),
        (r"\boxed{32, 349}", "32349", 0.0),
        (r"\boxed{32,349}", "32349", 1.0),
        (r"\boxed{x=2 \text{ or } x=-3}", "2, -3", 1.0),
        (r"\boxed{p = -1 \text{ and } p = \dfrac{15}{8}}", r"-1, \frac{15}{8}", 1.0),
        (r"\boxed{8\pi \text{ cm}^2}", r"8\pi", 1.0),
        (r"\boxed{28 \text{ pct}}", r"28\%", 1.0),
        (r"\boxed{28 percentage}", r"28\%", 1.0),
        (r"$\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}$", r"\begin{pmatrix}1\\2\end{pmatrix}", 1.0),
    ],
)
def test_issue_regressions(solution, gold, expected):
    assert _call(solution, gold)["score"] == expected


def test_last_box_counts():
    assert _call("\\boxed{1} hmm no, \\boxed{2}", "2")["score"] == 1.0
    assert _call("\\boxed{2} hmm no, \\boxed{1}", "2")["score"] == 0.0


@pytest.mark.parametrize(
    ("gt", "expected"),
    [
        (["7", "seven"], 1.0),
        (("3", "7"), 1.0),
        (["3", "4"], 0.0),
        (np.array(["8", "7"], dtype=object), 1.0),
        ([], 0.0),
        (7, 1.0),
        (7.0, 1.0),
        (np.int64(7), 1.0),
        (6, 0.0),
        ("\\boxed{7}", 1.0),
        ("The answer is $\\boxed{\\dfrac{14}{2}}$", 1.0),
        ([["7"]], 1.0),
        (None, 0.0),
    ],
)
def test_ground_truth_forms(gt, expected):
    assert _call("so \\boxed{7}", gt)["score"] == expected


def test_float_ground_truth():
    assert _call("\\boxed{\\frac{1}{4}}", 0.25)["score"] == 1.0
    assert _call("\\boxed{0.3}", 0.25)["score"] == 0.0


def test_gold_answers():
    assert gold_answers("\\boxed{\\frac{1}{2}}") == ["\\frac{1}{2}"]
    assert gold_answers([" 1 ", "", None, 2]) == ["1", "2"]
    assert gold_answers(np.array([3])) == ["3"]
    assert gold_answers(2.5) == ["2.5"]


def test_extra_kwargs_and_timeout_are_accepted():
    out = compute_score(
        data_source="x",
        solution_str="\\boxed{\\sqrt{8}}",
        ground_truth="2\\sqrt{2}",
        extra_info=None,
        reward_router_address=None,
        timeout=1.0,
    )
    assert out["score"] == 1.0


def test_hostile_solution_is_bounded(tmp_path):
    marker = tmp_path / "pwned"
    cases = [
        "\\boxed{3^{3^{3^{3^3}}}}",
        "\\boxed{__import__('os').system('touch " + str(marker) + "')}",
        "\\boxed{" * 100_000,
        "z" * 10_000_000 + "\\boxed{1}",
    ]
    for text in cases:
        warm_up()
        t0 = time.perf_counter()
        out = _call(text, "5")
        assert out["score"] == 0.0
        assert time.perf_counter() - t0 < 2.5
    assert not marker.exists()


def test_loads_like_verl_custom_reward_function():
    """veRL loads `custom_reward_function.path` by file path and calls it by keyword."""
    import_utils = pytest.importorskip("verl.utils.import_utils")
    fn = import_utils.load_extern_object(module_path=str(Path(reward.__file__)), object_name="compute_score")
    merged = {"data_source": "aime", "solution_str": "\\boxed{033}", "ground_truth": "33", "extra_info": {}}
    out = fn(**merged)
    assert out["score"] == 1.0 and out["acc"] is True and out["pred"] == "033"


def test_scoring_pass_grades_answers_as_the_reward_does():
    """The scoring pass's pass rate and the training reward read golds with one parser
    (several boxes are one multi-valued gold) under the same bounded checks."""
    from entropy_rl.reward import compute_score
    from recipe.sent.scoring import score_group

    gold = r"$\boxed{1}\boxed{2}$"
    responses = [r"so \boxed{2}", r"so \boxed{1, 2}", r"so \boxed{2, 1}", "no answer"]
    rewards = [compute_score(solution_str=r, ground_truth=gold)["score"] for r in responses]
    assert rewards == [0.0, 1.0, 1.0, 0.0]
    assert score_group(responses, gold)["pass_rate"] == sum(rewards) / len(rewards)
    # a nested list of acceptable golds, as a parquet list column can give it
    gold = [["3", "4"]]
    responses = [r"\boxed{4}", r"\boxed{3}", r"\boxed{5}"]
    rewards = [compute_score(solution_str=r, ground_truth=gold)["score"] for r in responses]
    assert rewards == [1.0, 1.0, 0.0]
    assert score_group(responses, gold)["pass_rate"] == sum(rewards) / len(rewards)
