"""Train: ``python -m recipe.sent.main [hydra overrides]``.

Composes ``conf/entropy_rl.yaml`` (veRL's ``ppo_trainer`` + our knobs), a ``method=`` preset
and a ``model=`` preset, then runs veRL's legacy PPO driver with our TaskRunner. Every
``actor_rollout_ref.*``, ``data.*``, ``trainer.*`` override veRL users know works as in veRL.

    python -m recipe.sent.main method=sent model=r1_distill_qwen_1.5b
    python -m recipe.sent.main method=aer entropy_rl.aer.rho=0.5 trainer.n_gpus_per_node=8
"""

import os

import hydra

CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf")


def select_platform(config) -> None:
    """veRL resolves its platform once per process, at import: choose it before importing veRL."""
    if config.entropy_rl.get("backend", "gpu") == "cpu":
        os.environ["VERL_PLATFORM"] = "cpu"
        # Ray refuses its logical GPU label while CUDA_VISIBLE_DEVICES hides every device;
        # the CPU backend never touches CUDA, so the variable has no meaning here.
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)


@hydra.main(config_path=CONF_DIR, config_name="entropy_rl", version_base=None)
def main(config) -> None:
    select_platform(config)
    from recipe.sent.adapter import launch

    launch(config, mode="train")


if __name__ == "__main__":
    main()
