"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TRAIN_ROWS = 48  # 3 steps per epoch at 16 prompts: the curriculum changes stage inside 3 steps


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The CPU demo (tokenizer, warm-started tiny model, a+b-c data) as ENTROPY_RL_DATA."""
    data = tmp_path_factory.mktemp("data")
    sys.path.insert(0, os.path.join(ROOT, "launch"))
    try:
        import prepare_cpu_demo
    finally:
        sys.path.pop(0)
    prepare_cpu_demo.prepare(str(data / "cpu_demo"), n_train=TRAIN_ROWS, n_test=16, steps=300)
    return data


@pytest.fixture(scope="session")
def demo_vllm(demo):
    """The demo plus ``model_vllm/`` (head size 32, what vLLM's CPU attention supports)."""
    sys.path.insert(0, os.path.join(ROOT, "launch"))
    try:
        import prepare_cpu_demo
    finally:
        sys.path.pop(0)
    prepare_cpu_demo.prepare(str(demo / "cpu_demo"), n_train=TRAIN_ROWS, n_test=16, steps=300, vllm=True)
    return demo


def read_steps(path: Path) -> dict[int, dict]:
    """veRL's file-logger JSON lines → {step: metrics}."""
    steps: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            steps.setdefault(rec["step"], {}).update(rec["data"])
    return steps


def run_main(demo, workdir, *overrides, timeout=420, backend="cpu"):
    """One training process; returns (returncode, output, metrics per step)."""
    workdir.mkdir(parents=True, exist_ok=True)
    metrics = workdir / "metrics.jsonl"
    env = {
        **os.environ,
        "ENTROPY_RL_DATA": str(demo),
        "VERL_FILE_LOGGER_PATH": str(metrics),
        "PYTHONPATH": ROOT,
        "RAY_DEDUP_LOGS": "0",
    }
    env.pop("VERL_PLATFORM", None)
    cmd = [
        sys.executable,
        "-m",
        "recipe.sent.main",
        f"backend={backend}",
        f"trainer.default_local_dir={workdir / 'ckpt'}",
        f"entropy_rl.scoring.cache_dir={workdir.parent / 'score_cache'}",
        f"hydra.run.dir={workdir / 'hydra'}",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        *overrides,
    ]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr, read_steps(metrics)


def assert_token_sets(step: int, m: dict) -> None:
    """A SENT step's token sets as the worker's loss logged them, checked against the batch.

    The worker trained on the driver's token sets (``selection: batch``). A step where every
    group scored alike has A ≡ 0, so Cov ≡ 0 on T_low: the release's rule gives the tied tokens
    β_low and the high-Cov set is empty; any other step has a non-empty one.
    """
    shown = {k: m[k] for k in m if "cov" in k or "low_entropy" in k or "critic/advantages" in k or "score/mean" in k}
    assert m["actor/sent/low_entropy_frac"] > 0, (step, shown)
    assert (m["actor/sent/high_cov_frac"] > 0) == (m["sent/batch_high_cov_frac"] > 0), (step, shown)
    if max(m["critic/advantages/max"], -m["critic/advantages/min"]) > 1e-6:
        assert m["actor/sent/high_cov_frac"] > 0, (step, shown)
    else:
        assert m["actor/sent/high_cov_frac"] == 0 and m["actor/sent/low_cov_frac"] > 0, (step, shown)


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", help="also run the long soak variants (= ENTROPY_RL_SOAK=1)")


def pytest_configure(config):
    # before collection, so the soak tests' skipif (and hypothesis profiles) see it
    if config.getoption("--soak"):
        os.environ["ENTROPY_RL_SOAK"] = "1"
