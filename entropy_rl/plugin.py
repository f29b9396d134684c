"""veRL plugin entry point (group ``verl.plugins``, see pyproject.toml).

``import verl`` loads every ``verl.plugins`` entry point in every process — the driver, the
TaskRunner and each Ray worker — so what this module registers is there wherever veRL runs,
with no environment plumbing. It registers the ``cpu`` platform name (cheap, inert: it is
never auto-detected), and, only when ``VERL_PLATFORM=cpu`` selects it, activates the CPU
backend (engines for device ``cpu``, the ``hf`` rollout, gloo process groups). GPU runs
import nothing more.

veRL swallows plugin import errors into a debug log; this module therefore does no heavy work
unless the CPU backend is selected, and then lets errors propagate from ``activate()``'s
callers (``entropy_rl.cpu.activate``) rather than hiding them.
"""

import os


def _load() -> None:
    from entropy_rl.cpu.platform import register_platform

    register_platform()
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        # submodules, not the package: this may run while entropy_rl.cpu itself is importing
        from entropy_rl.cpu.platform import activate
        from entropy_rl.cpu.rollout import register

        activate()
        register()


_load()
