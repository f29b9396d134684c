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
    p = subprocess.run([sys.executable, "bench/entropy_dynamics.py", "--grid", "quick", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    res = json.loads((tmp_path / "entropy_dynamics.json").read_text())
    assert [r["run"] for r in res["runs"]] == ["grpo-s0", "aer-s0"]
    for r in res["runs"]:
        vals = [*r["mean_entropy"].values(), r["tracking_error_2nd_half"], r["wall_s"]]
        for label in ("middle", "end"):
            ev = r["heldout"][label]
            vals += [ev["decision_entropy"], ev["sampled_token_entropy"], ev["greedy_avg_at_1"], *ev["pass_at_k"].values()]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals), r
        assert r["steps"] == 3
    assert res["runs"][1]["tracking_target"] == "aer/target_entropy"
    for name in ("entropy", "aer", "decision_entropy"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 0
