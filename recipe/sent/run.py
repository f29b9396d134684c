"""Start a run: join or start Ray exactly as veRL's ``main_ppo`` does, run our TaskRunner, and
clean up what a local CPU run leaves behind."""

from __future__ import annotations

import os
from typing import Any

import ray
from omegaconf import open_dict
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config

from entropy_rl.cpu.checks import check_cpu_config
from recipe.sent.adapter import EntropyRLTaskRunner, ScoreTaskRunner
from recipe.sent.diagnostics import explain_failure, print_run_locations


def launch(config: Any, mode: str = "train") -> None:
    """Start (or join) Ray exactly as veRL's main does and run our TaskRunner."""
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.device import auto_set_device

    if config.entropy_rl.get("backend", "gpu") == "cpu":
        from entropy_rl.cpu import activate

        activate()  # the driver's own registries; workers get it from the plugin
        check_cpu_config(config)
    if os.environ.get("RAY_ADDRESS"):
        # Inside `ray job submit` (or any run pointed at a cluster): join it. Ray refuses
        # resource arguments when connecting to an existing cluster; the cluster owns them.
        with open_dict(config):
            for key in ("address", "num_cpus", "num_gpus", "include_dashboard"):
                config.ray_kwargs.ray_init.pop(key, None)
        # The job's runtime env (submit.sh) and veRL's ray.init runtime env both set env vars
        # (e.g. VERL_PLATFORM); let Ray combine them instead of refusing the overlap.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    auto_set_device(config)
    # entropy-rl's own knobs and combinations were checked by the pre-flight, before this
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if mode == "score":
        # the standalone pass samples with the scoring settings
        s = config.entropy_rl.scoring
        with open_dict(config):
            config.actor_rollout_ref.rollout.temperature = s.temperature
            config.actor_rollout_ref.rollout.top_p = s.top_p
            config.actor_rollout_ref.rollout.response_length = s.max_response_length
            config.entropy_rl.scoring.enable = True

    # A local CPU run owns its Ray: at the end it stops it and removes what the killed workers
    # left in /dev/shm (entropy_rl.cpu.shm). A cluster's processes outlive this driver.
    own_cpu_ray = config.entropy_rl.get("backend", "gpu") == "cpu" and not os.environ.get("RAY_ADDRESS")
    shm_before = None
    if own_cpu_ray:
        from entropy_rl.cpu import shm

        shm_before = shm.snapshot()
    try:
        run_ppo(config, task_runner_class=ScoreTaskRunner if mode == "score" else EntropyRLTaskRunner)
        if mode == "train":
            # from the driver: a worker's last lines can be lost when Ray stops right after it
            print_run_locations(config)
    except ray.exceptions.RayError as exc:
        print(explain_failure(config, exc), flush=True)
        raise
    finally:
        if own_cpu_ray:
            ray.shutdown()
            removed = shm.sweep(shm_before, wait_s=30.0)
            if removed:
                print(
                    f"[entropy-rl] removed {len(removed)} /dev/shm entries the stopped workers left: "
                    f"{', '.join(removed)}",
                    flush=True,
                )
