"""Hostile model outputs and reward scoring under load.

The corpus (``tests/data/hostile.py``) covers every category of hostile input. For each item,
``compute_score``, ``is_equivalent`` and ``cluster_answers`` return within their timeout,
execute nothing (a sentinel file), keep the caller alive and its memory flat; the same from a
thread and from a spawned process shaped like a veRL reward worker. A batch of 4096 realistic
responses with hostile ones mixed in scores every ordinary response right and reports the
timeouts per sample, which the trainer hooks turn into ``reward/verify_timeouts``.

Timing: a check that hits its deadline costs its timeout plus a worker swap, so most tests use
a short ``timeout=`` (the point there is "killed, replaced, survived"); the full default 2 s
bound is checked on a few items (``test_default_two_second_bound``). Long variants (every item
in every context) run with ``ENTROPY_RL_SOAK=1``.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import sys
import threading
import time

import numpy as np
import pytest
import torch

from entropy_rl import answers
from entropy_rl.answers import DEFAULT_TIMEOUT, check_pairs, equivalent_pairs, warm_up
from entropy_rl.reward import compute_score
from entropy_rl.semantic_entropy import cluster_answers
from tests.data.hostile import CATEGORIES, SLOW_CATEGORIES, corpus, representatives, run_corpus

psutil = pytest.importorskip("psutil")

SOAK = os.environ.get("ENTROPY_RL_SOAK") == "1"
SHORT = 0.3  # per-check timeout where the point is "killed and survived"
SLACK = 0.5  # scheduling slack on a loaded 2-core box
# A check that kills its worker hands over to the warm spare; the *next* check may wait for
# the new spare's start-up (sympy import, ~0.5-1 s on 2 busy cores), which is not counted in
# ``timeout`` by design. Short-timeout bounds allow for one such wait.
STARTUP = 1.5
PROBE = max(answers._PROBE_MIN_TIMEOUT, SHORT / 4)
REWARD_KEYS = ["acc", "pred", "score", "verify_timeouts"]
# the cluster group of run_corpus: hostile, 1/2, hostile, 0.5, sqrt(2)+1, None, 3
CLASSES = [0, 1, 0, 1, 2, 3, 4]
# Of the slow categories (every check of theirs overruns: ~1 s each with the worker swap),
# the default run takes two items each; ENTROPY_RL_SOAK=1 runs all of them.
SLOW_DEFAULT = {
    "10^{10^{10}}",
    "3^{3^{3^{3^3}}} tower",
    "((10!)!)!",
    "binomial of 10^{10}",
    "150-deep power tower x^{x^{...}}",
    "500 unary minus",
}


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "SENTINEL"
    yield str(path)
    assert not path.exists(), "model output was executed"


@pytest.fixture(scope="module")
def items(sentinel):
    return corpus(sentinel)


def _settle() -> None:
    """A ready worker *and* a ready spare, so a timing measures the call alone."""
    warm_up()
    spare = answers._get_pool()._spare
    if spare is not None:
        spare.wait_ready(answers.STARTUP_TIMEOUT)


def _check_records(records, timeout, sentinel, extra=0.0):
    for r in records:
        name = r["name"]
        assert r["keys"] == REWARD_KEYS, name
        assert r["score"] == 0.0 and r["equivalent"] is False, name
        assert isinstance(r["verify_timeouts"], int) and 0 <= r["verify_timeouts"] <= 1, name
        # the hostile answer's copies share a class; the ordinary answers are clustered right
        assert r["classes"] == CLASSES, name
        for fn, s in r["seconds"].items():
            assert s < timeout + extra + SLACK, (name, fn, s)
        assert not r["sentinel_exists"], name
    assert not os.path.exists(sentinel)


# ------------------------------------------------------------------------------ corpus


def test_corpus_covers_every_category_of_the_issue(items, sentinel):
    assert {it.category for it in items} == set(CATEGORIES)
    text = "\n".join(it.answer + it.gold for it in items)
    for needle in [
        "__import__('os').system('touch " + sentinel,
        "lambda",
        "().__class__.__bases__[0].__subclasses__()",
        "10^{10^{10}}",
        "9**9**9",
        "((10!)!)!",
        "{" * 100_000,
        "\ud800",
        "\x00",
        "\x1b",
        "\udcff",
    ]:  # \udcff: the invalid UTF-8 byte 0xff decoded with surrogateescape
        assert needle in text, needle[:40]
    assert any(len(it.answer) >= 1 << 20 for it in items)  # a 1 MB answer
    assert any(len(it.response) >= 10_000_000 for it in items)
    assert len({it.name for it in items}) == len(items)


# ------------------------------------------------------------------ main thread, all items


def test_every_item_in_process(items, sentinel):
    """Items × the three entry points, short timeout: bounded, nothing runs, right classes.
    Every item of the fast categories; two per slow category (all with ENTROPY_RL_SOAK=1)."""
    chosen = [it for it in items if SOAK or it.category not in SLOW_CATEGORIES or it.name in SLOW_DEFAULT]
    assert len(chosen) >= 30
    _settle()
    caller = os.getpid()
    records = run_corpus(chosen, SHORT, sentinel)
    # one check per call at most; cluster_answers adds one probe per hostile string; each
    # call may wait once for a replacement worker's start-up (not counted in the timeout)
    _check_records(records, SHORT, sentinel, extra=PROBE + STARTUP)
    assert os.getpid() == caller
    # the deadline really fired: the power towers, factorial towers and deep nests hit it
    hit = {r["name"] for r in records if r["verify_timeouts"]}
    assert {"10^{10^{10}}", "((10!)!)!", "3^{3^{3^{3^3}}} tower"} <= hit, hit
    # and the answers that never reach the worker (length bounds, no answer) do not
    for name in ["1 MB answer", "100k nested braces", "10 MB response", "100k unclosed \\boxed{"]:
        assert name not in hit


def test_default_two_second_bound(items, sentinel):
    """The default timeout (2 s) bounds each call, with a warm worker, from the first call on."""
    assert DEFAULT_TIMEOUT == 2.0
    by_name = {it.name: it for it in items}
    for name, gold in [("10^{10^{10}}", "101")]:
        it = by_name[name]
        _settle()
        t0 = time.perf_counter()
        out = compute_score(data_source="x", solution_str=it.response, ground_truth=gold, extra_info={})
        elapsed = time.perf_counter() - t0
        assert out == {"score": 0.0, "acc": False, "pred": it.answer, "verify_timeouts": 1}
        assert elapsed < DEFAULT_TIMEOUT + SLACK, (name, elapsed)
    # a prompt's group with a hostile answer: blamed once, not once per pair it is in
    _settle()
    # (the other answers are plain numbers here, so the time after the overrun is the probe's)
    group = ["((10!)!)!+1", "\\frac{1}{2}", "0.5", "3", "((10!)!)!+1", "7/2", "3.5"]
    t0 = time.perf_counter()
    classes = cluster_answers(group)
    elapsed = time.perf_counter() - t0
    assert classes == [0, 1, 1, 2, 0, 3, 3]
    assert elapsed < DEFAULT_TIMEOUT + SLACK, elapsed


def test_timeouts_are_reported_per_pair_and_cached(items):
    """check_pairs says which verdicts are timeouts; a repeat is answered from the cache."""
    _settle()
    pairs = [("\\sqrt{8}", "2\\sqrt{2}"), ("10^{10^{10}}-7", "3"), ("\\frac{3}{6}", "0.5"), ("x+1", "1+x")]
    t0 = time.perf_counter()
    res = check_pairs(pairs, timeout=SHORT)
    assert res.equivalent == [True, False, True, True]
    assert res.timed_out == [False, True, False, False]
    assert time.perf_counter() - t0 < SHORT + STARTUP + SLACK
    t0 = time.perf_counter()
    assert check_pairs(pairs[1:2], timeout=SHORT).timed_out == [True]  # cached, still reported
    assert time.perf_counter() - t0 < 0.05
    assert equivalent_pairs(pairs, timeout=SHORT) == res.equivalent  # the old API, unchanged
    # many golds: one sample's budget is one timeout, not one per gold
    _settle()
    t0 = time.perf_counter()
    out = compute_score(
        solution_str=items[0].response.replace(items[0].answer, "9^{9^{9}}+2"),
        ground_truth=["1", "2", "x+1", "\\sqrt{5}", "\\pi"],
        timeout=SHORT,
    )
    assert time.perf_counter() - t0 < SHORT + SLACK
    assert out["score"] == 0.0 and out["verify_timeouts"] >= 1


def test_total_timeout_bounds_a_call():
    """``total_timeout`` caps a whole call; pairs it cuts are reported and not cached."""
    _settle()
    pairs = [(f"{k}^{{{k}^{{{k}^{{{k}}}}}}}+1", "2") for k in (5, 6, 7)]  # each hangs alone
    t0 = time.perf_counter()
    res = check_pairs(pairs, timeout=5.0, total_timeout=0.6)
    assert time.perf_counter() - t0 < 0.6 + SLACK
    assert res.equivalent == [False] * 3 and res.timed_out == [True] * 3
    key = (answers.normalize_answer(pairs[0][0]), "2")
    assert answers._cache_get(key) is None  # cut by the budget: may be fine, not remembered


# --------------------------------------------------------------------- thread and process


def test_from_a_thread(items, sentinel):
    chosen = items if SOAK else representatives(items)
    with answers._cache_lock:  # the main-thread test cached these pairs: check them afresh
        answers._cache.clear()
    _settle()
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(records=run_corpus(chosen, SHORT, sentinel)))
    th.start()
    th.join(120)
    assert not th.is_alive()
    assert [r["name"] for r in out["records"]] == [it.name for it in chosen]
    _check_records(out["records"], SHORT, sentinel, extra=PROBE + STARTUP)


def _child(names, timeout, sentinel, queue):  # runs in a spawned interpreter
    from entropy_rl import answers as a
    from tests.data.hostile import corpus as c
    from tests.data.hostile import run_corpus as run

    a.warm_up()
    chosen = [it for it in c(sentinel) if it.name in names]
    records = run(chosen, timeout, sentinel)
    pool = a._get_pool()
    pids = pool.pids() + ([pool._spare.pid] if pool._spare is not None else [])
    queue.put({"records": records, "worker_pids": pids, "pid": os.getpid()})


def test_in_a_spawned_reward_worker_process(items, sentinel):
    """A fresh interpreter that imports entropy_rl and scores, like a veRL reward worker:
    same guarantees, a clean exit, and its answer-check workers gone with it."""
    chosen = items if SOAK else representatives(items)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=([it.name for it in chosen], SHORT, sentinel, queue))
    proc.start()
    try:
        got = queue.get(timeout=240)
    finally:
        proc.join(60)
    assert proc.exitcode == 0
    assert got["pid"] != os.getpid()
    _check_records(got["records"], SHORT, sentinel, extra=PROBE + STARTUP)
    assert got["worker_pids"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in got["worker_pids"]):
        time.sleep(0.1)
    alive = [p for p in got["worker_pids"] if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive, "answer-check workers outlived their reward process"


# ------------------------------------------------------------------------------- memory


def test_worker_memory_cap_is_applied():
    warm_up()
    pool = answers._get_pool()
    pids = pool.pids() + ([pool._spare.pid] if pool._spare is not None else [])
    assert pids and answers.WORKER_MEMORY_LIMIT > 0
    for pid in pids:
        with open(f"/proc/{pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max address space"))
        soft, hard = line.split()[3:5]
        assert int(soft) == int(hard) == answers.WORKER_MEMORY_LIMIT, line


def test_memory_hungry_answers_do_not_grow_the_caller(items):
    """Huge integers blow up in the capped worker, not here; long answers are not pinned in
    the caller's caches (250 distinct 90 kB answers: ~22 MB if they were)."""
    by_name = {it.name: it for it in items}
    hungry = [by_name[n] for n in ["2^{2^{33}} (1 GiB integer)", "1 MB answer", "10 MB response"]]
    long_base = "+".join(["x_{1}"] * 15_000)
    warm_up()
    me = psutil.Process()
    gc.collect()
    rss0 = me.memory_info().rss
    for it in hungry:
        compute_score(solution_str=it.response, ground_truth="17", timeout=SHORT)
    for i in range(250):
        out = compute_score(solution_str="\\boxed{" + long_base + f"+{i}" + "}", ground_truth="1", timeout=SHORT)
        assert out["score"] == 0.0
    gc.collect()
    growth = me.memory_info().rss - rss0
    assert growth < 10 << 20, f"caller RSS grew by {growth / 2**20:.1f} MiB"


# ---------------------------------------------------------------- 4096 responses, metrics


def _labeled_batch(items):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    try:
        import _answers_corpus
    finally:
        sys.path.pop(0)
    rows = []  # (response, gold, expected score or None for hostile)
    for gold, responses in _answers_corpus.realistic_labeled(256, 16, seed=4096):
        rows += [(r, gold, s) for r, s in responses]
    hostile = representatives(items)
    for j, it in enumerate(hostile):  # spread through the batch
        rows[(j * 587 + 11) % len(rows)] = (it.response, it.gold, None)
    return rows, hostile


def test_batch_of_4096_with_hostile_responses(items, sentinel):
    """A training step's worth of scoring: finishes, every ordinary score right, timeouts
    counted per sample (never a crash), and surfaced as training metrics by the hooks."""
    from verl import DataProto

    from recipe.sent.hooks import reward_check_metrics

    rows, hostile = _labeled_batch(items)
    assert len(rows) == 4096
    _settle()
    t0 = time.perf_counter()
    # one timeout for the whole batch, as reward_kwargs would set it: short enough that the
    # few hostile responses cost ~1 s each, long enough for every ordinary check
    results = [
        compute_score(data_source="math", solution_str=r, ground_truth=g, extra_info={}, timeout=1.0)
        for r, g, _ in rows
    ]
    elapsed = time.perf_counter() - t0
    assert elapsed < 40, elapsed
    assert len({tuple(sorted(o)) for o in results}) == 1  # veRL stacks the keys per sample
    ordinary = [(o, s) for o, (_, _, s) in zip(results, rows) if s is not None]
    wrong = [(o["pred"], s) for o, s in ordinary if o["score"] != s]
    assert not wrong, wrong[:10]
    assert all(o["verify_timeouts"] == 0 for o, _ in ordinary)
    hostile_out = [o for o, (_, _, s) in zip(results, rows) if s is None]
    assert len(hostile_out) == len(hostile) and all(o["score"] == 0.0 for o in hostile_out)
    n_timeouts = sum(o["verify_timeouts"] for o in results)
    assert n_timeouts >= 2  # 10^{10^{10}} and ((10!)!)! at least
    assert not os.path.exists(sentinel)

    # what veRL's agent loop does with the extras, then the driver's hook turns them into metrics
    batch = DataProto.from_single_dict(
        {
            "responses": torch.zeros(len(results), 2, dtype=torch.long),
            **{k: np.array([o[k] for o in results]) for k in results[0]},
        }
    )
    metrics = reward_check_metrics(batch.non_tensor_batch)
    assert metrics["reward/verify_timeouts"] == float(n_timeouts)
    assert metrics["reward/verify_timeout_frac"] == pytest.approx(
        sum(o["verify_timeouts"] > 0 for o in results) / len(results)
    )


def test_reward_check_metrics_contract():
    from recipe.sent.hooks import reward_check_metrics

    assert reward_check_metrics({"acc": np.array([1.0])}) == {}  # a reward without the key
    assert reward_check_metrics({"verify_timeouts": np.array([0, 2, 0, 1])}) == {
        "reward/verify_timeouts": 3.0,
        "reward/verify_timeout_frac": 0.5,
    }
    with pytest.raises(ValueError, match="row 1"):
        reward_check_metrics({"verify_timeouts": np.array([0.0, np.nan])})
    with pytest.raises(ValueError, match="row 0"):
        reward_check_metrics({"verify_timeouts": np.array([-1])})
