"""The cluster path for real: `launch/submit.sh` → `ray job submit` → a 2-node Ray cluster.

Two `ray start` nodes on this machine (loopback addresses 127.0.0.2 and 127.0.0.3, one logical
GPU each), the CPU preset with veRL's own ``kl_cov`` baseline (its host-side top-k runs on every
rank) submitted through `launch/submit.sh` unchanged with
``trainer.nnodes=2 trainer.n_gpus_per_node=1``: FSDP ranks (actor, ref, rollout) on both nodes,
talking over gloo. Then a node's raylet is killed mid-run, the job must fail with a clear
message, and resubmitting the same command on a healthy cluster must continue from the last
checkpoint exactly as the uninterrupted run did.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests.conftest import read_steps
from tests.ray_cluster import LoopbackCluster

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
pytestmark = pytest.mark.e2e

STEPS = 4
PLACEMENT = re.compile(r"\[entropy-rl\] placement of actor_rollout: (\d+) rank\(s\) on (\d+) node\(s\): (.*)")


@pytest.fixture(scope="module")
def cluster():
    c = LoopbackCluster()
    try:
        c.start_head()
        c.add_node("b")
        yield c
    finally:
        c.teardown()


def submit(cluster, demo, work, *overrides):
    """`launch/submit.sh --no-wait` as a user runs it; returns the job id it prints."""
    env = {**cluster.env, "ENTROPY_RL_DATA": str(demo), "VERL_FILE_LOGGER_ROOT": str(work / "runs")}
    p = subprocess.run(
        [
            "bash",
            os.path.join(ROOT, "launch/submit.sh"),
            "--address",
            cluster.address,
            "--no-wait",
            "backend=cpu",
            "method=kl_cov",
            "trainer.nnodes=2",
            "trainer.n_gpus_per_node=1",
            f"trainer.total_training_steps={STEPS}",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
            f"trainer.default_local_dir={work / 'ckpt'}",
            f"hydra.run.dir={work / 'hydra'}",
            # each of the 2 data-parallel ranks gets 32 rows of the 64-row mini-batch
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
            *overrides,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"\[submit.sh\] job id: (raysubmit_\w+)", p.stdout)
    assert m, p.stdout
    return m.group(1)


def job_logs(cluster, job):
    return cluster.ray("job", "logs", "--address", cluster.address, job).stdout


@pytest.fixture(scope="module")
def reference(cluster, demo, tmp_path_factory):
    """The uninterrupted 2-node run: 4 steps, checkpoints at 2 and 4."""
    work = tmp_path_factory.mktemp("two_nodes")
    t0 = time.time()
    job = submit(cluster, demo, work, "trainer.save_freq=2")
    status = cluster.wait_job(job, timeout=420)
    wall = time.time() - t0
    logs = job_logs(cluster, job)
    assert status == "SUCCEEDED", logs[-6000:]
    print(f"\n[cluster e2e] 2-node job {job}: {status} in {wall:.0f} s (submit to end)")
    return work, logs, read_steps(work / "runs" / "entropy_rl" / "kl_cov.jsonl")


def test_submit_sh_runs_fsdp_across_two_nodes(cluster, reference):
    from ray.util.state import list_actors, list_nodes

    work, logs, steps = reference
    # the job's output came back through `ray job logs`
    assert "[entropy-rl] run finished." in logs
    # metrics (veRL's file logger) and the checkpoints, on the shared filesystem
    assert sorted(steps) == list(range(1, STEPS + 1))
    for s in (2, 4):
        assert (work / "ckpt" / f"global_step_{s}" / "actor").is_dir()
    assert (work / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"

    # placement: the run's own report, checked against Ray's view of the cluster
    nodes = {n.node_id: n.node_ip for n in list_nodes(address=cluster.address) if n.state == "ALIVE"}
    assert sorted(nodes.values()) == ["127.0.0.2", "127.0.0.3"]
    m = PLACEMENT.search(logs)
    assert m, "the run logs where its ranks are"
    assert (m.group(1), m.group(2)) == ("2", "2"), m.group(0)
    reported = dict(re.findall(r"node (\w+) \(([\d.]+),", m.group(3)))
    assert reported == nodes, (reported, nodes)
    actors = list_actors(address=cluster.address, detail=True, limit=10000)
    workers = {a.node_id for a in actors if "WorkerDict" in (a.class_name or "")}
    assert workers == set(nodes), (
        "veRL's WorkerDict actors sit on both nodes",
        [(a.class_name, a.node_id) for a in actors],
    )
    # FSDP over gloo across the nodes: both ranks took part in every update
    for s in steps.values():
        assert s["actor/grad_norm"] > 0 and s["global_seqlen/min"] > 0


def test_killed_node_fails_the_job_and_resume_continues_exactly(cluster, reference, demo, tmp_path):
    _, _, ref = reference
    work = tmp_path / "killed"
    job = submit(cluster, demo, work, "trainer.save_freq=1")
    tracker = work / "ckpt" / "latest_checkpointed_iteration.txt"
    metrics = work / "runs" / "entropy_rl" / "kl_cov.jsonl"

    def checkpointed_and_logged() -> bool:  # a checkpoint, and that step's metrics on disk
        try:
            return int(tracker.read_text()) in read_steps(metrics)
        except (OSError, ValueError):
            return False

    deadline = time.time() + 300
    while (
        not checkpointed_and_logged() and time.time() < deadline and cluster.job_status(job) in ("PENDING", "RUNNING")
    ):
        time.sleep(0.2)
    assert checkpointed_and_logged(), job_logs(cluster, job)[-6000:]
    victim = cluster.nodes[1]
    cluster.kill_raylet(victim)  # the second node's raylet, by its pid

    t_kill = time.time()
    status = cluster.wait_job(job, timeout=240)
    logs = job_logs(cluster, job)
    assert status == "FAILED", logs[-6000:]
    assert time.time() - t_kill < 180, "a dead node must end the job, not hang it"
    assert "[entropy-rl] the run failed in a Ray worker" in logs, logs[-6000:]
    assert re.search(rf"Ray reports node \w+ \({re.escape(victim.ip)}\) dead", logs), logs[-4000:]
    done = int(tracker.read_text())
    assert 1 <= done < STEPS
    assert f"last complete checkpoint: {work / 'ckpt' / f'global_step_{done}'}" in logs
    print(
        f"\n[cluster e2e] raylet of {victim.ip} killed after checkpoint {done}; job FAILED "
        f"{time.time() - t_kill:.0f} s later, saying:"
    )
    print("\n".join(line for line in logs.splitlines() if "[entropy-rl]   " in line or "run failed" in line))

    # a healthy cluster again (a replacement node joins), the same command resumes
    cluster.add_node("c")
    t0 = time.time()
    job = submit(cluster, demo, work, "trainer.save_freq=1")
    status = cluster.wait_job(job, timeout=420)
    logs = job_logs(cluster, job)
    assert status == "SUCCEEDED", logs[-6000:]
    print(f"[cluster e2e] resumed job on 127.0.0.2 + 127.0.0.4: {status} in {time.time() - t0:.0f} s")
    steps = read_steps(work / "runs" / "entropy_rl" / "kl_cov.jsonl")
    # one metrics file for the whole run: the killed attempt's steps kept, the rest appended
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert "metric records of earlier steps" in logs
    for s in sorted(steps):
        a, b = steps[s], ref[s]
        # same data, same samples (per-request seeded rollout): equal exactly
        for key in ("response_length/mean", "critic/score/mean", "critic/advantages/max", "global_seqlen/mean"):
            assert a[key] == b[key], (s, key, a[key], b[key])
        for key in ("actor/entropy", "actor/pg_loss", "actor/grad_norm", "actor/ppo_kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (s, key)
