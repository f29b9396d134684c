"""Train: ``python -m recipe.sent.main [hydra overrides]``; ``--help`` lists presets and knobs.

Composes ``conf/entropy_rl.yaml`` (veRL's ``ppo_trainer`` + our knobs), a ``method=`` preset
and a ``model=`` preset, checks on the driver what can be checked before Ray starts
(recipe.sent.preflight), then runs veRL's legacy PPO driver with our TaskRunner. Every
``actor_rollout_ref.*``, ``data.*``, ``trainer.*`` override veRL users know works as in veRL.

    python -m recipe.sent.main method=sent model=r1_distill_qwen_1.5b
    python -m recipe.sent.main method=aer entropy_rl.aer.rho=0.5 trainer.n_gpus_per_node=8
"""

import os
import sys

import hydra

from recipe.sent.config import help_text, override_problems

CONF_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf")


def select_platform(config) -> None:
    """veRL resolves its platform once per process, at import: choose it before importing veRL."""
    if config.entropy_rl.get("backend", "gpu") == "cpu":
        os.environ["VERL_PLATFORM"] = "cpu"
        # Ray refuses its logical GPU label while CUDA_VISIBLE_DEVICES hides every device;
        # the CPU backend never touches CUDA, so the variable has no meaning here.
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)


def start(config, mode: str) -> None:
    """Pre-flight, then veRL: the body of both entry points (train and score)."""
    from recipe.sent.preflight import PreflightError, preflight

    try:
        preflight(config)
    except PreflightError as e:
        print(str(e), file=sys.stderr, flush=True)
        raise
    select_platform(config)
    from recipe.sent.run import launch

    launch(config, mode=mode)


def cli(argv: list[str], hydra_main) -> None:
    """``--help`` and misspelled ``entropy_rl.*`` keys, answered before Hydra composes."""
    if any(a in ("--help", "-h") for a in argv):
        print(help_text(CONF_DIR), end="")
        raise SystemExit(0)
    bad = override_problems(argv)
    if bad:
        print("[entropy-rl] cannot start:\n  - " + "\n  - ".join(bad), file=sys.stderr, flush=True)
        raise SystemExit(2)
    hydra_main()


@hydra.main(config_path=CONF_DIR, config_name="entropy_rl", version_base=None)
def main(config) -> None:
    start(config, mode="train")


if __name__ == "__main__":
    cli(sys.argv[1:], main)
