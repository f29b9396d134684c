"""entropy-rl: keep policy entropy from collapsing in RL with verifiable rewards.

Three layers, each allowed what the one before it is not:

1. **Core math** — pure functions and small classes on tensors and strings, no Ray, no
   plotting, no orchestration (checked by ``tests/test_layering.py``; veRL's tensor helpers
   are used, and importing them brings veRL's own dependencies along):

   - :mod:`entropy_rl.config` — every algorithm's knobs as frozen dataclasses (torch-free);
   - :mod:`entropy_rl.answers` / :mod:`entropy_rl.reward` — final-answer extraction and
     bounded, sandboxed equivalence checking; veRL's ``custom_reward_function``;
   - :mod:`entropy_rl.semantic_entropy` — SENT's semantic entropy of a prompt;
   - :mod:`entropy_rl.curriculum` — SENT's low→high semantic-entropy curriculum sampler;
   - :mod:`entropy_rl.losses` — SENT's token-level selective KL-Cov, sync-free;
   - :mod:`entropy_rl.aer` — AER's adaptive entropy-coefficient controller;
   - :mod:`entropy_rl.evaluation` — Avg@k / Pass@k;
   - :mod:`entropy_rl.io` — crash-safe file writes.

2. **CPU backend** — :mod:`entropy_rl.cpu`: veRL's real loop without a GPU (a platform, an
   engine, an HF rollout server behind Ray, the CPU build of vLLM), registered into veRL's
   registries through the ``verl.plugins`` entry point (:mod:`entropy_rl.plugin`).

3. **Report tool** — :mod:`entropy_rl.report`: figures of finished runs (matplotlib), a CLI.

Orchestration (veRL's driver surface, scoring pass, launch) lives in ``recipe/``; nothing in
``entropy_rl`` imports ``recipe``, ``launch`` or ``bench``.
"""

__version__ = "0.1.0"
