"""Avg@k / Pass@k (entropy_rl.evaluation) and the eval entry point (recipe.sent.evaluate)."""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
from fractions import Fraction

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entropy_rl.evaluation import avg_at_k, format_table, mean_pass_at_k, parse_ks, pass_at_k, summarize

# --------------------------------------------------------------------------- pass@k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_subset_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_known_values():
    for n in (1, 5, 32):
        for k in range(1, n + 1):
            assert pass_at_k(n, 0, k) == 0.0
            assert pass_at_k(n, n, k) == 1.0
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
            assert pass_at_k(n, c, n) == (1.0 if c else 0.0)
    assert pass_at_k(8, 3, 4) == pytest.approx(1 - 5 / 70, abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # C(1000, 500) ~ 1e299: the naive float ratio overflows; the product form does not
    for n, c, k in [(1000, 1, 500), (1000, 3, 10), (1000, 500, 400), (1024, 1, 1)]:
        got = pass_at_k(n, c, k)
        assert 0.0 <= got <= 1.0
        assert got == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "n,c,k",
    [(4, 1, 5), (4, 1, 0), (4, 1, -1), (4, 5, 1), (4, -1, 1), (0, 0, 1)],
)
def test_pass_at_k_rejects_bad_values(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize("n,c,k", [(4.0, 1, 1), (4, 1.5, 1), (4, 1, True), ("4", 1, 1)])
def test_pass_at_k_rejects_non_integers(n, c, k):
    with pytest.raises(TypeError):
        pass_at_k(n, c, k)


def test_pass_at_k_accepts_numpy_ints():
    np = pytest.importorskip("numpy")
    assert pass_at_k(np.int64(8), np.int32(3), np.int64(4)) == pytest.approx(1 - 5 / 70)


# --------------------------------------------------------------------------- avg@k


MATRIX = [
    [1, 0, 1, 1],
    [0, 0, 0, 1],
    [True, True, True, True],
]


def test_avg_at_k_is_the_mean_over_all_samples():
    # problem accuracies over all 4 samples: 3/4, 1/4, 4/4, whatever k is
    for k in (1, 2, 4):
        assert avg_at_k(MATRIX, k) == pytest.approx((0.75 + 0.25 + 1.0) / 3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=1, max_size=40), min_size=1, max_size=12), st.data())
def test_avg_at_1_equals_pass_at_1_for_any_n(matrix, data):
    """The same run must not report two different single-sample accuracies: avg@k from all n
    samples (any n >= k, rows of different n included) equals the unbiased pass@1."""
    k = data.draw(st.integers(1, min(len(r) for r in matrix)))
    assert avg_at_k(matrix, 1) == pytest.approx(mean_pass_at_k(matrix, 1), abs=1e-12)
    assert avg_at_k(matrix, k) == pytest.approx(mean_pass_at_k(matrix, 1), abs=1e-12)
    s = summarize({"b": matrix}, [1, k])
    assert s["benchmarks"]["b"]["avg@1"] == pytest.approx(s["benchmarks"]["b"]["pass@1"], abs=1e-12)


def test_avg_at_1_uses_every_sample_not_the_first():
    # 32 samples, 3 correct, none of them first: the first-sample rule would say 0
    rows = [[0] * 29 + [1, 1, 1], [0] * 32]
    assert avg_at_k(rows, 1) == pytest.approx(3 / 64)
    assert avg_at_k(rows, 1) == pytest.approx(mean_pass_at_k(rows, 1))


def test_mean_pass_at_k_over_problems():
    # all n samples feed the estimator: n=4, c = 3, 1, 4
    for k in (1, 2, 3, 4):
        want = (exact_pass_at_k(4, 3, k) + exact_pass_at_k(4, 1, k) + exact_pass_at_k(4, 4, k)) / 3
        assert mean_pass_at_k(MATRIX, k) == pytest.approx(float(want), abs=1e-12)
    # pass@1 equals per-sample accuracy over all samples, avg@n likewise
    assert mean_pass_at_k(MATRIX, 1) == pytest.approx(avg_at_k(MATRIX, 4))


def test_avg_and_pass_validate():
    with pytest.raises(ValueError, match="fewer than k=5"):
        avg_at_k(MATRIX, 5)
    with pytest.raises(ValueError, match="fewer than k=5"):
        mean_pass_at_k(MATRIX, 5)
    with pytest.raises(ValueError, match="problem 1, sample 2"):
        avg_at_k([[1, 0], [1, 0, 2]], 2)
    with pytest.raises(ValueError, match="no problems"):
        avg_at_k([], 1)
    with pytest.raises(ValueError):
        avg_at_k(MATRIX, 0)


def test_parse_ks():
    assert parse_ks("32, 8,16,8") == [8, 16, 32]
    assert parse_ks([16, 8]) == [8, 16]
    assert parse_ks(4) == [4]
    for bad in ("", "8,x", "0,8", [-1]):
        with pytest.raises(ValueError):
            parse_ks(bad)


# --------------------------------------------------------------------------- summarize / table


def test_summarize_per_benchmark_mean_and_headline():
    results = {
        "aime24": [[1, 0, 0, 0], [0, 0, 0, 0]],  # 2 problems
        "math500": [[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]],  # 4 problems
    }
    s = summarize(results, "4,2")
    assert s["ks"] == [2, 4]
    a, m = s["benchmarks"]["aime24"], s["benchmarks"]["math500"]
    assert a["n_problems"] == 2 and m["n_problems"] == 4 and a["n_samples"] == 4
    assert a["avg@2"] == a["avg@4"] == pytest.approx((0.25 + 0.0) / 2)  # all 4 samples, for every k
    assert m["avg@2"] == pytest.approx((1 + 0.5 + 0.25 + 0.5) / 4)
    assert a["pass@2"] == pytest.approx(float(exact_pass_at_k(4, 1, 2)) / 2)
    want_m_pass2 = (1 + exact_pass_at_k(4, 2, 2) + exact_pass_at_k(4, 1, 2) + exact_pass_at_k(4, 2, 2)) / 4
    assert m["pass@2"] == pytest.approx(float(want_m_pass2))
    assert a["pass@4"] == pytest.approx(0.5) and m["pass@4"] == pytest.approx(1.0)
    # the mean is over benchmarks (unweighted), not over problems
    mean = s["mean"]
    assert mean["n_benchmarks"] == 2 and mean["n_problems"] == 6
    for key in ("avg@2", "avg@4", "pass@2", "pass@4"):
        assert mean[key] == pytest.approx((a[key] + m[key]) / 2)
    assert mean["pass@4"] == pytest.approx(0.75)  # per-problem mean would be 5/6
    assert s["headline"]["avg@k"] == pytest.approx((mean["avg@2"] + mean["avg@4"]) / 2)
    assert s["headline"]["pass@k"] == pytest.approx((mean["pass@2"] + mean["pass@4"]) / 2)
    json.dumps(s, allow_nan=False)


def test_summarize_validates():
    with pytest.raises(ValueError, match="'b'.*problem 1 has 2 samples"):
        summarize({"a": [[1, 0, 1]], "b": [[1, 1, 1], [0, 1]]}, [3])
    with pytest.raises(ValueError, match="no benchmarks"):
        summarize({}, [1])
    with pytest.raises(ValueError, match="'a' has no problems"):
        summarize({"a": []}, [1])


def test_format_table():
    s = summarize({"aime24": [[1, 0, 0, 0], [0, 0, 0, 0]], "math500": [[1, 1, 1, 1]]}, [2, 4])
    t = format_table(s)
    lines = t.splitlines()
    assert lines[0].split() == ["benchmark", "n", "avg@2", "avg@4", "pass@2", "pass@4"]
    row = {ln.split()[0]: ln.split() for ln in lines[2:] if ln.split() and ln.split()[0] in ("aime24", "math500")}
    assert row["aime24"][1:] == ["2", "12.50", "12.50", "25.00", "50.00"]
    assert row["math500"][1:] == ["1", "100.00", "100.00", "100.00", "100.00"]
    mean_line = next(ln for ln in lines if ln.startswith("mean (2 benchmarks)"))
    assert mean_line.split()[-4:] == ["56.25", "56.25", "62.50", "75.00"]
    assert "headline" in lines[-1] and "Avg@k 56.25" in lines[-1] and "Pass@k 68.75" in lines[-1]
    assert len({len(ln) for ln in lines[:-1] if not set(ln) <= {"-"}}) == 1  # aligned


# --------------------------------------------------------------------------- end to end


from recipe.sent import evaluate as ev  # noqa: E402

GOLDS = [("aime24", "1"), ("aime24", "2"), ("aime24", "0.5"), ("math500", "3"), ("math500", "\\frac{1}{2}")]


def _rows():
    return [
        {
            "data_source": ds,
            "prompt": [{"role": "user", "content": f"Solve : {i} + 1 = x What is x ?"}],
            "ability": "math",
            "reward_model": {"ground_truth": g, "style": "rule"},
            "extra_info": {"index": 100 + i, "split": "test"},
        }
        for i, (ds, g) in enumerate(GOLDS)
    ]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.tiny import make_model, make_tokenizer

    path = tmp_path_factory.mktemp("tiny") / "model"
    make_model(make_tokenizer(), path=str(path))
    return str(path)


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "test.parquet"
    pd.DataFrame(_rows()).to_parquet(path)
    return str(path)


def _argv(model, data, out, *extra):
    return ["--model", model, "--data", data, "--out", str(out), "--backend", "hf", *extra]


def test_end_to_end_hf_backend(tiny_model, data_file, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    n = 8
    doc = ev.main(
        _argv(
            tiny_model,
            data_file,
            out,
            "--n",
            str(n),
            "--k",
            "8,2,4",
            "--max-new-tokens",
            "10",
            "--seed",
            "3",
            "--batch-size",
            "16",
        )
    )
    printed = capsys.readouterr()
    assert str(out) in printed.out and "aime24" in printed.out and "mean (2 benchmarks)" in printed.out
    assert "[eval] 5/5" in printed.err and "ETA" in printed.err
    assert os.listdir(out.parent) == ["results.json"]  # atomic write leaves no temp file

    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert set(on_disk) == {"config", "summary", "problems"}
    cfg = on_disk["config"]
    assert cfg["n"] == n and cfg["ks"] == [2, 4, 8] and cfg["backend"] == "hf" and cfg["seed"] == 3
    summary = on_disk["summary"]
    assert summary["ks"] == [2, 4, 8] and list(summary["benchmarks"]) == ["aime24", "math500"]

    probs = on_disk["problems"]
    assert [(p["data_source"], p["index"], p["gold"]) for p in probs] == [
        (ds, 100 + i, g) for i, (ds, g) in enumerate(GOLDS)
    ]
    for p in probs:
        assert set(p) == {"index", "data_source", "gold", "preds", "correct"}
        assert len(p["preds"]) == len(p["correct"]) == n
        assert all(isinstance(c, bool) for c in p["correct"])
        assert all(p["preds"][j] for j in range(n) if p["correct"][j])  # correct ⇒ an answer was extracted
    # the random tiny model emits \boxed{...} tokens: some answers are extracted, some are right
    assert sum(bool(x) for p in probs for x in p["preds"]) > 0
    assert sum(c for p in probs for c in p["correct"]) > 0
    assert max(len(set(p["preds"])) for p in probs) > 1  # sampled, not greedy

    # the summary equals Avg@k / Pass@k recomputed independently from the per-problem records
    for ds, b in summary["benchmarks"].items():
        rows = [p["correct"] for p in probs if p["data_source"] == ds]
        assert b["n_problems"] == len(rows)
        for k in (2, 4, 8):
            want_pass = sum(exact_pass_at_k(n, sum(r), k) for r in rows) / len(rows)
            want_avg = sum(Fraction(sum(r), len(r)) for r in rows) / len(rows)
            assert b[f"pass@{k}"] == pytest.approx(float(want_pass), abs=1e-12)
            assert b[f"avg@{k}"] == pytest.approx(float(want_avg), abs=1e-12)
    for k in (2, 4, 8):
        bs = summary["benchmarks"].values()
        assert summary["mean"][f"pass@{k}"] == pytest.approx(sum(b[f"pass@{k}"] for b in bs) / 2)

    # same seed → same samples; --limit keeps the first N problems of each benchmark
    out2 = tmp_path / "again.json"
    doc2 = ev.main(
        _argv(
            tiny_model,
            data_file,
            out2,
            "--n",
            str(n),
            "--k",
            "2,4,8",
            "--max-new-tokens",
            "10",
            "--seed",
            "3",
            "--batch-size",
            "16",
            "--limit",
            "1",
        )
    )
    assert [p["index"] for p in doc2["problems"]] == [100, 103]
    assert doc2["problems"][0]["preds"] == probs[0]["preds"]


def test_hf_generator_chunks_and_greedy(tiny_model):
    # n > batch_size: one prompt's samples come from several generate calls
    sampling = ev.SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=4, seed=0)
    gen = ev.HFGenerator(tiny_model, sampling, batch_size=3, device="cpu")
    prompts = ["What is 1 + 1 ?", "Solve : x = 2"]
    out = gen.generate(prompts, 5)
    assert [len(g) for g in out] == [5, 5] and all(isinstance(t, str) for g in out for t in g)
    assert len(gen.generate(prompts + ["so"], 1)) == 3  # several prompts per call
    greedy = ev.HFGenerator(tiny_model, ev.SamplingConfig(0.0, 1.0, 4, 0), batch_size=8, device="cpu")
    g = greedy.generate(prompts, 4)
    assert [len(x) for x in g] == [4, 4] and all(len(set(x)) == 1 for x in g)


class FakeGenerator:
    """Canned responses: checks the wiring (order, scoring, aggregation) exactly."""

    def __init__(self, tokenizer, responses):
        self.tokenizer, self.responses, self.calls = tokenizer, responses, []

    def generate(self, prompts, n):
        self.calls.append((list(prompts), n))
        return [list(self.responses[p]) for p in prompts]


def test_scoring_and_aggregation_with_canned_responses(tmp_path, capsys):
    from tests.tiny import make_tokenizer

    rows = _rows()[:2] + _rows()[3:4]  # aime24 gold 1, aime24 gold 2, math500 gold 3
    data = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(data)
    tok = make_tokenizer()
    texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    responses = {
        texts[0]: ["so \\boxed{1}"] * 3 + ["\\boxed{2}"] * 5,  # c = 3
        texts[1]: ["Answer: 2", "\\boxed{2.0}"] + ["nothing"] * 6,  # c = 2
        texts[2]: ["\\boxed{3}"] * 8,  # c = 8
    }
    fake = FakeGenerator(tok, responses)
    doc = ev.main(
        [
            "--model",
            "unused",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "r.json"),
            "--n",
            "8",
            "--k",
            "1,4,8",
            "--batch-size",
            "16",
        ],
        generator_factory=lambda args, sampling: fake,
    )
    assert [p for call in fake.calls for p in call[0]] == texts and {c[1] for c in fake.calls} == {8}
    assert len(fake.calls) == 2  # 16 sequences per call / n=8 → 2 prompts per call
    p = doc["problems"]
    assert p[0]["correct"] == [True] * 3 + [False] * 5 and p[0]["preds"][3] == "2"
    assert p[1]["correct"] == [True, True] + [False] * 6 and p[1]["preds"][2] == ""
    a = doc["summary"]["benchmarks"]["aime24"]
    assert a["pass@4"] == pytest.approx(((1 - 5 / 70) + (1 - 15 / 70)) / 2)
    assert a["avg@1"] == a["avg@4"] == pytest.approx((3 / 8 + 2 / 8) / 2)
    assert a["avg@1"] == pytest.approx(a["pass@1"], abs=1e-12)
    assert a["pass@8"] == 1.0 and a["pass@1"] == pytest.approx((3 / 8 + 2 / 8) / 2)
    assert doc["summary"]["benchmarks"]["math500"]["avg@8"] == 1.0


# --------------------------------------------------------------------------- input errors


def _expect_error(argv, *fragments, capsys):
    with pytest.raises(ev.EvalInputError) as ei:
        ev.main(argv)
    for f in fragments:
        assert f in str(ei.value), (f, str(ei.value))
    assert ev.cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragments[0] in err


def test_missing_column_error(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    pd.DataFrame(_rows()).drop(columns=["reward_model"]).to_parquet(bad)
    _expect_error(
        _argv("unused", str(bad), tmp_path / "o.json", "--n", "8", "--k", "8"),
        str(bad),
        "missing column",
        "reward_model",
        capsys=capsys,
    )
    assert not (tmp_path / "o.json").exists()


def test_empty_prompt_and_gold_errors(tmp_path, capsys):
    rows = _rows()
    rows[2]["prompt"] = [{"role": "user", "content": "   "}]
    bad = tmp_path / "bad.parquet"
    pd.DataFrame(rows).to_parquet(bad)
    _expect_error(
        _argv("unused", str(bad), tmp_path / "o.json", "--n", "8", "--k", "8"),
        str(bad),
        "row 2",
        "prompt[0].content",
        capsys=capsys,
    )

    rows = _rows()
    rows[1]["prompt"] = []
    pd.DataFrame(rows).to_parquet(bad)
    _expect_error(
        _argv("unused", str(bad), tmp_path / "o.json", "--n", "8", "--k", "8"), "row 1", "'prompt'", capsys=capsys
    )

    rows = _rows()
    rows[4]["reward_model"] = {"ground_truth": "", "style": "rule"}
    pd.DataFrame(rows).to_parquet(bad)
    _expect_error(
        _argv("unused", str(bad), tmp_path / "o.json", "--n", "8", "--k", "8"), "row 4", "ground_truth", capsys=capsys
    )


def test_argument_errors(tmp_path, data_file, capsys):
    missing = tmp_path / "nope.parquet"
    _expect_error(
        _argv("unused", f"{data_file},{missing}", tmp_path / "o.json", "--n", "8", "--k", "8"),
        str(missing),
        "no such file",
        capsys=capsys,
    )
    _expect_error(
        _argv("unused", data_file, tmp_path / "o.json", "--n", "16", "--k", "8,32"), "--n 16", "max k", capsys=capsys
    )
    _expect_error(_argv("unused", data_file, tmp_path / "o.json", "--top-p", "0"), "--top-p", capsys=capsys)
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    _expect_error(_argv("unused", str(not_parquet), tmp_path / "o.json"), str(not_parquet), "parquet", capsys=capsys)


def test_vllm_backend_missing_is_a_clear_error(data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM: import fails
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    argv = ["--model", str(model), "--data", data_file, "--out", str(tmp_path / "o.json"), "--backend", "vllm"]
    with pytest.raises(ev.BackendUnavailable, match=r"pip install \.\[gpu\].*--backend hf"):
        ev.main(argv)
    assert ev.cli(argv) == 2
    assert "Docker image" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model,expect",
    [
        ("/no/such/model", "--model=/no/such/model does not exist; give a local HF model directory or a hub id"),
        ("{tmp}", "is a directory without config.json"),
    ],
)
def test_missing_model_is_a_clear_error_before_loading(data_file, tmp_path, capsys, model, expect):
    model = model.replace("{tmp}", str(tmp_path))
    argv = ["--model", model, "--data", data_file, "--out", str(tmp_path / "o.json"), "--backend", "hf"]
    assert ev.cli(argv) == 2
    assert expect in capsys.readouterr().err
