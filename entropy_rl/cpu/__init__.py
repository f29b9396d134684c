"""CPU backend for veRL 0.9.1: develop and test any veRL recipe without a GPU.

Selected with ``VERL_PLATFORM=cpu`` (our ``cpu`` presets set it for every Ray worker);
loaded in every process by the ``verl.plugins`` entry point (:mod:`entropy_rl.plugin`).
This package is the only place in entropy-rl that registers into veRL's platform, engine
and rollout registries:

- :mod:`entropy_rl.cpu.platform` — the ``cpu`` platform, FSDP engines for device ``cpu``,
  gloo process groups;
- :mod:`entropy_rl.cpu.rollout` — the ``hf`` rollout: batched HF-transformers generation
  behind veRL's replica / server / adapter interfaces, weights synced from the actor.
"""

from entropy_rl.cpu.platform import PLATFORM_NAME


def activate() -> None:
    """Register everything the CPU backend needs in this process (idempotent)."""
    from entropy_rl.cpu.platform import activate as activate_platform
    from entropy_rl.cpu.rollout import register as register_rollout

    activate_platform()
    register_rollout()


__all__ = ["PLATFORM_NAME", "activate"]
