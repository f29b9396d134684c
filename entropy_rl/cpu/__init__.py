"""CPU backend for veRL 0.9.1: develop and test any veRL recipe without a GPU.

Selected with ``VERL_PLATFORM=cpu`` (our ``cpu`` presets set it for every Ray worker);
loaded in every process by the ``verl.plugins`` entry point (:mod:`entropy_rl.plugin`).
This package is the only place in entropy-rl that registers into veRL's platform, engine
and rollout registries:

- :mod:`entropy_rl.cpu.platform` — the ``cpu`` platform, FSDP engines for device ``cpu``,
  gloo process groups;
- :mod:`entropy_rl.cpu.rollout` — the ``hf`` rollout: batched HF-transformers generation
  behind veRL's replica / server / adapter interfaces, weights synced from the actor;
- :mod:`entropy_rl.cpu.vllm` — what veRL's own ``vllm`` rollout needs with the CPU build of
  vLLM (``backend=cpu_vllm``): a worker extension for the weight sync and a sender that fails
  instead of hanging when the receiving side failed.
"""

# veRL first: `import verl` loads our plugin (entropy_rl.plugin), which imports this package's
# submodules. Were this package the first thing a process imports (a vLLM worker loading our
# worker extension does that), veRL would otherwise load the plugin while this package is half
# initialised, swallow the ImportError, and the `cpu` platform would be missing there.
import verl  # noqa: F401, I001

from entropy_rl.cpu.platform import PLATFORM_NAME


def activate() -> None:
    """Register everything the CPU backend needs in this process (idempotent)."""
    from entropy_rl.cpu.platform import activate as activate_platform
    from entropy_rl.cpu.rollout import register as register_rollouts

    activate_platform()
    register_rollouts()


__all__ = ["PLATFORM_NAME", "activate"]
