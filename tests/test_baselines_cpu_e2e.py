"""Baselines through veRL's real loop on the CPU backend, as a user runs them
(`python -m recipe.sent.main backend=cpu method=<baseline>`): Clip-Higher, AER's main baseline."""

from __future__ import annotations

import pytest

from tests.conftest import run_main

pytestmark = pytest.mark.e2e


def test_clip_higher_runs_on_the_cpu_backend(demo, tmp_path):
    rc, out, steps = run_main(
        demo, tmp_path / "clip_higher", "method=clip_higher", "trainer.total_training_steps=2", "trainer.save_freq=-1"
    )
    assert rc == 0, out[-6000:]
    assert sorted(steps) == [1, 2]
    # the decoupled clip reached the worker config veRL's vanilla loss reads
    assert "'clip_ratio_high': 0.28" in out and "'clip_ratio_low': 0.2" in out
    for s in (1, 2):
        m = steps[s]
        assert m["actor/grad_norm"] > 0 and "actor/pg_clipfrac" in m
        assert not any(k.startswith(("actor/sent/", "aer/")) for k in m), "a veRL baseline: none of our terms"
