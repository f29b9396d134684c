"""entropy-rl: keep policy entropy from collapsing in RL with verifiable rewards.

The library holds pure functions and small classes only:

- :mod:`entropy_rl.answers` / :mod:`entropy_rl.reward` — final-answer extraction and
  bounded, sandboxed equivalence checking; veRL's ``custom_reward_function``.
- :mod:`entropy_rl.semantic_entropy` — SENT's semantic entropy of a prompt.
- :mod:`entropy_rl.curriculum` — SENT's low→high semantic-entropy curriculum sampler.
- :mod:`entropy_rl.losses` — SENT's token-level selective KL-Cov, sync-free.
- :mod:`entropy_rl.aer` — AER's adaptive entropy-coefficient controller.

Orchestration (Ray, veRL's driver) lives in ``recipe/``; nothing here imports it.
"""

__version__ = "0.1.0"
