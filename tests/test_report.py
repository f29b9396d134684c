"""`python -m entropy_rl.report`: figures and page from realistic metrics files.

The metrics are built here with the keys and shapes our recipe and veRL log (several runs,
validation every few steps, a run that died mid-write); assertions inspect matplotlib
artists (lines, labels), not pixels.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from entropy_rl import report

STEPS = 30


def _record(method: str, step: int) -> dict:
    t = step / STEPS
    collapse = {"grpo": 0.9, "kl_cov": 0.5, "sent": 0.35, "sent_aer": 0.1}[method]
    h = 0.6 * (1 - collapse * t)
    d = {"actor/entropy": h, "critic/score/mean": 0.3 + 0.4 * t, "actor/pg_loss": 0.01 * math.sin(step)}
    if method in ("sent", "sent_aer"):
        d.update(
            {
                "actor/sent/low_entropy_frac": 0.8,
                "actor/sent/high_cov_frac": 2e-4,
                "actor/sent/low_cov_frac": 2e-4,
                "actor/sent/kl_low_entropy": 0.01 * t,
                "actor/sent/kl_high_cov": 0.05 * t,
                "actor/sent/kl_low_cov": 0.002 * t,
                "curriculum/batch_semantic_entropy": 0.2 + 0.8 * t,
                "curriculum/stage": float(step * 3 // (STEPS + 1)),
            }
        )
    if method == "sent_aer":
        d.update(
            {
                "aer/alpha": 0.05 + 0.01 * math.sin(step / 3),
                "aer/h0": 0.6,
                "aer/target_entropy": 0.48,
                "aer/entropy": h + 0.01 * math.cos(step),
            }
        )
    return d


def _val(method: str, step: int) -> dict:
    t = step / STEPS
    gain = {"grpo": 0.20, "kl_cov": 0.22, "sent": 0.25, "sent_aer": 0.27}[method]
    out = {}
    for bench, base in (("math500", 0.5), ("aime24", 0.1)):
        for k in (2, 4):
            out[f"val-core/{bench}/acc/mean@{k}"] = base + gain * t
            out[f"val-aux/{bench}/acc/best@{k}/mean"] = min(1.0, base + gain * t + 0.05 * k)
    return out


def write_run(path, method: str, steps: int = STEPS, torn: bool = False) -> None:
    lines = []
    for s in range(0, steps + 1):
        if s % 10 == 0:  # validation: veRL logs it as its own record at the step
            lines.append(json.dumps({"step": s, "data": _val(method, s)}))
        if s:
            lines.append(json.dumps({"step": s, "data": _record(method, s)}))
    text = "\n".join(lines) + "\n"
    if torn:
        text += json.dumps({"step": steps + 1, "data": _record(method, steps + 1)})[:37]
    path.write_text(text)


@pytest.fixture
def runs_dir(tmp_path):
    d = tmp_path / "runs" / "entropy_rl"
    d.mkdir(parents=True)
    write_run(d / "grpo.jsonl", "grpo")
    write_run(d / "sent.jsonl", "sent")
    write_run(d / "sent_aer.jsonl", "sent_aer", steps=22, torn=True)  # died at step 23
    (d / "sent_aer").mkdir()
    (d / "sent_aer" / "eval.json").write_text(
        json.dumps(
            {
                "config": {"ks": [1, 4, 16]},
                "summary": {
                    "ks": [1, 4, 16],
                    "benchmarks": {
                        "math500": {"avg@1": 0.6, "pass@1": 0.6, "pass@4": 0.75, "pass@16": 0.86},
                        "aime24": {"avg@1": 0.2, "pass@1": 0.2, "pass@4": 0.33, "pass@16": 0.5},
                    },
                },
            }
        )
    )
    return d


def _labels(ax):
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_every_figure_with_the_expected_lines(runs_dir, tmp_path):
    other = tmp_path / "kl_cov.jsonl"  # a run given as a file, beside a directory of runs
    write_run(other, "kl_cov")
    out = report.build_report([str(runs_dir), str(other)], str(tmp_path / "report"))
    assert [r.label for r in out["runs"]] == ["grpo", "sent", "sent_aer", "kl_cov"]
    for name in report.FIGURES:
        png = tmp_path / "report" / f"{name}.png"
        assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figs = out["figures"]

    (ax,) = figs["entropy"].axes  # 1. all runs on one axis, H0 / H* of the AER run
    assert _labels(ax) == ["grpo", "sent", "sent_aer", "sent_aer: H₀", "sent_aer: H*", "kl_cov"]
    grpo = ax.get_lines()[0]
    assert list(grpo.get_xdata()) == list(range(1, STEPS + 1))
    assert grpo.get_ydata()[-1] == pytest.approx(0.6 * (1 - 0.9))
    aer_line = ax.get_lines()[2]
    assert list(aer_line.get_xdata())[-1] == 22  # partial run: up to its last complete step

    a1, a2 = figs["aer"].axes  # 2. α_t and H − H*
    assert _labels(a1) == ["sent_aer"] and _labels(a2) == ["sent_aer"]
    err = a2.get_lines()[0].get_ydata()
    assert err[0] == pytest.approx(0.6 * (1 - 0.1 / STEPS) + 0.01 * math.cos(1) - 0.48)

    f1, f2 = figs["sent"].axes  # 3. set fractions and KL per set, SENT runs only
    assert _labels(f1) == [f"{r}: {s}" for r in ("sent", "sent_aer") for s in ("T_low", "high-Cov", "low-Cov")]
    assert f1.get_yscale() == "symlog" and len(_labels(f2)) == 6

    c1, c2, c3 = figs["curriculum"].axes  # 4. H_SE, stage staircase, reward
    assert _labels(c1) == ["sent", "sent_aer"] and _labels(c2) == ["sent", "sent_aer"]
    assert c2.get_lines()[0].get_drawstyle() == "steps-post"
    assert sorted(set(c2.get_lines()[0].get_ydata())) == [0.0, 1.0, 2.0]
    assert _labels(c3) == ["grpo", "sent", "sent_aer", "kl_cov"]

    v_axes = figs["validation"].axes  # 5. validation per benchmark, avg@k per run
    assert [a.get_title() for a in v_axes] == ["Validation: aime24", "Validation: math500"]
    assert "sent_aer: avg@4" in _labels(v_axes[1]) and len(_labels(v_axes[1])) == 8
    (p_aime, p_math) = figs["pass_at_k"].axes
    assert p_math.get_xscale() == "log"
    lines = {line.get_label(): line for line in p_math.get_lines()}
    ev = lines["sent_aer (evaluation eval.json)"]
    assert list(ev.get_xdata()) == [1, 4, 16] and list(ev.get_ydata()) == [0.6, 0.75, 0.86]
    assert list(lines["grpo (last validation (best@k))"].get_xdata()) == [2, 4]


def test_html_page_shows_every_figure_and_the_final_table(runs_dir, tmp_path):
    out = report.build_report([str(runs_dir)], str(tmp_path / "rep"))
    page = (tmp_path / "rep" / "index.html").read_text()
    for name in report.FIGURES:
        assert f"alt='{name}' src='data:image/png;base64," in page and f"href='{name}.png'" in page
    assert "last line torn, skipped: plotted to step 22" in page
    rows = {(r["run"], r["benchmark"]): r for r in out["table"]}
    g = rows[("grpo", "math500")]
    assert g["k"] == 4 and g["final_avg"] == pytest.approx(0.7) and g["best_step"] == 30
    assert rows[("sent_aer", "math500")]["pass"] == 0.86 and rows[("sent_aer", "math500")]["pass_k"] == 16
    assert json.loads((tmp_path / "rep" / "table.json").read_text()) == out["table"]


def test_clear_errors(tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(report.ReportInputError, match=f"{empty}: no metrics file"):
        report.load_runs([str(empty)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "data": {"actor/entropy": 0.5}}\nnot json\n{"step": 3, "data": {}}\n')
    with pytest.raises(report.ReportInputError, match=r"bad.jsonl line 2: not a veRL metrics record"):
        report.load_runs([str(bad)])
    with pytest.raises(report.ReportInputError, match="no such file"):
        report.load_runs([str(tmp_path / "missing")])
    good = tmp_path / "g.jsonl"
    write_run(good, "grpo", steps=3)
    with pytest.raises(report.ReportInputError, match="--labels has 2 names for 1 runs"):
        report.load_runs([str(good)], ["a", "b"])


def test_command_line(runs_dir, tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "entropy_rl.report",
            str(runs_dir),
            "--out",
            str(tmp_path / "r"),
            "--labels",
            "GRPO",
            "SENT",
            "SENT+AER",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "[report] page: " in p.stdout and "plotted up to step 22" in p.stderr
    assert "SENT+AER" in (tmp_path / "r" / "index.html").read_text()
    p = subprocess.run(
        [sys.executable, "-m", "entropy_rl.report", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "error:" in p.stderr and "nothing: no such file" in p.stderr
