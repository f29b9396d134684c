"""entropy-rl on veRL 0.9.1's legacy driver: the TaskRunner (like verl-recipe's ``main_dapo.py``).

veRL is built on ``trainer.use_v1=False``: ``RayPPOTrainer`` driven by a custom TaskRunner
(exact resume, and fewer work-arounds than the V1 trainer on a CPU). This module, the
trainer (:mod:`recipe.sent.ray_trainer`) and the workers' loss (:mod:`recipe.sent.worker_loss`)
are every touch-point with veRL:

====================================  ==================================================
veRL piece                             our change
====================================  ==================================================
``main_ppo.run_ppo(task_runner_class)`` :class:`EntropyRLTaskRunner` (our trainer, our sampler)
``RayPPOTrainer``                      :class:`~recipe.sent.ray_trainer.EntropyRLTrainer`
worker ``ppo_loss``                    :func:`~recipe.sent.worker_loss.entropy_rl_loss` (falls back to ``ppo_loss``)
====================================  ==================================================

A move to veRL's V1 trainer changes these three modules only. Around them, each concern has
its own module: the knobs and their checks (:mod:`recipe.sent.config`), pre-flight checks
(:mod:`recipe.sent.preflight`), checkpoint integrity (:mod:`recipe.sent.checkpoint`), run
diagnostics — placement, output locations, failure explanation
(:mod:`recipe.sent.diagnostics`), starting a run (:mod:`recipe.sent.run`), the CPU backend's
own checks (:mod:`entropy_rl.cpu.checks`).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pandas as pd
import ray
from omegaconf import OmegaConf
from verl.trainer.main_ppo_v0 import BaseTaskRunner
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils.config import omega_conf_to_dataclass

from entropy_rl.curriculum import CurriculumConfig, SemanticEntropyCurriculumSampler
from entropy_rl.io import atomic_write_path
from recipe.sent.ray_trainer import EntropyRLTrainer, curriculum_kwargs, dataset_rows


# ============================================================== the task runner
class _EntropyRLTaskRunner(BaseTaskRunner):
    """veRL's legacy TaskRunner with our trainer (and so our loss, hooks and sampler)."""

    mode = "train"

    def run(self, config):
        """``mode="train"``: the full run. ``mode="score"``: workers up, scoring pass, scored
        dataset written, done (``python -m recipe.sent.score``)."""
        mode = self.mode
        from pprint import pprint

        from verl.utils.dataset.rl_dataset import collate_fn
        from verl.workers.config import HFModelConfig

        print(f"[entropy-rl] TaskRunner on {socket.gethostname()}, pid {os.getpid()}")
        pprint(OmegaConf.to_container(config, resolve=True))
        OmegaConf.resolve(config)

        _, ray_worker_group_cls = self.add_actor_rollout_worker(config)
        self.add_critic_worker(config)
        self.add_reward_model_resource_pool(config)
        self.add_teacher_model_resource_pool(config)
        # the pre-flight (our knobs) and veRL's validate_config (recipe.sent.run.launch) ran on
        # the driver; what needs the cluster is checked here, once Ray is up
        require_accelerators(config)

        model_config: HFModelConfig = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        tokenizer, processor = model_config.tokenizer, model_config.processor
        resource_pool_manager = self.init_resource_pool_mgr(config)
        train_dataset = create_rl_dataset(
            config.data.train_files,
            config.data,
            tokenizer,
            processor,
            is_train=True,
            max_samples=config.data.get("train_max_samples", -1),
        )
        val_dataset = create_rl_dataset(
            config.data.val_files,
            config.data,
            tokenizer,
            processor,
            is_train=False,
            max_samples=config.data.get("val_max_samples", -1),
        )
        trainer = EntropyRLTrainer(
            config=config,
            tokenizer=tokenizer,
            processor=processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=resource_pool_manager,
            ray_worker_group_cls=ray_worker_group_cls,
            train_dataset=train_dataset,
            val_dataset=val_dataset,
            collate_fn=collate_fn,
            train_sampler=initial_sampler(config, train_dataset),
        )
        trainer.init_workers()
        if mode == "score":
            rows = dataset_rows(train_dataset)
            table = trainer.semantic_entropy_table(rows)
            out = write_scored_dataset(config, rows, table)
            print(
                f"[entropy-rl] scoring finished.\n  scores (cache): {trainer.score_cache(rows).path}\n"
                f"  scored dataset: {out}"
            )
            return
        trainer.fit()


class _ScoreTaskRunner(_EntropyRLTaskRunner):
    mode = "score"


EntropyRLTaskRunner = ray.remote(_EntropyRLTaskRunner)
ScoreTaskRunner = ray.remote(_ScoreTaskRunner)


def initial_sampler(config: Any, train_dataset):
    """The sampler the trainer is built with. With a curriculum: one of the same length (the
    optimizer's schedule is sized from it) whose order is replaced once scores exist."""
    if not config.entropy_rl.curriculum.enable:
        from verl.trainer.ppo.utils import create_rl_sampler

        return create_rl_sampler(config.data, train_dataset)
    kw = curriculum_kwargs(config)
    kw["missing_policy"] = "last_stage"
    placeholder = pd.DataFrame({kw["score_key"]: [float("nan")] * len(train_dataset)})
    return SemanticEntropyCurriculumSampler(placeholder, CurriculumConfig(**kw))


def require_accelerators(config: Any) -> None:
    """Refuse clearly, before any worker starts, when the Ray cluster lacks the GPUs asked for."""
    want = int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)
    have = int(ray.cluster_resources().get("GPU", 0))
    if have < want:
        raise RuntimeError(
            f"entropy-rl needs {want} GPU(s) (trainer.nnodes={config.trainer.nnodes} x "
            f"trainer.n_gpus_per_node={config.trainer.n_gpus_per_node}) but the Ray cluster offers {have}. "
            "Run on a machine with NVIDIA GPUs and vLLM installed (the Docker image, or pip install '.[gpu]'), "
            "or lower trainer.n_gpus_per_node / trainer.nnodes to what the cluster has."
        )


def write_scored_dataset(config: Any, rows: list[dict], table: pd.DataFrame) -> str:
    """The training rows with ``semantic_entropy`` / ``pass_rate`` columns, as parquet."""
    out = config.entropy_rl.scoring.get("output_file") or os.path.join(
        os.path.expanduser(config.entropy_rl.scoring.cache_dir), "scored_train.parquet"
    )
    frame = pd.DataFrame(rows)
    frame[config.entropy_rl.curriculum.score_key] = table["semantic_entropy"].to_numpy()
    frame["pass_rate"] = table["pass_rate"].to_numpy()
    return atomic_write_path(out, lambda tmp: frame.to_parquet(tmp, index=False))
