"""What a user needs to read a run: where each rank runs, where the outputs are, and after a
distributed failure which nodes died and where a resubmission resumes."""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from recipe.sent.checkpoint import choose_checkpoint


def _where(worker: Any) -> tuple[str, str, int]:
    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), os.getpid()


def placement_report(worker_group: Any, name: str) -> str:
    """One log line: the node (id, ip) and pid of every rank of ``worker_group``.

    On a cluster this is how to see that FSDP ranks really span the nodes asked for.
    """
    places = ray.get([w.__ray_call__.remote(_where) for w in worker_group.workers])
    ranks = "; ".join(f"rank {r} -> node {n} ({ip}, pid {pid})" for r, (n, ip, pid) in enumerate(places))
    nodes = len({n for n, _, _ in places})
    return f"[entropy-rl] placement of {name}: {len(places)} rank(s) on {nodes} node(s): {ranks}"


def print_run_locations(config: Any) -> None:
    """Every run ends by saying where its metrics, checkpoints and report are."""
    t = config.trainer
    loggers = list(t.logger) if not isinstance(t.logger, str) else [t.logger]
    lines = [f"  checkpoints: {os.path.abspath(t.default_local_dir)}"]
    if "file" in loggers:
        path = os.environ.get("VERL_FILE_LOGGER_PATH") or os.path.join(
            os.environ.get("VERL_FILE_LOGGER_ROOT", "."), t.project_name, f"{t.experiment_name}.jsonl"
        )
        lines.append(f"  metrics (jsonl): {os.path.abspath(path)}")
        lines.append(f"  figures: python -m entropy_rl.report {os.path.dirname(os.path.abspath(path))} --out report/")
    if "wandb" in loggers:
        lines.append(f"  metrics (wandb): project {t.project_name}, run {t.experiment_name}")
    print("[entropy-rl] run finished.\n" + "\n".join(lines), flush=True)


def resume_point(config: Any) -> tuple[str | None, str]:
    """The checkpoint a resubmission would resume (``trainer.resume_mode=auto``) and a line
    saying so: the same validated choice as :func:`choose_checkpoint`, so a failure message
    never names a step that the resume then rejects."""
    root = os.path.abspath(os.path.expanduser(str(config.trainer.default_local_dir)))
    try:
        ckpt, warnings = choose_checkpoint(root)
    except RuntimeError as e:  # finished checkpoints went bad: the resume will stop and say so
        return None, f"no usable checkpoint; a resubmission stops with: {str(e).splitlines()[0]} ..."
    if ckpt:
        skipped = f" (the tracker's is rejected: {warnings[0].split('tracker names: ', 1)[-1]})" if warnings else ""
        return ckpt, (
            f"last complete checkpoint: {ckpt}{skipped}; submit the same command to a healthy "
            "cluster to resume from it (trainer.resume_mode=auto)"
        )
    if warnings:
        return None, "no save finished (each was cut short); a new submission starts over"
    return None, "no checkpoint was written yet (trainer.save_freq); a new submission starts over"


def explain_failure(config: Any, exc: BaseException, node_death_wait_s: float = 60.0) -> str:
    """What a user needs after a distributed failure: which nodes died, where to resume from."""
    text = str(exc).strip()
    lines = [f"[entropy-rl] the run failed in a Ray worker: {type(exc).__name__}: {text.splitlines()[-1][:300]}"]
    # A lost peer (killed raylet, preempted host) reaches us as a broken collective or a dead
    # actor seconds before Ray's health checks declare the node dead: wait for that verdict.
    lost_peer = isinstance(exc, ray.exceptions.RayActorError) or any(
        s in text
        for s in ("closed by peer", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "Connection reset")
    )
    deadline = time.monotonic() + (node_death_wait_s if lost_peer else 0.0)
    while True:
        try:
            dead = [n for n in ray.nodes() if not n.get("Alive", True)]
        except Exception:  # Ray already gone: nothing more to say about nodes
            dead = []
        if dead or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    for n in dead:
        lines.append(
            f"[entropy-rl]   Ray reports node {n.get('NodeID')} ({n.get('NodeManagerAddress')}) dead"
            f"{': ' + n['DeathReasonMessage'] if n.get('DeathReasonMessage') else ''}"
        )
    lines.append(f"[entropy-rl]   {resume_point(config)[1]}")
    return "\n".join(lines)
