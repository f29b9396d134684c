"""End to end on the CPU backend: veRL's real driver and Ray workers through our recipe.

Each run is `python -m recipe.sent.main backend=cpu ...` in its own process (as a user runs
it); assertions read what the run produced: veRL's file-logger metrics, checkpoints, the
scoring cache and the process output.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import assert_token_sets
from tests.conftest import run_main as run

pytestmark = pytest.mark.e2e


def assert_ok(rc, out):
    assert rc == 0, out[-6000:]


@pytest.fixture(scope="module")
def sent_aer_run(demo, tmp_path_factory):
    work = tmp_path_factory.mktemp("sent_aer") / "full"
    rc, out, steps = run(
        demo,
        work,
        "method=sent_aer",
        "entropy_rl.curriculum.adaptive=true",
        "trainer.total_training_steps=3",
        "trainer.save_freq=2",
        "entropy_rl.aer.alpha_init=0.05",
    )
    assert_ok(rc, out)
    return work, out, steps


def test_sent_aer_runs_through_the_real_loop(sent_aer_run):
    work, out, steps = sent_aer_run
    assert sorted(steps) == [1, 2, 3]
    for s in (1, 2, 3):
        m = steps[s]
        # emitted only by our installed loss, from the fields the driver attached
        assert_token_sets(s, m)
        assert "actor/aer/entropy_bonus" in m
        assert m["actor/grad_norm"] > 0
        # rollout log-probs are those the actor computes (float tolerance on CPU)
        assert abs(m["training/rollout_probs_diff_max"]) < 1e-4, m["training/rollout_probs_diff_max"]
    assert steps[3]["aer/alpha"] != steps[1]["aer/alpha"], "α_t must move"
    assert steps[3]["curriculum/progress"] > steps[1]["curriculum/progress"]
    assert steps[3]["curriculum/stage"] > steps[1]["curriculum/stage"], "the curriculum reached its next stage"
    assert steps[1]["curriculum/num_updates"] >= 1, "adaptive refresh fed the sampler"
    assert "[semantic-entropy scoring]" in out, "the scoring pass ran with the rollout workers"
    assert list((work.parent / "score_cache").glob("semantic_entropy-*.parquet"))
    assert (work / "ckpt" / "global_step_2" / "entropy_rl_state.pt").exists()
    assert "[entropy-rl] run finished." in out


def test_resume_continues_step_three_exactly(demo, sent_aer_run, tmp_path):
    full, _, ref = sent_aer_run
    work = full.parent / "resumed"
    shutil.copytree(full / "ckpt", work / "ckpt")
    shutil.rmtree(work / "ckpt" / "global_step_3")
    (work / "ckpt" / "latest_checkpointed_iteration.txt").write_text("2")
    rc, out, steps = run(
        demo,
        work,
        "method=sent_aer",
        "entropy_rl.curriculum.adaptive=true",
        "trainer.total_training_steps=3",
        "trainer.save_freq=2",
        "entropy_rl.aer.alpha_init=0.05",
    )
    assert_ok(rc, out)
    assert "semantic-entropy scores from cache" in out and "[semantic-entropy scoring]" not in out
    assert sorted(steps) == [3], "the resumed process runs step 3 only"
    a, b = steps[3], ref[3]
    # data order and curriculum position: exactly
    for key in ("curriculum/stage", "curriculum/progress", "curriculum/num_updates", "curriculum/epoch"):
        assert a[key] == b[key], key
    # controller and score state: to float precision (the likelihood estimator reads rollout
    # log-probs, whose last bits depend on the batch a row was decoded in)
    for key in (
        "aer/alpha",
        "aer/h0",
        "aer/target_entropy",
        "curriculum/batch_semantic_entropy",
        "curriculum/stage_semantic_entropy",
    ):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    for key in ("actor/entropy", "critic/score/mean", "actor/pg_loss", "actor/sent/kl_loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_worker_error_fails_the_command_with_its_message(demo, tmp_path):
    """An exception inside a Ray worker ends the run with the worker's error, not a hang."""
    import time

    t0 = time.time()
    rc, out, steps = run(
        demo,
        tmp_path / "crash",
        "method=grpo",
        "trainer.total_training_steps=2",
        "actor_rollout_ref.actor.optim.lr=-1.0",
        timeout=300,
    )
    assert rc != 0
    assert "Invalid learning rate" in out, out[-3000:]
    assert not steps
    assert time.time() - t0 < 240
