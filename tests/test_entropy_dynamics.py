"""The entropy-dynamics bench (bench/entropy_dynamics.py) cannot rot: its quick grid end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
pytestmark = pytest.mark.e2e


def test_quick_grid_writes_table_and_figures(tmp_path):
    p = subprocess.run(
        [sys.executable, "bench/entropy_dynamics.py", "--grid", "quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    res = json.loads((tmp_path / "entropy_dynamics.json").read_text())
    assert [r["run"] for r in res["runs"]] == ["grpo-s0-3steps", "aer-s0-3steps"]  # not a standard 30-step run
    for r in res["runs"]:
        vals = [*r["mean_entropy"].values(), r["tracking_error_2nd_half"], r["wall_s"]]
        for label in ("middle", "end"):
            ev = r["heldout"][label]
            vals += [
                ev["decision_entropy"],
                ev["sampled_token_entropy"],
                ev["greedy_avg_at_1"],
                *ev["pass_at_k"].values(),
            ]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals), r
        assert r["steps"] == 3
    assert res["runs"][1]["tracking_target"] == "aer/target_entropy"
    for name in ("entropy", "aer", "presets"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 0

    # a finished run is never thrown away: asking for another configuration in its folder is an error
    p = subprocess.run(
        [
            sys.executable,
            "bench/entropy_dynamics.py",
            "--grid",
            "quick",
            "--out",
            str(tmp_path),
            "actor_rollout_ref.actor.optim.lr=1e-4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert p.returncode != 0
    assert "grpo-s0-3steps/result.json: a finished run with another configuration (overrides:" in p.stderr, p.stderr[
        -3000:
    ]
    assert (tmp_path / "runs" / "grpo-s0-3steps" / "result.json").exists()


def test_holding_measures_from_metrics():
    """Relative tracking error, peak H/H* (second half) and α's longest run at its cap, from a
    synthetic metrics series; a run without AER is measured against the reference ρ·H₀."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import entropy_dynamics as ed

    steps = {
        s: {
            "actor/entropy": 0.1,
            "aer/target_entropy": float("nan") if s < 2 else 0.05,
            "aer/alpha": 0.1 if 3 <= s <= 7 else 0.02,
        }
        for s in range(1, 11)
    }
    steps[8]["actor/entropy"] = 0.2  # the peak, in the second half (steps 6-10)
    h = ed.holding(steps, alpha_max=0.1)
    assert h["relative_tracking_error_2nd_half"] == pytest.approx((4 * 1.0 + 3.0) / 5)
    assert h["peak_entropy_over_target_2nd_half"] == pytest.approx(4.0)
    assert h["alpha_longest_run_at_cap"] == 5
    plain = {s: {"actor/entropy": v} for s, v in enumerate([0.5, 0.5, 0.3, 0.3], start=1)}
    h = ed.holding(plain, alpha_max=0.1)
    assert h["relative_tracking_error_2nd_half"] == pytest.approx(0.0)  # 0.3 = 0.6 · 0.5
    assert h["alpha_longest_run_at_cap"] == 0
